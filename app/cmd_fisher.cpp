// moeatlas fisher: Fisher importance of the routed experts' intermediate units (Fisher-MoE) per
// calibration domain and pooled, its concentration, and the "remove the top-n units" ablation,
// stored in the atlas under /fisher.
#include "calibration_args.h"
#include "cli_progress.h"
#include "commands.h"

#include "request_flags.h"

#include "util/error.h"
#include "util/format.h"
#include "workflows/fisher_workflow.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

namespace moeatlas::cli {

namespace {

struct FisherArgs {
    std::string atlas;
    std::string checkpoint;
    CalibrationArgs calibration; // held-out domains instead of the atlas's tokens
    std::vector<std::string> ablationDomains; // NAME=PATH[:N]: where the ablation is measured (packed alike)
    std::vector<std::string> forms { "mask", "weight", "grad_abs" };
    bool noBaselines = false;
    std::string ablate = "0,10,100,1000";
    int threads = 0;
    std::string mode = "auto";
    std::string scratchDir;
    int64_t chunkTokens = 0;
    uint64_t memoryBudgetMiB = 0;
};

FisherOptions fisherOptions(const FisherArgs& a)
{
    FisherOptions o;
    o.threads = a.threads;
    if (a.mode == "auto")
        o.mode = FisherMode::Auto;
    else if (a.mode == "resident")
        o.mode = FisherMode::Resident;
    else if (a.mode == "streaming")
        o.mode = FisherMode::Streaming;
    else
        throw InputError("--mode: '" + a.mode + "' (expected auto, resident or streaming)");
    o.scratchDir = a.scratchDir;
    o.chunkTokens = a.chunkTokens;
    o.memoryBudgetBytes = a.memoryBudgetMiB << 20;
    try {
        setFisherForms(o, a.forms);
    } catch (const InputError& e) {
        throw InputError(std::string("--forms: ") + e.what());
    }
    o.activation = o.magnitude = !a.noBaselines;
    return o;
}

std::string percent(double fraction)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g%%", fraction * 100);
    return buf;
}

void printConcentration(const FisherTables& t, const std::string& ranking)
{
    const std::size_t L = t.layers.size(), F = kConcentrationFractions.size();
    const int64_t all = t.unitsPerRow(), perLayer = t.numExperts * t.intermediate;
    const auto count = [](double f, int64_t n) {
        return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(f * static_cast<double>(n) - 1e-9)), 1, n);
    };
    const auto header = [&](const char* first, const char* second, int64_t n) {
        std::printf("%-11s %-8s", first, second);
        for (const double f : kConcentrationFractions)
            std::printf("  %14s", (percent(f) + " (" + std::to_string(count(f, n)) + ")").c_str());
        std::printf("\n");
    };
    const auto cells = [&](const FisherFormTable& f, std::size_t row, std::size_t layer) {
        for (std::size_t k = 0; k < F; ++k)
            std::printf("  %14.4f", f.concentration[(row * (L + 1) + layer) * F + k]);
        std::printf("\n");
    };
    std::printf("\nShare of the Fisher mass in the top units (all %lld units of %zu MoE layers):\n",
        static_cast<long long>(all), L);
    header("form", "domain", all);
    for (const FisherFormTable& f : t.forms) {
        const std::size_t rows = f.form == "magnitude" ? 1 : t.domains.size();
        for (std::size_t r = 0; r < rows; ++r) {
            std::printf("%-11s %-8s", f.form.c_str(), rows == 1 ? "-" : t.domains[r].c_str());
            cells(f, r, L);
        }
    }
    const FisherFormTable* f = t.find(ranking);
    std::printf("\nPer layer, %s form (%lld units per layer):\n", ranking.c_str(), static_cast<long long>(perLayer));
    header("domain", "layer", perLayer);
    for (std::size_t r = 0; r < t.domains.size(); ++r)
        for (std::size_t l = 0; l < L; ++l) {
            std::printf("%-11s %-8d", t.domains[r].c_str(), t.layers[l]);
            cells(*f, r, l);
        }
}

void printAblation(const FisherAblation& a)
{
    const EvalTable& t = a.table;
    std::size_t width = 8;
    for (const EvalVariant& v : t.variants)
        width = std::max(width, v.name.size());
    std::printf(
        "\nAblation: per-domain next-token loss (nats) after removing units, ranked by %s Fisher\n", a.form.c_str());
    std::printf("%-*s %8s", static_cast<int>(width), "variant", "removed");
    for (const std::string& d : t.domains)
        std::printf("  %18s", (d + " nll (delta)").c_str());
    std::printf("\n");
    const auto full = static_cast<std::size_t>(t.fullIndex());
    for (std::size_t v = 0; v < t.variants.size(); ++v) {
        std::printf("%-*s %8lld", static_cast<int>(width), t.variants[v].name.c_str(),
            static_cast<long long>(a.variants[v].removed));
        for (std::size_t d = 0; d < t.domains.size(); ++d) {
            char cell[48];
            if (v == full)
                std::snprintf(cell, sizeof cell, "%.4f", t.nll[v][d]);
            else
                std::snprintf(cell, sizeof cell, "%.4f (%+.4f)", t.nll[v][d], t.nll[v][d] - t.nll[full][d]);
            std::printf("  %18s", cell);
        }
        std::printf("\n");
    }
}

// The request field -> flag of the errors prepareFisher and runFisher report (with the held-out
// domains' fields; the ablation's executor runs on the CPU with its defaults, so only its memory plan).
const FieldFlags kFisherFlags { { "ablationTokens", "--ablation-domain" }, { "options.chunkTokens", "--chunk-tokens" },
    { "ablate", { "", "--ablate none" } }, { "mode", { "", "--mode streaming" } },
    { "memoryBudgetBytes", { "", "lower --seq-len or --max-samples" } } };

int runFisher(const FisherArgs& a)
{
    // Everything the user can get wrong is refused before the long computation.
    FisherRequest request;
    request.atlas = a.atlas;
    request.checkpoint = a.checkpoint;
    request.tokens = jobTokens(a.calibration);
    request.options = fisherOptions(a);
    try {
        request.ablate = parseAblationCounts(a.ablate);
    } catch (const InputError& e) {
        throw InputError(std::string("--ablate: ") + e.what());
    }
    if (!a.ablationDomains.empty()) {
        CalibrationArgs heldout = a.calibration; // packed like --domain
        heldout.domains = a.ablationDomains;
        try {
            applyCalibrationArgs(heldout, request.ablationTokens);
        } catch (const InputError& e) {
            throw InputError(std::string("--ablation-domain: ") + e.what());
        }
    }
    request.seed = a.calibration.seed;
    const PreparedFisher job = prepareFisher(request);
    const FisherPlan& plan = job.plan;
    std::fprintf(stderr, "fisher: %s mode, planned peak %s of %s%s\n", fisherModeName(plan.mode),
        formatBytes(plan.peakBytes).c_str(), plan.budgetBytes ? formatBytes(plan.budgetBytes).c_str() : "(no limit)",
        plan.mode == FisherMode::Streaming
            ? (", " + std::to_string(plan.chunks) + " chunk(s) of <= " + std::to_string(plan.chunkTokens) + " tokens"
                + (plan.spill ? ", saved layer inputs spilled to disk (" + formatBytes(plan.spillBytes) + ")" : ""))
                  .c_str()
            : "");

    StopToken& stop = installStopHandler();
    StagedProgressBars bars;
    FisherOutcome outcome;
    try {
        outcome = runFisher(job, bars.stages(), &stop);
    } catch (const Cancelled&) {
        bars.interrupted("the atlas is unchanged");
        return 130;
    }
    printConcentration(outcome.tables, job.ablation ? job.ablation->form : ablationRankingForm(job.options));
    if (outcome.ablation)
        printAblation(*outcome.ablation);
    std::printf("%s:/fisher\n", job.atlas.c_str());
    return 0;
}

} // namespace

Command addFisherCommand(CLI::App& app)
{
    auto a = std::make_shared<FisherArgs>();
    CLI::App* sub = app.add_subcommand("fisher",
        "Fisher importance of routed-expert FFN units per domain, its concentration, and the top-n unit ablation "
        "(stored in the atlas under /fisher)");
    sub->add_option("atlas", a->atlas, "Atlas (complete): its calibration tokens and domains, unless --domain")
        ->required();
    sub->add_option("--checkpoint", a->checkpoint, "Hugging Face checkpoint directory (default: the atlas's)");
    addCalibrationOptions(
        sub, a->calibration, "Held-out domain to compute Fisher on instead of the atlas's calibration tokens");
    sub->add_option("--forms", a->forms, "Gradient forms: mask, weight, grad_abs")
        ->delimiter(',')
        ->capture_default_str();
    sub->add_flag("--no-baselines", a->noBaselines, "Skip the activation and magnitude baselines");
    sub->add_option("--ablate", a->ablate,
           "Unit counts n to remove (the top-n by pooled and per-domain Fisher, and n random units), or none")
        ->capture_default_str();
    sub->add_option("--ablation-domain", a->ablationDomains,
        "Held-out domain the ablation is measured on (NAME=PATH[:N], packed like --domain; repeatable); default: "
        "the tokens Fisher was computed on");
    sub->add_option(
        "--threads", a->threads, "Intra-op threads (0 = OMP_NUM_THREADS, or every CPU the process may use)");
    sub->add_option("--mode", a->mode,
           "auto (resident when it fits in memory), resident (every layer kept) or streaming (layer by layer, "
           "backward in reverse from saved layer inputs)")
        ->capture_default_str();
    sub->add_option("--scratch-dir", a->scratchDir,
        "Streaming: directory for the saved layer inputs when they do not fit in memory (default: $TMPDIR or /tmp)");
    sub->add_option("--chunk-tokens", a->chunkTokens,
        "Streaming: tokens of samples per pass (each pass reads every layer twice; 0 = as few passes as memory "
        "allows)");
    sub->add_option("--memory-budget-mib", a->memoryBudgetMiB, "Memory budget of the plan (0 = MemAvailable)");
    return [a] {
        return namingFlags(fieldFlags({ &kCalibrationFlags, &kFisherFlags }), [&] { return runFisher(*a); });
    };
}

} // namespace moeatlas::cli
