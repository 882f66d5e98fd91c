// Gated DeltaNet, the linear attention of Qwen3.5-MoE's "linear_attention" layers, on LibTorch tensors
// (transformers' Qwen3_5MoeGatedDeltaNet without a cache: prefill of whole sequences). Engine-internal
// header (LibTorch types). Formulas: docs/methods.md, "Gated DeltaNet".
#pragma once

#include "checkpoint/model_spec.h"
#include "model/layer_weights.h"

#include <ATen/core/Tensor.h>

namespace moeatlas {

// transformers' chunk size for prefill.
constexpr int64_t kDeltaRuleChunk = 64;

// The gated delta rule over whole sequences, in its chunked (UT-transform) form. q, k: [B, S, nk, dk];
// v: [B, S, nv, dv] with nv a multiple of nk (each q/k head serves nv / nk consecutive value heads);
// g (log decay, <= 0) and beta: [B, S, nv]. q and k are L2-normalised per head and q scaled by
// 1 / sqrt(dk) inside; everything is computed in fp32 from a zero state. Returns [B, S, nv, dv] in
// q's dtype.
at::Tensor chunkGatedDeltaRule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    const at::Tensor& beta, int64_t chunk = kDeltaRuleChunk);

// The same rule token by token (the recurrence it is defined by): the second implementation the
// chunked form is checked against. Same arguments and result.
at::Tensor recurrentGatedDeltaRule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta);

// The whole linear-attention block for `numSeqs` sequences of equal length packed as x [numSeqs * S, H]
// (the layer's input norm already applied): projections, causal depthwise convolution + SiLU, the
// gates, the chunked delta rule, the gated RMSNorm and out_proj. Returns [numSeqs * S, H].
at::Tensor gatedDeltaNet(const ModelSpec& spec, const DeltaNetWeights& w, const at::Tensor& x, int64_t numSeqs);

} // namespace moeatlas
