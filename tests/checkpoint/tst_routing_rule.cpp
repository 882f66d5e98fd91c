// RoutingRule: parsing, canonical names, the errors bad rules get, and the per-token k of each rule on
// hand-computed cases.
#include "checkpoint/routing_rule.h"
#include "util/error.h"

#include <QTest>

#include <algorithm>
#include <functional>
#include <vector>

using namespace moeatlas;

class TestRoutingRule : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void parsesAndNames_data()
    {
        QTest::addColumn<QString>("text");
        QTest::addColumn<QString>("name");
        QTest::addColumn<int>("minK");
        QTest::addColumn<int>("maxK");
        // 16 experts, model top-k 4.
        QTest::newRow("model") << "model"
                               << "model" << 4 << 4;
        QTest::newRow("top-k") << "top-k:3"
                               << "top-k:3" << 3 << 3;
        QTest::newRow("probmoe") << "probmoe:2:6"
                                 << "probmoe:2:6" << 2 << 6;
        QTest::newRow("top-p default band") << "top-p:0.9"
                                            << "top-p:0.9:1:4" << 1 << 4;
        QTest::newRow("top-p band") << "top-p:0.75:2:8"
                                    << "top-p:0.75:2:8" << 2 << 8;
        QTest::newRow("threshold") << "threshold:2.5"
                                   << "threshold:2.5:1:4" << 1 << 4;
        QTest::newRow("p = 1") << "top-p:1"
                               << "top-p:1:1:4" << 1 << 4;
    }
    void parsesAndNames()
    {
        QFETCH(QString, text);
        QFETCH(QString, name);
        QFETCH(int, minK);
        QFETCH(int, maxK);
        const RoutingRule rule = parseRoutingRule(text.toStdString(), 16, 4);
        QCOMPARE(QString::fromStdString(rule.name()), name);
        QCOMPARE(rule.minK(4), minK);
        QCOMPARE(rule.maxK(4), maxK);
        QVERIFY(parseRoutingRule(rule.name(), 16, 4) == rule);
    }

    void refusesBadRules_data()
    {
        QTest::addColumn<QString>("text");
        QTest::addColumn<QString>("expected");
        QTest::newRow("unknown") << "top-q:3"
                                 << "expected model, top-k:K";
        QTest::newRow("band below 1") << "probmoe:0:2"
                                      << "must lie in [1, 16]";
        QTest::newRow("band above E") << "probmoe:2:17"
                                      << "must lie in [1, 16]";
        QTest::newRow("kmin > kmax") << "probmoe:5:3"
                                     << "KMIN 5 is greater than KMAX 3";
        QTest::newRow("p above 1") << "top-p:1.5"
                                   << "P 1.5 must lie in (0, 1]";
        QTest::newRow("p zero") << "top-p:0"
                                << "P 0 must lie in (0, 1]";
        QTest::newRow("p not a number") << "top-p:x"
                                        << "P 'x' is not a number";
        QTest::newRow("k zero") << "top-k:0"
                                << "K 0 must lie in [1, 16]";
        QTest::newRow("k text") << "top-k:two"
                                << "K 'two' is not an integer";
        QTest::newRow("mean outside band") << "threshold:5:1:4"
                                           << "target mean k 5 must lie in the band [1, 4]";
        QTest::newRow("trailing") << "probmoe:1:2:3"
                                  << "expected a band KMIN:KMAX";
        QTest::newRow("half band") << "top-p:0.5:2"
                                   << "expected an optional band";
        QTest::newRow("empty") << ""
                               << "expected model, top-k:K";
    }
    void refusesBadRules()
    {
        QFETCH(QString, text);
        QFETCH(QString, expected);
        try {
            parseRoutingRule(text.toStdString(), 16, 4);
            QFAIL("accepted");
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QStringLiteral("routing"));
            const QString message = QString::fromStdString(e.what());
            QVERIFY2(message.contains(expected), qPrintable(message));
            QVERIFY2(message.contains(QLatin1Char('\'') + text + QLatin1Char('\'')), qPrintable(message));
        }
    }

    // Probabilities 0.4, 0.25, 0.15, 0.1, 0.06, 0.04 (sorted): hand-computed k of each rule.
    void tokenK()
    {
        const std::vector<float> sorted { 0.4f, 0.25f, 0.15f, 0.1f, 0.06f, 0.04f };
        const auto k = [&](const char* text, int positive, double threshold = 0.0) {
            return ruleTokenK(parseRoutingRule(text, 6, 2), 2, sorted.data(), positive, threshold);
        };
        QCOMPARE(k("model", 0), 2);
        QCOMPARE(k("top-k:5", 0), 5);
        QCOMPARE(k("probmoe:2:5", 3), 3); // three positive logits
        QCOMPARE(k("probmoe:2:5", 0), 2); // clamped up to KMIN
        QCOMPARE(k("probmoe:2:5", 6), 5); // and down to KMAX
        QCOMPARE(k("top-p:0.6:1:6", 0), 2); // 0.4 < 0.6 <= 0.65
        // float(0.4) + 0.25 = 0.6500000059604645 in float64, which reaches 0.65: 2, not 3.
        QCOMPARE(k("top-p:0.65:1:6", 0), 2);
        QCOMPARE(k("top-p:0.66:1:6", 0), 3);
        QCOMPARE(k("top-p:0.95:1:6", 0), 5);
        QCOMPARE(k("top-p:0.1:2:6", 0), 2); // clamped up to KMIN
        QCOMPARE(k("top-p:1:1:3", 0), 3); // never reached within the band: KMAX
        QCOMPARE(k("threshold:2:1:6", 0, 0.12), 3);
        QCOMPARE(k("threshold:2:1:6", 0, 0.5), 1); // none above: clamped up
        QCOMPARE(k("threshold:2:1:2", 0, 0.05), 2); // five above: clamped down
    }
};

QTEST_GUILESS_MAIN(TestRoutingRule)
#include "tst_routing_rule.moc"
