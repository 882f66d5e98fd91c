#include "runtime/variant_layers.h"

#include "util/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

namespace moeatlas {

namespace {

// Throws InputError unless there is one list per routed expert, each sorted and in [0, width).
void checkUnitLists(
    const std::vector<std::vector<int>>& perExpert, int64_t numExperts, int64_t width, const std::string& where)
{
    if (static_cast<int64_t>(perExpert.size()) != numExperts)
        throw InputError(where + ": unit lists for " + std::to_string(perExpert.size()) + " experts, expected "
            + std::to_string(numExperts) + " (one per routed expert)");
    for (int64_t e = 0; e < numExperts; ++e) {
        int previous = -1;
        for (const int j : perExpert[static_cast<std::size_t>(e)]) {
            if (j <= previous || j >= width)
                throw InputError(where + ", expert " + std::to_string(e) + ": unit " + std::to_string(j)
                    + " is out of order or out of range [0, " + std::to_string(width) + ")");
            previous = j;
        }
    }
}

// [E, I] float32 0/1 mask from per-expert kept unit lists (validated by checkUnitLists).
at::Tensor unitMaskTensor(const std::vector<std::vector<int>>& perExpert, int64_t numExperts, int64_t width)
{
    std::vector<float> mask(static_cast<std::size_t>(numExperts * width), 0.0f);
    for (int64_t e = 0; e < numExperts; ++e)
        for (const int j : perExpert[static_cast<std::size_t>(e)])
            mask[static_cast<std::size_t>(e * width + j)] = 1.0f;
    return at::tensor(at::ArrayRef<float>(mask), at::kFloat).view({ numExperts, width });
}

void checkMoeLayer(const ModelSpec& s, int layer, const std::string& where)
{
    if (layer < 0 || layer >= s.numLayers || !s.layers[static_cast<std::size_t>(layer)].moe)
        throw InputError(where + ": not a MoE layer of this model");
}

} // namespace

std::vector<VariantLayers> prepareVariants(const ModelSpec& s, std::span<const ExpertMask> variants, bool maskedUnits,
    c10::Device device, c10::ScalarType dtype)
{
    const int64_t E = s.router.numExperts;
    std::vector<VariantLayers> out(variants.size());
    for (std::size_t v = 0; v < variants.size(); ++v) {
        const ExpertMask& m = variants[v];
        const int slots = m.routing.maxK(s.router.topK);
        if (slots < 1 || slots > E)
            throw RequestError("routing",
                "variant '" + m.name + "': routing '" + m.routing.name() + "' routes up to " + std::to_string(slots)
                    + " experts; the router has " + std::to_string(E));
        if (m.routing.kind == RoutingRule::Kind::Threshold)
            for (const int layer : s.moeLayerIndices())
                if (!m.routing.thresholds.contains(layer))
                    throw RequestError("routing",
                        "variant '" + m.name + "': routing '" + m.routing.name()
                            + "' has no calibrated threshold for layer " + std::to_string(layer));
        for (const auto& [layer, keep] : m.keep) {
            const std::string where = "variant '" + m.name + "', layer " + std::to_string(layer);
            checkMoeLayer(s, layer, where);
            std::vector<uint8_t> kept(static_cast<std::size_t>(E), 0);
            for (const int e : keep) {
                if (e < 0 || e >= E)
                    throw InputError(
                        where + ": expert " + std::to_string(e) + " is out of range [0, " + std::to_string(E) + ")");
                kept[static_cast<std::size_t>(e)] = 1;
            }
            const auto count = std::count(kept.begin(), kept.end(), uint8_t { 1 });
            if (count < slots)
                throw InputError(where + ": keeps " + std::to_string(count) + " experts, fewer than the "
                    + (m.routing.isModel() ? "router's top-k (" : "routing's largest k (") + std::to_string(slots)
                    + ")");
            out[v].keptExperts[layer] = at::tensor(at::ArrayRef<uint8_t>(kept), at::kByte).to(device, at::kBool);
        }
        for (const auto& [layer, perExpert] : m.units) {
            const std::string where = "variant '" + m.name + "', layer " + std::to_string(layer);
            checkMoeLayer(s, layer, where);
            if (!s.layers[static_cast<std::size_t>(layer)].expertWidths.empty())
                throw InputError(where
                    + ": its experts already have their own widths (a ragged checkpoint); "
                      "dimension plans apply to the full-width model they were made for");
            checkUnitLists(perExpert, E, s.moeIntermediate, where);
            if (maskedUnits) {
                out[v].unitMask[layer] = unitMaskTensor(perExpert, E, s.moeIntermediate).to(device, dtype);
                continue;
            }
            std::vector<std::vector<int>> lists = perExpert;
            if (const auto kept = m.keep.find(layer); kept != m.keep.end())
                for (int e = 0; e < E; ++e)
                    if (std::find(kept->second.begin(), kept->second.end(), e) == kept->second.end())
                        lists[static_cast<std::size_t>(e)].clear();
            out[v].unitLists[layer] = std::move(lists);
        }
    }
    return out;
}

} // namespace moeatlas
