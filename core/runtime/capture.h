// The capture job: checkpoint + domain-labelled calibration data -> atlas file.
// Shared by the CLI (`moeatlas capture`) and the GUI; progress and cancellation by callbacks.
#pragma once

#include "atlas/atlas_file.h"
#include "runtime/executor.h"
#include "text/calibration.h"
#include "util/progress.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

// Domain-labelled calibration data and how it is read and packed: what capture records, and the
// held-out sets that evaluation and Fisher run on.
struct CalibrationInput {
    std::vector<DomainSource> domains;
    PackingOptions packing;
    TextOptions text; // text field of JSONL records, one document per file
    std::filesystem::path tokenizer; // tokenizer.json (or its directory) for text domains;
                                     // empty: <checkpoint>/tokenizer.json when present
    bool addBos = false; // BOS per document = the tokenizer's, unless packing.bosToken
};

// Expert prefetching recorded by a capture (`capture --prefetch`; docs/methods.md, "Expert prefetching").
struct CapturePrefetch {
    std::vector<Predictor> predictors; // empty: off; next-router and quasi-hidden are recorded
    int maxLookahead = 0; // MoE layers ahead, 1..min(3, MoE layers - 1); 0 = that largest one
    int budget = 0; // experts stored per prediction, k..E; 0 = min(2k, E)
    double trainFraction = 0.5; // share of each domain's sequences in the training split, (0, 1)
    std::optional<uint64_t> splitSeed; // the split's seed; default: the calibration seed
};

struct CaptureParams : CalibrationInput {
    std::filesystem::path checkpoint;
    std::filesystem::path output; // final atlas path, e.g. run.atlas.h5
    ExecutorOptions executor;
    LogitStorage logitStorage = LogitStorage::Float32;
    int hiddenSamplesPerLayer = 0; // tokens whose MoE input is stored per layer
    bool resume = false; // continue "<output>.partial"
    bool saveResumeState = true; // keep "<output>.resume.safetensors" between layers
    bool overwrite = false; // replace an existing final atlas
    CapturePrefetch prefetch;
};

struct CaptureSummary {
    std::filesystem::path atlas;
    int64_t tokens = 0;
    int layersRun = 0;
    int layersSkipped = 0; // already complete when resuming
    double seconds = 0.0;
    uint64_t peakLayerBytes = 0; // largest decoder layer read from the checkpoint
    uint64_t peakRssBytes = 0; // peak resident memory of this process so far
};

// Loads, tokenizes and packs every domain of `input` (InputError naming the file on bad input).
// The tokenizer is input.tokenizer or <checkpoint>/tokenizer.json; it is read only when a
// domain is text or addBos needs its BOS, and a text domain without one is an InputError.
CalibrationSet loadCalibration(
    const CalibrationInput& input, const std::filesystem::path& checkpoint, int64_t vocabSize);
inline CalibrationSet loadCalibration(const CaptureParams& params, int64_t vocabSize)
{
    return loadCalibration(params, params.checkpoint, vocabSize);
}

// Runs the capture. On cancellation (Cancelled thrown) the partial atlas stays valid with the
// layers completed so far; rerun with resume = true to continue it.
CaptureSummary runCapture(const CaptureParams& params, const ProgressFn& progress, const StopToken* stop);

// Checks the prefetch options against the model (RequestError naming the field: "prefetch",
// "prefetchLookahead", "prefetchBudget", "prefetchTrainFraction") and returns them with the defaults resolved
// (the budget; predictors deduplicated in the order of kAllPredictors). Called by runCapture before any output.
CapturePrefetch validatePrefetch(const CapturePrefetch& prefetch, const ModelSpec& spec);

// Path of the resume state kept next to a partial atlas.
std::filesystem::path resumeStatePath(const std::filesystem::path& output);

} // namespace moeatlas
