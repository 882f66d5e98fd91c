// Terminal progress bar for long CLI jobs: throttled redraws on stderr with rate and ETA, and
// a SIGINT/SIGTERM handler that turns Ctrl-C into a stop request the engine honours.
#pragma once

#include "util/progress.h"
#include "workflows/job_stages.h"

#include <chrono>
#include <memory>
#include <string>

namespace moeatlas::cli {

class ProgressBar {
public:
    // `unit` names what Progress::done counts ("tok" for tokens x layers ...).
    ProgressBar(std::string label, std::string unit, double unitsPerItem = 1.0);
    // Draws at most every 100 ms (every 5 s, or MOEATLAS_PROGRESS_INTERVAL_MS, when stderr is not a
    // terminal); returns false when a
    // stop was requested through the signal handler.
    bool update(const Progress& p);
    void finish(const std::string& message);

private:
    std::string m_label;
    std::string m_unit;
    double m_unitsPerItem;
    bool m_tty;
    std::chrono::steady_clock::time_point m_start;
    std::chrono::steady_clock::time_point m_lastDraw;
};

// One progress bar per stage of a core job (workflows/job_stages.h): each stage's bar starts with the
// stage and finishes with its summary and the process's peak RSS so far.
class StagedProgressBars {
public:
    // Callbacks for the job; valid while this object lives.
    JobStages stages();
    // After Cancelled: "<stage> interrupted: <outcome>" under the running stage's bar.
    void interrupted(const std::string& outcome);

private:
    std::unique_ptr<ProgressBar> m_bar;
    std::string m_stage;
};

// Installs SIGINT/SIGTERM handlers that request a stop on the returned token (the second
// Ctrl-C restores the default action, so a stuck job can still be killed).
StopToken& installStopHandler();

std::string formatDuration(double seconds);

} // namespace moeatlas::cli
