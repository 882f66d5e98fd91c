#include "workflows/atlas_model.h"

#include "util/error.h"
#include "util/sha256.h"

namespace moeatlas {

namespace {

AtlasModel load(Checkpoint checkpoint, std::string sha)
{
    const std::string configPath = (checkpoint.dir() / "config.json").string();
    ModelSpec spec = parseModelSpec(checkpoint.config(), configPath);
    return AtlasModel { std::move(checkpoint), std::move(spec), std::move(sha) };
}

} // namespace

AtlasModel openAtlasModel(const AtlasFile& atlas, const std::filesystem::path& checkpointDir)
{
    Checkpoint checkpoint(checkpointDir.empty() ? std::filesystem::path(atlas.model().checkpointPath) : checkpointDir);
    const std::filesystem::path config = checkpoint.dir() / "config.json";
    std::string sha = sha256File(config);
    const std::string& recorded = atlas.model().configSha256;
    if (sha != recorded)
        throw InputError(config.string() + ": not the config.json " + atlas.path().string()
            + " was captured from (SHA-256 " + sha.substr(0, 12) + "..., the atlas records " + recorded.substr(0, 12)
            + "...)");
    return load(std::move(checkpoint), std::move(sha));
}

AtlasModel openModel(const std::filesystem::path& checkpointDir)
{
    Checkpoint checkpoint(checkpointDir);
    std::string sha = sha256File(checkpoint.dir() / "config.json");
    return load(std::move(checkpoint), std::move(sha));
}

} // namespace moeatlas
