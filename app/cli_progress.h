// Terminal progress bar for long CLI jobs: throttled redraws on stderr with rate and ETA, and
// a SIGINT/SIGTERM handler that turns Ctrl-C into a stop request the engine honours.
#pragma once

#include "util/progress.h"

#include <chrono>
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

// Installs SIGINT/SIGTERM handlers that request a stop on the returned token (the second
// Ctrl-C restores the default action, so a stuck job can still be killed).
StopToken& installStopHandler();

std::string formatDuration(double seconds);

} // namespace moeatlas::cli
