// Speculative execution of one evaluated variant (runtime/executor.h, SpeculativeExecution; docs/methods.md,
// "Speculative execution, evaluated"): layer j = l + d runs the experts predicted at MoE layer l. Layers stream,
// so the runner keeps, per variant, what the last d MoE layers leave for the predictions (h_l, q_l or the normed
// MoE input, [T, H] each) and forms layer j's prediction when j runs. Engine-internal header (LibTorch types).
#pragma once

#include "model/blocks.h"
#include "runtime/executor.h"
#include "runtime/prefetch_estimator.h"

#include <ATen/core/Tensor.h>

#include <deque>
#include <map>
#include <string>

namespace moeatlas {

class SpeculativeRunner {
public:
    // Checks the options against the model (RequestError "speculative" naming the variant: a routing rule, a
    // lookahead outside [1, MoE layers), a missing or misshapen frequency order, default vectors or estimator).
    SpeculativeRunner(const ModelSpec& spec, const SpeculativeExecution& options, const std::string& variant,
        int64_t numTokens, const at::TensorOptions& compute, bool keepIds);

    // Decoder layer w over the micro-batch of tokens [tokenBegin, tokenBegin + numSeqs * seqLen) (numSeqs
    // sequences of seqLen tokens): the residual stream after it, as the executor's decoder layer computes it,
    // with the speculated routing in a MoE layer that has a source. `moe`: the variant's options for the layer.
    at::Tensor decoderLayer(const LayerWeights& w, const at::Tensor& x, int64_t tokenBegin, int64_t numSeqs,
        int64_t seqLen, const RotaryCache& rope, bool sliding, const MoeOptions& moe);
    // Every token of decoder layer `layer` has run: a MoE layer becomes a source for the layers after it.
    void endLayer(int layer);

    // keepIds: the experts each token ran in every speculated MoE layer ([T, k] per decoder index).
    std::map<int, std::vector<int32_t>> takeSpeculatedIds() { return std::move(m_speculated); }
    // [T, H] states held per variant at most (for memory plans): the lookahead.
    static int heldStates(const SpeculativeExecution& options) { return options.lookahead; }

private:
    struct Source {
        int moeIndex = 0;
        at::Tensor state; // [T, H] compute dtype: h_l (next-router), q_l (quasi-hidden), norm2_l(h_l) (learned)
    };
    // The experts and weights layer w's own router gives hn ([n, k] int64 and fp32, renormalised as the model).
    std::pair<at::Tensor, at::Tensor> ownRouting(
        const LayerWeights& w, const at::Tensor& hn, const MoeOptions& moe) const;
    // The first k experts of `scores` ([n, E] float) per token among the kept ones, best first (ties: lower id).
    at::Tensor topKept(const at::Tensor& scores, const MoeOptions& moe) const;

    const ModelSpec& m_spec;
    SpeculativeExecution m_options;
    int64_t m_tokens;
    at::TensorOptions m_compute;
    bool m_keepIds;
    std::vector<int> m_moeLayers;
    std::map<int, at::Tensor> m_defaultVectors; // quasi-hidden: [E, H] fp32 on the device, per source layer
    std::map<int, TrainedEstimator> m_estimators; // linear, mlp: per source layer, on the device
    std::map<int, at::Tensor> m_frequency; // [E] int64 on the device, per target layer
    std::deque<Source> m_sources; // the last `lookahead` MoE layers, oldest first
    Source m_current; // the MoE layer running, as a source
    std::map<int, std::vector<int32_t>> m_speculated;
};

} // namespace moeatlas
