// moeatlas eval: per-domain loss and perplexity of the full model and of pruning plans applied as
// router masks (no export), with budget sweeps -> trade-off table (CSV and the atlas).
#include "calibration_args.h"
#include "cli_progress.h"
#include "commands.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "eval/eval.h"
#include "runtime/capture.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/sha256.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

namespace moeatlas::cli {

namespace {

struct EvalArgs {
    std::string checkpoint;
    std::string atlas;
    CalibrationArgs calibration; // held-out domains
    std::vector<std::string> plans;
    std::vector<double> sparsities;
    std::vector<std::string> criteria { "peu" };
    bool noSpecialists = false;
    bool noGeneralist = false;
    bool noFull = false;
    int randomPlans = 0;
    std::string scope = "uniform";
    std::string csv;
    std::string label = "default";
    bool noSave = false;
    std::string device = "cpu";
    std::string dtype = "float32";
    int64_t batchTokens = 8192;
    int threads = 0;
    bool resident = false;
};

void printTable(const EvalTable& t)
{
    std::size_t width = 8;
    for (const EvalVariant& v : t.variants)
        width = std::max(width, v.name.size());
    std::printf("%-*s %8s", static_cast<int>(width), "variant", "kept");
    for (const std::string& d : t.domains)
        std::printf("  %22s", (d + " nll (ppl)").c_str());
    std::printf("\n");
    const int full = t.fullIndex();
    for (std::size_t v = 0; v < t.variants.size(); ++v) {
        std::printf("%-*s %8lld", static_cast<int>(width), t.variants[v].name.c_str(),
            static_cast<long long>(t.variants[v].keptExperts));
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
}

int runEval(const EvalArgs& a)
{
    if (a.atlas.empty() && a.calibration.domains.empty())
        throw InputError("give the tokens to evaluate on: --atlas ATLAS (its calibration tokens) and/or --domain");
    if (a.atlas.empty() && !a.sparsities.empty() && (!a.noSpecialists || !a.noGeneralist))
        throw InputError("--sparsity compiles specialist and generalist plans from scores: it needs --atlas");
    if (a.scope != "uniform" && a.scope != "global")
        throw InputError("--scope '" + a.scope + "' (expected uniform or global)");

    std::optional<AtlasFile> atlas;
    if (!a.atlas.empty())
        atlas = AtlasFile::openReadOnly(a.atlas);
    const std::string checkpointDir = !a.checkpoint.empty() ? a.checkpoint
        : atlas                                             ? atlas->model().checkpointPath
                                                            : std::string();
    if (checkpointDir.empty())
        throw InputError("give the checkpoint directory");
    const Checkpoint ckpt(checkpointDir);
    const std::string configPath = (ckpt.dir() / "config.json").string();
    const std::string configSha = sha256File(ckpt.dir() / "config.json");
    if (atlas && configSha != atlas->model().configSha256)
        throw InputError(configPath + ": not the config.json " + a.atlas + " was captured from");
    const ModelSpec spec = parseModelSpec(ckpt.config(), configPath);

    const EvalTokens tokens = evaluationTokens(a.calibration, ckpt, spec, atlas ? &*atlas : nullptr);

    std::vector<EvalVariant> variants;
    if (!a.noFull)
        variants.push_back(fullVariant(spec));
    for (const std::string& path : a.plans)
        variants.push_back(variantFromPlanFile(path, spec, configSha));
    if (!a.sparsities.empty()) {
        SweepOptions sweep;
        sweep.sparsities = a.sparsities;
        sweep.criteria = a.criteria;
        sweep.specialists = !a.noSpecialists;
        sweep.generalist = !a.noGeneralist;
        sweep.randomPlans = a.randomPlans;
        sweep.seed = a.calibration.seed;
        sweep.scope = a.scope == "global" ? BudgetScope::Global : BudgetScope::Uniform;
        for (EvalVariant& v : sweepVariants(a.atlas, ckpt, spec, sweep))
            variants.push_back(std::move(v));
    } else if (a.randomPlans > 0) {
        throw InputError("--random-plans needs --sparsity");
    }

    // A CSV that cannot be written is refused before the evaluation, not after it.
    if (!a.csv.empty()) {
        const std::filesystem::path dir = std::filesystem::absolute(a.csv).parent_path();
        if (!std::filesystem::is_directory(dir))
            throw InputError("--csv " + a.csv + ": directory " + dir.string() + " does not exist");
    }

    ExecutorOptions options;
    options.device = a.device;
    options.computeDtype = a.dtype;
    options.batchTokens = a.batchTokens;
    options.threads = a.threads;
    options.keepWeightsResident = a.resident;

    StopToken& stop = installStopHandler();
    ProgressBar bar("eval", "token-layers");
    EvalTable table;
    try {
        table = evaluateVariants(
            ckpt, spec, options, tokens, std::move(variants), [&](const Progress& p) { return bar.update(p); }, &stop);
    } catch (const Cancelled&) {
        bar.finish("eval interrupted: nothing was written");
        return 130;
    }
    bar.finish("eval: " + std::to_string(table.variants.size()) + " variants x " + std::to_string(tokens.tokens.size())
        + " tokens in " + formatDuration(table.seconds));
    printTable(table);
    if (!a.csv.empty()) {
        writeFileAtomically(a.csv, evalTableCsv(table));
        std::printf("%s\n", a.csv.c_str());
    }
    if (atlas && !a.noSave) {
        const std::filesystem::path path = atlas->path();
        atlas.reset();
        storeEvalTable(path, a.label, table);
        std::printf("%s:/evaluation/%s\n", path.c_str(), a.label.c_str());
    }
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
    sub->add_flag("--no-specialists", a->noSpecialists, "Sweep: no per-domain specialist plans");
    sub->add_flag("--no-generalist", a->noGeneralist, "Sweep: no pooled generalist plans");
    sub->add_option("--random-plans", a->randomPlans, "Sweep: uniformly random plans per sparsity (seeded)");
    sub->add_option("--scope", a->scope, "Sweep budget scope: uniform or global")->capture_default_str();
    sub->add_flag("--no-full", a->noFull, "Do not evaluate the unpruned model");
    sub->add_option("--csv", a->csv, "Write the table as CSV (one row per variant and domain)");
    sub->add_option("--label", a->label, "Name of the table in the atlas (/evaluation/<label>)")->capture_default_str();
    sub->add_flag("--no-save", a->noSave, "Do not store the table in the atlas");
    sub->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
    sub->add_option("--dtype", a->dtype, "Compute dtype: float32, bfloat16, float16")->capture_default_str();
    sub->add_option("--batch-tokens", a->batchTokens, "Tokens per micro-batch")->capture_default_str();
    sub->add_option("--threads", a->threads, "Intra-op threads (0 = LibTorch default)");
    sub->add_flag("--resident", a->resident, "Keep all layers in memory (small models)");
    return [a] { return runEval(*a); };
}

} // namespace moeatlas::cli
