#include "jobs/job_runner.h"

#include "util/error.h"

#include <QThread>

#include <algorithm>

namespace moeatlas::views {

QString jobErrorText(const std::exception& error, const FieldLabels& labels)
{
    QString message = QString::fromUtf8(error.what());
    if (const auto* request = dynamic_cast<const RequestError*>(&error)) {
        const auto it = labels.find(request->field());
        if (it != labels.end())
            return it->second + QStringLiteral(": ") + message;
    }
    return message;
}

void EtaEstimator::reset()
{
    m_started = false;
    m_firstDone = 0;
}

double EtaEstimator::update(int64_t done, int64_t total, Clock::time_point now)
{
    if (total <= 0)
        return -1;
    if (!m_started) {
        m_started = true;
        m_firstDone = done;
        m_firstTime = now;
        return -1;
    }
    if (done <= m_firstDone)
        return -1;
    const double elapsed = std::chrono::duration<double>(now - m_firstTime).count();
    const double rate = static_cast<double>(done - m_firstDone) / std::max(elapsed, 1e-9);
    return static_cast<double>(std::max<int64_t>(total - done, 0)) / rate;
}

// One job in flight. Shared by the GUI thread and the worker; the progress snapshot is guarded
// by `mutex`, the outcome is written by the worker before its thread finishes and read after.
struct JobRunner::Running {
    enum class Outcome { Ok, Failed, Cancelled };

    int id = 0;
    Job job;
    StopToken stop;
    QThread* thread = nullptr;

    std::mutex mutex;
    Progress latest;
    EtaEstimator::Clock::time_point latestTime;
    bool deliveryPending = false;
    EtaEstimator::Clock::time_point lastPost;
    std::string lastStage;
    bool anyPost = false;

    Outcome outcome = Outcome::Failed;
    JobResult result;
    QString error;
};

JobRunner::JobRunner(QObject* parent)
    : QObject(parent)
{
}

JobRunner::~JobRunner()
{
    m_queue.clear();
    std::shared_ptr<Running> job;
    {
        std::lock_guard lock(m_currentMutex);
        job = m_current;
    }
    if (job) {
        job->stop.requestStop();
        job->thread->wait();
        delete job->thread;
        std::lock_guard lock(m_currentMutex);
        m_current.reset();
    }
}

int JobRunner::start(Job job)
{
    const int id = m_nextId++;
    m_queue.emplace_back(id, std::move(job));
    if (!m_current) {
        if (!m_busy) {
            m_busy = true;
            Q_EMIT busyChanged(true);
        }
        startNext();
    }
    return id;
}

int JobRunner::currentJobId() const
{
    return m_current ? m_current->id : 0;
}

QString JobRunner::currentJobName() const
{
    return m_current ? m_current->job.name : QString();
}

void JobRunner::cancel()
{
    std::lock_guard lock(m_currentMutex);
    if (m_current)
        m_current->stop.requestStop();
}

bool JobRunner::dropQueued(int jobId)
{
    const auto it = std::find_if(m_queue.begin(), m_queue.end(), [jobId](const auto& q) { return q.first == jobId; });
    if (it == m_queue.end())
        return false;
    m_queue.erase(it);
    return true;
}

void JobRunner::cancelAll()
{
    m_queue.clear();
    cancel();
}

void JobRunner::startNext()
{
    if (m_queue.empty())
        return;
    auto job = std::make_shared<Running>();
    job->id = m_queue.front().first;
    job->job = std::move(m_queue.front().second);
    m_queue.pop_front();
    m_eta.reset();

    const std::chrono::milliseconds interval = m_interval;
    // Called on the worker: keeps the latest report and posts at most one delivery at a time,
    // so a job that reports a million times costs the GUI about ten events per second.
    ProgressFn progress = [this, job, interval](const Progress& p) {
        bool post = false;
        {
            std::lock_guard lock(job->mutex);
            job->latest = p;
            job->latestTime = EtaEstimator::Clock::now();
            const bool due = !job->anyPost || job->latestTime - job->lastPost >= interval || p.stage != job->lastStage
                || (p.total > 0 && p.done >= p.total);
            if (due && !job->deliveryPending) {
                job->deliveryPending = true;
                job->anyPost = true;
                job->lastPost = job->latestTime;
                job->lastStage = p.stage;
                post = true;
            }
        }
        if (post)
            QMetaObject::invokeMethod(
                this, [this, job] { deliverProgress(job); }, Qt::QueuedConnection);
        return !job->stop.stopRequested();
    };

    job->thread = QThread::create([job, progress] {
        try {
            job->result = job->job.run(progress, &job->stop);
            job->outcome = Running::Outcome::Ok;
        } catch (const Cancelled&) {
            job->outcome = Running::Outcome::Cancelled;
        } catch (const std::exception& e) {
            job->outcome = Running::Outcome::Failed;
            job->error = jobErrorText(e, job->job.fieldLabels);
        } catch (...) {
            job->outcome = Running::Outcome::Failed;
            job->error = QStringLiteral("unknown error");
        }
    });
    job->thread->setObjectName(QStringLiteral("moeatlas job"));
    connect(
        job->thread, &QThread::finished, this, [this, job] { complete(job); }, Qt::QueuedConnection);
    {
        std::lock_guard lock(m_currentMutex);
        m_current = job;
    }
    Q_EMIT started(job->id, job->job.name);
    job->thread->start();
}

void JobRunner::deliverProgress(const std::shared_ptr<Running>& job)
{
    if (job != m_current)
        return; // a late delivery of a job that already ended
    Progress p;
    EtaEstimator::Clock::time_point when;
    {
        std::lock_guard lock(job->mutex);
        p = job->latest;
        when = job->latestTime;
        job->deliveryPending = false;
    }
    const double eta = m_eta.update(p.done, p.total, when);
    Q_EMIT progress(QString::fromStdString(p.stage), p.done, p.total, eta);
}

void JobRunner::complete(const std::shared_ptr<Running>& job)
{
    if (job != m_current)
        return;
    job->thread->wait();
    delete job->thread;
    job->thread = nullptr;
    {
        std::lock_guard lock(m_currentMutex);
        m_current.reset();
    }
    switch (job->outcome) {
    case Running::Outcome::Ok:
        if (!job->result.outputPath.isEmpty())
            Q_EMIT outputReady(job->result.outputPath);
        Q_EMIT finished(true, job->result.message);
        break;
    case Running::Outcome::Cancelled:
        Q_EMIT cancelled();
        Q_EMIT finished(false, tr("cancelled"));
        break;
    case Running::Outcome::Failed:
        Q_EMIT failed(job->error);
        Q_EMIT finished(false, job->error);
        break;
    }
    if (m_current)
        return; // a finished() handler started the next job already
    if (m_queue.empty()) {
        m_busy = false;
        Q_EMIT busyChanged(false);
    } else {
        startNext();
    }
}

} // namespace moeatlas::views
