#include "metrics/routing_stats_reader.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

namespace moeatlas {

namespace {

std::vector<double> slice(const std::vector<double>& a, std::size_t begin, std::size_t n)
{
    return { a.begin() + static_cast<std::ptrdiff_t>(begin), a.begin() + static_cast<std::ptrdiff_t>(begin + n) };
}

} // namespace

std::vector<double> RoutingStats::loadShareOf(int row, int layer) const
{
    const std::size_t L = layers.size(), E = static_cast<std::size_t>(numExperts);
    return slice(loadShare, (static_cast<std::size_t>(row) * L + static_cast<std::size_t>(layer)) * E, E);
}

std::vector<double> RoutingStats::perLayer(const std::vector<double>& array, int row) const
{
    const std::size_t L = layers.size();
    return slice(array, static_cast<std::size_t>(row) * L, L);
}

std::vector<double> RoutingStats::dynamicKOf(int row, int layer) const
{
    const std::size_t L = layers.size(), B = static_cast<std::size_t>(bins());
    std::vector<double> out(B, 0.0);
    const int first = row == pooledRow() ? 0 : row;
    const int last = row == pooledRow() ? pooledRow() - 1 : row;
    for (int d = first; d <= last; ++d)
        for (std::size_t b = 0; b < B; ++b)
            out[b] += dynamicKHist[(static_cast<std::size_t>(d) * L + static_cast<std::size_t>(layer)) * B + b];
    return out;
}

std::vector<double> RoutingStats::specialisationOf(int domain, int layer) const
{
    const std::size_t L = layers.size(), E = static_cast<std::size_t>(numExperts);
    return slice(specialisation, (static_cast<std::size_t>(domain) * L + static_cast<std::size_t>(layer)) * E, E);
}

std::vector<double> RoutingStats::coactivationOf(int layer) const
{
    const std::size_t E = static_cast<std::size_t>(numExperts);
    return slice(coactivation, static_cast<std::size_t>(layer) * E * E, E * E);
}

RoutingStats routingStatsFromAtlas(const AtlasFile& atlas)
{
    const std::optional<AtlasResults> r = atlas.readResults("statistics");
    if (!r)
        throw InputError(atlas.path().string() + ": no routing statistics (score the atlas first)");
    return routingStatsFromResults(atlas, *r);
}

RoutingStats routingStatsFromResults(const AtlasFile& atlas, const AtlasResults& statistics)
{
    const std::string where = atlas.path().string();
    const AtlasResults* r = &statistics;
    RoutingStats s;
    for (const AtlasDomain& d : atlas.calibration().domains)
        s.domains.push_back(d.name);
    s.layers = atlas.model().moeLayers;
    s.numExperts = atlas.model().numExperts;
    const uint64_t D = s.domains.size(), L = s.layers.size(), E = static_cast<uint64_t>(s.numExperts);

    const nlohmann::json params = nlohmann::json::parse(r->paramsJson, nullptr, false);
    if (params.is_object() && params.contains("dynamic_k_band") && params["dynamic_k_band"].size() == 2) {
        s.bandMin = params["dynamic_k_band"][0].get<int>();
        s.bandMax = params["dynamic_k_band"][1].get<int>();
    }
    auto take = [&](const char* name, const std::vector<uint64_t>& dims) {
        const AtlasArray* a = r->find(name);
        if (!a || a->dims != dims)
            throw InputError(where + ":/statistics/" + name + " is missing or has an unexpected shape");
        return a->values;
    };
    s.loadShare = take("load_share", { D + 1, L, E });
    s.loadCv = take("load_cv", { D + 1, L });
    s.loadEntropy = take("load_entropy", { D + 1, L });
    s.tokenEntropy = take("token_entropy", { D + 1, L });
    s.m99Mean = take("m99_mean", { D + 1, L });
    s.specialisation = take("specialisation", { D, L, E });
    s.coactivation = take("coactivation", { L, E, E });
    const AtlasArray* hist = r->find("dynamic_k_hist");
    if (!hist || hist->dims.size() != 3 || hist->dims[0] != D || hist->dims[1] != L)
        throw InputError(where + ":/statistics/dynamic_k_hist is missing or has an unexpected shape");
    if (s.bins() != static_cast<int>(hist->dims[2])) // no band recorded: bins from the array
        s.bandMax = s.bandMin + static_cast<int>(hist->dims[2]) - 1;
    s.dynamicKHist = hist->values;
    return s;
}

} // namespace moeatlas
