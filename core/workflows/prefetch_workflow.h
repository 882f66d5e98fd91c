// `moeatlas prefetch` and the workbench's prefetch tab: hit rates of expert prefetch predictors on the
// routing an atlas recorded (docs/methods.md, "Expert prefetching"), per predictor, source MoE layer,
// lookahead and domain, on held-out and all tokens; into a CSV and the atlas (/prefetch_hit_rates).
// preparePrefetch checks every field before anything runs or is written.
#pragma once

#include "prefetch/prefetch_atlas.h"
#include "prefetch/prefetch_metrics.h"
#include "util/progress.h"

#include <filesystem>
#include <string>
#include <vector>

namespace moeatlas {

struct PrefetchRequest {
    std::filesystem::path atlas;
    // Predictor names (prefetch_data.h); empty: every predictor the atlas recorded (/prefetch) plus
    // frequency, previous and oracle.
    std::vector<std::string> predictors;
    // Lookaheads in MoE layers; empty: 1 .. the recorded max_lookahead (1 .. 3 without /prefetch), at most
    // up to the last MoE layer.
    std::vector<int> lookaheads;
    int budget = 0; // experts prefetched per token; 0: the model's top-k
    std::filesystem::path csv; // empty: no CSV
    bool store = true; // into the atlas as /prefetch_hit_rates
};

struct PreparedPrefetch {
    std::filesystem::path atlas;
    RoutingTrace trace;
    TraceSplit split;
    std::vector<Predictor> predictors;
    std::vector<int> lookaheads;
    int budget = 0;
    std::filesystem::path csv;
    bool store = true;
};

// Throws RequestError naming the field: predictors (unknown name, or a recorded predictor the atlas lacks:
// capture with --prefetch), lookaheads (< 1, beyond the last MoE layer, or beyond what was recorded),
// budget (outside [k, E], or above the recorded budget), csv (no such directory), store (the atlas is not
// complete); InputError for an unreadable atlas or incomplete layers. Reads the routing.
PreparedPrefetch preparePrefetch(const PrefetchRequest& request);

// Computes the table (progress: one unit per predictor x source layer x lookahead), then writes the CSV
// (atomically) and stores the table. Cancelled propagates with nothing written.
PrefetchHitTable runPrefetch(
    const PreparedPrefetch& job, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
