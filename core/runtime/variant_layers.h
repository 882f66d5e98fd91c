// The model variants of Executor::evaluate turned into per-layer block options: router masks and
// unit lists, validated before any work. Engine-internal header (LibTorch types).
#pragma once

#include "checkpoint/model_spec.h"
#include "runtime/executor.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <map>
#include <span>
#include <vector>

namespace moeatlas {

// What one variant changes in each MoE layer it names (absent layers: the model as it is).
struct VariantLayers {
    std::map<int, at::Tensor> keptExperts; // [E] bool on the device (MoeOptions::keptExperts)
    std::map<int, at::Tensor> unitMask; // [E, I] 0/1 in the compute dtype, only with maskedUnits
    // Without maskedUnits: each routed expert's kept units, to slice its weights (sliceExperts) when
    // the layer is loaded. Experts the router mask drops are never routed to and get an empty list.
    std::map<int, std::vector<std::vector<int>>> unitLists;
};

// Throws InputError naming the variant, layer and expert for a layer that is not a MoE layer, an
// expert out of range, fewer kept experts than the router's top-k, unit lists of the wrong count,
// unsorted or out of range, or unit lists on a layer whose experts already have their own widths.
std::vector<VariantLayers> prepareVariants(const ModelSpec& spec, std::span<const ExpertMask> variants,
    bool maskedUnits, c10::Device device, c10::ScalarType dtype);

} // namespace moeatlas
