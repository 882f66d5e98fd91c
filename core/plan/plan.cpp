#include "plan/plan.h"

#include "plan/dim_plan.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>

namespace moeatlas {

namespace {

struct Ranked {
    double score;
    int layer; // position in the score table
    int expert;
};

// Higher score first; ties to the lower layer, then the lower expert.
bool rankedBefore(const Ranked& a, const Ranked& b)
{
    if (a.score != b.score)
        return a.score > b.score;
    if (a.layer != b.layer)
        return a.layer < b.layer;
    return a.expert < b.expert;
}

std::vector<int> rankLayer(const ScoreTable& s, std::size_t i, int groupBegin, int groupEnd)
{
    std::vector<Ranked> r;
    for (int e = groupBegin; e < groupEnd; ++e)
        r.push_back({ s.values[i][static_cast<std::size_t>(e)], static_cast<int>(i), e });
    std::sort(r.begin(), r.end(), rankedBefore);
    std::vector<int> out;
    out.reserve(r.size());
    for (const Ranked& x : r)
        out.push_back(x.expert);
    return out;
}

// The `m` best experts of layer i; with group-limited routing, m/G from each group so top-k
// stays satisfiable inside any selection of groups.
std::vector<int> topOfLayer(const ScoreTable& s, std::size_t i, int m, int groups)
{
    std::vector<int> kept;
    const int per = s.numExperts / groups;
    for (int g = 0; g < groups; ++g) {
        std::vector<int> r = rankLayer(s, i, g * per, (g + 1) * per);
        r.resize(static_cast<std::size_t>(m / groups));
        kept.insert(kept.end(), r.begin(), r.end());
    }
    std::sort(kept.begin(), kept.end());
    return kept;
}

double sizeOf(const PlanContext& ctx, BudgetUnit unit, const std::vector<int>& countPerLayer)
{
    const PlanCosts& c = ctx.costs;
    double total = unit == BudgetUnit::Bytes ? static_cast<double>(c.fixedBytes) : static_cast<double>(c.fixedParams);
    for (std::size_t i = 0; i < countPerLayer.size(); ++i) {
        const double per = unit == BudgetUnit::Bytes ? static_cast<double>(c.expertBytes.at(i))
                                                     : static_cast<double>(c.expertParams.at(i));
        total += per * countPerLayer[i];
    }
    return total;
}

const char* unitName(BudgetUnit u)
{
    switch (u) {
    case BudgetUnit::Experts:
        return "experts";
    case BudgetUnit::Fraction:
        return "fraction";
    case BudgetUnit::Bytes:
        return "bytes";
    case BudgetUnit::Params:
        return "params";
    }
    return "?";
}

BudgetUnit parseUnit(const std::string& s, const std::string& source)
{
    for (BudgetUnit u : { BudgetUnit::Experts, BudgetUnit::Fraction, BudgetUnit::Bytes, BudgetUnit::Params })
        if (s == unitName(u))
            return u;
    throw InputError(source + ": budget.unit '" + s + "' (expected experts, fraction, bytes or params)");
}

Plan basePlan(const std::string& method, const ScoreTable& s, const Budget& b, const PlanContext& ctx)
{
    Plan p;
    p.method = method;
    p.criterion = s.criterion;
    p.budget = b;
    p.checkpoint = ctx.checkpoint;
    p.modelType = ctx.modelType;
    p.numExperts = s.numExperts;
    p.topK = ctx.topK;
    p.numLayers = ctx.numLayers;
    p.layers = s.layers;
    return p;
}

const ScoreTable& findDomain(const std::vector<ScoreTable>& domains, const std::string& name)
{
    for (const ScoreTable& t : domains)
        if (t.domain == name)
            return t;
    std::string known;
    for (const ScoreTable& t : domains)
        known += (known.empty() ? "" : ", ") + t.domain;
    throw InputError("no scores for domain '" + name + "' (the scores have: " + known + ")");
}

} // namespace

void fillPrediction(Plan& p, const PlanContext& ctx)
{
    const PlanCosts& c = ctx.costs;
    if (c.expertBytes.size() != p.keep.size())
        return; // no cost model (unit tests without a checkpoint)
    const bool dims = p.hasDims();
    if (dims && (c.unitBytes.size() != p.keep.size() || c.unitParams.size() != p.keep.size()))
        return; // no per-unit costs
    int64_t droppedRows = 0;
    double droppedActiveUnits = 0; // per token, over all MoE layers (weighted by unit params)
    p.bytesBefore = c.fixedBytes;
    p.paramsBefore = c.fixedParams;
    p.bytesAfter = c.fixedBytes;
    p.paramsAfter = c.fixedParams;
    for (std::size_t i = 0; i < p.keep.size(); ++i) {
        const auto kept = static_cast<int64_t>(p.keep[i].size());
        p.bytesBefore += c.expertBytes[i] * static_cast<uint64_t>(p.numExperts);
        p.paramsBefore += c.expertParams[i] * p.numExperts;
        droppedRows += p.numExperts - kept;
        if (!dims) {
            p.bytesAfter += c.expertBytes[i] * static_cast<uint64_t>(kept);
            p.paramsAfter += c.expertParams[i] * kept;
            continue;
        }
        // A kept expert of width w costs its router row plus w units.
        const auto I = p.dims.intermediate;
        int64_t width = 0;
        for (const auto& u : p.units[i])
            width += static_cast<int64_t>(u.size());
        p.bytesAfter += (c.expertBytes[i] - static_cast<uint64_t>(I) * c.unitBytes[i]) * static_cast<uint64_t>(kept)
            + static_cast<uint64_t>(width) * c.unitBytes[i];
        p.paramsAfter += (c.expertParams[i] - I * c.unitParams[i]) * kept + width * c.unitParams[i];
        // Each token runs top-k experts; assumed to have the layer's mean kept width (exact for IntDim-E).
        if (kept > 0)
            droppedActiveUnits += static_cast<double>(ctx.topK) * static_cast<double>(c.unitParams[i])
                * (static_cast<double>(I) - static_cast<double>(width) / static_cast<double>(kept));
    }
    // Top-k is unchanged, so per token only the dropped router rows (and dropped units) stop being computed.
    p.activeParamsBefore = c.activeParamsBefore;
    p.activeParamsAfter = c.activeParamsBefore - droppedRows * c.routerRowParams
        - static_cast<int64_t>(std::llround(droppedActiveUnits));
}

bool Plan::uniform() const
{
    for (const auto& k : keep)
        if (k.size() != keep.front().size())
            return false;
    return true;
}

std::vector<ScoreTable> parseScores(const nlohmann::json& doc, const std::string& source)
{
    if (!doc.is_object() || !doc.contains("domains") || !doc["domains"].is_object() || doc["domains"].empty())
        throw InputError(source + ": expected an object with a non-empty \"domains\" object");
    std::string criterion = "unknown";
    if (const auto it = doc.find("criterion"); it != doc.end()) {
        if (!it->is_string())
            throw InputError(source + ": \"criterion\" must be a string, got " + it->dump());
        criterion = it->get<std::string>();
    }
    std::vector<int> layers;
    if (const auto it = doc.find("layers"); it != doc.end()) {
        if (!it->is_array())
            throw InputError(source + ": \"layers\" must be an array of decoder-layer indices");
        std::set<int64_t> seen;
        for (const auto& x : *it) {
            if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > std::numeric_limits<int>::max()
                || !seen.insert(x.get<int64_t>()).second)
                throw InputError(
                    source + ": \"layers\" must list distinct decoder-layer indices >= 0, got " + x.dump());
            layers.push_back(static_cast<int>(x.get<int64_t>()));
        }
    }
    const nlohmann::json* counts = nullptr;
    if (const auto it = doc.find("token_counts"); it != doc.end()) {
        if (!it->is_object())
            throw InputError(source + ": \"token_counts\" must be an object {domain: tokens}");
        counts = &*it;
    }
    std::vector<ScoreTable> out;
    for (const auto& [name, rows] : doc["domains"].items()) {
        ScoreTable t;
        t.criterion = criterion;
        t.domain = name;
        if (!rows.is_array() || rows.empty())
            throw InputError(source + ": domains." + name + " must be a non-empty array of per-layer arrays");
        for (const auto& row : rows) {
            if (!row.is_array() || row.empty())
                throw InputError(source + ": domains." + name + ": every layer must be a non-empty array of numbers");
            std::vector<double> v;
            for (const auto& x : row) {
                if (!x.is_number() || !std::isfinite(x.get<double>()))
                    throw InputError(source + ": domains." + name + ": scores must be finite numbers");
                v.push_back(x.get<double>());
            }
            if (t.numExperts == 0)
                t.numExperts = static_cast<int>(v.size());
            if (static_cast<int>(v.size()) != t.numExperts)
                throw InputError(source + ": domains." + name + ": layers have different expert counts");
            t.values.push_back(std::move(v));
        }
        if (doc.contains("layers")) {
            t.layers = layers;
            if (t.layers.size() != t.values.size())
                throw InputError(source + ": \"layers\" lists " + std::to_string(t.layers.size())
                    + " layers but domains." + name + " has " + std::to_string(t.values.size()));
        } else {
            t.layers.resize(t.values.size());
            std::iota(t.layers.begin(), t.layers.end(), 0);
        }
        if (counts != nullptr && counts->contains(name)) {
            const nlohmann::json& n = counts->at(name);
            if (!n.is_number() || !std::isfinite(n.get<double>()) || n.get<double>() < 0)
                throw InputError(
                    source + ": token_counts." + name + " must be a number of tokens >= 0, got " + n.dump());
            t.tokenCount = n.get<double>();
        }
        if (!out.empty() && (out.front().numExperts != t.numExperts || out.front().layers != t.layers))
            throw InputError(
                source + ": domains." + name + " has a different shape than domains." + out.front().domain);
        out.push_back(std::move(t));
    }
    return out;
}

std::vector<std::vector<int>> selectExperts(const ScoreTable& s, const Budget& b, const PlanContext& ctx)
{
    const int E = s.numExperts;
    const auto L = s.values.size();
    const int G = std::max(1, ctx.numGroups);
    const int minPer = std::min(E, std::max(b.minPerLayer, ctx.topK));
    if (G > 1 && E % G != 0)
        throw InputError("group-limited router: " + std::to_string(E) + " experts do not split into "
            + std::to_string(G) + " groups");
    auto uniformKeep = [&](int m) {
        if (m < ctx.topK)
            throw InputError("budget keeps " + std::to_string(m) + " experts per layer, fewer than top-k = "
                + std::to_string(ctx.topK) + ": routing would be unsatisfiable");
        if (m > E)
            throw InputError(
                "budget keeps " + std::to_string(m) + " experts per layer but layers have only " + std::to_string(E));
        if (m % G != 0)
            throw InputError("group-limited router (" + std::to_string(G) + " groups): keeping " + std::to_string(m)
                + " experts per layer cannot keep the same count in every group; use a multiple of "
                + std::to_string(G));
        std::vector<std::vector<int>> keep;
        keep.reserve(L);
        for (std::size_t i = 0; i < L; ++i)
            keep.push_back(topOfLayer(s, i, m, G));
        return keep;
    };

    if (b.scope == BudgetScope::Uniform) {
        switch (b.unit) {
        case BudgetUnit::Experts:
            return uniformKeep(static_cast<int>(std::lround(b.amount)));
        case BudgetUnit::Fraction:
            return uniformKeep(std::max(minPer, static_cast<int>(std::lround(b.amount * E))));
        case BudgetUnit::Bytes:
        case BudgetUnit::Params: {
            int best = -1;
            for (int m = minPer; m <= E; ++m)
                if (m % G == 0 && sizeOf(ctx, b.unit, std::vector<int>(L, m)) <= b.amount)
                    best = m;
            if (best < 0)
                throw InputError("target of " + std::to_string(static_cast<int64_t>(b.amount)) + " " + unitName(b.unit)
                    + " is below the smallest plan (" + std::to_string(minPer) + " experts per layer = "
                    + std::to_string(static_cast<int64_t>(sizeOf(ctx, b.unit, std::vector<int>(L, minPer)))) + ")");
            return uniformKeep(best);
        }
        }
    }

    if (G > 1)
        throw InputError("group-limited router (" + std::to_string(G)
            + " groups): a global ranking would keep different counts per group; use a uniform budget");
    // Global: every layer first keeps its own best minPer, then the rest goes by global rank.
    std::vector<std::set<int>> kept(L);
    std::vector<int> counts(L, minPer);
    for (std::size_t i = 0; i < L; ++i) {
        std::vector<int> r = rankLayer(s, i, 0, E);
        kept[i].insert(r.begin(), r.begin() + minPer);
    }
    std::vector<Ranked> all;
    for (std::size_t i = 0; i < L; ++i)
        for (int e = 0; e < E; ++e)
            if (!kept[i].count(e))
                all.push_back({ s.values[i][static_cast<std::size_t>(e)], static_cast<int>(i), e });
    std::sort(all.begin(), all.end(), rankedBefore);

    const int64_t floorTotal = static_cast<int64_t>(minPer) * static_cast<int64_t>(L);
    int64_t wanted = 0;
    if (b.unit == BudgetUnit::Experts || b.unit == BudgetUnit::Fraction) {
        wanted = b.unit == BudgetUnit::Experts ? std::llround(b.amount)
                                               : std::llround(b.amount * E * static_cast<double>(L));
        if (wanted < floorTotal)
            throw InputError("budget keeps " + std::to_string(wanted) + " experts in all, fewer than "
                + std::to_string(minPer) + " per layer x " + std::to_string(L) + " layers");
        if (wanted > static_cast<int64_t>(E) * static_cast<int64_t>(L))
            throw InputError("budget keeps " + std::to_string(wanted) + " experts but the model has only "
                + std::to_string(static_cast<int64_t>(E) * static_cast<int64_t>(L)));
        for (int64_t n = 0; n < wanted - floorTotal; ++n)
            kept[static_cast<std::size_t>(all[static_cast<std::size_t>(n)].layer)].insert(
                all[static_cast<std::size_t>(n)].expert);
    } else {
        if (sizeOf(ctx, b.unit, counts) > b.amount)
            throw InputError("target of " + std::to_string(static_cast<int64_t>(b.amount)) + " " + unitName(b.unit)
                + " is below the smallest plan (" + std::to_string(minPer)
                + " experts per layer = " + std::to_string(static_cast<int64_t>(sizeOf(ctx, b.unit, counts))) + ")");
        // The kept set stays a prefix of the ranking: stop at the first pair that does not fit.
        for (const Ranked& r : all) {
            ++counts[static_cast<std::size_t>(r.layer)];
            if (sizeOf(ctx, b.unit, counts) > b.amount)
                break;
            kept[static_cast<std::size_t>(r.layer)].insert(r.expert);
        }
    }
    std::vector<std::vector<int>> keep;
    keep.reserve(kept.size());
    for (const auto& k : kept)
        keep.emplace_back(k.begin(), k.end());
    return keep;
}

ScoreTable combineScores(const std::vector<ScoreTable>& domains, std::map<std::string, double>& weights)
{
    if (domains.empty())
        throw InputError("no domains to combine");
    if (weights.empty()) {
        bool counts = true;
        for (const ScoreTable& t : domains)
            counts = counts && t.tokenCount > 0;
        for (const ScoreTable& t : domains)
            weights[t.domain] = counts ? t.tokenCount : 1.0;
    }
    double total = 0;
    for (const auto& [name, w] : weights) {
        findDomain(domains, name);
        if (!(w >= 0))
            throw InputError("domain weight of '" + name + "' must be >= 0");
        total += w;
    }
    if (total <= 0)
        throw InputError("domain weights sum to 0");
    ScoreTable out = domains.front();
    out.domain = "generalist";
    out.tokenCount = 0;
    for (auto& row : out.values)
        std::fill(row.begin(), row.end(), 0.0);
    for (const auto& [name, w] : weights) {
        const ScoreTable& t = findDomain(domains, name);
        out.tokenCount += t.tokenCount;
        for (std::size_t i = 0; i < out.values.size(); ++i)
            for (std::size_t e = 0; e < out.values[i].size(); ++e)
                out.values[i][e] += w / total * t.values[i][e];
    }
    return out;
}

Plan compileSpecialist(
    const std::vector<ScoreTable>& domains, const std::string& domain, const Budget& budget, const PlanContext& ctx)
{
    const ScoreTable& t = findDomain(domains, domain);
    Plan p = basePlan("specialist", t, budget, ctx);
    p.domainWeights[domain] = 1.0;
    p.keep = selectExperts(t, budget, ctx);
    fillPrediction(p, ctx);
    return p;
}

Plan compileGeneralist(const std::vector<ScoreTable>& domains, std::map<std::string, double> weights,
    const Budget& budget, const PlanContext& ctx)
{
    const ScoreTable t = combineScores(domains, weights);
    Plan p = basePlan("generalist", t, budget, ctx);
    p.domainWeights = weights;
    p.keep = selectExperts(t, budget, ctx);
    fillPrediction(p, ctx);
    return p;
}

Plan compilePooledGeneralist(
    const std::vector<ScoreTable>& domains, const ScoreTable& pooled, const Budget& budget, const PlanContext& ctx)
{
    Plan p = basePlan("generalist", pooled, budget, ctx);
    for (const ScoreTable& t : domains)
        p.domainWeights[t.domain] = t.tokenCount;
    p.keep = selectExperts(pooled, budget, ctx);
    fillPrediction(p, ctx);
    return p;
}

Plan compileUnion(const std::vector<ScoreTable>& domains, int perDomain, const PlanContext& ctx)
{
    if (domains.empty())
        throw InputError("no domains for a union plan");
    Budget b { BudgetScope::Uniform, BudgetUnit::Experts, static_cast<double>(perDomain), 0 };
    Plan p = basePlan("union", domains.front(), b, ctx);
    p.keep.assign(domains.front().values.size(), {});
    for (const ScoreTable& t : domains) {
        p.domainWeights[t.domain] = 1.0;
        const auto keep = selectExperts(t, b, ctx);
        for (std::size_t i = 0; i < keep.size(); ++i)
            p.keep[i].insert(p.keep[i].end(), keep[i].begin(), keep[i].end());
    }
    for (auto& k : p.keep) {
        std::sort(k.begin(), k.end());
        k.erase(std::unique(k.begin(), k.end()), k.end());
    }
    if (ctx.numGroups > 1 && !p.uniform())
        throw InputError("group-limited router: the union keeps different counts per layer/group");
    fillPrediction(p, ctx);
    return p;
}

nlohmann::json planToJson(const Plan& p)
{
    nlohmann::json layers = nlohmann::json::array();
    for (std::size_t i = 0; i < p.keep.size(); ++i)
        layers.push_back({ { "layer", p.layers[i] }, { "keep", p.keep[i] } });
    nlohmann::json source = { { "checkpoint", p.checkpoint }, { "model_type", p.modelType },
        { "num_experts", p.numExperts }, { "top_k", p.topK }, { "num_hidden_layers", p.numLayers } };
    if (!p.atlas.empty())
        source["atlas"] = p.atlas;
    if (!p.configSha256.empty())
        source["config_sha256"] = p.configSha256;
    nlohmann::json doc = {
        { "format", "moeatlas-plan" },
        { "version", 1 },
        { "source", source },
        { "derivation",
            { { "method", p.method }, { "criterion", p.criterion }, { "domain_weights", p.domainWeights },
                { "scores", p.scoresSource },
                { "budget",
                    { { "scope", p.budget.scope == BudgetScope::Uniform ? "uniform" : "global" },
                        { "unit", unitName(p.budget.unit) }, { "amount", p.budget.amount },
                        { "min_per_layer", p.budget.minPerLayer } } } } },
        { "uniform", p.uniform() },
        { "layers", layers },
        { "predicted",
            { { "bytes_before", p.bytesBefore }, { "bytes_after", p.bytesAfter }, { "params_before", p.paramsBefore },
                { "params_after", p.paramsAfter }, { "active_params_per_token_before", p.activeParamsBefore },
                { "active_params_per_token_after", p.activeParamsAfter } } },
    };
    if (p.hasDims())
        doc["dims"] = dimsToJson(p);
    return doc;
}

Plan planFromJson(const nlohmann::json& doc, const std::string& source)
{
    try {
        if (doc.value("format", std::string()) != "moeatlas-plan")
            throw InputError(source + ": not a MoE Atlas plan (\"format\" must be \"moeatlas-plan\")");
        Plan p;
        const auto& src = doc.at("source");
        p.checkpoint = src.value("checkpoint", std::string());
        p.modelType = src.value("model_type", std::string());
        p.numExperts = src.at("num_experts").get<int>();
        p.topK = src.value("top_k", 0);
        p.numLayers = src.value("num_hidden_layers", 0);
        p.atlas = src.value("atlas", std::string());
        p.configSha256 = src.value("config_sha256", std::string());
        const auto& d = doc.at("derivation");
        p.method = d.value("method", std::string());
        p.criterion = d.value("criterion", std::string());
        p.scoresSource = d.value("scores", std::string());
        if (d.contains("domain_weights"))
            p.domainWeights = d["domain_weights"].get<std::map<std::string, double>>();
        if (d.contains("budget")) {
            const auto& b = d["budget"];
            p.budget.scope
                = b.value("scope", std::string("uniform")) == "global" ? BudgetScope::Global : BudgetScope::Uniform;
            p.budget.unit = parseUnit(b.value("unit", std::string("experts")), source);
            p.budget.amount = b.value("amount", 0.0);
            p.budget.minPerLayer = b.value("min_per_layer", 0);
        }
        for (const auto& l : doc.at("layers")) {
            p.layers.push_back(l.at("layer").get<int>());
            std::vector<int> k = l.at("keep").get<std::vector<int>>();
            // Dimension pruning lists units per kept expert in keep order: an unsorted list would
            // attach them to the wrong experts once sorted.
            if (doc.contains("dims") && !std::is_sorted(k.begin(), k.end()))
                throw InputError(source + ": layer " + std::to_string(p.layers.back())
                    + ": keep must be sorted in a plan with dims (its units follow the keep order)");
            std::sort(k.begin(), k.end());
            if (std::adjacent_find(k.begin(), k.end()) != k.end())
                throw InputError(source + ": layer " + std::to_string(p.layers.back()) + " keeps an expert twice");
            if (k.empty() || k.front() < 0 || k.back() >= p.numExperts)
                throw InputError(source + ": layer " + std::to_string(p.layers.back())
                    + " keeps no experts or an index outside [0, " + std::to_string(p.numExperts) + ")");
            p.keep.push_back(std::move(k));
        }
        if (p.keep.empty())
            throw InputError(source + ": \"layers\" is empty");
        if (doc.contains("predicted")) {
            const auto& pr = doc["predicted"];
            p.bytesBefore = pr.value("bytes_before", uint64_t { 0 });
            p.bytesAfter = pr.value("bytes_after", uint64_t { 0 });
            p.paramsBefore = pr.value("params_before", int64_t { 0 });
            p.paramsAfter = pr.value("params_after", int64_t { 0 });
            p.activeParamsBefore = pr.value("active_params_per_token_before", int64_t { 0 });
            p.activeParamsAfter = pr.value("active_params_per_token_after", int64_t { 0 });
        }
        if (doc.contains("dims"))
            dimsFromJson(doc["dims"], p, source);
        return p;
    } catch (const nlohmann::json::exception& e) {
        throw InputError(source + ": malformed plan: " + e.what());
    }
}

std::vector<ScoreTable> readScores(const std::string& path)
{
    std::ifstream in(path);
    if (!in)
        throw InputError(path + ": cannot open scores file");
    const nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded())
        throw InputError(path + ": not valid JSON");
    return parseScores(doc, path);
}

Plan readPlan(const std::string& path)
{
    std::ifstream in(path);
    if (!in)
        throw InputError(path + ": cannot open plan");
    const nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded())
        throw InputError(path + ": plan is not valid JSON");
    return planFromJson(doc, path);
}

} // namespace moeatlas
