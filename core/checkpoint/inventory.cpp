#include "checkpoint/inventory.h"

#include "checkpoint/fp8.h"

#include <cmath>
#include <regex>

namespace moeatlas {

const char* componentName(Component c)
{
    switch (c) {
    case Component::Attention:
        return "attention";
    case Component::Router:
        return "router";
    case Component::RoutedExperts:
        return "routed experts";
    case Component::SharedExperts:
        return "shared experts";
    case Component::DenseMlp:
        return "dense MLP";
    case Component::Norms:
        return "norms";
    case Component::Embeddings:
        return "embeddings";
    case Component::LmHead:
        return "lm_head";
    case Component::Other:
        return "other";
    }
    return "?";
}

namespace {
bool contains(const std::string& s, const char* part)
{
    return s.find(part) != std::string::npos;
}
bool endsWith(const std::string& s, const std::string& suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
} // namespace

Component componentOf(const std::string& n)
{
    if (contains(n, "embed_tokens"))
        return Component::Embeddings;
    if (n.rfind("lm_head", 0) == 0)
        return Component::LmHead;
    if (contains(n, ".self_attn.")) {
        // q_norm / k_norm, and MLA's q_a_layernorm / kv_a_layernorm (deepseek_v3).
        return contains(n, "_norm.") || contains(n, "layernorm.") ? Component::Norms : Component::Attention;
    }
    if (contains(n, "shared_expert"))
        return Component::SharedExperts;
    if (contains(n, ".experts."))
        return Component::RoutedExperts;
    if (endsWith(n, "mlp.gate.weight") || endsWith(n, "block_sparse_moe.gate.weight")
        || contains(n, "e_score_correction_bias") || contains(n, ".mlp.router.")) // gpt_oss: mlp.router.{weight,bias}
        return Component::Router;
    if (contains(n, ".mlp."))
        return Component::DenseMlp;
    if (contains(n, "norm"))
        return Component::Norms;
    return Component::Other;
}

Inventory takeInventory(const Checkpoint& checkpoint, const ModelSpec& spec)
{
    Inventory inv;
    inv.routedExpertsPerLayer.resize(static_cast<std::size_t>(spec.numLayers));
    static const std::regex layerRe(R"(^model\.layers\.(\d+)\.)");
    for (const std::string& name : checkpoint.names()) {
        const TensorInfo& info = checkpoint.info(name);
        const Component c = componentOf(name);
        Amount& a = inv.byComponent[static_cast<std::size_t>(c)];
        // FP8 block scales (`*_scale_inv`) are bytes of their weight's component, not parameters.
        const int64_t params = isFp8ScaleName(name) ? 0 : info.numel();
        a.params += params;
        a.bytes += info.byteSize();
        inv.total.params += params;
        inv.total.bytes += info.byteSize();
        std::smatch m;
        if (c == Component::RoutedExperts && std::regex_search(name, m, layerRe)) {
            const auto layer = static_cast<std::size_t>(std::stoi(m[1].str()));
            if (layer < inv.routedExpertsPerLayer.size()) {
                inv.routedExpertsPerLayer[layer].params += params;
                inv.routedExpertsPerLayer[layer].bytes += info.byteSize();
            }
        }
    }
    const double activeFraction
        = spec.router.numExperts > 0 ? static_cast<double>(spec.router.topK) / spec.router.numExperts : 0.0;
    const int64_t routed = inv[Component::RoutedExperts].params;
    // Tied embeddings are used once as input (a row gather) and once as the output projection.
    const int64_t lmHead = spec.tieWordEmbeddings ? inv[Component::Embeddings].params : inv[Component::LmHead].params;
    inv.activeParamsPerToken = inv.total.params - routed - inv[Component::Embeddings].params
        - inv[Component::LmHead].params + lmHead
        + static_cast<int64_t>(std::llround(static_cast<double>(routed) * activeFraction));
    return inv;
}

Amount sizeAfterExpertPruning(const Inventory& inv, double keptFraction)
{
    Amount out = inv.total;
    const Amount& routed = inv[Component::RoutedExperts];
    const Amount& router = inv[Component::Router];
    const double dropped = 1.0 - keptFraction;
    out.params -= static_cast<int64_t>(std::llround(static_cast<double>(routed.params + router.params) * dropped));
    out.bytes -= static_cast<uint64_t>(std::llround(static_cast<double>(routed.bytes + router.bytes) * dropped));
    return out;
}

} // namespace moeatlas
