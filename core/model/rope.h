// Rotary position embedding tables (inverse frequencies and the attention scaling that
// multiplies cos/sin), computed as transformers' modeling_rope_utils does for each rope_type.
#pragma once

#include "checkpoint/model_spec.h"

#include <vector>

namespace moeatlas {

struct RopeTables {
    std::vector<float> invFreq; // [rotaryDim / 2]
    float attentionScaling = 1.0f; // cos and sin are multiplied by this
    int64_t rotaryDim = 0; // head_dim * partial_rotary_factor
};

// `seqLen` matters only for "dynamic" (NTK) scaling, which changes the base once a sequence is
// longer than max_position_embeddings.
RopeTables computeRopeTables(const ModelSpec& spec, int64_t seqLen);

// deepseek_v3's softmax correction (DeepseekV3Attention, yarn_apply_mscale): for any rope type but "default"
// with a non-zero mscale_all_dim, 0.1 * mscale_all_dim * ln(factor) + 1 (1 when factor <= 1); else 1. The
// attention multiplies 1/sqrt(qk_head_dim) by it twice.
double mlaSoftmaxMscale(const RopeSpec& rope);

} // namespace moeatlas
