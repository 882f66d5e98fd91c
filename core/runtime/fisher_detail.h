// Internal to the Fisher pass (runtime/fisher.cpp, runtime/fisher_plan.cpp): input validation and
// how samples are grouped and chunked, shared by the memory plan and the pass itself.
#pragma once

#include "runtime/fisher.h"

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace moeatlas::fisher_detail {

// Throws InputError unless the offsets start at 0, end at T and give every sequence >= 2 tokens.
void checkOffsets(std::span<const int64_t> offsets, int64_t T);
// Validates sampleGroup; returns the group of every sample and sets G.
std::vector<int> sampleGroups(std::span<const int> sampleGroup, int64_t samples, int& groups);
int64_t longestSequence(std::span<const int64_t> offsets);
// Where the scratch file goes: options.scratchDir, else $TMPDIR, else /tmp.
std::string scratchDirectory(const FisherOptions& options);
// Sequences grouped into chunks of at most chunkTokens tokens each (at least one sequence): [first, last).
std::vector<std::pair<int64_t, int64_t>> sampleChunks(std::span<const int64_t> offsets, int64_t chunkTokens);

} // namespace moeatlas::fisher_detail
