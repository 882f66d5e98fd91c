// moeatlas capture <checkpoint> --domain NAME=PATH[:N] ... -o run.atlas.h5
#include "commands.h"

#include "calibration_args.h"
#include "cli_progress.h"
#include "executor_args.h"
#include "request_flags.h"
#include "runtime/capture.h"
#include "util/atomic_file.h"
#include "util/error.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

namespace moeatlas::cli {

namespace {

struct CaptureArgs {
    std::string checkpoint;
    CalibrationArgs calibration;
    ExecutorArgs executor;
    std::string output;
    std::string logitsDtype = "float32";
    bool expertNorms = false;
    int hiddenSamples = 0;
    bool resume = false;
    bool force = false;
    bool noResumeState = false;
    // --prefetch [PREDICTORS]: the option (given without a value: the default predictors) and its value.
    CLI::Option* prefetchOption = nullptr;
    std::vector<std::string> prefetch;
    std::vector<CLI::Option*> prefetchTuning; // --prefetch-lookahead, --prefetch-budget, --prefetch-train-fraction
    int prefetchLookahead = 0; // 0: min(3, MoE layers - 1)
    int prefetchBudget = 0;
    double prefetchTrainFraction = 0.5;
};

// The request fields of CapturePrefetch (validatePrefetch) and the flags that set them.
const FieldFlags kPrefetchFlags { { "prefetch", "--prefetch" }, { "prefetchLookahead", "--prefetch-lookahead" },
    { "prefetchBudget", "--prefetch-budget" }, { "prefetchTrainFraction", "--prefetch-train-fraction" },
    { "trainFraction", "--prefetch-train-fraction" } };

CapturePrefetch prefetchParams(const CaptureArgs& a)
{
    CapturePrefetch p;
    if (a.prefetchOption == nullptr || a.prefetchOption->count() == 0) {
        for (const CLI::Option* o : a.prefetchTuning)
            if (o->count() > 0)
                throw InputError(o->get_name() + " tunes --prefetch, which is not given");
        return p;
    }
    std::string list = a.prefetch.empty() ? std::string() : a.prefetch.front();
    if (list.empty())
        list = "next-router,quasi-hidden";
    for (std::size_t pos = 0; pos <= list.size();) {
        const std::size_t comma = std::min(list.find(',', pos), list.size());
        p.predictors.push_back(parsePredictor(list.substr(pos, comma - pos), "prefetch"));
        pos = comma + 1;
    }
    p.maxLookahead = a.prefetchLookahead;
    p.budget = a.prefetchBudget;
    p.trainFraction = a.prefetchTrainFraction;
    return p;
}

int runCaptureCommand(const CaptureArgs& a)
{
    CaptureParams p;
    p.checkpoint = a.checkpoint;
    applyCalibrationArgs(a.calibration, p);
    p.output = a.output;
    applyExecutorArgs(a.executor, p.executor);
    p.executor.recordExpertNorms = a.expertNorms;
    if (a.logitsDtype == "float16" || a.logitsDtype == "fp16")
        p.logitStorage = LogitStorage::Float16;
    else if (a.logitsDtype != "float32" && a.logitsDtype != "fp32")
        throw InputError("--logits-dtype: '" + a.logitsDtype + "' (expected float32 or float16)");
    p.hiddenSamplesPerLayer = a.hiddenSamples;
    p.resume = a.resume;
    p.overwrite = a.force;
    p.saveResumeState = !a.noResumeState;
    p.prefetch = prefetchParams(a);

    StopToken& stop = installStopHandler();
    ProgressBar bar("capture", "token-layers");
    try {
        const CaptureSummary s = runCapture(
            p, [&](const Progress& pr) { return bar.update(pr); }, &stop);
        const double rate = s.seconds > 0 ? static_cast<double>(s.tokens) * s.layersRun / s.seconds : 0.0;
        bar.finish("capture: " + std::to_string(s.tokens) + " tokens x " + std::to_string(s.layersRun) + " layers in "
            + formatDuration(s.seconds) + " (" + std::to_string(static_cast<long long>(rate)) + " token-layers/s)"
            + (s.layersSkipped ? ", resumed after layer " + std::to_string(s.layersSkipped - 1) : "") + "; peak RSS "
            + std::to_string(s.peakRssBytes >> 20) + " MiB, largest layer " + std::to_string(s.peakLayerBytes >> 20)
            + " MiB");
        std::printf("%s\n", s.atlas.c_str());
        return 0;
    } catch (const Cancelled&) {
        bar.finish("capture interrupted: " + partialPathFor(p.output).string()
            + " keeps every completed layer; continue with --resume");
        return 130;
    }
}

} // namespace

Command addCaptureCommand(CLI::App& app)
{
    auto a = std::make_shared<CaptureArgs>();
    CLI::App* sub
        = app.add_subcommand("capture", "Run a checkpoint over calibration data and record routing into an atlas");
    sub->add_option("checkpoint", a->checkpoint, "Hugging Face checkpoint directory")->required();
    addCalibrationOptions(sub, a->calibration, "Calibration domain")->required();
    sub->add_option("--output,-o", a->output, "Atlas file to write (e.g. run.atlas.h5)")->required();
    addExecutorOptions(sub, a->executor);
    sub->add_option("--logits-dtype", a->logitsDtype, "Stored router logits: float32 or float16")
        ->capture_default_str();
    sub->add_flag("--expert-norms", a->expertNorms, "Record L2 norms of routed expert outputs (needed for REAP)");
    sub->add_option("--hidden-samples", a->hiddenSamples, "Tokens whose MoE input is stored per layer");
    sub->add_flag("--resume", a->resume, "Continue an interrupted capture of the same output");
    sub->add_flag("--force", a->force, "Replace an existing atlas");
    sub->add_flag("--no-resume-state", a->noResumeState, "Do not keep hidden states between layers for --resume");
    a->prefetchOption = sub->add_option("--prefetch", a->prefetch,
                               "Record expert predictions for the next MoE layers: next-router, quasi-hidden, linear, "
                               "mlp (comma-separated; without a value next-router,quasi-hidden)")
                            ->expected(0, 1)
                            ->allow_extra_args(false);
    a->prefetchTuning.push_back(sub->add_option("--prefetch-lookahead", a->prefetchLookahead,
        "MoE layers ahead to predict (1..3, below the number of MoE layers; default 3, or all there are)"));
    a->prefetchTuning.push_back(sub->add_option("--prefetch-budget", a->prefetchBudget,
        "Experts stored per prediction, best first (k..E; default min(2k, E))"));
    a->prefetchTuning.push_back(sub->add_option("--prefetch-train-fraction", a->prefetchTrainFraction,
        "Share of each domain's sequences in the training split (default 0.5)"));
    return [a] {
        return namingFlags(fieldFlags({ &kExecutorFlags, &kCalibrationFlags, &kForceFlags, &kPrefetchFlags }),
            [&] { return runCaptureCommand(*a); });
    };
}

} // namespace moeatlas::cli
