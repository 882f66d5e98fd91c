#include "plan/plan_costs.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/inventory.h"
#include "checkpoint/tensor_layout.h"

#include <nlohmann/json.hpp>

namespace moeatlas {

PlanContext planContextFor(const Checkpoint& checkpoint)
{
    const nlohmann::json& config = checkpoint.config();
    const ModelSpec spec = parseModelSpec(config, (checkpoint.dir() / "config.json").string());
    const TensorLayout layout(checkpoint, spec);
    const Inventory inv = takeInventory(checkpoint, spec);

    PlanContext ctx;
    ctx.topK = spec.router.topK;
    ctx.numGroups
        = config.contains("n_group") && config["n_group"].is_number_integer() ? config["n_group"].get<int>() : 1;
    ctx.modelType = spec.modelType;
    ctx.checkpoint = checkpoint.dir().string();
    ctx.numLayers = spec.numLayers;
    ctx.intermediate = spec.moeIntermediate;
    const auto E = static_cast<uint64_t>(spec.router.numExperts);
    PlanCosts& c = ctx.costs;
    c.fixedBytes = inv.total.bytes;
    c.fixedParams = inv.total.params;
    for (int l : spec.moeLayerIndices()) {
        const Amount& experts = inv.routedExpertsPerLayer[static_cast<std::size_t>(l)];
        const TensorInfo& router = checkpoint.info(layout.routerName(l));
        uint64_t bytes = experts.bytes / E + router.byteSize() / E;
        int64_t params = (experts.params + router.numel()) / static_cast<int64_t>(E);
        // DeepSeek-style correction bias: one entry per expert.
        const std::string bias = layout.moePrefix(l) + "gate.e_score_correction_bias";
        if (checkpoint.contains(bias)) {
            bytes += checkpoint.info(bias).byteSize() / E;
            params += checkpoint.info(bias).numel() / static_cast<int64_t>(E);
        }
        // gpt_oss: the router's bias (one entry per expert), and each expert's down bias, which stays whole
        // whatever units it keeps (so it is part of the expert, not of its units).
        uint64_t wholeBytes = 0;
        int64_t wholeParams = 0;
        if (spec.router.bias) {
            const TensorInfo& rb = checkpoint.info(layout.routerBiasName(l));
            bytes += rb.byteSize() / E;
            params += rb.numel() / static_cast<int64_t>(E);
        }
        if (spec.expertBias) {
            const TensorInfo& db = checkpoint.info(layout.fusedDownName(l) + "_bias");
            wholeBytes = db.byteSize();
            wholeParams = db.numel();
        }
        c.expertBytes.push_back(bytes);
        c.expertParams.push_back(params);
        const auto units = static_cast<uint64_t>(spec.moeIntermediate) * E;
        c.unitBytes.push_back((experts.bytes - wholeBytes) / units);
        c.unitParams.push_back((experts.params - wholeParams) / static_cast<int64_t>(units));
        c.fixedBytes -= bytes * E;
        c.fixedParams -= params * static_cast<int64_t>(E);
    }
    c.activeParamsBefore = inv.activeParamsPerToken;
    c.routerRowParams = spec.hiddenSize;
    return ctx;
}

} // namespace moeatlas
