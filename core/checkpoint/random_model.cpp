#include "checkpoint/random_model.h"

#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/fp8.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/half.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <sstream>

namespace moeatlas {

namespace {

// splitmix64: small, fast and identical on every platform (std distributions are not).
struct Rng {
    uint64_t state;
    uint64_t next()
    {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }
};

uint16_t toBf16(float f)
{
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits += 0x7fff + ((bits >> 16) & 1); // round to nearest even
    return static_cast<uint16_t>(bits >> 16);
}

struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    double mean;
    double std;
};

class TensorFactory {
public:
    TensorFactory(CheckpointWriter& w, DType dtype, uint64_t seed)
        : m_writer(w)
        , m_dtype(dtype)
        , m_rng { seed }
    {
    }

    void declare(const Entry& e, const Fp8Quantization& fp8)
    {
        if (!fp8.enabled) {
            m_writer.declare(e.name, m_dtype, e.shape);
            return;
        }
        m_writer.declare(e.name, DType::F8_E4M3, e.shape);
        m_writer.declare(fp8ScaleName(e.name), DType::F32, fp8ScaleShape(e.shape, fp8));
    }

    // Writes a tensor of normal(mean, std) values (std 0 gives a constant); FP8 block-quantized matrix by
    // matrix (the last two dimensions) with its scales after it when fp8.enabled.
    void write(const Entry& e, const Fp8Quantization& fp8)
    {
        int64_t count = 1;
        for (const int64_t d : e.shape)
            count *= d;
        std::vector<float> values(static_cast<std::size_t>(count));
        for (float& v : values) {
            v = static_cast<float>(e.mean);
            if (e.std > 0) {
                const double u1 = m_rng.uniform(), u2 = m_rng.uniform();
                v = static_cast<float>(e.mean + e.std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
            }
        }
        if (fp8.enabled) {
            writeFp8(e, fp8, values);
            return;
        }
        std::vector<std::byte> buf(static_cast<std::size_t>(count) * dtypeSize(m_dtype));
        for (std::size_t i = 0; i < values.size(); ++i) {
            const float v = values[i];
            const std::size_t at = i * dtypeSize(m_dtype);
            if (m_dtype == DType::F32) {
                std::memcpy(buf.data() + at, &v, 4);
            } else {
                const uint16_t h = m_dtype == DType::BF16 ? toBf16(v) : floatToHalf(v);
                std::memcpy(buf.data() + at, &h, 2);
            }
        }
        m_writer.write(e.name, buf);
    }

private:
    void writeFp8(const Entry& e, const Fp8Quantization& fp8, const std::vector<float>& values)
    {
        const std::size_t n = e.shape.size();
        const int64_t rows = e.shape[n - 2], cols = e.shape[n - 1];
        const std::vector<int64_t> grid = fp8ScaleShape(e.shape, fp8);
        const int64_t perMatrix = grid[n - 2] * grid[n - 1];
        const int64_t matrices = static_cast<int64_t>(values.size()) / std::max<int64_t>(1, rows * cols);
        std::vector<std::byte> bytes(values.size());
        std::vector<float> scales(static_cast<std::size_t>(matrices * perMatrix));
        for (int64_t m = 0; m < matrices; ++m)
            quantizeFp8(values.data() + m * rows * cols, rows, cols, fp8.blockRows, fp8.blockCols,
                reinterpret_cast<uint8_t*>(bytes.data()) + m * rows * cols, scales.data() + m * perMatrix);
        m_writer.write(e.name, bytes);
        m_writer.write(fp8ScaleName(e.name), std::as_bytes(std::span<const float>(scales)));
    }

    CheckpointWriter& m_writer;
    DType m_dtype;
    Rng m_rng;
};

// The FP8 block-scaled weights of a generated model: the decoder layers' matrices but the router, Qwen's
// shared-expert gate ([1, H]) and Qwen3.5's linear attention (options.fp8).
Fp8Quantization fp8Of(const RandomModelOptions& o, const Entry& e)
{
    Fp8Quantization q;
    const auto has = [&](const char* part) { return e.name.find(part) != std::string::npos; };
    q.enabled = o.fp8 && e.name.starts_with("model.layers.") && e.shape.size() >= 2 && !has("mlp.gate.weight")
        && !has("block_sparse_moe.gate.weight") && !has("shared_expert_gate") && !has("linear_attn.");
    q.blockRows = o.fp8BlockRows;
    q.blockCols = o.fp8BlockCols;
    return q;
}

// The DeepSeek family: the sigmoid router with its correction bias, one ungated shared expert, a dense prefix.
bool deepseekFamily(const RandomModelOptions& o)
{
    return o.arch == Architecture::Glm4Moe || o.arch == Architecture::DeepseekV3;
}

bool isMoeLayer(const RandomModelOptions& o, int layer)
{
    if (deepseekFamily(o))
        return layer >= o.firstDenseLayers;
    for (int l : o.mlpOnlyLayers)
        if (l == layer)
            return false;
    return true;
}

bool isLinearAttentionLayer(const RandomModelOptions& o, int layer)
{
    return o.arch == Architecture::Qwen3_5Moe && (layer + 1) % o.fullAttentionInterval != 0;
}

int64_t sharedWidth(const RandomModelOptions& o)
{
    return o.arch == Architecture::Qwen3_5Moe && o.sharedIntermediate == 0 ? o.moeIntermediate : o.sharedIntermediate;
}

// A Qwen3.5-MoE Gated DeltaNet: projections at initStd, a convolution of unit-scale output, decays
// A = exp(A_log) around 1 and dt_bias 1 (as transformers initialises it), the output norm at 1.
void addLinearAttention(const RandomModelOptions& o, const std::string& p, std::vector<Entry>& t)
{
    const int64_t H = o.hiddenSize, keyDim = o.linearKeyHeads * o.linearKeyHeadDim;
    const int64_t valueDim = o.linearValueHeads * o.linearValueHeadDim, convDim = 2 * keyDim + valueDim;
    const int64_t nv = o.linearValueHeads;
    const double s = o.initStd;
    const std::string a = p + "linear_attn.";
    t.push_back({ a + "in_proj_qkv.weight", { convDim, H }, 0.0, s });
    t.push_back({ a + "in_proj_z.weight", { valueDim, H }, 0.0, s });
    t.push_back({ a + "in_proj_b.weight", { nv, H }, 0.0, s });
    t.push_back({ a + "in_proj_a.weight", { nv, H }, 0.0, s });
    t.push_back({ a + "conv1d.weight", { convDim, 1, o.linearConvKernel }, 0.0,
        1.0 / std::sqrt(static_cast<double>(o.linearConvKernel)) });
    t.push_back({ a + "dt_bias", { nv }, 1.0, 0.0 });
    t.push_back({ a + "A_log", { nv }, 0.0, 0.5 });
    t.push_back({ a + "norm.weight", { o.linearValueHeadDim }, 1.0, 0.0 });
    t.push_back({ a + "out_proj.weight", { H, valueDim }, 0.0, s });
}

// deepseek_v3's multi-head latent attention (DeepseekV3Attention's tensors, no biases).
void addMlaAttention(const RandomModelOptions& o, const std::string& p, std::vector<Entry>& t)
{
    const int64_t H = o.hiddenSize, nh = o.numHeads, qk = o.qkNopeHeadDim + o.qkRopeHeadDim;
    const double s = o.initStd;
    const std::string a = p + "self_attn.";
    if (o.qLoraRank > 0) {
        t.push_back({ a + "q_a_proj.weight", { o.qLoraRank, H }, 0.0, s });
        t.push_back({ a + "q_a_layernorm.weight", { o.qLoraRank }, 1.0, 0.0 });
        t.push_back({ a + "q_b_proj.weight", { nh * qk, o.qLoraRank }, 0.0, s });
    } else {
        t.push_back({ a + "q_proj.weight", { nh * qk, H }, 0.0, s });
    }
    t.push_back({ a + "kv_a_proj_with_mqa.weight", { o.kvLoraRank + o.qkRopeHeadDim, H }, 0.0, s });
    t.push_back({ a + "kv_a_layernorm.weight", { o.kvLoraRank }, 1.0, 0.0 });
    t.push_back({ a + "kv_b_proj.weight", { nh * (o.qkNopeHeadDim + o.vHeadDim), o.kvLoraRank }, 0.0, s });
    t.push_back({ a + "o_proj.weight", { H, nh * o.vHeadDim }, 0.0, s });
}

// The MoE and router keys glm4_moe and deepseek_v3 share (DeepSeek's sigmoid group-limited router).
void writeDeepseekMoeKeys(const RandomModelOptions& o, nlohmann::json& c)
{
    c["n_routed_experts"] = o.numExperts;
    c["n_shared_experts"] = 1;
    c["moe_intermediate_size"] = o.moeIntermediate;
    c["intermediate_size"] = o.denseIntermediate;
    c["first_k_dense_replace"] = o.firstDenseLayers;
    c["n_group"] = o.numGroups;
    c["topk_group"] = o.topkGroup;
    c["routed_scaling_factor"] = o.routedScalingFactor;
    c["norm_topk_prob"] = o.normTopkProb;
}

std::vector<Entry> tensorList(const RandomModelOptions& o)
{
    const int64_t H = o.hiddenSize, hd = o.headDim, E = o.numExperts, I = o.moeIntermediate;
    const double s = o.initStd;
    std::vector<Entry> t;
    t.push_back({ "model.embed_tokens.weight", { o.vocabSize, H }, 0.0, 1.0 });
    const bool mixtral = o.arch == Architecture::Mixtral;
    // Qwen3.5-MoE's RMSNorms scale by (1 + w): w = 0 is the identity scale.
    const double normMean = o.arch == Architecture::Qwen3_5Moe ? 0.0 : 1.0;
    for (int l = 0; l < o.numLayers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        t.push_back({ p + "input_layernorm.weight", { H }, normMean, 0.0 });
        t.push_back({ p + "post_attention_layernorm.weight", { H }, normMean, 0.0 });
        const int64_t qOut = static_cast<int64_t>(o.numHeads) * hd, kvOut = static_cast<int64_t>(o.numKvHeads) * hd;
        if (isLinearAttentionLayer(o, l)) {
            addLinearAttention(o, p, t);
        } else if (o.arch == Architecture::DeepseekV3) {
            addMlaAttention(o, p, t);
        } else {
            // Qwen3.5-MoE's q_proj also gives the attention output gate: [query_h; gate_h] per head.
            t.push_back(
                { p + "self_attn.q_proj.weight", { o.arch == Architecture::Qwen3_5Moe ? 2 * qOut : qOut, H }, 0.0, s });
            t.push_back({ p + "self_attn.k_proj.weight", { kvOut, H }, 0.0, s });
            t.push_back({ p + "self_attn.v_proj.weight", { kvOut, H }, 0.0, s });
            if (o.arch == Architecture::Qwen2Moe || o.arch == Architecture::GptOss) {
                t.push_back({ p + "self_attn.q_proj.bias", { qOut }, 0.0, s });
                t.push_back({ p + "self_attn.k_proj.bias", { kvOut }, 0.0, s });
                t.push_back({ p + "self_attn.v_proj.bias", { kvOut }, 0.0, s });
            }
            t.push_back({ p + "self_attn.o_proj.weight", { H, qOut }, 0.0, s });
            if (o.arch == Architecture::GptOss) {
                // gpt_oss: o_proj bias, attention sinks, router with bias, fused experts as x @ W with gate and up
                // interleaved on the last dimension, expert biases (transformers' GptOss layout).
                t.push_back({ p + "self_attn.o_proj.bias", { H }, 0.0, s });
                t.push_back({ p + "self_attn.sinks", { o.numHeads }, 0.0, 1.0 });
                const std::string m = p + "mlp.";
                t.push_back({ m + "router.weight", { E, H }, 0.0, o.routerStd / std::sqrt(static_cast<double>(H)) });
                t.push_back({ m + "router.bias", { E }, 0.0, o.routerStd });
                t.push_back({ m + "experts.gate_up_proj", { E, H, 2 * I }, 0.0, s });
                t.push_back({ m + "experts.gate_up_proj_bias", { E, 2 * I }, 0.0, s });
                t.push_back({ m + "experts.down_proj", { E, I, H }, 0.0, s });
                t.push_back({ m + "experts.down_proj_bias", { E, H }, 0.0, s });
                continue;
            }
            if (o.arch == Architecture::Qwen3Moe || o.arch == Architecture::Qwen3_5Moe
                || o.arch == Architecture::Glm4Moe) {
                t.push_back({ p + "self_attn.q_norm.weight", { hd }, normMean, 0.0 });
                t.push_back({ p + "self_attn.k_norm.weight", { hd }, normMean, 0.0 });
            } else if (o.arch == Architecture::Olmoe) {
                t.push_back({ p + "self_attn.q_norm.weight", { qOut }, 1.0, 0.0 });
                t.push_back({ p + "self_attn.k_norm.weight", { kvOut }, 1.0, 0.0 });
            }
        }
        if (!isMoeLayer(o, l)) {
            t.push_back({ p + "mlp.gate_proj.weight", { o.denseIntermediate, H }, 0.0, s });
            t.push_back({ p + "mlp.up_proj.weight", { o.denseIntermediate, H }, 0.0, s });
            t.push_back({ p + "mlp.down_proj.weight", { H, o.denseIntermediate }, 0.0, s });
            continue;
        }
        const std::string m = p + (mixtral && !o.fusedExperts ? "block_sparse_moe." : "mlp.");
        t.push_back({ m + "gate.weight", { E, H }, 0.0, o.routerStd / std::sqrt(static_cast<double>(H)) });
        if (deepseekFamily(o))
            t.push_back({ m + "gate.e_score_correction_bias", { E }, 0.0, o.correctionBiasStd });
        if (o.fusedExperts) {
            t.push_back({ m + "experts.gate_up_proj", { E, 2 * I, H }, 0.0, s });
            t.push_back({ m + "experts.down_proj", { E, H, I }, 0.0, s });
        } else {
            for (int64_t e = 0; e < E; ++e) {
                const std::string ep = m + "experts." + std::to_string(e) + ".";
                t.push_back({ ep + (mixtral ? "w1" : "gate_proj") + ".weight", { I, H }, 0.0, s });
                t.push_back({ ep + (mixtral ? "w2" : "down_proj") + ".weight", { H, I }, 0.0, s });
                t.push_back({ ep + (mixtral ? "w3" : "up_proj") + ".weight", { I, H }, 0.0, s });
            }
        }
        if ((o.arch == Architecture::Qwen2Moe || o.arch == Architecture::Qwen3_5Moe) && sharedWidth(o) > 0) {
            const int64_t SI = sharedWidth(o);
            t.push_back({ m + "shared_expert.gate_proj.weight", { SI, H }, 0.0, s });
            t.push_back({ m + "shared_expert.up_proj.weight", { SI, H }, 0.0, s });
            t.push_back({ m + "shared_expert.down_proj.weight", { H, SI }, 0.0, s });
            t.push_back({ m + "shared_expert_gate.weight", { 1, H }, 0.0, s });
        }
        if (deepseekFamily(o)) { // one shared expert (n_shared_experts 1), no gate
            t.push_back({ m + "shared_experts.gate_proj.weight", { I, H }, 0.0, s });
            t.push_back({ m + "shared_experts.up_proj.weight", { I, H }, 0.0, s });
            t.push_back({ m + "shared_experts.down_proj.weight", { H, I }, 0.0, s });
        }
    }
    t.push_back({ "model.norm.weight", { H }, normMean, 0.0 });
    t.push_back({ "lm_head.weight", { o.vocabSize, H }, 0.0, s });
    return t;
}

} // namespace

std::string randomModelConfig(const RandomModelOptions& o)
{
    nlohmann::json c;
    c["model_type"] = architectureName(o.arch);
    c["vocab_size"] = o.vocabSize;
    c["hidden_size"] = o.hiddenSize;
    c["num_hidden_layers"] = o.numLayers;
    c["num_attention_heads"] = o.numHeads;
    c["num_key_value_heads"] = o.numKvHeads;
    c["head_dim"] = o.headDim;
    c["hidden_act"] = "silu";
    c["max_position_embeddings"] = 4096;
    c["rms_norm_eps"] = 1e-6;
    c["rope_theta"] = 10000.0;
    c["tie_word_embeddings"] = false;
    c["num_experts_per_tok"] = o.topK;
    c["torch_dtype"] = o.dtype == DType::F32 ? "float32" : o.dtype == DType::BF16 ? "bfloat16" : "float16";
    if (o.fp8)
        c["quantization_config"] = { { "quant_method", "fp8" }, { "fmt", "e4m3" }, { "activation_scheme", "dynamic" },
            { "weight_block_size", { o.fp8BlockRows, o.fp8BlockCols } } };
    switch (o.arch) {
    case Architecture::Mixtral:
        c["architectures"] = { "MixtralForCausalLM" };
        c["num_local_experts"] = o.numExperts;
        c["intermediate_size"] = o.moeIntermediate;
        break;
    case Architecture::Qwen2Moe:
        c["architectures"] = { "Qwen2MoeForCausalLM" };
        c["num_experts"] = o.numExperts;
        c["moe_intermediate_size"] = o.moeIntermediate;
        c["shared_expert_intermediate_size"] = o.sharedIntermediate;
        c["intermediate_size"] = o.denseIntermediate;
        c["norm_topk_prob"] = o.normTopkProb;
        c["mlp_only_layers"] = o.mlpOnlyLayers;
        c["qkv_bias"] = true;
        break;
    case Architecture::Qwen3Moe:
        c["architectures"] = { "Qwen3MoeForCausalLM" };
        c["num_experts"] = o.numExperts;
        c["moe_intermediate_size"] = o.moeIntermediate;
        c["intermediate_size"] = o.denseIntermediate;
        c["norm_topk_prob"] = o.normTopkProb;
        c["mlp_only_layers"] = o.mlpOnlyLayers;
        break;
    case Architecture::Olmoe:
        c["architectures"] = { "OlmoeForCausalLM" };
        c["num_experts"] = o.numExperts;
        c["intermediate_size"] = o.moeIntermediate;
        c["norm_topk_prob"] = o.normTopkProb;
        break;
    case Architecture::GptOss: {
        // gpt-oss' own settings: alternating sliding (128) and full layers, YaRN, the clamped SwiGLU.
        c["architectures"] = { "GptOssForCausalLM" };
        c["num_local_experts"] = o.numExperts;
        c["intermediate_size"] = o.moeIntermediate;
        c["attention_bias"] = true;
        c["sliding_window"] = 128;
        c["swiglu_limit"] = 7.0;
        c["rms_norm_eps"] = 1e-5;
        c["max_position_embeddings"] = 131072;
        nlohmann::json types = nlohmann::json::array();
        for (int l = 0; l < o.numLayers; ++l)
            types.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
        c["layer_types"] = types;
        c.erase("rope_theta");
        c["rope_parameters"]
            = { { "rope_type", "yarn" }, { "rope_theta", 150000.0 }, { "factor", 32.0 }, { "beta_fast", 32.0 },
                  { "beta_slow", 1.0 }, { "truncate", false }, { "original_max_position_embeddings", 4096 } };
        break;
    }
    case Architecture::Glm4Moe:
        c["architectures"] = { "Glm4MoeForCausalLM" };
        writeDeepseekMoeKeys(o, c);
        c["use_qk_norm"] = true;
        c["attention_bias"] = false;
        c["num_nextn_predict_layers"] = 0;
        c.erase("rope_theta");
        c["rope_parameters"]
            = { { "rope_type", "default" }, { "rope_theta", 10000.0 }, { "partial_rotary_factor", 0.5 } };
        break;
    case Architecture::DeepseekV3:
        // DeepSeek-V3's hub config.json (rope_scaling as the hub writes it), at these sizes.
        c["architectures"] = { "DeepseekV3ForCausalLM" };
        c.erase("head_dim");
        c["num_key_value_heads"] = o.numHeads;
        writeDeepseekMoeKeys(o, c);
        c["q_lora_rank"] = o.qLoraRank > 0 ? nlohmann::json(o.qLoraRank) : nlohmann::json(nullptr);
        c["kv_lora_rank"] = o.kvLoraRank;
        c["qk_nope_head_dim"] = o.qkNopeHeadDim;
        c["qk_rope_head_dim"] = o.qkRopeHeadDim;
        c["v_head_dim"] = o.vHeadDim;
        c["rope_interleave"] = true;
        c["attention_bias"] = false;
        c["num_nextn_predict_layers"] = 0;
        c["max_position_embeddings"] = 163840;
        c["rope_scaling"] = { { "type", "yarn" }, { "factor", 40.0 }, { "original_max_position_embeddings", 4096 },
            { "beta_fast", 32 }, { "beta_slow", 1 }, { "mscale", 1.0 }, { "mscale_all_dim", 1.0 } };
        break;
    case Architecture::Qwen3_5Moe: {
        c["model_type"] = "qwen3_5_moe_text"; // the text-only checkpoint Qwen3_5MoeForCausalLM saves
        c["architectures"] = { "Qwen3_5MoeForCausalLM" };
        c["num_experts"] = o.numExperts;
        c["moe_intermediate_size"] = o.moeIntermediate;
        c["shared_expert_intermediate_size"] = sharedWidth(o);
        c.erase("rope_theta");
        c["rope_parameters"]
            = { { "rope_type", "default" }, { "rope_theta", 10000.0 }, { "partial_rotary_factor", 0.25 } };
        c["linear_num_key_heads"] = o.linearKeyHeads;
        c["linear_num_value_heads"] = o.linearValueHeads;
        c["linear_key_head_dim"] = o.linearKeyHeadDim;
        c["linear_value_head_dim"] = o.linearValueHeadDim;
        c["linear_conv_kernel_dim"] = o.linearConvKernel;
        std::vector<std::string> types;
        types.reserve(static_cast<std::size_t>(o.numLayers));
        for (int l = 0; l < o.numLayers; ++l)
            types.emplace_back(isLinearAttentionLayer(o, l) ? "linear_attention" : "full_attention");
        c["layer_types"] = types;
        break;
    }
    }
    return c.dump(2) + "\n";
}

void writeRandomModel(const RandomModelOptions& o, const std::filesystem::path& dir, bool overwrite)
{
    if ((o.arch == Architecture::Olmoe || o.arch == Architecture::GptOss || o.arch == Architecture::Qwen3_5Moe)
        && !o.mlpOnlyLayers.empty())
        throw InputError(
            std::string(architectureName(o.arch)) + " has no dense layers (mlp_only_layers must be empty)");
    if (o.arch == Architecture::Qwen3_5Moe
        && (o.fullAttentionInterval <= 0 || o.linearKeyHeads <= 0 || o.linearValueHeads % o.linearKeyHeads != 0))
        throw InputError(
            "qwen3_5_moe: full-attention interval must be > 0 and the linear value heads a multiple of the "
            "key heads");
    if (deepseekFamily(o)
        && (o.numGroups <= 0 || o.numExperts % o.numGroups != 0 || o.topkGroup <= 0 || o.topkGroup > o.numGroups
            || o.firstDenseLayers < 0 || o.firstDenseLayers > o.numLayers || !o.mlpOnlyLayers.empty()))
        throw InputError(std::string(architectureName(o.arch))
            + ": --groups must divide --experts, --topk-groups lie in 1..groups, --dense-layers in "
              "0..layers (and no mlp_only_layers)");
    if (o.arch == Architecture::DeepseekV3
        && (o.qLoraRank < 0 || o.kvLoraRank <= 0 || o.qkNopeHeadDim <= 0 || o.qkRopeHeadDim <= 0
            || o.qkRopeHeadDim % 2 != 0 || o.vHeadDim <= 0))
        throw InputError("deepseek_v3: --q-lora-rank must be >= 0 (0 = none), --kv-lora-rank, --qk-nope-dim and "
                         "--v-head-dim > 0, --qk-rope-dim even and > 0");
    if (o.dtype != DType::F32 && o.dtype != DType::BF16 && o.dtype != DType::F16)
        throw InputError("random models are written in F32, BF16 or F16");
    if (o.fp8 && o.arch == Architecture::GptOss)
        throw InputError("gpt_oss: FP8 block-scaled weights are not generated (its hub experts are MXFP4)");
    if (o.fp8 && (o.fp8BlockRows <= 0 || o.fp8BlockCols <= 0))
        throw InputError("FP8 block size " + std::to_string(o.fp8BlockRows) + " x " + std::to_string(o.fp8BlockCols)
            + " (expected two positive integers)");
    CheckpointWriterOptions wo;
    wo.maxShardBytes = o.maxShardBytes;
    wo.overwrite = overwrite;
    CheckpointWriter writer(dir, wo);
    writer.setConfig(nlohmann::json::parse(randomModelConfig(o)));
    const std::vector<Entry> tensors = tensorList(o);
    TensorFactory factory(writer, o.dtype, o.seed);
    for (const Entry& e : tensors)
        factory.declare(e, fp8Of(o, e));
    for (const Entry& e : tensors)
        factory.write(e, fp8Of(o, e));
    writer.finish();
}

void writeRandomCalibration(
    const std::filesystem::path& path, int64_t vocabSize, int numDocs, int64_t docTokens, uint64_t seed)
{
    Rng rng { seed };
    std::ostringstream out;
    for (int d = 0; d < numDocs; ++d) {
        out << "{\"input_ids\": [";
        for (int64_t t = 0; t < docTokens; ++t)
            out << (t ? ", " : "") << rng.next() % static_cast<uint64_t>(vocabSize);
        out << "]}\n";
    }
    writeFileAtomically(path, out.str());
}

} // namespace moeatlas
