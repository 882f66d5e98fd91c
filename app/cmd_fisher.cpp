// moeatlas fisher: Fisher importance of the routed experts' intermediate units (Fisher-MoE) per
// calibration domain and pooled, its concentration, and the "remove the top-n units" ablation,
// stored in the atlas under /fisher.
#include "calibration_args.h"
#include "cli_progress.h"
#include "commands.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "eval/eval.h"
#include "fisher/fisher_ablation.h"
#include "fisher/fisher_store.h"
#include "runtime/capture.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/format.h"
#include "util/sha256.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include <sys/resource.h>

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
    if (a.chunkTokens < 0)
        throw InputError("--chunk-tokens: " + std::to_string(a.chunkTokens) + " (expected a token count >= 0)");
    o.scratchDir = a.scratchDir;
    o.chunkTokens = a.chunkTokens;
    o.memoryBudgetBytes = a.memoryBudgetMiB << 20;
    o.maskForm = o.weightForm = o.gradAbs = false;
    for (const std::string& f : a.forms) {
        if (f == "mask")
            o.maskForm = true;
        else if (f == "weight")
            o.weightForm = true;
        else if (f == "grad_abs" || f == "grad-abs")
            o.gradAbs = true;
        else
            throw InputError("--forms: unknown form '" + f + "' (expected mask, weight, grad_abs)");
    }
    if (!o.maskForm && !o.weightForm && !o.gradAbs)
        throw InputError("--forms: give at least one of mask, weight, grad_abs");
    o.activation = o.magnitude = !a.noBaselines;
    return o;
}

// "0,10,100" -> counts; "none" -> no ablation.
std::optional<std::vector<int64_t>> ablationList(const std::string& text)
{
    if (text == "none")
        return std::nullopt;
    std::vector<int64_t> counts;
    std::size_t begin = 0;
    while (begin <= text.size()) {
        const std::size_t end = std::min(text.find(',', begin), text.size());
        const std::string item = text.substr(begin, end - begin);
        int64_t n = -1;
        const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
        if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || n < 0)
            throw InputError("--ablate '" + text + "': '" + item
                + "' is not a unit count (expected comma-separated integers >= 0, or none)");
        counts.push_back(n);
        begin = end + 1;
    }
    return counts;
}

// The ranking form of the ablation: mask when computed, else the first gradient form computed.
std::string rankingForm(const FisherOptions& o)
{
    return o.maskForm ? "mask" : o.weightForm ? "weight" : "grad_abs";
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

int runFisher(const FisherArgs& a)
{
    // Everything the user can get wrong is refused before the long computation.
    const FisherOptions options = fisherOptions(a);
    const std::optional<std::vector<int64_t>> ablate = ablationList(a.ablate);
    std::optional<AtlasFile> atlas = AtlasFile::openReadOnly(a.atlas);
    if (!atlas->isComplete())
        throw InputError(a.atlas + ": the atlas is not complete (finish the capture with --resume)");
    ensureWritableDirectory(a.atlas);
    const std::string checkpointDir = a.checkpoint.empty() ? atlas->model().checkpointPath : a.checkpoint;
    const Checkpoint ckpt(checkpointDir);
    const std::string configPath = (ckpt.dir() / "config.json").string();
    const std::string configSha = sha256File(ckpt.dir() / "config.json");
    if (configSha != atlas->model().configSha256)
        throw InputError(configPath + ": not the config.json " + a.atlas + " was captured from (config SHA-256 "
            + configSha.substr(0, 12) + "..., the atlas has " + atlas->model().configSha256.substr(0, 12) + "...)");
    const ModelSpec spec = parseModelSpec(ckpt.config(), configPath);

    const EvalTokens tokens = evaluationTokens(a.calibration, ckpt, spec, atlas ? &*atlas : nullptr);
    if (ablate)
        checkAblationDomains(tokens.domains, tokens.source);
    // The memory plan is checked (and printed) before the long computation.
    const FisherPlan plan = planFisher(ckpt, spec, tokens.seqOffsets, tokens.seqDomain, options);
    std::fprintf(stderr, "fisher: %s mode, planned peak %s of %s%s\n", fisherModeName(plan.mode),
        formatBytes(plan.peakBytes).c_str(), plan.budgetBytes ? formatBytes(plan.budgetBytes).c_str() : "(no limit)",
        plan.mode == FisherMode::Streaming
            ? (", " + std::to_string(plan.chunks) + " chunk(s) of <= " + std::to_string(plan.chunkTokens) + " tokens"
                + (plan.spill ? ", saved layer inputs spilled to disk (" + formatBytes(plan.spillBytes) + ")" : ""))
                  .c_str()
            : "");
    // The ablation is measured on held-out text when given (the units are ranked on `tokens`).
    EvalTokens ablationTokens = tokens;
    if (!a.ablationDomains.empty()) {
        if (!ablate)
            throw InputError("--ablation-domain: given with --ablate none");
        CalibrationArgs heldout = a.calibration;
        heldout.domains = a.ablationDomains;
        CaptureParams p;
        p.checkpoint = ckpt.dir();
        // The shared loader names --domain in its messages; the user gave --ablation-domain.
        try {
            applyCalibrationArgs(heldout, p);
            ablationTokens = evalTokensFromCalibration(loadCalibration(p, spec.vocabSize));
        } catch (const InputError& e) {
            throw InputError(std::string("--ablation-domain: ") + e.what());
        }
    }
    FisherRunInfo info;
    info.tokenSource = tokens.source;
    info.checkpoint = ckpt.dir().string();
    info.configSha256 = configSha;
    FisherAblationOptions ablation;
    ablation.form = rankingForm(options);
    ablation.seed = a.calibration.seed;
    if (ablate)
        ablation.counts = *ablate;

    StopToken& stop = installStopHandler();
    FisherTables tables;
    std::optional<FisherAblation> result;
    {
        ProgressBar bar("fisher", "steps");
        try {
            tables = computeFisherTables(
                ckpt, spec, tokens, options, info, [&](const Progress& p) { return bar.update(p); }, &stop);
        } catch (const Cancelled&) {
            bar.finish("fisher interrupted: the atlas is unchanged");
            return 130;
        }
        rusage usage {};
        ::getrusage(RUSAGE_SELF, &usage);
        bar.finish("fisher: " + std::to_string(tables.samples.back()) + " sequences, "
            + std::to_string(tables.tokens.back()) + " tokens in " + formatDuration(tables.seconds) + " ("
            + fisherModeName(plan.mode) + "); peak RSS " + std::to_string(usage.ru_maxrss >> 10) + " MiB");
    }
    printConcentration(tables, ablation.form);
    if (ablate) {
        ProgressBar bar("ablation", "token-layers");
        ExecutorOptions executor;
        executor.threads = a.threads;
        try {
            result = runFisherAblation(
                ckpt, spec, executor, ablationTokens, tables, ablation,
                [&](const Progress& p) { return bar.update(p); }, &stop);
        } catch (const Cancelled&) {
            bar.finish("ablation interrupted: the atlas is unchanged");
            return 130;
        }
        bar.finish("ablation: " + std::to_string(result->variants.size()) + " variants in "
            + formatDuration(result->table.seconds));
        printAblation(*result);
    }

    const std::filesystem::path path = atlas->path();
    atlas.reset();
    AtlasFile update = AtlasFile::openForUpdate(path);
    writeFisherTables(update, tables);
    if (result)
        writeFisherAblation(update, *result);
    update.commitUpdate();
    std::printf("%s:/fisher\n", path.c_str());
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
    sub->add_option("--threads", a->threads, "Intra-op threads (0 = LibTorch default)");
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
    return [a] { return runFisher(*a); };
}

} // namespace moeatlas::cli
