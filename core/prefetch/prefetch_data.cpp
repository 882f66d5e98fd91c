#include "prefetch/prefetch_data.h"

#include "util/error.h"
#include "util/splitmix64.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace moeatlas {

std::string predictorName(Predictor p)
{
    switch (p) {
    case Predictor::NextRouter:
        return "next-router";
    case Predictor::QuasiHidden:
        return "quasi-hidden";
    case Predictor::Linear:
        return "linear";
    case Predictor::Mlp:
        return "mlp";
    case Predictor::Frequency:
        return "frequency";
    case Predictor::Previous:
        return "previous";
    case Predictor::Oracle:
        return "oracle";
    }
    return "?";
}

Predictor parsePredictor(std::string_view text, const std::string& field)
{
    std::string names;
    for (const Predictor p : kAllPredictors) {
        if (predictorName(p) == text)
            return p;
        names += (names.empty() ? "" : ", ") + predictorName(p);
    }
    throw RequestError(field, "unknown predictor '" + std::string(text) + "': expected one of " + names);
}

bool isRecorded(Predictor p)
{
    return p == Predictor::NextRouter || p == Predictor::QuasiHidden || p == Predictor::Linear || p == Predictor::Mlp;
}

std::vector<uint8_t> splitSequences(
    std::span<const int64_t> seqOffsets, std::span<const int16_t> domainIds, double fraction, uint64_t seed)
{
    if (!(fraction > 0.0 && fraction < 1.0))
        throw RequestError("trainFraction",
            "training fraction " + std::to_string(fraction) + " must lie in (0, 1): some sequences train, some are held out");
    const std::size_t numSeqs = seqOffsets.empty() ? 0 : seqOffsets.size() - 1;
    std::map<int16_t, std::vector<std::size_t>> byDomain;
    for (std::size_t s = 0; s < numSeqs; ++s)
        if (seqOffsets[s + 1] > seqOffsets[s])
            byDomain[domainIds[static_cast<std::size_t>(seqOffsets[s])]].push_back(s);
    std::vector<uint8_t> train(numSeqs, 0);
    SplitMix64 rng(seed);
    for (auto& [domain, seqs] : byDomain) {
        for (std::size_t i = seqs.size(); i > 1; --i)
            std::swap(seqs[i - 1], seqs[static_cast<std::size_t>(rng.below(i))]);
        const auto n = static_cast<int64_t>(seqs.size());
        int64_t numTrain = std::llround(fraction * static_cast<double>(n));
        if (n >= 2)
            numTrain = std::clamp<int64_t>(numTrain, 1, n - 1);
        for (int64_t i = 0; i < numTrain; ++i)
            train[seqs[static_cast<std::size_t>(i)]] = 1;
    }
    return train;
}

} // namespace moeatlas
