// Exact-k DP of ProbMoE. With w_i = p_i / (1 - p_i) = exp(theta_i) and Q = prod (1 - p_i),
//   P(S) = Q prod_{i in S} w_i,   Z_c = P(sum z = c) = Q e_c(w),
// e_c the elementary symmetric polynomial. The linear path scales the odds by exp(-m), m the largest
// logit (w' <= 1, so e_c(w') <= C(E, c): no overflow for any router we know), and runs
//   A[i + 1][c] = A[i][c] + w'_i A[i][c - 1];   log e_c(w) = c m + log A[E][c].
// Only additions of non-negative terms: relative error of a few (E + c) ulp. If some e_c of the band
// is below kTiny (odds spread over more than ~460/c nats) the token is redone in log space over the
// same scaled odds, in long double (forwardLog). Terms that
// underflow inside the linear table are below ~1e-300 next to a result above kTiny times at most
// C(E, c) <= 1e30 for E <= 384: their loss is invisible in double.
#include "metrics/exact_k.h"

#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <string>
#include <thread>

namespace moeatlas {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kTiny = 1e-200; // smallest e_c(w') the linear path accepts

constexpr long double kNegInfL = -std::numeric_limits<long double>::infinity();

long double logAddExp(long double a, long double b)
{
    const long double hi = std::max(a, b), lo = std::min(a, b);
    if (lo == kNegInfL)
        return hi;
    return hi + std::log1p(std::exp(lo - hi));
}

} // namespace

void checkExactKParams(const ExactKParams& p, int numExperts)
{
    if (numExperts < 1)
        throw InputError("logits: a token needs at least one expert's logit (got " + std::to_string(numExperts) + ")");
    const std::string e = std::to_string(numExperts);
    if (p.kMin < 1 || p.kMax > numExperts || p.kMin > p.kMax)
        throw RequestError("band",
            "band " + std::to_string(p.kMin) + ":" + std::to_string(p.kMax) + " must satisfy 1 <= min <= max <= " + e
                + " (the number of experts)");
    if (p.k < 1 || p.k > numExperts)
        throw RequestError("k", "k = " + std::to_string(p.k) + " is outside [1, " + e + "] (the number of experts)");
}

int dynamicK(const float* logits, int numExperts, int kMin, int kMax)
{
    int positive = 0;
    for (int i = 0; i < numExperts; ++i)
        positive += logits[i] > 0.0f;
    return std::clamp(positive, kMin, kMax);
}

ExactK::ExactK(int numExperts, const ExactKParams& params, Path path)
    : m_e(numExperts)
    , m_params(params)
    , m_maxK(std::max(params.kMax, params.k))
    , m_path(path)
{
    checkExactKParams(params, numExperts);
    const size_t e = static_cast<size_t>(numExperts);
    m_theta.resize(e);
    m_w.resize(e);
    m_seen.assign(e, 0);
    m_table.resize((e + 1) * (static_cast<size_t>(m_maxK) + 1));
    m_logEk.resize(static_cast<size_t>(m_maxK) + 1);
    m_back.resize(static_cast<size_t>(params.k));
    m_backLog.resize(static_cast<size_t>(params.k));
}

void ExactK::load(const float* logits)
{
    loadImpl(logits);
}
void ExactK::load(const double* logits)
{
    loadImpl(logits);
}

template <typename T> void ExactK::loadImpl(const T* logits)
{
    double m = kNegInf;
    int positive = 0;
    for (int i = 0; i < m_e; ++i) {
        const double t = static_cast<double>(logits[i]);
        if (!std::isfinite(t))
            throw InputError("logits: the logit of expert " + std::to_string(i) + " is " + std::to_string(t)
                + " (expected a finite value)");
        m_theta[static_cast<size_t>(i)] = t;
        m = std::max(m, t);
        positive += t > 0.0;
    }
    m_kStar = std::clamp(positive, m_params.kMin, m_params.kMax);
    m_shift = m;
    m_logSpace = m_path == Path::LogSpace;
    forwardLinear(); // log Q and the odds; the table unless the path is log space
    if (m_logSpace)
        forwardLog();
}

void ExactK::forwardLinear()
{
    const int K = m_maxK;
    // log Q = -sum softplus(theta) = -sum max(theta, 0) - log prod (1 + exp(-|theta|)); the product is
    // at most 2^E, folded into the log every 512 experts so it stays finite.
    double positiveSum = 0.0, prod = 1.0, logProd = 0.0;
    for (int i = 0; i < m_e; ++i) {
        const double t = m_theta[static_cast<size_t>(i)];
        positiveSum += std::max(t, 0.0);
        prod *= 1.0 + std::exp(-std::fabs(t));
        if ((i & 511) == 511) {
            logProd += std::log(prod);
            prod = 1.0;
        }
        m_w[static_cast<size_t>(i)] = std::exp(t - m_shift);
    }
    m_logQ = -positiveSum - (logProd + std::log(prod));
    if (m_logSpace)
        return;

    double* a = row(0);
    std::fill(a, a + K + 1, 0.0);
    a[0] = 1.0;
    for (int i = 0; i < m_e; ++i) {
        const double* prev = row(i);
        double* next = row(i + 1);
        const double w = m_w[static_cast<size_t>(i)];
        next[0] = 1.0;
        for (int c = 1; c <= K; ++c)
            next[c] = prev[c] + w * prev[c - 1];
    }
    const double* last = row(m_e);
    for (int c = 0; c <= K; ++c) {
        if (!(last[c] >= kTiny && last[c] <= std::numeric_limits<double>::max())) {
            m_logSpace = true; // out of the linear path's range: forwardLog redoes the token
            return;
        }
        m_logEk[static_cast<size_t>(c)] = c * m_shift + std::log(last[c]);
    }
}

void ExactK::forwardLog()
{
    // The same polynomials in log space: a[i + 1][c] = logaddexp(a[i][c], a[i][c - 1] + log w'_i), which
    // is METHODS.md's recursion over (log p, log(1 - p)) less log Q, so the entries stay within c times
    // the logits' spread of 0 instead of growing like |log Q| (up to E * 60). Still, a log carries an
    // absolute rounding error of u |value|, which exp turns into a relative one: long double's 64-bit
    // significand keeps that below double's own rounding for spreads up to thousands of nats. Only
    // the rare tokens outside the linear range come here.
    const int K = m_maxK;
    m_tableLog.resize(m_table.size());
    for (int i = 0; i < m_e; ++i)
        m_w[static_cast<size_t>(i)] = m_theta[static_cast<size_t>(i)] - m_shift; // log w', exact in double
    long double* a = logRow(0);
    std::fill(a, a + K + 1, kNegInfL);
    a[0] = 0.0L;
    for (int i = 0; i < m_e; ++i) {
        const long double* prev = logRow(i);
        long double* next = logRow(i + 1);
        const long double lw = m_w[static_cast<size_t>(i)];
        next[0] = 0.0L;
        for (int c = 1; c <= K; ++c)
            next[c] = logAddExp(prev[c], prev[c - 1] + lw);
    }
    const long double* last = logRow(m_e);
    for (int c = 0; c <= K; ++c)
        m_logEk[static_cast<size_t>(c)] = static_cast<double>(c * static_cast<long double>(m_shift) + last[c]);
}

double ExactK::logZ(int c) const
{
    if (c < 0 || c > m_maxK)
        throw RequestError(
            "k", "log Z of " + std::to_string(c) + " experts: outside [0, " + std::to_string(m_maxK) + "]");
    return m_logEk[static_cast<size_t>(c)] + m_logQ;
}

void ExactK::marginals(double* mu)
{
    const int k = m_params.k;
    // b[c] = e_c of the experts after i (its log on the log path)
    if (!m_logSpace) {
        double* b = m_back.data();
        // mu_i = w'_i sum_j A[i][j] b[k-1-j] / A[E][k]
        const double inv = 1.0 / row(m_e)[k];
        std::fill(b, b + k, 0.0);
        b[0] = 1.0;
        for (int i = m_e - 1; i >= 0; --i) {
            const double* a = row(i);
            const double w = m_w[static_cast<size_t>(i)];
            double s = 0.0;
            for (int j = 0; j < k; ++j)
                s += a[j] * b[k - 1 - j];
            mu[i] = w * s * inv;
            for (int c = k - 1; c >= 1; --c)
                b[c] += w * b[c - 1];
        }
        return;
    }
    // mu_i = exp(log w'_i + logsumexp_j(a[i][j] + b[k-1-j]) - a[E][k])
    long double* b = m_backLog.data();
    const long double logEk = logRow(m_e)[k];
    std::fill(b, b + k, kNegInfL);
    b[0] = 0.0L;
    for (int i = m_e - 1; i >= 0; --i) {
        const long double* a = logRow(i);
        const long double lw = m_w[static_cast<size_t>(i)];
        long double hi = kNegInfL;
        for (int j = 0; j < k; ++j)
            hi = std::max(hi, a[j] + b[k - 1 - j]);
        long double s = 0.0L;
        if (hi != kNegInfL)
            for (int j = 0; j < k; ++j)
                s += std::exp(a[j] + b[k - 1 - j] - hi);
        mu[i] = hi == kNegInfL ? 0.0 : static_cast<double>(std::exp(lw + hi + std::log(s) - logEk));
        for (int c = k - 1; c >= 1; --c)
            b[c] = logAddExp(b[c], b[c - 1] + lw);
    }
}

double ExactK::subsetLogProb(const int32_t* ids, int count)
{
    if (count < 0 || count > m_maxK)
        throw RequestError(
            "k", "a subset of " + std::to_string(count) + " experts: outside [0, " + std::to_string(m_maxK) + "]");
    // log P(S | |S|) = sum_{i in S} log w_i - log e_|S|(w), since P(S) = Q prod_{i in S} w_i.
    double s = 0.0;
    int bad = -1;
    for (int n = 0; n < count; ++n) {
        const int32_t id = ids[n];
        if (id < 0 || id >= m_e || m_seen[static_cast<size_t>(id)]) {
            bad = n;
            break;
        }
        m_seen[static_cast<size_t>(id)] = 1;
        s += m_theta[static_cast<size_t>(id)];
    }
    for (int n = 0; n < (bad < 0 ? count : bad); ++n)
        m_seen[static_cast<size_t>(ids[n])] = 0;
    if (bad >= 0)
        throw InputError("subset: expert " + std::to_string(ids[bad])
            + (ids[bad] < 0 || ids[bad] >= m_e ? " is outside [0, " + std::to_string(m_e) + ")" : " appears twice"));
    return s - m_logEk[static_cast<size_t>(count)];
}

void ExactK::sample(SplitMix64& rng, int32_t* ids) const
{
    // Walk i = E-1..0 with j experts still to pick: P(z_i = 1 | j left among the first i + 1)
    // = w_i e_{j-1}(first i) / e_j(first i + 1). When i < j every remaining expert must be taken.
    int j = m_params.k;
    for (int i = m_e - 1; i >= 0 && j > 0; --i) {
        const double u = rng.uniform();
        bool take;
        if (!m_logSpace)
            take = i < j || u * row(i + 1)[j] < m_w[static_cast<size_t>(i)] * row(i)[j - 1];
        else // m_w holds log w'
            take = i < j
                || std::log(static_cast<long double>(u)) + logRow(i + 1)[j]
                    < m_w[static_cast<size_t>(i)] + logRow(i)[j - 1];
        if (take)
            ids[--j] = i;
    }
}

void ExactK::cardinality(double* probs) const
{
    const int kMin = m_params.kMin, bins = m_params.bins();
    double hi = kNegInf;
    for (int b = 0; b < bins; ++b)
        hi = std::max(hi, m_logEk[static_cast<size_t>(kMin) + static_cast<size_t>(b)]);
    double sum = 0.0;
    for (int b = 0; b < bins; ++b) {
        probs[b] = std::exp(m_logEk[static_cast<size_t>(kMin) + static_cast<size_t>(b)] - hi);
        sum += probs[b];
    }
    for (int b = 0; b < bins; ++b)
        probs[b] /= sum;
}

double ExactK::cardinalityEntropy() const
{
    // H = -sum P_c log P_c with log P_c = L_c - LSE (L_c = log e_c; Q cancels).
    const int kMin = m_params.kMin, bins = m_params.bins();
    double hi = kNegInf;
    for (int b = 0; b < bins; ++b)
        hi = std::max(hi, m_logEk[static_cast<size_t>(kMin) + static_cast<size_t>(b)]);
    double sum = 0.0, weighted = 0.0;
    for (int b = 0; b < bins; ++b) {
        const double d = m_logEk[static_cast<size_t>(kMin) + static_cast<size_t>(b)] - hi;
        const double e = std::exp(d);
        sum += e;
        weighted += e * d;
    }
    return std::log(sum) - weighted / sum;
}

void ExactKSums::reset(int numExperts, int bins)
{
    tokens = entropy = kStar = subsetProb = subsetLogProb = logSpaceTokens = 0.0;
    marginal.assign(static_cast<size_t>(numExperts), 0.0);
    cardinality.assign(static_cast<size_t>(bins), 0.0);
}

ExactKSums& ExactKSums::operator+=(const ExactKSums& o)
{
    if (o.marginal.size() != marginal.size() || o.cardinality.size() != cardinality.size())
        throw InputError("cannot add exact-k sums of different expert counts or bands");
    tokens += o.tokens;
    entropy += o.entropy;
    kStar += o.kStar;
    subsetProb += o.subsetProb;
    subsetLogProb += o.subsetLogProb;
    logSpaceTokens += o.logSpaceTokens;
    for (size_t i = 0; i < marginal.size(); ++i)
        marginal[i] += o.marginal[i];
    for (size_t i = 0; i < cardinality.size(); ++i)
        cardinality[i] += o.cardinality[i];
    return *this;
}

void ExactKSums::add(ExactK& solver, const float* logits, int64_t numTokens, const int32_t* subsets)
{
    const int e = solver.numExperts(), k = solver.params().k, bins = solver.params().bins();
    if (marginal.size() != static_cast<size_t>(e) || cardinality.size() != static_cast<size_t>(bins))
        reset(e, bins);
    std::vector<double> mu(static_cast<size_t>(e)), card(static_cast<size_t>(bins));
    for (int64_t t = 0; t < numTokens; ++t) {
        solver.load(logits + t * e);
        logSpaceTokens += solver.usedLogSpace() ? 1.0 : 0.0;
        solver.marginals(mu.data());
        solver.cardinality(card.data());
        for (int i = 0; i < e; ++i)
            marginal[static_cast<size_t>(i)] += mu[static_cast<size_t>(i)];
        for (int b = 0; b < bins; ++b)
            cardinality[static_cast<size_t>(b)] += card[static_cast<size_t>(b)];
        entropy += solver.cardinalityEntropy();
        kStar += solver.kStar();
        if (subsets != nullptr) {
            const double lp = solver.subsetLogProb(subsets + t * k, k);
            subsetLogProb += lp;
            subsetProb += std::exp(lp);
        }
        tokens += 1.0;
    }
}

void exactKTables(const float* logits, int64_t numTokens, int numExperts, const ExactKParams& params,
    const int32_t* subsets, ExactKOutputs& out, int threads)
{
    checkExactKParams(params, numExperts);
    const int64_t e = numExperts, k = params.k, bins = params.bins();
    std::exception_ptr failure;
    std::mutex failureMutex;
    int64_t logSpace = 0;
    // Contiguous token ranges, one per thread: each token's values depend on its logits alone.
    auto work = [&](int64_t begin, int64_t end) {
        try {
            ExactK solver(numExperts, params);
            int64_t fallback = 0;
            for (int64_t t = begin; t < end; ++t) {
                solver.load(logits + t * e);
                fallback += solver.usedLogSpace();
                if (out.logZ != nullptr)
                    for (int64_t b = 0; b < bins; ++b)
                        out.logZ[t * bins + b] = solver.logZ(params.kMin + static_cast<int>(b));
                if (out.marginals != nullptr)
                    solver.marginals(out.marginals + t * e);
                if (out.cardinality != nullptr)
                    solver.cardinality(out.cardinality + t * bins);
                if (out.entropy != nullptr)
                    out.entropy[t] = solver.cardinalityEntropy();
                if (out.kStar != nullptr)
                    out.kStar[t] = solver.kStar();
                if (out.subsetLogProb != nullptr)
                    out.subsetLogProb[t] = solver.subsetLogProb(subsets + t * k, params.k);
            }
            std::lock_guard lock(failureMutex);
            logSpace += fallback;
        } catch (...) {
            std::lock_guard lock(failureMutex);
            if (!failure)
                failure = std::current_exception();
        }
    };
    const int n = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(1, numTokens)));
    std::vector<std::thread> pool;
    const int64_t per = numTokens / n, extra = numTokens % n;
    int64_t begin = 0;
    for (int i = 0; i < n; ++i) {
        const int64_t end = begin + per + (i < extra ? 1 : 0);
        if (i + 1 < n)
            pool.emplace_back(work, begin, end);
        else
            work(begin, end);
        begin = end;
    }
    for (std::thread& t : pool)
        t.join();
    if (failure)
        std::rethrow_exception(failure);
    out.logSpaceTokens = logSpace;
}

} // namespace moeatlas
