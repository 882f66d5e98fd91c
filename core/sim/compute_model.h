// Compute time of a decode step, layer by layer: a roofline on the model's real shapes (FLOPs and bytes
// of every matmul weight from config.json) or measured per-layer times. Also the bytes of each routed
// expert, which is what crosses the link when an expert is not resident on the GPU.
#pragma once

#include "checkpoint/dtype.h"
#include "checkpoint/model_spec.h"

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

// The non-routed work of one phase of a step: weights read once per step (shared by the batch), matmul
// FLOPs per token, and the attention blocks whose score/value work and KV reads grow with the context.
struct PhaseShape {
    double weightBytes = 0;
    double flopsPerToken = 0;
    int fullAttention = 0; // attention blocks over the whole context
    std::vector<int64_t> windows; // attention blocks over a sliding window of this many keys
};

// Shapes of a model for the roofline. Matmul weights only (norms and biases are left out, < 0.1%).
struct ModelCosts {
    DType dtype = DType::BF16; // weights and KV cache
    int numExperts = 0;
    int topK = 0;
    std::vector<int> moeLayers; // decoder index of each MoE layer
    std::vector<double> expertBytes; // [L_moe * E]: gate + up + down = 3 * H * I_e * dtype bytes
    std::vector<double> expertFlops; // [L_moe * E]: per token routed to it, 2 * 3 * H * I_e
    // [L_moe]: from the end of the previous MoE layer's experts to this layer's router: the dense decoder
    // layers in between (attention + MLP) and this layer's attention projections and router.
    std::vector<PhaseShape> pre;
    std::vector<PhaseShape> shared; // [L_moe]: shared expert and its gate (Qwen2-MoE), else empty
    PhaseShape tail; // dense decoder layers after the last MoE layer and the LM head
    // per token, attention block and key: 4 * heads * headDim (MLA: 2 * heads * (qk_head_dim + v_head_dim))
    double attentionFlopsPerKey = 0;
    // per attention block and key: 2 * kvHeads * headDim * dtype bytes (MLA: the latent, kv_lora_rank +
    // qk_rope_head_dim values, as transformers caches it)
    double kvBytesPerKey = 0;

    int numMoeLayers() const { return static_cast<int>(moeLayers.size()); }
    double bytesOf(int layer, int expert) const
    {
        return expertBytes[static_cast<std::size_t>(layer) * static_cast<std::size_t>(numExperts)
            + static_cast<std::size_t>(expert)];
    }
};

// The weight dtype: `override` (a safetensors spelling "BF16", or a torch one "bfloat16") when given,
// else the config's torch_dtype. RequestError(field) when neither names a float dtype.
DType weightDtype(const ModelSpec& spec, const std::string& override, const std::string& field);

ModelCosts modelCosts(const ModelSpec& spec, DType dtype);

// Measured per-step times of each MoE layer (batch of the run they were measured at): `pre` from the end of
// the previous layer's experts to the router, `moe` the experts phase with `perExpert` added per distinct
// expert run; `tail` after the last MoE layer.
struct LayerTime {
    double pre = 0;
    double moe = 0;
    double perExpert = 0;
};
struct MeasuredTimes {
    std::vector<LayerTime> layers;
    double tail = 0;
};

// {"layers": [{"pre": s, "moe": s, "per_expert": s}, ...], "tail": s}: one entry per MoE layer, every field
// required and >= 0; InputError naming `source` and the field otherwise.
MeasuredTimes parseMeasuredTimes(const nlohmann::json& doc, const std::string& source, int numMoeLayers);

// Phase times of a step. Roofline: time = max(FLOPs / flopsPerSecond, bytes / memoryBandwidth) per phase.
struct ComputeModel {
    ModelCosts costs; // expert bytes always; the rest for the roofline
    double flopsPerSecond = 0;
    double memoryBandwidth = 0;
    std::optional<MeasuredTimes> measured; // when set, replaces the roofline

    // contexts: the number of keys each token of the step attends to (its position in its sequence + 1).
    double preTime(int layer, std::span<const int64_t> contexts) const;
    // experts: the distinct experts run; assignments[i]: how many of the step's tokens run experts[i].
    double moeTime(int layer, std::span<const int32_t> experts, std::span<const int32_t> assignments, int tokens) const;
    double tailTime(std::span<const int64_t> contexts) const;

    // FLOPs and bytes of the phases, as the roofline counts them (tests and reports).
    struct Work {
        double flops = 0;
        double bytes = 0;
    };
    Work phaseWork(const PhaseShape& phase, std::span<const int64_t> contexts) const;
    Work moeWork(int layer, std::span<const int32_t> experts, std::span<const int32_t> assignments, int tokens) const;
};

} // namespace moeatlas
