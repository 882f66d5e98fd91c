#include "charts/prefetch_data.h"

#include "charts/chart_parts.h"
#include "eval/eval.h"

#include <algorithm>
#include <cmath>

namespace moeatlas::views {

namespace {

constexpr const char* kSpecMarker = "+spec:";

} // namespace

int PrefetchGrid::targetLayer(int row, int col) const
{
    const int target = row + lookaheads[static_cast<std::size_t>(col)];
    return target < static_cast<int>(moeLayers.size()) ? moeLayers[static_cast<std::size_t>(target)] : -1;
}

QString PrefetchGrid::toolTip(int row, int col) const
{
    const int target = targetLayer(row, col);
    const int lookahead = lookaheads[static_cast<std::size_t>(col)];
    const int source = layers[static_cast<std::size_t>(row)];
    if (target < 0)
        return QStringLiteral("Layer %1, lookahead %2: no MoE layer %2 ahead").arg(source).arg(lookahead);
    const double v = at(row, col);
    return QStringLiteral("Layer %1 predicts layer %2 (lookahead %3)\n%4 of %5: %6\n%7, %8: %9 tokens (top-%10, "
                          "budget %11)")
        .arg(source)
        .arg(target)
        .arg(lookahead)
        .arg(metric, predictor, std::isfinite(v) ? QString::number(v, 'f', 4) : QStringLiteral("no tokens"), domain,
            split)
        .arg(tokens)
        .arg(topK)
        .arg(budget);
}

PrefetchGrid prefetchGrid(
    const PrefetchHitTable& table, std::size_t predictor, HitSplit split, std::size_t domain, bool recall)
{
    PrefetchGrid g;
    g.rows = static_cast<int>(table.layers.size());
    g.cols = static_cast<int>(table.lookaheads.size());
    g.values = table.heatmap(predictor, split, domain, recall);
    g.layers = table.layers;
    g.moeLayers = table.layers; // every MoE layer is a source row
    g.lookaheads = table.lookaheads;
    g.metric = recall ? QStringLiteral("recall at %1").arg(table.budget) : QStringLiteral("hit rate");
    g.predictor = qs(predictorName(table.predictors.at(predictor)));
    g.split = split == HitSplit::Heldout ? QStringLiteral("held-out tokens") : QStringLiteral("all tokens");
    g.domain = domain < table.numDomains() ? qs(table.domains[domain]) : QStringLiteral("pooled");
    g.tokens = table.tokens(split, domain);
    g.topK = table.topK;
    g.budget = table.budget;
    return g;
}

TraceSlice sliceFirstSequences(const RoutingTrace& trace, int64_t perDomain)
{
    TraceSlice slice;
    const auto S = static_cast<int64_t>(trace.seqOffsets.empty() ? 0 : trace.seqOffsets.size() - 1);
    slice.totalSequences = S;
    std::map<int16_t, int64_t> taken;
    for (int64_t s = 0; s < S; ++s) {
        const int64_t begin = trace.seqOffsets[static_cast<std::size_t>(s)];
        const int64_t end = trace.seqOffsets[static_cast<std::size_t>(s + 1)];
        if (begin == end)
            continue;
        int64_t& n = taken[trace.domainIds[static_cast<std::size_t>(begin)]];
        if (perDomain > 0 && n >= perDomain)
            continue;
        ++n;
        slice.ranges.emplace_back(begin, end);
        ++slice.sequences;
        slice.tokens += end - begin;
    }
    // Empty sequences are never simulated: they count as kept when every other one is.
    if (perDomain <= 0)
        slice.sequences = S;
    return slice;
}

RoutingTrace sliceTrace(const RoutingTrace& trace, const TraceSlice& slice)
{
    RoutingTrace out;
    out.numExperts = trace.numExperts;
    out.topK = trace.topK;
    out.moeLayers = trace.moeLayers;
    out.domainNames = trace.domainNames;
    out.routed.resize(trace.routed.size());
    out.seqOffsets.push_back(0);
    const auto k = static_cast<std::ptrdiff_t>(trace.topK);
    for (const auto& [begin, end] : slice.ranges) {
        out.domainIds.insert(out.domainIds.end(), trace.domainIds.begin() + begin, trace.domainIds.begin() + end);
        out.seqOffsets.push_back(out.seqOffsets.back() + (end - begin));
        for (std::size_t l = 0; l < trace.routed.size(); ++l)
            out.routed[l].insert(
                out.routed[l].end(), trace.routed[l].begin() + begin * k, trace.routed[l].begin() + end * k);
        // The split of the sequence that starts at `begin`.
        const auto it = std::upper_bound(trace.seqOffsets.begin(), trace.seqOffsets.end(), begin);
        const auto seq = static_cast<std::size_t>(it - trace.seqOffsets.begin() - 1);
        out.trainSequences.push_back(seq < trace.trainSequences.size() ? trace.trainSequences[seq] : 0);
    }
    return out;
}

PredictionSet slicePredictions(const PredictionSet& set, const TraceSlice& slice)
{
    PredictionSet out { set.predictor, set.source, set.lookahead, set.budget, {} };
    const auto b = static_cast<std::ptrdiff_t>(set.budget);
    for (const auto& [begin, end] : slice.ranges)
        out.ids.insert(out.ids.end(), set.ids.begin() + begin * b, set.ids.begin() + end * b);
    return out;
}

std::vector<SpeculativeQuality> speculativeQuality(
    const std::map<std::string, AtlasResults>& evaluations, QString* error)
{
    std::vector<SpeculativeQuality> out;
    for (const auto& [label, group] : evaluations) {
        EvalTable table;
        try {
            table = evalTableFromResults(group, "/evaluation/" + label);
        } catch (const std::exception& e) {
            if (error)
                *error = QString::fromUtf8(e.what());
            continue;
        }
        double tokens = 0;
        for (const int64_t n : table.predictedTokens)
            tokens += static_cast<double>(n);
        for (std::size_t v = 0; v < table.variants.size(); ++v) {
            const EvalVariant& var = table.variants[v];
            const std::size_t at = var.name.find(kSpecMarker);
            if (at == std::string::npos)
                continue;
            SpeculativeQuality q;
            q.table = label;
            q.variant = var.name;
            q.base = var.base.empty() ? var.name.substr(0, at) : var.base;
            q.predictorText = var.name.substr(at + std::string(kSpecMarker).size());
            // The predictor name, before any suffix such as "@1" or ":d1".
            const std::size_t stop = q.predictorText.find_first_of("@:/ ");
            try {
                q.predictor = parsePredictor(q.predictorText.substr(0, stop), "predictor");
                q.knownPredictor = true;
            } catch (const std::exception&) {
                q.knownPredictor = false;
            }
            const auto base = std::find_if(
                table.variants.begin(), table.variants.end(), [&](const EvalVariant& b) { return b.name == q.base; });
            if (base == table.variants.end())
                continue;
            const auto b = static_cast<std::size_t>(base - table.variants.begin());
            q.domains = table.domains;
            for (std::size_t d = 0; d < table.domains.size(); ++d) {
                const double delta = table.nll[v][d] - table.nll[b][d];
                q.deltaNll.push_back(delta);
                if (tokens > 0)
                    q.pooledDelta += delta * static_cast<double>(table.predictedTokens[d]) / tokens;
            }
            out.push_back(std::move(q));
        }
    }
    return out;
}

std::vector<Predictor> simulatablePredictors(const AtlasPrefetchInfo* info)
{
    std::vector<Predictor> out;
    for (const Predictor p : kAllPredictors) {
        if (!isRecorded(p))
            continue;
        if (info
            && std::find(info->predictors.begin(), info->predictors.end(), predictorName(p)) != info->predictors.end())
            out.push_back(p);
    }
    for (const Predictor p : kAllPredictors)
        if (!isRecorded(p))
            out.push_back(p);
    return out;
}

} // namespace moeatlas::views
