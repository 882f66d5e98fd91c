// Routing rules applied to recorded logits (metrics/routing_rule_stats.h): hand-computed k per token on
// the 4-token atlas of tst_peu, threshold calibration by hand (with a tie) and against a brute-force
// scan of every threshold on random atlases, and the refusals.
#include "metrics/routing_rule_stats.h"
#include "metrics_fixture.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <limits>
#include <set>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

namespace {

// handComputedSpec: E = 4, k = 2, one MoE layer (0); domain a = t0..t2, b = t3. Logits and their
// softmax (sorted descending), positive-logit counts:
//   t0 [2, 1, 0, -1]      .6439 .2369 .0871 .0321   2
//   t1 [0, 0, -3, -5]     .4863 .4863 .0242 .0033   0
//   t2 [-1, -2, -.5, -4]  .5377 .3261 .1200 .0162   0
//   t3 [3, 3, 3, 0]       .3279 .3279 .3279 .0163   3   (three exactly equal: exp(0) / the same sum)

// The test's own fp32 softmax (the definition in routing_rule_stats.h, written out again).
std::vector<float> softmax(const float* s, int n)
{
    float mx = s[0];
    for (int e = 1; e < n; ++e)
        mx = std::max(mx, s[e]);
    std::vector<float> p(static_cast<size_t>(n));
    float sum = 0.0f;
    for (int e = 0; e < n; ++e) {
        p[static_cast<size_t>(e)] = std::exp(s[e] - mx);
        sum += p[static_cast<size_t>(e)];
    }
    for (float& v : p)
        v /= sum;
    return p;
}

// Brute force: mean k over all tokens of one layer at threshold t, straight from the definition
// k = clamp(#{e : p_e >= t}, KMIN, KMAX) (no sorting, no ruleTokenK).
double bruteMeanK(const std::vector<std::vector<float>>& probs, double t, int kMin, int kMax)
{
    double sum = 0.0;
    for (const auto& p : probs) {
        int c = 0;
        for (const float v : p)
            c += static_cast<double>(v) >= t ? 1 : 0;
        sum += std::clamp(c, kMin, kMax);
    }
    return sum / static_cast<double>(probs.size());
}

} // namespace

class TestRoutingRuleStats : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;
    fs::path m_hand, m_random;
    TinyAtlasSpec m_randomSpec;

    RuleKStats stats(const fs::path& path, const std::string& text, const std::map<int, double>& thresholds = {})
    {
        const AtlasFile atlas = AtlasFile::openReadOnly(path);
        RoutingRule rule = parseRoutingRule(text, atlas.model().numExperts, atlas.model().topK);
        rule.thresholds = thresholds;
        return routingRuleStats(atlas, rule, {}, nullptr, 2);
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_hand = fs::path(m_dir.path().toStdString()) / "hand.atlas.h5";
        writeTinyAtlas(m_hand, handComputedSpec());
        // 300 tokens, E = 8, k = 4, three MoE layers (1, 3, 5), two domains.
        m_randomSpec = randomAtlas(7, 60, 5, 8, 4, 3, 2, false);
        m_random = fs::path(m_dir.path().toStdString()) / "random.atlas.h5";
        writeTinyAtlas(m_random, m_randomSpec);
    }

    void handRules_data() // NOLINT(readability-identifier-naming): QtTest's name for the rows of handRules
    {
        QTest::addColumn<QString>("rule");
        QTest::addColumn<QList<int>>("k"); // t0..t3
        QTest::newRow("model") << "model" << QList<int> { 2, 2, 2, 2 };
        QTest::newRow("top-k") << "top-k:3" << QList<int> { 3, 3, 3, 3 };
        // clamp(#positive, 1, 3): 2, 0 -> 1, 0 -> 1, 3.
        QTest::newRow("probmoe") << "probmoe:1:3" << QList<int> { 2, 1, 1, 3 };
        // Mass reaching 0.8: t0 .644 -> .881 (2); t1 .486 -> .973 (2); t2 .538 -> .864 (2);
        // t3 .328 -> .656 -> .984 (3).
        QTest::newRow("top-p") << "top-p:0.8:1:4" << QList<int> { 2, 2, 2, 3 };
        // P = 0.5 in the band [2, 3]: t0 .644 (1) and t2 .538 (1) rise to 2; t1 .486 -> .973 (2);
        // t3 .328 -> .656 (2).
        QTest::newRow("top-p band") << "top-p:0.5:2:3" << QList<int> { 2, 2, 2, 2 };
    }

    void handRules()
    {
        QFETCH(QString, rule);
        QFETCH(QList<int>, k);
        const RuleKStats s = stats(m_hand, rule.toStdString());
        QCOMPARE(s.layers, std::vector<int> { 0 });
        const int bins = s.maxK + 1;
        std::vector<double> histA(static_cast<size_t>(bins)), histB(static_cast<size_t>(bins)),
            histAll(static_cast<size_t>(bins));
        for (int t = 0; t < 4; ++t) {
            (t < 3 ? histA : histB)[static_cast<size_t>(k[t])] += 1;
            histAll[static_cast<size_t>(k[t])] += 1;
        }
        QCOMPARE(s.histogram(0, 0), histA);
        QCOMPARE(s.histogram(1, 0), histB);
        QCOMPARE(s.histogram(s.pooledRow(), 0), histAll);
        QCOMPARE(s.meanK(0, 0), (k[0] + k[1] + k[2]) / 3.0);
        QCOMPARE(s.meanK(1, 0), static_cast<double>(k[3]));
        QCOMPARE(s.meanK(2, 0), (k[0] + k[1] + k[2] + k[3]) / 4.0);
        QCOMPARE(s.tokens, (std::vector<double> { 3, 1, 4 }));
    }

    void handThresholds()
    {
        // t = 0.3: #p >= t: t0 1, t1 2, t2 2, t3 3.
        const RuleKStats s = stats(m_hand, "threshold:2:1:4", { { 0, 0.3 } });
        QCOMPARE(s.histogram(2, 0), (std::vector<double> { 0, 1, 2, 1, 0 }));
        QCOMPARE(s.meanK(2, 0), 2.0);
        // A layer without a threshold routes with KMAX (4), as the engine refuses to guess.
        QCOMPARE(stats(m_hand, "threshold:2:1:4").meanK(2, 0), 4.0);
    }

    void handCalibration_data() // NOLINT(readability-identifier-naming): QtTest's name for the rows of handCalibration
    {
        QTest::addColumn<double>("target");
        QTest::addColumn<double>("threshold");
        QTest::addColumn<double>("meanK");
        // Band [1, 4]: mean k = 1 + #{slot 1..3 probabilities >= t} / 4. Those, descending:
        // .4863 (t1), .3279 x2 (t3), .3261 (t2), .2369, .1200, .0871, .0321, .0242, .0163, .0162, .0033.
        // M = 2: count 4 at t = .3261 (t2's second probability: e^-.5 / (e^-.5 + e^-1.5 + 1 + e^-3.5)).
        QTest::newRow("M=2") << 2.0 << std::exp(-0.5) / (std::exp(-0.5) + std::exp(-1.5) + 1.0 + std::exp(-3.5)) << 2.0;
        // M = 1.5: count 2 is not reachable (.3279 comes twice): count 1 (t = .4863) and count 3 are
        // equally close; the tie goes to the higher threshold: mean 1.25.
        QTest::newRow("M=1.5 tie") << 1.5 << 1.0 / (2.0 + std::exp(-3.0) + std::exp(-5.0)) << 1.25;
        // M = 4: every value passes: t = the smallest, .0033 = e^-5 / (2 + e^-3 + e^-5).
        QTest::newRow("M=4") << 4.0 << std::exp(-5.0) / (2.0 + std::exp(-3.0) + std::exp(-5.0)) << 4.0;
        // M = 1: none passes: t just above the largest value, .4863.
        QTest::newRow("M=1") << 1.0 << 1.0 / (2.0 + std::exp(-3.0) + std::exp(-5.0)) << 1.0;
    }

    void handCalibration()
    {
        QFETCH(double, target);
        QFETCH(double, threshold);
        QFETCH(double, meanK);
        const AtlasFile atlas = AtlasFile::openReadOnly(m_hand);
        RoutingRule rule = parseRoutingRule("threshold:" + std::to_string(target) + ":1:4", 4, 2);
        calibrateThresholds(atlas, rule, {}, nullptr, 1);
        QCOMPARE(rule.thresholds.size(), size_t { 1 });
        QVERIFY(std::fabs(rule.thresholds.at(0) - threshold) < 1e-6);
        if (target == 1.0)
            QVERIFY(rule.thresholds.at(0) > threshold); // strictly above, by one float step
        QCOMPARE(routingRuleStats(atlas, rule).meanK(2, 0), meanK);
    }

    void calibrationAgainstBruteForce_data() // NOLINT(readability-identifier-naming): QtTest's name for the rows of
                                             // calibrationAgainstBruteForce
    {
        QTest::addColumn<QString>("rule");
        for (const char* r : { "threshold:1:1:4", "threshold:1.3:1:4", "threshold:2.6", "threshold:3.99:1:4",
                 "threshold:4", "threshold:3.5:2:6", "threshold:5:5:5" })
            QTest::newRow(r) << QString::fromLatin1(r);
    }

    void calibrationAgainstBruteForce()
    {
        QFETCH(QString, rule);
        const AtlasFile atlas = AtlasFile::openReadOnly(m_random);
        RoutingRule r = parseRoutingRule(rule.toStdString(), 8, 4);
        calibrateThresholds(atlas, r, {}, nullptr, 2);
        const RuleKStats s = routingRuleStats(atlas, r, {}, nullptr, 3);
        const auto T = static_cast<double>(m_randomSpec.numTokens());
        for (size_t l = 0; l < m_randomSpec.moeLayers.size(); ++l) {
            const int layer = m_randomSpec.moeLayers[l];
            QVERIFY(r.thresholds.contains(layer));
            std::vector<std::vector<float>> probs;
            std::set<float> candidates;
            for (int64_t t = 0; t < m_randomSpec.numTokens(); ++t) {
                probs.push_back(softmax(m_randomSpec.logits[l].data() + t * 8, 8));
                candidates.insert(probs.back().begin(), probs.back().end());
            }
            candidates.insert(std::nextafter(*candidates.rbegin(), 2.0f));
            double best = std::numeric_limits<double>::infinity();
            for (const float c : candidates)
                best = std::min(best, std::fabs(bruteMeanK(probs, c, r.kMin, r.kMax) - r.meanK));
            const double achieved = bruteMeanK(probs, r.thresholds.at(layer), r.kMin, r.kMax);
            // The engine's k at the calibrated threshold, as the stats count it, is the definition's.
            QCOMPARE(s.meanK(s.pooledRow(), static_cast<int>(l)), achieved);
            // No candidate threshold comes closer, and one token's step bounds the miss.
            QVERIFY2(std::fabs(std::fabs(achieved - r.meanK) - best) < 1e-12,
                qPrintable(QStringLiteral("layer %1: %2 vs best %3").arg(layer).arg(achieved).arg(best)));
            QVERIFY(std::fabs(achieved - r.meanK) <= 1.0 / T + 1e-12);
        }
    }

    void domainsAgainstDefinitions_data() // NOLINT(readability-identifier-naming): QtTest's name for the rows of
                                          // domainsAgainstDefinitions
    {
        QTest::addColumn<QString>("rule");
        QTest::newRow("probmoe") << "probmoe:2:5";
        QTest::newRow("top-p") << "top-p:0.7:1:6";
    }

    void domainsAgainstDefinitions()
    {
        QFETCH(QString, rule);
        const RuleKStats s = stats(m_random, rule.toStdString());
        const RoutingRule r = parseRoutingRule(rule.toStdString(), 8, 4);
        for (size_t l = 0; l < 3; ++l) {
            std::vector<std::vector<double>> hist(3, std::vector<double>(static_cast<size_t>(r.kMax + 1)));
            for (int64_t t = 0; t < m_randomSpec.numTokens(); ++t) {
                const float* x = m_randomSpec.logits[l].data() + t * 8;
                int k = 0;
                if (r.kind == RoutingRule::Kind::ProbMoe) {
                    for (int e = 0; e < 8; ++e)
                        k += x[e] > 0.0f ? 1 : 0;
                } else {
                    // The smallest k whose k largest probabilities reach P.
                    std::vector<float> p = softmax(x, 8);
                    std::sort(p.begin(), p.end(), std::greater<>());
                    double mass = 0.0;
                    while (k < 8 && mass < r.p)
                        mass += p[static_cast<size_t>(k++)];
                }
                k = std::clamp(k, r.kMin, r.kMax);
                hist[static_cast<size_t>(m_randomSpec.domainIds[static_cast<size_t>(t)])][static_cast<size_t>(k)] += 1;
                hist[2][static_cast<size_t>(k)] += 1;
            }
            for (int row = 0; row < 3; ++row)
                QCOMPARE(s.histogram(row, static_cast<int>(l)), hist[static_cast<size_t>(row)]);
        }
    }

    void refusals()
    {
        // A capture that did not finish layer 3: no logits to read there.
        const fs::path partial = fs::path(m_dir.path().toStdString()) / "partial.atlas.h5";
        {
            TinyAtlasSpec s = handComputedSpec();
            AtlasModelInfo model;
            model.configSha256 = s.configSha;
            model.modelType = "mixtral";
            model.numLayers = 4;
            model.moeLayers = { 0, 3 };
            model.numExperts = 4;
            model.topK = 2;
            model.hiddenSize = 8;
            model.configJson = "{}";
            AtlasCalibration cal;
            cal.seqLen = 1;
            cal.domains = { { "a", "/a", "text", 3, 3 }, { "b", "/b", "text", 1, 1 } };
            AtlasFile atlas = AtlasFile::create(partial, model, cal, std::vector<int32_t> { 1, 2, 3, 4 }, s.domainIds,
                std::vector<int64_t> { 0, 1, 2, 3, 4 }, {});
            RouterBlock b { 0, 0, 4, 4, 2, s.logits[0].data(), s.ids[0].data(), s.weights[0].data(), nullptr };
            atlas.writeRouterBlock(b);
            atlas.markLayerComplete(0);
        }
        const AtlasFile atlas = AtlasFile::openReadOnly(partial.string() + ".partial");
        RoutingRule rule = parseRoutingRule("threshold:1.5", 4, 2);
        try {
            calibrateThresholds(atlas, rule);
            QFAIL("a layer without logits was accepted");
        } catch (const RequestError& e) {
            QCOMPARE(e.field(), std::string("routing"));
            QVERIFY2(std::string(e.what()).find("/layers/3/router_logits") != std::string::npos, e.what());
            QVERIFY(std::string(e.what()).find("MoE layer 3") != std::string::npos);
        }
        QVERIFY(rule.thresholds.empty());
        QVERIFY_THROWS_EXCEPTION(RequestError, routingRuleStats(atlas, parseRoutingRule("top-k:1", 4, 2)));

        // A stop request ends the pass with Cancelled.
        const AtlasFile hand = AtlasFile::openReadOnly(m_hand);
        StopToken stop;
        stop.requestStop();
        QVERIFY_THROWS_EXCEPTION(Cancelled, routingRuleStats(hand, parseRoutingRule("top-k:1", 4, 2), {}, &stop));
        // Other rules are not touched by calibration.
        RoutingRule topP = parseRoutingRule("top-p:0.5", 4, 2);
        calibrateThresholds(hand, topP);
        QVERIFY(topP.thresholds.empty());
    }
};

QTEST_APPLESS_MAIN(TestRoutingRuleStats)
#include "tst_routing_rule_stats.moc"
