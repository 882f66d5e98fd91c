#include "charts/tradeoff_data.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

namespace moeatlas::views {

int TradeoffTable::fullIndex() const
{
    for (std::size_t v = 0; v < variants.size(); ++v)
        if (variants[v].method == "full")
            return static_cast<int>(v);
    return -1;
}

TradeoffTable tradeoffTableFromResults(const AtlasResults& results)
{
    const nlohmann::json params = nlohmann::json::parse(results.paramsJson, nullptr, false);
    if (!params.is_object() || !params.contains("domains") || !params.contains("variants"))
        throw InputError("evaluation table: params has no 'domains' and 'variants'");
    TradeoffTable t;
    for (const auto& d : params["domains"])
        t.domains.push_back(d.get<std::string>());
    const std::size_t V = params["variants"].size(), D = t.domains.size();
    const AtlasArray* nll = results.find("nll");
    const AtlasArray* sparsity = results.find("sparsity");
    const AtlasArray* kept = results.find("kept_experts");
    const AtlasArray* tokens = results.find("tokens");
    if (!nll || nll->values.size() != V * D || !sparsity || sparsity->values.size() != V)
        throw InputError("evaluation table: 'nll' [V, D] or 'sparsity' [V] missing or of the wrong shape");
    if (tokens && tokens->values.size() == D)
        t.tokens = tokens->values;
    for (std::size_t v = 0; v < V; ++v) {
        const nlohmann::json& j = params["variants"][v];
        TradeoffVariant var;
        var.name = j.value("name", std::string());
        var.method = j.value("method", std::string());
        var.criterion = j.value("criterion", std::string());
        var.domain = j.value("domain", std::string());
        var.sparsity = sparsity->values[v];
        var.keptExperts = kept && kept->values.size() == V ? kept->values[v] : 0;
        var.nll.assign(nll->values.begin() + static_cast<std::ptrdiff_t>(v * D),
            nll->values.begin() + static_cast<std::ptrdiff_t>((v + 1) * D));
        t.variants.push_back(std::move(var));
    }
    return t;
}

double tradeoffValue(double nll, TradeoffMetric metric)
{
    return metric == TradeoffMetric::Perplexity ? std::exp(nll) : nll;
}

double tradeoffFullValue(const TradeoffTable& table, int domain, TradeoffMetric metric)
{
    const int full = table.fullIndex();
    if (full < 0 || domain < 0 || domain >= static_cast<int>(table.domains.size()))
        return std::numeric_limits<double>::quiet_NaN();
    return tradeoffValue(table.variants[static_cast<std::size_t>(full)].nll[static_cast<std::size_t>(domain)], metric);
}

namespace {

// Sweep variants are named "<method>[:<domain>]/<criterion>@<sparsity>" (core/eval); anything else
// (a plan file, named after it) is a single point even when its method is specialist or generalist.
bool fromSweep(const TradeoffVariant& v)
{
    const std::string prefix = v.method + (v.domain.empty() ? "" : ":" + v.domain) + "/" + v.criterion + "@";
    return v.name.rfind(prefix, 0) == 0;
}

} // namespace

std::vector<TradeoffFamily> tradeoffFamilies(const TradeoffTable& table, int domain, TradeoffMetric metric)
{
    std::vector<TradeoffFamily> out;
    if (domain < 0 || domain >= static_cast<int>(table.domains.size()))
        return out;
    const auto d = static_cast<std::size_t>(domain);

    // Curves keyed by (rank of method, label) so the order is stable and readable.
    auto methodRank = [](const std::string& m) {
        return m == "specialist" ? 0 : m == "generalist" ? 1 : m == "union" ? 2 : 3;
    };
    std::map<std::pair<int, std::string>, TradeoffFamily> curves;
    std::map<double, std::vector<double>> random; // sparsity -> values
    std::size_t randomPlans = 0;
    TradeoffFamily plans;
    plans.kind = TradeoffFamily::Kind::Plans;
    plans.label = "plans";
    for (const TradeoffVariant& v : table.variants) {
        const double y = tradeoffValue(v.nll[d], metric);
        if (v.method == "full")
            continue;
        if (v.method == "random") {
            random[v.sparsity].push_back(y);
            ++randomPlans;
            continue;
        }
        if (v.method == "plan" || !fromSweep(v)) {
            plans.x.push_back(v.sparsity);
            plans.y.push_back(y);
            plans.names.push_back(v.name);
            continue;
        }
        std::string label = v.method;
        if (!v.domain.empty())
            label += ": " + v.domain;
        if (!v.criterion.empty())
            label += " (" + v.criterion + ")";
        TradeoffFamily& f = curves[{ methodRank(v.method), label }];
        f.label = label;
        f.x.push_back(v.sparsity);
        f.y.push_back(y);
        f.names.push_back(v.name);
    }
    for (auto& [key, f] : curves) {
        std::vector<std::size_t> order(f.x.size());
        std::iota(order.begin(), order.end(), std::size_t { 0 });
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return f.x[a] < f.x[b]; });
        TradeoffFamily sorted;
        sorted.label = f.label;
        for (const std::size_t i : order) {
            sorted.x.push_back(f.x[i]);
            sorted.y.push_back(f.y[i]);
            sorted.names.push_back(f.names[i]);
        }
        out.push_back(std::move(sorted));
    }
    if (!random.empty()) {
        TradeoffFamily r;
        r.kind = TradeoffFamily::Kind::Random;
        r.label = "random (" + std::to_string(randomPlans / random.size()) + " per sparsity: mean, min–max)";
        for (const auto& [x, ys] : random) {
            r.x.push_back(x);
            r.y.push_back(std::accumulate(ys.begin(), ys.end(), 0.0) / static_cast<double>(ys.size()));
            r.yMin.push_back(*std::min_element(ys.begin(), ys.end()));
            r.yMax.push_back(*std::max_element(ys.begin(), ys.end()));
        }
        out.push_back(std::move(r));
    }
    if (!plans.x.empty())
        out.push_back(std::move(plans));
    return out;
}

} // namespace moeatlas::views
