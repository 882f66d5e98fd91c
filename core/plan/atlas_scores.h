// Expert scores read straight from an atlas's /scores/<criterion> group (written by
// `moeatlas score`), so planning needs no intermediate scores JSON.
#pragma once

#include "plan/plan.h"

#include <filesystem>
#include <string>
#include <vector>

namespace moeatlas {

class AtlasFile;
struct AtlasResults;

struct AtlasScores {
    std::vector<ScoreTable> domains; // one per calibration domain, tokenCount = its tokens
    ScoreTable pooled; // row D: sums over all domains / counts over all domains
    std::string atlasPath;
    std::string configSha256; // of the config.json the atlas was captured from
    std::string checkpointPath; // as recorded at capture
};

// Throws InputError with the remedy when the atlas is incomplete, has no such criterion (run
// `moeatlas score`; reap/ean need a capture with --expert-norms) or the group has the wrong shape.
AtlasScores readAtlasScores(const std::filesystem::path& atlas, const std::string& criterion);
// The same from an open atlas (one file version for everything read from it).
AtlasScores readAtlasScores(const AtlasFile& atlas, const std::string& criterion);
// The same from a /scores/<criterion> group already read from `atlas` (shape checks included).
AtlasScores atlasScoresFromResults(const AtlasFile& atlas, const std::string& criterion, const AtlasResults& results);

} // namespace moeatlas
