// Sweeps of the offload simulator over cache size and link bandwidth, and the CSV tables of its results
// (one row per run; one row per MoE layer of a run).
#pragma once

#include "sim/simulator.h"

#include <string>
#include <vector>

namespace moeatlas {

struct SimSweepPoint {
    CacheSpec cache;
    double linkBandwidth = 0;
    SimResult result; // stepTimes, transfers and timeline emptied
};

// Every combination of `caches` x `bandwidths` (cache-major; an empty list stands for the config's own value),
// each simulated with the rest of `config`. Validates every point before the first run (RequestError as
// simulate(), the field "sweep" for a bad value). Progress counts steps over all points.
std::vector<SimSweepPoint> sweepSimulation(const RoutingTrace& trace, std::span<const PredictionSet> predictions,
    const ComputeModel& compute, const SimConfig& config, const std::vector<CacheSpec>& caches,
    const std::vector<double>& bandwidths, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

// What the rows say about the predictions (empty predictor: none).
struct SimRunLabel {
    std::string policy;
    std::string eviction;
    std::string predictor;
    int lookahead = 0;
    int budget = 0;
    int batch = 1;
};

// Hit rate of a run: (hits + prefetch hits) / every expert needed (hits, prefetch hits, misses, skipped).
double simHitRate(const SimLayerStats& s);

// One row per point: cache, link, the label, TPOT (mean, p50, p90, p99, max), compute and stall per token,
// bytes per token, tokens/s and the counts. Seconds and bytes as plain numbers (%.9g).
std::string simSummaryCsv(const std::vector<SimSweepPoint>& points, const SimRunLabel& label);
// One row per MoE layer: compute, stall and bytes per counted token, and the counts.
std::string simLayersCsv(const SimResult& result, const std::vector<int>& moeLayers);

} // namespace moeatlas
