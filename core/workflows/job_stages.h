// Progress of a job that runs in stages (Fisher: "fisher", then "ablation"): the client shows each
// stage its own way (the CLI one progress bar per stage, the workbench one job row with the stage's
// name in front).
#pragma once

#include "util/file_lock.h"
#include "util/progress.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace moeatlas {

struct JobStages {
    // A stage starts: its name and what its Progress::done counts; returns its progress callback
    // (empty: no progress shown). Unset: no progress at all.
    std::function<ProgressFn(const std::string& stage, const std::string& unit)> begin;
    // The stage finished; `summary` says what it did in one line.
    std::function<void(const std::string& stage, const std::string& summary)> end;

    ProgressFn beginStage(const std::string& stage, const std::string& unit) const
    {
        return begin ? begin(stage, unit) : ProgressFn {};
    }
    void endStage(const std::string& stage, const std::string& summary) const
    {
        if (end)
            end(stage, summary);
    }
};

// How a job waits for another update of its atlas (AtlasFile::openForUpdate): the first wait starts
// a stage "waiting" whose progress names the holder (pid, command, since when); the client's stop
// (Ctrl-C, Cancel) ends the wait with Cancelled.
inline LockWait lockWaitFor(const JobStages& stages, const StopToken* stop)
{
    auto stage = std::make_shared<std::optional<ProgressFn>>();
    return reportingLockWait(
        [stages, stage](const Progress& p) {
            if (!*stage)
                *stage = stages.beginStage("waiting", "s");
            return !**stage || (**stage)(p);
        },
        stop);
}

} // namespace moeatlas
