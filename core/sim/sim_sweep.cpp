#include "sim/sim_sweep.h"

#include "sim/sim_checks.h"
#include "util/error.h"

#include <cstdio>

namespace moeatlas {

namespace {

std::string num(double x)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", x);
    return buf;
}

std::string counts(const SimLayerStats& s)
{
    return std::to_string(s.hits) + "," + std::to_string(s.misses) + "," + std::to_string(s.prefetchHits) + ","
        + std::to_string(s.latePrefetchHits) + "," + std::to_string(s.prefetches) + ","
        + std::to_string(s.wastedPrefetches) + "," + std::to_string(s.droppedPrefetches) + ","
        + std::to_string(s.skipped) + "," + std::to_string(s.replaced) + "," + num(simHitRate(s));
}

const char* kCountColumns
    = "hits,misses,prefetch_hits,late_prefetch_hits,prefetches,wasted_prefetches,dropped_prefetches,skipped,"
      "replaced,hit_rate";

} // namespace

std::vector<SimSweepPoint> sweepSimulation(const RoutingTrace& trace, std::span<const PredictionSet> predictions,
    const ComputeModel& compute, const SimConfig& config, const std::vector<CacheSpec>& caches,
    const std::vector<double>& bandwidths, const ProgressFn& progress, const StopToken* stop)
{
    const std::vector<CacheSpec> cacheList = caches.empty() ? std::vector<CacheSpec> { config.cache } : caches;
    const std::vector<double> linkList = bandwidths.empty() ? std::vector<double> { config.linkBandwidth } : bandwidths;
    std::vector<SimConfig> configs;
    for (const CacheSpec& cache : cacheList)
        for (const double bw : linkList) {
            SimConfig c = config;
            c.cache = cache;
            c.linkBandwidth = bw;
            c.timelineSteps = 0;
            try {
                validateSimulation(trace, predictions, compute, c);
            } catch (const RequestError& e) {
                throw RequestError(
                    "sweep", "sweep point " + describeCache(cache) + ", " + num(bw) + " bytes/s: " + e.what());
            }
            configs.push_back(c);
        }
    std::vector<SimSweepPoint> points;
    const int64_t n = static_cast<int64_t>(configs.size());
    for (int64_t i = 0; i < n; ++i) {
        const SimConfig& c = configs[static_cast<std::size_t>(i)];
        ProgressFn inner;
        if (progress)
            inner = [&](const Progress& p) {
                return progress(Progress {
                    "simulate " + std::to_string(i + 1) + "/" + std::to_string(n), i * p.total + p.done, n * p.total });
            };
        SimResult r = simulate(trace, predictions, compute, c, inner, stop);
        r.stepTimes.clear();
        r.stepTimes.shrink_to_fit();
        points.push_back(SimSweepPoint { c.cache, c.linkBandwidth, std::move(r) });
    }
    return points;
}

double simHitRate(const SimLayerStats& s)
{
    const double needed = static_cast<double>(s.hits + s.prefetchHits + s.misses + s.skipped);
    return needed > 0 ? static_cast<double>(s.hits + s.prefetchHits) / needed : 0.0;
}

std::string simSummaryCsv(const std::vector<SimSweepPoint>& points, const SimRunLabel& label)
{
    std::string out = "cache_kind,cache_slots,cache_bytes,link_bytes_per_s,policy,eviction,predictor,lookahead,budget,"
                      "batch,steps,tokens,tpot_mean_s,tpot_p50_s,tpot_p90_s,tpot_p99_s,tpot_max_s,compute_per_token_s,"
                      "stall_per_token_s,bytes_per_token,tokens_per_s,";
    out += kCountColumns;
    out += '\n';
    for (const SimSweepPoint& p : points) {
        const SimResult& r = p.result;
        const bool slots = p.cache.kind == CacheSpec::Kind::PerLayerSlots;
        out += std::string(slots ? "per-layer" : "global") + "," + (slots ? std::to_string(p.cache.slots) : "") + ","
            + (slots ? "" : num(p.cache.bytes)) + "," + num(p.linkBandwidth) + "," + label.policy + "," + label.eviction
            + "," + label.predictor + "," + std::to_string(label.lookahead) + "," + std::to_string(label.budget) + ","
            + std::to_string(label.batch) + "," + std::to_string(r.steps) + "," + std::to_string(r.tokens) + ","
            + num(r.tpotMean) + "," + num(r.tpotP50) + "," + num(r.tpotP90) + "," + num(r.tpotP99) + ","
            + num(r.tpotMax) + "," + num(r.computePerToken) + "," + num(r.stallPerToken) + "," + num(r.bytesPerToken)
            + "," + num(r.tokensPerSecond) + "," + counts(r.total) + "\n";
    }
    return out;
}

std::string simLayersCsv(const SimResult& result, const std::vector<int>& moeLayers)
{
    std::string out = "moe_layer,decoder_layer,compute_per_token_s,stall_per_token_s,bytes_per_token,transfers,";
    out += kCountColumns;
    out += '\n';
    const double n = result.tokens > 0 ? static_cast<double>(result.tokens) : 1.0;
    for (std::size_t l = 0; l < result.layers.size(); ++l) {
        const SimLayerStats& s = result.layers[l];
        out += std::to_string(l) + "," + (l < moeLayers.size() ? std::to_string(moeLayers[l]) : "") + ","
            + num(s.compute / n) + "," + num(s.stall / n) + "," + num(s.bytes / n) + "," + std::to_string(s.transfers)
            + "," + counts(s) + "\n";
    }
    return out;
}

} // namespace moeatlas
