#include "checkpoint/hf_config.h"

#include "checkpoint/config_reader.h"
#include "checkpoint/fp8.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace moeatlas {

namespace {

using nlohmann::json;

Architecture architectureOf(const std::string& modelType, const std::string& source)
{
    if (modelType == "mixtral")
        return Architecture::Mixtral;
    if (modelType == "qwen2_moe")
        return Architecture::Qwen2Moe;
    if (modelType == "qwen3_moe")
        return Architecture::Qwen3Moe;
    if (modelType == "olmoe")
        return Architecture::Olmoe;
    if (modelType == "gpt_oss")
        return Architecture::GptOss;
    if (modelType == "qwen3_5_moe" || modelType == "qwen3_5_moe_text")
        return Architecture::Qwen3_5Moe;
    if (modelType == "glm4_moe")
        return Architecture::Glm4Moe;
    if (modelType == "deepseek_v3")
        return Architecture::DeepseekV3;
    if (modelType == "deepseek_v2")
        throw InputError(source
            + ": field 'model_type' is 'deepseek_v2': its softmax router with group-limited "
              "greedy selection is not implemented (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, "
              "gpt_oss, qwen3_5_moe, glm4_moe, deepseek_v3)");
    throw InputError(source + ": field 'model_type' is '" + modelType
        + "', which MoE Atlas does not support (supported: mixtral, qwen2_moe, "
          "qwen3_moe, olmoe, gpt_oss, qwen3_5_moe, glm4_moe, deepseek_v3)");
}

// The architectures other than Qwen3.5-MoE rotate the whole head (their attention, like transformers',
// multiplies q and k by tables of the full head width); a partial rotary factor would fail mid-run.
// Qwen3.5-MoE turns the first head_dim * factor dimensions (`partialAllowed`).
RopeSpec checkedRotaryFactor(
    const RopeSpec& rope, const std::string& source, const std::string& field, bool partialAllowed)
{
    if (partialAllowed) {
        if (!(rope.partialRotaryFactor > 0.0 && rope.partialRotaryFactor <= 1.0))
            throw InputError(source + ": field '" + field + "' is " + json(rope.partialRotaryFactor).dump()
                + " (expected a value in (0, 1])");
        return rope;
    }
    if (rope.partialRotaryFactor != 1.0)
        throw InputError(source + ": field '" + field + "' is " + json(rope.partialRotaryFactor).dump()
            + " (expected 1.0: the supported architectures rotate the whole head)");
    return rope;
}

// `defaultRotaryFactor`: what transformers assumes when the config names none (Qwen3.5-MoE: 0.25);
// `partialAllowed`: whether the architecture's attention rotates only part of the head.
RopeSpec parseRope(
    const ConfigReader& cfg, const std::string& source, double defaultRotaryFactor = 1.0, bool partialAllowed = false)
{
    // v5 writes rope_parameters {rope_type, rope_theta, ...}; hub configs write rope_theta at the
    // top level and an optional rope_scaling {type|rope_type, factor, ...}.
    RopeSpec rope;
    rope.theta = cfg.number("rope_theta", 10000.0);
    rope.partialRotaryFactor = cfg.number("partial_rotary_factor", defaultRotaryFactor);
    const json* params = nullptr;
    if (cfg.has("rope_parameters"))
        params = &cfg.raw().at("rope_parameters");
    else if (cfg.has("rope_scaling"))
        params = &cfg.raw().at("rope_scaling");
    if (!params)
        return checkedRotaryFactor(rope, source, "partial_rotary_factor", partialAllowed);
    if (!params->is_object())
        throw InputError(source + ": field 'rope_parameters' must be an object, got " + params->dump());
    const std::string field = cfg.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
    ConfigReader p(*params, source + " (" + field + ")");
    rope.type = p.string("rope_type", p.string("type", "default"));
    rope.theta = p.number("rope_theta", rope.theta);
    rope.factor = p.number("factor", 1.0);
    rope.partialRotaryFactor = p.number("partial_rotary_factor", rope.partialRotaryFactor);
    rope.originalMaxPositionEmbeddings = p.integer("original_max_position_embeddings", 0);
    if (p.has("attention_factor"))
        rope.attentionFactor = p.number("attention_factor", 1.0);
    rope.mscale = p.number("mscale", 0.0);
    rope.mscaleAllDim = p.number("mscale_all_dim", 0.0);
    rope.betaFast = p.number("beta_fast", 32.0);
    rope.betaSlow = p.number("beta_slow", 1.0);
    rope.truncate = p.boolean("truncate", true);
    rope.lowFreqFactor = p.number("low_freq_factor", 1.0);
    rope.highFreqFactor = p.number("high_freq_factor", 4.0);
    static const char* kSupported[] = { "default", "linear", "dynamic", "yarn", "llama3" };
    if (std::find_if(std::begin(kSupported), std::end(kSupported), [&](const char* s) { return rope.type == s; })
        == std::end(kSupported))
        throw InputError(source + ": field '" + field + ".rope_type' is '" + rope.type
            + "' (supported: default, linear, dynamic, yarn, llama3)");
    if ((rope.type == "yarn" || rope.type == "llama3") && rope.originalMaxPositionEmbeddings <= 0)
        throw InputError(source + ": field '" + field + ".original_max_position_embeddings' is required for rope_type '"
            + rope.type + "'");
    return checkedRotaryFactor(rope, source,
        p.has("partial_rotary_factor") ? field + ".partial_rotary_factor" : std::string("partial_rotary_factor"),
        partialAllowed);
}

// The keys our exporter adds to a ragged export (docs/plans.md): moeatlas_expert_widths, one entry per
// decoder layer (the routed experts' widths, null for a dense layer), and num_experts_per_layer when
// layers keep different numbers of experts, which the engine does not run (every layer's router must
// have the config's expert count).
void parseRaggedExperts(const ConfigReader& cfg, ModelSpec& s)
{
    const auto perLayer = [&](const char* key) -> const json* {
        if (!cfg.has(key))
            return nullptr;
        const json& v = cfg.raw().at(key);
        if (!v.is_array() || static_cast<int>(v.size()) != s.numLayers)
            cfg.fail(key, "must be a list of num_hidden_layers (" + std::to_string(s.numLayers) + ") entries");
        return &v;
    };
    if (const json* counts = perLayer("num_experts_per_layer"))
        for (int i = 0; i < s.numLayers; ++i) {
            const json& c = (*counts)[static_cast<std::size_t>(i)];
            const int64_t want = s.layers[static_cast<std::size_t>(i)].moe ? s.router.numExperts : 0;
            if (!c.is_number_integer() || c.get<int64_t>() != want)
                cfg.fail("num_experts_per_layer",
                    "gives layer " + std::to_string(i) + " " + c.dump() + " routed experts, expected "
                        + std::to_string(want)
                        + (want > 0 ? " (the engine runs only checkpoints whose MoE layers all have the config's "
                                      "expert count)"
                                    : " (a dense layer)"));
        }
    const json* widths = perLayer("moeatlas_expert_widths");
    if (!widths)
        return;
    for (int i = 0; i < s.numLayers; ++i) {
        const json& w = (*widths)[static_cast<std::size_t>(i)];
        LayerSpec& l = s.layers[static_cast<std::size_t>(i)];
        const std::string where = "entry " + std::to_string(i) + " ";
        if (!l.moe) {
            if (!w.is_null())
                cfg.fail("moeatlas_expert_widths", where + "must be null (layer " + std::to_string(i) + " is dense)");
            continue;
        }
        if (!w.is_array() || static_cast<int64_t>(w.size()) != s.router.numExperts)
            cfg.fail("moeatlas_expert_widths",
                where + "must list the widths of the layer's " + std::to_string(s.router.numExperts)
                    + " routed experts, got " + w.dump());
        for (const json& e : w) {
            if (!e.is_number_integer() || e.get<int64_t>() < 0)
                cfg.fail("moeatlas_expert_widths", where + "holds " + e.dump() + " (expected widths >= 0)");
            l.expertWidths.push_back(e.get<int64_t>());
        }
    }
}

// gpt_oss (transformers' GptOssConfig): every layer MoE; router Linear with bias, top-k on the logits
// then softmax over the k; experts with biases and the clamped SwiGLU; attention biases and sinks; norm
// weights in float32; YaRN RoPE by default (rope_theta 150000).
void parseGptOss(const ConfigReader& cfg, ModelSpec& s)
{
    s.router.numExperts = static_cast<int>(cfg.positiveAnyOf({ "num_local_experts", "num_experts" }));
    s.moeIntermediate = cfg.positive("intermediate_size");
    s.router.normTopkProb = true;
    s.router.bias = true;
    s.router.softmaxAfterTopk = true;
    s.qkvBias = s.oBias = cfg.boolean("attention_bias", true);
    s.attentionSinks = true;
    s.expertBias = true;
    s.clampedSwiglu = true;
    s.swigluLimit = cfg.number("swiglu_limit", 7.0);
    s.swigluAlpha = cfg.number("swiglu_alpha", 1.702);
    if (!(s.swigluLimit > 0.0))
        cfg.fail("swiglu_limit", "must be > 0");
    s.normWeightsFloat32 = true;
    s.rmsNormEps = cfg.number("rms_norm_eps", 1e-5);
    if (cfg.has("sliding_window"))
        s.slidingWindow = cfg.positive("sliding_window");
    if (cfg.has("moeatlas_expert_widths"))
        cfg.fail("moeatlas_expert_widths", "is not supported for gpt_oss (no ragged gpt_oss checkpoints)");
    // GptOssConfig's defaults where config.json has no RoPE entries or no theta.
    const bool params = cfg.has("rope_parameters") || cfg.has("rope_scaling");
    const bool theta = cfg.has("rope_theta")
        || (cfg.has("rope_parameters") && cfg.raw().at("rope_parameters").is_object()
            && cfg.raw().at("rope_parameters").contains("rope_theta"))
        || (cfg.has("rope_scaling") && cfg.raw().at("rope_scaling").is_object()
            && cfg.raw().at("rope_scaling").contains("rope_theta"));
    if (!theta)
        s.rope.theta = 150000.0;
    if (!params) {
        s.rope.type = "yarn";
        s.rope.factor = 32.0;
        s.rope.betaFast = 32.0;
        s.rope.betaSlow = 1.0;
        s.rope.truncate = false;
        s.rope.originalMaxPositionEmbeddings = 4096;
    }
}

// Whether gpt_oss layer i is a sliding-window layer: layer_types names each layer sliding_attention or
// full_attention; without it, even layers slide (GptOssConfig's default).
bool gptOssSliding(const ConfigReader& cfg, const std::vector<std::string>& layerTypes, int i)
{
    if (layerTypes.empty())
        return i % 2 == 0;
    const std::string& t = layerTypes[static_cast<std::size_t>(i)];
    if (t == "sliding_attention")
        return true;
    if (t != "full_attention")
        cfg.fail("layer_types",
            "entry " + std::to_string(i) + " is " + cfg.raw().at("layer_types")[static_cast<std::size_t>(i)].dump()
                + " (expected \"sliding_attention\" or \"full_attention\")");
    return false;
}

// config.json of Qwen3_5MoeForConditionalGeneration ("model_type": "qwen3_5_moe" with a text_config
// object): the text config; null for every other config (Qwen3_5MoeForCausalLM writes "qwen3_5_moe_text").
const json* multimodalTextConfig(const json& config, const std::string& source)
{
    const auto type = config.find("model_type");
    if (type == config.end() || *type != "qwen3_5_moe" || !config.contains("text_config"))
        return nullptr;
    const json& text = config.at("text_config");
    if (!text.is_object())
        throw InputError(source + ": field 'text_config' must be an object, got " + text.dump());
    return &text;
}

// Qwen3.5-MoE: every layer MoE with a sigmoid-gated shared expert; softmax top-k, always renormalised
// (Qwen3_5MoeTopKRouter ignores norm_topk_prob); gated full attention with per-head q/k norms; the Gated
// DeltaNet's dimensions (defaults as Qwen3_5MoeTextConfig's).
void parseQwen35Moe(const ConfigReader& cfg, ModelSpec& s)
{
    s.router.numExperts = static_cast<int>(cfg.positiveAnyOf({ "num_experts", "num_local_experts" }));
    s.moeIntermediate = cfg.positive("moe_intermediate_size");
    s.sharedIntermediate = cfg.positive("shared_expert_intermediate_size");
    s.sharedExpertGate = true;
    s.router.normTopkProb = true;
    s.qkvBias = s.oBias = cfg.boolean("attention_bias", false);
    s.qkNorm = QkNorm::PerHead;
    s.attnOutputGate = true;
    s.zeroCentredNorm = true;
    LinearAttentionSpec& la = s.linearAttention;
    const auto positiveOr = [&](const char* key, int64_t fallback) {
        const int64_t v = cfg.integer(key, fallback);
        if (v <= 0)
            cfg.fail(key, "must be > 0, got " + std::to_string(v));
        return v;
    };
    la.numKeyHeads = static_cast<int>(positiveOr("linear_num_key_heads", 16));
    la.numValueHeads = static_cast<int>(positiveOr("linear_num_value_heads", 32));
    la.keyHeadDim = positiveOr("linear_key_head_dim", 128);
    la.valueHeadDim = positiveOr("linear_value_head_dim", 128);
    la.convKernel = positiveOr("linear_conv_kernel_dim", 4);
    if (la.numValueHeads % la.numKeyHeads != 0)
        cfg.fail("linear_num_value_heads",
            "(" + std::to_string(la.numValueHeads) + ") must be a multiple of linear_num_key_heads ("
                + std::to_string(la.numKeyHeads) + ")");
}

// Qwen3.5-MoE's layer_types: "linear_attention" or "full_attention" per layer; without the key, every
// full_attention_interval-th layer (default 4) is full attention, as Qwen3_5MoeTextConfig derives it.
std::vector<std::string> qwen35LayerTypes(const ConfigReader& cfg, int numLayers)
{
    std::vector<std::string> types;
    if (!cfg.has("layer_types")) {
        const int64_t interval = cfg.integer("full_attention_interval", 4);
        if (interval <= 0)
            cfg.fail("full_attention_interval", "must be > 0, got " + std::to_string(interval));
        for (int i = 0; i < numLayers; ++i)
            types.emplace_back((i + 1) % interval != 0 ? "linear_attention" : "full_attention");
        return types;
    }
    const json& lt = cfg.raw().at("layer_types");
    if (!lt.is_array() || static_cast<int>(lt.size()) != numLayers)
        cfg.fail("layer_types", "must be a list of num_hidden_layers (" + std::to_string(numLayers) + ") strings");
    for (std::size_t i = 0; i < lt.size(); ++i) {
        if (!lt[i].is_string() || (lt[i] != "linear_attention" && lt[i] != "full_attention"))
            cfg.fail("layer_types",
                "entry " + std::to_string(i) + " is " + lt[i].dump()
                    + " (expected \"linear_attention\" or \"full_attention\")");
        types.push_back(lt[i].get<std::string>());
    }
    return types;
}

} // namespace

int ModelSpec::numMoeLayers() const
{
    return static_cast<int>(std::count_if(layers.begin(), layers.end(), [](const LayerSpec& l) { return l.moe; }));
}

std::vector<int> ModelSpec::moeLayerIndices() const
{
    std::vector<int> out;
    for (int i = 0; i < static_cast<int>(layers.size()); ++i)
        if (layers[i].moe)
            out.push_back(i);
    return out;
}

bool ModelSpec::ragged() const
{
    return std::any_of(layers.begin(), layers.end(), [](const LayerSpec& l) { return !l.expertWidths.empty(); });
}

const char* architectureName(Architecture a)
{
    switch (a) {
    case Architecture::Mixtral:
        return "mixtral";
    case Architecture::Qwen2Moe:
        return "qwen2_moe";
    case Architecture::Qwen3Moe:
        return "qwen3_moe";
    case Architecture::Olmoe:
        return "olmoe";
    case Architecture::GptOss:
        return "gpt_oss";
    case Architecture::Qwen3_5Moe:
        return "qwen3_5_moe";
    case Architecture::Glm4Moe:
        return "glm4_moe";
    case Architecture::DeepseekV3:
        return "deepseek_v3";
    }
    return "?";
}

ModelSpec parseModelSpec(const json& config, const std::string& source)
{
    if (!config.is_object())
        throw InputError(source + ": expected a JSON object at the top level");
    if (const json* text = multimodalTextConfig(config, source)) {
        // Qwen3_5MoeForConditionalGeneration: the language model's keys live in text_config and its
        // tensors under model.language_model.; the vision tower is not run (docs/decisions.md).
        json merged = *text;
        merged.erase("text_config");
        merged["model_type"] = config.at("model_type");
        for (const char* key : { "tie_word_embeddings", "dtype", "torch_dtype", "quantization_config" })
            if (config.contains(key) && !config.at(key).is_null())
                merged[key] = config.at(key);
        ModelSpec s = parseModelSpec(merged, source + " (text_config)");
        s.tensorPrefix = "model.language_model.";
        return s;
    }
    ConfigReader cfg(config, source);
    ModelSpec s;
    s.modelType = cfg.string("model_type", "");
    if (s.modelType.empty())
        cfg.fail("model_type", "is missing (expected e.g. \"mixtral\")");
    s.arch = architectureOf(s.modelType, source);

    s.vocabSize = cfg.positive("vocab_size");
    s.hiddenSize = cfg.positive("hidden_size");
    s.numLayers = static_cast<int>(cfg.positive("num_hidden_layers"));
    s.numHeads = static_cast<int>(cfg.positive("num_attention_heads"));
    s.numKvHeads = static_cast<int>(cfg.integer("num_key_value_heads", s.numHeads));
    if (s.numKvHeads <= 0 || s.numHeads % s.numKvHeads != 0)
        cfg.fail("num_key_value_heads",
            "must divide num_attention_heads (" + std::to_string(s.numHeads) + "), got "
                + std::to_string(s.numKvHeads));
    // Qwen3.5-MoE's head_dim is its own (transformers' default 256), not hidden_size / heads; deepseek_v3's is
    // qk_rope_head_dim whatever config.json says (DeepseekV3Config overwrites it; parseDeepseekV3).
    const int64_t headDim = cfg.integer("head_dim", s.arch == Architecture::Qwen3_5Moe ? 256 : 0);
    if (s.arch == Architecture::DeepseekV3) {
        s.headDim = 0;
    } else if (headDim > 0) {
        s.headDim = headDim;
    } else {
        if (s.hiddenSize % s.numHeads != 0)
            cfg.fail("hidden_size", "must be divisible by num_attention_heads when head_dim is absent");
        s.headDim = s.hiddenSize / s.numHeads;
    }
    s.maxPositionEmbeddings = cfg.integer("max_position_embeddings", 4096);
    s.rmsNormEps = cfg.number("rms_norm_eps", 1e-6);
    s.hiddenAct = cfg.string("hidden_act", "silu");
    if (s.hiddenAct != "silu")
        cfg.fail("hidden_act", "is '" + s.hiddenAct + "' (only silu is supported)");
    s.tieWordEmbeddings = cfg.boolean("tie_word_embeddings", false);
    s.torchDtype = cfg.string("dtype", cfg.string("torch_dtype", ""));
    // Partial rotary: Qwen3.5-MoE (default 0.25) and glm4_moe (Glm4MoeConfig's default 0.5).
    if (s.arch == Architecture::Qwen3_5Moe)
        s.rope = parseRope(cfg, source, 0.25, /*partialAllowed=*/true);
    else if (s.arch == Architecture::Glm4Moe)
        s.rope = parseRope(cfg, source, 0.5, /*partialAllowed=*/true);
    else
        s.rope = parseRope(cfg, source);
    s.router.topK = static_cast<int>(cfg.positive("num_experts_per_tok"));

    // Which decoder layers are MoE, and the widths.
    std::vector<int64_t> mlpOnly;
    int64_t sparseStep = 1;
    switch (s.arch) {
    case Architecture::Mixtral:
        s.router.numExperts = static_cast<int>(cfg.positiveAnyOf({ "num_local_experts", "num_experts" }));
        s.moeIntermediate = cfg.positive("intermediate_size");
        s.router.normTopkProb = true; // MixtralTopKRouter always renormalises
        if (cfg.has("sliding_window"))
            s.slidingWindow = cfg.positive("sliding_window");
        break;
    case Architecture::Qwen2Moe:
        s.router.numExperts = static_cast<int>(cfg.positiveAnyOf({ "num_experts", "num_local_experts" }));
        s.moeIntermediate = cfg.positive("moe_intermediate_size");
        s.sharedIntermediate = cfg.integer("shared_expert_intermediate_size", 0);
        s.sharedExpertGate = s.sharedIntermediate > 0;
        s.router.normTopkProb = cfg.boolean("norm_topk_prob", false);
        s.qkvBias = cfg.boolean("qkv_bias", true);
        mlpOnly = cfg.integerList("mlp_only_layers");
        sparseStep = cfg.integer("decoder_sparse_step", 1);
        if (cfg.boolean("use_sliding_window", false) && cfg.has("sliding_window"))
            s.slidingWindow = cfg.positive("sliding_window");
        break;
    case Architecture::Qwen3Moe:
        s.router.numExperts = static_cast<int>(cfg.positiveAnyOf({ "num_experts", "num_local_experts" }));
        s.moeIntermediate = cfg.positive("moe_intermediate_size");
        s.router.normTopkProb = cfg.boolean("norm_topk_prob", false);
        s.qkvBias = s.oBias = cfg.boolean("attention_bias", false);
        s.qkNorm = QkNorm::PerHead;
        mlpOnly = cfg.integerList("mlp_only_layers");
        sparseStep = cfg.integer("decoder_sparse_step", 1);
        if (cfg.boolean("use_sliding_window", false) && cfg.has("sliding_window"))
            s.slidingWindow = cfg.positive("sliding_window");
        break;
    case Architecture::Qwen3_5Moe:
        parseQwen35Moe(cfg, s);
        break;
    case Architecture::Olmoe:
        s.router.numExperts = static_cast<int>(cfg.positiveAnyOf({ "num_experts", "num_local_experts" }));
        s.moeIntermediate = cfg.positive("intermediate_size");
        s.router.normTopkProb = cfg.boolean("norm_topk_prob", false);
        s.qkvBias = s.oBias = cfg.boolean("attention_bias", false);
        s.qkNorm = QkNorm::Full;
        if (cfg.has("clip_qkv"))
            s.clipQkv = cfg.number("clip_qkv", 0.0);
        break;
    case Architecture::GptOss:
        parseGptOss(cfg, s);
        break;
    case Architecture::Glm4Moe:
        parseGlm4Moe(cfg, s); // also its layers: the first first_k_dense_replace are dense
        break;
    case Architecture::DeepseekV3:
        parseDeepseekV3(cfg, s); // also its layers, head_dim (= qk_rope_head_dim) and the MLA dimensions
        break;
    }
    if (s.router.topK > s.router.numExperts)
        cfg.fail("num_experts_per_tok",
            "(" + std::to_string(s.router.topK) + ") exceeds the number of experts ("
                + std::to_string(s.router.numExperts) + ")");
    if (sparseStep <= 0)
        cfg.fail("decoder_sparse_step", "must be > 0");

    // Sliding-window layers: Qwen2-MoE names them in layer_types (or derives them from
    // max_window_layers); the others apply the window to every layer when it is set.
    std::vector<std::string> layerTypes;
    if (cfg.has("layer_types")) {
        const json& lt = config.at("layer_types");
        if (!lt.is_array() || static_cast<int>(lt.size()) != s.numLayers)
            cfg.fail("layer_types", "must be a list of num_hidden_layers strings");
        for (const json& t : lt)
            layerTypes.push_back(t.is_string() ? t.get<std::string>() : std::string());
    }
    if (s.arch == Architecture::Qwen3_5Moe)
        layerTypes = qwen35LayerTypes(cfg, s.numLayers);
    const int64_t maxWindowLayers = cfg.integer("max_window_layers", s.numLayers);
    s.layers.resize(s.numLayers);
    const bool layersParsed = s.arch == Architecture::Glm4Moe || s.arch == Architecture::DeepseekV3;
    for (int i = 0; i < s.numLayers && !layersParsed; ++i) {
        LayerSpec& l = s.layers[i];
        l.moe = std::find(mlpOnly.begin(), mlpOnly.end(), i) == mlpOnly.end() && (i + 1) % sparseStep == 0;
        if (!l.moe)
            l.denseIntermediate = cfg.positive("intermediate_size");
        if (s.arch == Architecture::GptOss) {
            l.slidingWindow = gptOssSliding(cfg, layerTypes, i) && s.slidingWindow.has_value();
        } else if (s.arch == Architecture::Qwen2Moe) {
            if (!layerTypes.empty())
                l.slidingWindow = layerTypes[i] == "sliding_attention" && s.slidingWindow.has_value();
            else
                l.slidingWindow = s.slidingWindow.has_value() && (i + 1) % 2 != 0 && i < maxWindowLayers;
        } else {
            l.slidingWindow = s.slidingWindow.has_value();
        }
        if (s.arch == Architecture::Qwen3_5Moe)
            l.linearAttention = layerTypes[static_cast<std::size_t>(i)] == "linear_attention";
    }
    parseRaggedExperts(cfg, s);
    s.fp8 = parseQuantizationConfig(config, source);
    return s;
}

} // namespace moeatlas
