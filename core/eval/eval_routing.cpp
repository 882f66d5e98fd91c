// Routing rules in evaluation: the variants they add (withRoutingRules) and the routing cost columns of
// a table (mean experts per token, histogram, active parameters, FLOPs, equal-cost top-k loss).
#include "eval/eval_routing.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/inventory.h"
#include "checkpoint/model_spec.h"
#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace moeatlas {

std::vector<EvalVariant> withRoutingRules(
    const std::vector<EvalVariant>& variants, const std::vector<RoutingRule>& rules, const ModelSpec& spec)
{
    const int K = spec.router.topK;
    std::vector<RoutingRule> all = rules;
    // The equal-cost ladder: fixed top-k over the range of k the dynamic rules give.
    int lo = K, hi = K;
    bool dynamic = false;
    for (const RoutingRule& r : rules)
        if (!r.fixed()) {
            dynamic = true;
            lo = std::min(lo, r.minK(K));
            hi = std::max(hi, r.maxK(K));
        }
    if (dynamic)
        for (int k = lo; k <= hi; ++k) {
            if (k == K)
                continue;
            RoutingRule fixed;
            fixed.kind = RoutingRule::Kind::TopK;
            fixed.k = k;
            if (std::find(all.begin(), all.end(), fixed) == all.end())
                all.push_back(fixed);
        }
    std::vector<EvalVariant> out = variants;
    for (const EvalVariant& v : variants)
        for (const RoutingRule& r : all) {
            if (r.isModel())
                continue;
            if (r.kind == RoutingRule::Kind::Threshold && r.thresholds.empty())
                throw RequestError("routing", "routing '" + r.name() + "' has no calibrated thresholds");
            EvalVariant routed = v;
            routed.name = v.name + "+" + r.name();
            routed.mask.name = routed.name;
            routed.mask.routing = r;
            routed.routing = r.name();
            routed.base = v.name;
            out.push_back(std::move(routed));
        }
    return out;
}

namespace eval_internal {

RoutingCosts routingCosts(const Checkpoint& checkpoint, const ModelSpec& spec)
{
    const Inventory inv = takeInventory(checkpoint, spec);
    RoutingCosts c;
    const double E = spec.router.numExperts;
    double routedActive = 0;
    for (const int l : spec.moeLayerIndices()) {
        c.expertParams.push_back(
            static_cast<double>(inv.routedExpertsPerLayer.at(static_cast<std::size_t>(l)).params) / E);
        routedActive += c.expertParams.back() * spec.router.topK;
    }
    // activeParamsPerToken rounds top-k/E of all routed experts; the per-layer sum is the same count.
    c.fixedActive = static_cast<double>(inv.activeParamsPerToken) - routedActive;
    c.norms = static_cast<double>(inv[Component::Norms].params);
    return c;
}

void addRoutingCosts(EvalTable& table, std::size_t v, const EvalVariant& variant, const std::vector<uint16_t>& used,
    const EvalTokens& tokens, const ModelSpec& spec, const RoutingCosts& costs)
{
    const std::vector<int> moeLayers = spec.moeLayerIndices();
    const std::size_t T = tokens.tokens.size(), D = tokens.domains.size(), L = moeLayers.size();
    std::vector<double> widthFraction(L, 1.0);
    for (std::size_t m = 0; m < L; ++m) {
        const auto units = variant.mask.units.find(moeLayers[m]);
        if (units == variant.mask.units.end() || spec.moeIntermediate <= 0)
            continue;
        const auto keep = variant.mask.keep.find(moeLayers[m]);
        double width = 0, count = 0;
        for (int e = 0; e < spec.router.numExperts; ++e) {
            if (keep != variant.mask.keep.end()
                && std::find(keep->second.begin(), keep->second.end(), e) == keep->second.end())
                continue;
            width += static_cast<double>(units->second.at(static_cast<std::size_t>(e)).size());
            ++count;
        }
        widthFraction[m] = count > 0 ? width / count / static_cast<double>(spec.moeIntermediate) : 0.0;
    }
    std::vector<double> tokensIn(D, 0.0), experts(D, 0.0), params(D, 0.0);
    auto& histogram = table.expertsHistogram[v];
    for (std::size_t i = 0; i + 1 < tokens.seqOffsets.size(); ++i) {
        const auto d = static_cast<std::size_t>(tokens.seqDomain[i]);
        for (int64_t t = tokens.seqOffsets[i]; t < tokens.seqOffsets[i + 1]; ++t) {
            tokensIn[d] += 1;
            for (std::size_t m = 0; m < L; ++m) {
                const uint16_t k = used.at(m * T + static_cast<std::size_t>(t));
                experts[d] += k;
                histogram[d][std::min<std::size_t>(k, histogram[d].size() - 1)] += 1;
                params[d] += k * costs.expertParams[m] * widthFraction[m];
            }
        }
    }
    for (std::size_t d = 0; d < D; ++d) {
        const double pairs = tokensIn[d] * static_cast<double>(L);
        table.meanExperts[v][d] = pairs > 0 ? experts[d] / pairs : std::nan("");
        for (double& h : histogram[d])
            h = pairs > 0 ? h / pairs : std::nan("");
        table.activeParams[v][d] = tokensIn[d] > 0 ? costs.fixedActive + params[d] / tokensIn[d] : std::nan("");
        table.flopsPerToken[v][d] = 2.0 * (table.activeParams[v][d] - costs.norms);
    }
}

void fillEqualCost(EvalTable& table)
{
    const std::size_t V = table.variants.size(), D = table.domains.size();
    table.equalCostNll.assign(V, std::vector<double>(D, std::nan("")));
    for (std::size_t v = 0; v < V; ++v) {
        const EvalVariant& var = table.variants[v];
        if (var.base.empty() || var.mask.routing.fixed())
            continue;
        for (std::size_t d = 0; d < D; ++d) {
            std::vector<std::pair<double, double>> ladder; // (mean experts, nll)
            for (std::size_t u = 0; u < V; ++u) {
                const EvalVariant& other = table.variants[u];
                const bool fixed = (other.name == var.base && other.mask.routing.isModel())
                    || (other.base == var.base && other.mask.routing.kind == RoutingRule::Kind::TopK);
                if (fixed)
                    ladder.emplace_back(table.meanExperts[u][d], table.nll[u][d]);
            }
            std::sort(ladder.begin(), ladder.end());
            const double x = table.meanExperts[v][d];
            for (std::size_t i = 0; i + 1 < ladder.size(); ++i) {
                const auto [x0, y0] = ladder[i];
                const auto [x1, y1] = ladder[i + 1];
                if (x >= x0 && x <= x1 && x1 > x0) {
                    table.equalCostNll[v][d] = y0 + (y1 - y0) * (x - x0) / (x1 - x0);
                    break;
                }
            }
        }
    }
}

} // namespace eval_internal

} // namespace moeatlas
