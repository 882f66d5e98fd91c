// Dimension pruning (Fisher-MoE, METHODS.md section 4): which intermediate units of each kept
// routed expert a plan keeps, compiled from per-unit scores at a unit sparsity in three scopes.
#pragma once

#include "plan/plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moeatlas {

enum class DimScope {
    Expert, // IntDim-E: every kept expert keeps its own best I - floor(s I) units (uniform width)
    Layer, // IntDim-L: per layer, the units of its kept experts ranked together
    Global, // IntDim-G: the units of all layers' kept experts ranked together
};
const char* dimScopeName(DimScope scope); // "IntDim-E", "IntDim-L", "IntDim-G"
// Throws InputError naming `source` on anything but the three names.
DimScope parseDimScope(const std::string& name, const std::string& source);

// Scores of every intermediate unit of every routed expert (higher = more important), e.g. one
// domain's row (or the pooled row) of the atlas's /fisher/<form>/units.
struct UnitScoreTable {
    std::string criterion; // fisher_mask, fisher_weight, fisher_grad_abs, activation, magnitude
    std::string domain; // empty = pooled
    std::vector<int> layers; // MoE decoder layers, ascending
    int numExperts = 0;
    int64_t intermediate = 0;
    // [layers.size(), numExperts, intermediate] row-major: unit j of expert e in layers[i] at (i E + e) I + j.
    std::vector<double> values;
};

struct DimBudget {
    DimScope scope = DimScope::Expert;
    double sparsity = 0; // fraction of the kept experts' units dropped, in [0, 1)
};

// Adds dimension pruning to an expert plan: the kept experts of `expertPlan` lose `sparsity` of
// their units (an expert plan with no layers = keep every expert of the score table's layers,
// with source fields from ctx). Dropped counts truncate like the paper's int(n r): IntDim-E
// drops floor(s I) units of every expert (so keeps at least 1); IntDim-L floor(s K_l I) of the
// K_l I units of layer l; IntDim-G floor(s sum_l K_l I) of all, so IntDim-L/G may leave an expert
// with width 0. Ties go to the lower layer, expert, unit.
// Predictions account for the widths (ctx.costs). Throws InputError on a sparsity outside
// [0, 1), a score table whose shape does not fit the plan or ctx, or non-finite scores.
Plan compileDimPlan(
    const Plan& expertPlan, const UnitScoreTable& scores, const DimBudget& budget, const PlanContext& ctx);

// Checks plan.units against plan.keep and plan.dims (one sorted, duplicate-free list in
// [0, dims.intermediate) per kept expert); throws InputError naming `source`.
void checkDims(const Plan& plan, const std::string& source);
// Kept width of every kept expert of MoE layer i (plan order); empty when the plan has no dims.
std::vector<int> dimWidths(const Plan& plan, std::size_t i);

// The plan file's "dims" object (docs/plans.md, "Dimension pruning") and its parser, which also
// checks it against the plan's layers and keep lists (errors name `source` and the field).
nlohmann::json dimsToJson(const Plan& plan);
void dimsFromJson(const nlohmann::json& dims, Plan& plan, const std::string& source);

} // namespace moeatlas
