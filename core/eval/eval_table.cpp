// Evaluation tables out of core/eval: CSV, the atlas result group and back, and storing it in an atlas.
#include "eval/eval.h"

#include "util/error.h"
#include "util/sha256.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <sstream>

namespace moeatlas {

std::string evalTableCsv(const EvalTable& table)
{
    std::ostringstream out;
    out.precision(9);
    out << "variant,method,criterion,target_domain,sparsity,kept_experts,domain,tokens,nll,perplexity,delta_nll,"
           "routing,mean_experts,active_params,flops_per_token,equal_cost_topk_nll,delta_vs_equal_cost,"
           "experts_histogram,speculative,delta_vs_base\n";
    // An empty cell for what the table does not hold (NaN, or a table read back without the column).
    const auto cell = [&](const std::vector<std::vector<double>>& a, std::size_t v, std::size_t d) {
        if (v < a.size() && d < a[v].size() && !std::isnan(a[v][d]))
            out << a[v][d];
    };
    const int full = table.fullIndex();
    for (std::size_t v = 0; v < table.variants.size(); ++v) {
        const EvalVariant& var = table.variants[v];
        for (std::size_t d = 0; d < table.domains.size(); ++d) {
            const double nll = table.nll[v][d];
            out << var.name << ',' << var.method << ',' << var.criterion << ',' << var.domain << ',' << var.sparsity
                << ',' << var.keptExperts << ',' << table.domains[d] << ',' << table.predictedTokens[d] << ',' << nll
                << ',' << std::exp(nll) << ',';
            if (full >= 0)
                out << nll - table.nll[static_cast<std::size_t>(full)][d];
            out << ',' << var.routing << ',';
            cell(table.meanExperts, v, d);
            out << ',';
            cell(table.activeParams, v, d);
            out << ',';
            cell(table.flopsPerToken, v, d);
            out << ',';
            cell(table.equalCostNll, v, d);
            out << ',';
            if (v < table.equalCostNll.size() && !std::isnan(table.equalCostNll[v][d]))
                out << nll - table.equalCostNll[v][d];
            out << ',';
            if (v < table.expertsHistogram.size())
                for (std::size_t k = 0, first = 1; k < table.expertsHistogram[v][d].size(); ++k)
                    if (table.expertsHistogram[v][d][k] > 0) {
                        out << (first ? "" : ";") << k << ':' << table.expertsHistogram[v][d][k];
                        first = 0;
                    }
            out << ',' << var.speculative << ',';
            if (const int base = table.baseIndex(v); base >= 0)
                out << nll - table.nll[static_cast<std::size_t>(base)][d];
            out << '\n';
        }
    }
    return out.str();
}

AtlasResults evalTableResults(const EvalTable& table)
{
    const uint64_t V = table.variants.size(), D = table.domains.size();
    AtlasResults r;
    nlohmann::json variants = nlohmann::json::array();
    AtlasArray nll { "nll", { V, D }, {} }, sparsity { "sparsity", { V }, {} }, kept { "kept_experts", { V }, {} };
    for (std::size_t v = 0; v < V; ++v) {
        const EvalVariant& var = table.variants[v];
        nlohmann::json keep = nlohmann::json::object();
        for (const auto& [layer, ids] : var.mask.keep)
            keep[std::to_string(layer)] = ids;
        nlohmann::json entry = { { "name", var.name }, { "method", var.method }, { "criterion", var.criterion },
            { "domain", var.domain }, { "keep", keep }, { "routing", var.routing }, { "base", var.base } };
        if (!var.speculative.empty())
            entry["speculative"] = var.speculative;
        if (!var.mask.routing.thresholds.empty()) {
            nlohmann::json thresholds = nlohmann::json::object();
            for (const auto& [layer, t] : var.mask.routing.thresholds)
                thresholds[std::to_string(layer)] = t;
            entry["thresholds"] = thresholds;
        }
        if (!var.mask.units.empty()) {
            // Dimension plans: kept width per routed expert (original ids), not the unit lists.
            nlohmann::json widths = nlohmann::json::object();
            for (const auto& [layer, perExpert] : var.mask.units) {
                std::vector<int> w;
                for (const auto& u : perExpert)
                    w.push_back(static_cast<int>(u.size()));
                widths[std::to_string(layer)] = w;
            }
            entry["widths"] = widths;
        }
        variants.push_back(std::move(entry));
        nll.values.insert(nll.values.end(), table.nll[v].begin(), table.nll[v].end());
        sparsity.values.push_back(var.sparsity);
        kept.values.push_back(static_cast<double>(var.keptExperts));
    }
    AtlasArray tokens { "tokens", { D }, {} };
    for (const int64_t n : table.predictedTokens)
        tokens.values.push_back(static_cast<double>(n));
    // Routing costs [V, D] (and the histogram [V, D, B]), when the table has them.
    const auto matrix = [&](const char* name, const std::vector<std::vector<double>>& a) {
        AtlasArray out { name, { V, D }, {} };
        for (const auto& row : a)
            out.values.insert(out.values.end(), row.begin(), row.end());
        return out;
    };
    std::vector<AtlasArray> routingArrays;
    if (table.meanExperts.size() == V && V > 0) {
        routingArrays.push_back(matrix("mean_experts", table.meanExperts));
        routingArrays.push_back(matrix("active_params", table.activeParams));
        routingArrays.push_back(matrix("flops_per_token", table.flopsPerToken));
        routingArrays.push_back(matrix("equal_cost_topk_nll", table.equalCostNll));
        const uint64_t B = table.expertsHistogram[0].empty() ? 0 : table.expertsHistogram[0][0].size();
        AtlasArray histogram { "experts_histogram", { V, D, B }, {} };
        for (const auto& perDomain : table.expertsHistogram)
            for (const auto& row : perDomain)
                histogram.values.insert(histogram.values.end(), row.begin(), row.end());
        routingArrays.push_back(std::move(histogram));
    }
    const nlohmann::json params = { { "format", "moeatlas-evaluation" }, { "version", 2 }, { "domains", table.domains },
        { "variants", variants }, { "token_source", table.tokenSource }, { "checkpoint", table.checkpoint },
        { "compute_dtype", table.computeDtype }, { "loss", "next-token nll, nats" } };
    r.paramsJson = params.dump();
    r.inputsHash = sha256Hex(r.paramsJson);
    r.arrays = { std::move(nll), std::move(tokens), std::move(sparsity), std::move(kept) };
    for (AtlasArray& a : routingArrays)
        r.arrays.push_back(std::move(a));
    return r;
}

EvalTable evalTableFromResults(const AtlasResults& results, const std::string& source)
{
    const nlohmann::json params = nlohmann::json::parse(results.paramsJson, nullptr, false);
    if (!params.is_object() || !params.contains("domains") || !params.contains("variants")
        || !params["domains"].is_array() || !params["variants"].is_array())
        throw InputError(source + ": attribute params has no 'domains' and 'variants' lists");
    EvalTable t;
    try {
        for (const auto& d : params["domains"])
            t.domains.push_back(d.get<std::string>());
        const std::size_t V = params["variants"].size(), D = t.domains.size();
        const AtlasArray* nll = results.find("nll");
        const AtlasArray* sparsity = results.find("sparsity");
        const AtlasArray* kept = results.find("kept_experts");
        const AtlasArray* tokens = results.find("tokens");
        if (!nll || nll->values.size() != V * D || !sparsity || sparsity->values.size() != V)
            throw InputError(source + ": dataset 'nll' [" + std::to_string(V) + ", " + std::to_string(D)
                + "] or 'sparsity' [" + std::to_string(V) + "] is missing or of another shape");
        if (tokens && tokens->values.size() != D)
            throw InputError(source + ": dataset 'tokens' holds " + std::to_string(tokens->values.size())
                + " values, expected one per domain (" + std::to_string(D) + ")");
        for (std::size_t d = 0; d < D; ++d)
            t.predictedTokens.push_back(tokens ? static_cast<int64_t>(tokens->values[d]) : 0);
        for (std::size_t v = 0; v < V; ++v) {
            const nlohmann::json& j = params["variants"][v];
            EvalVariant var;
            var.name = j.value("name", std::string());
            var.method = j.value("method", std::string());
            var.criterion = j.value("criterion", std::string());
            var.domain = j.value("domain", std::string());
            var.sparsity = sparsity->values[v];
            var.keptExperts = kept && kept->values.size() == V ? static_cast<int64_t>(kept->values[v]) : 0;
            var.mask.name = var.name;
            var.routing = j.value("routing", std::string("model"));
            var.base = j.value("base", std::string());
            var.speculative = j.value("speculative", std::string());
            if (j.contains("keep") && j["keep"].is_object())
                for (const auto& [layer, ids] : j["keep"].items())
                    var.mask.keep[std::stoi(layer)] = ids.get<std::vector<int>>();
            t.nll.emplace_back(nll->values.begin() + static_cast<std::ptrdiff_t>(v * D),
                nll->values.begin() + static_cast<std::ptrdiff_t>((v + 1) * D));
            t.variants.push_back(std::move(var));
        }
        // Routing costs (version 2): all or none.
        const AtlasArray* mean = results.find("mean_experts");
        if (mean) {
            const auto matrix = [&](const char* name) {
                const AtlasArray* a = results.find(name);
                if (!a || a->values.size() != V * D)
                    throw InputError(source + ": dataset '" + name + "' [" + std::to_string(V) + ", "
                        + std::to_string(D) + "] is missing or of another shape");
                std::vector<std::vector<double>> out;
                out.reserve(V);
                for (std::size_t v = 0; v < V; ++v)
                    out.emplace_back(a->values.begin() + static_cast<std::ptrdiff_t>(v * D),
                        a->values.begin() + static_cast<std::ptrdiff_t>((v + 1) * D));
                return out;
            };
            t.meanExperts = matrix("mean_experts");
            t.activeParams = matrix("active_params");
            t.flopsPerToken = matrix("flops_per_token");
            t.equalCostNll = matrix("equal_cost_topk_nll");
            const AtlasArray* h = results.find("experts_histogram");
            if (!h || h->dims.size() != 3 || h->dims[0] != V || h->dims[1] != D
                || h->values.size() != V * D * h->dims[2])
                throw InputError(source + ": dataset 'experts_histogram' [" + std::to_string(V) + ", "
                    + std::to_string(D) + ", B] is missing or of another shape");
            const std::size_t B = h->dims[2];
            t.expertsHistogram.assign(V, std::vector<std::vector<double>>(D));
            for (std::size_t v = 0; v < V; ++v)
                for (std::size_t d = 0; d < D; ++d)
                    t.expertsHistogram[v][d].assign(h->values.begin() + static_cast<std::ptrdiff_t>((v * D + d) * B),
                        h->values.begin() + static_cast<std::ptrdiff_t>((v * D + d + 1) * B));
        }
    } catch (const nlohmann::json::exception& e) {
        throw InputError(source + ": attribute params: " + e.what());
    } catch (const std::logic_error&) { // stoi on a layer key
        throw InputError(source + ": attribute params: a variant's 'keep' has a layer key that is not a number");
    }
    t.tokenSource = params.value("token_source", std::string());
    t.checkpoint = params.value("checkpoint", std::string());
    t.computeDtype = params.value("compute_dtype", std::string());
    return t;
}

void storeEvalTable(
    const std::filesystem::path& atlas, const std::string& label, const EvalTable& table, const LockWait& wait)
{
    AtlasFile update = AtlasFile::openForUpdate(atlas, wait);
    update.writeResults("evaluation/" + label, evalTableResults(table));
    update.commitUpdate();
}

} // namespace moeatlas
