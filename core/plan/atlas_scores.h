// Expert scores read straight from an atlas: /scores/<criterion> (written by `moeatlas score`) or the
// expert-level Fisher /fisher/<form>/experts (`moeatlas fisher`), so planning needs no scores JSON.
#pragma once

#include "plan/plan.h"

#include <filesystem>
#include <string>
#include <vector>

namespace moeatlas {

class AtlasFile;
struct AtlasResults;

struct AtlasScores {
    // One per calibration domain, tokenCount = its tokens (Fisher criteria: one per domain of the
    // Fisher run, tokenCount = its Fisher tokens, /fisher/tokens).
    std::vector<ScoreTable> domains;
    // Row D: sums over all domains / counts over all domains (Fisher: the run's pooled row, the
    // Fisher over all samples; tokenCount = all its tokens).
    ScoreTable pooled;
    std::string source; // the group read: "/scores/<criterion>" or "/fisher/<form>/experts"
    std::string atlasPath;
    std::string configSha256; // of the config.json the atlas was captured from
    std::string checkpointPath; // as recorded at capture
};

// The /fisher form an expert-level Fisher criterion ranks by: "mask", "weight", "grad_abs" for
// fisher_mask, fisher_weight, fisher_grad_abs; "" for any other criterion. (The activation and
// magnitude baselines rank units only: an expert's mean activation is blind to how often it is
// routed, and magnitude has no domain axis.)
std::string fisherExpertForm(const std::string& criterion);

// Throws InputError with the remedy, in words that name no CLI command or flag, when the atlas is
// incomplete, has no such criterion (score it; reap/ean need a capture that records expert output
// norms; fisher_* need the Fisher job with that form) or the group has the wrong shape.
AtlasScores readAtlasScores(const std::filesystem::path& atlas, const std::string& criterion);
// The same from an open atlas (one file version for everything read from it).
AtlasScores readAtlasScores(const AtlasFile& atlas, const std::string& criterion);
// The same from a /scores/<criterion> group already read from `atlas` (shape checks included).
AtlasScores atlasScoresFromResults(const AtlasFile& atlas, const std::string& criterion, const AtlasResults& results);

} // namespace moeatlas
