#include "workflows/simulate_workflow.h"

#include "atlas/atlas_file.h"
#include "checkpoint/hf_config.h"
#include "prefetch/prefetch_atlas.h"
#include "util/atomic_file.h"
#include "util/error.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

namespace moeatlas {

namespace {

nlohmann::json readJson(const std::filesystem::path& path, const std::string& what)
{
    std::ifstream in(path);
    if (!in)
        throw InputError(path.string() + ": cannot read the " + what);
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded())
        throw InputError(path.string() + ": not valid JSON (a " + what + ")");
    return doc;
}

void checkOutput(const std::filesystem::path& path, const std::string& field)
{
    if (path.empty())
        return;
    const std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
    if (!std::filesystem::is_directory(dir))
        throw RequestError(field, path.string() + ": directory " + dir.string() + " does not exist");
}

void checkCache(const CacheSpec& cache, const std::string& field)
{
    if (cache.kind == CacheSpec::Kind::PerLayerSlots ? cache.slots <= 0 : !(cache.bytes > 0))
        throw RequestError(field, "the GPU expert cache must hold something: give slots per layer or bytes > 0");
}

} // namespace

std::vector<int> PreparedSimulation::predictionSources() const
{
    std::vector<int> sources;
    if (needsPredictions())
        for (int s = 0; s + lookahead < compute.costs.numMoeLayers(); ++s)
            sources.push_back(s);
    return sources;
}

SimRunLabel PreparedSimulation::label() const
{
    SimRunLabel l;
    l.policy = simPolicyName(config.policy);
    l.eviction = evictionName(config.eviction);
    if (needsPredictions()) {
        l.predictor = predictorName(predictor);
        l.lookahead = lookahead;
        l.budget = budget;
    }
    l.batch = config.batch;
    return l;
}

PreparedSimulation prepareSimulation(const SimulateRequest& request)
{
    PreparedSimulation job;
    job.hardware = loadHardware(request.hardware, "hardware");
    if (request.linkBandwidth)
        job.hardware.linkBandwidth = *request.linkBandwidth;
    if (request.linkLatency)
        job.hardware.linkLatency = *request.linkLatency;
    validateHardware(job.hardware, "hardware");

    job.atlas = request.atlas;
    if (!request.atlas.empty() && !std::filesystem::is_regular_file(request.atlas))
        throw RequestError("atlas", request.atlas.string() + ": no such atlas file");
    if (!request.config.empty()) {
        const std::filesystem::path configPath
            = std::filesystem::is_directory(request.config) ? request.config / "config.json" : request.config;
        job.model = parseModelSpec(readJson(configPath, "model config"), configPath.string());
    } else if (!request.atlas.empty()) {
        const AtlasFile atlas = AtlasFile::openReadOnly(request.atlas);
        const nlohmann::json config = nlohmann::json::parse(atlas.model().configJson, nullptr, false);
        if (config.is_discarded())
            throw InputError(request.atlas.string() + ": the stored config.json is not valid JSON");
        job.model = parseModelSpec(config, request.atlas.string() + ":config.json");
    } else {
        throw RequestError("config", "no model shapes: give a config.json, a checkpoint directory or an atlas");
    }
    const DType dtype = weightDtype(job.model, request.dtype, "dtype");
    job.compute.costs = modelCosts(job.model, dtype);
    if (request.measuredTimes.empty()) {
        job.compute.flopsPerSecond = flopsFor(job.hardware, dtype, "dtype");
        job.compute.memoryBandwidth = job.hardware.memoryBandwidth;
    } else {
        job.compute.measured = parseMeasuredTimes(readJson(request.measuredTimes, "measured layer times"),
            request.measuredTimes.string(), job.compute.costs.numMoeLayers());
    }

    const int layers = job.compute.costs.numMoeLayers();
    SimConfig& c = job.config;
    c.policy = request.policy;
    c.eviction = request.eviction;
    c.cache = request.cache;
    c.batch = request.batch;
    c.linkBandwidth = job.hardware.linkBandwidth;
    c.linkLatency = job.hardware.linkLatency;
    c.warmupSteps = request.warmupSteps;
    c.timelineSteps = request.timelineSteps;
    if (c.batch < 1)
        throw RequestError("batch", "batch must be >= 1, got " + std::to_string(c.batch));
    if (c.warmupSteps < 0)
        throw RequestError("warmupSteps", "warm-up steps must be >= 0");
    checkCache(c.cache, "cache");
    for (const CacheSpec& s : request.sweepCache)
        checkCache(s, "sweepCache");
    for (const double bw : request.sweepBandwidth)
        if (!std::isfinite(bw) || !(bw > 0))
            throw RequestError(
                "sweepBandwidth", "every swept link bandwidth must be > 0 bytes/s, got " + std::to_string(bw));
    job.sweepCache = request.sweepCache;
    job.sweepBandwidth = request.sweepBandwidth;

    job.predictor = request.predictor;
    job.lookahead = request.lookahead;
    job.budget = request.budget == 0 ? job.model.router.topK : request.budget;
    if (job.needsPredictions()) {
        if (job.lookahead < 1 || job.lookahead >= layers)
            throw RequestError("lookahead",
                "lookahead " + std::to_string(job.lookahead) + " reaches beyond the last MoE layer: " + "the model has "
                    + std::to_string(layers) + " MoE layers, so 1.." + std::to_string(layers - 1));
        if (job.budget < 1 || job.budget > job.model.router.numExperts)
            throw RequestError("budget",
                "prefetch budget " + std::to_string(job.budget) + " must lie in [1, "
                    + std::to_string(job.model.router.numExperts) + "]");
        if (c.policy == SimPolicy::Speculative && job.budget < job.model.router.topK)
            throw RequestError("budget",
                "speculative execution runs the predicted top-k: budget " + std::to_string(job.budget) + " < top-k "
                    + std::to_string(job.model.router.topK));
    }

    checkOutput(request.csv, "csv");
    checkOutput(request.layersCsv, "layersCsv");
    if (!request.layersCsv.empty() && (request.sweepCache.size() > 1 || request.sweepBandwidth.size() > 1))
        throw RequestError("layersCsv", "the per-layer table is of a single run: no sweep");
    job.csv = request.csv;
    job.layersCsv = request.layersCsv;
    if (request.store && request.atlas.empty())
        throw RequestError("store", "there is no atlas to store the run table in");
    job.store = request.store;
    return job;
}

std::string PreparedSimulation::runName() const
{
    const SimRunLabel l = label();
    std::string name = l.policy + "-" + l.eviction;
    if (!l.predictor.empty())
        name += "-" + l.predictor + "-d" + std::to_string(l.lookahead) + "-b" + std::to_string(l.budget);
    return name + "-batch" + std::to_string(l.batch);
}

AtlasResults simulationResults(const PreparedSimulation& job, const std::vector<SimSweepPoint>& points)
{
    const SimRunLabel l = job.label();
    AtlasResults r;
    r.paramsJson = nlohmann::json {
        { "policy", l.policy }, { "eviction", l.eviction }, { "predictor", l.predictor }, { "lookahead", l.lookahead },
        { "budget", l.budget }, { "batch", l.batch }, { "hardware", job.hardware.name },
        { "warmup_steps", job.config.warmupSteps }
    }.dump();
    const double nan = std::nan("");
    const auto column = [&](const std::string& name, const auto& value) {
        AtlasArray a { name, { points.size() }, {} };
        for (const SimSweepPoint& p : points)
            a.values.push_back(value(p));
        r.arrays.push_back(std::move(a));
    };
    const auto slots = [](const SimSweepPoint& p) { return p.cache.kind == CacheSpec::Kind::PerLayerSlots; };
    column("cache_slots", [&](const SimSweepPoint& p) { return slots(p) ? p.cache.slots : nan; });
    column("cache_bytes", [&](const SimSweepPoint& p) { return slots(p) ? nan : p.cache.bytes; });
    column("link_bandwidth", [](const SimSweepPoint& p) { return p.linkBandwidth; });
    column("tpot_mean", [](const SimSweepPoint& p) { return p.result.tpotMean; });
    column("tpot_p50", [](const SimSweepPoint& p) { return p.result.tpotP50; });
    column("tpot_p90", [](const SimSweepPoint& p) { return p.result.tpotP90; });
    column("tpot_p99", [](const SimSweepPoint& p) { return p.result.tpotP99; });
    column("tpot_max", [](const SimSweepPoint& p) { return p.result.tpotMax; });
    column("compute_per_token", [](const SimSweepPoint& p) { return p.result.computePerToken; });
    column("stall_per_token", [](const SimSweepPoint& p) { return p.result.stallPerToken; });
    column("bytes_per_token", [](const SimSweepPoint& p) { return p.result.bytesPerToken; });
    column("tokens_per_second", [](const SimSweepPoint& p) { return p.result.tokensPerSecond; });
    column("hits", [](const SimSweepPoint& p) { return static_cast<double>(p.result.total.hits); });
    column("misses", [](const SimSweepPoint& p) { return static_cast<double>(p.result.total.misses); });
    column("prefetch_hits", [](const SimSweepPoint& p) { return static_cast<double>(p.result.total.prefetchHits); });
    column("wasted_prefetches",
        [](const SimSweepPoint& p) { return static_cast<double>(p.result.total.wastedPrefetches); });
    column("replaced", [](const SimSweepPoint& p) { return static_cast<double>(p.result.total.replaced); });
    return r;
}

SimulationReport runSimulation(const PreparedSimulation& job, const RoutingTrace& trace,
    std::span<const PredictionSet> predictions, const ProgressFn& progress, const StopToken* stop)
{
    if (job.needsPredictions())
        for (const PredictionSet& p : predictions)
            if (p.predictor != job.predictor || p.lookahead != job.lookahead || p.budget != job.budget)
                throw RequestError("predictions",
                    "predictions of " + predictorName(p.predictor) + " (lookahead " + std::to_string(p.lookahead)
                        + ", budget " + std::to_string(p.budget) + ") given for " + predictorName(job.predictor)
                        + " (lookahead " + std::to_string(job.lookahead) + ", budget " + std::to_string(job.budget)
                        + ")");
    const std::span<const PredictionSet> used
        = job.needsPredictions() ? predictions : std::span<const PredictionSet> {};
    SimulationReport report;
    const bool sweep = !job.sweepCache.empty() || !job.sweepBandwidth.empty();
    if (sweep) {
        report.points
            = sweepSimulation(trace, used, job.compute, job.config, job.sweepCache, job.sweepBandwidth, progress, stop);
    } else {
        SimResult r = simulate(trace, used, job.compute, job.config, progress, stop);
        SimSweepPoint p { job.config.cache, job.config.linkBandwidth, r };
        p.result.stepTimes.clear();
        p.result.timeline.clear();
        p.result.transfers.clear();
        report.points.push_back(std::move(p));
        report.detail = std::move(r);
    }
    if (!job.csv.empty())
        writeFileAtomically(job.csv, simSummaryCsv(report.points, job.label()));
    if (!job.layersCsv.empty())
        writeFileAtomically(job.layersCsv, simLayersCsv(report.points.front().result, job.compute.costs.moeLayers));
    return report;
}

SimulationReport simulateAtlas(const PreparedSimulation& job, const ProgressFn& progress, const StopToken* stop)
{
    if (job.atlas.empty())
        throw RequestError("atlas", "no atlas to read the routing from");
    RoutingTrace trace;
    std::vector<PredictionSet> sets;
    {
        const AtlasFile atlas = AtlasFile::openReadOnly(job.atlas);
        if (job.store && !atlas.isComplete())
            throw RequestError(
                "store", job.atlas.string() + " is a partial atlas: results are stored in complete ones");
        trace = readRoutingTrace(atlas);
        for (const int source : job.predictionSources()) {
            if (stop && stop->stopRequested())
                throw Cancelled();
            sets.push_back(predictions(atlas, trace, job.predictor, source, job.lookahead, job.budget));
        }
    }
    SimulationReport report = runSimulation(job, trace, sets, progress, stop);
    if (job.store) {
        AtlasFile update = AtlasFile::openForUpdate(job.atlas);
        update.writeResults("simulation/" + job.runName(), simulationResults(job, report.points));
        update.commitUpdate();
    }
    return report;
}

} // namespace moeatlas
