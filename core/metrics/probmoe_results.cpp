// The /probmoe group: ProbMoE's exact-k tables per (domain, MoE layer) from the ExactKSums the
// scoring pass filled (docs/atlas-format.md, "ProbMoE exact-k tables"; docs/methods.md, "Exact-k
// tables in the atlas"). Additive sums per domain, then means per domain and pooled.
#include "metrics/scores.h"

#include <nlohmann/json.hpp>

namespace moeatlas {

std::string probmoeParamsJson(const ResolvedParams& p, int topK)
{
    nlohmann::ordered_json j;
    j["k"] = topK;
    j["band"] = { p.bandMin, p.bandMax };
    j["p"] = "sigmoid(raw router logit)";
    j["distribution"] = "independent Bernoulli(p_i) conditioned on exactly k experts (marginals, top-k set) or on "
                        "the cardinality lying in the band (cardinality)";
    j["kstar"] = "clamp(#positive logits, band)";
    j["entropy_unit"] = "nats";
    j["reference"] = "ProbMoE, arXiv 2606.01509";
    return j.dump();
}

AtlasResults probmoeResults(const ScoreAccumulator& acc, const std::string& inputsHash)
{
    const size_t numD = static_cast<size_t>(acc.numDomains), numL = static_cast<size_t>(acc.numLayers);
    const size_t numE = static_cast<size_t>(acc.numExperts), bins = static_cast<size_t>(acc.bandBins());
    const size_t rows = numD + 1; // domains, then pooled

    // Per (domain, layer) sums, and the same with a pooled row D (sums over domains) appended.
    std::vector<double> tokens(numD * numL), logSpace(numD * numL), entropy(numD * numL), kStar(numD * numL),
        topkProb(numD * numL), topkLogProb(numD * numL), marginal(numD * numL * numE), cardinality(numD * numL * bins);
    for (size_t i = 0; i < numD * numL; ++i) {
        const ExactKSums& s = acc.probmoe[i];
        tokens[i] = s.tokens;
        logSpace[i] = s.logSpaceTokens;
        entropy[i] = s.entropy;
        kStar[i] = s.kStar;
        topkProb[i] = s.subsetProb;
        topkLogProb[i] = s.subsetLogProb;
        std::copy(s.marginal.begin(), s.marginal.end(), marginal.begin() + static_cast<std::ptrdiff_t>(i * numE));
        std::copy(
            s.cardinality.begin(), s.cardinality.end(), cardinality.begin() + static_cast<std::ptrdiff_t>(i * bins));
    }
    // Means sums / tokens per row of [D+1, L, width]; 0 where a row has no tokens.
    auto means = [&](const std::vector<double>& sums, size_t width) {
        std::vector<double> out(rows * numL * width, 0.0);
        for (size_t l = 0; l < numL; ++l) {
            double pooledTokens = 0.0;
            for (size_t d = 0; d < numD; ++d)
                pooledTokens += tokens[d * numL + l];
            for (size_t w = 0; w < width; ++w) {
                double pooled = 0.0;
                for (size_t d = 0; d < numD; ++d) {
                    const double n = tokens[d * numL + l], v = sums[(d * numL + l) * width + w];
                    out[(d * numL + l) * width + w] = n > 0 ? v / n : 0.0;
                    pooled += v;
                }
                out[(numD * numL + l) * width + w] = pooledTokens > 0 ? pooled / pooledTokens : 0.0;
            }
        }
        return out;
    };

    AtlasResults r;
    r.paramsJson = probmoeParamsJson(acc.params, acc.topK);
    r.inputsHash = inputsHash;
    const uint64_t uD = numD, uL = numL, uE = numE, uB = bins, uR = rows;
    // Derived means (row D = all domains pooled, token-weighted)...
    r.arrays.push_back({ "marginal_mean", { uR, uL, uE }, means(marginal, numE) });
    r.arrays.push_back({ "topk_prob", { uR, uL }, means(topkProb, 1) });
    r.arrays.push_back({ "topk_log_prob", { uR, uL }, means(topkLogProb, 1) });
    r.arrays.push_back({ "cardinality", { uR, uL, uB }, means(cardinality, bins) });
    r.arrays.push_back({ "cardinality_entropy", { uR, uL }, means(entropy, 1) });
    r.arrays.push_back({ "kstar_mean", { uR, uL }, means(kStar, 1) });
    // ...and the additive sums they come from (merge adds these exactly).
    r.arrays.push_back({ "token_counts", { uD, uL }, std::move(tokens) });
    r.arrays.push_back({ "log_space_tokens", { uD, uL }, std::move(logSpace) });
    r.arrays.push_back({ "marginal_sums", { uD, uL, uE }, std::move(marginal) });
    r.arrays.push_back({ "topk_prob_sums", { uD, uL }, std::move(topkProb) });
    r.arrays.push_back({ "topk_log_prob_sums", { uD, uL }, std::move(topkLogProb) });
    r.arrays.push_back({ "cardinality_sums", { uD, uL, uB }, std::move(cardinality) });
    r.arrays.push_back({ "cardinality_entropy_sums", { uD, uL }, std::move(entropy) });
    r.arrays.push_back({ "kstar_sums", { uD, uL }, std::move(kStar) });
    return r;
}

} // namespace moeatlas
