// The layer-streaming executor: runs a checkpoint over a token set one decoder layer at a time.
// For each layer it loads only that layer's weights (mmap -> compute dtype/device), pushes every
// sequence through it in micro-batches, keeps the hidden states and drops the layer, so peak
// memory is about one layer plus the activations whatever the model size.
// Public API: no LibTorch types.
#pragma once

#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"
#include "checkpoint/routing_rule.h"
#include "prefetch/prefetch_data.h"
#include "util/progress.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

// Expert prefetching recorded by run() (docs/methods.md, "Expert prefetching"): at every MoE layer l, the
// experts of the next `maxLookahead` MoE layers that each predictor would prefetch. Off when no predictor.
struct PrefetchOptions {
    std::vector<Predictor> predictors; // NextRouter, QuasiHidden, Linear, Mlp (runtime/prefetch_capture.h)
    int maxLookahead = 0; // in MoE layers, 1..3
    int budget = 0; // experts per prediction, best first
    std::vector<uint8_t> trainTokens; // [T]: 1 = a token of a training sequence (default vectors average these)
    bool enabled() const { return !predictors.empty(); }
    bool has(Predictor p) const { return std::find(predictors.begin(), predictors.end(), p) != predictors.end(); }
    bool learned() const { return has(Predictor::Linear) || has(Predictor::Mlp); }
};

// One block of predictions: for tokens [tokenBegin, tokenBegin + numTokens), the `budget` experts of MoE layer
// `targetLayer` (`lookahead` MoE layers after `layer`) predicted at MoE layer `layer`, best first.
struct PrefetchBlock {
    Predictor predictor = Predictor::NextRouter;
    int layer = 0; // decoder index of the source MoE layer
    int lookahead = 1;
    int targetLayer = 0; // decoder index of the predicted MoE layer
    int64_t tokenBegin = 0;
    int64_t numTokens = 0;
    int budget = 0;
    const int32_t* ids = nullptr; // [numTokens, budget]
};

// What predictions at later layers still need of the MoE layers run so far (a resumed run starts from it):
// for each of the last maxLookahead MoE layers, its post-attention residual stream h_l, with quasi-hidden
// its quasi-hidden state q_l, with a learned estimator its normed MoE input x_l ([T, H] fp32 each).
struct PrefetchState {
    std::vector<int> layers; // decoder indices, model order
    std::vector<std::vector<float>> hidden; // per layer [T, H]
    std::vector<std::vector<float>> quasi; // per layer [T, H]; empty vectors without quasi-hidden
    std::vector<std::vector<float>> features; // per layer [T, H]; empty vectors without linear / mlp
};

struct ExecutorOptions {
    std::string device = "cpu"; // "cpu", "cuda", "cuda:N"
    std::string computeDtype = "float32"; // "float32", "bfloat16", "float16"
    int64_t batchTokens = 8192; // tokens per micro-batch (whole sequences)
    int threads = 0; // intra-op threads; 0 = as the process is set (runtime/runtime_policy.h)
    bool recordExpertNorms = false;
    std::vector<int64_t> hiddenSampleTokens; // token indices whose MoE input is reported per MoE layer
    bool computeLogits = false; // final norm + lm_head at the end (tests, evaluation)
    bool keepWeightsResident = false; // load every layer once and keep it (small models)
    uint64_t memoryBudgetBytes = 0; // 0 = MemAvailable; plans above it are refused up front
    // evaluate(): dimension plans (ExpertMask::units) as a 0/1 mask on the activations at full width
    // instead of experts sliced to their kept units. Same function, full cost: the reference the
    // ragged path is tested and benchmarked against.
    bool maskedUnits = false;
    PrefetchOptions prefetch; // run() only
};

// Receives what the executor observes. Callbacks run on the executor's thread.
class ExecutionObserver {
public:
    virtual ~ExecutionObserver() = default;
    virtual void onRouterBlock(const RouterBlock& block) { (void)block; }
    // values: [tokenIndices.size(), hidden] fp32, the post-attention-norm input of the MoE block.
    virtual void onHiddenSamples(int layer, std::span<const int64_t> tokenIndices, std::span<const float> values)
    {
        (void)layer;
        (void)tokenIndices;
        (void)values;
    }
    // Called once a decoder layer has processed every token. `hidden` is the residual stream
    // after the layer ([T, H] fp32) when wantsHiddenSnapshots(), else empty.
    virtual void onLayerComplete(int layer, std::span<const float> hidden)
    {
        (void)layer;
        (void)hidden;
    }
    virtual bool wantsHiddenSnapshots() const { return false; }
    // Expert prefetching (ExecutorOptions::prefetch): predictions for a target MoE layer, made once its weights
    // are loaded, before its tokens run (so before onLayerComplete of the target).
    virtual void onPrefetchBlock(const PrefetchBlock& block) { (void)block; }
    // The default vectors of a MoE layer ([E, H] fp32) and the (token, slot) pairs each is the mean of ([E]),
    // before onLayerComplete of that layer (quasi-hidden only).
    virtual void onDefaultVectors(int layer, std::span<const float> values, std::span<const int64_t> counts)
    {
        (void)layer;
        (void)values;
        (void)counts;
    }
    // A learned estimator (linear, mlp) of MoE layer `layer` for lookahead `lookahead`, trained once the
    // target layer has routed every token (its predictions come through onPrefetchBlock just before).
    virtual void onLearnedEstimator(Predictor predictor, int layer, int lookahead, const AtlasLearnedEstimator& e)
    {
        (void)predictor;
        (void)layer;
        (void)lookahead;
        (void)e;
    }
    // The prefetch state after decoder layer `layer` (every layer), just before onLayerComplete(layer), when
    // wantsHiddenSnapshots(): what a resume after this layer continues from (ExecutionStart::prefetch).
    virtual void onPrefetchState(int layer, PrefetchState&& state)
    {
        (void)layer;
        (void)state;
    }
};

struct ExecutionResult {
    std::vector<float> logits; // [T, V] when computeLogits
    double seconds = 0.0;
    uint64_t peakLayerBytes = 0; // largest layer read from the checkpoint
};

// Speculative execution (docs/methods.md, "Speculative execution, evaluated"; decision 40): every MoE layer j
// that has a source MoE layer l = j - lookahead (counted in MoE layers) runs, for each token, the top-k experts
// `predictor` predicts for it at l instead of those its own router picks; the first `lookahead` MoE layers
// route as the model does. Predictions use the variant's own residual stream (errors compound).
// - next-router, quasi-hidden: predicted router logits, router_j(norm2_j(h_l)) or router_j(norm2_j(q_l)) with
//   q_l = h_l + sum over l's routed experts of w_e DV_l[e]; the model's rule runs on them (mask, fp32 softmax,
//   top-k, renormalised where the model renormalises).
// - linear, mlp, frequency, previous, oracle: expert ids only (the first k of the predictor's ranking among
//   the experts the variant keeps), weighted by layer j's own routing probabilities of them, renormalised
//   where the model renormalises its top-k. Oracle is therefore the unmodified model.
// h_l: layer l's residual stream after attention (the MoE block's input before its pre-MoE norm).
struct SpeculativeExecution {
    Predictor predictor = Predictor::Oracle;
    int lookahead = 1; // in MoE layers, >= 1, less than the number of MoE layers
    // frequency: per target MoE layer (decoder index), its experts ranked by how many training tokens were
    // routed to them (frequencyOrder, prefetch_derived.h). `previous` runs, at a sequence's first token (no
    // previous token), the token's own routing.
    std::map<int, std::vector<int32_t>> frequencyOrder;
    // quasi-hidden: per source MoE layer (decoder index), DV_l as [E * H] (row e = expert e's default vector).
    std::map<int, std::vector<float>> defaultVectors;
    // linear, mlp: per source MoE layer (decoder index), its estimator for `lookahead` as the atlas stores it.
    std::map<int, AtlasLearnedEstimator> estimators;
    // "<predictor>" for lookahead 1, else "<predictor>:<lookahead>".
    std::string name() const
    {
        return predictorName(predictor) + (lookahead == 1 ? std::string() : ":" + std::to_string(lookahead));
    }
};

// A model variant for evaluation: the routed experts each MoE layer keeps. The router of a masked
// layer gives the dropped experts -inf before its softmax, so it renormalises over the kept ones
// exactly as the router of the pruned (exported) checkpoint does (the same function; computed with
// other GEMM shapes, the two agree up to the order of fp32 sums).
struct ExpertMask {
    std::string name;
    std::map<int, std::vector<int>> keep; // decoder layer -> kept expert ids; absent layers keep all
    // Dimension pruning: decoder layer -> for every routed expert e (original numbering, numExperts
    // entries) its kept intermediate units, sorted, in [0, moeIntermediate); an empty list is a
    // zero-width expert (it contributes nothing, but the router still weighs it). Absent layers keep
    // every unit. Executed directly: each routed expert runs with only its kept gate/up rows and
    // down columns (sliced once per layer and variant), unless ExecutorOptions::maskedUnits.
    std::map<int, std::vector<std::vector<int>>> units;
    // How many experts each token is routed to (checkpoint/routing_rule.h); the model's own top-k by
    // default. A Threshold rule needs its thresholds (calibrateThresholds in metrics/routing_rule_stats.h).
    RoutingRule routing;
    // Speculative execution (below); none by default. Needs the model's own routing rule.
    std::optional<SpeculativeExecution> speculative;
};

struct VariantOutput {
    // Next-token negative log-likelihood per token in nats: tokenNll[t] = -log p(tokens[t+1] | ..t)
    // within t's sequence; NaN at the last token of every sequence (nothing to predict).
    std::vector<float> tokenNll;
    std::vector<float> logits; // [T, V] fp32 when asked for (tests, small runs), else empty
    // Experts each token was routed to in each MoE layer: [numMoeLayers, T], MoE layers in model order.
    std::vector<uint16_t> expertsUsed;
    // Speculative variants with keepLogits: per speculated MoE layer (decoder index), the [T, k] experts each
    // token ran (the prediction), slot order. Empty otherwise.
    std::map<int, std::vector<int32_t>> speculatedIds;
};

struct EvaluationResult {
    std::vector<VariantOutput> variants; // in the order given
    double seconds = 0.0;
    uint64_t peakLayerBytes = 0;
};

// Where a run starts: from the embeddings, or (resume) after `completedLayers` layers with the
// residual stream saved then.
struct ExecutionStart {
    int firstLayer = 0;
    std::vector<float> hidden; // [T, H] fp32; empty when firstLayer == 0
    PrefetchState prefetch; // with ExecutorOptions::prefetch: as onPrefetchState gave it after firstLayer - 1
};

class Executor {
public:
    // Validates the checkpoint against the spec (every tensor of every layer, shapes, dtypes)
    // and the options (device available, dtype known); throws InputError naming what is wrong.
    Executor(const Checkpoint& checkpoint, const ModelSpec& spec, ExecutorOptions options);
    ~Executor();

    // Runs the token set through the model. Sequences are [seqOffsets[i], seqOffsets[i+1]).
    // progress is called after every micro-batch (units: tokens x layers); a false return or a
    // stop request throws Cancelled before the current layer is reported complete.
    ExecutionResult run(std::span<const int32_t> tokens, std::span<const int64_t> seqOffsets,
        ExecutionObserver& observer, const ExecutionStart& start = {}, const ProgressFn& progress = {},
        const StopToken* stop = nullptr);

    // Runs the token set through every variant at once: each layer is loaded once and applied to
    // each variant's residual stream, so V variants cost V forward passes but one weight stream.
    // progress units: tokens x layers x variants. Throws InputError for a mask naming a layer
    // without router or an expert out of range, keeping fewer experts than the router's top-k, or
    // unit lists of the wrong count, unsorted, out of range or on a layer of a ragged checkpoint
    // (whose experts already have their own widths).
    EvaluationResult evaluate(std::span<const int32_t> tokens, std::span<const int64_t> seqOffsets,
        std::span<const ExpertMask> variants, bool keepLogits = false, const ProgressFn& progress = {},
        const StopToken* stop = nullptr);

    // Bytes the run would hold at its peak (hidden states + one layer + activations).
    uint64_t plannedPeakBytes(int64_t numTokens, int64_t longestSequence) const;
    // The memory check run() makes first, for callers that create outputs before running: throws the
    // same InputError (the plan's numbers) when run() over these sequences would be refused.
    void checkRunMemory(std::span<const int64_t> seqOffsets) const;
    // The same for evaluate() with `numVariants` residual streams; `dimensionPlans`: some variant has
    // unit lists, so one layer's routed experts are also held sliced (at most their full size).
    uint64_t plannedEvaluationBytes(int64_t numTokens, int64_t longestSequence, int numVariants,
        bool keepLogits = false, bool dimensionPlans = false) const;
    // How many variants one evaluate() call can hold within the memory budget (0: not even one).
    int variantsThatFit(
        int64_t numTokens, int64_t longestSequence, bool keepLogits = false, bool dimensionPlans = false) const;
    std::string deviceName() const;

private:
    // plannedPeakBytes without the output logits (the residual stream, one layer, activations).
    uint64_t plannedForwardBytes(int64_t numTokens, int64_t longestSequence) const;
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

// MemAvailable of /proc/meminfo (0 when unknown): the default memory budget of a run.
uint64_t availableMemoryBytes();

// True when this LibTorch build can run on CUDA and a device is present.
bool cudaAvailable();

} // namespace moeatlas
