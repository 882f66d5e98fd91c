#include "prefetch/prefetch_metrics.h"

#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace moeatlas {

std::string hitSplitName(HitSplit s)
{
    return s == HitSplit::Heldout ? "heldout" : "all";
}

bool PrefetchHitTable::valid(std::size_t layer, std::size_t a) const
{
    return layer + static_cast<std::size_t>(lookaheads.at(a)) < layers.size();
}

int64_t PrefetchHitTable::tokens(HitSplit split, std::size_t domain) const
{
    const std::size_t d = domains.size();
    const std::size_t base = static_cast<std::size_t>(split) * d;
    if (domain < d)
        return tokenCounts.at(base + domain);
    int64_t sum = 0;
    for (std::size_t i = 0; i < d; ++i)
        sum += tokenCounts.at(base + i);
    return sum;
}

std::size_t PrefetchHitTable::at(
    std::size_t p, HitSplit split, std::size_t domain, std::size_t layer, std::size_t a) const
{
    return (((p * kHitSplits + static_cast<std::size_t>(split)) * domains.size() + domain) * layers.size() + layer)
        * lookaheads.size()
        + a;
}

double PrefetchHitTable::ratio(const std::vector<int64_t>& sums, std::size_t p, HitSplit split, std::size_t domain,
    std::size_t layer, std::size_t a) const
{
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if (!valid(layer, a))
        return nan;
    const int64_t n = tokens(split, domain);
    if (n == 0 || topK <= 0)
        return nan;
    int64_t hits = 0;
    if (domain < domains.size())
        hits = sums.at(at(p, split, domain, layer, a));
    else
        for (std::size_t d = 0; d < domains.size(); ++d)
            hits += sums.at(at(p, split, d, layer, a));
    return static_cast<double>(hits) / (static_cast<double>(topK) * static_cast<double>(n));
}

double PrefetchHitTable::hitRate(
    std::size_t p, HitSplit split, std::size_t domain, std::size_t layer, std::size_t a) const
{
    return ratio(hitSums, p, split, domain, layer, a);
}

double PrefetchHitTable::recall(
    std::size_t p, HitSplit split, std::size_t domain, std::size_t layer, std::size_t a) const
{
    return ratio(recallSums, p, split, domain, layer, a);
}

std::vector<double> PrefetchHitTable::heatmap(
    std::size_t p, HitSplit split, std::size_t domain, bool recallAtBudget) const
{
    std::vector<double> out;
    out.reserve(layers.size() * lookaheads.size());
    for (std::size_t l = 0; l < layers.size(); ++l)
        for (std::size_t a = 0; a < lookaheads.size(); ++a)
            out.push_back(recallAtBudget ? recall(p, split, domain, l, a) : hitRate(p, split, domain, l, a));
    return out;
}

double PrefetchHitTable::meanOverLayers(
    std::size_t p, HitSplit split, std::size_t domain, std::size_t a, bool recallAtBudget) const
{
    double sum = 0;
    int count = 0;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        if (!valid(l, a))
            continue;
        const double v = recallAtBudget ? recall(p, split, domain, l, a) : hitRate(p, split, domain, l, a);
        if (std::isnan(v))
            return v;
        sum += v;
        ++count;
    }
    return count > 0 ? sum / count : std::numeric_limits<double>::quiet_NaN();
}

int PrefetchHitTable::indexOf(Predictor p) const
{
    const auto it = std::find(predictors.begin(), predictors.end(), p);
    return it == predictors.end() ? -1 : static_cast<int>(it - predictors.begin());
}

PrefetchHitTable computeHitTable(const RoutingTrace& trace, const std::vector<Predictor>& predictors,
    const std::vector<int>& lookaheads, int budget, const PredictionFn& predict, const ProgressFn& progress,
    const StopToken* stop)
{
    PrefetchHitTable table;
    table.predictors = predictors;
    table.domains = trace.domainNames;
    table.layers = trace.moeLayers;
    table.lookaheads = lookaheads;
    table.topK = trace.topK;
    table.numExperts = trace.numExperts;
    table.budget = budget;
    const std::size_t numD = trace.domainNames.size();
    const std::size_t numS = trace.moeLayers.size();
    const std::size_t numA = lookaheads.size();
    const auto numT = static_cast<std::size_t>(trace.numTokens());
    const auto k = static_cast<std::size_t>(trace.topK);
    const auto b = static_cast<std::size_t>(budget);

    // Per token: its domain and whether it is held out.
    std::vector<uint8_t> heldout(numT, 0);
    for (std::size_t s = 0; s + 1 < trace.seqOffsets.size(); ++s)
        if (s < trace.trainSequences.size() && trace.trainSequences[s] == 0)
            std::fill(heldout.begin() + trace.seqOffsets[s], heldout.begin() + trace.seqOffsets[s + 1], uint8_t { 1 });
    table.tokenCounts.assign(kHitSplits * numD, 0);
    for (std::size_t t = 0; t < numT; ++t) {
        const auto d = static_cast<std::size_t>(trace.domainIds[t]);
        if (d >= numD)
            throw InputError("routing trace: token " + std::to_string(t) + " has domain id " + std::to_string(d)
                + ", outside [0, " + std::to_string(numD) + ")");
        ++table.tokenCounts[static_cast<std::size_t>(HitSplit::All) * numD + d];
        if (heldout[t] != 0)
            ++table.tokenCounts[static_cast<std::size_t>(HitSplit::Heldout) * numD + d];
    }
    const std::size_t cells = predictors.size() * kHitSplits * numD * numS * numA;
    table.hitSums.assign(cells, 0);
    table.recallSums.assign(cells, 0);

    int64_t total = 0;
    for (std::size_t a = 0; a < numA; ++a)
        for (std::size_t l = 0; l < numS; ++l)
            total += table.valid(l, a) ? static_cast<int64_t>(predictors.size()) : 0;
    int64_t done = 0;
    for (std::size_t p = 0; p < predictors.size(); ++p)
        for (std::size_t a = 0; a < numA; ++a)
            for (std::size_t l = 0; l < numS; ++l) {
                if (!table.valid(l, a))
                    continue;
                if (stop && stop->stopRequested())
                    throw Cancelled();
                const int d = lookaheads[a];
                const PredictionSet set = predict(predictors[p], static_cast<int>(l), d, budget);
                if (set.budget != budget || set.ids.size() != numT * b)
                    throw Error("prediction of '" + predictorName(predictors[p]) + "' at MoE layer "
                        + std::to_string(trace.moeLayers[l]) + ", lookahead " + std::to_string(d) + ": "
                        + std::to_string(set.ids.size()) + " ids, expected " + std::to_string(numT) + " tokens x "
                        + std::to_string(b));
                const std::vector<int32_t>& routed = trace.routed[l + static_cast<std::size_t>(d)];
                for (std::size_t t = 0; t < numT; ++t) {
                    const int32_t* r = routed.data() + t * k;
                    const int32_t* pred = set.ids.data() + t * b;
                    int64_t hits = 0, recallHits = 0;
                    for (std::size_t i = 0; i < b; ++i) {
                        if (std::find(r, r + k, pred[i]) == r + k)
                            continue;
                        ++recallHits;
                        if (i < k)
                            ++hits;
                    }
                    const auto dom = static_cast<std::size_t>(trace.domainIds[t]);
                    for (const HitSplit split : { HitSplit::Heldout, HitSplit::All }) {
                        if (split == HitSplit::Heldout && heldout[t] == 0)
                            continue;
                        const std::size_t cell
                            = (((p * kHitSplits + static_cast<std::size_t>(split)) * numD + dom) * numS + l) * numA + a;
                        table.hitSums[cell] += hits;
                        table.recallSums[cell] += recallHits;
                    }
                }
                ++done;
                if (progress
                    && !progress(Progress { predictorName(predictors[p]) + " d=" + std::to_string(d), done, total }))
                    throw Cancelled();
            }
    return table;
}

namespace {

// A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
std::string csvField(const std::string& text)
{
    if (text.find_first_of(",\"\r\n") == std::string::npos)
        return text;
    std::string quoted = "\"";
    for (const char c : text)
        quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    return quoted + "\"";
}

// A number with all its digits; empty for NaN (no tokens in that domain and split).
std::string csvNumber(double v)
{
    if (std::isnan(v))
        return {};
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", v);
    return text;
}

} // namespace

std::string hitTableCsv(const PrefetchHitTable& table)
{
    std::string out = "predictor,layer,lookahead,target_layer,domain,split,tokens,hit_rate,recall,budget,k\n";
    char line[512];
    for (std::size_t p = 0; p < table.predictors.size(); ++p)
        for (std::size_t l = 0; l < table.layers.size(); ++l)
            for (std::size_t a = 0; a < table.lookaheads.size(); ++a) {
                if (!table.valid(l, a))
                    continue;
                const int target = table.layers[l + static_cast<std::size_t>(table.lookaheads[a])];
                for (std::size_t d = 0; d <= table.numDomains(); ++d)
                    for (const HitSplit split : { HitSplit::Heldout, HitSplit::All }) {
                        const std::string domain = d < table.numDomains() ? table.domains[d] : "pooled";
                        std::snprintf(line, sizeof line, ",%d,%d,%d,", table.layers[l], table.lookaheads[a], target);
                        out += predictorName(table.predictors[p]) + line + csvField(domain) + "," + hitSplitName(split);
                        out += "," + std::to_string(table.tokens(split, d)) + ","
                            + csvNumber(table.hitRate(p, split, d, l, a)) + ","
                            + csvNumber(table.recall(p, split, d, l, a)) + "," + std::to_string(table.budget) + ","
                            + std::to_string(table.topK) + "\n";
                    }
            }
    return out;
}

} // namespace moeatlas
