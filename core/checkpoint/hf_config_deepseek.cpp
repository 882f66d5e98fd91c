// config.json of the DeepSeek family, as transformers 5.x reads it: glm4_moe (GLM-4.5/4.6) and deepseek_v3
// (DeepSeek-V3/R1, Kimi-K2). Both have the sigmoid router (ModelSpec::router.score == Sigmoid), ungated shared
// experts and a dense prefix; deepseek_v3 has multi-head latent attention (ModelSpec::mla) instead of GQA.
#include "checkpoint/config_reader.h"
#include "checkpoint/model_spec.h"

#include <string>

namespace moeatlas {

namespace {

// Where the two configuration classes differ in their defaults (Glm4MoeConfig, DeepseekV3Config).
struct FamilyDefaults {
    const char* name;
    double scalingFactor;
    int numGroups;
    int topkGroup;
    int64_t denseLayers;
};
constexpr FamilyDefaults kGlm4Moe { "glm4_moe", 1.0, 1, 1, 1 };
constexpr FamilyDefaults kDeepseekV3 { "deepseek_v3", 2.5, 8, 4, 3 };

// The DeepSeek router's keys (Glm4MoeTopkRouter / DeepseekV3TopkRouter): sigmoid scores, the selection-only
// e_score_correction_bias, group-limited top-k, norm_topk_prob (default true), routed_scaling_factor.
void parseSigmoidRouter(const ConfigReader& cfg, ModelSpec& s, const FamilyDefaults& d)
{
    RouterSpec& r = s.router;
    r.numExperts = static_cast<int>(cfg.positiveAnyOf({ "n_routed_experts", "num_local_experts" }));
    r.score = RouterScore::Sigmoid;
    r.correctionBias = true;
    r.normTopkProb = cfg.boolean("norm_topk_prob", true);
    r.scalingFactor = cfg.number("routed_scaling_factor", d.scalingFactor);
    if (!(r.scalingFactor > 0.0))
        cfg.fail("routed_scaling_factor", "must be > 0");
    r.numGroups = static_cast<int>(cfg.integer("n_group", d.numGroups));
    r.topkGroup = static_cast<int>(cfg.integer("topk_group", d.topkGroup));
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

// The routed and shared experts and the dense prefix: an MLP of moe_intermediate_size * n_shared_experts added
// without a gate; the first first_k_dense_replace layers dense MLPs of intermediate_size, the rest MoE.
void parseExpertsAndLayers(const ConfigReader& cfg, ModelSpec& s, const FamilyDefaults& d)
{
    parseSigmoidRouter(cfg, s, d);
    s.moeIntermediate = cfg.positive("moe_intermediate_size");
    const int64_t shared = cfg.integer("n_shared_experts", 1);
    if (shared <= 0)
        cfg.fail("n_shared_experts", "must be >= 1, got " + std::to_string(shared));
    s.sharedIntermediate = s.moeIntermediate * shared;
    s.sharedExpertsPlural = true;
    if (cfg.has("moeatlas_expert_widths"))
        cfg.fail("moeatlas_expert_widths",
            std::string("is not supported for ") + d.name + " (no ragged " + d.name + " checkpoints)");
    const int64_t dense = cfg.integer("first_k_dense_replace", d.denseLayers);
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

// A dimension of the MLA attention: DeepseekV3Config's default when absent; null is refused (the attention
// cannot be built without it).
int64_t mlaDimension(const ConfigReader& cfg, const char* key, int64_t fallback)
{
    if (cfg.raw().contains(key) && cfg.raw().at(key).is_null())
        cfg.fail(key, "is null (expected an integer > 0)");
    const int64_t v = cfg.integer(key, fallback);
    if (v <= 0)
        cfg.fail(key, "must be > 0, got " + std::to_string(v));
    return v;
}

// DeepseekV3Attention's keys (MlaSpec). head_dim is qk_rope_head_dim, as DeepseekV3Config.__post_init__ sets it
// (a head_dim in config.json is overwritten there, and ignored here); qk_head_dim is derived likewise.
void parseMla(const ConfigReader& cfg, ModelSpec& s)
{
    MlaSpec& m = s.mla;
    // q_lora_rank null: q_proj; absent: DeepseekV3Config's 1536.
    const bool noQLora = cfg.raw().contains("q_lora_rank") && cfg.raw().at("q_lora_rank").is_null();
    m.qLoraRank = noQLora ? 0 : mlaDimension(cfg, "q_lora_rank", 1536);
    m.kvLoraRank = mlaDimension(cfg, "kv_lora_rank", 512);
    m.qkNopeHeadDim = mlaDimension(cfg, "qk_nope_head_dim", 128);
    m.qkRopeHeadDim = mlaDimension(cfg, "qk_rope_head_dim", 64);
    m.vHeadDim = mlaDimension(cfg, "v_head_dim", 128);
    if (m.qkRopeHeadDim % 2 != 0)
        cfg.fail("qk_rope_head_dim",
            "is " + std::to_string(m.qkRopeHeadDim) + " (expected an even number: RoPE turns pairs)");
    m.ropeInterleave = cfg.boolean("rope_interleave", true);
    m.attentionBias = cfg.boolean("attention_bias", false);
    // kv_b_proj gives every query head its own key and value; transformers' attention would repeat them again by
    // num_attention_heads / num_key_value_heads and fail on any other count.
    if (s.numKvHeads != s.numHeads)
        cfg.fail("num_key_value_heads",
            "is " + std::to_string(s.numKvHeads) + " (expected num_attention_heads = " + std::to_string(s.numHeads)
                + ": multi-head latent attention expands keys and values for every query head)");
    s.headDim = m.qkRopeHeadDim;
    // YaRN's softmax correction (DeepseekV3Attention: yarn_apply_mscale) reads rope_parameters["factor"].
    const char* field = cfg.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
    if (s.rope.type == "yarn") {
        const nlohmann::json& p = cfg.raw().at(field);
        if (!p.contains("factor") || !p.at("factor").is_number())
            cfg.fail(std::string(field) + ".factor", "is required for rope_type 'yarn' (expected a number >= 1)");
    }
}

} // namespace

void parseGlm4Moe(const ConfigReader& cfg, ModelSpec& s)
{
    parseExpertsAndLayers(cfg, s, kGlm4Moe);
    s.qkvBias = cfg.boolean("attention_bias", false); // q, k, v only: o_proj has none
    s.qkNorm = cfg.boolean("use_qk_norm", false) ? QkNorm::PerHead : QkNorm::None;
    s.rmsNormEps = cfg.number("rms_norm_eps", 1e-5);
}

void parseDeepseekV3(const ConfigReader& cfg, ModelSpec& s)
{
    parseExpertsAndLayers(cfg, s, kDeepseekV3);
    parseMla(cfg, s);
}

} // namespace moeatlas
