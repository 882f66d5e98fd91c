// moeatlas plan: compiles a compression plan (experts kept per layer, and with --dims the
// intermediate units each kept expert keeps) from expert scores, the atlas's Fisher unit scores and
// budgets, with predicted savings from the checkpoint's inventory.
#include "commands.h"

#include "request_flags.h"

#include "plan/dim_plan.h"
#include "plan/plan.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "workflows/plan_workflow.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>
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
    // Flag combinations, with the flags to use instead (makePlan refuses the same requests generically).
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

// The plan family and its budget, from --domain / --generalist [--weight ...] / --union.
ExpertSelection expertSelection(const PlanArgs& a)
{
    ExpertSelection s;
    if (a.unionPerDomain > 0) {
        s.family = ExpertSelection::Family::Union;
        s.perDomain = a.unionPerDomain;
        return s;
    }
    s.budget = budgetOf(a);
    if (!a.domain.empty()) {
        s.family = ExpertSelection::Family::Specialist;
        s.domain = a.domain;
        return s;
    }
    s.family = ExpertSelection::Family::Generalist;
    for (const std::string& w : a.weights) {
        const auto eq = w.find('=');
        if (eq == std::string::npos)
            throw InputError("--weight '" + w + "' (expected NAME=WEIGHT)");
        try {
            s.weights[w.substr(0, eq)] = std::stod(w.substr(eq + 1));
        } catch (const std::exception&) {
            throw InputError("--weight '" + w + "': weight is not a number");
        }
    }
    return s;
}

// The request field -> flag of the errors makePlan reports.
const FieldFlags kPlanFlags { { "scores", "--atlas/--scores" }, { "criterion", "--criterion" },
    { "checkpoint", "checkpoint" }, { "dims", "--dims" }, { "dimCriterion", "--dim-criterion" } };

int runPlan(const PlanArgs& a)
{
    PlanRequest request;
    request.dims = dimBudgetOf(a);
    // Expert selection needs expert scores; a --dims plan without them keeps every expert.
    const bool experts = !request.dims || !a.criterion.empty();
    const int modes
        = (a.domain.empty() ? 0 : 1) + (a.generalist || !a.weights.empty() ? 1 : 0) + (a.unionPerDomain > 0 ? 1 : 0);
    if (experts ? modes != 1 : modes > 1)
        throw InputError("choose one of --domain NAME (specialist), --generalist [--weight NAME=W ...] or --union M");
    if (experts)
        request.experts = expertSelection(a);
    request.atlas = a.atlas;
    request.criterion = a.criterion;
    request.scoresFile = a.scores;
    request.checkpoint = a.checkpoint;
    if (!a.dimCriterion.empty())
        request.dimCriterion = a.dimCriterion;
    request.unitDomain = a.domain;
    const Plan plan = namingFlags(kPlanFlags, [&] { return makePlan(request); });
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
