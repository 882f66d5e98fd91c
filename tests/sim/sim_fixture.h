// Small routing traces, predictions and compute models built in memory, for the core/sim suites.
#pragma once

#include "prefetch/prefetch_data.h"
#include "sim/compute_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace moeatlas::test {

// routed[layer][token] = the token's k experts; seqLengths: the sequences, in order (sum = tokens).
inline RoutingTrace makeTrace(int numExperts, int topK, const std::vector<std::vector<std::vector<int>>>& routed,
    const std::vector<int64_t>& seqLengths)
{
    RoutingTrace t;
    t.numExperts = numExperts;
    t.topK = topK;
    const std::size_t tokens = routed.empty() ? 0 : routed.front().size();
    for (std::size_t l = 0; l < routed.size(); ++l) {
        t.moeLayers.push_back(static_cast<int>(l));
        std::vector<int32_t> flat;
        for (const auto& row : routed[l])
            flat.insert(flat.end(), row.begin(), row.end());
        t.routed.push_back(flat);
    }
    t.seqOffsets = { 0 };
    for (const int64_t n : seqLengths)
        t.seqOffsets.push_back(t.seqOffsets.back() + n);
    t.domainIds.assign(tokens, 0);
    t.domainNames = { "all" };
    t.trainSequences.assign(seqLengths.size(), 0);
    return t;
}

// rows[token] = the budget predicted experts of layer source + lookahead.
inline PredictionSet makePredictions(int source, int lookahead, const std::vector<std::vector<int>>& rows)
{
    PredictionSet p;
    p.predictor = Predictor::Oracle;
    p.source = source;
    p.lookahead = lookahead;
    p.budget = rows.empty() ? 0 : static_cast<int>(rows.front().size());
    for (const auto& row : rows)
        p.ids.insert(p.ids.end(), row.begin(), row.end());
    return p;
}

// Measured times, the same for every layer; every expert `expertBytes` bytes.
inline ComputeModel measuredModel(int layers, int numExperts, int topK, double expertBytes, LayerTime each, double tail)
{
    ComputeModel m;
    m.costs.numExperts = numExperts;
    m.costs.topK = topK;
    for (int l = 0; l < layers; ++l) {
        m.costs.moeLayers.push_back(l);
        m.costs.pre.emplace_back();
        m.costs.shared.emplace_back();
    }
    m.costs.expertBytes.assign(static_cast<std::size_t>(layers) * static_cast<std::size_t>(numExperts), expertBytes);
    m.costs.expertFlops.assign(m.costs.expertBytes.size(), 0.0);
    m.measured = MeasuredTimes { std::vector<LayerTime>(static_cast<std::size_t>(layers), each), tail };
    return m;
}

// A random trace: `tokens` tokens in sequences of random length, each token routed to k distinct experts
// drawn from a skewed (Zipf-like, exponent `skew`) distribution per layer, so that caching matters.
inline RoutingTrace randomTrace(std::mt19937_64& rng, int layers, int numExperts, int topK, int tokens, double skew)
{
    std::vector<std::vector<std::vector<int>>> routed(static_cast<std::size_t>(layers));
    for (auto& layer : routed) {
        std::vector<double> w(static_cast<std::size_t>(numExperts));
        std::vector<int> perm(static_cast<std::size_t>(numExperts));
        for (int e = 0; e < numExperts; ++e)
            perm[static_cast<std::size_t>(e)] = e;
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int e = 0; e < numExperts; ++e)
            w[static_cast<std::size_t>(perm[static_cast<std::size_t>(e)])] = 1.0 / std::pow(e + 1.0, skew);
        for (int t = 0; t < tokens; ++t) {
            std::vector<double> left = w;
            std::vector<int> row;
            for (int j = 0; j < topK; ++j) {
                std::discrete_distribution<int> pick(left.begin(), left.end());
                const int e = pick(rng);
                left[static_cast<std::size_t>(e)] = 0;
                row.push_back(e);
            }
            layer.push_back(row);
        }
    }
    std::vector<int64_t> lengths;
    int64_t left = tokens;
    while (left > 0) {
        const int64_t n = std::min<int64_t>(left, std::uniform_int_distribution<int64_t>(1, 40)(rng));
        lengths.push_back(n);
        left -= n;
    }
    return makeTrace(numExperts, topK, routed, lengths);
}

} // namespace moeatlas::test
