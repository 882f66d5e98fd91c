// `moeatlas eval` and the workbench's evaluation job: per-domain loss of the full model, of plans
// (files or objects) and of budget sweeps, applied as router masks; the table goes to a CSV and/or
// the atlas (/evaluation/<label>). prepareEval checks and compiles everything before the long pass.
#pragma once

#include "eval/eval.h"
#include "plan/plan.h"
#include "workflows/atlas_model.h"
#include "workflows/job_tokens.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

struct EvalRequest {
    std::filesystem::path atlas; // optional: its calibration tokens, its scores for sweeps, where the table goes
    std::filesystem::path checkpoint; // empty: the one the atlas was captured from
    JobTokens tokens; // default: the atlas's calibration tokens
    bool full = true; // evaluate the unpruned model
    std::vector<std::filesystem::path> planFiles; // moeatlas plan files, named after the file
    std::vector<std::pair<std::string, Plan>> plans; // plans held in memory, with their variant names
    SweepOptions sweep; // no sparsities: no sweep
    // Routing rules (RoutingRule text): every variant is also evaluated with each, plus the fixed
    // top-k ladder dynamic rules are compared with (withRoutingRules). Threshold rules are calibrated
    // on the atlas's recorded router logits.
    std::vector<std::string> routing;
    // Speculative execution, "<predictor>[:<lookahead>]" (parseSpeculative in eval/eval.h): every variant routed
    // by the model's own top-k is also evaluated with each, as "<variant>+spec:<predictor>[:<lookahead>]".
    // quasi-hidden, linear, mlp and frequency come from the atlas.
    std::vector<std::string> speculative;
    ExecutorOptions executor;
    std::filesystem::path csv; // empty: no CSV
    std::string label = "default"; // /evaluation/<label>
    bool save = true; // store the table in the atlas (when there is one)
};

struct PreparedEval {
    std::optional<std::filesystem::path> storeIn; // the atlas the table goes to
    std::filesystem::path csv;
    std::string label;
    AtlasModel model;
    EvalTokens tokens;
    std::vector<EvalVariant> variants;
    ExecutorOptions executor;
};

// Throws RequestError (field: tokens, checkpoint, sweep, sweep.randomPlans, csv, plans, routing, speculative) or the
// InputError of a file (atlas, checkpoint, plan, calibration) before any evaluation.
PreparedEval prepareEval(const EvalRequest& request);

// Evaluates every variant (progress: tokens x layers x variants), then writes the CSV (atomically)
// and stores the table in the atlas. Cancelled propagates with nothing written.
EvalTable runEval(const PreparedEval& job, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
