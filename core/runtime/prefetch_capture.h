// Expert prefetching recorded by the layer-streaming executor (docs/methods.md, "Expert prefetching"): at every
// MoE layer l, the experts of the next MoE layers j = l + d (d = 1..maxLookahead, counted in MoE layers) that
//   next-router:  top-B of softmax(router_j(norm2_j(h_l)))
//   quasi-hidden: top-B of softmax(router_j(norm2_j(q_l))),  q_l = h_l + sum_{e in S_l} w_e DV_l[e]
// would prefetch, h_l being layer l's residual stream after attention (the MoE block's input before its
// pre-MoE norm), S_l / w_e layer l's routed experts and weights, DV_l[e] the mean output of expert e over the
// training tokens routed to it at layer l (measured while layer l runs). Layers stream, so layer j's norm and
// router exist only while j runs: the recorder keeps h_l (and q_l) of the last maxLookahead MoE layers and
// predicts for j from all of them when j's weights are loaded. The learned estimators (linear, mlp;
// runtime/prefetch_estimator.h) of every held l for j are trained once j has routed every token, on layer l's
// normed MoE input and j's routed experts over the training split. Engine-internal header (LibTorch types).
#pragma once

#include "model/blocks.h"
#include "runtime/executor.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <deque>

namespace moeatlas {

class PrefetchRecorder {
public:
    // `start`: the state a resumed run continues from (empty for a run from the embeddings).
    PrefetchRecorder(const ModelSpec& spec, const PrefetchOptions& options, int64_t numTokens, int64_t rowsPerChunk,
        const at::TensorOptions& compute, const PrefetchState& start);

    bool enabled() const { return m_options.enabled(); }

    // Layer `layer`'s weights are loaded: for a MoE layer, predicts its experts from every held source layer
    // within the lookahead (observer.onPrefetchBlock) and prepares to record the layer as a source.
    void beginLayer(const LayerWeights& w, ExecutionObserver& observer, const StopToken* stop);
    // The MoE options of one micro-batch of the current layer: the default-vector sums (quasi-hidden).
    void prepareBatch(MoeOptions& moe, int64_t tokenBegin, int64_t numTokens) const;
    // A micro-batch of the current MoE layer has run: its post-attention residual rows, its MoE input (after the
    // pre-MoE norm) and routing.
    void afterBatch(
        int64_t tokenBegin, const at::Tensor& postAttention, const at::Tensor& moeInput, const RoutingRecord& record);
    // Every token of decoder layer `layer` has run: for a MoE layer its default vectors, q_l and the held
    // layers; then, when `snapshot`, the state a resume needs (observer.onPrefetchState), after every layer.
    void endLayer(int layer, ExecutionObserver& observer, bool snapshot, const StopToken* stop);

    // Bytes the recorder holds at its peak (for the executor's memory plan).
    static uint64_t plannedBytes(const ModelSpec& spec, const PrefetchOptions& options, int64_t numTokens,
        int64_t rowsPerChunk, uint64_t elementSize);

private:
    struct Source {
        int layer = 0; // decoder index
        int moeIndex = 0; // position among the MoE layers
        at::Tensor hidden; // [T, H] compute dtype: h_l
        at::Tensor quasi; // [T, H] compute dtype: q_l (quasi-hidden only)
        at::Tensor features; // [T, H] compute dtype: norm2_l(h_l) (linear, mlp only)
    };
    void trainLearned(const Source& source, int lookahead, ExecutionObserver& observer, const StopToken* stop);
    void predict(const LayerWeights& w, const Source& source, Predictor predictor, const at::Tensor& states,
        ExecutionObserver& observer, const StopToken* stop) const;
    void formQuasiHidden(Source& source, ExecutionObserver& observer);
    void endMoeLayer(ExecutionObserver& observer, const StopToken* stop);

    const ModelSpec& m_spec;
    PrefetchOptions m_options;
    int64_t m_tokens;
    int64_t m_rowsPerChunk;
    at::TensorOptions m_compute;
    std::vector<int> m_moeLayers;
    at::Tensor m_trainTokens; // [T] bool, compute device
    std::deque<Source> m_sources; // the last maxLookahead MoE layers, oldest first

    // The current layer (a MoE layer being recorded as a source), between beginLayer and endLayer.
    int m_layer = -1;
    Source m_current;
    at::Tensor m_ids; // [T, k] int64 CPU
    at::Tensor m_weights; // [T, k] float32 CPU
    at::Tensor m_outputSum; // [E, H] float64, compute device
};

} // namespace moeatlas
