// moeatlas plan: compiles a compression plan (experts kept per layer, and with --dims the
// intermediate units each kept expert keeps) from expert scores, the atlas's Fisher unit scores and
// budgets, with predicted savings from the checkpoint's inventory.
#include "commands.h"

#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "fisher/fisher_store.h"
#include "plan/atlas_scores.h"
#include "plan/dim_plan.h"
#include "plan/plan.h"
#include "plan/plan_costs.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/sha256.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

namespace moeatlas::cli {

namespace {

struct PlanArgs {
    std::string checkpoint;
    std::string scores;
    std::string atlas;
    std::string criterion;
    std::string output = "plan.json";
    std::string domain;
    std::vector<std::string> weights; // name=weight
    bool generalist = false;
    int unionPerDomain = 0;
    int keep = 0;
    double keepFraction = 0;
    int64_t globalKeep = 0;
    double targetBytes = 0;
    double targetParams = 0;
    std::string scope = "uniform";
    int minPerLayer = 0;
    // Dimension pruning (Fisher-MoE): scope, unit sparsity and the unit-score criterion.
    std::string dims;
    double dimSparsity = 0;
    const CLI::Option* dimSparsityOption = nullptr; // whether --dim-sparsity was given
    std::string dimCriterion;
};

// --dim-criterion names -> the /fisher/<form> they read (docs/plans.md, "Dimension pruning").
const std::pair<const char*, const char*> kDimCriteria[] = { { "fisher_mask", "mask" }, { "fisher_weight", "weight" },
    { "fisher_grad_abs", "grad_abs" }, { "activation", "activation" }, { "magnitude", "magnitude" } };

std::string dimForm(const std::string& criterion)
{
    for (const auto& [name, form] : kDimCriteria)
        if (criterion == name)
            return form;
    throw InputError("--dim-criterion '" + criterion
        + "' (expected fisher_mask, fisher_weight, fisher_grad_abs, activation or magnitude)");
}

bool anyBudget(const PlanArgs& a)
{
    return a.keep > 0 || a.globalKeep > 0 || a.keepFraction > 0 || a.targetBytes > 0 || a.targetParams > 0;
}

// The dimension options, checked before any file is read.
std::optional<DimBudget> dimBudgetOf(const PlanArgs& a)
{
    if (a.dims.empty()) {
        if (a.dimSparsityOption->count() > 0 || !a.dimCriterion.empty())
            throw InputError("--dim-sparsity and --dim-criterion need --dims IntDim-E|IntDim-L|IntDim-G");
        return std::nullopt;
    }
    DimBudget b;
    b.scope = parseDimScope(a.dims, "--dims");
    if (a.dimSparsityOption->count() == 0)
        throw InputError("--dims needs --dim-sparsity S (the fraction of the kept experts' units dropped, in [0, 1))");
    if (!(a.dimSparsity >= 0.0 && a.dimSparsity < 1.0))
        throw InputError("--dim-sparsity " + nlohmann::json(a.dimSparsity).dump()
            + ": expected the fraction of the kept experts' units dropped, in [0, 1)");
    b.sparsity = a.dimSparsity;
    (void)dimForm(
        a.dimCriterion.empty() ? std::string("fisher_mask") : a.dimCriterion); // refused here, not after reading
    if (a.atlas.empty() || !a.scores.empty())
        throw InputError("--dims reads unit scores from the /fisher tables of --atlas (moeatlas fisher); expert "
                         "scores then come from the same atlas (--criterion), not --scores");
    if (!a.weights.empty())
        throw InputError("--dims with --weight: unit scores exist per domain and pooled only; use --domain NAME "
                         "or --generalist (the pooled row)");
    if (a.unionPerDomain > 0 && a.criterion.empty())
        throw InputError("--union selects experts: give --criterion too");
    if (anyBudget(a) && a.criterion.empty())
        throw InputError("an expert budget (--keep, --global-keep, --keep-fraction, --target-bytes, --target-params) "
                         "needs --criterion; without one the plan keeps every expert and prunes dimensions only");
    return b;
}

// The unit scores a --dims plan ranks: the specialist's domain row of /fisher/<form>/units, the
// pooled row otherwise.
UnitScoreTable unitScoresOf(
    const AtlasFile& atlas, const std::string& criterion, const std::string& domain, const std::string& configSha256)
{
    UnitScoreTable s = readFisherUnitScores(atlas, dimForm(criterion), domain);
    // moeatlas fisher refuses another checkpoint's config; this guards against a hand-edited atlas.
    const auto top = atlas.readResults("fisher");
    const nlohmann::json params = nlohmann::json::parse(top ? top->paramsJson : std::string(), nullptr, false);
    if (params.is_object() && params.contains("config_sha256") && params["config_sha256"].is_string()
        && params["config_sha256"].get<std::string>() != configSha256)
        throw InputError(atlas.path().string() + ": /fisher was computed on a checkpoint with another config.json "
            + "than the one the atlas was captured from (attribute params, config_sha256)");
    return s;
}

Budget budgetOf(const PlanArgs& a)
{
    Budget b;
    if (a.scope != "uniform" && a.scope != "global")
        throw InputError("--scope '" + a.scope + "' (expected uniform or global)");
    b.scope = a.scope == "global" ? BudgetScope::Global : BudgetScope::Uniform;
    b.minPerLayer = a.minPerLayer;
    int given = 0;
    if (a.keep > 0) {
        b.unit = BudgetUnit::Experts;
        b.amount = a.keep;
        b.scope = BudgetScope::Uniform;
        ++given;
    }
    if (a.globalKeep > 0) {
        b.unit = BudgetUnit::Experts;
        b.amount = static_cast<double>(a.globalKeep);
        b.scope = BudgetScope::Global;
        ++given;
    }
    if (a.keepFraction > 0) {
        b.unit = BudgetUnit::Fraction;
        b.amount = a.keepFraction;
        ++given;
    }
    if (a.targetBytes > 0) {
        b.unit = BudgetUnit::Bytes;
        b.amount = a.targetBytes;
        ++given;
    }
    if (a.targetParams > 0) {
        b.unit = BudgetUnit::Params;
        b.amount = a.targetParams;
        ++given;
    }
    if (given != 1)
        throw InputError(
            "give exactly one budget: --keep, --global-keep, --keep-fraction, --target-bytes or --target-params");
    return b;
}

std::vector<ScoreTable> readScoresFile(const std::string& path)
{
    std::ifstream in(path);
    if (!in)
        throw InputError(path + ": cannot open scores file");
    const nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded())
        throw InputError(path + ": not valid JSON");
    return parseScores(doc, path);
}

int runPlan(const PlanArgs& a)
{
    const std::optional<DimBudget> dimBudget = dimBudgetOf(a);
    // Expert selection needs expert scores; a --dims plan without them keeps every expert.
    const bool experts = !dimBudget || !a.criterion.empty();
    if (experts) {
        if (a.scores.empty() == a.atlas.empty())
            throw InputError("give exactly one score source: --atlas ATLAS --criterion NAME, or --scores FILE");
        if (!a.atlas.empty() && a.criterion.empty())
            throw InputError("--atlas needs --criterion (peu, frequency, reap, ...: see moeatlas score; fisher_mask, "
                             "fisher_weight, fisher_grad_abs: see moeatlas fisher), or --dims for a plan that prunes "
                             "dimensions only");
        if (!a.scores.empty() && !a.criterion.empty())
            throw InputError("--criterion selects scores inside an --atlas; a --scores file names its own criterion");
    }
    const int modes
        = (a.domain.empty() ? 0 : 1) + (a.generalist || !a.weights.empty() ? 1 : 0) + (a.unionPerDomain > 0 ? 1 : 0);
    if (experts ? modes != 1 : modes > 1)
        throw InputError("choose one of --domain NAME (specialist), --generalist [--weight NAME=W ...] or --union M");
    std::optional<AtlasFile> atlas;
    if (!a.atlas.empty())
        atlas = AtlasFile::openReadOnly(a.atlas);
    std::optional<AtlasScores> atlasScores;
    if (atlas && experts)
        atlasScores = readAtlasScores(*atlas, a.criterion);
    std::vector<ScoreTable> domains;
    if (atlasScores)
        domains = atlasScores->domains;
    else if (experts)
        domains = readScoresFile(a.scores);
    // With an atlas the checkpoint defaults to the one it was captured from.
    const std::string checkpoint = !a.checkpoint.empty() ? a.checkpoint
        : atlas                                          ? atlas->model().checkpointPath
                                                         : std::string();
    if (checkpoint.empty())
        throw InputError("give the checkpoint directory (needed for costs without --atlas)");
    const Checkpoint ckpt(checkpoint);
    if (atlas) {
        // Refused here as export would refuse it: scores of one model cannot plan another.
        const std::string sha = sha256File(ckpt.dir() / "config.json");
        if (sha != atlas->model().configSha256)
            throw InputError(checkpoint + ": config.json differs from the one " + a.atlas
                + " was captured from (sha256 " + sha.substr(0, 12) + "... vs "
                + atlas->model().configSha256.substr(0, 12) + "...)");
    }
    const PlanContext ctx = planContextFor(ckpt);
    // Read before compiling anything, so a missing /fisher is reported first.
    std::optional<UnitScoreTable> unitScores;
    const std::string dimCriterion = a.dimCriterion.empty() ? std::string("fisher_mask") : a.dimCriterion;
    if (dimBudget)
        unitScores = unitScoresOf(*atlas, dimCriterion, a.domain, atlas->model().configSha256);

    Plan plan;
    if (!experts) {
        // Dimensions only: compileDimPlan keeps every expert of every scored layer.
    } else if (a.unionPerDomain > 0) {
        plan = compileUnion(domains, a.unionPerDomain, ctx);
    } else if (!a.domain.empty()) {
        plan = compileSpecialist(domains, a.domain, budgetOf(a), ctx);
    } else {
        std::map<std::string, double> weights;
        for (const std::string& w : a.weights) {
            const auto eq = w.find('=');
            if (eq == std::string::npos)
                throw InputError("--weight '" + w + "' (expected NAME=WEIGHT)");
            try {
                weights[w.substr(0, eq)] = std::stod(w.substr(eq + 1));
            } catch (const std::exception&) {
                throw InputError("--weight '" + w + "': weight is not a number");
            }
        }
        // Token-weighted default from an atlas: its pooled row is the exact pooled score (a
        // token-weighted mean of per-domain values only for criteria averaged per token).
        plan = atlasScores && weights.empty() ? compilePooledGeneralist(domains, atlasScores->pooled, budgetOf(a), ctx)
                                              : compileGeneralist(domains, weights, budgetOf(a), ctx);
    }
    if (unitScores)
        plan = compileDimPlan(plan, *unitScores, *dimBudget, ctx);
    if (atlas) {
        plan.scoresSource
            = experts ? a.atlas + ":" + atlasScores->source : a.atlas + ":/fisher/" + dimForm(dimCriterion) + "/units";
        plan.atlas = std::filesystem::absolute(a.atlas).string();
        plan.configSha256 = atlas->model().configSha256;
    } else {
        plan.scoresSource = a.scores;
    }
    writeFileAtomically(a.output, planToJson(plan).dump(2) + "\n");

    std::string counts;
    for (std::size_t i = 0; i < plan.keep.size(); ++i)
        counts += (i ? " " : "") + std::to_string(plan.keep[i].size());
    std::printf("%s plan (%s, %s): experts kept per MoE layer: %s of %d\n", plan.uniform() ? "uniform" : "non-uniform",
        plan.method.c_str(), plan.criterion.c_str(), counts.c_str(), plan.numExperts);
    if (plan.hasDims()) {
        std::string widths;
        int zero = 0;
        for (std::size_t i = 0; i < plan.keep.size(); ++i) {
            int64_t sum = 0;
            for (const int w : dimWidths(plan, i)) {
                sum += w;
                zero += w == 0;
            }
            widths += (i ? " " : "") + std::to_string(sum) + "/"
                + std::to_string(plan.keptIn(i) * static_cast<int64_t>(plan.dims.intermediate));
        }
        std::printf("%s at dimension sparsity %g (%s, %s): units kept per MoE layer: %s (experts of %lld units); "
                    "zero-width experts: %d\n",
            plan.dims.scope.c_str(), plan.dims.sparsity, plan.dims.criterion.c_str(),
            plan.dims.domain.empty() ? "pooled" : plan.dims.domain.c_str(), widths.c_str(),
            static_cast<long long>(plan.dims.intermediate), zero);
    }
    std::printf("predicted: %.3f -> %.3f GB, %lld -> %lld params, %lld -> %lld active params/token\n",
        static_cast<double>(plan.bytesBefore) / 1e9, static_cast<double>(plan.bytesAfter) / 1e9,
        static_cast<long long>(plan.paramsBefore), static_cast<long long>(plan.paramsAfter),
        static_cast<long long>(plan.activeParamsBefore), static_cast<long long>(plan.activeParamsAfter));
    std::printf("%s\n", a.output.c_str());
    return 0;
}

} // namespace

Command addPlanCommand(CLI::App& app)
{
    auto a = std::make_shared<PlanArgs>();
    CLI::App* sub = app.add_subcommand(
        "plan", "Compile a pruning plan (experts, and with --dims expert widths) from scores and a budget");
    sub->add_option("checkpoint", a->checkpoint,
        "Hugging Face checkpoint directory (default with --atlas: the one it was captured from)");
    sub->add_option("--atlas", a->atlas,
        "Scored atlas: read /scores/<criterion> (moeatlas score) or /fisher/<form>/experts (moeatlas fisher)");
    sub->add_option("--criterion", a->criterion,
        "Criterion to plan by with --atlas (peu, frequency, reap, ..., fisher_mask, fisher_weight, fisher_grad_abs)");
    sub->add_option("--scores", a->scores, "Scores JSON instead of an atlas (see docs/plans.md)");
    sub->add_option("--output,-o", a->output, "Plan file to write")->capture_default_str();
    sub->add_option("--domain", a->domain, "Specialist plan for this domain");
    sub->add_flag("--generalist", a->generalist, "Generalist plan (token-weighted unless --weight is given)");
    sub->add_option("--weight", a->weights, "Generalist domain weight NAME=W (repeatable)");
    sub->add_option("--union", a->unionPerDomain, "Trivial-union baseline: union of each domain's top-M per layer");
    sub->add_option("--keep", a->keep, "Budget: experts kept in every MoE layer");
    sub->add_option("--global-keep", a->globalKeep, "Budget: experts kept in all MoE layers together (global ranking)");
    sub->add_option("--keep-fraction", a->keepFraction, "Budget: fraction of routed experts kept");
    sub->add_option("--target-bytes", a->targetBytes, "Budget: whole checkpoint size in bytes");
    sub->add_option("--target-params", a->targetParams, "Budget: whole checkpoint parameter count");
    sub->add_option("--scope", a->scope, "uniform (same count per layer) or global (ranked across layers)")
        ->capture_default_str();
    sub->add_option("--min-per-layer", a->minPerLayer, "Global scope: minimum kept per layer (at least top-k)");
    sub->add_option("--dims", a->dims,
        "Dimension pruning of the kept experts: IntDim-E (uniform width), IntDim-L (per layer), IntDim-G (global)");
    a->dimSparsityOption
        = sub->add_option("--dim-sparsity", a->dimSparsity, "With --dims: fraction of the kept units dropped, [0, 1)");
    sub->add_option("--dim-criterion", a->dimCriterion,
        "With --dims: unit scores from the atlas's /fisher (fisher_mask (default), fisher_weight, fisher_grad_abs, "
        "activation, magnitude)");
    return [a] { return runPlan(*a); };
}

} // namespace moeatlas::cli
