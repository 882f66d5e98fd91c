// moeatlas simulate ATLAS: the offload simulator (core/sim) on an atlas's recorded routing and prefetch
// predictions: TPOT, stalls, bytes and hits per layer for a hardware preset, cache, policy and eviction;
// sweeps over cache size and link bandwidth into a CSV (docs/user-guide.md, docs/methods.md).
#include "cli_progress.h"
#include "commands.h"
#include "request_flags.h"

#include "util/error.h"
#include "workflows/simulate_workflow.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas::cli {

namespace {

struct SimulateArgs {
    std::string atlas;
    std::string preset = "a6000-pcie4";
    std::string config;
    std::string dtype;
    std::string measuredTimes;
    std::string policy = "on-demand";
    std::string eviction = "lru";
    std::optional<int> cacheSlots;
    std::optional<double> cacheBytes;
    std::string predictor = "next-router";
    int lookahead = 1;
    int budget = 0;
    int batch = 1;
    int64_t warmup = 0;
    std::optional<double> linkBandwidth;
    std::optional<double> linkLatency;
    std::vector<double> sweepCache;
    std::vector<double> sweepBandwidth;
    std::string csv;
    std::string layersCsv;
    bool store = false;
};

const FieldFlags kSimulateFlags { { "atlas", "ATLAS" }, { "hardware", "--preset" },
    { "hardware.linkBandwidth", "--link-bandwidth" }, { "hardware.linkLatency", "--link-latency" },
    { "hardware.memoryBandwidth", "--preset" }, { "hardware.flopsPerSecond", "--preset" }, { "config", "--config" },
    { "trace", "--config" }, { "dtype", "--dtype" }, { "measuredTimes", "--measured-times" },
    { "cache", "--cache-slots/--cache-bytes" }, { "batch", "--batch" }, { "warmupSteps", "--warmup" },
    { "policy", "--policy" }, { "eviction", "--eviction" }, { "predictor", "--predictor" },
    { "predictions", "--predictor" }, { "lookahead", "--lookahead" }, { "budget", "--budget" },
    { "sweepCache", "--sweep-cache" }, { "sweepBandwidth", "--sweep-bandwidth" },
    { "sweep", "--sweep-cache/--sweep-bandwidth" }, { "csv", "--csv" }, { "layersCsv", "--layers-csv" },
    { "store", "--store" } };

CacheSpec cacheOf(const SimulateArgs& a, double value)
{
    CacheSpec c;
    if (a.cacheBytes) {
        c.kind = CacheSpec::Kind::GlobalBytes;
        c.bytes = value;
    } else {
        c.slots = static_cast<int>(value);
    }
    return c;
}

void printPoint(const SimSweepPoint& p)
{
    const SimResult& r = p.result;
    std::printf("%-22s %8.2f GB/s  TPOT %9.3f ms (p50 %.3f, p99 %.3f)  compute %.3f  stall %.3f ms  %.1f MB/tok  "
                "hit rate %.3f  misses %lld  prefetch hits %lld  wasted %lld  replaced %lld\n",
        describeCache(p.cache).c_str(), p.linkBandwidth / 1e9, r.tpotMean * 1e3, r.tpotP50 * 1e3, r.tpotP99 * 1e3,
        r.computePerToken * 1e3, r.stallPerToken * 1e3, r.bytesPerToken / 1e6, simHitRate(r.total),
        static_cast<long long>(r.total.misses), static_cast<long long>(r.total.prefetchHits),
        static_cast<long long>(r.total.wastedPrefetches), static_cast<long long>(r.total.replaced));
}

int runSimulate(const SimulateArgs& a)
{
    if (a.cacheSlots.has_value() == a.cacheBytes.has_value())
        throw RequestError("cache", "give the GPU expert cache as exactly one of slots per layer or bytes");
    SimulateRequest request;
    request.atlas = a.atlas;
    request.hardware = a.preset;
    request.linkBandwidth = a.linkBandwidth;
    request.linkLatency = a.linkLatency;
    request.config = a.config;
    request.dtype = a.dtype;
    request.measuredTimes = a.measuredTimes;
    request.policy = parseSimPolicy(a.policy, "policy");
    request.eviction = parseEviction(a.eviction, "eviction");
    request.cache = cacheOf(a, a.cacheBytes ? *a.cacheBytes : *a.cacheSlots);
    request.batch = a.batch;
    request.warmupSteps = a.warmup;
    request.predictor = parsePredictor(a.predictor, "predictor");
    request.lookahead = a.lookahead;
    request.budget = a.budget;
    for (const double v : a.sweepCache)
        request.sweepCache.push_back(cacheOf(a, v));
    request.sweepBandwidth = a.sweepBandwidth;
    request.csv = a.csv;
    request.layersCsv = a.layersCsv;
    request.store = a.store;
    const PreparedSimulation job = prepareSimulation(request);

    StopToken& stop = installStopHandler();
    ProgressBar bar("simulate", "steps");
    SimulationReport report;
    try {
        report = simulateAtlas(
            job, [&](const Progress& p) { return bar.update(p); }, &stop);
    } catch (const Cancelled&) {
        bar.finish("simulate interrupted: nothing was written");
        return 130;
    }
    const SimRunLabel label = job.label();
    bar.finish("simulate: " + label.policy + ", " + label.eviction + " eviction"
        + (label.predictor.empty() ? std::string()
                                   : ", " + label.predictor + " lookahead " + std::to_string(label.lookahead)
                    + " budget " + std::to_string(label.budget))
        + ", batch " + std::to_string(label.batch) + " on " + job.hardware.name + " (" + job.hardware.gpu + ", "
        + job.hardware.link + ")");
    for (const SimSweepPoint& p : report.points)
        printPoint(p);
    if (!job.csv.empty())
        std::printf("%s\n", job.csv.c_str());
    if (!job.layersCsv.empty())
        std::printf("%s\n", job.layersCsv.c_str());
    if (job.store)
        std::printf("%s:/simulation/%s\n", job.atlas.c_str(), job.runName().c_str());
    return 0;
}

} // namespace

Command addSimulateCommand(CLI::App& app)
{
    auto a = std::make_shared<SimulateArgs>();
    CLI::App* sub = app.add_subcommand("simulate",
        "Offload simulator: TPOT, stalls and cache hits of decoding the atlas's routing with experts in host memory");
    sub->add_option("atlas", a->atlas, "Atlas file (.atlas.h5): its routing, and its predictions for --predictor")
        ->required();
    sub->add_option("--preset", a->preset,
        "Hardware: a preset (a6000-pcie4, h100-pcie5, rtx4090-pcie4) or a hardware JSON file (default a6000-pcie4)");
    sub->add_option("--config", a->config, "config.json or checkpoint directory for the shapes (default: the atlas's)");
    sub->add_option("--dtype", a->dtype, "Weight dtype, e.g. bfloat16 (default: the config's torch_dtype)");
    sub->add_option("--measured-times", a->measuredTimes, "Measured per-layer times JSON instead of the roofline");
    sub->add_option("--policy", a->policy, "on-demand, prefetch or speculative (default on-demand)");
    sub->add_option("--eviction", a->eviction, "lru, lfu or belady (default lru)");
    sub->add_option("--cache-slots", a->cacheSlots, "GPU cache: experts per MoE layer");
    sub->add_option("--cache-bytes", a->cacheBytes, "GPU cache: bytes shared by every layer's experts");
    sub->add_option("--predictor", a->predictor,
        "Prefetch predictor: next-router, quasi-hidden, linear, mlp, frequency, previous, oracle (default "
        "next-router)");
    sub->add_option("--lookahead", a->lookahead, "Prefetch this many MoE layers ahead (default 1)");
    sub->add_option("--budget", a->budget, "Experts prefetched per token (default: top-k)");
    sub->add_option("--batch", a->batch, "Sequences decoded together (default 1)");
    sub->add_option("--warmup", a->warmup, "Decode steps simulated but not counted (default 0)");
    sub->add_option("--link-bandwidth", a->linkBandwidth, "Override the link, bytes/s (e.g. 25e9)");
    sub->add_option("--link-latency", a->linkLatency, "Override the per-transfer latency, seconds");
    sub->add_option("--sweep-cache", a->sweepCache, "Cache sizes to sweep (slots, or bytes with --cache-bytes)")
        ->delimiter(',');
    sub->add_option("--sweep-bandwidth", a->sweepBandwidth, "Link bandwidths to sweep, bytes/s")->delimiter(',');
    sub->add_option("--csv", a->csv, "Write one row per run (sweep point) as CSV");
    sub->add_option("--layers-csv", a->layersCsv, "Write one row per MoE layer of the run as CSV");
    sub->add_flag("--store", a->store, "Store the run table (every sweep point) in the atlas as /simulation/<run>");
    return [a] { return namingFlags(kSimulateFlags, [&] { return runSimulate(*a); }); };
}

} // namespace moeatlas::cli
