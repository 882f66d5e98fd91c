// moeatlas plan: compiles a compression plan (experts kept per layer) from expert scores and a
// budget, with predicted savings from the checkpoint's inventory.
#include "commands.h"

#include "checkpoint/checkpoint.h"
#include "plan/atlas_scores.h"
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
};

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
    if (a.scores.empty() == a.atlas.empty())
        throw InputError("give exactly one score source: --atlas ATLAS --criterion NAME, or --scores FILE");
    if (!a.atlas.empty() && a.criterion.empty())
        throw InputError("--atlas needs --criterion (peu, frequency, reap, ...: see moeatlas score)");
    if (!a.scores.empty() && !a.criterion.empty())
        throw InputError("--criterion selects scores inside an --atlas; a --scores file names its own criterion");
    std::optional<AtlasScores> atlasScores;
    if (!a.atlas.empty())
        atlasScores = readAtlasScores(a.atlas, a.criterion);
    const std::vector<ScoreTable> domains = atlasScores ? atlasScores->domains : readScoresFile(a.scores);
    // With an atlas the checkpoint defaults to the one it was captured from.
    const std::string checkpoint = !a.checkpoint.empty() ? a.checkpoint
        : atlasScores                                    ? atlasScores->checkpointPath
                                                         : std::string();
    if (checkpoint.empty())
        throw InputError("give the checkpoint directory (needed for costs without --atlas)");
    const Checkpoint ckpt(checkpoint);
    if (atlasScores) {
        // Refused here as export would refuse it: scores of one model cannot plan another.
        const std::string sha = sha256File(ckpt.dir() / "config.json");
        if (sha != atlasScores->configSha256)
            throw InputError(checkpoint + ": config.json differs from the one " + a.atlas
                + " was captured from (sha256 " + sha.substr(0, 12) + "... vs "
                + atlasScores->configSha256.substr(0, 12) + "...)");
    }
    const PlanContext ctx = planContextFor(ckpt);

    const int modes
        = (a.domain.empty() ? 0 : 1) + (a.generalist || !a.weights.empty() ? 1 : 0) + (a.unionPerDomain > 0 ? 1 : 0);
    if (modes != 1)
        throw InputError("choose one of --domain NAME (specialist), --generalist [--weight NAME=W ...] or --union M");
    Plan plan;
    if (a.unionPerDomain > 0) {
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
    if (atlasScores) {
        plan.scoresSource = a.atlas + ":/scores/" + a.criterion;
        plan.atlas = std::filesystem::absolute(a.atlas).string();
        plan.configSha256 = atlasScores->configSha256;
    } else {
        plan.scoresSource = a.scores;
    }
    writeFileAtomically(a.output, planToJson(plan).dump(2) + "\n");

    std::string counts;
    for (std::size_t i = 0; i < plan.keep.size(); ++i)
        counts += (i ? " " : "") + std::to_string(plan.keep[i].size());
    std::printf("%s plan (%s, %s): experts kept per MoE layer: %s of %d\n", plan.uniform() ? "uniform" : "non-uniform",
        plan.method.c_str(), plan.criterion.c_str(), counts.c_str(), plan.numExperts);
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
    CLI::App* sub = app.add_subcommand("plan", "Compile an expert-pruning plan from expert scores and a budget");
    sub->add_option("checkpoint", a->checkpoint,
        "Hugging Face checkpoint directory (default with --atlas: the one it was captured from)");
    sub->add_option("--atlas", a->atlas, "Scored atlas: read /scores/<criterion> (moeatlas score)");
    sub->add_option("--criterion", a->criterion, "Criterion to plan by with --atlas (peu, frequency, reap, ...)");
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
    return [a] { return runPlan(*a); };
}

} // namespace moeatlas::cli
