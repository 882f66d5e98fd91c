#include "test_support.h"

#include <QDir>
#include <QProcess>
#include <QProcessEnvironment>

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

ProcessResult runPython(const QString& script, const QStringList& args, int timeoutMs)
{
    return runProcess(pythonExecutable(), QStringList { sourcePath(script) } + args, timeoutMs);
}

} // namespace moeatlas::test
