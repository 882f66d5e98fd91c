// `moeatlas plan` and the workbench's budget panel: which experts a plan keeps (specialist,
// generalist or union under a budget) and, with a dimension budget, which units of each kept expert,
// with the provenance both record. compileExpertPlan is the one dispatch over the plan families;
// makePlan is the whole job from files (scores from an atlas or a scores JSON).
#pragma once

#include "plan/atlas_scores.h"
#include "plan/dim_plan.h"
#include "plan/plan.h"

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

// The experts a plan keeps: one of the plan families.
struct ExpertSelection {
    enum class Family { Specialist, Generalist, Union };
    Family family = Family::Specialist;
    std::string domain; // Specialist: the target domain
    // Generalist: domain weights; empty = token-weighted (the scores' pooled row when they have one).
    std::map<std::string, double> weights;
    int perDomain = 0; // Union: each domain's top-M experts per layer
    Budget budget; // Specialist and Generalist
};

// Compiles the expert part of a plan from per-domain scores and, when the source has one, the pooled
// row (PreMoE's token-weighted generalist, exact for every criterion). No provenance.
Plan compileExpertPlan(const std::vector<ScoreTable>& domains, const ScoreTable* pooled,
    const ExpertSelection& selection, const PlanContext& context);

// Records the atlas a plan's scores came from: `scoresSource` is the group read ("/scores/peu",
// "/fisher/mask/units"), `configSha256` the config.json the atlas was captured from.
void setAtlasProvenance(
    Plan& plan, const std::filesystem::path& atlas, const std::string& scoresSource, const std::string& configSha256);

struct PlanRequest {
    // Expert scores: an atlas and a criterion (peu, frequency, ..., fisher_mask ...), or a scores JSON.
    std::filesystem::path atlas;
    std::string criterion;
    std::filesystem::path scoresFile;
    std::filesystem::path checkpoint; // costs; empty: the one the atlas was captured from
    std::optional<ExpertSelection> experts; // nullopt: keep every expert (a dimension-only plan)
    // Dimension pruning of the kept experts by the atlas's /fisher unit scores (moeatlas fisher).
    std::optional<DimBudget> dims;
    std::string dimCriterion = "fisher_mask"; // fisher_mask | fisher_weight | fisher_grad_abs | activation | magnitude
    std::string unitDomain; // the domain whose unit scores rank the units (a specialist's); "" = pooled
};

// The /fisher form a dimension criterion reads; RequestError (field dimCriterion) for another name.
std::string dimCriterionForm(const std::string& criterion);

// Checks the request (RequestError fields: scores, criterion, checkpoint, experts, dims,
// dimCriterion), reads the scores, checks the checkpoint's config.json against the atlas and
// compiles the plan with its provenance and predicted sizes.
Plan makePlan(const PlanRequest& request);

} // namespace moeatlas
