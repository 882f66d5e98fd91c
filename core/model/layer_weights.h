// Loading one decoder layer's weights from a checkpoint into compute tensors, by the names and
// shapes TensorLayout (the architecture adapter) gives. Engine-internal header (LibTorch types).
#pragma once

#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"
#include "checkpoint/tensor_layout.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

struct Linear {
    at::Tensor weight; // [out, in]
    at::Tensor bias; // [out] or undefined
};

// The routed experts of one MoE layer cut to their kept intermediate units, executed directly (a
// dimension plan at its real width instead of a 0/1 mask at full width). Expert e keeps widths[e]
// units in their original order; a zero-width expert has undefined tensors and adds nothing, but
// its router row still takes part in the softmax and top-k (its routing weight is simply lost, as
// in the ragged checkpoint the exporter writes).
struct RaggedExperts {
    std::vector<int64_t> widths; // [E]
    std::vector<at::Tensor> gateUp; // per expert [2 * widths[e], H], gate rows first
    std::vector<at::Tensor> down; // per expert [H, widths[e]]
    // gpt_oss expert biases (empty for the others): per expert [2 * widths[e]] (gate first) and [H].
    std::vector<at::Tensor> gateUpBias;
    std::vector<at::Tensor> downBias;

    bool empty() const { return widths.empty(); }
    int64_t numExperts() const { return static_cast<int64_t>(widths.size()); }
    int64_t maxWidth() const;
    uint64_t bytes() const; // of the sliced tensors
};

// A Gated DeltaNet (Qwen3.5-MoE linear_attention layer), as Qwen3_5MoeGatedDeltaNet holds it.
struct DeltaNetWeights {
    Linear inProjQkv; // [2 * keyDim + valueDim, H]: q, k, v before the convolution
    Linear inProjZ; // [valueDim, H]: the output gate
    Linear inProjB; // [nv, H]: beta = sigmoid(b)
    Linear inProjA; // [nv, H]: the decay's input
    Linear outProj; // [H, valueDim]
    at::Tensor conv; // [convDim, kernel]: the depthwise conv1d weight without its singleton dimension
    at::Tensor dtBias; // [nv]
    at::Tensor aLog; // [nv]
    at::Tensor norm; // [valueHeadDim]: the gated RMSNorm's weight (plain, not zero-centred)
    bool defined() const { return outProj.weight.defined(); }
};

// Multi-head latent attention (deepseek_v3, ModelSpec::mla): the query path (LayerWeights::q when q_lora_rank is
// null, else qA -> qANorm -> qB), the latent path and LayerWeights::o.
struct MlaWeights {
    Linear qA; // [qLoraRank, H]
    at::Tensor qANorm; // [qLoraRank]
    Linear qB; // [heads * qkHeadDim, qLoraRank]
    Linear kvA; // kv_a_proj_with_mqa [kvLoraRank + qkRopeHeadDim, H]
    at::Tensor kvANorm; // [kvLoraRank]
    Linear kvB; // [heads * (qkNopeHeadDim + vHeadDim), kvLoraRank]
    bool defined() const { return kvA.weight.defined(); }
};

struct LayerWeights {
    int layer = 0;
    DeltaNetWeights deltaNet; // a linear-attention layer: used instead of q, k, v, o
    MlaWeights mla; // a deepseek_v3 layer: used with q (no q-LoRA) and o instead of q, k, v
    at::Tensor inputNorm; // [H] (float32 where ModelSpec::normWeightsFloat32)
    at::Tensor postAttentionNorm; // [H]
    Linear q, k, v, o;
    at::Tensor qNorm, kNorm; // undefined when the architecture has none

    bool moe = false;
    at::Tensor router; // [E, H]
    at::Tensor routerBias; // [E] (gpt_oss) or undefined
    // The sigmoid router (RouterSpec::sigmoid()): e_score_correction_bias [E] float32 (selection only), and
    // the logits computed in fp32 whatever the compute dtype.
    at::Tensor correctionBias;
    bool routerFloat32 = false;
    at::Tensor sinks; // [numHeads] attention sink logits (gpt_oss) or undefined
    // gpt_oss expert biases, de-interleaved like gateUp: [E, 2I] gate first, and [E, H]; else undefined.
    at::Tensor gateUpBias;
    at::Tensor downBias;
    at::Tensor gateUp; // [E, 2I, H], gate rows first; undefined for a ragged layer
    at::Tensor down; // [E, H, I]; undefined for a ragged layer
    RaggedExperts ragged; // a layer of a ragged checkpoint (LayerSpec::expertWidths), else empty
    // Shared expert (Qwen2-MoE, glm4_moe) or the dense MLP of a non-MoE layer.
    Linear mlpGate, mlpUp, mlpDown;
    at::Tensor sharedExpertGate; // [1, H] or undefined
    uint64_t sourceBytes = 0; // bytes read from the checkpoint
};

// Copies the kept units of every routed expert out of w.gateUp / w.down (index_select: gate and up
// rows, down columns; same dtype and device). units[e] lists expert e's kept units, sorted, in
// [0, I); the caller validates them (Executor::evaluate names the variant and layer in its errors).
RaggedExperts sliceExperts(const LayerWeights& w, const std::vector<std::vector<int>>& units);

struct WeightLoadOptions {
    c10::Device device = c10::Device(c10::kCPU);
    c10::ScalarType dtype = c10::kFloat;
    bool releaseSourcePages = true; // madvise the mapped bytes away after copying
};

class WeightLoader {
public:
    // Detects the expert layout and checks that every tensor of every layer exists with the
    // expected shape and a floating-point dtype, naming the first bad tensor in an InputError.
    WeightLoader(const Checkpoint& checkpoint, const ModelSpec& spec, WeightLoadOptions options);

    const TensorLayout& layout() const { return m_layout; }
    LayerWeights loadLayer(int layer) const;
    // Rows of the embedding matrix for the given ids, gathered straight from the mapping,
    // as [ids.size(), H] in the compute dtype.
    at::Tensor embed(const std::vector<int32_t>& ids) const;
    at::Tensor finalNorm() const;
    at::Tensor lmHead() const; // [V, H]; the embedding when tied
    // Bytes of one layer's tensors in the checkpoint (for memory plans).
    uint64_t layerBytes(int layer) const { return m_layout.layerBytes(m_ckpt, layer); }

private:
    at::Tensor load(const std::string& name, const std::vector<int64_t>& shape) const;
    // An FP8 block-scaled weight (checkpoint/fp8.h) dequantized matrix by matrix into the compute dtype.
    at::Tensor loadFp8(const std::string& name, const std::vector<int64_t>& shape) const;
    // Converts the tensor straight into `destination` (a slice of a fused buffer), no temporary.
    void loadInto(const std::string& name, const at::Tensor& destination) const;
    Linear loadLinear(const std::string& prefix, int64_t out, int64_t in, bool bias) const;
    // An RMSNorm weight: as stored, 1 + w in fp32 for a zero-centred norm (ModelSpec::zeroCentredNorm), or
    // float32 where the spec keeps norms so (ModelSpec::normWeightsFloat32).
    at::Tensor loadNorm(const std::string& name, int64_t size) const;
    void loadSelfAttention(const std::string& layerPrefix, LayerWeights& w) const;
    void loadMlaAttention(const std::string& layerPrefix, LayerWeights& w) const;
    DeltaNetWeights loadDeltaNet(const std::string& prefix) const;
    void loadExperts(int layer, LayerWeights& w) const;
    // gpt_oss: the fused (transposed, interleaved) or MXFP4 experts into the [gate; up] form.
    void loadGptOssExperts(int layer, LayerWeights& w) const;
    at::Tensor loadMxfp4(const std::string& name, int64_t experts, int64_t rows, int64_t cols) const;

    const Checkpoint& m_ckpt;
    const ModelSpec& m_spec;
    WeightLoadOptions m_opt;
    TensorLayout m_layout;
};

// Converts checkpoint bytes of `dtype` into a new tensor of `shape` in the target dtype/device.
at::Tensor tensorFromBytes(
    const void* data, DType dtype, const std::vector<int64_t>& shape, c10::ScalarType target, c10::Device device);

} // namespace moeatlas
