// The four core jobs through a JobRunner against the CLI on a generated model: capture, score and
// eval from the GUI give the same records, statistics and table as `moeatlas capture/score/eval`;
// a real capture cancelled mid-run ends with cancelled() and leaves only the .partial atlas.
#include "jobs/core_jobs.h"
#include "jobs/job_runner.h"
#include "tst_charts_fixture.h"

#include "atlas/atlas_file.h"
#include "text/calibration.h"

#include <nlohmann/json.hpp>

#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::views;

class TstJobsCore : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void captureScoreEvalMatchCli();
    void captureCancelledMidRun();

private:
    CaptureParams captureParams(const QString& atlas) const;
    // Runs one job to its end; returns finished's ok and fills `message`.
    static bool runToEnd(Job job, QString* message = nullptr);

    QTemporaryDir m_dir;
    test::AtlasFixture m_f;
    QString m_cliAtlas;
};

CaptureParams TstJobsCore::captureParams(const QString& atlas) const
{
    CaptureParams p;
    p.checkpoint = m_f.model.toStdString();
    p.domains.push_back(parseDomainArgument("math=" + m_f.domainFiles[0].toStdString()));
    p.domains.push_back(parseDomainArgument("code=" + m_f.domainFiles[1].toStdString()));
    p.packing.seqLen = 64;
    p.output = atlas.toStdString();
    return p;
}

bool TstJobsCore::runToEnd(Job job, QString* message)
{
    JobRunner runner;
    QSignalSpy finished(&runner, &JobRunner::finished);
    runner.start(std::move(job));
    if (!finished.wait(600000) && finished.isEmpty())
        return false;
    if (message)
        *message = finished.first().at(1).toString();
    return finished.first().at(0).toBool();
}

void TstJobsCore::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    QVERIFY(test::generateModel(m_dir.path(), m_f));
    m_cliAtlas = m_dir.filePath(QStringLiteral("cli.atlas.h5"));
    QCOMPARE(test::runMoeatlas(test::captureArgs(m_f, m_cliAtlas)).exitCode, 0);
    QCOMPARE(test::runMoeatlas({ QStringLiteral("score"), m_cliAtlas }).exitCode, 0);
    QCOMPARE(
        test::runMoeatlas({ QStringLiteral("eval"), QStringLiteral("--atlas"), m_cliAtlas, QStringLiteral("--sparsity"),
                              QStringLiteral("0.5"), QStringLiteral("--random-plans"), QStringLiteral("1"),
                              QStringLiteral("--label"), QStringLiteral("sweep") })
            .exitCode,
        0);
}

void TstJobsCore::captureScoreEvalMatchCli()
{
    const QString gui = m_dir.filePath(QStringLiteral("gui.atlas.h5"));
    QString message;
    QVERIFY2(runToEnd(captureJob(captureParams(gui)), &message), qPrintable(message));
    QVERIFY2(runToEnd(scoreJob(gui.toStdString()), &message), qPrintable(message));
    EvalRequest eval;
    eval.atlas = gui.toStdString();
    eval.sweep.sparsities = { 0.5 };
    eval.sweep.randomPlans = 1;
    eval.label = "sweep";
    QVERIFY2(runToEnd(evalJob(eval), &message), qPrintable(message));

    // Exact: the jobs and the CLI run the same core code with the same options on this machine -- the same
    // OpenBLAS and ATen kernels, LibTorch's default thread count in both processes, the same tokens and
    // micro-batches -- so the same operations in the same order. (The evaluation's memory grouping may
    // differ, but every variant runs alone through the same micro-batches: Executor::evaluate.)
    const AtlasFile a = AtlasFile::openReadOnly(gui.toStdString());
    const AtlasFile b = AtlasFile::openReadOnly(m_cliAtlas.toStdString());
    QVERIFY(a.isComplete());
    QCOMPARE(a.tokens(), b.tokens());
    for (const int layer : b.model().moeLayers) {
        QCOMPARE(a.readTopkIds(layer), b.readTopkIds(layer));
        QCOMPARE(a.readLogits(layer), b.readLogits(layer));
    }
    for (const char* group : { "statistics", "scores/peu" }) {
        const auto ra = a.readResults(group), rb = b.readResults(group);
        QVERIFY2(ra && rb, group);
        QCOMPARE(ra->arrays.size(), rb->arrays.size());
        for (std::size_t i = 0; i < rb->arrays.size(); ++i) {
            QCOMPARE(ra->arrays[i].name, rb->arrays[i].name);
            QCOMPARE(ra->arrays[i].values, rb->arrays[i].values);
        }
    }
    const auto ea = a.readResults("evaluation/sweep"), eb = b.readResults("evaluation/sweep");
    QVERIFY(ea && eb);
    const nlohmann::json pa = nlohmann::json::parse(ea->paramsJson), pb = nlohmann::json::parse(eb->paramsJson);
    QVERIFY(pa["variants"] == pb["variants"]);
    QVERIFY(pa["domains"] == pb["domains"]);
    for (const char* array : { "nll", "sparsity", "kept_experts", "tokens" }) {
        const AtlasArray *x = ea->find(array), *y = eb->find(array);
        QVERIFY2(x && y, array);
        QCOMPARE(x->dims, y->dims);
        // The same fp32 losses averaged in double; 1e-9 relative leaves room for no more than that.
        for (std::size_t i = 0; i < y->values.size(); ++i)
            QVERIFY2(std::abs(x->values[i] - y->values[i]) <= 1e-9 * std::max(1.0, std::abs(y->values[i])), array);
    }
}

void TstJobsCore::captureCancelledMidRun()
{
    // The cancel comes from the job's first progress report (cancel() is thread-safe), so the
    // capture is certainly running when it is asked to stop, whatever the machine's speed.
    const QString atlas = m_dir.filePath(QStringLiteral("cancelled.atlas.h5"));
    JobRunner runner;
    QSignalSpy cancelled(&runner, &JobRunner::cancelled);
    QSignalSpy failed(&runner, &JobRunner::failed);
    QSignalSpy finished(&runner, &JobRunner::finished);
    Job job = captureJob(captureParams(atlas));
    JobFn inner = job.run;
    job.run = [inner, &runner](const ProgressFn& progress, const StopToken* stop) {
        return inner(
            [&](const Progress& p) {
                runner.cancel();
                return progress(p);
            },
            stop);
    };
    runner.start(std::move(job));
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 1, 600000);
    QCOMPARE(failed.size(), 0);
    QCOMPARE(cancelled.size(), 1);
    QCOMPARE(finished.first().at(0).toBool(), false);
    QVERIFY(!fs::exists(atlas.toStdString()));
    QVERIFY(fs::exists(atlas.toStdString() + ".partial"));
}

QTEST_MAIN(TstJobsCore)
#include "tst_jobs_core.moc"
