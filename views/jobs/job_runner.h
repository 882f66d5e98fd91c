// Runs core jobs (capture, score, eval, export) on a worker thread for the workbench: throttled
// progress with an ETA, cancellation through a StopToken, results and errors as queued signals.
#pragma once

#include "util/progress.h"

#include <QObject>
#include <QString>

#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace moeatlas::views {

// What a finished job hands back: a one-line summary for the log and the file it wrote
// (atlas, checkpoint directory), empty when none.
struct JobResult {
    QString message;
    QString outputPath;
};

// A job body. Runs on the worker thread; reports through `progress` (which returns false once a
// stop was requested) and honours `stop`. Errors are thrown: Cancelled, InputError, Error or any
// std::exception; the runner turns them into signals.
using JobFn = std::function<JobResult(const ProgressFn& progress, const StopToken* stop)>;

// The label of the widget that sets each request field (RequestError::field(), e.g. "seqLen" ->
// "Sequence length"), for the job's error messages.
using FieldLabels = std::map<std::string, QString>;

struct Job {
    QString name; // shown in the panel and the log, e.g. "score run.atlas.h5"
    JobFn run;
    FieldLabels fieldLabels {}; // fields the dialog that started the job has a control for
};

// An error as the workbench shows it: its message, after the label of the control at fault when it
// is a RequestError whose field `labels` names ("Sequence length: 0 tokens per sequence ...").
QString jobErrorText(const std::exception& error, const FieldLabels& labels = {});

// Remaining time from progress reports: rate measured from the first report of the job
// (which excludes start-up work such as loading a checkpoint) to the latest one.
class EtaEstimator {
public:
    using Clock = std::chrono::steady_clock;
    void reset();
    // Seconds left, or -1 when unknown (no total, no progress since the first report yet).
    double update(int64_t done, int64_t total, Clock::time_point now = Clock::now());

private:
    bool m_started = false;
    int64_t m_firstDone = 0;
    Clock::time_point m_firstTime;
};

// Runs one job at a time on its own worker thread; jobs started while one runs wait in a FIFO
// queue. Every signal is emitted on the runner's (GUI) thread. Per job, in order: started(),
// progress()... (throttled to about 10 per second, coalesced), then outputReady() when the job
// succeeded with an output path, failed() or cancelled() otherwise, and last finished(ok, message).
// The destructor stops the running job and waits for it (a job checks its stop token often).
class JobRunner : public QObject {
    Q_OBJECT
public:
    explicit JobRunner(QObject* parent = nullptr);
    ~JobRunner() override;

    // Queues a job; it starts at once when the runner is idle. Returns its id (1, 2, ...).
    int start(Job job);
    bool isBusy() const { return m_current != nullptr; }
    // Id and name of the running job (0 / empty when idle), and jobs waiting.
    int currentJobId() const;
    QString currentJobName() const;
    int queuedJobs() const { return static_cast<int>(m_queue.size()); }
    // Removes a job that has not started yet (it emits nothing); false when it is not queued.
    bool dropQueued(int jobId);
    // Minimum time between two progress() signals (default 100 ms; 0 = every report).
    void setProgressInterval(std::chrono::milliseconds interval) { m_interval = interval; }

public Q_SLOTS:
    // Asks the running job to stop (its StopToken); it ends with cancelled(). Safe to call from
    // any thread. Queued jobs are kept.
    void cancel();
    // Drops the queued jobs and cancels the running one.
    void cancelAll();

Q_SIGNALS:
    void started(int jobId, const QString& name);
    void progress(const QString& stage, qint64 done, qint64 total, double etaSeconds);
    // The job wrote a file (JobResult::outputPath), before finished(true, ...).
    void outputReady(const QString& path);
    void failed(const QString& message);
    void cancelled();
    // Last signal of every job: ok is true only when it completed.
    void finished(bool ok, const QString& message);
    void busyChanged(bool busy);

private:
    struct Running;
    void startNext();
    void deliverProgress(const std::shared_ptr<Running>& job);
    void complete(const std::shared_ptr<Running>& job);

    std::deque<std::pair<int, Job>> m_queue;
    std::shared_ptr<Running> m_current;
    mutable std::mutex m_currentMutex; // m_current as cancel() sees it from other threads
    int m_nextId = 1;
    bool m_busy = false; // as last announced by busyChanged()
    std::chrono::milliseconds m_interval { 100 };
    EtaEstimator m_eta;
};

} // namespace moeatlas::views
