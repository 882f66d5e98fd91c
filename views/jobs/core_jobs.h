// The workbench's core jobs as JobRunner jobs: capture, score, eval (stored into the atlas as
// `moeatlas eval --atlas` does), Fisher and export. Each does exactly what its CLI command does.
#pragma once

#include "jobs/job_runner.h"

#include "eval/eval.h"
#include "export/exporter.h"
#include "fisher/fisher_ablation.h"
#include "metrics/scores.h"
#include "plan/plan.h"
#include "runtime/capture.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas::views {

// `moeatlas capture`: outputPath = the atlas.
Job captureJob(CaptureParams params);

// `moeatlas score ATLAS`: outputPath = the atlas.
Job scoreJob(std::filesystem::path atlas, ScoreParams params = {}, ScoreRunOptions options = {});

// `moeatlas eval --atlas ATLAS [CKPT] --sparsity ... --label LABEL`: evaluates the full model, the
// plan files and the sweep on the atlas's calibration tokens, then stores the table under
// /evaluation/<label> (copy-and-rename update; a failed or cancelled eval leaves the atlas as it was).
struct EvalJobParams {
    std::filesystem::path atlas;
    std::filesystem::path checkpoint; // empty: the one the atlas was captured from
    bool full = true; // evaluate the unpruned model
    std::vector<std::string> planFiles;
    SweepOptions sweep; // no sparsities: no sweep
    ExecutorOptions executor;
    std::string label = "default";
    bool save = true;
};
Job evalJob(EvalJobParams params);

// `moeatlas fisher ATLAS [--forms ...] [--no-baselines] [--ablate N,...]` on the atlas's own
// calibration tokens: Fisher tables (and the top-n unit ablation, ranked by the mask form when
// computed, else the first gradient form, with seed `seed`) written under /fisher at the end
// (copy-and-rename update: a failed or cancelled run leaves the atlas as it was).
// outputPath = the atlas.
struct FisherJobParams {
    std::filesystem::path atlas;
    std::filesystem::path checkpoint; // empty: the one the atlas was captured from
    FisherOptions options; // forms, baselines, threads, resident/streaming
    std::optional<std::vector<int64_t>> ablate = std::vector<int64_t> { 0, 10, 100, 1000 }; // nullopt: none
    uint64_t seed = 0;
};
Job fisherJob(FisherJobParams params);

// `moeatlas export SOURCE --plan PLAN -o OUT`: options.progress is replaced by the runner's.
// outputPath = the exported directory.
Job exportJob(std::filesystem::path source, Plan plan, std::filesystem::path out, ExportOptions options);

} // namespace moeatlas::views
