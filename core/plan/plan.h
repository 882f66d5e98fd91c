// Compression plans: which routed experts each MoE layer keeps, how that was derived (criterion,
// domains and weights, budget) and what it is predicted to save. Compiled from per-domain expert
// scores (PreMoE, arXiv 2505.17639: specialist, generalist, global ranking; "trivial union" baseline).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace moeatlas {

// Scores of one domain: values[i][e] for MoE layer layers[i] and expert e (higher = more useful).
struct ScoreTable {
    std::string criterion; // "peu", "frequency", "reap", ...
    std::string domain;
    std::vector<int> layers;
    int numExperts = 0;
    std::vector<std::vector<double>> values;
    double tokenCount = 0; // calibration tokens behind the scores; 0 = unknown
};

// The --scores file: {"criterion", "layers", "domains": {name: [[...]]}, "token_counts": {name: N}}.
// `source` names the file in errors. Throws InputError on a malformed or inconsistent document.
std::vector<ScoreTable> parseScores(const nlohmann::json& doc, const std::string& source);
// The --scores file at `path` read by parseScores; InputError also when it is unreadable or not JSON.
std::vector<ScoreTable> readScores(const std::string& path);

enum class BudgetScope { Uniform, Global };
enum class BudgetUnit { Experts, Fraction, Bytes, Params };

// Uniform: the same count in every MoE layer (Experts: per layer). Global: (layer, expert) pairs
// ranked together (Experts: in all layers), each layer keeping at least minPerLayer.
// Bytes/Params: the largest plan whose whole checkpoint fits the target.
struct Budget {
    BudgetScope scope = BudgetScope::Uniform;
    BudgetUnit unit = BudgetUnit::Experts;
    double amount = 0;
    int minPerLayer = 0; // raised to the router's top-k
};

// What keeping experts costs, from the checkpoint's Inventory (see costsFromCheckpoint in
// plan_costs.h): bytes and params outside the routed experts, and per MoE layer one expert's
// weights plus its router row.
struct PlanCosts {
    uint64_t fixedBytes = 0;
    int64_t fixedParams = 0;
    std::vector<uint64_t> expertBytes; // per MoE layer (same order as the score tables)
    std::vector<int64_t> expertParams;
    int64_t activeParamsBefore = 0; // per token, unpruned
    int64_t routerRowParams = 0; // one router row (hidden size), counted in active params
    // Per MoE layer: one intermediate unit of one routed expert (its gate row, up row and down
    // column); expertBytes = router row + intermediate x unitBytes. Empty = no dimension costs.
    std::vector<uint64_t> unitBytes;
    std::vector<int64_t> unitParams;
};

struct PlanContext {
    int topK = 1;
    int numGroups = 1; // group-limited routers (DeepSeek n_group); 1 = none
    PlanCosts costs;
    std::string modelType;
    std::string checkpoint;
    int numLayers = 0;
    int64_t intermediate = 0; // routed experts' intermediate size; 0 = unknown
};

// How a plan's intermediate units were chosen (dimension pruning, see plan/dim_plan.h).
struct DimPruning {
    std::string scope; // IntDim-E | IntDim-L | IntDim-G
    std::string criterion; // fisher_mask, fisher_weight, fisher_grad_abs, activation, magnitude
    std::string domain; // empty = pooled / generalist
    double sparsity = 0; // fraction of the kept experts' units dropped
    int64_t intermediate = 0; // original intermediate size I of the routed experts
};

struct Plan {
    std::string method; // specialist | generalist | union
    std::string criterion;
    std::map<std::string, double> domainWeights;
    Budget budget;
    std::string scoresSource;
    std::string checkpoint;
    // When the scores came from an atlas: its path and the SHA-256 of the config.json it was
    // captured from; export refuses a checkpoint whose config.json hashes differently.
    std::string atlas;
    std::string configSha256;
    std::string modelType;
    int numExperts = 0;
    int topK = 0;
    int numLayers = 0;
    std::vector<int> layers; // MoE layer indices
    std::vector<std::vector<int>> keep; // per MoE layer, sorted expert indices
    // Dimension pruning: per MoE layer i, per kept expert k (keep[i][k]), the sorted kept
    // intermediate unit ids (original numbering). Empty outer vector = no dimension pruning;
    // an empty inner list = a zero-width expert (the router still weighs it). Shared experts
    // and dense MLPs are never pruned.
    std::vector<std::vector<std::vector<int>>> units;
    DimPruning dims; // meaningful when units is not empty
    // Predicted whole-checkpoint sizes.
    uint64_t bytesBefore = 0, bytesAfter = 0;
    int64_t paramsBefore = 0, paramsAfter = 0;
    int64_t activeParamsBefore = 0, activeParamsAfter = 0;

    bool uniform() const; // the same number of experts in every MoE layer
    bool hasDims() const { return !units.empty(); }
    int keptIn(std::size_t i) const { return static_cast<int>(keep[i].size()); }
};

// Picks experts of one combined score table under a budget. Ties go to the lower layer, then
// the lower expert index, so a plan never depends on sort stability.
std::vector<std::vector<int>> selectExperts(const ScoreTable& scores, const Budget& budget, const PlanContext& ctx);

// Weighted mean of the domains' tables; empty weights = token counts (PreMoE's pooled generalist
// equals the token-weighted mean of per-domain means), or equal weights when counts are unknown.
ScoreTable combineScores(const std::vector<ScoreTable>& domains, std::map<std::string, double>& weights);

Plan compileSpecialist(
    const std::vector<ScoreTable>& domains, const std::string& domain, const Budget& budget, const PlanContext& ctx);
Plan compileGeneralist(const std::vector<ScoreTable>& domains, std::map<std::string, double> weights,
    const Budget& budget, const PlanContext& ctx);
// Default (token-weighted) generalist from a pooled table computed over all domains' tokens at
// once (the atlas's pooled row: sums over domains / counts over domains). Equals compileGeneralist
// with token weights for per-token means such as PEU, and is the exact pooled value for criteria
// whose denominators are not token counts (reap). Weights recorded = the domains' token counts.
Plan compilePooledGeneralist(
    const std::vector<ScoreTable>& domains, const ScoreTable& pooled, const Budget& budget, const PlanContext& ctx);
// Union of each domain's top-`perDomain` experts per layer (non-uniform in general).
Plan compileUnion(const std::vector<ScoreTable>& domains, int perDomain, const PlanContext& ctx);

// Predicted whole-checkpoint sizes of `plan` (bytes/params before and after, active params per
// token) from ctx.costs, including its dimension pruning; left at 0 without a cost model.
void fillPrediction(Plan& plan, const PlanContext& ctx);

nlohmann::json planToJson(const Plan& plan);
// Throws InputError naming `source` and the field on a malformed plan.
Plan planFromJson(const nlohmann::json& doc, const std::string& source);
Plan readPlan(const std::string& path);

} // namespace moeatlas
