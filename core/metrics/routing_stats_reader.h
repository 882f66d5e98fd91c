// The routing statistics of a scored atlas (/statistics, docs/atlas-format.md "Scores and
// statistics") read back as plain values, with the slices the workbench's routing charts show.
#pragma once

#include "atlas/atlas_file.h"

#include <string>
#include <vector>

namespace moeatlas {

struct RoutingStats {
    std::vector<std::string> domains; // D calibration domains; row D of [D+1, ...] arrays = pooled
    std::vector<int> layers; // decoder-layer index of each MoE layer (L)
    int numExperts = 0; // E
    int bandMin = 0, bandMax = 0; // dynamic-k band: histogram bin b counts k* = bandMin + b

    std::vector<double> loadShare; // [D+1, L, E]
    std::vector<double> loadCv, loadEntropy, tokenEntropy, m99Mean; // [D+1, L]
    std::vector<double> dynamicKHist; // [D, L, B]
    std::vector<double> specialisation; // [D, L, E]
    std::vector<double> coactivation; // [L, E, E], pooled

    int rows() const { return static_cast<int>(domains.size()) + 1; }
    int pooledRow() const { return static_cast<int>(domains.size()); }
    int bins() const { return bandMax - bandMin + 1; }

    // Slices. `row` is a domain index or pooledRow(); `layer` indexes `layers` (0..L-1).
    std::vector<double> loadShareOf(int row, int layer) const; // [E]
    std::vector<double> perLayer(const std::vector<double>& array, int row) const; // [L] of a [D+1, L] array
    // [B] token counts; the pooled row sums the domains (counts are additive).
    std::vector<double> dynamicKOf(int row, int layer) const;
    std::vector<double> specialisationOf(int domain, int layer) const; // [E]
    std::vector<double> coactivationOf(int layer) const; // [E, E] row-major: [i, j] = P(j | i)
};

// Reads /statistics of `atlas`; throws InputError naming the atlas when it was not scored
// (run `moeatlas score`) or an array has an unexpected shape.
RoutingStats routingStatsFromAtlas(const AtlasFile& atlas);
// The same from its /statistics group already read (model and domains from `atlas`).
RoutingStats routingStatsFromResults(const AtlasFile& atlas, const AtlasResults& statistics);

} // namespace moeatlas
