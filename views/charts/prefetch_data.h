// Data side of the Prefetch tab, free of widgets: the layer x lookahead grid of a stored hit-rate table
// (/prefetch_hit_rates), the bounded slice of a routing trace the what-if panel simulates, and the
// speculative-execution variants of the atlas's evaluation tables (quality next to speed).
#pragma once

#include "atlas/atlas_file.h"
#include "prefetch/prefetch_data.h"
#include "prefetch/prefetch_metrics.h"

#include <QString>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace moeatlas::views {

// One heatmap of a hit table: rows = source MoE layers, columns = lookaheads; NaN where layer + d does
// not exist or there are no tokens. What each value is (metric, predictor, split, domain) goes into the
// tooltips and the title.
struct PrefetchGrid {
    int rows = 0;
    int cols = 0;
    std::vector<double> values; // row-major [rows, cols] (PrefetchHitTable::heatmap)
    std::vector<int> layers; // decoder index of each source MoE layer
    std::vector<int> targetLayers; // decoder index of MoE layer (row + 1): for the tooltip, per row
    std::vector<int> lookaheads;
    std::vector<int> moeLayers; // decoder index of every MoE layer (the target of row r, lookahead d: r + d)
    QString metric; // "hit rate" or "recall at 4"
    QString predictor, split, domain;
    int64_t tokens = 0; // tokens of the domain and split the rates are taken over
    int topK = 0;
    int budget = 0;

    double at(int row, int col) const
    {
        return values[static_cast<std::size_t>(row) * static_cast<std::size_t>(cols) + static_cast<std::size_t>(col)];
    }
    // Decoder layer predicted for row (source) and column (lookahead); -1 when it does not exist.
    int targetLayer(int row, int col) const;
    QString toolTip(int row, int col) const;
};

// The grid of predictor index p, split and domain (index; numDomains() = pooled), hit rate or recall at B.
PrefetchGrid prefetchGrid(
    const PrefetchHitTable& table, std::size_t predictor, HitSplit split, std::size_t domain, bool recall);

// The slice of a run the what-if panel simulates: the first `perDomain` sequences of every domain, in
// atlas order. ranges are token ranges [begin, end) of the kept sequences.
struct TraceSlice {
    std::vector<std::pair<int64_t, int64_t>> ranges;
    int64_t sequences = 0; // kept
    int64_t totalSequences = 0;
    int64_t tokens = 0; // kept
    bool whole() const { return sequences == totalSequences; }
};
// perDomain <= 0: every sequence. A sequence's domain is its first token's.
TraceSlice sliceFirstSequences(const RoutingTrace& trace, int64_t perDomain);
// The trace restricted to the slice's sequences (routing, domains, split), in order.
RoutingTrace sliceTrace(const RoutingTrace& trace, const TraceSlice& slice);
// The prediction rows of the slice's tokens.
PredictionSet slicePredictions(const PredictionSet& set, const TraceSlice& slice);

// A speculative-execution variant of an evaluation table (`moeatlas eval --speculative PREDICTOR`, named
// "<base>+spec:<predictor>"): its loss change from its base variant per domain and pooled (weighted by
// the domains' predicted tokens).
struct SpeculativeQuality {
    std::string table; // /evaluation/<label>
    std::string variant;
    std::string base;
    std::string predictorText; // as named in the variant
    bool knownPredictor = false;
    Predictor predictor = Predictor::Oracle;
    std::vector<std::string> domains;
    std::vector<double> deltaNll; // [domain], nats per predicted token
    double pooledDelta = 0;
};
// Every such variant of every table; unreadable tables are skipped with their error in *error.
std::vector<SpeculativeQuality> speculativeQuality(
    const std::map<std::string, AtlasResults>& evaluations, QString* error = nullptr);

// The predictors the what-if panel can simulate on an atlas: the recorded ones it holds (/prefetch), then
// the derived ones (frequency, previous, oracle).
std::vector<Predictor> simulatablePredictors(const AtlasPrefetchInfo* info);

} // namespace moeatlas::views
