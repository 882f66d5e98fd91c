// Offload simulator (docs/methods.md "Offload simulator"): decodes a recorded routing trace step by step
// with the routed experts offloaded to host memory, a GPU expert cache, one host-to-device copy stream
// and a compute stream, and reports time per output token, stalls, bytes moved and hits per layer.
#pragma once

#include "prefetch/prefetch_data.h"
#include "sim/compute_model.h"
#include "util/progress.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

enum class SimPolicy {
    OnDemand, // a layer's missing experts are fetched at its router point
    Prefetch, // plus: at layer l's router point, the predicted experts of layer l+d are fetched
    Speculative, // layers l >= d run their predicted top-k experts (prefetched); misses are never fetched
};
enum class Eviction {
    Lru, // least recently used
    Lfu, // fewest uses since the start of the trace, ties least recently used
    Belady, // next use farthest in the future (offline optimum for demand misses)
};

std::string simPolicyName(SimPolicy p); // on-demand, prefetch, speculative
SimPolicy parseSimPolicy(const std::string& text, const std::string& field);
std::string evictionName(Eviction e); // lru, lfu, belady
Eviction parseEviction(const std::string& text, const std::string& field);

// The GPU expert cache: `slots` experts in every MoE layer, or `bytes` shared by all layers' experts.
struct CacheSpec {
    enum class Kind { PerLayerSlots, GlobalBytes };
    Kind kind = Kind::PerLayerSlots;
    int slots = 0;
    double bytes = 0;
};
std::string describeCache(const CacheSpec& cache); // "8 slots/layer", "12.0 GiB global"

struct SimConfig {
    SimPolicy policy = SimPolicy::OnDemand;
    Eviction eviction = Eviction::Lru;
    CacheSpec cache;
    int batch = 1; // sequences decoded together: a step needs the union of their experts
    double linkBandwidth = 0; // bytes/s, > 0
    double linkLatency = 0; // seconds per transfer, >= 0
    int64_t warmupSteps = 0; // simulated, but left out of every statistic
    int64_t timelineSteps = 0; // keep the events of the first steps (SimResult::timeline)
};

// Per MoE layer, summed over the counted steps. Counts are of distinct experts per step (the union of
// the batch): hits + prefetchHits + misses (+ skipped, speculative) = experts the layer needed.
struct SimLayerStats {
    double compute = 0; // seconds: pre phase + experts phase
    double stall = 0; // seconds the experts phase waited for transfers
    double bytes = 0; // bytes moved to this layer's experts (demand and prefetch)
    int64_t transfers = 0;
    int64_t hits = 0; // resident at the router point, not brought by a pending prefetch
    int64_t misses = 0; // fetched on demand at the router point
    int64_t prefetchHits = 0; // brought (or being brought) by a prefetch for this step and layer
    int64_t latePrefetchHits = 0; // of those, still in flight at the router point
    int64_t prefetches = 0; // transfers issued by prefetch for this layer
    int64_t wastedPrefetches = 0; // prefetched for this step and layer, not needed by it
    int64_t droppedPrefetches = 0; // predicted, not resident, and no room to fetch
    int64_t skipped = 0; // speculative: predicted experts run without being resident (not fetched: left out)
    int64_t replaced = 0; // speculative: routed (token, expert) pairs not run
};

// One transfer on the copy stream.
struct SimTransfer {
    int64_t step = 0;
    int layer = 0; // MoE layer of the expert
    int expert = 0;
    bool prefetch = false;
    double issue = 0; // the router point it was issued at
    double start = 0; // max(issue, end of the previous transfer)
    double end = 0; // start + latency + bytes / bandwidth
};
// One layer of one step on the compute stream.
struct SimLayerEvent {
    int64_t step = 0;
    int layer = 0;
    double start = 0; // the previous layer's experts ended
    double router = 0; // start + pre: routing (and predictions) known, fetches issued
    double ready = 0; // every expert the layer runs is resident: max(router, arrivals)
    double end = 0; // ready + experts phase
    std::vector<int32_t> experts; // the distinct experts run
};

struct SimResult {
    int64_t steps = 0; // counted steps (after warm-up)
    int64_t tokens = 0; // decoded tokens in them
    double totalTime = 0; // seconds, counted steps
    double tpotMean = 0; // mean over counted tokens of their step's time
    double tpotP50 = 0, tpotP90 = 0, tpotP99 = 0, tpotMax = 0; // linear interpolation between order statistics
    double computePerToken = 0; // mean over counted tokens of the step's compute time
    double stallPerToken = 0; // likewise, stall
    double bytesPerToken = 0;
    double tokensPerSecond = 0;
    SimLayerStats total; // summed over layers
    std::vector<SimLayerStats> layers;
    std::vector<double> stepTimes; // every step, warm-up included
    std::vector<SimTransfer> transfers; // the first timelineSteps steps
    std::vector<SimLayerEvent> timeline; // likewise
};

// `predictions`: Prefetch and Speculative need one PredictionSet per source MoE layer 0 .. L-1-d, all of one
// predictor, lookahead d and budget (Speculative: budget >= topK), rows for every token of the trace.
// Throws RequestError (fields "cache", "batch", "linkBandwidth", "linkLatency", "warmupSteps", "predictions")
// before simulating, Cancelled when stopped.
SimResult simulate(const RoutingTrace& trace, std::span<const PredictionSet> predictions, const ComputeModel& compute,
    const SimConfig& config, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
