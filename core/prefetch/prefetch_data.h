// Expert prefetching (docs/methods.md "Expert prefetching"; arXiv 2603.19289): the routing of a run
// and the predictions of the next MoE layers' experts, as the hit-rate tables (prefetch_metrics.h)
// and the offload simulator (sim/) read them. Plain C++: no HDF5, no LibTorch. The atlas adaptor
// (prefetch_atlas.h) fills these from /layers and /prefetch (docs/atlas-format.md).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moeatlas {

// Who predicts the experts of MoE layer i + d from MoE layer i (d: lookahead in MoE layers).
enum class Predictor {
    NextRouter, // layer i+d's router on layer i's post-attention residual stream, through i+d's pre-MoE norm
    QuasiHidden, // the same on h + sum_j w_j DV_i[e_j] (default vectors of layer i's routed experts)
    Linear, // a linear estimator per (layer, lookahead) trained on the training split
    Mlp, // a small MLP estimator, likewise
    Frequency, // the experts of layer i+d most often routed to on the training split, one list for all tokens
    Previous, // the experts the same sequence's previous token was routed to at layer i+d
    Oracle, // the experts the token is routed to at layer i+d (hit rate 1 by construction)
};

inline constexpr Predictor kAllPredictors[] = { Predictor::NextRouter, Predictor::QuasiHidden, Predictor::Linear,
    Predictor::Mlp, Predictor::Frequency, Predictor::Previous, Predictor::Oracle };

// "next-router", "quasi-hidden", "linear", "mlp", "frequency", "previous", "oracle".
std::string predictorName(Predictor p);
// Parses one of the names above; RequestError(field) naming the text and listing the names.
Predictor parsePredictor(std::string_view text, const std::string& field);
// Recorded by the engine at capture (`capture --prefetch`) and stored under /prefetch; the others
// are derived from the recorded routing when asked for.
bool isRecorded(Predictor p);

// The routing of a run: for every MoE layer (model order) the experts each token was routed to.
struct RoutingTrace {
    int numExperts = 0;
    int topK = 0;
    std::vector<int> moeLayers; // decoder layer index of each MoE layer
    std::vector<int64_t> seqOffsets; // [S+1]: sequence s is tokens [seqOffsets[s], seqOffsets[s+1])
    std::vector<int16_t> domainIds; // [T]
    std::vector<std::string> domainNames; // [D]
    std::vector<std::vector<int32_t>> routed; // [L_moe][T * topK], the model's slot order
    // [S]: 1 = training sequence (learned estimators, default vectors, the frequency baseline are fitted
    // on these), 0 = held-out. Hit rates are reported on the held-out tokens and on all tokens.
    std::vector<uint8_t> trainSequences;

    int64_t numTokens() const { return static_cast<int64_t>(domainIds.size()); }
    int numMoeLayers() const { return static_cast<int>(moeLayers.size()); }
};

// The predictions of one predictor for source MoE layer `source` (index into moeLayers) and lookahead
// d: for each token the `budget` experts of MoE layer source + d it would prefetch, best first
// ([T, budget], ids in [0, E), distinct within a row). The first k of a row are its top-k prediction.
struct PredictionSet {
    Predictor predictor = Predictor::Oracle;
    int source = 0;
    int lookahead = 1;
    int budget = 0;
    std::vector<int32_t> ids; // [T * budget]
};

// The training/held-out split of a run's sequences: in each domain, its sequences in a seeded
// Fisher-Yates order (SplitMix64(seed)), the first round(fraction * n) train (1), the rest are held out (0);
// a domain of two or more sequences keeps at least one of each. fraction in (0, 1) (RequestError
// "trainFraction" otherwise). Sequences never mix domains (the domain of a sequence is that of its first token).
std::vector<uint8_t> splitSequences(
    std::span<const int64_t> seqOffsets, std::span<const int16_t> domainIds, double fraction, uint64_t seed);

} // namespace moeatlas
