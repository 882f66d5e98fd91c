#include "fisher/fisher_store.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"
#include "eval/eval.h"
#include "util/error.h"
#include "util/sha256.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

namespace moeatlas {

namespace {

// The FisherLayer vector of a domain form ([G, E, I]); empty when it was not computed.
const std::vector<double>& layerForm(const FisherLayer& layer, const std::string& form)
{
    if (form == "mask")
        return layer.mask;
    if (form == "weight")
        return layer.weight;
    if (form == "grad_abs")
        return layer.gradAbs;
    return layer.activation;
}

// Sums over the last axis: [rows * E, I] -> [rows * E].
std::vector<double> expertSums(const std::vector<double>& units, int64_t intermediate)
{
    std::vector<double> sums(units.size() / static_cast<std::size_t>(intermediate), 0.0);
    for (std::size_t k = 0; k < sums.size(); ++k) {
        const auto first = units.begin() + static_cast<std::ptrdiff_t>(k * static_cast<std::size_t>(intermediate));
        sums[k] = std::accumulate(first, first + intermediate, 0.0);
    }
    return sums;
}

void finishForm(FisherFormTable& f, int64_t rows, const FisherTables& t)
{
    const int64_t L = static_cast<int64_t>(t.layers.size());
    f.experts = expertSums(f.units, t.intermediate);
    f.concentration = formConcentration(f.units, rows, L, t.numExperts * t.intermediate, kConcentrationFractions);
}

// "pooled" names the pooled row of every table: a domain of that name would shadow it.
void checkDomainNames(const std::vector<std::string>& domains, const std::string& source)
{
    for (const std::string& d : domains)
        if (d == "pooled")
            throw InputError(source
                + ": domain name 'pooled' is reserved for the pooled row of the Fisher tables; "
                  "rename the domain");
}

} // namespace

std::string canonicalFisherForm(const std::string& form)
{
    return form == "grad-abs" ? std::string("grad_abs") : form;
}

void setFisherForms(FisherOptions& options, const std::vector<std::string>& forms)
{
    options.maskForm = options.weightForm = options.gradAbs = false;
    for (const std::string& f : forms) {
        const std::string form = canonicalFisherForm(f);
        if (form == "mask")
            options.maskForm = true;
        else if (form == "weight")
            options.weightForm = true;
        else if (form == "grad_abs")
            options.gradAbs = true;
        else
            throw InputError("unknown Fisher form '" + f + "' (expected mask, weight, grad_abs)");
    }
    if (!options.maskForm && !options.weightForm && !options.gradAbs)
        throw InputError("no Fisher form chosen: give at least one of mask, weight, grad_abs");
}

const FisherFormTable* FisherTables::find(const std::string& form) const
{
    for (const FisherFormTable& f : forms)
        if (f.form == form)
            return &f;
    return nullptr;
}

std::vector<double> concentrationShares(std::span<const double> scores, std::span<const double> fractions)
{
    const auto n = static_cast<int64_t>(scores.size());
    std::vector<double> shares(fractions.size(), 0.0);
    if (n == 0)
        return shares;
    // Unit counts per fraction; the small tolerance keeps exact products (1e-2 * 100) from rounding up.
    std::vector<int64_t> counts;
    for (const double f : fractions)
        counts.push_back(
            std::clamp<int64_t>(static_cast<int64_t>(std::ceil(f * static_cast<double>(n) - 1e-9)), int64_t { 1 }, n));
    const int64_t most = *std::max_element(counts.begin(), counts.end());
    std::vector<double> sorted(scores.begin(), scores.end());
    std::partial_sort(sorted.begin(), sorted.begin() + most, sorted.end(), std::greater<>());
    const double total = std::accumulate(scores.begin(), scores.end(), 0.0);
    if (!(total > 0))
        return shares;
    std::vector<double> prefix(static_cast<std::size_t>(most) + 1, 0.0);
    for (int64_t i = 0; i < most; ++i)
        prefix[static_cast<std::size_t>(i) + 1]
            = prefix[static_cast<std::size_t>(i)] + sorted[static_cast<std::size_t>(i)];
    for (std::size_t k = 0; k < counts.size(); ++k)
        shares[k] = prefix[static_cast<std::size_t>(counts[k])] / total;
    return shares;
}

std::vector<double> formConcentration(std::span<const double> units, int64_t rows, int64_t layers,
    int64_t unitsPerLayer, std::span<const double> fractions)
{
    const auto F = static_cast<int64_t>(fractions.size());
    std::vector<double> out(static_cast<std::size_t>(rows * (layers + 1) * F));
    const int64_t rowUnits = layers * unitsPerLayer;
    for (int64_t r = 0; r < rows; ++r) {
        const std::span<const double> row
            = units.subspan(static_cast<std::size_t>(r * rowUnits), static_cast<std::size_t>(rowUnits));
        for (int64_t l = 0; l <= layers; ++l) {
            const std::span<const double> part = l < layers
                ? row.subspan(static_cast<std::size_t>(l * unitsPerLayer), static_cast<std::size_t>(unitsPerLayer))
                : row;
            const std::vector<double> shares = concentrationShares(part, fractions);
            std::copy(shares.begin(), shares.end(), out.begin() + (r * (layers + 1) + l) * F);
        }
    }
    return out;
}

FisherTables fisherTables(const FisherResult& result, const std::vector<std::string>& domains)
{
    const auto D = static_cast<int64_t>(domains.size());
    if (result.groups != D)
        throw Error(
            "fisher tables: " + std::to_string(result.groups) + " sample groups for " + std::to_string(D) + " domains");
    if (result.layers.empty())
        throw Error("fisher tables: the result has no MoE layer");
    checkDomainNames(domains, "fisher tables");
    FisherTables t;
    t.domains = domains;
    t.domains.emplace_back("pooled");
    t.numExperts = result.layers.front().numExperts;
    t.intermediate = result.layers.front().intermediate;
    for (const FisherLayer& l : result.layers)
        t.layers.push_back(l.layer);
    t.seconds = result.seconds;
    const int64_t L = static_cast<int64_t>(t.layers.size()), E = t.numExperts, I = t.intermediate;
    const int64_t R = D + 1;

    t.samples = result.groupSamples;
    t.samples.push_back(result.samples);
    t.tokens = result.groupTokens;
    t.tokens.push_back(result.tokens);
    t.expertTokens.assign(static_cast<std::size_t>(R * L * E), 0);
    for (int64_t l = 0; l < L; ++l)
        for (int64_t d = 0; d < D; ++d)
            for (int64_t e = 0; e < E; ++e) {
                const int64_t n
                    = result.layers[static_cast<std::size_t>(l)].expertTokens[static_cast<std::size_t>(d * E + e)];
                t.expertTokens[static_cast<std::size_t>((d * L + l) * E + e)] = n;
                t.expertTokens[static_cast<std::size_t>((D * L + l) * E + e)] += n;
            }

    for (const char* name : kFisherDomainForms) {
        const std::string form = name;
        if (layerForm(result.layers.front(), form).empty())
            continue;
        const bool activation = form == "activation";
        FisherFormTable f;
        f.form = form;
        f.units.assign(static_cast<std::size_t>(R * L * E * I), 0.0);
        for (int64_t l = 0; l < L; ++l) {
            const std::vector<double>& v = layerForm(result.layers[static_cast<std::size_t>(l)], form);
            for (int64_t d = 0; d < D; ++d)
                for (int64_t e = 0; e < E; ++e) {
                    // Pooled weights: the group's samples (gradient forms: group means are sums / N_d), or
                    // its tokens routed to e (activation: group values are sums / tokens of e).
                    const double weight = activation
                        ? static_cast<double>(t.expertTokens[static_cast<std::size_t>((d * L + l) * E + e)])
                        : static_cast<double>(t.samples[static_cast<std::size_t>(d)]);
                    const double pooledCount = activation
                        ? static_cast<double>(t.expertTokens[static_cast<std::size_t>((D * L + l) * E + e)])
                        : static_cast<double>(t.samples[static_cast<std::size_t>(D)]);
                    for (int64_t j = 0; j < I; ++j) {
                        const double value = v[static_cast<std::size_t>((d * E + e) * I + j)];
                        f.units[static_cast<std::size_t>(((d * L + l) * E + e) * I + j)] = value;
                        if (pooledCount > 0)
                            f.units[static_cast<std::size_t>(((D * L + l) * E + e) * I + j)]
                                += value * weight / pooledCount;
                    }
                }
        }
        finishForm(f, R, t);
        t.forms.push_back(std::move(f));
    }
    if (!result.layers.front().magnitude.empty()) {
        FisherFormTable f;
        f.form = "magnitude";
        for (const FisherLayer& l : result.layers)
            f.units.insert(f.units.end(), l.magnitude.begin(), l.magnitude.end());
        finishForm(f, 1, t);
        t.forms.push_back(std::move(f));
    }
    return t;
}

FisherTables computeFisherTables(const Checkpoint& checkpoint, const ModelSpec& spec, const EvalTokens& tokens,
    const FisherOptions& options, const FisherRunInfo& info, const ProgressFn& progress, const StopToken* stop)
{
    checkDomainNames(tokens.domains, "fisher (" + tokens.source + ")");
    std::vector<int64_t> perDomain(tokens.domains.size(), 0);
    for (const int d : tokens.seqDomain)
        ++perDomain.at(static_cast<std::size_t>(d));
    for (std::size_t d = 0; d < perDomain.size(); ++d)
        if (perDomain[d] == 0)
            throw InputError("fisher: domain '" + tokens.domains[d] + "' has no sequence (" + tokens.source + ")");
    const FisherResult result
        = computeFisher(checkpoint, spec, tokens.tokens, tokens.seqOffsets, tokens.seqDomain, options, progress, stop);
    FisherTables t = fisherTables(result, tokens.domains);
    nlohmann::json forms = nlohmann::json::array();
    for (const FisherFormTable& f : t.forms)
        forms.push_back(f.form);
    const nlohmann::json params
        = { { "format", "moeatlas-fisher" }, { "version", 1 }, { "domains", t.domains }, { "layers", t.layers },
              { "num_experts", t.numExperts }, { "intermediate_size", t.intermediate }, { "forms", forms },
              { "samples", result.samples }, { "tokens", result.tokens }, { "token_source", info.tokenSource },
              { "loss", "mean next-token cross-entropy per sequence, batch of one (labels = input ids)" },
              { "dtype", "float32 compute, float64 accumulation" }, { "mode", fisherModeName(result.plan.mode) },
              { "chunks", result.plan.chunks }, { "spilled_bytes", result.bytesSpilled },
              { "threads", options.threads }, { "checkpoint", info.checkpoint }, { "config_sha256", info.configSha256 },
              { "pooled",
                  "gradient forms: sample-weighted mean of the domains; activation: weighted by tokens routed "
                  "to the expert" },
              { "concentration_fractions", kConcentrationFractions }, { "moeatlas_version", MOEATLAS_VERSION },
              { "seconds", t.seconds } };
    t.paramsJson = params.dump();
    return t;
}

void writeFisherTables(AtlasFile& update, const FisherTables& t)
{
    const uint64_t R = t.domains.size(), L = t.layers.size(), E = static_cast<uint64_t>(t.numExperts),
                   I = static_cast<uint64_t>(t.intermediate);
    const std::string hash = sha256Hex(t.paramsJson);
    const auto doubles = [](const auto& v) { return std::vector<double>(v.begin(), v.end()); };
    AtlasResults top;
    top.paramsJson = t.paramsJson;
    top.inputsHash = hash;
    top.arrays = { { "layers", { L }, doubles(t.layers) }, { "samples", { R }, doubles(t.samples) },
        { "tokens", { R }, doubles(t.tokens) }, { "expert_tokens", { R, L, E }, doubles(t.expertTokens) } };
    update.writeResults("fisher", top);

    AtlasResults concentration;
    concentration.paramsJson = nlohmann::json { { "fractions", kConcentrationFractions } }.dump();
    concentration.inputsHash = hash;
    for (const FisherFormTable& f : t.forms) {
        const uint64_t rows = f.form == "magnitude" ? 1 : R;
        AtlasResults g;
        g.paramsJson = nlohmann::json { { "form", f.form } }.dump();
        g.inputsHash = hash;
        g.arrays = { { "units", rows == 1 ? std::vector<uint64_t> { L, E, I } : std::vector<uint64_t> { R, L, E, I },
                         f.units },
            { "experts", rows == 1 ? std::vector<uint64_t> { L, E } : std::vector<uint64_t> { R, L, E }, f.experts } };
        update.writeResults("fisher/" + f.form, g);
        concentration.arrays.push_back(
            { f.form, { rows, L + 1, static_cast<uint64_t>(kConcentrationFractions.size()) }, f.concentration });
    }
    update.writeResults("fisher/concentration", concentration);
}

int FisherTable::row(const std::string& domain) const
{
    const std::string name = domain.empty() ? std::string("pooled") : domain;
    if (domains.size() == 1 && domains.front() == "pooled")
        return 0; // magnitude: one row for every domain
    for (std::size_t r = 0; r < domains.size(); ++r)
        if (domains[r] == name)
            return static_cast<int>(r);
    std::string known;
    for (const std::string& d : domains)
        known += (known.empty() ? "" : ", ") + d;
    throw InputError(atlas.string() + ": /fisher/" + form + " has no domain '" + name + "' (it has " + known + ")");
}

std::span<const float> FisherTable::rowUnits(int r) const
{
    const std::size_t n = units.size() / domains.size();
    return std::span<const float>(units).subspan(static_cast<std::size_t>(r) * n, n);
}

namespace {

// readFisherTable without the float32 copy: the table's metadata, and its units in `values`
// (float64, as stored).
FisherTable readFisherForm(const AtlasFile& atlas, const std::string& formName, std::vector<double>& values)
{
    const std::string form = canonicalFisherForm(formName);
    const std::string path = atlas.path().string();
    const bool magnitude = form == "magnitude";
    if (!magnitude && std::find(kFisherDomainForms.begin(), kFisherDomainForms.end(), form) == kFisherDomainForms.end())
        throw InputError(path + ": unknown Fisher form '" + formName
            + "' (expected mask, weight, grad_abs, activation or magnitude)");
    const std::optional<AtlasResults> top = atlas.readResults("fisher");
    if (!top)
        throw InputError(path + ": /fisher: no Fisher tables in this atlas (compute its Fisher importance first)");
    FisherTable t;
    t.form = form;
    t.atlas = atlas.path();
    t.params = top->paramsJson;
    const auto bad = [&](const std::string& object, const std::string& what) {
        return InputError(path + ": /fisher" + object + ": " + what);
    };
    try {
        const nlohmann::json p = nlohmann::json::parse(t.params);
        t.domains = p.at("domains").get<std::vector<std::string>>();
        t.layers = p.at("layers").get<std::vector<int>>();
        t.numExperts = p.at("num_experts").get<int64_t>();
        t.intermediate = p.at("intermediate_size").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
        throw bad("", std::string("attribute params is not the expected JSON (") + e.what() + ")");
    }
    if (t.domains.empty() || t.domains.back() != "pooled" || t.layers.empty() || t.numExperts <= 0
        || t.intermediate <= 0)
        throw bad("",
            "attribute params: domains must end with \"pooled\", layers must not be empty and "
            "num_experts, intermediate_size must be positive");
    if (magnitude)
        t.domains = { "pooled" };
    const std::optional<AtlasResults> g = atlas.readResults("fisher/" + form);
    const AtlasArray* units = g ? g->find("units") : nullptr;
    if (!units)
        throw bad("/" + form + "/units", "missing (the Fisher run did not compute this form)");
    std::vector<uint64_t> expected { t.layers.size(), static_cast<uint64_t>(t.numExperts),
        static_cast<uint64_t>(t.intermediate) };
    if (!magnitude)
        expected.insert(expected.begin(), t.domains.size());
    if (units->dims != expected) {
        std::string shape;
        for (const uint64_t d : expected)
            shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        throw bad("/" + form + "/units", "shape does not match the params, expected [" + shape + "]");
    }
    for (const double v : units->values)
        if (!std::isfinite(v) || v < 0)
            throw bad("/" + form + "/units", "holds a negative or non-finite score");
    values = units->values;
    return t;
}

} // namespace

FisherTable readFisherTable(const AtlasFile& atlas, const std::string& form)
{
    std::vector<double> values;
    FisherTable t = readFisherForm(atlas, form, values);
    t.units.assign(values.begin(), values.end());
    return t;
}

UnitScoreTable readFisherUnitScores(const AtlasFile& atlas, const std::string& form, const std::string& domain)
{
    std::vector<double> values;
    const FisherTable t = readFisherForm(atlas, form, values);
    const bool magnitude = t.form == "magnitude";
    const auto perRow = static_cast<std::size_t>(t.layers.size() * t.numExperts * t.intermediate);
    const auto first = values.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(t.row(domain)) * perRow);
    UnitScoreTable s;
    s.criterion = t.form == "activation" || magnitude ? t.form : "fisher_" + t.form;
    s.domain = magnitude || domain == "pooled" ? std::string() : domain;
    s.layers = t.layers;
    s.numExperts = static_cast<int>(t.numExperts);
    s.intermediate = t.intermediate;
    s.values.assign(first, first + static_cast<std::ptrdiff_t>(perRow));
    return s;
}

FisherTable readFisherTable(const std::filesystem::path& atlas, const std::string& form)
{
    return readFisherTable(AtlasFile::openReadOnly(atlas), form);
}

const FisherSummaryForm* FisherSummary::find(const std::string& form) const
{
    const std::string name = canonicalFisherForm(form);
    for (const FisherSummaryForm& f : forms)
        if (f.form == name)
            return &f;
    return nullptr;
}

std::optional<FisherSummary> readFisherSummary(const AtlasFile& atlas)
{
    const std::optional<AtlasResults> top = atlas.readResults("fisher");
    if (!top)
        return std::nullopt;
    const std::string path = atlas.path().string();
    const auto bad = [&](const std::string& object, const std::string& what) {
        return InputError(path + ": /fisher" + object + ": " + what);
    };
    const auto shape = [](const std::vector<uint64_t>& dims) {
        std::string text;
        for (const uint64_t d : dims)
            text += (text.empty() ? "" : ", ") + std::to_string(d);
        return "[" + text + "]";
    };
    FisherSummary s;
    s.params = top->paramsJson;
    std::vector<std::string> forms;
    try {
        const nlohmann::json p = nlohmann::json::parse(s.params);
        s.domains = p.at("domains").get<std::vector<std::string>>();
        s.layers = p.at("layers").get<std::vector<int>>();
        s.numExperts = p.at("num_experts").get<int64_t>();
        s.intermediate = p.at("intermediate_size").get<int64_t>();
        forms = p.at("forms").get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& e) {
        throw bad("", std::string("attribute params is not the expected JSON (") + e.what() + ")");
    }
    if (s.domains.empty() || s.domains.back() != "pooled" || s.layers.empty() || s.numExperts <= 0
        || s.intermediate <= 0)
        throw bad("",
            "attribute params: domains must end with \"pooled\", layers must not be empty and "
            "num_experts, intermediate_size must be positive");
    const uint64_t R = s.domains.size(), L = s.layers.size(), E = static_cast<uint64_t>(s.numExperts);
    for (const char* name : { "samples", "tokens" }) {
        const AtlasArray* a = top->find(name);
        if (!a || a->dims != std::vector<uint64_t> { R })
            throw bad(std::string("/") + name, "missing or not of shape " + shape({ R }));
        std::vector<int64_t>& out = std::string(name) == "samples" ? s.samples : s.tokens;
        for (const double v : a->values)
            out.push_back(static_cast<int64_t>(v));
    }
    const std::optional<AtlasResults> concentration = atlas.readResults("fisher/concentration");
    if (!concentration)
        throw bad("/concentration", "missing");
    try {
        s.fractions = nlohmann::json::parse(concentration->paramsJson).at("fractions").get<std::vector<double>>();
    } catch (const nlohmann::json::exception& e) {
        throw bad("/concentration", std::string("attribute params has no fractions (") + e.what() + ")");
    }
    for (const std::string& name : forms) {
        FisherSummaryForm f;
        f.form = name;
        f.rows = name == "magnitude" ? 1 : static_cast<int64_t>(R);
        const std::optional<AtlasResults> g = atlas.readResults("fisher/" + name);
        const AtlasArray* experts = g ? g->find("experts") : nullptr;
        const std::vector<uint64_t> expected
            = name == "magnitude" ? std::vector<uint64_t> { L, E } : std::vector<uint64_t> { R, L, E };
        if (!experts || experts->dims != expected)
            throw bad("/" + name + "/experts", "missing or not of shape " + shape(expected));
        f.experts = experts->values;
        const AtlasArray* shares = concentration->find(name);
        const std::vector<uint64_t> sharesShape { static_cast<uint64_t>(f.rows), L + 1, s.fractions.size() };
        if (!shares || shares->dims != sharesShape)
            throw bad("/concentration/" + name, "missing or not of shape " + shape(sharesShape));
        f.concentration = shares->values;
        s.forms.push_back(std::move(f));
    }
    return s;
}

} // namespace moeatlas
