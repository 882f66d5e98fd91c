// The workbench's core jobs as JobRunner jobs: capture, score, eval, Fisher, prefetch and export. Each wraps
// the core call its CLI command makes (runtime/capture.h, metrics/scores.h, core/workflows,
// export/exporter.h), so both give the same files.
#pragma once

#include "jobs/job_runner.h"

#include "export/exporter.h"
#include "metrics/scores.h"
#include "plan/plan.h"
#include "runtime/capture.h"
#include "workflows/eval_workflow.h"
#include "workflows/export_workflow.h"
#include "workflows/fisher_workflow.h"
#include "workflows/prefetch_workflow.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas::views {

// `moeatlas capture`: outputPath = the atlas.
Job captureJob(CaptureParams params);

// `moeatlas score ATLAS`: outputPath = the atlas.
Job scoreJob(std::filesystem::path atlas, ScoreParams params = {}, ScoreRunOptions options = {});

// `moeatlas eval --atlas ATLAS ...` through the same core calls (workflows/eval_workflow.h): the
// full model, plan files or plan objects and sweeps on the request's tokens, the table stored under
// /evaluation/<label> (a failed or cancelled eval leaves the atlas as it was). outputPath = the atlas
// when the table was stored.
Job evalJob(EvalRequest request);

// `moeatlas fisher ATLAS ...` through the same core calls (workflows/fisher_workflow.h): everything
// checked before the pass, Fisher tables (and the ablation) written under /fisher at the end (a
// failed or cancelled run leaves the atlas as it was). outputPath = the atlas.
Job fisherJob(FisherRequest request);

// `moeatlas prefetch ATLAS ...` through the same core calls (workflows/prefetch_workflow.h): hit rates of
// every predictor the request names (all by default) stored as /prefetch_hit_rates at the end (a failed or
// cancelled run leaves the atlas as it was). outputPath = the atlas when the table was stored.
Job prefetchJob(PrefetchRequest request);

// `moeatlas export SOURCE --plan PLAN -o OUT --routing ROUTING`: options.progress is replaced by the
// runner's, options.routing by exportRouting(source, routing, options.atlasPath) (a RequestError
// "routing" when it is not a rule of the model; threshold rules calibrated on the atlas).
// outputPath = the exported directory.
Job exportJob(std::filesystem::path source, Plan plan, std::filesystem::path out, ExportOptions options,
    std::string routing = "model");

} // namespace moeatlas::views
