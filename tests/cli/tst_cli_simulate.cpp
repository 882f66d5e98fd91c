// `moeatlas simulate` on the demo atlas (mixtral, 4 MoE layers of 16 experts, top-2; read only): the CSVs of
// a run and of a sweep, an oracle prefetch that moves exactly the bytes of on-demand and is never slower
// (decision 34), and bad input that names its flag, exits non-zero and writes nothing.
#include "test_support.h"

#include "atlas/atlas_file.h"

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace moeatlas;

namespace {

QStringList csvLines(const QString& path)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly))
        return {};
    QStringList lines = QString::fromUtf8(f.readAll()).split(QLatin1Char('\n'));
    lines.removeAll(QString());
    return lines;
}

// The value of `column` in data row `row` (1-based after the header).
QString cell(const QStringList& lines, int row, const QString& column)
{
    const int c = static_cast<int>(lines.front().split(QLatin1Char(',')).indexOf(column));
    return lines.at(row).split(QLatin1Char(',')).at(c);
}

} // namespace

class TstCliSimulate : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    QString m_atlas;

    QStringList base(const QString& csv) const
    {
        return { QStringLiteral("simulate"), m_atlas, QStringLiteral("--cache-slots"), QStringLiteral("4"),
            QStringLiteral("--csv"), csv };
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_atlas = test::sourcePath(QStringLiteral("resources/demo/demo.atlas.h5"));
        QVERIFY(QFile::exists(m_atlas));
    }

    void runAndSweep()
    {
        const QString csv = m_dir.filePath(QStringLiteral("run.csv")),
                      layers = m_dir.filePath(QStringLiteral("layers.csv"));
        QCOMPARE(test::runCli(base(csv) << QStringLiteral("--layers-csv") << layers).exitCode, 0);
        const QStringList run = csvLines(csv);
        QCOMPARE(run.size(), 2);
        QCOMPARE(cell(run, 1, QStringLiteral("policy")), QStringLiteral("on-demand"));
        QCOMPARE(cell(run, 1, QStringLiteral("link_bytes_per_s")), QStringLiteral("3.15e+10")); // a6000-pcie4
        QCOMPARE(csvLines(layers).size(), 5); // header + 4 MoE layers

        const QString sweep = m_dir.filePath(QStringLiteral("sweep.csv"));
        QCOMPARE(test::runCli(base(sweep) << QStringLiteral("--sweep-cache") << QStringLiteral("2,16")
                                          << QStringLiteral("--sweep-bandwidth") << QStringLiteral("1e9,3e10"))
                     .exitCode,
            0);
        const QStringList rows = csvLines(sweep);
        QCOMPARE(rows.size(), 5);
        // 16 slots hold every expert: only the cold misses, 16 per layer at most.
        QVERIFY(cell(rows, 3, QStringLiteral("misses")).toLongLong() <= 64);
        QVERIFY(cell(rows, 4, QStringLiteral("tpot_mean_s")).toDouble()
            <= cell(rows, 3, QStringLiteral("tpot_mean_s")).toDouble());
    }

    void oraclePrefetchMovesTheSameBytes()
    {
        const QString demand = m_dir.filePath(QStringLiteral("demand.csv")),
                      oracle = m_dir.filePath(QStringLiteral("oracle.csv"));
        QCOMPARE(test::runCli(base(demand)).exitCode, 0);
        QCOMPARE(test::runCli(base(oracle) << QStringLiteral("--policy") << QStringLiteral("prefetch")
                                           << QStringLiteral("--predictor") << QStringLiteral("oracle"))
                     .exitCode,
            0);
        const QStringList d = csvLines(demand), o = csvLines(oracle);
        QCOMPARE(cell(o, 1, QStringLiteral("bytes_per_token")), cell(d, 1, QStringLiteral("bytes_per_token")));
        QCOMPARE(cell(o, 1, QStringLiteral("wasted_prefetches")), QStringLiteral("0"));
        QVERIFY(cell(o, 1, QStringLiteral("tpot_mean_s")).toDouble()
            <= cell(d, 1, QStringLiteral("tpot_mean_s")).toDouble());
    }

    // --store: the run table lands in a copy of the atlas as /simulation/<run>, equal to the CSV's rows; a
    // second run of another policy adds its own table and keeps the first.
    void storedTableEqualsCsv()
    {
        const QString atlas = m_dir.filePath(QStringLiteral("stored.atlas.h5")),
                      csv = m_dir.filePath(QStringLiteral("stored.csv"));
        QVERIFY(QFile::copy(m_atlas, atlas));
        QStringList args = base(csv);
        args[1] = atlas;
        QCOMPARE(test::runCli(args << QStringLiteral("--sweep-cache") << QStringLiteral("2,8")
                                   << QStringLiteral("--sweep-bandwidth") << QStringLiteral("1e9,3e10")
                                   << QStringLiteral("--store"))
                     .exitCode,
            0);
        QStringList prefetch = base(m_dir.filePath(QStringLiteral("stored-prefetch.csv")));
        prefetch[1] = atlas;
        QCOMPARE(test::runCli(prefetch << QStringLiteral("--policy") << QStringLiteral("prefetch")
                                       << QStringLiteral("--predictor") << QStringLiteral("frequency")
                                       << QStringLiteral("--store"))
                     .exitCode,
            0);
        const AtlasFile file = AtlasFile::openReadOnly(atlas.toStdString());
        QCOMPARE(file.resultGroups("simulation"),
            (std::vector<std::string> { "on-demand-lru-batch1", "prefetch-lru-frequency-d1-b2-batch1" }));
        const std::optional<AtlasResults> table = file.readResults("simulation/on-demand-lru-batch1");
        QVERIFY(table);
        const QStringList rows = csvLines(csv);
        QCOMPARE(rows.size(), 5);
        const std::pair<const char*, const char*> columns[]
            = { { "cache_slots", "cache_slots" }, { "link_bandwidth", "link_bytes_per_s" },
                  { "tpot_mean", "tpot_mean_s" }, { "stall_per_token", "stall_per_token_s" },
                  { "bytes_per_token", "bytes_per_token" }, { "misses", "misses" } };
        for (const auto& [stored, column] : columns) {
            const AtlasArray* a = table->find(stored);
            QVERIFY2(a && a->values.size() == 4, stored);
            for (int row = 1; row <= 4; ++row) {
                const double expected = cell(rows, row, QString::fromLatin1(column)).toDouble();
                QVERIFY2(std::abs(a->values[static_cast<std::size_t>(row - 1)] - expected) <= 1e-8 * std::abs(expected),
                    qPrintable(QStringLiteral("%1 row %2").arg(QString::fromLatin1(stored)).arg(row)));
            }
        }
        QVERIFY(std::isnan(table->find("cache_bytes")->values[0]));
    }

    void badInputWritesNothing_data()
    {
        QTest::addColumn<QStringList>("extra");
        QTest::addColumn<QString>("flag");
        QTest::newRow("zero bandwidth") << QStringList { QStringLiteral("--link-bandwidth"), QStringLiteral("0") }
                                        << QStringLiteral("--link-bandwidth");
        QTest::newRow("unknown preset") << QStringList { QStringLiteral("--preset"), QStringLiteral("tpu") }
                                        << QStringLiteral("--preset");
        QTest::newRow("lookahead beyond the last layer") << QStringList { QStringLiteral("--policy"),
            QStringLiteral("prefetch"), QStringLiteral("--lookahead"), QStringLiteral("4") }
                                                         << QStringLiteral("--lookahead");
        QTest::newRow("unknown predictor") << QStringList { QStringLiteral("--policy"), QStringLiteral("prefetch"),
            QStringLiteral("--predictor"), QStringLiteral("psychic") }
                                           << QStringLiteral("--predictor");
        QTest::newRow("predictor not recorded") << QStringList { QStringLiteral("--policy"), QStringLiteral("prefetch"),
            QStringLiteral("--predictor"), QStringLiteral("quasi-hidden") }
                                                << QStringLiteral("--predictor");
        QTest::newRow("unknown eviction")
            << QStringList { QStringLiteral("--eviction"), QStringLiteral("random") } << QStringLiteral("--eviction");
        QTest::newRow("cache too small") << QStringList { QStringLiteral("--batch"), QStringLiteral("4") }
                                         << QStringLiteral("--cache-slots");
    }
    void badInputWritesNothing()
    {
        QFETCH(QStringList, extra);
        QFETCH(QString, flag);
        const QString csv = m_dir.filePath(QStringLiteral("bad.csv"));
        const test::ProcessResult r = test::runCli(base(csv) << extra);
        QVERIFY(r.exitCode != 0);
        QVERIFY2(r.stdErr.contains(flag), qPrintable(r.stdErr));
        QVERIFY(!QFile::exists(csv));
    }
};

QTEST_GUILESS_MAIN(TstCliSimulate)
#include "tst_cli_simulate.moc"
