// `moeatlas fisher` and the workbench's Compute Fisher job: Fisher importance of every routed-expert
// unit per domain (and pooled), its concentration, and the top-n unit ablation, stored in the atlas
// under /fisher. prepareFisher checks everything a user can get wrong before the long pass;
// runFisher does the work and writes the atlas only once every stage is done.
#pragma once

#include "fisher/fisher_ablation.h"
#include "fisher/fisher_store.h"
#include "runtime/fisher.h"
#include "workflows/atlas_model.h"
#include "workflows/job_stages.h"
#include "workflows/job_tokens.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

namespace moeatlas {

struct FisherRequest {
    std::filesystem::path atlas; // complete; results go into it
    std::filesystem::path checkpoint; // empty: the one the atlas was captured from
    JobTokens tokens; // what Fisher runs on (default: the atlas's calibration tokens)
    FisherOptions options;
    // Unit counts n of the "remove the top-n units" ablation (parseAblationCounts); nullopt: none.
    std::optional<std::vector<int64_t>> ablate = std::vector<int64_t> { 0, 10, 100, 1000 };
    // Where the ablation is measured; no domains: on the tokens Fisher ran on.
    CalibrationInput ablationTokens;
    uint64_t seed = 0; // random-n ablation units
};

// A request checked and loaded: the model, the tokens and the memory plan.
struct PreparedFisher {
    std::filesystem::path atlas;
    AtlasModel model;
    EvalTokens tokens;
    EvalTokens ablationTokens;
    FisherOptions options;
    FisherPlan plan;
    FisherRunInfo info;
    std::optional<FisherAblationOptions> ablation; // nullopt: no ablation
};

// Throws InputError (file, field, value) for an incomplete atlas, an unwritable atlas directory,
// another checkpoint's config, bad tokens, reserved domain names, no form chosen, ablation tokens
// without an ablation, or a memory plan over budget.
PreparedFisher prepareFisher(const FisherRequest& request);

struct FisherOutcome {
    FisherTables tables;
    std::optional<FisherAblation> ablation;
};

// Stage "fisher" (units: computeFisher's steps), then "ablation" (tokens x layers x variants), then
// /fisher replaced in the atlas. Cancelled propagates and leaves the atlas as it was.
FisherOutcome runFisher(const PreparedFisher& job, const JobStages& stages = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
