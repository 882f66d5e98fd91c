// JobRunner and JobsPanel with synthetic jobs: progress arrives on the GUI thread while the job
// runs on another, Cancel stops a job that would otherwise never end, every kind of error becomes
// failed() with its text, jobs queue in order, throttling keeps the last report, and the ETA math.
#include "jobs/core_jobs.h"
#include "jobs/job_runner.h"
#include "jobs/jobs_panel.h"
#include "util/error.h"

#include <QProgressBar>
#include <QPushButton>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>
#include <QThread>

#include <atomic>
#include <thread>
#include <utility>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

// Reports `steps` units (one per ms) unless stopped; the stop check goes through the core's
// contract (progress returning false or the token) and throws Cancelled like the engine does.
Job countingJob(int64_t steps, std::atomic<Qt::HANDLE>* thread = nullptr)
{
    return Job { QStringLiteral("count"), [steps, thread](const ProgressFn& progress, const StopToken* stop) {
                    if (thread)
                        thread->store(QThread::currentThreadId());
                    for (int64_t i = 1; steps < 0 || i <= steps; ++i) {
                        std::this_thread::sleep_for(std::chrono::milliseconds(1));
                        if (!progress({ "step", i, steps < 0 ? 0 : steps }) || stop->stopRequested())
                            throw Cancelled();
                    }
                    return JobResult { QStringLiteral("counted"), QStringLiteral("/tmp/out.bin") };
                } };
}

Job throwingJob(std::function<void()> thrower)
{
    return Job { QStringLiteral("throws"), [thrower](const ProgressFn&, const StopToken*) -> JobResult {
                    thrower();
                    return {};
                } };
}

} // namespace

class TstJobsRunner : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void progressArrivesOnGuiThread();
    void cancelStopsRunningJob();
    void errorsBecomeFailed_data();
    void errorsBecomeFailed();
    void coreJobFailureNamesTheFile();
    void requestErrorNamesTheControl();
    void jobsRunInOrder();
    void startFromFinishedHandler();
    void throttlingKeepsLastReport();
    void destructorStopsRunningJob();
    void etaFromRate();
};

void TstJobsRunner::progressArrivesOnGuiThread()
{
    JobRunner runner;
    runner.setProgressInterval(std::chrono::milliseconds(0));
    JobsPanel panel(&runner);
    std::atomic<Qt::HANDLE> jobThread { nullptr };
    QList<qint64> dones;
    bool allOnGui = true;
    connect(&runner, &JobRunner::progress, this, [&](const QString& stage, qint64 done, qint64 total, double) {
        allOnGui = allOnGui && QThread::currentThread() == qApp->thread();
        QCOMPARE(stage, QStringLiteral("step"));
        QCOMPARE(total, qint64 { 200 });
        dones << done;
    });
    QSignalSpy output(&runner, &JobRunner::outputReady);
    QSignalSpy finished(&runner, &JobRunner::finished);
    QSignalSpy busy(&runner, &JobRunner::busyChanged);
    runner.start(countingJob(200, &jobThread));
    QVERIFY(runner.isBusy()); // start() returned at once: the job runs elsewhere
    QVERIFY(panel.cancelButton()->isEnabled());
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 1, 60000);

    QVERIFY(allOnGui);
    QVERIFY(jobThread.load() != nullptr);
    QVERIFY(jobThread.load() != QThread::currentThreadId());
    QVERIFY(!dones.isEmpty());
    QVERIFY(std::is_sorted(dones.begin(), dones.end()));
    QCOMPARE(finished.first().at(0).toBool(), true);
    QCOMPARE(finished.first().at(1).toString(), QStringLiteral("counted"));
    QCOMPARE(output.size(), 1);
    QCOMPARE(output.first().at(0).toString(), QStringLiteral("/tmp/out.bin"));
    QCOMPARE(busy.size(), 2);
    QVERIFY(!runner.isBusy());
    QCOMPARE(panel.progressBar()->value(), panel.progressBar()->maximum());
    QCOMPARE(panel.logLines(), QStringList { QStringLiteral("✓ count: counted") });
    QVERIFY(!panel.cancelButton()->isEnabled());
}

void TstJobsRunner::cancelStopsRunningJob()
{
    JobRunner runner;
    JobsPanel panel(&runner);
    QSignalSpy progress(&runner, &JobRunner::progress);
    QSignalSpy cancelled(&runner, &JobRunner::cancelled);
    QSignalSpy failed(&runner, &JobRunner::failed);
    QSignalSpy finished(&runner, &JobRunner::finished);
    runner.start(countingJob(-1)); // never ends on its own
    QTRY_VERIFY_WITH_TIMEOUT(progress.size() > 0, 60000);
    QVERIFY(finished.isEmpty());
    QTest::mouseClick(panel.cancelButton(), Qt::LeftButton);
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 1, 60000);
    QCOMPARE(cancelled.size(), 1);
    QCOMPARE(failed.size(), 0);
    QCOMPARE(finished.first().at(0).toBool(), false);
    QVERIFY(!runner.isBusy());
    QCOMPARE(panel.logLines().size(), 1);
    QVERIFY2(panel.logLines().first().startsWith(QStringLiteral("⊘ count")), qPrintable(panel.logLines().first()));
}

void TstJobsRunner::errorsBecomeFailed_data()
{
    QTest::addColumn<int>("kind");
    QTest::addColumn<QString>("message");
    QTest::newRow("InputError") << 0 << QStringLiteral("/data/x.jsonl: line 3: no 'input_ids'");
    QTest::newRow("Error") << 1 << QStringLiteral("HDF5: cannot write /layers/0");
    QTest::newRow("std::exception") << 2 << QStringLiteral("bad things");
    QTest::newRow("anything else") << 3 << QStringLiteral("unknown error");
}

void TstJobsRunner::errorsBecomeFailed()
{
    QFETCH(int, kind);
    QFETCH(QString, message);
    JobRunner runner;
    JobsPanel panel(&runner);
    QSignalSpy failed(&runner, &JobRunner::failed);
    QSignalSpy cancelled(&runner, &JobRunner::cancelled);
    QSignalSpy finished(&runner, &JobRunner::finished);
    const std::string text = message.toStdString();
    runner.start(throwingJob([kind, text] {
        switch (kind) {
        case 0:
            throw InputError(text);
        case 1:
            throw Error(text);
        case 2:
            throw std::runtime_error(text);
        default:
            throw 42;
        }
    }));
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 1, 60000);
    QCOMPARE(failed.size(), 1);
    QCOMPARE(failed.first().at(0).toString(), message);
    QCOMPARE(cancelled.size(), 0);
    QCOMPARE(finished.first().at(0).toBool(), false);
    QCOMPARE(finished.first().at(1).toString(), message);
    QCOMPARE(panel.logLines(), QStringList { QStringLiteral("✗ throws: ") + message });
}

void TstJobsRunner::coreJobFailureNamesTheFile()
{
    QTemporaryDir dir;
    const QString missing = dir.filePath(QStringLiteral("missing.atlas.h5"));
    JobRunner runner;
    QSignalSpy failed(&runner, &JobRunner::failed);
    QSignalSpy finished(&runner, &JobRunner::finished);
    runner.start(scoreJob(missing.toStdString()));
    EvalRequest eval;
    eval.atlas = missing.toStdString();
    runner.start(evalJob(eval));
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 2, 60000);
    QCOMPARE(failed.size(), 2);
    for (const QList<QVariant>& f : failed)
        QVERIFY2(f.at(0).toString().contains(QStringLiteral("missing.atlas.h5")), qPrintable(f.at(0).toString()));
}

// A RequestError is shown after the label of the control that sets its field, when the job's dialog
// has one (Job::fieldLabels); other fields and other errors keep their message as it is.
void TstJobsRunner::requestErrorNamesTheControl()
{
    const std::string message = "0 tokens per sequence (expected a count > 0)";
    const FieldLabels labels { { "seqLen", QStringLiteral("Sequence length") } };
    QCOMPARE(jobErrorText(RequestError("seqLen", message), labels),
        QStringLiteral("Sequence length: ") + QString::fromStdString(message));
    QCOMPARE(jobErrorText(RequestError("batchTokens", message), labels), QString::fromStdString(message));
    QCOMPARE(jobErrorText(InputError(message), labels), QString::fromStdString(message));

    JobRunner runner;
    QSignalSpy failed(&runner, &JobRunner::failed);
    QSignalSpy finished(&runner, &JobRunner::finished);
    Job job = throwingJob([message] { throw RequestError("seqLen", message); });
    job.fieldLabels = labels;
    runner.start(std::move(job));
    runner.start(throwingJob([message] { throw RequestError("seqLen", message); })); // no labels
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 2, 60000);
    QCOMPARE(failed.size(), 2);
    QCOMPARE(failed.at(0).at(0).toString(), QStringLiteral("Sequence length: ") + QString::fromStdString(message));
    QCOMPARE(failed.at(1).at(0).toString(), QString::fromStdString(message));
}

void TstJobsRunner::jobsRunInOrder()
{
    JobRunner runner;
    QStringList events;
    connect(&runner, &JobRunner::started, this,
        [&](int id, const QString&) { events << QStringLiteral("start %1").arg(id); });
    connect(&runner, &JobRunner::finished, this,
        [&](bool ok, const QString&) { events << QStringLiteral("end %1 %2").arg(runner.currentJobId()).arg(ok); });
    QSignalSpy finished(&runner, &JobRunner::finished);
    QSignalSpy busy(&runner, &JobRunner::busyChanged);
    const int a = runner.start(countingJob(20));
    const int b = runner.start(throwingJob([] { throw InputError("second fails"); }));
    const int c = runner.start(countingJob(5));
    QCOMPARE(runner.queuedJobs(), 2);
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 3, 60000);
    // currentJobId() is 0 in finished(): the job has left the runner.
    QCOMPARE(events,
        (QStringList { QStringLiteral("start %1").arg(a), QStringLiteral("end 0 1"), QStringLiteral("start %1").arg(b),
            QStringLiteral("end 0 0"), QStringLiteral("start %1").arg(c), QStringLiteral("end 0 1") }));
    QCOMPARE(busy.size(), 2); // busy once for the whole queue
}

// The main window chains jobs (capture, then score) from finished(): the runner stays busy.
void TstJobsRunner::startFromFinishedHandler()
{
    JobRunner runner;
    QList<bool> busy;
    connect(&runner, &JobRunner::busyChanged, this, [&](bool b) { busy << b; });
    QSignalSpy finished(&runner, &JobRunner::finished);
    bool chained = false;
    connect(&runner, &JobRunner::finished, this, [&](bool ok, const QString&) {
        if (ok && !std::exchange(chained, true))
            runner.start(countingJob(3));
    });
    runner.start(countingJob(3));
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 2, 60000);
    QVERIFY(!runner.isBusy());
    QCOMPARE(busy, (QList<bool> { true, false }));
}

void TstJobsRunner::throttlingKeepsLastReport()
{
    // An interval longer than the test: only the first report, stage changes and the final report
    // may post; the last delivered one is the final report whatever the thread timing.
    JobRunner runner;
    runner.setProgressInterval(std::chrono::hours(1));
    QList<QPair<QString, qint64>> got;
    connect(&runner, &JobRunner::progress, this, [&](const QString& stage, qint64 done, qint64, double) {
        got.append({ stage, done });
    });
    QSignalSpy finished(&runner, &JobRunner::finished);
    runner.start(Job { QStringLiteral("burst"), [](const ProgressFn& progress, const StopToken*) {
                          for (int64_t i = 1; i <= 20000; ++i)
                              progress({ i <= 10000 ? "a" : "b", i, 20000 });
                          return JobResult {};
                      } });
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 1, 60000);
    QVERIFY2(!got.isEmpty() && got.size() <= 3, qPrintable(QString::number(got.size())));
    QCOMPARE(got.last().first, QStringLiteral("b"));
    QCOMPARE(got.last().second, qint64 { 20000 });
}

void TstJobsRunner::destructorStopsRunningJob()
{
    auto runner = std::make_unique<JobRunner>();
    QSignalSpy progress(runner.get(), &JobRunner::progress);
    std::atomic<bool> ended { false };
    runner->start(Job { QStringLiteral("endless"), [&ended](const ProgressFn& progress, const StopToken* stop) {
                           for (int64_t i = 1;; ++i) {
                               std::this_thread::sleep_for(std::chrono::milliseconds(1));
                               if (!progress({ "spin", i, 0 }) || stop->stopRequested()) {
                                   ended = true;
                                   throw Cancelled();
                               }
                           }
                           return JobResult {};
                       } });
    QTRY_VERIFY_WITH_TIMEOUT(progress.size() > 0, 60000);
    runner.reset(); // must stop and join the worker, or this never returns
    QVERIFY(ended.load());
}

void TstJobsRunner::etaFromRate()
{
    using Clock = EtaEstimator::Clock;
    EtaEstimator eta;
    const Clock::time_point t0 = Clock::now();
    QCOMPARE(eta.update(10, 0, t0), -1.0); // no total: unknown
    QCOMPARE(eta.update(10, 110, t0), -1.0); // first report: the baseline
    QCOMPARE(eta.update(10, 110, t0 + std::chrono::seconds(5)), -1.0); // no progress yet
    // 50 units in 10 s -> 5 units/s; 50 left -> 10 s.
    QCOMPARE(eta.update(60, 110, t0 + std::chrono::seconds(10)), 10.0);
    QCOMPARE(eta.update(110, 110, t0 + std::chrono::seconds(20)), 0.0);
    eta.reset();
    QCOMPARE(eta.update(60, 110, t0 + std::chrono::seconds(30)), -1.0);
    QCOMPARE(JobsPanel::formatEta(-1), QString());
    QCOMPARE(JobsPanel::formatEta(45.4), QStringLiteral("45 s"));
    QCOMPARE(JobsPanel::formatEta(200), QStringLiteral("3 min 20 s"));
    QCOMPARE(JobsPanel::formatEta(7260), QStringLiteral("2 h 1 min"));
}

QTEST_MAIN(TstJobsRunner)
#include "tst_jobs_runner.moc"
