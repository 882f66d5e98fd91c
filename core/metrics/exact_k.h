// ProbMoE's exact-k routing distribution of one token (docs/methods.md, "Exact-k distributions"):
// independent Bernoullis p_i = sigmoid(logit_i) conditioned on exactly k experts chosen.
//
// log Z_c = log P(sum z = c) for c = 0..maxK comes from one forward dynamic program over the
// elementary symmetric polynomials of the odds w_i = exp(logit_i) (O(E maxK)); the marginals
// mu_i = P(z_i = 1 | sum z = k) from a forward-backward pass over the same table, subsets are
// drawn exactly by walking it backwards. The DP runs in double in linear space with each token's
// odds scaled by its largest one, and falls back to the same recursion in log space (METHODS.md's,
// less log Q; long double) when a polynomial of the band leaves double's normal range (logits spread over more
// than ~460/k nats): both sum non-negative terms, so neither cancels. Plain C++, no LibTorch.
//
// An ExactK holds the scratch of one token and is reused across tokens (not thread-safe: one
// per thread). exactKTables runs a whole [T, E] block of logits on several threads.
#pragma once

#include "util/splitmix64.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moeatlas {

struct ExactKParams {
    int kMin = 0; // band [kMin, kMax] of log Z, the cardinality distribution and k*:
    int kMax = 0; //   1 <= kMin <= kMax <= E (RequestError "band")
    int k = 0; // the k of marginals, subset probabilities and samples, 1 <= k <= E (RequestError "k")
    int bins() const { return kMax - kMin + 1; }
};

// Throws InputError naming "logits" when numExperts < 1, RequestError("band") or RequestError("k")
// for the ranges above; messages name the values and the expected range, no flag.
void checkExactKParams(const ExactKParams& params, int numExperts);

// ProbMoE's dynamic-k rule: the argmax over c in [kMin, kMax] of the prefix sums of the logits sorted
// descending, which is the number of positive logits clamped to the band (the first maximum on ties:
// a zero logit adds nothing). The band is not checked here.
int dynamicK(const float* logits, int numExperts, int kMin, int kMax);

class ExactK {
public:
    enum class Path {
        Auto, // scaled linear space, log space for the tokens that leave its range
        LogSpace // always the long-double log-space recursion (a reference; ~80x slower)
    };

    // Throws as checkExactKParams.
    ExactK(int numExperts, const ExactKParams& params, Path path = Path::Auto);

    int numExperts() const { return m_e; }
    const ExactKParams& params() const { return m_params; }
    int maxK() const { return m_maxK; } // depth of the DP: max(kMax, k)

    // One token's numExperts logits: the forward DP. A NaN or infinite logit throws InputError
    // naming "logits" and the expert. Everything below refers to the token loaded last.
    void load(const float* logits);
    void load(const double* logits);
    bool usedLogSpace() const { return m_logSpace; }

    // log P(sum z = c) under the product of Bernoullis, 0 <= c <= maxK().
    double logZ(int c) const;
    // mu_i = P(z_i = 1 | sum z = k), numExperts values in [0, 1] summing to k.
    void marginals(double* mu);
    // log P(S | sum z = |S|) of `count` distinct experts (0 <= count <= maxK()); an id outside
    // [0, E) or a repeated one throws InputError naming "subset".
    double subsetLogProb(const int32_t* ids, int count);
    // An exact draw of k experts from P(S | sum z = k), ids ascending.
    void sample(SplitMix64& rng, int32_t* ids) const;
    // P(|S| = c) for c in the band, renormalised over the band (bins() values), and its entropy (nats).
    void cardinality(double* probs) const;
    double cardinalityEntropy() const;
    int kStar() const { return m_kStar; } // dynamicK of the token

private:
    template <typename T> void loadImpl(const T* logits);
    void forwardLinear();
    void forwardLog();
    std::size_t at(int i) const { return static_cast<std::size_t>(i) * static_cast<std::size_t>(m_maxK + 1); }
    double* row(int i) { return m_table.data() + at(i); }
    const double* row(int i) const { return m_table.data() + at(i); }
    long double* logRow(int i) { return m_tableLog.data() + at(i); }
    const long double* logRow(int i) const { return m_tableLog.data() + at(i); }

    int m_e;
    ExactKParams m_params;
    int m_maxK;
    Path m_path;
    bool m_logSpace = false;
    int m_kStar = 0;
    double m_shift = 0.0; // linear path: the largest logit m; odds are exp(theta - m)
    double m_logQ = 0.0; // sum_i log(1 - p_i)
    std::vector<double> m_theta; // [E]
    std::vector<double> m_w; // [E] scaled odds w' = exp(theta - m); log path: theta - m
    // Forward table [E + 1, maxK + 1]: row i holds e_c of the first i experts' scaled odds.
    std::vector<double> m_table;
    std::vector<double> m_logEk; // [maxK + 1] log e_c(exp theta) = log Z_c - log Q
    std::vector<long double> m_tableLog; // the log path's table, in long double (allocated on first use)
    std::vector<double> m_back; // [k] backward row of the marginals
    std::vector<long double> m_backLog;
    std::vector<unsigned char> m_seen; // [E] subset check
};

// Per-token outputs of exactKTables; each pointer may be null (not computed). B = params.bins().
struct ExactKOutputs {
    double* logZ = nullptr; // [T, B] log Z_c, c = kMin..kMax
    double* marginals = nullptr; // [T, E] for params.k
    double* cardinality = nullptr; // [T, B]
    double* entropy = nullptr; // [T] of the cardinality distribution
    int32_t* kStar = nullptr; // [T]
    double* subsetLogProb = nullptr; // [T] log-probability of each token's row of `subsets` [T, k]
    int64_t logSpaceTokens = 0; // set: tokens that needed the log-space path
};

// Fills `out` for T tokens of row-major logits [T, E] (and their recorded top-k ids [T, k] when
// out.subsetLogProb is set), in token blocks on `threads` threads (1 = the calling thread only).
// Results do not depend on the thread count.
void exactKTables(const float* logits, int64_t numTokens, int numExperts, const ExactKParams& params,
    const int32_t* subsets, ExactKOutputs& out, int threads = 1);

// Sums over tokens (fp64; accumulators of token blocks add): means are sums / tokens.
struct ExactKSums {
    double tokens = 0.0;
    std::vector<double> marginal; // [E] sum of mu_i: mean = a soft utilisation per expert
    std::vector<double> cardinality; // [B]
    double entropy = 0.0;
    double kStar = 0.0;
    double subsetProb = 0.0; // of the recorded top-k sets
    double subsetLogProb = 0.0;
    double logSpaceTokens = 0.0; // tokens that needed the log-space path

    void reset(int numExperts, int bins);
    ExactKSums& operator+=(const ExactKSums& other);
    // Adds T tokens through `solver` (subsets [T, k] may be null: the subset sums stay 0).
    void add(ExactK& solver, const float* logits, int64_t numTokens, const int32_t* subsets);
};

} // namespace moeatlas
