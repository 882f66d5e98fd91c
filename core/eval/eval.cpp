#include "eval/eval.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/inventory.h"
#include "checkpoint/model_spec.h"
#include "plan/atlas_scores.h"
#include "plan/dim_plan.h"
#include "plan/plan_costs.h"
#include "text/calibration.h"
#include "util/error.h"
#include "util/sha256.h"
#include "util/splitmix64.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <sstream>

namespace moeatlas {

namespace {

int64_t routedExperts(const ModelSpec& spec)
{
    return static_cast<int64_t>(spec.numMoeLayers()) * spec.router.numExperts;
}

// Sets keptExperts and sparsity from the mask: sparsity is the fraction of the routed experts'
// intermediate units (hence of their weights) dropped, over all MoE layers; for expert-only masks
// that is the fraction of experts dropped. A zero-width expert counts as kept (its router row is).
void countKept(EvalVariant& v, const ModelSpec& spec)
{
    const int64_t E = spec.router.numExperts, I = spec.moeIntermediate;
    int64_t kept = 0, keptUnits = 0;
    for (const int l : spec.moeLayerIndices()) {
        std::vector<int> experts(static_cast<std::size_t>(E));
        std::iota(experts.begin(), experts.end(), 0);
        if (const auto it = v.mask.keep.find(l); it != v.mask.keep.end())
            experts = it->second;
        kept += static_cast<int64_t>(experts.size());
        const auto units = v.mask.units.find(l);
        for (const int e : experts)
            keptUnits += units == v.mask.units.end()
                ? I
                : static_cast<int64_t>(units->second.at(static_cast<std::size_t>(e)).size());
    }
    v.keptExperts = kept;
    const int64_t all = routedExperts(spec) * I;
    v.sparsity = all > 0 ? 1.0 - static_cast<double>(keptUnits) / static_cast<double>(all) : 0.0;
}

// A number as the user would type it: 0.5, 1.5, 0.125.
std::string shortNumber(double x)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
}

std::string sparsityLabel(double sparsity)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", sparsity);
    return buf;
}

// The longest sequence (its attention scores are part of the memory plan).
int64_t longestSequence(const std::vector<int64_t>& offsets)
{
    int64_t longest = 0;
    for (std::size_t i = 0; i + 1 < offsets.size(); ++i)
        longest = std::max(longest, offsets[i + 1] - offsets[i]);
    return longest;
}

// What a token's routing costs in parameters: everything but the routed experts (as
// Inventory::activeParamsPerToken counts it) plus, per MoE layer, one routed expert's parameters for
// each expert the token is routed to.
struct RoutingCosts {
    double fixedActive = 0; // active parameters per token without the routed experts
    double norms = 0; // norm weights: element-wise, not part of the FLOPs
    std::vector<double> expertParams; // per MoE layer (model order): one routed expert at full width
};

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

// Mean experts per token and layer, their histogram, active parameters and FLOPs per token of one
// variant in every domain, from the experts each token was routed to ([numMoeLayers, T]). A dimension
// plan's experts count with their kept experts' mean width.
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

// equalCostNll: per dynamic-k variant and domain, its base's fixed top-k ladder (the base at the
// model's k and "<base>+top-k:K") interpolated linearly at the variant's mean experts per token.
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

} // namespace

EvalTokens evalTokensFromAtlas(const AtlasFile& atlas)
{
    if (!atlas.isComplete())
        throw InputError(atlas.path().string() + ": the atlas is not complete (resume the interrupted capture first)");
    EvalTokens t;
    for (const AtlasDomain& d : atlas.calibration().domains)
        t.domains.push_back(d.name);
    t.tokens = atlas.tokens();
    t.seqOffsets = atlas.seqOffsets();
    const std::vector<int16_t> ids = atlas.domainIds();
    for (std::size_t i = 0; i + 1 < t.seqOffsets.size(); ++i) {
        const int d = ids.at(static_cast<std::size_t>(t.seqOffsets[i]));
        if (d < 0 || d >= static_cast<int>(t.domains.size()))
            throw InputError(atlas.path().string() + ": /tokens/domain_ids holds " + std::to_string(d)
                + ", not a domain index of /calibration");
        t.seqDomain.push_back(d);
    }
    t.source = "atlas " + atlas.path().string();
    return t;
}

EvalTokens firstSequencesPerDomain(const EvalTokens& all, int64_t perDomain)
{
    if (perDomain <= 0)
        return all;
    EvalTokens out;
    out.domains = all.domains;
    out.source = all.source + " (first " + std::to_string(perDomain) + " sequences per domain)";
    out.seqOffsets.push_back(0);
    std::vector<int64_t> taken(all.domains.size(), 0);
    for (std::size_t i = 0; i < all.seqDomain.size(); ++i) {
        const int d = all.seqDomain[i];
        if (taken[static_cast<std::size_t>(d)]++ >= perDomain)
            continue;
        out.tokens.insert(
            out.tokens.end(), all.tokens.begin() + all.seqOffsets[i], all.tokens.begin() + all.seqOffsets[i + 1]);
        out.seqOffsets.push_back(static_cast<int64_t>(out.tokens.size()));
        out.seqDomain.push_back(d);
    }
    return out;
}

EvalTokens evalTokensFromCalibration(const CalibrationSet& calibration)
{
    EvalTokens t;
    t.seqOffsets.push_back(0);
    std::string names;
    for (std::size_t d = 0; d < calibration.domains.size(); ++d) {
        const PackedDomain& pd = calibration.domains[d];
        t.domains.push_back(pd.name);
        names += (d ? ", " : "") + pd.name + "=" + pd.source;
        for (const std::vector<int32_t>& seq : pd.sequences) {
            t.tokens.insert(t.tokens.end(), seq.begin(), seq.end());
            t.seqOffsets.push_back(static_cast<int64_t>(t.tokens.size()));
            t.seqDomain.push_back(static_cast<int>(d));
        }
    }
    t.source = "calibration " + names;
    return t;
}

EvalVariant fullVariant(const ModelSpec& spec)
{
    EvalVariant v;
    v.name = "full";
    v.method = "full";
    countKept(v, spec);
    return v;
}

EvalVariant variantFromPlan(const Plan& plan, const ModelSpec& spec, const std::string& name)
{
    if (plan.numExperts != spec.router.numExperts)
        throw InputError("plan '" + name + "': written for " + std::to_string(plan.numExperts)
            + " experts per layer, the model has " + std::to_string(spec.router.numExperts));
    EvalVariant v;
    v.name = name;
    v.method = plan.method.empty() ? "plan" : plan.method;
    v.criterion = plan.criterion;
    if (plan.method == "specialist" && plan.domainWeights.size() == 1)
        v.domain = plan.domainWeights.begin()->first;
    v.mask.name = name;
    checkDims(plan, "plan '" + name + "'");
    if (plan.hasDims() && plan.dims.intermediate != spec.moeIntermediate)
        throw InputError("plan '" + name + "': dims for routed experts of " + std::to_string(plan.dims.intermediate)
            + " units, the model's have " + std::to_string(spec.moeIntermediate));
    for (std::size_t i = 0; i < plan.layers.size(); ++i) {
        const int layer = plan.layers[i];
        for (const int e : plan.keep[i])
            if (e < 0 || e >= spec.router.numExperts)
                throw InputError("plan '" + name + "', layer " + std::to_string(layer) + ": expert " + std::to_string(e)
                    + " is out of range");
        v.mask.keep[layer] = plan.keep[i];
        if (plan.hasDims()) {
            // One list per routed expert of the layer (original ids); dropped experts keep none.
            auto& units = v.mask.units[layer];
            units.assign(static_cast<std::size_t>(spec.router.numExperts), {});
            for (std::size_t k = 0; k < plan.keep[i].size(); ++k)
                units[static_cast<std::size_t>(plan.keep[i][k])] = plan.units[i][k];
        }
    }
    countKept(v, spec);
    return v;
}

EvalVariant variantFromPlanFile(
    const std::filesystem::path& file, const ModelSpec& spec, const std::string& configSha256)
{
    const Plan plan = readPlan(file.string());
    if (!plan.configSha256.empty() && plan.configSha256 != configSha256)
        throw InputError(
            file.string() + ": the plan was made from an atlas of another checkpoint (config.json differs)");
    return variantFromPlan(plan, spec, file.filename().string());
}

EvalVariant randomVariant(const ModelSpec& spec, double sparsity, uint64_t seed, const std::string& name)
{
    const int E = spec.router.numExperts;
    const int keep = std::clamp(static_cast<int>(std::lround((1.0 - sparsity) * E)), spec.router.topK, E);
    EvalVariant v;
    v.name = name;
    v.method = "random";
    v.mask.name = name;
    SplitMix64 rng(seed);
    for (const int l : spec.moeLayerIndices()) {
        std::vector<int> ids(static_cast<std::size_t>(E));
        std::iota(ids.begin(), ids.end(), 0);
        for (int i = E - 1; i > 0; --i) // Fisher-Yates
            std::swap(ids[static_cast<std::size_t>(i)],
                ids[static_cast<std::size_t>(rng.next() % static_cast<uint64_t>(i + 1))]);
        ids.resize(static_cast<std::size_t>(keep));
        std::sort(ids.begin(), ids.end());
        v.mask.keep[l] = std::move(ids);
    }
    countKept(v, spec);
    return v;
}

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

std::vector<EvalVariant> sweepVariants(const std::filesystem::path& atlas, const Checkpoint& checkpoint,
    const ModelSpec& spec, const SweepOptions& options)
{
    for (std::size_t i = 0; i < options.sparsities.size(); ++i) {
        const double s = options.sparsities[i];
        if (!(s > 0.0 && s < 1.0))
            throw RequestError(
                "sparsities", "sparsity " + shortNumber(s) + ": expected a fraction of experts dropped in (0, 1)");
        for (std::size_t j = 0; j < i; ++j)
            if (sparsityLabel(options.sparsities[j]) == sparsityLabel(s))
                throw RequestError("sparsities",
                    "sparsities " + shortNumber(options.sparsities[j]) + " and " + shortNumber(s) + " have one label ("
                        + sparsityLabel(s) + "): give sparsities that differ in the first two decimals");
    }
    std::vector<EvalVariant> out;
    if (options.specialists || options.generalist) {
        const PlanContext ctx = planContextFor(checkpoint);
        for (std::string criterion : options.criteria) {
            std::replace(criterion.begin(), criterion.end(), '-', '_');
            const AtlasScores scores = readAtlasScores(atlas, criterion);
            if (sha256File(checkpoint.dir() / "config.json") != scores.configSha256)
                throw InputError((checkpoint.dir() / "config.json").string() + ": not the config.json " + atlas.string()
                    + " was captured from: its scores cannot rank this model's experts");
            for (const double s : options.sparsities) {
                Budget budget;
                budget.scope = options.scope;
                budget.unit = BudgetUnit::Fraction;
                budget.amount = 1.0 - s;
                const std::string at = "/" + criterion + "@" + sparsityLabel(s);
                if (options.specialists)
                    for (const ScoreTable& d : scores.domains)
                        out.push_back(variantFromPlan(compileSpecialist(scores.domains, d.domain, budget, ctx), spec,
                            "specialist:" + d.domain + at));
                if (options.generalist)
                    out.push_back(variantFromPlan(
                        compilePooledGeneralist(scores.domains, scores.pooled, budget, ctx), spec, "generalist" + at));
            }
        }
    }
    for (const double s : options.sparsities)
        for (int i = 0; i < options.randomPlans; ++i)
            out.push_back(randomVariant(spec, s, options.seed + static_cast<uint64_t>(i),
                "random#" + std::to_string(i) + "@" + sparsityLabel(s)));
    return out;
}

int EvalTable::fullIndex() const
{
    for (std::size_t i = 0; i < variants.size(); ++i)
        if (variants[i].method == "full")
            return static_cast<int>(i);
    return -1;
}

EvalTable evaluateVariants(const Checkpoint& checkpoint, const ModelSpec& spec, const ExecutorOptions& options,
    const EvalTokens& tokens, std::vector<EvalVariant> variants, const ProgressFn& progress, const StopToken* stop)
{
    if (variants.empty())
        throw InputError("nothing to evaluate: give plans, a sweep, or keep the full model");
    for (std::size_t i = 0; i < variants.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
            if (variants[i].name == variants[j].name)
                throw InputError("two evaluated variants are both named '" + variants[i].name + "'");
    const std::size_t S = tokens.seqDomain.size();
    if (tokens.seqOffsets.size() != S + 1 || tokens.tokens.empty())
        throw InputError("evaluation: no tokens to evaluate on");

    EvalTable table;
    table.domains = tokens.domains;
    table.tokenSource = tokens.source;
    table.checkpoint = checkpoint.dir().string();
    table.computeDtype = options.computeDtype;
    table.predictedTokens.assign(tokens.domains.size(), 0);
    for (std::size_t i = 0; i < S; ++i)
        table.predictedTokens[static_cast<std::size_t>(tokens.seqDomain[i])]
            += tokens.seqOffsets[i + 1] - tokens.seqOffsets[i] - 1;

    // One budget for every group: MemAvailable falls once resident layers are loaded, and those
    // layers are already part of each group's plan.
    ExecutorOptions fixedBudget = options;
    if (fixedBudget.memoryBudgetBytes == 0)
        fixedBudget.memoryBudgetBytes = availableMemoryBytes();
    Executor executor(checkpoint, spec, fixedBudget);
    const int64_t T = static_cast<int64_t>(tokens.tokens.size());
    // Dimension plans hold one layer's experts sliced next to the layer itself.
    const bool dims
        = std::any_of(variants.begin(), variants.end(), [](const EvalVariant& v) { return !v.mask.units.empty(); });
    const int fit = executor.variantsThatFit(T, longestSequence(tokens.seqOffsets), false, dims);
    if (fit == 0)
        throw RequestError("memoryBudgetBytes",
            "memory plan: one evaluation of " + std::to_string(T) + " tokens needs about "
                + std::to_string(
                    executor.plannedEvaluationBytes(T, longestSequence(tokens.seqOffsets), 1, false, dims) >> 20)
                + " MiB, more than is available; evaluate fewer or shorter sequences");
    const std::size_t group = static_cast<std::size_t>(fit);
    const int64_t totalWork = static_cast<int64_t>(spec.numLayers) * T * static_cast<int64_t>(variants.size());

    const std::size_t D = tokens.domains.size();
    table.nll.assign(variants.size(), std::vector<double>(D, 0.0));
    const RoutingCosts costs = routingCosts(checkpoint, spec);
    std::size_t bins = static_cast<std::size_t>(spec.router.topK) + 1;
    for (const EvalVariant& v : variants)
        bins = std::max(bins, static_cast<std::size_t>(v.mask.routing.maxK(spec.router.topK)) + 1);
    table.meanExperts.assign(variants.size(), std::vector<double>(D, 0.0));
    table.expertsHistogram.assign(variants.size(), std::vector<std::vector<double>>(D, std::vector<double>(bins, 0.0)));
    table.activeParams.assign(variants.size(), std::vector<double>(D, 0.0));
    table.flopsPerToken.assign(variants.size(), std::vector<double>(D, 0.0));
    for (std::size_t first = 0; first < variants.size(); first += group) {
        const std::size_t n = std::min(group, variants.size() - first);
        std::vector<ExpertMask> masks;
        for (std::size_t v = first; v < first + n; ++v) {
            masks.push_back(variants[v].mask);
            masks.back().name = variants[v].name;
        }
        const int64_t workBefore = static_cast<int64_t>(spec.numLayers) * T * static_cast<int64_t>(first);
        ProgressFn inner;
        if (progress)
            inner = [&](const Progress& p) {
                Progress q = p;
                q.done = workBefore + p.done;
                q.total = totalWork;
                return progress(q);
            };
        const EvaluationResult r = executor.evaluate(tokens.tokens, tokens.seqOffsets, masks, false, inner, stop);
        table.seconds += r.seconds;
        for (std::size_t v = 0; v < n; ++v) {
            std::vector<double>& sums = table.nll[first + v];
            const std::vector<float>& nll = r.variants[v].tokenNll;
            for (std::size_t i = 0; i < S; ++i) {
                double sum = 0;
                for (int64_t t = tokens.seqOffsets[i]; t + 1 < tokens.seqOffsets[i + 1]; ++t)
                    sum += nll[static_cast<std::size_t>(t)];
                sums[static_cast<std::size_t>(tokens.seqDomain[i])] += sum;
            }
            for (std::size_t d = 0; d < sums.size(); ++d)
                sums[d] = table.predictedTokens[d] > 0 ? sums[d] / static_cast<double>(table.predictedTokens[d])
                                                       : std::nan("");
            addRoutingCosts(table, first + v, variants[first + v], r.variants[v].expertsUsed, tokens, spec, costs);
        }
    }
    table.variants = std::move(variants);
    fillEqualCost(table);
    return table;
}

std::string evalTableCsv(const EvalTable& table)
{
    std::ostringstream out;
    out.precision(9);
    out << "variant,method,criterion,target_domain,sparsity,kept_experts,domain,tokens,nll,perplexity,delta_nll,"
           "routing,mean_experts,active_params,flops_per_token,equal_cost_topk_nll,delta_vs_equal_cost,"
           "experts_histogram\n";
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
