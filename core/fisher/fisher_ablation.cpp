#include "fisher/fisher_ablation.h"

#include "util/error.h"
#include "util/sha256.h"
#include "util/splitmix64.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <map>
#include <numeric>
#include <set>

namespace moeatlas {

std::vector<int64_t> topUnits(std::span<const double> scores, int64_t n)
{
    std::vector<int64_t> idx(scores.size());
    std::iota(idx.begin(), idx.end(), int64_t { 0 });
    n = std::clamp<int64_t>(n, 0, static_cast<int64_t>(idx.size()));
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int64_t a, int64_t b) {
        const double sa = scores[static_cast<std::size_t>(a)], sb = scores[static_cast<std::size_t>(b)];
        return sa > sb || (sa == sb && a < b);
    });
    idx.resize(static_cast<std::size_t>(n));
    return idx;
}

std::vector<int64_t> randomUnits(int64_t total, int64_t n, uint64_t seed)
{
    n = std::clamp<int64_t>(n, 0, total);
    SplitMix64 rng(seed);
    std::set<int64_t> chosen;
    for (int64_t j = total - n; j < total; ++j) {
        const auto t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j) + 1));
        chosen.insert(chosen.count(t) ? j : t);
    }
    return { chosen.begin(), chosen.end() };
}

ExpertMask removalMask(const std::string& name, std::span<const int> layers, int64_t numExperts, int64_t intermediate,
    std::span<const int64_t> units)
{
    const int64_t perLayer = numExperts * intermediate;
    std::map<int, std::vector<char>> removed; // decoder layer -> [E * I] flags
    for (const int64_t u : units) {
        const int layer = layers[static_cast<std::size_t>(u / perLayer)];
        auto [it, fresh] = removed.try_emplace(layer);
        if (fresh)
            it->second.assign(static_cast<std::size_t>(perLayer), 0);
        it->second[static_cast<std::size_t>(u % perLayer)] = 1;
    }
    ExpertMask mask;
    mask.name = name;
    for (const auto& [layer, flags] : removed) {
        std::vector<std::vector<int>>& experts = mask.units[layer];
        experts.resize(static_cast<std::size_t>(numExperts));
        for (int64_t e = 0; e < numExperts; ++e)
            for (int64_t j = 0; j < intermediate; ++j)
                if (!flags[static_cast<std::size_t>(e * intermediate + j)])
                    experts[static_cast<std::size_t>(e)].push_back(static_cast<int>(j));
    }
    return mask;
}

std::optional<std::vector<int64_t>> parseAblationCounts(const std::string& text)
{
    if (text == "none")
        return std::nullopt;
    std::vector<int64_t> counts;
    std::size_t begin = 0;
    while (begin <= text.size()) {
        const std::size_t end = std::min(text.find(',', begin), text.size());
        std::string item = text.substr(begin, end - begin);
        const std::size_t first = item.find_first_not_of(' '), last = item.find_last_not_of(' ');
        item = first == std::string::npos ? std::string() : item.substr(first, last - first + 1);
        int64_t n = -1;
        const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
        if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || n < 0)
            throw InputError("ablation counts '" + text + "': '" + item
                + "' is not a unit count (expected comma-separated integers >= 0, or none)");
        counts.push_back(n);
        begin = end + 1;
    }
    return counts;
}

std::string ablationRankingForm(const FisherOptions& options)
{
    return options.maskForm ? "mask" : options.weightForm ? "weight" : "grad_abs";
}

std::vector<int64_t> ablationCounts(std::vector<int64_t> counts, int64_t totalUnits)
{
    for (int64_t& n : counts) {
        if (n < 0)
            throw InputError("ablation: unit count " + std::to_string(n) + " is negative");
        n = std::min(n, totalUnits);
    }
    counts.push_back(0);
    std::sort(counts.begin(), counts.end());
    counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
    return counts;
}

void checkAblationDomains(const std::vector<std::string>& domains, const std::string& source)
{
    for (const std::string& d : domains)
        if (d == "full" || d == "random")
            throw RequestError("ablate",
                source + ": domain name '" + d
                    + "' is reserved for a variant of the ablation; rename the domain or skip the ablation");
}

std::vector<AblationVariant> ablationVariants(const FisherTables& tables, const FisherAblationOptions& options)
{
    const FisherFormTable* form = tables.find(options.form);
    if (!form || options.form == "magnitude")
        throw InputError("ablation: no per-domain '" + options.form + "' scores to rank units by");
    const int64_t total = tables.unitsPerRow();
    const std::span<const double> all(form->units);
    std::vector<AblationVariant> out { AblationVariant { "full", 0, {} } };
    const std::size_t pooled = tables.domains.size() - 1;
    if (options.perDomain)
        checkAblationDomains(
            { tables.domains.begin(), tables.domains.begin() + static_cast<std::ptrdiff_t>(pooled) }, "ablation");
    for (const int64_t n : ablationCounts(options.counts, total)) {
        if (n == 0)
            continue;
        std::vector<std::size_t> rows { pooled }; // pooled first, then the domains in order
        if (options.perDomain)
            for (std::size_t d = 0; d < pooled; ++d)
                rows.push_back(d);
        for (const std::size_t r : rows)
            out.push_back({ tables.domains[r], n,
                topUnits(all.subspan(r * static_cast<std::size_t>(total), static_cast<std::size_t>(total)), n) });
        if (options.random)
            out.push_back({ "random", n, randomUnits(total, n, options.seed) });
    }
    return out;
}

FisherAblation runFisherAblation(const Checkpoint& checkpoint, const ModelSpec& spec, const ExecutorOptions& executor,
    const EvalTokens& tokens, const FisherTables& tables, const FisherAblationOptions& options,
    const ProgressFn& progress, const StopToken* stop)
{
    FisherAblation a;
    a.form = options.form;
    a.seed = options.seed;
    a.layers = tables.layers;
    a.numExperts = tables.numExperts;
    a.intermediate = tables.intermediate;
    a.variants = ablationVariants(tables, options);
    std::vector<EvalVariant> variants;
    for (const AblationVariant& v : a.variants) {
        EvalVariant e = fullVariant(spec);
        if (v.ranking != "full") {
            e.name = (v.ranking == "random" ? "random-" : "top-") + std::to_string(v.removed)
                + (v.ranking == "random" ? "" : ":" + v.ranking);
            e.method = v.ranking == "random" ? "random" : "fisher";
            e.criterion = v.ranking == "random" ? "" : "fisher_" + options.form;
            e.domain = v.ranking == "random" || v.ranking == "pooled" ? "" : v.ranking;
            e.mask = removalMask(e.name, tables.layers, tables.numExperts, tables.intermediate, v.units);
            e.sparsity = static_cast<double>(v.removed) / static_cast<double>(tables.unitsPerRow());
        }
        variants.push_back(std::move(e));
    }
    a.table = evaluateVariants(checkpoint, spec, executor, tokens, std::move(variants), progress, stop);
    return a;
}

void writeFisherAblation(AtlasFile& update, const FisherAblation& a)
{
    const uint64_t V = a.variants.size(), D = a.table.domains.size();
    uint64_t most = 0;
    for (const AblationVariant& v : a.variants)
        most = std::max<uint64_t>(most, v.units.size());
    AtlasArray nll { "nll", { V, D }, {} }, tokens { "tokens", { D }, {} }, removed { "removed", { V }, {} },
        units { "removed_units", { V, most, 3 }, std::vector<double>(V * most * 3, -1.0) };
    nlohmann::json variants = nlohmann::json::array();
    const int64_t perLayer = a.numExperts * a.intermediate;
    for (std::size_t v = 0; v < V; ++v) {
        const AblationVariant& var = a.variants[v];
        variants.push_back(
            { { "name", a.table.variants[v].name }, { "ranking", var.ranking }, { "removed", var.removed } });
        nll.values.insert(nll.values.end(), a.table.nll[v].begin(), a.table.nll[v].end());
        removed.values.push_back(static_cast<double>(var.removed));
        for (std::size_t k = 0; k < var.units.size(); ++k) {
            const int64_t u = var.units[k];
            double* out = &units.values[(v * most + k) * 3];
            out[0] = a.layers[static_cast<std::size_t>(u / perLayer)];
            const int64_t expert = u % perLayer / a.intermediate;
            out[1] = static_cast<double>(expert);
            out[2] = static_cast<double>(u % a.intermediate);
        }
    }
    for (const int64_t n : a.table.predictedTokens)
        tokens.values.push_back(static_cast<double>(n));
    AtlasResults r;
    r.paramsJson = nlohmann::json {
        { "format", "moeatlas-fisher-ablation" }, { "version", 1 }, { "form", a.form }, { "seed", a.seed },
        { "domains", a.table.domains }, { "variants", variants }, { "token_source", a.table.tokenSource },
        { "checkpoint", a.table.checkpoint }, { "compute_dtype", a.table.computeDtype },
        { "loss", "next-token nll, nats" }
    }.dump();
    r.inputsHash = sha256Hex(r.paramsJson);
    r.arrays = { std::move(nll), std::move(tokens), std::move(removed), std::move(units) };
    update.writeResults("fisher/ablation", r);
}

int FisherAblationResults::fullIndex() const
{
    for (std::size_t v = 0; v < variants.size(); ++v)
        if (variants[v].ranking == "full")
            return static_cast<int>(v);
    return -1;
}

std::optional<FisherAblationResults> readFisherAblation(const AtlasFile& atlas)
{
    const std::optional<AtlasResults> g = atlas.readResults("fisher/ablation");
    if (!g)
        return std::nullopt;
    const std::string where = atlas.path().string() + ": /fisher/ablation";
    FisherAblationResults r;
    try {
        const nlohmann::json p = nlohmann::json::parse(g->paramsJson);
        r.form = p.at("form").get<std::string>();
        r.seed = p.at("seed").get<uint64_t>();
        r.domains = p.at("domains").get<std::vector<std::string>>();
        r.tokenSource = p.value("token_source", std::string());
        for (const nlohmann::json& v : p.at("variants"))
            r.variants.push_back({ v.at("name").get<std::string>(), v.at("ranking").get<std::string>(),
                v.at("removed").get<int64_t>(), {} });
    } catch (const nlohmann::json::exception& e) {
        throw InputError(where + ": attribute params is not the expected JSON (" + e.what() + ")");
    }
    const uint64_t V = r.variants.size(), D = r.domains.size();
    const AtlasArray* nll = g->find("nll");
    const AtlasArray* tokens = g->find("tokens");
    if (!nll || nll->dims != std::vector<uint64_t> { V, D })
        throw InputError(where + "/nll: missing or not of shape [" + std::to_string(V) + ", " + std::to_string(D)
            + "] (variants x domains of the params)");
    if (!tokens || tokens->dims != std::vector<uint64_t> { D })
        throw InputError(where + "/tokens: missing or not of shape [" + std::to_string(D) + "]");
    for (std::size_t v = 0; v < V; ++v)
        r.variants[v].nll.assign(nll->values.begin() + static_cast<std::ptrdiff_t>(v * D),
            nll->values.begin() + static_cast<std::ptrdiff_t>((v + 1) * D));
    for (const double t : tokens->values)
        r.tokens.push_back(static_cast<int64_t>(t));
    return r;
}

} // namespace moeatlas
