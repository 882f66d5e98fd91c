// The checkpoint an atlas's results belong to: opened, its config.json checked against the one the
// atlas was captured from, and its model spec parsed. Every job that reads an atlas and runs or
// costs its model starts here.
#pragma once

#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"

#include <filesystem>
#include <string>

namespace moeatlas {

struct AtlasModel {
    Checkpoint checkpoint;
    ModelSpec spec;
    std::string configSha256; // of the checkpoint's config.json
};

// Opens `checkpointDir` (empty: the directory recorded in the atlas) and parses its spec. Throws
// InputError naming config.json and the atlas when the config is not the one the atlas was captured
// from (both SHA-256 prefixes in the message), and the checkpoint's own errors otherwise.
AtlasModel openAtlasModel(const AtlasFile& atlas, const std::filesystem::path& checkpointDir);

// A checkpoint without an atlas (held-out evaluation, planning from a scores file).
AtlasModel openModel(const std::filesystem::path& checkpointDir);

} // namespace moeatlas
