#include "plan/atlas_scores.h"

#include "atlas/atlas_file.h"
#include "util/error.h"

namespace moeatlas {

AtlasScores readAtlasScores(const std::filesystem::path& path, const std::string& criterion)
{
    return readAtlasScores(AtlasFile::openReadOnly(path), criterion);
}

AtlasScores readAtlasScores(const AtlasFile& atlas, const std::string& criterion)
{
    const std::string name = atlas.path().string();
    if (!atlas.isComplete())
        throw InputError(
            name + ": the atlas is incomplete (finish the capture with --resume, then run moeatlas score)");
    const std::optional<AtlasResults> results = atlas.readResults("scores/" + criterion);
    if (!results) {
        if ((criterion == "reap" || criterion == "ean") && !atlas.options().storeExpertNorms)
            throw InputError(name + ": criterion '" + criterion
                + "' needs expert output norms, and this atlas was captured without them "
                  "(capture again with --expert-norms, then run moeatlas score)");
        std::string have;
        for (const std::string& c : atlas.resultGroups("scores"))
            have += (have.empty() ? "" : ", ") + c;
        throw InputError(name + ": no scores for criterion '" + criterion + "' ("
            + (have.empty() ? std::string("the atlas has no scores") : "the atlas has: " + have)
            + "); run: moeatlas score " + name);
    }
    return atlasScoresFromResults(atlas, criterion, *results);
}

AtlasScores atlasScoresFromResults(const AtlasFile& atlas, const std::string& criterion, const AtlasResults& results)
{
    const std::string name = atlas.path().string();
    const AtlasModelInfo& m = atlas.model();
    const auto& domains = atlas.calibration().domains;
    const AtlasArray* value = results.find("value");
    const uint64_t numD = domains.size(), numL = m.moeLayers.size(), numE = static_cast<uint64_t>(m.numExperts);
    if (!value || value->dims != std::vector<uint64_t> { numD + 1, numL, numE }
        || value->values.size() != (numD + 1) * numL * numE)
        throw InputError(name + ": /scores/" + criterion
            + "/value is missing or not [domains + 1, MoE layers, experts] = [" + std::to_string(numD + 1) + ", "
            + std::to_string(numL) + ", " + std::to_string(numE) + "]");

    auto table = [&](uint64_t row, const std::string& domain, double tokens) {
        ScoreTable t;
        t.criterion = criterion;
        t.domain = domain;
        t.layers = m.moeLayers;
        t.numExperts = m.numExperts;
        t.tokenCount = tokens;
        for (uint64_t l = 0; l < numL; ++l) {
            const auto begin = value->values.begin() + static_cast<std::ptrdiff_t>((row * numL + l) * numE);
            t.values.emplace_back(begin, begin + static_cast<std::ptrdiff_t>(numE));
        }
        return t;
    };
    AtlasScores out;
    double total = 0;
    for (uint64_t d = 0; d < numD; ++d) {
        out.domains.push_back(table(d, domains[d].name, static_cast<double>(domains[d].numTokens)));
        total += static_cast<double>(domains[d].numTokens);
    }
    out.pooled = table(numD, "generalist", total);
    out.atlasPath = name;
    out.configSha256 = m.configSha256;
    out.checkpointPath = m.checkpointPath;
    return out;
}

} // namespace moeatlas
