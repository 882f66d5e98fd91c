#include "eval/eval.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/model_spec.h"
#include "eval/eval_routing.h"
#include "plan/atlas_scores.h"
#include "plan/dim_plan.h"
#include "plan/plan_costs.h"
#include "text/calibration.h"
#include "util/error.h"
#include "util/sha256.h"
#include "util/splitmix64.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

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

int EvalTable::baseIndex(std::size_t v) const
{
    if (v >= variants.size() || variants[v].base.empty())
        return -1;
    for (std::size_t i = 0; i < variants.size(); ++i)
        if (variants[i].name == variants[v].base)
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
    // A speculative variant holds `lookahead` more [T, H] states: it counts as that many more variants.
    const auto weightOf = [](const EvalVariant& v) {
        return 1 + (v.mask.speculative ? static_cast<std::size_t>(std::max(v.mask.speculative->lookahead, 0)) : 0);
    };
    const int64_t totalWork = static_cast<int64_t>(spec.numLayers) * T * static_cast<int64_t>(variants.size());

    const std::size_t D = tokens.domains.size();
    table.nll.assign(variants.size(), std::vector<double>(D, 0.0));
    const eval_internal::RoutingCosts costs = eval_internal::routingCosts(checkpoint, spec);
    std::size_t bins = static_cast<std::size_t>(spec.router.topK) + 1;
    for (const EvalVariant& v : variants)
        bins = std::max(bins, static_cast<std::size_t>(v.mask.routing.maxK(spec.router.topK)) + 1);
    table.meanExperts.assign(variants.size(), std::vector<double>(D, 0.0));
    table.expertsHistogram.assign(variants.size(), std::vector<std::vector<double>>(D, std::vector<double>(bins, 0.0)));
    table.activeParams.assign(variants.size(), std::vector<double>(D, 0.0));
    table.flopsPerToken.assign(variants.size(), std::vector<double>(D, 0.0));
    for (std::size_t first = 0, n = 0; first < variants.size(); first += n) {
        // As many variants as fit (at least one: evaluate() refuses one that does not).
        std::size_t weight = weightOf(variants[first]);
        for (n = 1;
             first + n < variants.size() && weight + weightOf(variants[first + n]) <= static_cast<std::size_t>(fit);
             ++n)
            weight += weightOf(variants[first + n]);
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
            eval_internal::addRoutingCosts(
                table, first + v, variants[first + v], r.variants[v].expertsUsed, tokens, spec, costs);
        }
    }
    table.variants = std::move(variants);
    eval_internal::fillEqualCost(table);
    return table;
}

} // namespace moeatlas
