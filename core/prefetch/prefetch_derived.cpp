#include "prefetch/prefetch_derived.h"

#include "util/error.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace moeatlas {

namespace {

std::string joinLayers(const std::vector<int>& layers)
{
    std::string text;
    for (const int l : layers)
        text += (text.empty() ? "" : ", ") + std::to_string(l);
    return text;
}

void checkTrace(const RoutingTrace& trace)
{
    const std::size_t sequences = trace.seqOffsets.empty() ? 0 : trace.seqOffsets.size() - 1;
    if (trace.trainSequences.size() != sequences)
        throw InputError("routing trace: " + std::to_string(trace.trainSequences.size()) + " training-split flags for "
            + std::to_string(sequences) + " sequences");
    if (trace.seqOffsets.empty() || trace.seqOffsets.front() != 0 || trace.seqOffsets.back() != trace.numTokens())
        throw InputError(
            "routing trace: sequence offsets do not cover the " + std::to_string(trace.numTokens()) + " tokens");
    if (trace.routed.size() != trace.moeLayers.size())
        throw InputError("routing trace: routing of " + std::to_string(trace.routed.size()) + " layers for "
            + std::to_string(trace.moeLayers.size()) + " MoE layers");
}

// Appends `id` to a row unless it is in it already.
void appendDistinct(std::vector<int32_t>& row, int32_t id, std::size_t budget)
{
    if (row.size() < budget && std::find(row.begin(), row.end(), id) == row.end())
        row.push_back(id);
}

} // namespace

void checkPrediction(const RoutingTrace& trace, int source, int lookahead, int budget)
{
    const int layers = trace.numMoeLayers();
    if (source < 0 || source >= layers)
        throw RequestError("source",
            "source MoE layer index " + std::to_string(source) + " is outside [0, " + std::to_string(layers)
                + ") (MoE layers: " + joinLayers(trace.moeLayers) + ")");
    if (lookahead < 1 || source + lookahead >= layers)
        throw RequestError("lookahead",
            "lookahead " + std::to_string(lookahead) + " from MoE layer " + std::to_string(trace.moeLayers[source])
                + " is " + (lookahead < 1 ? "not a positive count of MoE layers" : "beyond the last MoE layer")
                + " (MoE layers: " + joinLayers(trace.moeLayers) + "; lookahead counts MoE layers, 1 to "
                + std::to_string(layers - 1 - source) + " from there)");
    if (budget < trace.topK || budget > trace.numExperts)
        throw RequestError("budget",
            "budget " + std::to_string(budget) + " experts is outside [" + std::to_string(trace.topK) + ", "
                + std::to_string(trace.numExperts) + "] (top-k to the expert count)");
}

std::vector<int32_t> frequencyOrder(const RoutingTrace& trace, int layer)
{
    checkTrace(trace);
    const auto k = static_cast<std::size_t>(trace.topK);
    std::vector<int64_t> counts(static_cast<std::size_t>(trace.numExperts), 0);
    const std::vector<int32_t>& routed = trace.routed.at(static_cast<std::size_t>(layer));
    for (std::size_t s = 0; s + 1 < trace.seqOffsets.size(); ++s) {
        if (trace.trainSequences[s] == 0)
            continue;
        for (auto t = static_cast<std::size_t>(trace.seqOffsets[s]);
             t < static_cast<std::size_t>(trace.seqOffsets[s + 1]); ++t)
            for (std::size_t j = 0; j < k; ++j)
                ++counts[static_cast<std::size_t>(routed[t * k + j])];
    }
    std::vector<int32_t> order(counts.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return counts[static_cast<std::size_t>(a)] > counts[static_cast<std::size_t>(b)];
    });
    return order;
}

PredictionSet derivedPredictions(const RoutingTrace& trace, Predictor predictor, int source, int lookahead, int budget)
{
    if (isRecorded(predictor))
        throw RequestError(
            "predictor", "'" + predictorName(predictor) + "' is recorded at capture, not derived from the routing");
    checkPrediction(trace, source, lookahead, budget);
    checkTrace(trace);
    const int target = source + lookahead;
    const std::vector<int32_t> frequency = frequencyOrder(trace, target);
    const std::vector<int32_t>& routed = trace.routed[static_cast<std::size_t>(target)];
    const auto k = static_cast<std::size_t>(trace.topK);
    const auto b = static_cast<std::size_t>(budget);

    PredictionSet out { predictor, source, lookahead, budget, {} };
    out.ids.reserve(static_cast<std::size_t>(trace.numTokens()) * b);
    std::vector<int32_t> row;
    row.reserve(b);
    for (std::size_t s = 0; s + 1 < trace.seqOffsets.size(); ++s) {
        const auto begin = static_cast<std::size_t>(trace.seqOffsets[s]);
        const auto end = static_cast<std::size_t>(trace.seqOffsets[s + 1]);
        for (std::size_t t = begin; t < end; ++t) {
            row.clear();
            if (predictor == Predictor::Oracle)
                for (std::size_t j = 0; j < k; ++j)
                    appendDistinct(row, routed[t * k + j], b);
            else if (predictor == Predictor::Previous && t > begin)
                for (std::size_t j = 0; j < k; ++j)
                    appendDistinct(row, routed[(t - 1) * k + j], b);
            for (std::size_t i = 0; row.size() < b && i < frequency.size(); ++i)
                appendDistinct(row, frequency[i], b);
            out.ids.insert(out.ids.end(), row.begin(), row.end());
        }
    }
    return out;
}

} // namespace moeatlas
