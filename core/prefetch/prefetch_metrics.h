// Prefetch hit rates (docs/methods.md, "Expert prefetching"): how many of the experts a token is routed
// to at MoE layer l + d a predictor named at layer l, per predictor, source layer, lookahead and domain,
// on the held-out tokens and on all tokens. Plain C++; the table goes to the atlas as
// /prefetch_hit_rates (docs/atlas-format.md) and to a CSV.
#pragma once

#include "prefetch/prefetch_data.h"
#include "util/progress.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moeatlas {

// The tokens a hit rate is taken over: those of held-out sequences (trainSequences = 0), or all.
enum class HitSplit { Heldout = 0, All = 1 };
inline constexpr int kHitSplits = 2;
std::string hitSplitName(HitSplit s); // "heldout", "all"

// Hit rates of P predictors x S (= every MoE layer as the source) x A lookaheads x D domains x 2 splits.
// For token x, source l, lookahead d: R = the k experts x is routed to at MoE layer l + d, P_B = the
// first B of the prediction; hits = |P_k ∩ R|, recall hits = |P_B ∩ R|. Hit rate = Σ hits / (k · tokens),
// recall at B = Σ recall hits / (k · tokens), over the tokens of a domain and split; the pooled row
// (domain index D) sums over domains. A (source, lookahead) pair with no MoE layer l + d is invalid.
struct PrefetchHitTable {
    std::vector<Predictor> predictors; // [P], row order
    std::vector<std::string> domains; // [D]
    std::vector<int> layers; // [S]: decoder index of each source MoE layer (all MoE layers)
    std::vector<int> lookaheads; // [A]
    int topK = 0;
    int numExperts = 0;
    int budget = 0; // B, experts prefetched per token
    std::vector<int64_t> tokenCounts; // [2, D]: tokens per split and domain
    std::vector<int64_t> hitSums; // [P, 2, D, S, A]: Σ |P_k ∩ R| (0 where invalid)
    std::vector<int64_t> recallSums; // [P, 2, D, S, A]: Σ |P_B ∩ R|

    std::size_t numDomains() const { return domains.size(); }
    // Whether MoE layer index `layer` + lookaheads[a] exists.
    bool valid(std::size_t layer, std::size_t a) const;
    // Tokens of `domain` (D: all domains) in `split`.
    int64_t tokens(HitSplit split, std::size_t domain) const;
    // Hit rate and recall at B of predictor p (index into predictors); domain D is the pooled row. NaN where
    // invalid or without tokens.
    double hitRate(std::size_t p, HitSplit split, std::size_t domain, std::size_t layer, std::size_t a) const;
    double recall(std::size_t p, HitSplit split, std::size_t domain, std::size_t layer, std::size_t a) const;
    // [S * A] row-major (layer, lookahead): one heatmap of hit rates (or recalls), NaN where invalid.
    std::vector<double> heatmap(std::size_t p, HitSplit split, std::size_t domain, bool recallAtBudget = false) const;
    // Mean over the valid source layers of lookahead a (every layer sees the same tokens, so this is also
    // the token-weighted mean); NaN when none is valid or there are no tokens.
    double meanOverLayers(
        std::size_t p, HitSplit split, std::size_t domain, std::size_t a, bool recallAtBudget = false) const;
    // Index of a predictor in `predictors`; -1 when absent.
    int indexOf(Predictor p) const;

private:
    std::size_t at(std::size_t p, HitSplit split, std::size_t domain, std::size_t layer, std::size_t a) const;
    double ratio(const std::vector<int64_t>& sums, std::size_t p, HitSplit split, std::size_t domain, std::size_t layer,
        std::size_t a) const;
};

// The predictions of one predictor at source MoE layer index `source`, lookahead d, budget B.
using PredictionFn = std::function<PredictionSet(Predictor, int source, int lookahead, int budget)>;

// Fills the table for every predictor, every source layer with a layer l + d, every lookahead; each
// (predictor, source, lookahead) asks `predict` once. Progress: one unit per such prediction; a stop
// throws Cancelled. Throws Error when a prediction set has the wrong shape.
PrefetchHitTable computeHitTable(const RoutingTrace& trace, const std::vector<Predictor>& predictors,
    const std::vector<int>& lookaheads, int budget, const PredictionFn& predict, const ProgressFn& progress = {},
    const StopToken* stop = nullptr);

// One row per predictor, source layer, lookahead, domain (then "pooled") and split, valid pairs only:
// predictor,layer,lookahead,target_layer,domain,split,tokens,hit_rate,recall,budget,k.
std::string hitTableCsv(const PrefetchHitTable& table);

} // namespace moeatlas
