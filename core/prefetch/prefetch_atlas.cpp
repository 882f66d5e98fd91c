#include "prefetch/prefetch_atlas.h"

#include "prefetch/prefetch_derived.h"
#include "util/error.h"
#include "util/file_lock.h"
#include "util/sha256.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

namespace moeatlas {

namespace {

std::string joinInts(const std::vector<int>& values)
{
    std::string text;
    for (const int v : values)
        text += (text.empty() ? "" : ", ") + std::to_string(v);
    return text;
}

} // namespace

RoutingTrace readRoutingTrace(const AtlasFile& atlas, TraceSplit* split)
{
    const AtlasModelInfo& model = atlas.model();
    const std::vector<int> done = atlas.completedLayers();
    std::vector<int> missing;
    for (const int layer : model.moeLayers)
        if (std::find(done.begin(), done.end(), layer) == done.end())
            missing.push_back(layer);
    if (!missing.empty())
        throw InputError(atlas.path().string() + ": MoE layers " + joinInts(missing)
            + " are not complete (resume the interrupted capture first)");
    RoutingTrace trace;
    trace.numExperts = model.numExperts;
    trace.topK = model.topK;
    trace.moeLayers = model.moeLayers;
    trace.seqOffsets = atlas.seqOffsets();
    trace.domainIds = atlas.domainIds();
    for (const AtlasDomain& d : atlas.calibration().domains)
        trace.domainNames.push_back(d.name);
    for (const int layer : model.moeLayers)
        trace.routed.push_back(atlas.readTopkIds(layer));
    TraceSplit how;
    if (const std::optional<AtlasPrefetchInfo> info = atlas.prefetchInfo()) {
        trace.trainSequences = info->trainSequences;
        how = { true, info->trainFraction, info->splitSeed };
    } else {
        trace.trainSequences
            = splitSequences(trace.seqOffsets, trace.domainIds, kDefaultTrainFraction, atlas.calibration().seed);
        how = { false, kDefaultTrainFraction, atlas.calibration().seed };
    }
    if (split)
        *split = how;
    return trace;
}

PredictionSet predictions(
    const AtlasFile& atlas, const RoutingTrace& trace, Predictor predictor, int source, int lookahead, int budget)
{
    checkPrediction(trace, source, lookahead, budget);
    if (!isRecorded(predictor))
        return derivedPredictions(trace, predictor, source, lookahead, budget);
    const std::string name = predictorName(predictor);
    const std::optional<AtlasPrefetchInfo> info = atlas.prefetchInfo();
    if (!info || std::find(info->predictors.begin(), info->predictors.end(), name) == info->predictors.end())
        throw RequestError("predictor",
            atlas.path().string() + ": no recorded '" + name + "' predictions"
                + (info ? " (/prefetch has: " +
                            [&] {
                                std::string names;
                                for (const std::string& p : info->predictors)
                                    names += (names.empty() ? "" : ", ") + p;
                                return names.empty() ? std::string("none") : names;
                            }()
                            + ")"
                        : std::string(" (the atlas has no /prefetch)"))
                + "; capture with --prefetch to record them, or ask for frequency, previous or oracle");
    if (lookahead > info->maxLookahead)
        throw RequestError("lookahead",
            "lookahead " + std::to_string(lookahead) + ": " + atlas.path().string() + " recorded '" + name
                + "' up to lookahead " + std::to_string(info->maxLookahead));
    if (budget > info->budget)
        throw RequestError("budget",
            "budget " + std::to_string(budget) + ": " + atlas.path().string() + " recorded "
                + std::to_string(info->budget) + " experts per prediction");
    const std::vector<int32_t> stored
        = atlas.readPrefetchIds(name, trace.moeLayers[static_cast<std::size_t>(source)], lookahead);
    const auto numT = static_cast<std::size_t>(trace.numTokens());
    const std::size_t width = numT == 0 ? 0 : stored.size() / numT;
    if (width != static_cast<std::size_t>(info->budget))
        throw InputError(atlas.path().string() + ": /prefetch/" + name + "/"
            + std::to_string(trace.moeLayers[static_cast<std::size_t>(source)]) + "/d" + std::to_string(lookahead)
            + ": " + std::to_string(width) + " experts per token, the attribute budget says "
            + std::to_string(info->budget));
    PredictionSet out { predictor, source, lookahead, budget, {} };
    const auto b = static_cast<std::size_t>(budget);
    out.ids.reserve(numT * b);
    for (std::size_t t = 0; t < numT; ++t)
        out.ids.insert(out.ids.end(), stored.begin() + static_cast<std::ptrdiff_t>(t * width),
            stored.begin() + static_cast<std::ptrdiff_t>(t * width + b));
    return out;
}

AtlasResults hitTableResults(const PrefetchHitTable& table, const TraceSplit& split)
{
    const uint64_t P = table.predictors.size(), D = table.domains.size(), S = table.layers.size(),
                   A = table.lookaheads.size();
    std::vector<std::string> names;
    names.reserve(table.predictors.size());
    for (const Predictor p : table.predictors)
        names.push_back(predictorName(p));
    std::vector<std::string> domains = table.domains;
    domains.emplace_back("pooled");
    const nlohmann::json params = { { "format", "moeatlas-prefetch-hit-rates" }, { "version", 1 },
        { "predictors", names }, { "splits", { "heldout", "all" } }, { "domains", domains }, { "layers", table.layers },
        { "lookaheads", table.lookaheads }, { "budget", table.budget }, { "top_k", table.topK },
        { "num_experts", table.numExperts },
        { "split",
            { { "source", split.recorded ? "/prefetch/train_sequences" : "splitSequences" },
                { "train_fraction", split.trainFraction }, { "seed", std::to_string(split.seed) } } },
        { "hit_rate", "sum |first k predicted & routed| / (k tokens)" },
        { "recall", "sum |first budget predicted & routed| / (k tokens)" },
        { "previous_first_token", "frequency list" } };
    AtlasResults r;
    r.paramsJson = params.dump();
    r.inputsHash = sha256Hex(r.paramsJson);
    AtlasArray hit { "hit_rate", { P, kHitSplits, D + 1, S, A }, {} };
    AtlasArray recall { "recall", { P, kHitSplits, D + 1, S, A }, {} };
    for (std::size_t p = 0; p < P; ++p)
        for (const HitSplit s : { HitSplit::Heldout, HitSplit::All })
            for (std::size_t d = 0; d <= D; ++d) {
                const std::vector<double> h = table.heatmap(p, s, d, false);
                const std::vector<double> rc = table.heatmap(p, s, d, true);
                hit.values.insert(hit.values.end(), h.begin(), h.end());
                recall.values.insert(recall.values.end(), rc.begin(), rc.end());
            }
    const auto asDoubles = [](const char* name, std::vector<uint64_t> dims, const std::vector<int64_t>& v) {
        return AtlasArray { name, std::move(dims), std::vector<double>(v.begin(), v.end()) };
    };
    r.arrays = { std::move(hit), std::move(recall), asDoubles("hit_sums", { P, kHitSplits, D, S, A }, table.hitSums),
        asDoubles("recall_sums", { P, kHitSplits, D, S, A }, table.recallSums),
        asDoubles("token_counts", { kHitSplits, D }, table.tokenCounts) };
    return r;
}

PrefetchHitTable hitTableFromResults(const AtlasResults& results, const std::string& where)
{
    const nlohmann::json params = nlohmann::json::parse(results.paramsJson, nullptr, false);
    const auto fail = [&](const std::string& what) -> PrefetchHitTable { throw InputError(where + ": " + what); };
    if (!params.is_object() || params.value("format", "") != "moeatlas-prefetch-hit-rates")
        return fail("attribute params is not a moeatlas-prefetch-hit-rates description");
    PrefetchHitTable t;
    try {
        for (const auto& name : params.at("predictors"))
            t.predictors.push_back(parsePredictor(name.get<std::string>(), "predictors"));
        t.domains = params.at("domains").get<std::vector<std::string>>();
        if (t.domains.empty())
            return fail("params lists no domains");
        t.domains.pop_back(); // "pooled"
        t.layers = params.at("layers").get<std::vector<int>>();
        t.lookaheads = params.at("lookaheads").get<std::vector<int>>();
        t.budget = params.at("budget").get<int>();
        t.topK = params.at("top_k").get<int>();
        t.numExperts = params.at("num_experts").get<int>();
    } catch (const nlohmann::json::exception& e) {
        return fail(std::string("attribute params: ") + e.what());
    } catch (const RequestError& e) {
        return fail(std::string("attribute params: ") + e.what());
    }
    const std::size_t cells
        = t.predictors.size() * kHitSplits * t.domains.size() * t.layers.size() * t.lookaheads.size();
    const auto integers = [&](const char* name, std::size_t n) {
        const AtlasArray* a = results.find(name);
        if (!a || a->values.size() != n)
            fail(std::string("dataset ") + name + " is missing or does not hold " + std::to_string(n) + " values");
        std::vector<int64_t> out;
        out.reserve(n);
        for (const double v : a->values)
            out.push_back(std::llround(v));
        return out;
    };
    t.hitSums = integers("hit_sums", cells);
    t.recallSums = integers("recall_sums", cells);
    t.tokenCounts = integers("token_counts", kHitSplits * t.domains.size());
    return t;
}

void storeHitTable(
    const std::filesystem::path& atlas, const PrefetchHitTable& table, const TraceSplit& split, const LockWait& wait)
{
    AtlasFile update = AtlasFile::openForUpdate(atlas, wait);
    update.writeResults(kHitRateGroup, hitTableResults(table, split));
    update.commitUpdate();
}

std::optional<PrefetchHitTable> readHitTable(const AtlasFile& atlas)
{
    const std::optional<AtlasResults> r = atlas.readResults(kHitRateGroup);
    if (!r)
        return std::nullopt;
    return hitTableFromResults(*r, atlas.path().string() + ": /" + kHitRateGroup);
}

} // namespace moeatlas
