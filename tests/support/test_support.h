// Helpers shared by the test suites: locating the reference Python and running its scripts.
#pragma once

#include <QString>
#include <QStringList>

#include <functional>

namespace moeatlas::test {

// The project venv's python (MOEATLAS_PYTHON); empty when the variable is unset.
QString pythonExecutable();
// Absolute path of a file in the source tree (MOEATLAS_SOURCE_DIR).
QString sourcePath(const QString& relative);
// The moeatlas CLI (MOEATLAS_CLI).
QString cliExecutable();

struct ProcessResult {
    int exitCode = -1;
    QString stdOut;
    QString stdErr;
};

// Runs a program to completion (timeout in ms); crashes and time-outs give exitCode -1.
ProcessResult runProcess(const QString& program, const QStringList& args, int timeoutMs = 600000);
// Runs the moeatlas CLI (cliExecutable()); a non-zero exit is logged with its stderr (qWarning), so
// a failing QCOMPARE on the exit code shows why.
ProcessResult runCli(const QStringList& args, int timeoutMs = 600000);
// Runs the moeatlas CLI under faults (the writers' fault tests, tests/cli/tst_cli_faults.cpp):
// - killAfterMs >= 0: SIGKILL after that many ms if it is still running (killed says whether it was);
// - fileSizeLimit > 0: RLIMIT_FSIZE of the child (a full disk for its writes: write(2) fails with
//   EFBIG, SIGXFSZ ignored), set between fork and exec.
// - armed (optional): the kill delay counts from the moment armed() first returns true (polled every
//   millisecond, e.g. "the command's temporary output exists"), so kills can target its write phase.
struct FaultResult {
    bool killed = false;
    qint64 armedAtMs = -1; // since start; -1: never armed (or no `armed`)
    qint64 disarmedAtMs = -1; // killAfterMs < 0 only: when armed() turned false again (or the end)
    qint64 endedAtMs = -1; // since start
    ProcessResult result; // exitCode -1 when killed or crashed
};
FaultResult runCliFaulty(const QStringList& args, int killAfterMs, qint64 fileSizeLimit = 0, int timeoutMs = 600000,
    const std::function<bool()>& armed = {});

// Runs `python <script> args...` with the reference python; QFAILs (via the caller checking
// exitCode) print stderr. Script paths are relative to the source tree.
ProcessResult runPython(const QString& script, const QStringList& args, int timeoutMs = 600000);

} // namespace moeatlas::test
