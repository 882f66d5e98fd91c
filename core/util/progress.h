// Progress reporting and cancellation for long engine work: plain callbacks, no signals.
// A job calls report() at convenient points; returning false from the callback asks it to stop.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace moeatlas {

struct Progress {
    std::string stage; // e.g. "layer 3/24"
    int64_t done = 0; // units of work finished (tokens x layers for capture)
    int64_t total = 0; // units of work in all, 0 when unknown
};

// Returns false to ask the job to stop at its next safe point.
using ProgressFn = std::function<bool(const Progress&)>;

// A flag shared between the thread that asks for a stop (signal handler, GUI) and the job.
class StopToken {
public:
    void requestStop() noexcept { m_stop.store(true, std::memory_order_relaxed); }
    bool stopRequested() const noexcept { return m_stop.load(std::memory_order_relaxed); }

private:
    std::atomic<bool> m_stop { false };
};

} // namespace moeatlas
