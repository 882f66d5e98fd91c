// moeatlas generate: random-weight MoE checkpoints (and random calibration files) for tests,
// benchmarks and trying the tool without downloading a model.
#include "commands.h"
#include "request_flags.h"

#include "checkpoint/random_model.h"
#include "util/error.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>
#include <memory>
#include <vector>

namespace moeatlas::cli {

namespace {

struct GenerateArgs {
    RandomModelOptions model;
    std::string arch = "qwen3_moe";
    std::string dtype = "float32";
    std::string output;
    std::string calibration;
    int calibrationDocs = 16;
    int64_t calibrationDocTokens = 256;
    int64_t shardMiB = 1024;
    std::vector<int64_t> fp8Block { 128, 128 };
    bool force = false;
};

int runGenerate(GenerateArgs a)
{
    static const std::map<std::string, Architecture> archs
        = { { "mixtral", Architecture::Mixtral }, { "qwen2_moe", Architecture::Qwen2Moe },
              { "qwen3_moe", Architecture::Qwen3Moe }, { "olmoe", Architecture::Olmoe },
              { "gpt_oss", Architecture::GptOss }, { "qwen3_5_moe", Architecture::Qwen3_5Moe },
              { "glm4_moe", Architecture::Glm4Moe }, { "deepseek_v3", Architecture::DeepseekV3 } };
    static const std::map<std::string, DType> dtypes
        = { { "float32", DType::F32 }, { "bfloat16", DType::BF16 }, { "float16", DType::F16 } };
    if (!archs.count(a.arch))
        throw InputError("--arch '" + a.arch
            + "' (expected mixtral, qwen2_moe, qwen3_moe, olmoe, gpt_oss, qwen3_5_moe, glm4_moe or deepseek_v3)");
    if (!dtypes.count(a.dtype))
        throw InputError("--dtype '" + a.dtype + "' (expected float32, bfloat16 or float16)");
    a.model.arch = archs.at(a.arch);
    a.model.dtype = dtypes.at(a.dtype);
    a.model.maxShardBytes = static_cast<uint64_t>(a.shardMiB) << 20;
    a.model.fp8BlockRows = a.fp8Block.at(0);
    a.model.fp8BlockCols = a.fp8Block.at(1);
    if (!a.output.empty()) {
        writeRandomModel(a.model, a.output, a.force);
        std::printf("%s\n", a.output.c_str());
    }
    if (!a.calibration.empty()) {
        writeRandomCalibration(
            a.calibration, a.model.vocabSize, a.calibrationDocs, a.calibrationDocTokens, a.model.seed);
        std::printf("%s\n", a.calibration.c_str());
    }
    if (a.output.empty() && a.calibration.empty())
        throw InputError("nothing to do: give --output and/or --calibration");
    return 0;
}

} // namespace

Command addGenerateCommand(CLI::App& app)
{
    auto a = std::make_shared<GenerateArgs>();
    CLI::App* sub = app.add_subcommand("generate", "Write a random-weight MoE checkpoint in Hugging Face layout");
    sub->add_option("--output,-o", a->output, "Checkpoint directory to create");
    sub->add_option(
           "--arch", a->arch, "mixtral, qwen2_moe, qwen3_moe, olmoe, gpt_oss, qwen3_5_moe, glm4_moe or deepseek_v3")
        ->capture_default_str();
    sub->add_option("--dtype", a->dtype, "float32, bfloat16 or float16")->capture_default_str();
    sub->add_option("--layers", a->model.numLayers)->capture_default_str();
    sub->add_option("--hidden", a->model.hiddenSize)->capture_default_str();
    sub->add_option("--heads", a->model.numHeads)->capture_default_str();
    sub->add_option("--kv-heads", a->model.numKvHeads)->capture_default_str();
    sub->add_option("--head-dim", a->model.headDim)->capture_default_str();
    sub->add_option("--experts", a->model.numExperts)->capture_default_str();
    sub->add_option("--top-k", a->model.topK)->capture_default_str();
    sub->add_option("--expert-width", a->model.moeIntermediate, "moe_intermediate_size")->capture_default_str();
    sub->add_option("--shared-width", a->model.sharedIntermediate,
           "shared expert width (qwen2_moe; qwen3_5_moe: 0 = --expert-width)")
        ->capture_default_str();
    sub->add_option("--dense-width", a->model.denseIntermediate, "width of dense (mlp_only) layers")
        ->capture_default_str();
    sub->add_option("--mlp-only-layers", a->model.mlpOnlyLayers, "layers with a dense MLP (qwen2_moe, qwen3_moe)");
    sub->add_option("--full-attention-interval", a->model.fullAttentionInterval,
           "qwen3_5_moe: every n-th layer is full attention, the others Gated DeltaNet")
        ->capture_default_str();
    sub->add_option("--linear-key-heads", a->model.linearKeyHeads, "qwen3_5_moe: linear_num_key_heads")
        ->capture_default_str();
    sub->add_option("--linear-value-heads", a->model.linearValueHeads, "qwen3_5_moe: linear_num_value_heads")
        ->capture_default_str();
    sub->add_option("--linear-key-head-dim", a->model.linearKeyHeadDim, "qwen3_5_moe: linear_key_head_dim")
        ->capture_default_str();
    sub->add_option("--linear-value-head-dim", a->model.linearValueHeadDim, "qwen3_5_moe: linear_value_head_dim")
        ->capture_default_str();
    sub->add_option("--dense-layers", a->model.firstDenseLayers, "glm4_moe, deepseek_v3: first_k_dense_replace")
        ->capture_default_str();
    sub->add_option("--groups", a->model.numGroups, "glm4_moe, deepseek_v3: n_group (expert groups of the router)")
        ->capture_default_str();
    sub->add_option("--topk-groups", a->model.topkGroup, "glm4_moe, deepseek_v3: topk_group (groups a token may use)")
        ->capture_default_str();
    sub->add_option("--routed-scaling", a->model.routedScalingFactor, "glm4_moe, deepseek_v3: routed_scaling_factor")
        ->capture_default_str();
    sub->add_option("--q-lora-rank", a->model.qLoraRank, "deepseek_v3: q_lora_rank (0 = null: a plain q_proj)")
        ->capture_default_str();
    sub->add_option("--kv-lora-rank", a->model.kvLoraRank, "deepseek_v3: kv_lora_rank")->capture_default_str();
    sub->add_option("--qk-nope-dim", a->model.qkNopeHeadDim, "deepseek_v3: qk_nope_head_dim")->capture_default_str();
    sub->add_option("--qk-rope-dim", a->model.qkRopeHeadDim, "deepseek_v3: qk_rope_head_dim")->capture_default_str();
    sub->add_option("--v-head-dim", a->model.vHeadDim, "deepseek_v3: v_head_dim")->capture_default_str();
    sub->add_option("--vocab", a->model.vocabSize)->capture_default_str();
    sub->add_flag("--fused", a->model.fusedExperts, "Store experts fused per layer (transformers v5 layout)");
    sub->add_flag("--fp8", a->model.fp8,
        "Store the decoder layers' matrices (not the router) as FP8 E4M3 with float32 block scales "
        "(weight_scale_inv), as DeepSeek-V3 ships them; the rest in --dtype");
    sub->add_option("--fp8-block", a->fp8Block, "FP8 block size ROWS,COLS (weight_block_size)")
        ->expected(2)
        ->delimiter(',')
        ->capture_default_str();
    sub->add_option("--seed", a->model.seed)->capture_default_str();
    sub->add_option("--shard-mib", a->shardMiB, "Largest shard in MiB")->capture_default_str();
    sub->add_option("--calibration", a->calibration, "Also write a random input_ids JSONL calibration file");
    sub->add_option("--calibration-docs", a->calibrationDocs)->capture_default_str();
    sub->add_option("--calibration-doc-tokens", a->calibrationDocTokens)->capture_default_str();
    sub->add_flag("--force", a->force, "Replace an existing output directory");
    return [a] { return namingFlags(kForceFlags, [&] { return runGenerate(*a); }); };
}

} // namespace moeatlas::cli
