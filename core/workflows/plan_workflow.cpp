#include "workflows/plan_workflow.h"

#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "fisher/fisher_store.h"
#include "plan/plan_costs.h"
#include "util/error.h"
#include "workflows/atlas_model.h"

#include <nlohmann/json.hpp>

namespace moeatlas {

namespace {

// Dimension criteria -> the /fisher/<form> they read (docs/plans.md, "Dimension pruning").
const std::pair<const char*, const char*> kDimCriteria[] = { { "fisher_mask", "mask" }, { "fisher_weight", "weight" },
    { "fisher_grad_abs", "grad_abs" }, { "activation", "activation" }, { "magnitude", "magnitude" } };

// The unit scores a dimension plan ranks: the specialist's domain row, the pooled row otherwise.
UnitScoreTable unitScoresOf(
    const AtlasFile& atlas, const std::string& form, const std::string& domain, const std::string& configSha256)
{
    UnitScoreTable s = readFisherUnitScores(atlas, form, domain);
    // moeatlas fisher refuses another checkpoint's config; this guards against a hand-edited atlas.
    const auto top = atlas.readResults("fisher");
    const nlohmann::json params = nlohmann::json::parse(top ? top->paramsJson : std::string(), nullptr, false);
    if (params.is_object() && params.contains("config_sha256") && params["config_sha256"].is_string()
        && params["config_sha256"].get<std::string>() != configSha256)
        throw InputError(atlas.path().string() + ": /fisher was computed on a checkpoint with another config.json "
            + "than the one the atlas was captured from (attribute params, config_sha256)");
    return s;
}

void checkRequest(const PlanRequest& r)
{
    if (r.dims) {
        (void)dimCriterionForm(r.dimCriterion); // refused here, not after reading
        if (r.atlas.empty() || !r.scoresFile.empty())
            throw RequestError("dims",
                "dimension pruning reads unit scores from the /fisher tables of an atlas "
                "(its Fisher importance); expert scores then come from the same atlas, not a "
                "scores file");
        if (r.experts && r.experts->family == ExpertSelection::Family::Generalist && !r.experts->weights.empty())
            throw RequestError("dims",
                "dimension pruning with custom domain weights: unit scores exist per domain "
                "and pooled only; choose a specialist or the (pooled) generalist");
    }
    if (!r.experts) {
        if (!r.dims)
            throw RequestError("experts", "a plan needs an expert selection, a dimension budget, or both");
        return;
    }
    if (r.scoresFile.empty() == r.atlas.empty())
        throw RequestError("scores", "give exactly one score source: an atlas with a criterion, or a scores file");
    if (!r.atlas.empty() && r.criterion.empty())
        throw RequestError("criterion",
            "no criterion to rank experts by (peu, frequency, reap, ...: from scoring; fisher_mask, "
            "fisher_weight, fisher_grad_abs: from the Fisher importance)");
    if (!r.scoresFile.empty() && !r.criterion.empty())
        throw RequestError("criterion", "a criterion selects scores inside an atlas; a scores file names its own");
}

} // namespace

Plan compileExpertPlan(const std::vector<ScoreTable>& domains, const ScoreTable* pooled,
    const ExpertSelection& selection, const PlanContext& context)
{
    switch (selection.family) {
    case ExpertSelection::Family::Specialist:
        return compileSpecialist(domains, selection.domain, selection.budget, context);
    case ExpertSelection::Family::Union:
        return compileUnion(domains, selection.perDomain, context);
    case ExpertSelection::Family::Generalist:
        break;
    }
    // Token-weighted default from an atlas: its pooled row is the exact pooled score (a token-weighted
    // mean of per-domain values only for criteria averaged per token).
    return pooled && selection.weights.empty()
        ? compilePooledGeneralist(domains, *pooled, selection.budget, context)
        : compileGeneralist(domains, selection.weights, selection.budget, context);
}

void setAtlasProvenance(
    Plan& plan, const std::filesystem::path& atlas, const std::string& scoresSource, const std::string& configSha256)
{
    plan.scoresSource = atlas.string() + ":" + scoresSource;
    plan.atlas = std::filesystem::absolute(atlas).string();
    plan.configSha256 = configSha256;
}

std::string dimCriterionForm(const std::string& criterion)
{
    for (const auto& [name, form] : kDimCriteria)
        if (criterion == name)
            return form;
    throw RequestError("dimCriterion",
        "unit criterion '" + criterion
            + "' (expected fisher_mask, fisher_weight, fisher_grad_abs, activation or "
              "magnitude)");
}

Plan makePlan(const PlanRequest& r)
{
    checkRequest(r);
    std::optional<AtlasFile> atlas;
    if (!r.atlas.empty())
        atlas = AtlasFile::openReadOnly(r.atlas);
    std::optional<AtlasScores> atlasScores;
    std::vector<ScoreTable> domains;
    if (r.experts) {
        if (atlas) {
            atlasScores = readAtlasScores(*atlas, r.criterion);
            domains = atlasScores->domains;
        } else {
            domains = readScores(r.scoresFile.string());
        }
    }
    if (!atlas && r.checkpoint.empty())
        throw RequestError("checkpoint", "no checkpoint to cost the plan with: give its directory");
    // Refused here as export would refuse it: scores of one model cannot plan another.
    const AtlasModel model = atlas ? openAtlasModel(*atlas, r.checkpoint) : openModel(r.checkpoint);
    const PlanContext context = planContextFor(model.checkpoint);
    // Read before compiling anything, so a missing /fisher is reported first.
    std::optional<UnitScoreTable> unitScores;
    if (r.dims)
        unitScores = unitScoresOf(*atlas, dimCriterionForm(r.dimCriterion), r.unitDomain, model.configSha256);

    // Without an expert selection compileDimPlan keeps every expert of every scored layer.
    Plan plan = r.experts
        ? compileExpertPlan(domains, atlasScores ? &atlasScores->pooled : nullptr, *r.experts, context)
        : Plan {};
    if (unitScores)
        plan = compileDimPlan(plan, *unitScores, *r.dims, context);
    if (atlas)
        setAtlasProvenance(plan, r.atlas,
            r.experts ? atlasScores->source : "/fisher/" + dimCriterionForm(r.dimCriterion) + "/units",
            model.configSha256);
    else
        plan.scoresSource = r.scoresFile.string();
    return plan;
}

} // namespace moeatlas
