// Merging atlases recorded separately (e.g. on several machines) from the same model.
#pragma once

#include "util/progress.h"

#include <cstdint>
#include <filesystem>
#include <vector>

namespace moeatlas {

struct MergeReport {
    int64_t numTokens = 0;
    int numDomains = 0;
};

// Concatenates the tokens, sequences and routing records of complete atlases into `output`
// (created through a .partial file and renamed when finished). Domains are matched by name;
// their sample and token counts add. Refuses atlases of a different model (config_sha256,
// MoE layers, E, k) or with different record options (logit dtype, expert norms). Result
// groups are not carried over: `moeatlas score` on the output recomputes them, and because
// every score is a ratio of sums and counts (ScoreAccumulator::operator+=) the merged
// atlas's scores equal those of one atlas recorded on all tokens.
MergeReport mergeAtlases(const std::vector<std::filesystem::path>& inputs, const std::filesystem::path& output,
    const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
