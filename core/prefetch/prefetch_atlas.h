// The atlas side of the prefetch analyses: the routing trace of a capture (/layers, /tokens, the split),
// the predictions of any predictor (recorded ones from /prefetch, derived ones computed), and the hit-rate
// table stored as /prefetch_hit_rates (docs/atlas-format.md).
#pragma once

#include "atlas/atlas_file.h"
#include "prefetch/prefetch_data.h"
#include "prefetch/prefetch_metrics.h"

#include <filesystem>
#include <optional>
#include <string>

namespace moeatlas {

struct LockWait; // util/file_lock.h

// Where the training/held-out split of a trace comes from.
struct TraceSplit {
    bool recorded = false; // true: /prefetch/train_sequences; false: splitSequences below
    double trainFraction = 0.0;
    uint64_t seed = 0;
};

// Without /prefetch the split is splitSequences(seqOffsets, domains, kDefaultTrainFraction, the
// calibration seed).
inline constexpr double kDefaultTrainFraction = 0.5;

// The routing of every MoE layer (/layers/<l>/topk_ids), tokens' domains and sequences, and the split:
// /prefetch/train_sequences when the atlas has /prefetch, else the default split above. Throws InputError
// naming the atlas and the layers when a MoE layer is not complete. `split` (optional) says which.
RoutingTrace readRoutingTrace(const AtlasFile& atlas, TraceSplit* split = nullptr);

// The predictions of `predictor` at source MoE layer index `source` for MoE layer source + lookahead,
// `budget` experts per token. Recorded predictors are read from /prefetch (the first `budget` of the
// stored list, budget <= the stored budget); derived ones are computed (prefetch_derived.h). Throws
// RequestError("predictor") naming the atlas and the predictor when the atlas did not record it (capture
// with --prefetch), RequestError("lookahead") beyond the last MoE layer or the recorded max_lookahead,
// RequestError("budget") outside [k, E] or above the recorded budget.
PredictionSet predictions(
    const AtlasFile& atlas, const RoutingTrace& trace, Predictor predictor, int source, int lookahead, int budget);

// The table as the result group /prefetch_hit_rates; `split` goes into params.
inline constexpr const char* kHitRateGroup = "prefetch_hit_rates";
AtlasResults hitTableResults(const PrefetchHitTable& table, const TraceSplit& split);
// Back from the group; InputError naming `where` when it is not one.
PrefetchHitTable hitTableFromResults(const AtlasResults& results, const std::string& where);
// Replaces /prefetch_hit_rates of a complete atlas through an update (nothing changes on failure).
void storeHitTable(
    const std::filesystem::path& atlas, const PrefetchHitTable& table, const TraceSplit& split, const LockWait& wait);
// The stored table; empty optional when the atlas has none.
std::optional<PrefetchHitTable> readHitTable(const AtlasFile& atlas);

} // namespace moeatlas
