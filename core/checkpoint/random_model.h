// Writes random-weight MoE checkpoints in stock Hugging Face layout (config.json + sharded
// safetensors), for tests, benchmarks and the streaming proof. transformers loads them.
#pragma once

#include "checkpoint/dtype.h"
#include "checkpoint/model_spec.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moeatlas {

struct RandomModelOptions {
    Architecture arch = Architecture::Qwen3Moe;
    int numLayers = 4;
    int64_t hiddenSize = 256;
    int numHeads = 4;
    int numKvHeads = 2;
    int64_t headDim = 64;
    int numExperts = 16;
    int topK = 2;
    int64_t moeIntermediate = 128;
    int64_t sharedIntermediate = 0; // qwen2_moe only
    int64_t denseIntermediate = 512; // for mlp_only_layers
    std::vector<int> mlpOnlyLayers; // qwen2_moe / qwen3_moe
    // qwen3_5_moe: every fullAttentionInterval-th layer is full attention, the others Gated DeltaNet
    // layers of these dimensions; sharedIntermediate 0 = moeIntermediate (it always has a shared expert).
    int fullAttentionInterval = 4;
    int linearKeyHeads = 2;
    int linearValueHeads = 4;
    int64_t linearKeyHeadDim = 64;
    int64_t linearValueHeadDim = 64;
    int64_t linearConvKernel = 4;
    // glm4_moe: the first firstDenseLayers layers dense (first_k_dense_replace), the sigmoid router's groups
    // (n_group, topk_group), its scaling, one shared expert of moeIntermediate units, q/k norms, partial RoPE 0.5;
    // e_score_correction_bias drawn N(0, correctionBiasStd).
    // deepseek_v3 uses the same options (one shared expert, no q/k norm, full RoPE of the rope part) and these
    // MLA dimensions (qLoraRank 0 = q_lora_rank null: a plain q_proj); headDim is not used. Its config is
    // DeepSeek-V3's hub form: interleaved RoPE, YaRN factor 40 with mscale = mscale_all_dim = 1.
    int64_t qLoraRank = 96;
    int64_t kvLoraRank = 64;
    int64_t qkNopeHeadDim = 32;
    int64_t qkRopeHeadDim = 16;
    int64_t vHeadDim = 32;
    int firstDenseLayers = 1;
    int numGroups = 1;
    int topkGroup = 1;
    double routedScalingFactor = 1.0;
    double correctionBiasStd = 0.05;
    int64_t vocabSize = 1024;
    DType dtype = DType::F32; // F32, BF16 or F16
    // FP8 block-scaled weights (checkpoint/fp8.h, DeepSeek-V3's hub form): every matrix of the decoder layers but
    // the router (and Qwen's shared-expert gate, and Qwen3.5's linear attention) stored F8_E4M3 with a float32
    // `_scale_inv` per fp8BlockRows x fp8BlockCols block (partial blocks at the edges), and config.json's
    // quantization_config; the rest in `dtype`. Not for gpt_oss (its hub experts are MXFP4).
    bool fp8 = false;
    int64_t fp8BlockRows = 128;
    int64_t fp8BlockCols = 128;
    bool fusedExperts = false; // transformers v5 fused layout instead of the hub's per-expert one
    bool normTopkProb = true;
    double initStd = 0.02;
    double routerStd = 0.5; // larger, so routing is far from uniform
    uint64_t seed = 0;
    uint64_t maxShardBytes = 1ull << 30;
};

// The config.json object for these options.
std::string randomModelConfig(const RandomModelOptions& options);
void writeRandomModel(const RandomModelOptions& options, const std::filesystem::path& dir, bool overwrite);

// A JSONL file of `numDocs` documents of random token ids ({"input_ids": [...]}) for calibration.
void writeRandomCalibration(
    const std::filesystem::path& path, int64_t vocabSize, int numDocs, int64_t docTokens, uint64_t seed);

} // namespace moeatlas
