#include "plan/dim_plan.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>

namespace moeatlas {

namespace {

constexpr const char* kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64Encode(const std::vector<uint8_t>& bytes)
{
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < bytes.size(); i += 3) {
        const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
        uint32_t v = static_cast<uint32_t>(bytes[i]) << 16;
        if (n > 1)
            v |= static_cast<uint32_t>(bytes[i + 1]) << 8;
        if (n > 2)
            v |= bytes[i + 2];
        for (std::size_t c = 0; c < 4; ++c)
            out += c <= n ? kBase64[(v >> (18 - 6 * c)) & 63] : '=';
    }
    return out;
}

// Strict RFC 4648 base64 (padding required); throws InputError naming `where`.
std::vector<uint8_t> base64Decode(const std::string& text, const std::string& where)
{
    if (text.size() % 4 != 0)
        throw InputError(where + ": not base64 (length " + std::to_string(text.size()) + " is not a multiple of 4)");
    std::vector<uint8_t> out;
    out.reserve(text.size() / 4 * 3);
    for (std::size_t i = 0; i < text.size(); i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (std::size_t c = 0; c < 4; ++c) {
            const char ch = text[i + c];
            const char* pos = ch == '\0' ? nullptr : std::strchr(kBase64, ch);
            const bool last = i + 4 == text.size();
            if (ch == '=' && last && c >= 2 && (c == 3 || text[i + 3] == '=')) {
                ++pad;
                v <<= 6;
                continue;
            }
            if (!pos || pad > 0)
                throw InputError(where + ": not base64 (character " + std::to_string(i + c) + ")");
            v = (v << 6) | static_cast<uint32_t>(pos - kBase64);
        }
        out.push_back(static_cast<uint8_t>(v >> 16));
        if (pad < 2)
            out.push_back(static_cast<uint8_t>(v >> 8));
        if (pad < 1)
            out.push_back(static_cast<uint8_t>(v));
    }
    return out;
}

std::string number(double x)
{
    nlohmann::json j = x;
    return j.dump();
}

void checkSparsity(double s, const std::string& where)
{
    if (!(s >= 0.0 && s < 1.0))
        throw InputError(where + " " + number(s) + ": expected the fraction of units dropped, in [0, 1)");
}

// A unit ranked for selection: higher score first, then the lower position in (layer, expert,
// unit) order, so the kept set never depends on sort stability.
struct RankedUnit {
    double score;
    uint64_t order;
};

bool rankedBefore(const RankedUnit& a, const RankedUnit& b)
{
    return a.score != b.score ? a.score > b.score : a.order < b.order;
}

// The `n` best of `units` (in no particular order).
void keepBest(std::vector<RankedUnit>& units, int64_t n)
{
    const auto end = units.begin() + n;
    std::nth_element(units.begin(), end, units.end(), rankedBefore);
    units.erase(end, units.end());
}

// Fisher-MoE drops int(count * r) units (METHODS.md section 4, their code truncates the product
// the way Python's int() does), so a count computed here matches theirs bit for bit; a sparsity
// below 1 therefore always keeps at least one unit of the pool.
int64_t keptOf(double sparsity, int64_t count)
{
    const auto dropped = static_cast<int64_t>(std::floor(static_cast<double>(count) * sparsity));
    return std::clamp<int64_t>(count - dropped, 0, count);
}

void checkScores(const UnitScoreTable& s, const PlanContext& ctx)
{
    const std::string what = "unit scores" + (s.criterion.empty() ? std::string() : " (" + s.criterion + ")");
    if (s.layers.empty() || s.numExperts <= 0 || s.intermediate <= 0)
        throw InputError(what + ": empty table (" + std::to_string(s.layers.size()) + " layers, "
            + std::to_string(s.numExperts) + " experts, intermediate size " + std::to_string(s.intermediate) + ")");
    const uint64_t expected
        = s.layers.size() * static_cast<uint64_t>(s.numExperts) * static_cast<uint64_t>(s.intermediate);
    if (s.values.size() != expected)
        throw InputError(what + ": " + std::to_string(s.values.size())
            + " values, expected layers x experts x units = " + std::to_string(s.layers.size()) + " x "
            + std::to_string(s.numExperts) + " x " + std::to_string(s.intermediate) + " = " + std::to_string(expected));
    if (std::adjacent_find(s.layers.begin(), s.layers.end(), std::greater_equal<int>()) != s.layers.end())
        throw InputError(what + ": layers must be ascending MoE layer indices");
    if (ctx.intermediate > 0 && s.intermediate != ctx.intermediate)
        throw InputError(what + ": intermediate size " + std::to_string(s.intermediate)
            + ", but the checkpoint's routed experts have " + std::to_string(ctx.intermediate));
    for (const double v : s.values)
        if (!std::isfinite(v))
            throw InputError(what + ": scores must be finite numbers");
}

} // namespace

const char* dimScopeName(DimScope scope)
{
    switch (scope) {
    case DimScope::Expert:
        return "IntDim-E";
    case DimScope::Layer:
        return "IntDim-L";
    case DimScope::Global:
        return "IntDim-G";
    }
    return "?";
}

DimScope parseDimScope(const std::string& name, const std::string& source)
{
    for (const DimScope s : { DimScope::Expert, DimScope::Layer, DimScope::Global })
        if (name == dimScopeName(s))
            return s;
    throw InputError(source + ": dimension scope '" + name + "' (expected IntDim-E, IntDim-L or IntDim-G)");
}

Plan compileDimPlan(const Plan& expertPlan, const UnitScoreTable& s, const DimBudget& b, const PlanContext& ctx)
{
    checkSparsity(b.sparsity, "dimension sparsity");
    checkScores(s, ctx);
    const int E = s.numExperts;
    const int64_t I = s.intermediate;
    Plan p = expertPlan;
    if (p.keep.empty()) { // no expert pruning: every expert of every scored layer
        p.method = p.method.empty() ? "dims" : p.method;
        p.criterion = p.criterion.empty() ? s.criterion : p.criterion;
        p.checkpoint = ctx.checkpoint;
        p.modelType = ctx.modelType;
        p.topK = ctx.topK;
        p.numLayers = ctx.numLayers;
        p.numExperts = E;
        p.layers = s.layers;
        p.budget = Budget { BudgetScope::Uniform, BudgetUnit::Experts, static_cast<double>(E), 0 };
        std::vector<int> all(static_cast<std::size_t>(E));
        std::iota(all.begin(), all.end(), 0);
        p.keep.assign(s.layers.size(), all);
    } else if (p.numExperts != E) {
        throw InputError("unit scores: " + std::to_string(E) + " experts per layer, the expert plan has "
            + std::to_string(p.numExperts));
    }

    // Plan positions in decoder-layer order, the table row of each, and where its units start in
    // the (layer, expert, unit) order that breaks ties.
    std::vector<std::size_t> byLayer(p.layers.size());
    std::iota(byLayer.begin(), byLayer.end(), std::size_t { 0 });
    std::sort(byLayer.begin(), byLayer.end(), [&](std::size_t a, std::size_t c) { return p.layers[a] < p.layers[c]; });
    std::vector<std::size_t> row(p.layers.size());
    std::vector<uint64_t> first(p.layers.size());
    uint64_t total = 0;
    for (const std::size_t i : byLayer) {
        const auto it = std::lower_bound(s.layers.begin(), s.layers.end(), p.layers[i]);
        if (it == s.layers.end() || *it != p.layers[i])
            throw InputError("unit scores: no scores for MoE layer " + std::to_string(p.layers[i]) + " of the plan");
        row[i] = static_cast<std::size_t>(it - s.layers.begin());
        first[i] = total;
        total += p.keep[i].size() * static_cast<uint64_t>(I);
    }
    // Every kept unit of layer position i, in (expert, unit) order.
    auto unitsOf = [&](std::size_t i, std::vector<RankedUnit>& out) {
        for (std::size_t k = 0; k < p.keep[i].size(); ++k) {
            const double* v = s.values.data()
                + (row[i] * static_cast<std::size_t>(E) + static_cast<std::size_t>(p.keep[i][k]))
                    * static_cast<std::size_t>(I);
            for (int64_t j = 0; j < I; ++j)
                out.push_back({ v[j], first[i] + k * static_cast<uint64_t>(I) + static_cast<uint64_t>(j) });
        }
    };
    p.units.assign(p.layers.size(), {});
    for (std::size_t i = 0; i < p.layers.size(); ++i)
        p.units[i].assign(p.keep[i].size(), {});
    auto assign = [&](const std::vector<RankedUnit>& kept) {
        for (const RankedUnit& u : kept) {
            const auto pos = std::upper_bound(byLayer.begin(), byLayer.end(), u.order, [&](uint64_t o, std::size_t i) {
                return o < first[i];
            }) - 1;
            const uint64_t rest = u.order - first[*pos];
            p.units[*pos][static_cast<std::size_t>(rest / static_cast<uint64_t>(I))].push_back(
                static_cast<int>(rest % static_cast<uint64_t>(I)));
        }
    };

    std::vector<RankedUnit> ranked;
    switch (b.scope) {
    case DimScope::Expert: {
        const int64_t w = keptOf(b.sparsity, I); // at least 1: IntDim-E never makes a zero-width expert
        for (const std::size_t i : byLayer) {
            std::vector<RankedUnit> all;
            unitsOf(i, all);
            for (std::size_t k = 0; k < p.keep[i].size(); ++k) {
                ranked.assign(all.begin() + static_cast<std::ptrdiff_t>(k * static_cast<std::size_t>(I)),
                    all.begin() + static_cast<std::ptrdiff_t>((k + 1) * static_cast<std::size_t>(I)));
                keepBest(ranked, w);
                assign(ranked);
            }
        }
        break;
    }
    case DimScope::Layer:
        for (const std::size_t i : byLayer) {
            ranked.clear();
            unitsOf(i, ranked);
            keepBest(ranked, keptOf(b.sparsity, static_cast<int64_t>(ranked.size())));
            assign(ranked);
        }
        break;
    case DimScope::Global:
        ranked.reserve(total);
        for (const std::size_t i : byLayer)
            unitsOf(i, ranked);
        keepBest(ranked, keptOf(b.sparsity, static_cast<int64_t>(ranked.size())));
        assign(ranked);
        break;
    }
    for (auto& layer : p.units)
        for (auto& u : layer)
            std::sort(u.begin(), u.end());
    p.dims = DimPruning { dimScopeName(b.scope), s.criterion, s.domain, b.sparsity, I };
    fillPrediction(p, ctx);
    return p;
}

void checkDims(const Plan& p, const std::string& source)
{
    if (!p.hasDims())
        return;
    const int64_t I = p.dims.intermediate;
    if (I <= 0)
        throw InputError(source + ": dims.intermediate_size must be positive");
    if (p.units.size() != p.keep.size())
        throw InputError(source + ": dims cover " + std::to_string(p.units.size()) + " MoE layers, the plan has "
            + std::to_string(p.keep.size()));
    for (std::size_t i = 0; i < p.units.size(); ++i) {
        const std::string layer = source + ": dims, layer " + std::to_string(p.layers.at(i));
        if (p.units[i].size() != p.keep[i].size())
            throw InputError(layer + ": units for " + std::to_string(p.units[i].size()) + " experts, the layer keeps "
                + std::to_string(p.keep[i].size()));
        for (std::size_t k = 0; k < p.units[i].size(); ++k) {
            int previous = -1;
            for (const int j : p.units[i][k]) {
                if (j <= previous || j >= I)
                    throw InputError(layer + ", expert " + std::to_string(p.keep[i][k]) + ": unit " + std::to_string(j)
                        + " is out of order, repeated or outside [0, " + std::to_string(I) + ")");
                previous = j;
            }
        }
    }
}

std::vector<int> dimWidths(const Plan& p, std::size_t i)
{
    std::vector<int> widths;
    if (p.hasDims())
        for (const auto& u : p.units.at(i))
            widths.push_back(static_cast<int>(u.size()));
    return widths;
}

nlohmann::json dimsToJson(const Plan& p)
{
    const auto I = static_cast<std::size_t>(p.dims.intermediate);
    nlohmann::json layers = nlohmann::json::array();
    for (std::size_t i = 0; i < p.units.size(); ++i) {
        std::vector<uint8_t> mask((p.units[i].size() * I + 7) / 8, 0);
        for (std::size_t k = 0; k < p.units[i].size(); ++k)
            for (const int j : p.units[i][k]) {
                const std::size_t bit = k * I + static_cast<std::size_t>(j);
                mask[bit / 8] = static_cast<uint8_t>(mask[bit / 8] | (1u << (bit % 8)));
            }
        layers.push_back(
            { { "layer", p.layers[i] }, { "widths", dimWidths(p, i) }, { "units_b64", base64Encode(mask) } });
    }
    return { { "scope", p.dims.scope }, { "criterion", p.dims.criterion }, { "domain", p.dims.domain },
        { "sparsity", p.dims.sparsity }, { "intermediate_size", p.dims.intermediate }, { "layers", layers } };
}

void dimsFromJson(const nlohmann::json& d, Plan& p, const std::string& source)
{
    if (!d.is_object())
        throw InputError(source + ": \"dims\" must be an object");
    DimPruning dims;
    dims.scope = d.value("scope", std::string());
    parseDimScope(dims.scope, source + ": dims.scope");
    dims.criterion = d.value("criterion", std::string());
    dims.domain = d.value("domain", std::string());
    if (!d.contains("sparsity") || !d["sparsity"].is_number())
        throw InputError(source + ": dims.sparsity must be a number");
    dims.sparsity = d["sparsity"].get<double>();
    checkSparsity(dims.sparsity, source + ": dims.sparsity");
    if (!d.contains("intermediate_size") || !d["intermediate_size"].is_number_integer()
        || d["intermediate_size"].get<int64_t>() <= 0)
        throw InputError(source + ": dims.intermediate_size must be a positive integer (the experts' original width)");
    dims.intermediate = d["intermediate_size"].get<int64_t>();
    const auto I = static_cast<std::size_t>(dims.intermediate);
    if (!d.contains("layers") || !d["layers"].is_array() || d["layers"].size() != p.layers.size())
        throw InputError(source + ": dims.layers must list the " + std::to_string(p.layers.size())
            + " MoE layers of \"layers\", in the same order");
    std::vector<std::vector<std::vector<int>>> units(p.layers.size());
    for (std::size_t i = 0; i < p.layers.size(); ++i) {
        const nlohmann::json& l = d["layers"][i];
        const std::string field = source + ": dims.layers[" + std::to_string(i) + "]";
        if (!l.is_object() || !l.contains("layer") || !l["layer"].is_number_integer()
            || l["layer"].get<int>() != p.layers[i])
            throw InputError(field + ".layer must be " + std::to_string(p.layers[i]) + " (the order of \"layers\")");
        const std::size_t K = p.keep[i].size();
        if (!l.contains("widths") || !l["widths"].is_array() || l["widths"].size() != K)
            throw InputError(field + ".widths must hold one width per kept expert (" + std::to_string(K) + ")");
        if (!l.contains("units_b64") || !l["units_b64"].is_string())
            throw InputError(field + ".units_b64 must be a base64 string");
        const std::vector<uint8_t> mask = base64Decode(l["units_b64"].get<std::string>(), field + ".units_b64");
        if (mask.size() != (K * I + 7) / 8)
            throw InputError(field + ".units_b64: " + std::to_string(mask.size()) + " bytes, expected "
                + std::to_string((K * I + 7) / 8) + " (a bit per unit of " + std::to_string(K) + " kept experts x "
                + std::to_string(I) + " units)");
        for (std::size_t bit = K * I; bit < mask.size() * 8; ++bit)
            if ((mask[bit / 8] >> (bit % 8)) & 1u)
                throw InputError(field + ".units_b64: bits past the last unit must be 0");
        units[i].resize(K);
        for (std::size_t k = 0; k < K; ++k) {
            for (std::size_t j = 0; j < I; ++j) {
                const std::size_t bit = k * I + j;
                if ((mask[bit / 8] >> (bit % 8)) & 1u)
                    units[i][k].push_back(static_cast<int>(j));
            }
            const nlohmann::json& w = l["widths"][k];
            if (!w.is_number_integer() || w.get<int64_t>() < 0 || w.get<int64_t>() > dims.intermediate)
                throw InputError(field + ".widths[" + std::to_string(k) + "] must be an integer in [0, "
                    + std::to_string(dims.intermediate) + "]");
            if (w.get<std::size_t>() != units[i][k].size())
                throw InputError(field + ".widths[" + std::to_string(k) + "] is " + w.dump() + " but units_b64 keeps "
                    + std::to_string(units[i][k].size()) + " units of expert " + std::to_string(p.keep[i][k]));
        }
    }
    p.units = std::move(units);
    p.dims = std::move(dims);
}

} // namespace moeatlas
