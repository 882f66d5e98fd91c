// Fisher importance of routed-expert FFN intermediate units (Fisher-MoE, METHODS.md section 4):
// per-sample causal-LM gradients over a calibration set, with every layer resident in memory.
// Public API: no LibTorch types. Formulas and what is not done yet: docs/fisher.md.
#pragma once

#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"
#include "util/progress.h"

#include <cstdint>
#include <span>
#include <vector>

namespace moeatlas {

struct FisherOptions {
    int threads = 0; // intra-op threads; 0 = LibTorch's default (process-wide, as for the executor)
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

struct FisherResult {
    std::vector<FisherLayer> layers; // the MoE layers, in order
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

// Runs every sequence [seqOffsets[i], seqOffsets[i+1]) as one sample (batch of one; labels = the
// input ids; loss = mean next-token cross-entropy over the sequence, as transformers computes it),
// in fp32 on the CPU with every layer resident, and back-propagates into per-unit masks and/or the
// routed-expert weights only (router, attention, shared experts and embeddings stay frozen, but
// gradients flow through them). An expert a sample does not route to contributes 0 for that sample,
// which still counts in N. sampleGroup (empty = every sample in group 0) gives each sequence's
// group in [0, G); G = 1 + the largest group id, and every group must hold a sample. Throws
// InputError for sequences shorter than 2 tokens, bad offsets or groups, or token ids out of the
// vocabulary. progress is called after every sample (units: samples); a false return or a stop
// request throws Cancelled.
FisherResult computeFisher(const Checkpoint& checkpoint, const ModelSpec& spec, std::span<const int32_t> tokens,
    std::span<const int64_t> seqOffsets, std::span<const int> sampleGroup = {}, const FisherOptions& options = {},
    const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
