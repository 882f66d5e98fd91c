#include "sim/sim_checks.h"

#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moeatlas {

std::string simPolicyName(SimPolicy p)
{
    switch (p) {
    case SimPolicy::OnDemand:
        return "on-demand";
    case SimPolicy::Prefetch:
        return "prefetch";
    case SimPolicy::Speculative:
        return "speculative";
    }
    return "?";
}

SimPolicy parseSimPolicy(const std::string& text, const std::string& field)
{
    for (const SimPolicy p : { SimPolicy::OnDemand, SimPolicy::Prefetch, SimPolicy::Speculative })
        if (simPolicyName(p) == text)
            return p;
    throw RequestError(field, "unknown policy '" + text + "': expected on-demand, prefetch or speculative");
}

std::string evictionName(Eviction e)
{
    switch (e) {
    case Eviction::Lru:
        return "lru";
    case Eviction::Lfu:
        return "lfu";
    case Eviction::Belady:
        return "belady";
    }
    return "?";
}

Eviction parseEviction(const std::string& text, const std::string& field)
{
    for (const Eviction e : { Eviction::Lru, Eviction::Lfu, Eviction::Belady })
        if (evictionName(e) == text)
            return e;
    throw RequestError(field, "unknown eviction '" + text + "': expected lru, lfu or belady");
}

std::string describeCache(const CacheSpec& cache)
{
    if (cache.kind == CacheSpec::Kind::PerLayerSlots)
        return std::to_string(cache.slots) + " slots/layer";
    return std::to_string(static_cast<int64_t>(cache.bytes)) + " bytes global";
}

void validateSimulation(const RoutingTrace& trace, std::span<const PredictionSet> predictions,
    const ComputeModel& compute, const SimConfig& c)
{
    const int numLayers = trace.numMoeLayers();
    const int numExperts = trace.numExperts;
    const int64_t numTokens = trace.numTokens();
    if (numLayers <= 0 || numExperts <= 0 || trace.topK <= 0 || trace.topK > numExperts)
        throw RequestError("trace", "the routing trace has no MoE layers, experts or top-k");
    if (numTokens >= std::numeric_limits<int32_t>::max())
        throw RequestError("trace", "the trace has " + std::to_string(numTokens) + " tokens: at most 2^31 - 1");
    if (trace.seqOffsets.empty() || trace.seqOffsets.front() != 0 || trace.seqOffsets.back() != numTokens)
        throw RequestError("trace", "the trace's sequence offsets do not cover its tokens");
    for (const auto& layer : trace.routed) {
        if (static_cast<int64_t>(layer.size()) != numTokens * trace.topK)
            throw RequestError("trace", "a layer of the trace does not hold top-k experts for every token");
        for (const int32_t e : layer)
            if (e < 0 || e >= numExperts)
                throw RequestError(
                    "trace", "the trace routes to expert " + std::to_string(e) + " of " + std::to_string(numExperts));
    }
    if (static_cast<int>(trace.routed.size()) != numLayers)
        throw RequestError("trace",
            "the trace has routing for " + std::to_string(trace.routed.size()) + " layers, " + std::to_string(numLayers)
                + " MoE layers");
    const ModelCosts& m = compute.costs;
    if (m.numMoeLayers() != numLayers || m.numExperts != numExperts)
        throw RequestError("trace",
            "the trace has " + std::to_string(numLayers) + " MoE layers of " + std::to_string(numExperts)
                + " experts, the model " + std::to_string(m.numMoeLayers()) + " of " + std::to_string(m.numExperts)
                + ": a trace of another architecture");
    if (compute.measured && static_cast<int>(compute.measured->layers.size()) != numLayers)
        throw RequestError("measuredTimes",
            "measured times for " + std::to_string(compute.measured->layers.size()) + " layers, the model has "
                + std::to_string(numLayers) + " MoE layers");
    if (!compute.measured && (!(compute.flopsPerSecond > 0) || !(compute.memoryBandwidth > 0)))
        throw RequestError("hardware", "the roofline needs FLOP/s and memory bandwidth > 0");
    if (c.batch < 1)
        throw RequestError("batch", "batch must be >= 1, got " + std::to_string(c.batch));
    if (!std::isfinite(c.linkBandwidth) || !(c.linkBandwidth > 0))
        throw RequestError("linkBandwidth",
            "link bandwidth must be > 0 bytes/s, got " + std::to_string(c.linkBandwidth)
                + ": with no link the offloaded experts never arrive");
    if (!std::isfinite(c.linkLatency) || c.linkLatency < 0)
        throw RequestError("linkLatency", "link latency must be >= 0 s, got " + std::to_string(c.linkLatency));
    if (c.warmupSteps < 0 || c.timelineSteps < 0)
        throw RequestError("warmupSteps", "warm-up and time-line steps must be >= 0");
    // A layer's experts must fit at once: up to min(E, k * B) of them.
    const int needed = std::min<int64_t>(numExperts, static_cast<int64_t>(trace.topK) * c.batch);
    if (c.cache.kind == CacheSpec::Kind::PerLayerSlots) {
        if (c.cache.slots < needed)
            throw RequestError("cache",
                "a cache of " + std::to_string(c.cache.slots)
                    + " slots per layer cannot hold one step's experts: at least min(E, top-k x batch) = "
                    + std::to_string(needed));
    } else {
        const double largest = *std::max_element(m.expertBytes.begin(), m.expertBytes.end());
        if (!(c.cache.bytes >= needed * largest))
            throw RequestError("cache",
                "a cache of " + std::to_string(c.cache.bytes)
                    + " bytes cannot hold one step's experts: at least min(E, top-k x batch) x the largest expert = "
                    + std::to_string(needed * largest) + " bytes");
    }
    if (c.policy == SimPolicy::OnDemand)
        return;
    if (predictions.empty())
        throw RequestError("predictions", simPolicyName(c.policy) + " needs predictions");
    const int d = predictions.front().lookahead;
    const int budget = predictions.front().budget;
    if (d < 1 || d >= numLayers)
        throw RequestError("predictions",
            "lookahead " + std::to_string(d) + " must lie in [1, " + std::to_string(numLayers - 1) + "] (the model has "
                + std::to_string(numLayers) + " MoE layers)");
    if (budget < 1 || budget > numExperts)
        throw RequestError("predictions", "prefetch budget " + std::to_string(budget) + " must lie in [1, E]");
    if (c.policy == SimPolicy::Speculative && budget < trace.topK)
        throw RequestError("predictions",
            "speculative execution runs the predicted top-k: budget " + std::to_string(budget) + " < top-k "
                + std::to_string(trace.topK));
    if (static_cast<int>(predictions.size()) != numLayers - d)
        throw RequestError("predictions",
            "expected one prediction set per source layer 0.." + std::to_string(numLayers - d - 1) + ", got "
                + std::to_string(predictions.size()));
    std::vector<char> seen(static_cast<std::size_t>(numLayers), 0);
    for (const PredictionSet& p : predictions) {
        if (p.lookahead != d || p.budget != budget || p.predictor != predictions.front().predictor)
            throw RequestError("predictions", "prediction sets of different predictors, lookaheads or budgets");
        if (p.source < 0 || p.source + d >= numLayers || seen[static_cast<std::size_t>(p.source)]++)
            throw RequestError("predictions", "source layer " + std::to_string(p.source) + " repeated or out of range");
        if (static_cast<int64_t>(p.ids.size()) != numTokens * budget)
            throw RequestError("predictions",
                "the predictions of source layer " + std::to_string(p.source)
                    + " do not have budget ids for every token");
        for (const int32_t e : p.ids)
            if (e < 0 || e >= numExperts)
                throw RequestError("predictions", "predicted expert " + std::to_string(e) + " out of range");
    }
}

} // namespace moeatlas
