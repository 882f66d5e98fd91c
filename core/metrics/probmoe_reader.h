// The ProbMoE exact-k tables of a scored atlas (/probmoe, docs/atlas-format.md "ProbMoE exact-k
// tables") read back as plain values, with the slices the workbench's Routing tab shows.
#pragma once

#include "atlas/atlas_file.h"

#include <string>
#include <vector>

namespace moeatlas {

struct ProbMoeTables {
    std::vector<std::string> domains; // D; row D of the [D+1, ...] arrays = pooled
    std::vector<int> layers; // decoder layer of each MoE layer (L)
    int numExperts = 0; // E
    int k = 0; // the k the marginals condition on (the model's top-k)
    int bandMin = 0, bandMax = 0; // cardinality bin b: |S| = bandMin + b

    std::vector<double> marginalMean; // [D+1, L, E], each (row, layer) sums to k
    std::vector<double> topkProb, cardinalityEntropy, kstarMean; // [D+1, L]
    std::vector<double> cardinality; // [D+1, L, B], each (row, layer) sums to 1

    int rows() const { return static_cast<int>(domains.size()) + 1; }
    int pooledRow() const { return static_cast<int>(domains.size()); }
    int bins() const { return bandMax - bandMin + 1; }
    // Slices; `row` is a domain index or pooledRow(), `layer` indexes `layers`.
    std::vector<double> marginalsOf(int row, int layer) const; // [E]
    std::vector<double> cardinalityOf(int row, int layer) const; // [B]
    std::vector<double> perLayer(const std::vector<double>& array, int row) const; // [L] of a [D+1, L] array
};

// Reads /probmoe of `atlas`; throws InputError naming the atlas when the group is absent (score the
// atlas) or an array or the band in its params has an unexpected shape.
ProbMoeTables probmoeTablesFromAtlas(const AtlasFile& atlas);
// The same from the group already read (model and domains from `atlas`).
ProbMoeTables probmoeTablesFromResults(const AtlasFile& atlas, const AtlasResults& group);

} // namespace moeatlas
