#include "plan/routing_mass.h"

#include "atlas/atlas_file.h"

namespace moeatlas {

namespace {

bool fits(const AtlasArray* a, uint64_t D, uint64_t L, uint64_t E)
{
    return a && a->dims.size() == 3 && a->dims[0] >= D && a->dims[1] == L && a->dims[2] == E
        && a->values.size() >= a->dims[0] * L * E;
}

} // namespace

RoutingMassProxy retainedRoutingMass(
    const AtlasArray* softMass, const AtlasArray* loadShare, std::size_t domains, const Plan& plan)
{
    const auto D = static_cast<uint64_t>(domains);
    const auto L = static_cast<uint64_t>(plan.keep.size());
    const auto E = static_cast<uint64_t>(plan.numExperts);
    RoutingMassProxy proxy;
    const AtlasArray* mass = nullptr;
    if (fits(softMass, D, L, E)) {
        mass = softMass;
        proxy.source = "soft_mass";
    } else if (!softMass && fits(loadShare, D, L, E)) {
        mass = loadShare;
        proxy.source = "load_share";
    }
    if (!mass || L == 0)
        return {};
    proxy.perDomain.assign(D, 0.0);
    for (uint64_t d = 0; d < D; ++d) {
        double total = 0;
        for (uint64_t l = 0; l < L; ++l) {
            const double* row = mass->values.data() + (d * L + l) * E;
            for (const int e : plan.keep[l])
                total += row[e];
        }
        proxy.perDomain[d] = total / static_cast<double>(L);
    }
    return proxy;
}

} // namespace moeatlas
