// The DeepSeek-style sigmoid router (glm4_moe; deepseek_v3 reuses it) on one token, in plain C++: the
// reference the engine's tensor code (model/blocks.cpp, moeForward) is tested against, and what scores,
// plans and the workbench use when they need the model's own routing decision from recorded logits.
//
//   s_i       = sigmoid(z_i)                         z = the raw router logits (what the atlas records)
//   c_i       = s_i + b_i                            b = e_score_correction_bias (selection only)
//   group g   = experts [g*E/G, (g+1)*E/G);  score(g) = sum of the two largest c_i in g
//   the topk_group groups of largest score are kept; c_i of the others -> -inf (as are pruned experts')
//   chosen    = the k largest c_i (ties: lower expert first)
//   w_i       = s_i (unbiased) for i in chosen, divided by (sum_chosen s + 1e-20) if norm_topk_prob,
//               times routed_scaling_factor
#pragma once

#include "checkpoint/model_spec.h"

#include <vector>

namespace moeatlas {

struct TokenRoute {
    std::vector<int> ids; // k experts, by decreasing choice score c
    std::vector<float> weights; // their routing weights, as the model mixes the expert outputs
};

// `logits` E raw logits; `bias` E entries or null (no correction); `kept` E flags or null (all kept): a
// pruned expert can be neither a group's top 2 nor chosen. `k` slots (the model's top-k or a top-k:K rule).
// Throws std::invalid_argument when fewer than k experts remain selectable.
TokenRoute sigmoidRoute(const RouterSpec& router, const float* logits, const float* bias, const bool* kept, int k);

} // namespace moeatlas
