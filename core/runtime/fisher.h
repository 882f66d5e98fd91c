// Fisher importance of routed-expert FFN intermediate units (Fisher-MoE, METHODS.md section 4):
// per-sample causal-LM gradients over a calibration set, with every layer resident in memory or
// streamed layer by layer (forward saving each layer's input, then backward in reverse, reloading
// and recomputing each layer). Public API: no LibTorch types. Formulas and memory: docs/fisher.md.
#pragma once

#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"
#include "util/progress.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

enum class FisherMode {
    Auto, // resident when its memory plan fits the budget, else streaming
    Resident, // every layer loaded once and kept; autograd over the whole model per sample
    Streaming, // layer by layer: peak ~ one layer + one sequence's activations (+ saved inputs in RAM)
};

const char* fisherModeName(FisherMode mode); // "auto", "resident", "streaming"

struct FisherOptions {
    // Threads of the pass: the BLAS's GEMM threads (with OpenBLAS; another BLAS keeps its own setting),
    // with ATen single-threaded meanwhile (both restored afterwards; runtime/thread_pools.h says why);
    // 0 = ATen's threads as the process is set (runtime/runtime_policy.h).
    int threads = 0;
    FisherMode mode = FisherMode::Auto;
    uint64_t memoryBudgetBytes = 0; // 0 = MemAvailable (availableMemoryBytes()); plans above it are refused
    // Streaming: directory of the scratch file that receives the saved layer inputs when they do not
    // fit the budget (an unlinked temporary file: nothing is left behind). Empty = the system's temp dir.
    std::string scratchDir;
    // Streaming: tokens per chunk of samples (whole sequences, at least the longest one). Each chunk
    // loads every layer twice; 0 = as few chunks as the budget and the scratch disk allow.
    int64_t chunkTokens = 0;
    // Which scores to compute. The mask form needs only one [E, I] gradient per layer; the other
    // two need the gradients of the routed-expert weights (3 x E x I x H values per layer).
    bool maskForm = true;
    bool weightForm = true;
    bool gradAbs = true;
    // Baselines for comparison (no gradients): mean |activation| per unit over the tokens routed to
    // its expert, and the unit's weight magnitude.
    bool activation = true;
    bool magnitude = true;
};

// Scores of one MoE layer. Per-group vectors are [G * numExperts * intermediate] row-major (group g,
// expert e, unit j at (g * E + e) * I + j), G = FisherResult::groups; a vector is empty when its
// score was not asked for. Each group's value averages over that group's samples only.
struct FisherLayer {
    int layer = 0; // decoder layer index
    int64_t numExperts = 0;
    int64_t intermediate = 0;
    // Mask form (default granularity): (1/N) sum_n (dL_n/dm_{e,j})^2 with a mask m = 1 multiplying
    // the unit's activation a_j = silu(gate_j x) * up_j x.
    std::vector<double> mask;
    // Weight form: (1/N) sum_n sum_h (dL_n/dWgate[j,h]^2 + dL_n/dWup[j,h]^2 + dL_n/dWdown[h,j]^2).
    std::vector<double> weight;
    // The authors' released variant: (1/N) sum_n sum_h (|dWgate[j,h]| + |dWup[j,h]| + |dWdown[h,j]|) / (3H).
    std::vector<double> gradAbs;
    // Activation baseline: sum over the group's tokens routed to expert e of |a_j| divided by that
    // count (0 for an expert no token of the group reached).
    std::vector<double> activation;
    std::vector<int64_t> expertTokens; // [G * E]: tokens of the group routed to expert e (top-k hits)
    // Magnitude baseline, weights only (not per group): [E * I],
    // sum_h (Wgate[j,h]^2 + Wup[j,h]^2 + Wdown[h,j]^2).
    std::vector<double> magnitude;
};

// How a run uses memory, decided before any work (planFisher; computeFisher follows it).
struct FisherPlan {
    FisherMode mode = FisherMode::Resident; // what runs: Resident or Streaming
    uint64_t budgetBytes = 0; // the budget it was planned against (0 = unknown: no limit)
    uint64_t residentBytes = 0; // planned peak of the resident mode
    uint64_t peakBytes = 0; // planned peak of the chosen mode
    // Streaming only: chunks of samples, the largest chunk's tokens, and whether the saved layer
    // inputs go to the scratch file (spillBytes: its size) instead of RAM.
    int chunks = 1;
    int64_t chunkTokens = 0;
    bool spill = false;
    uint64_t spillBytes = 0;
};

struct FisherResult {
    std::vector<FisherLayer> layers; // the MoE layers, in order
    FisherPlan plan; // the memory plan that ran
    uint64_t bytesSpilled = 0; // bytes written to the scratch file (streaming with spill)
    int groups = 1; // G: sample groups (e.g. calibration domains), see computeFisher
    std::vector<int64_t> groupSamples; // [G]: N of each group
    std::vector<int64_t> groupTokens; // [G]
    int64_t samples = 0; // N: sequences, each its own sample
    int64_t tokens = 0; // tokens over all samples
    std::vector<double> sampleLoss; // per sample: mean next-token cross-entropy (nats) that was differentiated
    // Per token: -log p(tokens[t+1] | ..t) within t's sequence, NaN at each sequence's last token
    // (the executor's VariantOutput::tokenNll convention), from the forward that was differentiated.
    std::vector<float> tokenNll;
    double seconds = 0.0;
};

// The memory plan computeFisher would follow for these sequences (validates offsets and groups).
// Throws InputError when the asked-for mode (or, in auto, even streaming) does not fit the budget,
// naming the bytes needed and available, or when a needed scratch directory is missing.
FisherPlan planFisher(const Checkpoint& checkpoint, const ModelSpec& spec, std::span<const int64_t> seqOffsets,
    std::span<const int> sampleGroup = {}, const FisherOptions& options = {});

// Runs every sequence [seqOffsets[i], seqOffsets[i+1]) as one sample (batch of one; labels = the
// input ids; loss = mean next-token cross-entropy over the sequence, as transformers computes it),
// in fp32 on the CPU, and back-propagates into per-unit masks and/or the routed-expert weights only
// (router, attention, shared experts and embeddings stay frozen, but gradients flow through them).
// Resident and streaming modes give the same numbers, bit for bit, in one process with the same thread
// count (the same operations on the same per-sample shapes and kernels; on another CPU, OpenBLAS' and
// ATen's kernels may change the last bits of either mode's numbers alike). An expert a sample does not
// route to contributes 0 for that sample, which still counts in N. sampleGroup (empty = every
// sample in group 0) gives each sequence's group in [0, G); G = 1 + the largest group id, and every
// group must hold a sample. Throws InputError for sequences shorter than 2 tokens, bad offsets or
// groups, token ids out of the vocabulary, or a plan over the memory budget (see planFisher).
// progress: resident mode after every sample (units: samples); streaming after every sequence of
// every step (units: sequence steps, 2 x (layers from the first MoE layer) + forward layers below
// it + 1 for the loss, per sample). A false return or a stop request throws Cancelled.
FisherResult computeFisher(const Checkpoint& checkpoint, const ModelSpec& spec, std::span<const int32_t> tokens,
    std::span<const int64_t> seqOffsets, std::span<const int> sampleGroup = {}, const FisherOptions& options = {},
    const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
