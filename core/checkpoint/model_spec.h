// Architecture-neutral description of a decoder-only MoE model, read from a Hugging Face
// config.json (see hf_config.h). Everything the runtime needs to execute a checkpoint lives here;
// the architecture adapter only maps tensor names onto it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

enum class Architecture { Mixtral, Qwen2Moe, Qwen3Moe, Olmoe, GptOss, Qwen3_5Moe, Glm4Moe, DeepseekV3 };

// How q/k are normalised before RoPE.
enum class QkNorm {
    None,
    PerHead, // Qwen3: RMSNorm over head_dim, weight [head_dim]
    Full, // OLMoE: RMSNorm over the whole projection, weight [heads * head_dim]
};

// How a router turns its logits into scores: softmax over all experts (Mixtral, Qwen, OLMoE, gpt_oss) or
// an independent sigmoid per expert (the DeepSeek family: glm4_moe, deepseek_v3).
enum class RouterScore { Softmax, Sigmoid };

// How the router turns logits into expert weights. The softmax routers: softmax over all experts, then
// top-k, then optionally renormalise the k weights. The DeepSeek-style sigmoid router (score ==
// Sigmoid; core/checkpoint/group_router.h is its plain reference): s = sigmoid(logits) in fp32, the
// choice scores s + e_score_correction_bias pick the experts (group-limited: the topkGroup groups of
// largest top-2 sums, the others masked), the weights are the UNBIASED s of the chosen experts,
// renormalised when normTopkProb (sum + 1e-20), times scalingFactor.
struct RouterSpec {
    int numExperts = 0;
    int topK = 0;
    bool normTopkProb = false;
    // gpt_oss: the router Linear has a bias, and the top-k runs on the logits with the softmax over
    // the k chosen only (in the logits' dtype). The same weights as softmax over all, top-k,
    // renormalise (normTopkProb is set too), up to rounding.
    bool bias = false;
    bool softmaxAfterTopk = false;
    // The DeepSeek-style router (glm4_moe; deepseek_v3 reuses it): the logits are computed in fp32 from the
    // fp32-cast weights whatever the compute dtype, and the weights stay fp32 until they scale the expert outputs.
    RouterScore score = RouterScore::Softmax;
    int numGroups = 1; // n_group: the experts split into equal consecutive groups
    int topkGroup = 1; // topk_group: groups a token may route into
    bool correctionBias = false; // "...gate.e_score_correction_bias" [E], added for selection only
    double scalingFactor = 1.0; // routed_scaling_factor
    bool sigmoid() const { return score == RouterScore::Sigmoid; }
    int groupSize() const { return numGroups > 0 ? numExperts / numGroups : numExperts; }
};

// Rotary position embedding, as transformers' rope_parameters / rope_scaling describe it.
struct RopeSpec {
    std::string type = "default"; // default | linear | dynamic | yarn | llama3
    double theta = 10000.0;
    double factor = 1.0;
    double partialRotaryFactor = 1.0;
    int64_t originalMaxPositionEmbeddings = 0;
    // yarn
    std::optional<double> attentionFactor;
    double mscale = 0.0;
    double mscaleAllDim = 0.0;
    double betaFast = 32.0;
    double betaSlow = 1.0;
    bool truncate = true;
    // llama3
    double lowFreqFactor = 1.0;
    double highFreqFactor = 4.0;
};

// Gated DeltaNet linear attention (Qwen3.5-MoE's linear_attention layers): config.json's linear_* keys.
struct LinearAttentionSpec {
    int numKeyHeads = 0; // linear_num_key_heads (q and k heads)
    int numValueHeads = 0; // linear_num_value_heads (a multiple of numKeyHeads)
    int64_t keyHeadDim = 0; // linear_key_head_dim
    int64_t valueHeadDim = 0; // linear_value_head_dim
    int64_t convKernel = 0; // linear_conv_kernel_dim: the causal depthwise convolution's width
    int64_t keyDim() const { return numKeyHeads * keyHeadDim; }
    int64_t valueDim() const { return numValueHeads * valueHeadDim; }
    int64_t convDim() const { return 2 * keyDim() + valueDim(); } // channels of [q; k; v]
};

// Multi-head latent attention (deepseek_v3, DeepseekV3Attention): config.json's MLA keys. Queries come from
// q_proj, or from the low-rank q_a_proj -> q_a_layernorm -> q_b_proj when qLoraRank > 0; keys and values from
// one latent: kv_a_proj_with_mqa gives [latent (kvLoraRank); shared rotary key (qkRopeHeadDim)], kv_a_layernorm
// normalises the latent and kv_b_proj expands it per head into [key without RoPE (qkNopeHeadDim); value
// (vHeadDim)]. Each head's query and key are [nope; rope]; RoPE turns the rope parts only (ModelSpec::headDim is
// qkRopeHeadDim, as transformers sets head_dim). The two latent norms use eps 1e-6 whatever rms_norm_eps.
struct MlaSpec {
    int64_t qLoraRank = 0; // q_lora_rank; 0 = null (a plain q_proj)
    int64_t kvLoraRank = 0; // kv_lora_rank; 0 = not an MLA model
    int64_t qkNopeHeadDim = 0;
    int64_t qkRopeHeadDim = 0;
    int64_t vHeadDim = 0;
    // rope_interleave: the rotary dimensions are stored as pairs (x0, x1), (x2, x3), ...; transformers rotates
    // them as [even; odd] halves, and both q and k come out in that order (a dot product does not mind).
    bool ropeInterleave = true;
    bool attentionBias = false; // attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj have biases
    bool enabled() const { return kvLoraRank > 0; }
    int64_t qkHeadDim() const { return qkNopeHeadDim + qkRopeHeadDim; }
};

struct LayerSpec {
    bool moe = true; // false: a dense MLP of denseIntermediate
    bool linearAttention = false; // Qwen3.5-MoE "linear_attention": a Gated DeltaNet instead of self-attention
    bool slidingWindow = false; // attention restricted to the last `slidingWindow` keys
    int64_t denseIntermediate = 0;
    // A ragged checkpoint (config moeatlas_expert_widths, written by our exporter for dimension
    // plans): each routed expert's own width, router.numExperts entries, 0 = an expert that adds
    // nothing (its router row still counts). Empty = every expert has moeIntermediate units.
    std::vector<int64_t> expertWidths;
};

// FP8 block-scaled weights (config.json quantization_config with quant_method "fp8", checkpoint/fp8.h):
// every F8_E4M3 weight has a float32 `<name>_scale_inv`, one value per blockRows x blockCols block.
struct Fp8Quantization {
    bool enabled = false;
    int64_t blockRows = 128; // weight_block_size[0]: along the output (row) dimension
    int64_t blockCols = 128; // weight_block_size[1]: along the input (column) dimension
};

struct ModelSpec {
    Architecture arch = Architecture::Mixtral;
    std::string modelType; // config.json "model_type"
    int64_t vocabSize = 0;
    int64_t hiddenSize = 0;
    int numLayers = 0;
    int numHeads = 0;
    int numKvHeads = 0;
    int64_t headDim = 0;
    int64_t maxPositionEmbeddings = 0;
    double rmsNormEps = 1e-6;
    std::string hiddenAct = "silu";
    bool tieWordEmbeddings = false;

    // attention
    bool qkvBias = false; // biases on q/k/v projections
    bool oBias = false; // bias on o_proj
    QkNorm qkNorm = QkNorm::None;
    std::optional<double> clipQkv; // OLMoE: clamp q, k, v to [-clip, clip]
    std::optional<int64_t> slidingWindow;
    RopeSpec rope;

    // experts
    RouterSpec router;
    int64_t moeIntermediate = 0; // width of every routed expert
    int64_t sharedIntermediate = 0; // Qwen2-MoE shared expert width; 0 = no shared expert
    bool sharedExpertGate = false; // Qwen2-MoE: sigmoid(Linear(H, 1)) scales the shared expert
    // glm4_moe / deepseek_v3: the shared expert lives under "mlp.shared_experts." (Qwen: "mlp.shared_expert."),
    // width moe_intermediate_size * n_shared_experts, no gate.
    bool sharedExpertsPlural = false;

    // gpt_oss: learned per-head attention sinks (one logit per head joins each softmax and is dropped
    // after), expert biases, gate/up interleaved on the checkpoint's last dimension (even = gate), the
    // clamped SwiGLU (gate clamped above at swigluLimit, up to [-limit, limit],
    // (up + 1) * gate * sigmoid(alpha * gate)), and norm weights kept in float32 (transformers'
    // _keep_in_fp32_modules).
    bool attentionSinks = false;
    bool expertBias = false;
    bool clampedSwiglu = false;
    double swigluLimit = 7.0;
    double swigluAlpha = 1.702;
    bool normWeightsFloat32 = false;
    // Qwen3.5-MoE: q_proj holds [query; gate] per head and the attention output is multiplied by
    // sigmoid(gate) before o_proj; every RMSNorm except the DeltaNet's output norm is zero-centred,
    // x_hat * (1 + w) computed in fp32 (blocks.h, rmsNorm); linear-attention layers (LayerSpec).
    bool attnOutputGate = false;
    bool zeroCentredNorm = false;
    LinearAttentionSpec linearAttention;
    // deepseek_v3: multi-head latent attention instead of q/k/v projections (MlaSpec::enabled()).
    MlaSpec mla;
    // Prefix of every language-model tensor: "model." or, for a multimodal checkpoint (config.json with a
    // text_config), "model.language_model." (tensor_layout.h).
    std::string tensorPrefix = "model.";
    // FP8 block-scaled weights, dequantized into the compute dtype as they load (decision 55).
    Fp8Quantization fp8;

    std::vector<LayerSpec> layers;
    std::string torchDtype; // config "torch_dtype"/"dtype", informational

    int numMoeLayers() const;
    std::vector<int> moeLayerIndices() const;
    bool ragged() const; // some MoE layer has its own expert widths (LayerSpec::expertWidths)
};

const char* architectureName(Architecture a);

} // namespace moeatlas
