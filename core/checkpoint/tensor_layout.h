// The architecture adapter as data: which tensors a checkpoint of a given ModelSpec must hold,
// under which names and with which shapes, in either expert layout found in the wild —
// routed experts stored one by one (hub layout) or fused per layer (transformers v5 layout).
#pragma once

#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moeatlas {

enum class ExpertLayout { PerExpert, Fused };
enum class ExpertProj { Gate, Up, Down };

// "[8, 16]": shapes as error messages print them.
std::string formatShape(const std::vector<int64_t>& shape);

struct ExpectedTensor {
    std::string name;
    std::vector<int64_t> shape;
};

class TensorLayout {
public:
    // Detects the expert layout from the first MoE layer's tensor names.
    TensorLayout(const Checkpoint& checkpoint, const ModelSpec& spec);

    ExpertLayout expertLayout() const { return m_layout; }
    // gpt_oss hub checkpoints: experts stored as MXFP4 (`<name>_blocks` uint8 [E, rows, cols/32, 16],
    // two E2M1 values per byte, low nibble first; `<name>_scales` uint8 E8M0 [E, rows, cols/32]).
    bool mxfp4() const { return m_mxfp4; }

    std::string layerPrefix(int layer) const; // "model.layers.<l>." (ModelSpec::tensorPrefix + "layers.<l>.")
    std::string embedName() const; // "model.embed_tokens.weight"
    std::string finalNormName() const; // "model.norm.weight"
    std::string moePrefix(int layer) const; // "...block_sparse_moe." or "...mlp."
    std::string routerName(int layer) const;
    // Per-expert layout: one expert's projection ("w1"/"w3"/"w2" for Mixtral; "gate_proj", "up_proj",
    // "down_proj" for every architecture in a layer with its own expert widths, ModelSpec::ragged()).
    std::string expertName(int layer, int expert, ExpertProj proj) const;
    // Fused layout: [E, 2I, H] (gate rows first) and [E, H, I].
    std::string fusedGateUpName(int layer) const;
    std::string fusedDownName(int layer) const;
    // gpt_oss: "...mlp.router.bias" and the expert biases "...experts.gate_up_proj_bias" [E, 2I] (gate and up
    // interleaved) and "...experts.down_proj_bias" [E, H]. Its fused tensors are stored transposed:
    // gate_up_proj [E, H, 2I] (even columns gate, odd up), down_proj [E, I, H].
    std::string routerBiasName(int layer) const;
    // The sigmoid router's selection bias (glm4_moe): "...mlp.gate.e_score_correction_bias" [E].
    std::string correctionBiasName(int layer) const;
    // The shared expert's projections: "...mlp.shared_expert." (Qwen) or "...mlp.shared_experts." (glm4_moe).
    std::string sharedExpertPrefix(int layer) const;

    // Every tensor of one decoder layer / outside the layers, with the shape config.json implies.
    std::vector<ExpectedTensor> layerTensors(int layer) const;
    std::vector<ExpectedTensor> globalTensors() const;

    // Checks that every expected tensor exists, has the expected shape and a floating-point
    // dtype, and that FP8 block-scaled weights have their scales (checkpoint/fp8.h); throws
    // InputError naming the shard file, the tensor, and both shapes.
    void validate(const Checkpoint& checkpoint) const;
    // Bytes of one layer's tensors in the checkpoint (FP8 block scales included).
    uint64_t layerBytes(const Checkpoint& checkpoint, int layer) const;
    // Values of one layer's tensors once loaded (an FP8 or MXFP4 weight counts its decoded values,
    // its scales none): times the compute dtype's size, the layer's memory in the engine.
    uint64_t layerValues(int layer) const;

private:
    void appendSelfAttention(std::vector<ExpectedTensor>& t, const std::string& layerPrefix) const;
    // deepseek_v3's multi-head latent attention (ModelSpec::mla): q_proj or q_a_proj/q_a_layernorm/q_b_proj,
    // kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj (biases on q_a, kv_a and o with attention_bias).
    void appendMlaAttention(std::vector<ExpectedTensor>& t, const std::string& layerPrefix) const;
    void appendLinearAttention(std::vector<ExpectedTensor>& t, const std::string& attnPrefix) const;
    void appendMlp(std::vector<ExpectedTensor>& t, int layer) const;

    const ModelSpec& m_spec;
    ExpertLayout m_layout = ExpertLayout::PerExpert;
    bool m_mxfp4 = false;
    bool m_blockSparseMoe = false; // Mixtral hub layout names the MoE block "block_sparse_moe"
};

} // namespace moeatlas
