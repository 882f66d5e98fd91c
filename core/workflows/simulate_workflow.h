// `moeatlas simulate` and the workbench's prefetch what-ifs: the offload simulator (core/sim) on a routing
// trace and its predictions, with hardware from a preset or file, shapes from a config.json, and sweeps over
// cache size and link bandwidth into CSV. prepareSimulation checks every file and value up front; runSimulation
// takes the trace and predictions as values, so the atlas reader (prefetch_atlas.h) and tests feed it alike.
#pragma once

#include "atlas/atlas_file.h"
#include "prefetch/prefetch_data.h"
#include "sim/hardware.h"
#include "sim/sim_sweep.h"
#include "sim/simulator.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

struct SimulateRequest {
    // The recorded routing and predictions (simulateAtlas); also the shapes when `config` is empty (the
    // config.json the atlas stores). Empty: the caller passes a trace to runSimulation.
    std::filesystem::path atlas;
    std::string hardware = "a6000-pcie4"; // a preset name or a hardware JSON file
    std::optional<double> linkBandwidth; // what-if overrides of the hardware's link (bytes/s, seconds)
    std::optional<double> linkLatency;
    std::filesystem::path config; // a config.json, or a checkpoint directory holding one; empty: the atlas's
    std::string dtype; // weight dtype; empty: the config's torch_dtype
    std::filesystem::path measuredTimes; // per-layer times JSON (compute_model.h); empty: the roofline

    SimPolicy policy = SimPolicy::OnDemand;
    Eviction eviction = Eviction::Lru;
    CacheSpec cache; // slots must be given (or bytes)
    int batch = 1;
    int64_t warmupSteps = 0;
    int64_t timelineSteps = 0;
    // Prefetch and speculative: whose predictions, how far ahead, how many experts (0: the model's top-k).
    Predictor predictor = Predictor::NextRouter;
    int lookahead = 1;
    int budget = 0;

    std::vector<CacheSpec> sweepCache; // empty: the request's cache only
    std::vector<double> sweepBandwidth; // empty: the hardware's (or overridden) link only
    std::filesystem::path csv; // one row per run (sweep point); empty: none
    std::filesystem::path layersCsv; // one row per MoE layer (a single run only); empty: none
    // simulateAtlas: store the run table (every sweep point) into the atlas as /simulation/<runName()>
    // (docs/atlas-format.md), replacing a table of the same run name and keeping the others.
    bool store = false;
};

struct PreparedSimulation {
    std::filesystem::path atlas;
    HardwareSpec hardware; // with the overrides applied
    ModelSpec model;
    ComputeModel compute;
    SimConfig config; // the request's own run; a what-if client may edit it and run again
    Predictor predictor = Predictor::NextRouter;
    int lookahead = 1;
    int budget = 0; // resolved: never 0
    std::vector<CacheSpec> sweepCache;
    std::vector<double> sweepBandwidth;
    std::filesystem::path csv;
    std::filesystem::path layersCsv;
    bool store = false;

    bool needsPredictions() const { return config.policy != SimPolicy::OnDemand; }
    // The source MoE layers whose PredictionSet runSimulation needs: 0 .. L-1-lookahead (none on demand).
    std::vector<int> predictionSources() const;
    SimRunLabel label() const;
    // The run's name in /simulation: "<policy>-<eviction>[-<predictor>-d<lookahead>-b<budget>]-batch<B>".
    std::string runName() const;
};

// The run table as stored under /simulation/<run name>: one value per sweep point in float64 arrays
// (cache_slots or cache_bytes, NaN for the other kind; link_bandwidth; tpot_mean/p50/p90/p99/max, compute,
// stall and bytes per token, tokens_per_second; hits, misses, prefetch_hits, wasted_prefetches, replaced), and
// the label and hardware in the parameters.
AtlasResults simulationResults(const PreparedSimulation& job, const std::vector<SimSweepPoint>& points);

// Throws RequestError (fields: atlas, hardware, hardware.linkBandwidth, hardware.linkLatency, config, dtype,
// measuredTimes, cache, batch, warmupSteps, predictor, lookahead, budget, sweepCache, sweepBandwidth, csv,
// layersCsv, store) or the InputError of a file (hardware JSON, config.json, measured times) before any simulation.
PreparedSimulation prepareSimulation(const SimulateRequest& request);

struct SimulationReport {
    std::vector<SimSweepPoint> points; // one per run; a single run without sweeps
    std::optional<SimResult> detail; // a single run: per-step times and the time-line
};

// Simulates the trace (its shapes must be the config's: RequestError "trace" otherwise) with the predictions
// of job.predictionSources() (RequestError "predictions" when they do not match job's predictor, lookahead and
// budget), then writes the CSVs atomically. Cancelled propagates with nothing written.
SimulationReport runSimulation(const PreparedSimulation& job, const RoutingTrace& trace,
    std::span<const PredictionSet> predictions, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

// The whole job from job.atlas: its routing trace and, for prefetch and speculative, job.predictor's
// predictions for every source layer (prefetch/prefetch_atlas.h: recorded ones from /prefetch, derived ones
// computed), all read before the first simulated step (RequestError "predictor", "lookahead", "budget" from
// the atlas side), then runSimulation, then (job.store) the run table into the atlas.
SimulationReport simulateAtlas(
    const PreparedSimulation& job, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
