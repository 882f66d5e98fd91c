#include "metrics/probmoe_reader.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

namespace moeatlas {

namespace {

std::vector<double> slice(const std::vector<double>& a, std::size_t begin, std::size_t n)
{
    return { a.begin() + static_cast<std::ptrdiff_t>(begin), a.begin() + static_cast<std::ptrdiff_t>(begin + n) };
}

} // namespace

std::vector<double> ProbMoeTables::marginalsOf(int row, int layer) const
{
    const std::size_t L = layers.size(), E = static_cast<std::size_t>(numExperts);
    return slice(marginalMean, (static_cast<std::size_t>(row) * L + static_cast<std::size_t>(layer)) * E, E);
}

std::vector<double> ProbMoeTables::cardinalityOf(int row, int layer) const
{
    const std::size_t L = layers.size(), B = static_cast<std::size_t>(bins());
    return slice(cardinality, (static_cast<std::size_t>(row) * L + static_cast<std::size_t>(layer)) * B, B);
}

std::vector<double> ProbMoeTables::perLayer(const std::vector<double>& array, int row) const
{
    const std::size_t L = layers.size();
    return slice(array, static_cast<std::size_t>(row) * L, L);
}

ProbMoeTables probmoeTablesFromAtlas(const AtlasFile& atlas)
{
    const std::optional<AtlasResults> r = atlas.readResults("probmoe");
    if (!r)
        throw InputError(atlas.path().string()
            + ": no ProbMoE exact-k tables (/probmoe); score the atlas (Jobs > Score atlas, or moeatlas score)");
    return probmoeTablesFromResults(atlas, *r);
}

ProbMoeTables probmoeTablesFromResults(const AtlasFile& atlas, const AtlasResults& group)
{
    const std::string where = atlas.path().string() + ": /probmoe";
    ProbMoeTables t;
    for (const AtlasDomain& d : atlas.calibration().domains)
        t.domains.push_back(d.name);
    t.layers = atlas.model().moeLayers;
    t.numExperts = atlas.model().numExperts;
    try {
        const nlohmann::json params = nlohmann::json::parse(group.paramsJson);
        t.k = params.at("k").get<int>();
        t.bandMin = params.at("band").at(0).get<int>();
        t.bandMax = params.at("band").at(1).get<int>();
    } catch (const nlohmann::json::exception& e) {
        throw InputError(where + ": params attribute lacks k or band [k_min, k_max] (" + e.what() + ")");
    }
    if (t.bandMin < 1 || t.bandMax < t.bandMin || t.bandMax > t.numExperts)
        throw InputError(where + ": band [" + std::to_string(t.bandMin) + ", " + std::to_string(t.bandMax)
            + "] is outside [1, " + std::to_string(t.numExperts) + "]");
    const auto R = static_cast<uint64_t>(t.rows()), L = static_cast<uint64_t>(t.layers.size());
    const auto read = [&](const char* name, const std::vector<uint64_t>& dims) {
        const AtlasArray* a = group.find(name);
        if (a == nullptr)
            throw InputError(where + "/" + name + " is missing");
        if (a->dims != dims)
            throw InputError(where + "/" + name + " has an unexpected shape (expected [D+1, L_moe, ...] for "
                + std::to_string(t.domains.size()) + " domains and " + std::to_string(L) + " MoE layers)");
        return a->values;
    };
    t.marginalMean = read("marginal_mean", { R, L, static_cast<uint64_t>(t.numExperts) });
    t.topkProb = read("topk_prob", { R, L });
    t.cardinality = read("cardinality", { R, L, static_cast<uint64_t>(t.bins()) });
    t.cardinalityEntropy = read("cardinality_entropy", { R, L });
    t.kstarMean = read("kstar_mean", { R, L });
    return t;
}

} // namespace moeatlas
