// Scores and statistics of random atlases against tests/metrics/reference_scores.py, an
// independent numpy + h5py implementation of the same definitions (relative tolerance 1e-9: both sides
// work in float64 from the same stored logits, summing in other orders and with other exp/log kernels,
// so they differ by far less, on any CPU).
#include "metrics/scores.h"
#include "metrics_fixture.h"
#include "test_support.h"

#include <QTemporaryDir>
#include <QTest>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

class TestMetricsNumpy : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;

    void check(const char* name, const TinyAtlasSpec& spec, const ScoreParams& params, const QStringList& referenceArgs)
    {
        const fs::path path = fs::path(m_dir.path().toStdString()) / name;
        writeTinyAtlas(path, spec);
        ScoreParams p = params;
        p.blockTokens = 100; // several blocks per layer, one straddling domains
        scoreAtlasFile(path, p, {});
        const ProcessResult r = runPython(QStringLiteral("tests/metrics/reference_scores.py"),
            QStringList { QString::fromStdString(path.string()), QStringLiteral("--check") } + referenceArgs);
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdOut + r.stdErr));
        QVERIFY(r.stdOut.contains(QStringLiteral(" 0 mismatches")));
    }

private Q_SLOTS:
    void initTestCase()
    {
        if (pythonExecutable().isEmpty())
            QSKIP("MOEATLAS_PYTHON is not set");
        QVERIFY(m_dir.isValid());
    }

    void defaults() { check("defaults.atlas.h5", randomAtlas(1, 9, 61, 16, 4, 3, 3, true), {}, {}); }

    void otherParameters()
    {
        ScoreParams p;
        p.peu.poolK = 6;
        p.peu.transform = PeuTransform::Sigmoid;
        p.bandMin = 2;
        p.bandMax = 5;
        p.seed = 11;
        check("params.atlas.h5", randomAtlas(2, 8, 50, 12, 3, 2, 2, true), p,
            { QStringLiteral("--pool-k"), QStringLiteral("6"), QStringLiteral("--transform"), QStringLiteral("sigmoid"),
                QStringLiteral("--band"), QStringLiteral("2:5"), QStringLiteral("--seed"), QStringLiteral("11") });
    }

    void halfLogitsWithoutNorms()
    {
        // fp16 storage rounds logits into ties, exercising the stable tie order on both sides.
        TinyAtlasSpec s = randomAtlas(3, 6, 40, 8, 2, 2, 2, false);
        s.storage = LogitStorage::Float16;
        ScoreParams p;
        p.peu.transform = PeuTransform::Exp;
        check("half.atlas.h5", s, p, { QStringLiteral("--transform"), QStringLiteral("exp") });
    }
};

QTEST_GUILESS_MAIN(TestMetricsNumpy)
#include "tst_metrics_numpy.moc"
