// config.json of the DeepSeek family's router users, as transformers 5.x reads them: glm4_moe (GLM-4.5/4.6).
// deepseek_v3 shares the router and the shared experts (ModelSpec::router.score == Sigmoid) but has MLA
// attention, which the engine does not run yet: architectureOf refuses it by name.
#include "checkpoint/config_reader.h"
#include "checkpoint/model_spec.h"

namespace moeatlas {

namespace {

// The DeepSeek router's keys (Glm4MoeTopkRouter / DeepseekV3TopkRouter): sigmoid scores, the selection-only
// e_score_correction_bias, group-limited top-k, norm_topk_prob (default true), routed_scaling_factor.
void parseSigmoidRouter(const ConfigReader& cfg, ModelSpec& s)
{
    RouterSpec& r = s.router;
    r.numExperts = static_cast<int>(cfg.positiveAnyOf({ "n_routed_experts", "num_local_experts" }));
    r.score = RouterScore::Sigmoid;
    r.correctionBias = true;
    r.normTopkProb = cfg.boolean("norm_topk_prob", true);
    r.scalingFactor = cfg.number("routed_scaling_factor", 1.0);
    if (!(r.scalingFactor > 0.0))
        cfg.fail("routed_scaling_factor", "must be > 0");
    r.numGroups = static_cast<int>(cfg.integer("n_group", 1));
    r.topkGroup = static_cast<int>(cfg.integer("topk_group", 1));
    if (r.numGroups <= 0 || r.numExperts % r.numGroups != 0)
        cfg.fail("n_group",
            "is " + std::to_string(r.numGroups) + " (expected a divisor of n_routed_experts, "
                + std::to_string(r.numExperts) + ")");
    // transformers scores a group by the sum of its two largest scores: a group needs two experts.
    if (r.numGroups > 1 && r.groupSize() < 2)
        cfg.fail("n_group",
            "is " + std::to_string(r.numGroups) + " (expected groups of at least 2 of the "
                + std::to_string(r.numExperts) + " experts: a group's score is the sum of its top 2)");
    if (r.topkGroup <= 0 || r.topkGroup > r.numGroups)
        cfg.fail("topk_group",
            "is " + std::to_string(r.topkGroup) + " (expected 1..n_group = " + std::to_string(r.numGroups) + ")");
    if (static_cast<int64_t>(r.topkGroup) * r.groupSize() < r.topK)
        cfg.fail("topk_group",
            "(" + std::to_string(r.topkGroup) + " groups of " + std::to_string(r.groupSize())
                + " experts) leaves fewer experts than num_experts_per_tok (" + std::to_string(r.topK) + ")");
}

} // namespace

void parseGlm4Moe(const ConfigReader& cfg, ModelSpec& s)
{
    parseSigmoidRouter(cfg, s);
    s.moeIntermediate = cfg.positive("moe_intermediate_size");
    // Glm4MoeMLP(intermediate_size = moe_intermediate_size * n_shared_experts), added without a gate.
    const int64_t shared = cfg.integer("n_shared_experts", 1);
    if (shared <= 0)
        cfg.fail("n_shared_experts", "must be >= 1, got " + std::to_string(shared));
    s.sharedIntermediate = s.moeIntermediate * shared;
    s.sharedExpertsPlural = true;
    s.qkvBias = cfg.boolean("attention_bias", false); // q, k, v only: o_proj has none
    s.qkNorm = cfg.boolean("use_qk_norm", false) ? QkNorm::PerHead : QkNorm::None;
    s.rmsNormEps = cfg.number("rms_norm_eps", 1e-5);
    if (cfg.has("moeatlas_expert_widths"))
        cfg.fail("moeatlas_expert_widths", "is not supported for glm4_moe (no ragged glm4_moe checkpoints)");
    const int64_t dense = cfg.integer("first_k_dense_replace", 1);
    if (dense < 0 || dense > s.numLayers)
        cfg.fail("first_k_dense_replace",
            "is " + std::to_string(dense) + " (expected 0..num_hidden_layers = " + std::to_string(s.numLayers) + ")");
    s.layers.resize(static_cast<std::size_t>(s.numLayers));
    for (int i = 0; i < s.numLayers; ++i) {
        LayerSpec& l = s.layers[static_cast<std::size_t>(i)];
        l.moe = i >= dense;
        if (!l.moe)
            l.denseIntermediate = cfg.positive("intermediate_size");
    }
}

} // namespace moeatlas
