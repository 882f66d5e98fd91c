// A quick quality proxy of a plan, read off the atlas without running the model: the routing mass
// its kept experts retain per domain.
#pragma once

#include "plan/plan.h"

#include <cstddef>
#include <string>
#include <vector>

namespace moeatlas {

struct AtlasArray;

// For each domain d: the mean over MoE layers of the sum over kept experts of mass[d, l, e], where
// mass is /scores/soft_mass/value (the mean full-softmax probability per expert) or, without it,
// /statistics/load_share. 1 = nothing lost.
struct RoutingMassProxy {
    std::string source; // "soft_mass", "load_share" or empty (neither usable)
    std::vector<double> perDomain;
};

// `softMass` and `loadShare` may be null (absent from the atlas); an array is used only when it is
// [>= domains, plan layers, plan experts].
RoutingMassProxy retainedRoutingMass(
    const AtlasArray* softMass, const AtlasArray* loadShare, std::size_t domains, const Plan& plan);

} // namespace moeatlas
