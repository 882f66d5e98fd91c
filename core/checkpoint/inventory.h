// Where a checkpoint's parameters and bytes are: per component (attention, router, routed
// experts, shared experts, dense MLPs, norms, embeddings, lm_head), per layer, and what removing
// routed experts would save.
#pragma once

#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace moeatlas {

enum class Component { Attention, Router, RoutedExperts, SharedExperts, DenseMlp, Norms, Embeddings, LmHead, Other };
inline constexpr int kComponentCount = 9;
const char* componentName(Component c);
// Classifies a tensor by its Hugging Face name.
Component componentOf(const std::string& tensorName);

struct Amount {
    int64_t params = 0;
    uint64_t bytes = 0;
};

struct Inventory {
    std::array<Amount, kComponentCount> byComponent {};
    Amount total;
    int64_t activeParamsPerToken = 0; // everything but routed experts, plus top-k/E of them
    std::vector<Amount> routedExpertsPerLayer; // [numLayers]
    const Amount& operator[](Component c) const { return byComponent[static_cast<std::size_t>(c)]; }
};

Inventory takeInventory(const Checkpoint& checkpoint, const ModelSpec& spec);

// Checkpoint size after keeping `keptFraction` of the routed experts in every MoE layer
// (router rows shrink with them).
Amount sizeAfterExpertPruning(const Inventory& inv, double keptFraction);

} // namespace moeatlas
