#include "cli_progress.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sys/resource.h>
#include <unistd.h>

namespace moeatlas::cli {

namespace {

StopToken g_stop;

void onSignal(int sig)
{
    g_stop.requestStop();
    std::signal(sig, SIG_DFL); // a second signal ends the process the default way
}

} // namespace

StopToken& installStopHandler()
{
    std::signal(SIGINT, onSignal);
    std::signal(SIGTERM, onSignal);
    return g_stop;
}

std::string formatDuration(double seconds)
{
    if (seconds < 0 || seconds > 1e7)
        return "--:--";
    const long s = std::lround(seconds);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
    return buf;
}

ProgressBar::ProgressBar(std::string label, std::string unit, double unitsPerItem)
    : m_label(std::move(label))
    , m_unit(std::move(unit))
    , m_unitsPerItem(unitsPerItem)
    , m_tty(::isatty(STDERR_FILENO) != 0)
    , m_start(std::chrono::steady_clock::now())
    , m_lastDraw {}
{
}

bool ProgressBar::update(const Progress& p)
{
    const auto now = std::chrono::steady_clock::now();
    // Logs (not a terminal) get a line every 5 s unless MOEATLAS_PROGRESS_INTERVAL_MS says otherwise.
    static const long logInterval = [] {
        const char* v = std::getenv("MOEATLAS_PROGRESS_INTERVAL_MS");
        return v ? std::max(1L, std::strtol(v, nullptr, 10)) : 5000L;
    }();
    const auto interval = m_tty ? std::chrono::milliseconds(100) : std::chrono::milliseconds(logInterval);
    if (now - m_lastDraw >= interval || p.done == p.total) {
        m_lastDraw = now;
        const double elapsed = std::chrono::duration<double>(now - m_start).count();
        const double frac = p.total > 0 ? static_cast<double>(p.done) / static_cast<double>(p.total) : 0.0;
        const double rate = elapsed > 0 ? static_cast<double>(p.done) * m_unitsPerItem / elapsed : 0.0;
        const double eta = frac > 0 ? elapsed * (1.0 - frac) / frac : -1.0;
        constexpr int width = 30;
        std::string bar(static_cast<std::size_t>(frac * width), '#');
        bar.resize(width, '.');
        std::fprintf(stderr, "%s%s [%s] %5.1f%% %s  %.0f %s/s  elapsed %s  ETA %s%s", m_tty ? "\r\033[K" : "",
            m_label.c_str(), bar.c_str(), frac * 100.0, p.stage.c_str(), rate, m_unit.c_str(),
            formatDuration(elapsed).c_str(), formatDuration(eta).c_str(), m_tty ? "" : "\n");
        std::fflush(stderr);
    }
    return !g_stop.stopRequested();
}

void ProgressBar::finish(const std::string& message)
{
    std::fprintf(stderr, "%s%s\n", m_tty ? "\r\033[K" : "", message.c_str());
}

JobStages StagedProgressBars::stages()
{
    JobStages s;
    s.begin = [this](const std::string& stage, const std::string& unit) -> ProgressFn {
        m_stage = stage;
        m_bar = std::make_unique<ProgressBar>(stage, unit);
        return [bar = m_bar.get()](const Progress& p) { return bar->update(p); };
    };
    s.end = [this](const std::string& stage, const std::string& summary) {
        rusage usage {};
        ::getrusage(RUSAGE_SELF, &usage);
        if (m_bar)
            m_bar->finish(stage + ": " + summary + "; peak RSS " + std::to_string(usage.ru_maxrss >> 10) + " MiB");
        m_bar.reset();
    };
    return s;
}

void StagedProgressBars::interrupted(const std::string& outcome)
{
    if (m_bar)
        m_bar->finish(m_stage + " interrupted: " + outcome);
    m_bar.reset();
}

} // namespace moeatlas::cli
