#include "test_support.h"

#include <QCoreApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QProcessEnvironment>

#include <algorithm>
#include <csignal>
#include <memory>
#include <sys/resource.h>

namespace moeatlas::test {

QString pythonExecutable()
{
    return qEnvironmentVariable("MOEATLAS_PYTHON");
}

QString sourcePath(const QString& relative)
{
    return QDir(qEnvironmentVariable("MOEATLAS_SOURCE_DIR")).filePath(relative);
}

QString cliExecutable()
{
    return qEnvironmentVariable("MOEATLAS_CLI");
}

ProcessResult runProcess(const QString& program, const QStringList& args, int timeoutMs)
{
    QProcess proc;
    proc.start(program, args);
    ProcessResult result;
    if (!proc.waitForStarted(30000)) {
        result.stdErr = QStringLiteral("could not start ") + program;
        return result;
    }
    if (!proc.waitForFinished(timeoutMs)) {
        proc.kill();
        proc.waitForFinished();
        result.stdErr = QStringLiteral("timed out: ") + program;
        return result;
    }
    result.exitCode = proc.exitStatus() == QProcess::NormalExit ? proc.exitCode() : -1;
    result.stdOut = QString::fromUtf8(proc.readAllStandardOutput());
    result.stdErr = QString::fromUtf8(proc.readAllStandardError());
    return result;
}

ProcessResult runCli(const QStringList& args, int timeoutMs)
{
    const ProcessResult r = runProcess(cliExecutable(), args, timeoutMs);
    if (r.exitCode != 0)
        qWarning("moeatlas %s: exit %d\n%s", qPrintable(args.join(QLatin1Char(' '))), r.exitCode, qPrintable(r.stdErr));
    return r;
}

FaultResult runCliFaulty(
    const QStringList& args, int killAfterMs, qint64 fileSizeLimit, int timeoutMs, const std::function<bool()>& armed)
{
    FaultResult out;
    QProcess proc;
    if (fileSizeLimit > 0)
        proc.setChildProcessModifier([fileSizeLimit] {
            // Async-signal-safe calls only: this runs in the child between fork and exec.
            ::signal(SIGXFSZ, SIG_IGN); // ignored signals stay ignored across exec
            const rlimit limit { static_cast<rlim_t>(fileSizeLimit), static_cast<rlim_t>(fileSizeLimit) };
            ::setrlimit(RLIMIT_FSIZE, &limit);
        });
    proc.start(cliExecutable(), args);
    if (!proc.waitForStarted(30000)) {
        out.result.stdErr = QStringLiteral("could not start ") + cliExecutable();
        return out;
    }
    QElapsedTimer clock;
    clock.start();
    if (armed) {
        while (proc.state() != QProcess::NotRunning && !armed())
            proc.waitForFinished(1);
        if (proc.state() != QProcess::NotRunning)
            out.armedAtMs = clock.elapsed();
        // Without a kill: also time how long armed() stays true (a clean run measuring a write phase).
        if (killAfterMs < 0 && out.armedAtMs >= 0) {
            while (proc.state() != QProcess::NotRunning && armed())
                proc.waitForFinished(1);
            out.disarmedAtMs = clock.elapsed();
        }
    }
    const bool wait = killAfterMs >= 0 && (!armed || out.armedAtMs >= 0);
    if (wait && proc.state() != QProcess::NotRunning && !proc.waitForFinished(std::max(killAfterMs, 1))) {
        ::kill(static_cast<pid_t>(proc.processId()), SIGKILL);
        out.killed = true;
    }
    // waitForFinished returns false on a process that has already finished: ask the state first.
    if (proc.state() != QProcess::NotRunning && !proc.waitForFinished(timeoutMs)) {
        proc.kill();
        proc.waitForFinished();
        out.result.stdErr = QStringLiteral("timed out: moeatlas ") + args.join(QLatin1Char(' '));
        return out;
    }
    out.endedAtMs = clock.elapsed();
    out.result.exitCode = proc.exitStatus() == QProcess::NormalExit ? proc.exitCode() : -1;
    out.result.stdOut = QString::fromUtf8(proc.readAllStandardOutput());
    out.result.stdErr = QString::fromUtf8(proc.readAllStandardError());
    return out;
}

namespace {

// The suite's reference-Python process (tests/support/py_worker.py): started on the first
// runPython, it imports torch and transformers once and runs every script of the suite. A request
// that crashes or outlives its time-out ends the worker; the next request starts a fresh one.
class PythonWorker {
public:
    static PythonWorker& instance()
    {
        static PythonWorker worker;
        return worker;
    }

    ProcessResult run(const QString& script, const QStringList& args, int timeoutMs)
    {
        ProcessResult result;
        if (!ensureStarted(result.stdErr))
            return result;
        const QJsonObject request { { QStringLiteral("script"), script },
            { QStringLiteral("args"), QJsonArray::fromStringList(args) } };
        m_proc->write(QJsonDocument(request).toJson(QJsonDocument::Compact) + '\n');
        QElapsedTimer clock;
        clock.start();
        while (!m_proc->canReadLine()) {
            const qint64 left = timeoutMs - clock.elapsed();
            if (m_proc->state() != QProcess::Running || left <= 0) {
                result.stdErr = m_proc->state() != QProcess::Running
                    ? QStringLiteral("the reference python worker died running ") + script
                    : QStringLiteral("timed out: ") + script;
                stop();
                return result;
            }
            m_proc->waitForReadyRead(static_cast<int>(std::min<qint64>(left, 1000)));
        }
        const QByteArray line = m_proc->readLine();
        const QJsonObject reply = QJsonDocument::fromJson(line).object();
        if (reply.isEmpty()) {
            result.stdErr
                = QStringLiteral("unreadable reply from the reference python worker: ") + QString::fromUtf8(line);
            stop();
            return result;
        }
        result.exitCode = reply.value(QStringLiteral("exit")).toInt(-1);
        result.stdOut = reply.value(QStringLiteral("stdout")).toString();
        result.stdErr = reply.value(QStringLiteral("stderr")).toString();
        return result;
    }

    void stop()
    {
        if (!m_proc)
            return;
        m_proc->closeWriteChannel();
        if (!m_proc->waitForFinished(10000)) {
            m_proc->kill();
            m_proc->waitForFinished();
        }
        m_proc.reset();
    }

private:
    bool ensureStarted(QString& error)
    {
        if (m_proc && m_proc->state() == QProcess::Running)
            return true;
        m_proc = std::make_unique<QProcess>();
        // The worker's own stderr (native library messages) goes to the suite's log as it comes.
        m_proc->setProcessChannelMode(QProcess::ForwardedErrorChannel);
        m_proc->start(pythonExecutable(), { sourcePath(QStringLiteral("tests/support/py_worker.py")) });
        if (!m_proc->waitForStarted(30000)) {
            error = QStringLiteral("could not start the reference python worker: ") + pythonExecutable();
            m_proc.reset();
            return false;
        }
        if (!s_cleanupRegistered) {
            s_cleanupRegistered = true;
            qAddPostRoutine([] { instance().stop(); });
        }
        return true;
    }

    std::unique_ptr<QProcess> m_proc;
    static inline bool s_cleanupRegistered = false;
};

} // namespace

ProcessResult runPython(const QString& script, const QStringList& args, int timeoutMs)
{
    // MOEATLAS_PYTHON_WORKER=0: one python process per call, as from a shell (debugging a fixture).
    if (qEnvironmentVariable("MOEATLAS_PYTHON_WORKER") == QLatin1String("0"))
        return runProcess(pythonExecutable(), QStringList { sourcePath(script) } + args, timeoutMs);
    return PythonWorker::instance().run(sourcePath(script), args, timeoutMs);
}

} // namespace moeatlas::test
