// Private to core/model: what the softmax attention variants share -- the GQA / gated / sink attention of
// blocks.cpp and the multi-head latent attention of mla_attention.cpp. Include only from .cpp files that
// already include ATen.
#pragma once

#include "checkpoint/model_spec.h"
#include "model/blocks.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace moeatlas::detail {

// [x1; x2] -> [-x2; x1] on the last dimension (transformers' rotate_half).
at::Tensor rotateHalf(const at::Tensor& x);

// Additive mask [S, S]: 0 where key j is visible from query i, the dtype's lowest value elsewhere.
at::Tensor causalMask(int64_t seqLen, std::optional<int64_t> window, const at::TensorOptions& options);

// softmax(q k^T * scale + mask) v for every sequence and head, the softmax in fp32 (or with sinks, gpt_oss:
// [heads] logits, in the scores' dtype), as transformers' eager attention. q, k: [B, heads, S, dq], v: [B,
// heads, S, dv] (dv may differ from dq); returns the context [B * S, heads * dv] in q's dtype, heads
// concatenated per token. Sequences (and groups of heads) run in parallel when the blocks split their work.
at::Tensor attendHeads(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
    const at::Tensor& mask, const at::Tensor& sinks);

// deepseek_v3's multi-head latent attention (ModelSpec::mla, DeepseekV3Attention) on [numSeqs * seqLen, H].
at::Tensor mlaAttention(
    const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs, const RotaryCache& rope);

} // namespace moeatlas::detail
