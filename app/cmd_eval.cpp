// moeatlas eval: per-domain loss and perplexity of the full model and of pruning plans applied as
// router masks (no export), with budget sweeps -> trade-off table (CSV and the atlas).
#include "calibration_args.h"
#include "cli_progress.h"
#include "commands.h"
#include "executor_args.h"

#include "request_flags.h"

#include "util/error.h"
#include "util/format.h"
#include "workflows/eval_workflow.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

namespace moeatlas::cli {

namespace {

struct EvalArgs {
    std::string checkpoint;
    std::string atlas;
    CalibrationArgs calibration; // held-out domains
    ExecutorArgs executor;
    std::vector<std::string> plans;
    std::vector<double> sparsities;
    std::vector<std::string> criteria { "peu" };
    std::vector<std::string> routing;
    std::vector<std::string> speculative;
    bool noSpecialists = false;
    bool noGeneralist = false;
    bool noFull = false;
    int randomPlans = 0;
    std::string scope = "uniform";
    std::string csv;
    std::string label = "default";
    bool noSave = false;
};

// Token-weighted mean over the domains of one row of a [variant][domain] table.
double overDomains(const EvalTable& t, const std::vector<std::vector<double>>& a, std::size_t v)
{
    double sum = 0, weight = 0;
    for (std::size_t d = 0; d < t.domains.size(); ++d) {
        sum += a[v][d] * static_cast<double>(t.predictedTokens[d]);
        weight += static_cast<double>(t.predictedTokens[d]);
    }
    return weight > 0 ? sum / weight : std::nan("");
}

void printTable(const EvalTable& t)
{
    std::size_t width = 8;
    for (const EvalVariant& v : t.variants)
        width = std::max(width, v.name.size());
    std::printf("%-*s %8s %6s %9s", static_cast<int>(width), "variant", "kept", "k/tok", "active");
    for (const std::string& d : t.domains)
        std::printf("  %22s", (d + " nll (ppl)").c_str());
    std::printf("\n");
    const int full = t.fullIndex();
    for (std::size_t v = 0; v < t.variants.size(); ++v) {
        std::printf("%-*s %8lld %6.2f %9s", static_cast<int>(width), t.variants[v].name.c_str(),
            static_cast<long long>(t.variants[v].keptExperts), overDomains(t, t.meanExperts, v),
            formatCount(static_cast<int64_t>(std::llround(overDomains(t, t.activeParams, v)))).c_str());
        for (std::size_t d = 0; d < t.domains.size(); ++d) {
            const double nll = t.nll[v][d];
            char cell[64];
            if (full >= 0 && static_cast<int>(v) != full)
                std::snprintf(cell, sizeof cell, "%.4f (%.2f) %+.3f", nll, std::exp(nll),
                    nll - t.nll[static_cast<std::size_t>(full)][d]);
            else
                std::snprintf(cell, sizeof cell, "%.4f (%.2f)", nll, std::exp(nll));
            std::printf("  %22s", cell);
        }
        std::printf("\n");
    }
    // Each dynamic rule against its base's fixed top-k at the same mean experts per token.
    bool header = false;
    for (std::size_t v = 0; v < t.variants.size(); ++v)
        for (std::size_t d = 0; d < t.domains.size(); ++d) {
            const double equal = t.equalCostNll[v][d];
            if (std::isnan(equal))
                continue;
            if (!header)
                std::printf(
                    "\ndynamic k vs fixed top-k at the same mean experts per token (nll, negative = better):\n");
            header = true;
            std::printf("  %-*s %-12s k/tok %.3f  nll %.4f  top-k at equal cost %.4f  %+.4f\n", static_cast<int>(width),
                t.variants[v].name.c_str(), t.domains[d].c_str(), t.meanExperts[v][d], t.nll[v][d], equal,
                t.nll[v][d] - equal);
        }
    // Speculative execution: the loss change against the variant it speculates on.
    header = false;
    for (std::size_t v = 0; v < t.variants.size(); ++v) {
        const int base = t.baseIndex(v);
        if (t.variants[v].speculative.empty() || base < 0)
            continue;
        if (!header) {
            std::printf("\nspeculative execution: loss change vs the base (nll, nats per token):\n  %-*s",
                static_cast<int>(width), "variant");
            for (const std::string& d : t.domains)
                std::printf("  %10s", d.c_str());
            std::printf("  %10s\n", "all");
        }
        header = true;
        std::printf("  %-*s", static_cast<int>(width), t.variants[v].name.c_str());
        for (std::size_t d = 0; d < t.domains.size(); ++d)
            std::printf("  %+10.4f", t.nll[v][d] - t.nll[static_cast<std::size_t>(base)][d]);
        std::printf("  %+10.4f\n", overDomains(t, t.nll, v) - overDomains(t, t.nll, static_cast<std::size_t>(base)));
    }
}

// The request field -> flag of the errors prepareEval and runEval report (with the executor's and
// the held-out domains' fields).
const FieldFlags kEvalFlags { { "tokens", "--domain/--atlas" }, { "checkpoint", "checkpoint" },
    { "sweep", "--sparsity" }, { "sparsities", "--sparsity" }, { "sweep.randomPlans", "--random-plans" },
    { "csv", "--csv" }, { "plans", "--plan" }, { "routing", "--routing" }, { "speculative", "--speculative" } };

int runEval(const EvalArgs& a)
{
    if (a.scope != "uniform" && a.scope != "global")
        throw InputError("--scope '" + a.scope + "' (expected uniform or global)");
    EvalRequest request;
    request.atlas = a.atlas;
    request.checkpoint = a.checkpoint;
    request.tokens = jobTokens(a.calibration);
    request.full = !a.noFull;
    request.planFiles.assign(a.plans.begin(), a.plans.end());
    request.sweep.sparsities = a.sparsities;
    request.sweep.criteria = a.criteria;
    request.sweep.specialists = !a.noSpecialists;
    request.sweep.generalist = !a.noGeneralist;
    request.sweep.randomPlans = a.randomPlans;
    request.sweep.seed = a.calibration.seed;
    request.sweep.scope = a.scope == "global" ? BudgetScope::Global : BudgetScope::Uniform;
    request.routing = a.routing;
    request.speculative = a.speculative;
    applyExecutorArgs(a.executor, request.executor);
    request.csv = a.csv;
    request.label = a.label;
    request.save = !a.noSave;
    const PreparedEval job = prepareEval(request);

    StopToken& stop = installStopHandler();
    ProgressBar bar("eval", "token-layers");
    EvalTable table;
    try {
        table = runEval(
            job, [&](const Progress& p) { return bar.update(p); }, &stop);
    } catch (const Cancelled&) {
        bar.finish("eval interrupted: nothing was written");
        return 130;
    }
    bar.finish("eval: " + std::to_string(table.variants.size()) + " variants x "
        + std::to_string(job.tokens.tokens.size()) + " tokens in " + formatDuration(table.seconds));
    printTable(table);
    if (!job.csv.empty())
        std::printf("%s\n", job.csv.c_str());
    if (job.storeIn)
        std::printf("%s:/evaluation/%s\n", job.storeIn->c_str(), job.label.c_str());
    return 0;
}

} // namespace

Command addEvalCommand(CLI::App& app)
{
    auto a = std::make_shared<EvalArgs>();
    CLI::App* sub = app.add_subcommand(
        "eval", "Per-domain loss/perplexity of the full model and of pruning plans (router masks, no export)");
    sub->add_option("checkpoint", a->checkpoint, "Hugging Face checkpoint directory (default: the atlas's)");
    sub->add_option("--atlas", a->atlas,
        "Atlas: its calibration tokens are evaluated unless --domain is given; its scores drive --sparsity sweeps; "
        "the table is stored in it under /evaluation/<label>");
    addCalibrationOptions(sub, a->calibration, "Held-out domain to evaluate on (default: the atlas's tokens)");
    sub->add_option("--plan", a->plans, "Plan file to evaluate (moeatlas plan); repeatable");
    sub->add_option("--sparsity", a->sparsities, "Sweep: fractions of routed experts dropped, e.g. 0.25,0.5,0.75")
        ->delimiter(',');
    sub->add_option(
           "--criteria", a->criteria, "Sweep: scores to rank experts by (peu, frequency, reap, ..., fisher_mask, ...)")
        ->delimiter(',')
        ->capture_default_str();
    sub->add_option("--routing", a->routing,
        "Also evaluate every variant with this routing rule: top-k:K, probmoe:KMIN:KMAX, top-p:P[:KMIN:KMAX], "
        "threshold:M[:KMIN:KMAX] (M: mean k, thresholds calibrated on the atlas); dynamic rules add the fixed "
        "top-k ladder they are compared with at equal cost; repeatable");
    sub->add_option("--speculative", a->speculative,
        "Also evaluate every variant (model routing) with speculative execution: each MoE layer runs the experts "
        "PREDICTOR predicted LOOKAHEAD MoE layers earlier (default 1) instead of its own routing: next-router, "
        "previous, oracle; quasi-hidden, linear, mlp (recorded by capture --prefetch) and frequency need --atlas. "
        "PREDICTOR[:LOOKAHEAD]; repeatable");
    sub->add_flag("--no-specialists", a->noSpecialists, "Sweep: no per-domain specialist plans");
    sub->add_flag("--no-generalist", a->noGeneralist, "Sweep: no pooled generalist plans");
    sub->add_option("--random-plans", a->randomPlans, "Sweep: uniformly random plans per sparsity (seeded)");
    sub->add_option("--scope", a->scope, "Sweep budget scope: uniform or global")->capture_default_str();
    sub->add_flag("--no-full", a->noFull, "Do not evaluate the unpruned model");
    sub->add_option("--csv", a->csv, "Write the table as CSV (one row per variant and domain)");
    sub->add_option("--label", a->label, "Name of the table in the atlas (/evaluation/<label>)")->capture_default_str();
    sub->add_flag("--no-save", a->noSave, "Do not store the table in the atlas");
    addExecutorOptions(sub, a->executor);
    return [a] {
        return namingFlags(
            fieldFlags({ &kExecutorFlags, &kCalibrationFlags, &kEvalFlags }), [&] { return runEval(*a); });
    };
}

} // namespace moeatlas::cli
