// `moeatlas prefetch` on a capture of a generated model (MoE layers 0, 2, 3, 4: a dense layer 1 that
// lookaheads do not count): the oracle's hit rate is exactly 1 in the CSV and the atlas; with /prefetch
// written by h5py (recorded next-router predictions and the split), every CSV row and stored value of
// next-router, frequency, previous and oracle equals a numpy recomputation from the atlas
// (tests/cli/check_prefetch.py). Bad input names its flag, exits non-zero, writes no CSV and leaves the
// atlas byte for byte as it was.
#include "atlas/atlas_file.h"
#include "test_support.h"

#include <QCryptographicHash>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace moeatlas;

namespace {

QByteArray digest(const QString& path)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly))
        return {};
    return QCryptographicHash::hash(f.readAll(), QCryptographicHash::Sha256);
}

} // namespace

class TstCliPrefetch : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void oracleIsExactlyOne();
    void equalsNumpyWithRecordedPredictions();
    void badInputWritesNothing_data();
    void badInputWritesNothing();

private:
    QString path(const QString& name) const { return m_dir.filePath(name); }
    QString copyOf(const QString& name) const
    {
        const QString copy = path(name);
        QFile::remove(copy);
        return QFile::copy(m_atlas, copy) ? copy : QString();
    }

    QTemporaryDir m_dir;
    QString m_atlas; // captured, no /prefetch
};

void TstCliPrefetch::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
    const QString model = path(QStringLiteral("model"));
    QCOMPARE(test::runCli({ QStringLiteral("generate"), QStringLiteral("-o"), model, QStringLiteral("--arch"),
                              QStringLiteral("qwen3_moe"), QStringLiteral("--layers"), QStringLiteral("5"),
                              QStringLiteral("--mlp-only-layers"), QStringLiteral("1"), QStringLiteral("--dense-width"),
                              QStringLiteral("64"), QStringLiteral("--hidden"), QStringLiteral("64"),
                              QStringLiteral("--head-dim"), QStringLiteral("16"), QStringLiteral("--experts"),
                              QStringLiteral("8"), QStringLiteral("--top-k"), QStringLiteral("2"),
                              QStringLiteral("--expert-width"), QStringLiteral("32"), QStringLiteral("--vocab"),
                              QStringLiteral("256"), QStringLiteral("--seed"), QStringLiteral("3") })
                 .exitCode,
        0);
    for (const auto& [name, seed] :
        { std::pair { QStringLiteral("math"), 21 }, std::pair { QStringLiteral("code"), 22 } })
        QCOMPARE(
            test::runCli({ QStringLiteral("generate"), QStringLiteral("--vocab"), QStringLiteral("256"),
                             QStringLiteral("--seed"), QString::number(seed), QStringLiteral("--calibration"),
                             path(name + QStringLiteral(".jsonl")), QStringLiteral("--calibration-docs"),
                             QStringLiteral("6"), QStringLiteral("--calibration-doc-tokens"), QStringLiteral("48") })
                .exitCode,
            0);
    m_atlas = path(QStringLiteral("run.atlas.h5"));
    QCOMPARE(test::runCli({ QStringLiteral("capture"), model, QStringLiteral("-d"),
                              QStringLiteral("math=") + path(QStringLiteral("math.jsonl")), QStringLiteral("-d"),
                              QStringLiteral("code=") + path(QStringLiteral("code.jsonl")), QStringLiteral("--seq-len"),
                              QStringLiteral("48"), QStringLiteral("-o"), m_atlas })
                 .exitCode,
        0);
    QCOMPARE(AtlasFile::openReadOnly(m_atlas.toStdString()).model().moeLayers, (std::vector<int> { 0, 2, 3, 4 }));
}

void TstCliPrefetch::oracleIsExactlyOne()
{
    const QString atlas = copyOf(QStringLiteral("oracle.atlas.h5"));
    const QString csv = path(QStringLiteral("oracle.csv"));
    const test::ProcessResult r = test::runCli({ QStringLiteral("prefetch"), atlas, QStringLiteral("--csv"), csv,
        QStringLiteral("--budget"), QStringLiteral("3") });
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    QVERIFY2(r.stdOut.contains(QStringLiteral("oracle")), qPrintable(r.stdOut));
    QFile f(csv);
    QVERIFY(f.open(QIODevice::ReadOnly));
    const QStringList lines = QString::fromUtf8(f.readAll()).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    const QStringList header = lines[0].split(QLatin1Char(','));
    const qsizetype hit = header.indexOf(QStringLiteral("hit_rate")), recall = header.indexOf(QStringLiteral("recall"));
    int oracleRows = 0;
    for (const QString& line : lines.mid(1)) {
        const QStringList cells = line.split(QLatin1Char(','));
        if (cells[0] != QStringLiteral("oracle") || cells[hit].isEmpty())
            continue;
        QCOMPARE(cells[hit], QStringLiteral("1"));
        QCOMPARE(cells[recall], QStringLiteral("1"));
        ++oracleRows;
    }
    // Default lookaheads 1..3 over MoE layers 0, 2, 3, 4: 3 + 2 + 1 (layer, d) pairs, 3 domain rows x 2
    // splits (held-out rows of a domain without held-out tokens would be empty; both have some).
    QCOMPARE(oracleRows, 6 * 3 * 2);
    // The stored table: every valid oracle cell exactly 1.
    const std::optional<AtlasResults> stored
        = AtlasFile::openReadOnly(atlas.toStdString()).readResults("prefetch_hit_rates");
    QVERIFY(stored.has_value());
    const AtlasArray* rates = stored->find("hit_rate");
    QVERIFY(rates);
    QCOMPARE(rates->dims, (std::vector<uint64_t> { 3, 2, 3, 4, 3 })); // frequency, previous, oracle
    int ones = 0;
    const std::size_t perPredictor = rates->values.size() / 3;
    for (std::size_t i = 2 * perPredictor; i < rates->values.size(); ++i)
        if (!std::isnan(rates->values[i])) {
            QCOMPARE(rates->values[i], 1.0);
            ++ones;
        }
    QCOMPARE(ones, 6 * 3 * 2);
}

void TstCliPrefetch::equalsNumpyWithRecordedPredictions()
{
    const QString atlas = copyOf(QStringLiteral("recorded.atlas.h5"));
    const test::ProcessResult w = test::runPython(QStringLiteral("tests/prefetch/write_prefetch.py"),
        { atlas, QStringLiteral("--predictors"), QStringLiteral("next-router"), QStringLiteral("--max-lookahead"),
            QStringLiteral("3"), QStringLiteral("--budget"), QStringLiteral("4"), QStringLiteral("--seed"),
            QStringLiteral("9") });
    QVERIFY2(w.exitCode == 0, qPrintable(w.stdErr));
    const QString csv = path(QStringLiteral("recorded.csv"));
    // Default predictors: the recorded one plus the three derived.
    const test::ProcessResult r = test::runCli({ QStringLiteral("prefetch"), atlas, QStringLiteral("--csv"), csv,
        QStringLiteral("--budget"), QStringLiteral("4"), QStringLiteral("--lookahead"), QStringLiteral("1,3") });
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    const test::ProcessResult check = test::runPython(QStringLiteral("tests/cli/check_prefetch.py"), { atlas, csv });
    QVERIFY2(check.exitCode == 0, qPrintable(check.stdOut + check.stdErr));
    QVERIFY2(check.stdOut.contains(
                 QStringLiteral("\"predictors\": [\"frequency\", \"next-router\", \"oracle\", \"previous\"]"))
            && check.stdOut.contains(QStringLiteral("\"oracle_exact\": true")),
        qPrintable(check.stdOut));
    // --predictor with a comma list and repeated flags, and --no-store: the stored table stays the one above.
    const QByteArray before = digest(atlas);
    const test::ProcessResult again = test::runCli(
        { QStringLiteral("prefetch"), atlas, QStringLiteral("--predictor"), QStringLiteral("frequency,previous"),
            QStringLiteral("--predictor"), QStringLiteral("next-router"), QStringLiteral("--no-store") });
    QVERIFY2(again.exitCode == 0, qPrintable(again.stdErr));
    QVERIFY(again.stdOut.contains(QStringLiteral("next-router")));
    QCOMPARE(digest(atlas), before);
}

void TstCliPrefetch::badInputWritesNothing_data()
{
    QTest::addColumn<QStringList>("args");
    QTest::addColumn<QString>("flag");
    QTest::addColumn<QString>("says");
    QTest::newRow("unknown predictor") << QStringList { QStringLiteral("--predictor"),
        QStringLiteral("oracle,psychic") }
                                       << "--predictor"
                                       << "psychic";
    QTest::newRow("lookahead beyond the last MoE layer")
        << QStringList { QStringLiteral("--lookahead"), QStringLiteral("1,4") } << "--lookahead"
        << "0, 2, 3, 4";
    QTest::newRow("lookahead 0") << QStringList { QStringLiteral("--lookahead"), QStringLiteral("0") } << "--lookahead"
                                 << "lookahead 0";
    QTest::newRow("budget below k") << QStringList { QStringLiteral("--budget"), QStringLiteral("1") } << "--budget"
                                    << "[2, 8]";
    QTest::newRow("budget above E") << QStringList { QStringLiteral("--budget"), QStringLiteral("9") } << "--budget"
                                    << "[2, 8]";
    QTest::newRow("predictions not recorded")
        << QStringList { QStringLiteral("--predictor"), QStringLiteral("next-router") } << "--predictor"
        << "capture with --prefetch";
}

void TstCliPrefetch::badInputWritesNothing()
{
    QFETCH(QStringList, args);
    QFETCH(QString, flag);
    QFETCH(QString, says);
    const QString atlas = copyOf(QStringLiteral("bad.atlas.h5"));
    const QByteArray before = digest(atlas);
    const QString csv = path(QStringLiteral("bad.csv"));
    QFile::remove(csv);
    const test::ProcessResult r
        = test::runCli(QStringList { QStringLiteral("prefetch"), atlas, QStringLiteral("--csv"), csv } + args);
    QVERIFY(r.exitCode != 0);
    QVERIFY2(r.stdErr.contains(flag + QStringLiteral(": ")) && r.stdErr.contains(says), qPrintable(r.stdErr));
    QVERIFY(!QFile::exists(csv));
    QCOMPARE(digest(atlas), before);
    QVERIFY(!AtlasFile::openReadOnly(atlas.toStdString()).readResults("prefetch_hit_rates").has_value());
}

QTEST_GUILESS_MAIN(TstCliPrefetch)
#include "tst_cli_prefetch.moc"
