// Forward computation of one decoder layer, written to match the transformers modeling files of
// the supported architectures operation by operation (same dtype casts, same reduction order
// where it matters). Engine-internal header (LibTorch types).
#pragma once

#include "checkpoint/model_spec.h"
#include "checkpoint/routing_rule.h"
#include "model/layer_weights.h"
#include "model/rope.h"

#include <ATen/core/Tensor.h>

namespace moeatlas {

// cos/sin tables [seqLen, headDim] in the compute dtype, HF layout (freqs concatenated twice).
struct RotaryCache {
    at::Tensor cos, sin;
    int64_t seqLen = 0;
};
RotaryCache buildRotaryCache(const ModelSpec& spec, int64_t seqLen, const at::TensorOptions& options);

at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Self-attention over `numSeqs` sequences of equal length packed as [numSeqs * seqLen, H]. With w.sinks
// (gpt_oss) each head's sink logit joins its softmax (in the scores' dtype) and is dropped after.
at::Tensor attention(const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs,
    const RotaryCache& rope, bool slidingWindow);

// What the router decided for a block of tokens, in fp32 on the CPU, ready for observers.
struct RoutingRecord {
    at::Tensor logits; // [N, E] float32, raw router logits computed in fp32
    at::Tensor topkIds; // [N, k] int32
    at::Tensor topkWeights; // [N, k] float32
    at::Tensor expertNorms; // [N, k] float32 (undefined unless requested)
};

struct MoeOptions {
    bool recordExpertNorms = false;
    // Expert mask for evaluation of pruning plans: [E] bool, true = kept. Undefined = all kept.
    at::Tensor keptExperts;
    // Speculative execution (runtime/speculative.h), with the model's own top-k only; at most one of the two.
    // speculativeLogits [N, E] (compute dtype): predicted router logits routed by the model's rule in place of the
    // layer's own (the mask above, fp32 softmax, top-k, renormalisation where the model has one).
    // speculativeIds [N, k] int64: the experts each token runs, weighted by the layer's own routing
    // probabilities of them (renormalised over the k where the model renormalises its top-k).
    at::Tensor speculativeLogits;
    at::Tensor speculativeIds;
    // Per-unit mask of the routed experts' intermediate activations: [E, I], multiplies
    // a = silu(gate x) * up x of expert e by row e before the down projection. Undefined = no mask
    // (the unmasked numerics). With requires_grad its gradient is the mask-form Fisher signal.
    at::Tensor unitMask;
    // Optional accumulator [E, I] float64 (CPU): each routed token adds |a| of the expert it is
    // routed to into that expert's row (before the unit mask). Statistics only, never recorded.
    at::Tensor unitActivationSum;
    // Routed experts cut to their kept units (sliceExperts), run instead of w.gateUp / w.down at the
    // reduced widths: the function of unitMask with the same kept units, at a fraction of the FLOPs.
    // Null = w's experts (w.ragged for a layer of a ragged checkpoint). unitMask and
    // unitActivationSum ([E, I], full width) go only with experts of full width (the Fisher pass's
    // per-expert weight leaves).
    const RaggedExperts* ragged = nullptr;
    // Per-token k (checkpoint/routing_rule.h); null = the model's top-k. `threshold`: the layer's
    // calibrated threshold of a Threshold rule.
    const RoutingRule* routing = nullptr;
    double threshold = 0.0;
    // When not null, receives the experts each token was routed to: [N] int64 on the CPU.
    at::Tensor* expertsUsed = nullptr;
    // Default vectors of expert prefetching (runtime/prefetch_capture.h): when defined, [E, H] float64 on x's
    // device; every routed (token, slot) pair whose token is set in expertOutputTokens ([N] bool, x's device)
    // adds its expert's output E_e(x) (before the routing weight, in float64) to row e. Statistics only.
    at::Tensor expertOutputSum;
    at::Tensor expertOutputTokens;
};

// The router logits of layer w for x ([N, H], compute dtype), computed as moeForward computes the logits it
// routes by (same dtype, same products): expert prefetching applies one layer's router to another's states.
at::Tensor routerLogits(const LayerWeights& w, const at::Tensor& x);

// The MoE block (router + routed experts + shared expert). gpt_oss (ModelSpec::router.softmaxAfterTopk,
// expertBias, clampedSwiglu): the router adds its bias, picks the top k of the logits and weights them by
// the softmax over those k; each expert computes x W + b, the clamped SwiGLU, then W_down + b_down. Tokens are grouped
// by expert and each expert runs once on its tokens (at its own width with options.ragged; a zero-width expert is
// skipped). With autograd recording (grad mode on, not inference mode) every block takes its plain path: the split
// paths write into buffers with out= ops autograd cannot record.
at::Tensor moeForward(const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, const MoeOptions& options,
    RoutingRecord* record);

// The dense SwiGLU MLP of non-MoE layers (and the shared expert).
at::Tensor denseMlp(const LayerWeights& w, const at::Tensor& x);

} // namespace moeatlas
