#include "charts/tradeoff_data.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

namespace moeatlas::views {

double tradeoffValue(double nll, TradeoffMetric metric)
{
    return metric == TradeoffMetric::Perplexity ? std::exp(nll) : nll;
}

double tradeoffFullValue(const EvalTable& table, int domain, TradeoffMetric metric)
{
    const int full = table.fullIndex();
    if (full < 0 || domain < 0 || domain >= static_cast<int>(table.domains.size()))
        return std::numeric_limits<double>::quiet_NaN();
    return tradeoffValue(table.nll[static_cast<std::size_t>(full)][static_cast<std::size_t>(domain)], metric);
}

namespace {

// Sweep variants are named "<method>[:<domain>]/<criterion>@<sparsity>" (core/eval); anything else
// (a plan file, named after it) is a single point even when its method is specialist or generalist.
bool fromSweep(const EvalVariant& v)
{
    const std::string prefix = v.method + (v.domain.empty() ? "" : ":" + v.domain) + "/" + v.criterion + "@";
    return v.name.rfind(prefix, 0) == 0;
}

} // namespace

std::vector<TradeoffFamily> tradeoffFamilies(const EvalTable& table, int domain, TradeoffMetric metric)
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
    for (std::size_t i = 0; i < table.variants.size(); ++i) {
        const EvalVariant& v = table.variants[i];
        const double y = tradeoffValue(table.nll[i][d], metric);
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
        std::stable_sort(order.begin(), order.end(), [&x = f.x](std::size_t a, std::size_t b) { return x[a] < x[b]; });
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
