// Routing statistics per (domain, layer) and pooled, from the accumulator's counts. The
// definitions are the usual ones: load share, CV and MaxVio of the load (MaxVio as in
// "Auxiliary-Loss-Free Load Balancing", Wang et al. 2024), token and load entropy, OLMoE's
// co-activation (Muennighoff et al., arXiv 2409.02060), distinct top-k patterns, domain
// specialisation, and ProbMoE's m99 routing diversity and dynamic-k band (arXiv 2606.01509).
#include "metrics/scores.h"

#include <algorithm>
#include <cmath>

namespace moeatlas {

namespace {

struct LoadSummary {
    double cv = 0.0, maxVio = 0.0, entropy = 0.0;
};

// f_e = load_e / sum load; CV = std(f) / mean(f) (population std); MaxVio = (max f - mean f)
// / mean f; load entropy = -sum f log f / log E.
LoadSummary summariseLoad(const double* load, int numE, double* share)
{
    double total = 0.0;
    for (int e = 0; e < numE; ++e)
        total += load[e];
    LoadSummary s;
    if (total <= 0.0) {
        std::fill_n(share, numE, 0.0);
        return s;
    }
    const double mean = 1.0 / numE;
    double var = 0.0, mx = 0.0;
    for (int e = 0; e < numE; ++e) {
        const double f = load[e] / total;
        share[e] = f;
        var += (f - mean) * (f - mean);
        mx = std::max(mx, f);
        if (f > 0.0)
            s.entropy -= f * std::log(f);
    }
    s.cv = std::sqrt(var / numE) / mean;
    s.maxVio = (mx - mean) / mean;
    s.entropy /= numE > 1 ? std::log(static_cast<double>(numE)) : 1.0;
    return s;
}

} // namespace

AtlasResults statisticsResults(const ScoreAccumulator& acc, const std::string& inputsHash)
{
    const int numD = acc.numDomains, numL = acc.numLayers, numE = acc.numExperts;
    const int bins = acc.bandBins();
    const auto uD = static_cast<uint64_t>(numD), uL = static_cast<uint64_t>(numL), uE = static_cast<uint64_t>(numE),
               uB = static_cast<uint64_t>(bins);
    const size_t rows = static_cast<size_t>(numD) + 1; // domains, then pooled
    const size_t le = static_cast<size_t>(numL) * numE;

    // Pooled counts: sums over domains, appended as row D of [D+1, ...] copies.
    auto withPooled = [&](const std::vector<double>& perDomain, size_t width) {
        std::vector<double> out(rows * numL * width, 0.0);
        const size_t block = static_cast<size_t>(numL) * width;
        for (size_t d = 0; d < static_cast<size_t>(numD); ++d)
            for (size_t i = 0; i < block; ++i) {
                out[d * block + i] = perDomain[d * block + i];
                out[static_cast<size_t>(numD) * block + i] += perDomain[d * block + i];
            }
        return out;
    };
    const std::vector<double> tokens = withPooled(acc.tokens, 1);
    const std::vector<double> load = withPooled(acc.selectCount, static_cast<size_t>(numE));
    const std::vector<double> entropy = withPooled(acc.entropySum, 1);
    const std::vector<double> m99 = withPooled(acc.m99Hist, static_cast<size_t>(numE));
    const std::vector<double> dynK = withPooled(acc.dynamicKHist, static_cast<size_t>(bins));

    std::vector<double> share(rows * le), cv(rows * numL), maxVio(rows * numL), loadEntropy(rows * numL),
        tokenEntropy(rows * numL), m99Mean(rows * numL), dynKMean(rows * numL), dynKFraction(rows * numL),
        distinct(rows * numL), patternEntropy(rows * numL);
    for (size_t r = 0; r < rows; ++r) {
        for (size_t l = 0; l < static_cast<size_t>(numL); ++l) {
            const size_t rl = r * numL + l;
            const double n = tokens[rl];
            const LoadSummary s = summariseLoad(&load[rl * numE], numE, &share[rl * numE]);
            cv[rl] = s.cv;
            maxVio[rl] = s.maxVio;
            loadEntropy[rl] = s.entropy;
            tokenEntropy[rl] = n > 0 ? entropy[rl] / n : 0.0;
            double m = 0.0;
            for (int e = 0; e < numE; ++e)
                m += (e + 1) * m99[rl * numE + static_cast<size_t>(e)];
            m99Mean[rl] = n > 0 ? m / n : 0.0;
            double k = 0.0;
            for (int b = 0; b < bins; ++b)
                k += (acc.params.bandMin + b) * dynK[rl * bins + static_cast<size_t>(b)];
            dynKMean[rl] = n > 0 ? k / n : 0.0;
            // Share of the model's top-k that dynamic-k keeps (ProbMoE reports 75-85%).
            dynKFraction[rl] = dynKMean[rl] / acc.topK;

            // Distinct top-k sets and the entropy (nats) of their distribution; pooled = union.
            std::unordered_map<std::string, double> merged;
            const std::unordered_map<std::string, double>* counts = nullptr;
            if (r < static_cast<size_t>(numD)) {
                counts = &acc.patterns[acc.dl(static_cast<int>(r), static_cast<int>(l))];
            } else {
                for (int d = 0; d < numD; ++d)
                    for (const auto& [key, c] : acc.patterns[acc.dl(d, static_cast<int>(l))])
                        merged[key] += c;
                counts = &merged;
            }
            distinct[rl] = static_cast<double>(counts->size());
            double h = 0.0;
            for (const auto& [key, c] : *counts)
                h -= c / n * std::log(c / n);
            patternEntropy[rl] = n > 0 ? h : 0.0;
        }
    }

    // Specialisation: expert e's share of its load coming from domain d, over domain d's share
    // of the layer's tokens (1 = no preference, > 1 = specialised on d).
    std::vector<double> special(static_cast<size_t>(numD) * le, 0.0);
    for (size_t l = 0; l < static_cast<size_t>(numL); ++l)
        for (size_t e = 0; e < static_cast<size_t>(numE); ++e) {
            const double expertTotal = load[(static_cast<size_t>(numD) * numL + l) * numE + e];
            const double tokenTotal = tokens[static_cast<size_t>(numD) * numL + l];
            if (expertTotal <= 0.0 || tokenTotal <= 0.0)
                continue;
            for (size_t d = 0; d < static_cast<size_t>(numD); ++d) {
                const double domainShare = tokens[d * numL + l] / tokenTotal;
                if (domainShare > 0.0)
                    special[(d * numL + l) * numE + e] = load[(d * numL + l) * numE + e] / expertTotal / domainShare;
            }
        }

    // Co-activation (OLMoE): coact(i, j) = #tokens with i and j in top-k / #tokens with i, pooled.
    std::vector<double> coact(le * numE, 0.0);
    for (size_t l = 0; l < static_cast<size_t>(numL); ++l)
        for (size_t i = 0; i < static_cast<size_t>(numE); ++i) {
            double diag = 0.0;
            for (int d = 0; d < numD; ++d)
                diag += acc.coactivation[(acc.dle(d, static_cast<int>(l), static_cast<int>(i))) * numE + i];
            if (diag <= 0.0)
                continue;
            for (size_t j = 0; j < static_cast<size_t>(numE); ++j) {
                double both = 0.0;
                for (int d = 0; d < numD; ++d)
                    both += acc.coactivation[acc.dle(d, static_cast<int>(l), static_cast<int>(i)) * numE + j];
                coact[(l * numE + i) * numE + j] = both / diag;
            }
        }

    AtlasResults r;
    r.paramsJson = statisticsParamsJson(acc.params);
    r.inputsHash = inputsHash;
    const uint64_t uR = uD + 1;
    // Additive counts (merge adds these exactly)...
    r.arrays.push_back({ "token_counts", { uD, uL }, acc.tokens });
    r.arrays.push_back({ "load_counts", { uD, uL, uE }, acc.selectCount });
    r.arrays.push_back({ "token_entropy_sums", { uD, uL }, acc.entropySum });
    r.arrays.push_back({ "m99_hist", { uD, uL, uE }, acc.m99Hist });
    r.arrays.push_back({ "coactivation_counts", { uD, uL, uE, uE }, acc.coactivation });
    r.arrays.push_back({ "dynamic_k_hist", { uD, uL, uB }, acc.dynamicKHist });
    // ...and the values derived from them (row D = all domains pooled).
    r.arrays.push_back({ "load_share", { uR, uL, uE }, std::move(share) });
    r.arrays.push_back({ "load_cv", { uR, uL }, std::move(cv) });
    r.arrays.push_back({ "load_max_vio", { uR, uL }, std::move(maxVio) });
    r.arrays.push_back({ "load_entropy", { uR, uL }, std::move(loadEntropy) });
    r.arrays.push_back({ "token_entropy", { uR, uL }, std::move(tokenEntropy) });
    r.arrays.push_back({ "m99_mean", { uR, uL }, std::move(m99Mean) });
    r.arrays.push_back({ "distinct_patterns", { uR, uL }, std::move(distinct) });
    r.arrays.push_back({ "pattern_entropy", { uR, uL }, std::move(patternEntropy) });
    r.arrays.push_back({ "dynamic_k_mean", { uR, uL }, std::move(dynKMean) });
    r.arrays.push_back({ "dynamic_k_fraction", { uR, uL }, std::move(dynKFraction) });
    r.arrays.push_back({ "specialisation", { uD, uL, uE }, std::move(special) });
    r.arrays.push_back({ "coactivation", { uL, uE, uE }, std::move(coact) });
    return r;
}

} // namespace moeatlas
