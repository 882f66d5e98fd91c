// ProbMoE's exact-k distribution (metrics/exact_k.h) against references written here: enumeration of
// every subset in long double (E <= 12), a long-double DP over the unscaled odds exp(theta) for
// E = 384 (long double's range holds e^+-1000), METHODS.md's unit values, a chi-square test of the
// sampler, a literal prefix-sum argmax for k*, and the refusals of bad input.
//
// Error model: kind 1 (docs/testing.md): double arithmetic against exact or long-double values; every
// sum is of non-negative terms, so the bound is a few ulp times the number of terms: 1e-12.
#include "metrics/exact_k.h"
#include "test_io.h"
#include "util/error.h"

#include <QTest>

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <vector>

using namespace moeatlas;
using namespace moeatlas::test;

Q_DECLARE_METATYPE(ExactK::Path)

namespace {

using Logits = std::vector<double>;

// Every subset of E <= 12 experts with its probability under the product of Bernoullis, long double.
struct Enumeration {
    int e = 0;
    std::vector<long double> prob; // [2^E] P(S), S as a bit mask
    long double z(int c) const
    {
        long double s = 0;
        for (size_t m = 0; m < prob.size(); ++m)
            if (std::popcount(m) == c)
                s += prob[m];
        return s;
    }
    long double marginal(int i, int c) const
    {
        long double s = 0;
        for (size_t m = 0; m < prob.size(); ++m)
            if (std::popcount(m) == c && (m >> i & 1u))
                s += prob[m];
        return s / z(c);
    }
};

Enumeration enumerate(const Logits& theta)
{
    Enumeration r;
    r.e = static_cast<int>(theta.size());
    r.prob.assign(size_t { 1 } << r.e, 1.0L);
    for (size_t m = 0; m < r.prob.size(); ++m)
        for (int i = 0; i < r.e; ++i) {
            const long double t = theta[static_cast<size_t>(i)];
            // p and 1 - p each from its own formula: no cancellation in 1 - p.
            r.prob[m] *= (m >> i & 1u) ? 1.0L / (1.0L + std::exp(-t)) : 1.0L / (1.0L + std::exp(t));
        }
    return r;
}

// Long-double reference for large E: e_c(exp theta) unscaled, log Q by softplus, marginals by
// leaving each expert out of the DP (O(E^2 k)).
struct LongDoubleRef {
    std::vector<long double> logZ; // [0, K]
    std::vector<long double> mu; // for k
};

std::vector<long double> symmetric(const Logits& theta, int kMax, int skip)
{
    std::vector<long double> e(static_cast<size_t>(kMax + 1), 0.0L);
    e[0] = 1.0L;
    for (size_t i = 0; i < theta.size(); ++i) {
        if (static_cast<int>(i) == skip)
            continue;
        const long double w = std::exp(static_cast<long double>(theta[i]));
        for (int c = kMax; c >= 1; --c)
            e[static_cast<size_t>(c)] += w * e[static_cast<size_t>(c - 1)];
    }
    return e;
}

LongDoubleRef longDoubleRef(const Logits& theta, int kMax, int k)
{
    LongDoubleRef r;
    long double logQ = 0;
    for (double t : theta)
        logQ -= std::max<long double>(t, 0) + std::log1p(std::exp(-std::fabs(static_cast<long double>(t))));
    const std::vector<long double> e = symmetric(theta, std::max(kMax, k), -1);
    for (int c = 0; c <= kMax; ++c)
        r.logZ.push_back(std::log(e[static_cast<size_t>(c)]) + logQ);
    for (size_t i = 0; i < theta.size(); ++i) {
        const std::vector<long double> without = symmetric(theta, k - 1, static_cast<int>(i));
        r.mu.push_back(std::exp(static_cast<long double>(theta[i])) * without[static_cast<size_t>(k - 1)]
            / e[static_cast<size_t>(k)]);
    }
    return r;
}

Logits uniformLogits(int e, double lo, double hi, uint64_t seed)
{
    SplitMix64 rng(seed);
    Logits v(static_cast<size_t>(e));
    for (double& x : v)
        x = lo + (hi - lo) * rng.uniform();
    return v;
}

// Approximately normal (sum of 4 uniforms), scaled: the logits of a trained router.
Logits routerLogits(int e, double scale, uint64_t seed)
{
    SplitMix64 rng(seed);
    Logits v(static_cast<size_t>(e));
    for (double& x : v)
        x = scale * (rng.uniform() + rng.uniform() + rng.uniform() + rng.uniform() - 2.0) * std::sqrt(3.0);
    return v;
}

double sum(const std::vector<double>& v)
{
    return std::accumulate(v.begin(), v.end(), 0.0);
}

QString fieldNamed(const char* want, const CaughtRequestError& got)
{
    if (got.field != want)
        return QStringLiteral("field \"%1\" instead of \"%2\" (%3)")
            .arg(QString::fromStdString(got.field), QLatin1String(want), got.message);
    if (!got.message.contains(QLatin1String(want)) || got.message.contains(QLatin1String("--")))
        return QStringLiteral("message does not name \"%1\" or names a flag: %2").arg(QLatin1String(want), got.message);
    return {};
}

} // namespace

class TestExactK : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void paperUnitValues_data()
    {
        QTest::addColumn<ExactK::Path>("path");
        QTest::newRow("auto") << ExactK::Path::Auto;
        QTest::newRow("log-space") << ExactK::Path::LogSpace;
    }
    // METHODS.md section 5: p = [0.8, 0.6, 0.4, 0.2], k = 2. By hand, P(S) = prod p_S prod (1-p)_rest:
    // {1,2} .8*.6*.6*.8 = .2304, {1,3} .1024, {1,4} .0384, {2,3} .0384, {2,4} .0144, {3,4} .0064;
    // Z = .4304; mu_1 = (.2304 + .1024 + .0384) / .4304 = .371200/.4304 etc.
    void paperUnitValues()
    {
        QFETCH(ExactK::Path, path);
        const double p[4] = { 0.8, 0.6, 0.4, 0.2 };
        Logits theta;
        for (double x : p)
            theta.push_back(std::log(x / (1.0 - x)));
        ExactK ek(4, { 2, 2, 2 }, path);
        ek.load(theta.data());
        QVERIFY(std::fabs(ek.logZ(2) - -0.843040) < 5e-7); // the paper's 6 decimals
        QVERIFY(std::fabs(ek.logZ(2) - std::log(0.4304)) < 1e-12);
        std::vector<double> mu(4);
        ek.marginals(mu.data());
        const double paperMu[4] = { 0.862454, 0.657993, 0.342007, 0.137546 };
        const double exactMu[4] = { (0.2304 + 0.1024 + 0.0384) / 0.4304, (0.2304 + 0.0384 + 0.0144) / 0.4304,
            (0.1024 + 0.0384 + 0.0064) / 0.4304, (0.0384 + 0.0144 + 0.0064) / 0.4304 };
        for (int i = 0; i < 4; ++i) {
            QVERIFY2(std::fabs(mu[static_cast<size_t>(i)] - paperMu[i]) < 5e-7, qPrintable(QString::number(i)));
            QVERIFY2(std::fabs(mu[static_cast<size_t>(i)] - exactMu[i]) < 1e-12, qPrintable(QString::number(i)));
        }
        struct Pair {
            int32_t a, b;
            double paper, exact;
        };
        const Pair pairs[6] = { { 0, 1, 0.535316, 0.2304 / 0.4304 }, { 0, 2, 0.237918, 0.1024 / 0.4304 },
            { 0, 3, 0.089219, 0.0384 / 0.4304 }, { 1, 2, 0.089219, 0.0384 / 0.4304 },
            { 1, 3, 0.033457, 0.0144 / 0.4304 }, { 2, 3, 0.014870, 0.0064 / 0.4304 } };
        for (const Pair& s : pairs) {
            const int32_t ids[2] = { s.b, s.a }; // order does not matter
            const double got = std::exp(ek.subsetLogProb(ids, 2));
            QVERIFY2(std::fabs(got - s.paper) < 5e-7, qPrintable(QString::number(got, 'g', 12)));
            QVERIFY2(std::fabs(got - s.exact) < 1e-12, qPrintable(QString::number(got, 'g', 12)));
        }
    }

    void bruteForce_data()
    {
        QTest::addColumn<int>("experts");
        QTest::addColumn<int>("kMin");
        QTest::addColumn<int>("kMax");
        QTest::addColumn<int>("k");
        QTest::addColumn<double>("scale");
        QTest::addColumn<ExactK::Path>("path");
        struct Row {
            const char* name;
            int e, kMin, kMax, k;
            double scale;
        };
        const Row rows[]
            = { { "E1 k1", 1, 1, 1, 1, 1.0 }, { "E2 k1..2", 2, 1, 2, 2, 2.0 }, { "E5 k2 band 1..3", 5, 1, 3, 2, 1.5 },
                  { "E8 k3 band 2..4", 8, 2, 4, 3, 2.0 }, { "E8 k8 (all)", 8, 6, 8, 8, 3.0 },
                  { "E12 k1", 12, 1, 2, 1, 1.0 }, { "E12 k4 band 2..4", 12, 2, 4, 4, 2.5 },
                  { "E12 k6 outside band 1..3", 12, 1, 3, 6, 4.0 }, { "E12 k11", 12, 10, 12, 11, 8.0 } };
        for (const Row& r : rows)
            for (auto [suffix, path] :
                { std::pair { " auto", ExactK::Path::Auto }, { " log", ExactK::Path::LogSpace } })
                QTest::newRow((std::string(r.name) + suffix).c_str())
                    << r.e << r.kMin << r.kMax << r.k << r.scale << path;
    }
    // Every k-subset enumerated: log Z_c for c = 0..maxK, marginals, every subset's probability, the
    // cardinality distribution and its entropy. Three tokens per row.
    void bruteForce()
    {
        QFETCH(int, experts);
        QFETCH(int, kMin);
        QFETCH(int, kMax);
        QFETCH(int, k);
        QFETCH(double, scale);
        QFETCH(ExactK::Path, path);
        ExactK ek(experts, { kMin, kMax, k }, path);
        double errZ = 0, errMu = 0, errSubset = 0, errCard = 0;
        for (uint64_t seed = 1; seed <= 3; ++seed) {
            const Logits theta = routerLogits(experts, scale, seed * 7919 + static_cast<uint64_t>(experts));
            const Enumeration en = enumerate(theta);
            ek.load(theta.data());
            for (int c = 0; c <= ek.maxK(); ++c)
                errZ = std::max(errZ, std::fabs(ek.logZ(c) - static_cast<double>(std::log(en.z(c)))));
            std::vector<double> mu(static_cast<size_t>(experts));
            ek.marginals(mu.data());
            for (int i = 0; i < experts; ++i)
                errMu = std::max(errMu, std::fabs(mu[static_cast<size_t>(i)] - static_cast<double>(en.marginal(i, k))));
            QVERIFY(std::fabs(sum(mu) - k) < 1e-12);
            for (size_t m = 0; m < en.prob.size(); ++m) {
                const int c = std::popcount(m);
                if (c > ek.maxK())
                    continue;
                std::vector<int32_t> ids;
                for (int i = 0; i < experts; ++i)
                    if (m >> i & 1u)
                        ids.push_back(i);
                const double want = static_cast<double>(en.prob[m] / en.z(c));
                errSubset = std::max(errSubset, std::fabs(std::exp(ek.subsetLogProb(ids.data(), c)) - want));
            }
            std::vector<double> card(static_cast<size_t>(kMax - kMin + 1));
            ek.cardinality(card.data());
            long double band = 0, entropy = 0;
            for (int c = kMin; c <= kMax; ++c)
                band += en.z(c);
            for (int c = kMin; c <= kMax; ++c) {
                const long double pc = en.z(c) / band;
                entropy -= pc * std::log(pc);
                errCard = std::max(errCard, std::fabs(card[static_cast<size_t>(c - kMin)] - static_cast<double>(pc)));
            }
            errCard = std::max(errCard, std::fabs(ek.cardinalityEntropy() - static_cast<double>(entropy)));
        }
        qInfo("max |error|: log Z %.2e, mu %.2e, subset probability %.2e, cardinality/entropy %.2e", errZ, errMu,
            errSubset, errCard);
        QVERIFY2(errZ <= 1e-12, qPrintable(QString::number(errZ)));
        QVERIFY2(errMu <= 1e-12, qPrintable(QString::number(errMu)));
        QVERIFY2(errSubset <= 1e-12, qPrintable(QString::number(errSubset)));
        QVERIFY2(errCard <= 1e-12, qPrintable(QString::number(errCard)));
    }

    // The sampler's frequencies of the 20 subsets of E = 6, k = 3 over N = 200,000 draws (seed 42) against
    // the enumerated probabilities: Pearson's chi-square with 19 degrees of freedom must stay below
    // 43.820, its 0.999 quantile. The same counts against a token with one logit moved by 0.2 must
    // exceed it (the test can fail).
    void samplingChiSquare_data()
    {
        QTest::addColumn<ExactK::Path>("path");
        QTest::newRow("auto") << ExactK::Path::Auto;
        QTest::newRow("log-space") << ExactK::Path::LogSpace;
    }
    void samplingChiSquare()
    {
        QFETCH(ExactK::Path, path);
        const int e = 6, k = 3, draws = 200000;
        const Logits theta = { 1.2, -0.4, 0.3, 2.0, -1.5, 0.0 };
        ExactK ek(e, { 1, k, k }, path);
        ek.load(theta.data());
        std::map<unsigned, int> counts;
        SplitMix64 rng(42);
        int32_t ids[k];
        for (int n = 0; n < draws; ++n) {
            ek.sample(rng, ids);
            unsigned mask = 0;
            for (int j = 0; j < k; ++j) {
                QVERIFY(ids[j] >= 0 && ids[j] < e && (j == 0 || ids[j] > ids[j - 1]));
                mask |= 1u << ids[j];
            }
            ++counts[mask];
        }
        auto chiSquare = [&](const Logits& expectedTheta) {
            const Enumeration en = enumerate(expectedTheta);
            double chi = 0;
            int cells = 0;
            for (unsigned m = 0; m < (1u << e); ++m) {
                if (std::popcount(m) != k)
                    continue;
                ++cells;
                const double expected = draws * static_cast<double>(en.prob[m] / en.z(k));
                const double d = counts[m] - expected;
                chi += d * d / expected;
            }
            return std::pair { chi, cells };
        };
        const auto [chi, cells] = chiSquare(theta);
        QCOMPARE(cells, 20);
        qInfo("chi-square %.3f (19 degrees of freedom, 0.999 quantile 43.820)", chi);
        QVERIFY2(chi < 43.820, qPrintable(QString::number(chi)));
        Logits moved = theta;
        moved[2] += 0.2;
        const double wrong = chiSquare(moved).first;
        QVERIFY2(wrong > 43.820, qPrintable(QString::number(wrong)));
    }

    void extremeLogits_data()
    {
        QTest::addColumn<Logits>("theta");
        QTest::addColumn<bool>("logSpace"); // whether the linear path must hand the token over
        const int e = 384;
        QTest::newRow("uniform [-60, 60]") << uniformLogits(e, -60, 60, 1) << false;
        QTest::newRow("uniform [-60, 60] seed 2") << uniformLogits(e, -60, 60, 2) << false;
        QTest::newRow("router scale 3") << routerLogits(e, 3.0, 3) << false;
        QTest::newRow("all -60") << Logits(e, -60.0) << false;
        QTest::newRow("all 60") << Logits(e, 60.0) << false;
        Logits one(e, -60.0);
        one[17] = 60.0;
        QTest::newRow("one 60, rest -60") << one << true;
        Logits half(e, -60.0);
        for (int i = 0; i < e; i += 2)
            half[static_cast<size_t>(i)] = 60.0;
        QTest::newRow("half 60, half -60") << half << false;
        Logits few(e, -60.0);
        for (int i = 0; i < 10; ++i)
            few[static_cast<size_t>(i * 37)] = 60.0; // 10 certain experts, 6 more among 374 unlikely ones
        QTest::newRow("10 at 60, rest -60") << few << true;
    }
    // E = 384, k = 16, band 1..16, logits in [-60, 60]: finite, marginals sum to k, and log Z and mu equal
    // the long-double reference. log Z reaches |log Z| ~ 2e4 (log Q sums 384 softplus terms of up to 60),
    // so its bound is relative: 1e-13 |log Z|; mu is absolute.
    void extremeLogits()
    {
        QFETCH(Logits, theta);
        QFETCH(bool, logSpace);
        const int e = 384, k = 16;
        const LongDoubleRef ref = longDoubleRef(theta, k, k);
        for (ExactK::Path path : { ExactK::Path::Auto, ExactK::Path::LogSpace }) {
            ExactK ek(e, { 1, k, k }, path);
            ek.load(theta.data());
            QCOMPARE(ek.usedLogSpace(), path == ExactK::Path::LogSpace || logSpace);
            double errZ = 0, errMu = 0;
            for (int c = 0; c <= k; ++c) {
                const double z = ek.logZ(c);
                QVERIFY(std::isfinite(z));
                const double scale = std::max(1.0, std::fabs(static_cast<double>(ref.logZ[static_cast<size_t>(c)])));
                errZ = std::max(errZ, std::fabs(z - static_cast<double>(ref.logZ[static_cast<size_t>(c)])) / scale);
            }
            std::vector<double> mu(static_cast<size_t>(e));
            ek.marginals(mu.data());
            for (int i = 0; i < e; ++i) {
                QVERIFY(std::isfinite(mu[static_cast<size_t>(i)]) && mu[static_cast<size_t>(i)] >= 0);
                errMu = std::max(
                    errMu, std::fabs(mu[static_cast<size_t>(i)] - static_cast<double>(ref.mu[static_cast<size_t>(i)])));
            }
            std::vector<double> card(static_cast<size_t>(k));
            ek.cardinality(card.data());
            for (double c : card)
                QVERIFY(std::isfinite(c));
            QVERIFY(std::isfinite(ek.cardinalityEntropy()));
            int32_t ids[k];
            SplitMix64 rng(7);
            ek.sample(rng, ids);
            QVERIFY(std::isfinite(ek.subsetLogProb(ids, k)));
            qInfo("%s: log Z relative %.2e, mu %.2e, sum mu - k %.2e", path == ExactK::Path::Auto ? "auto" : "log",
                errZ, errMu, sum(mu) - k);
            QVERIFY2(errZ <= 1e-13, qPrintable(QString::number(errZ)));
            QVERIFY2(errMu <= 1e-12, qPrintable(QString::number(errMu)));
            QVERIFY2(std::fabs(sum(mu) - k) <= 1e-12, qPrintable(QString::number(sum(mu) - k)));
        }
    }

    // Equal logits: by symmetry mu_i = k / E exactly, and every k-subset has probability 1 / C(E, k).
    void equalLogits()
    {
        const int e = 384, k = 16;
        for (double v : { -60.0, -3.0, 0.0, 0.7, 60.0 })
            for (ExactK::Path path : { ExactK::Path::Auto, ExactK::Path::LogSpace }) {
                const Logits theta(e, v);
                ExactK ek(e, { 1, k, k }, path);
                ek.load(theta.data());
                std::vector<double> mu(static_cast<size_t>(e));
                ek.marginals(mu.data());
                double err = 0;
                for (double m : mu)
                    err = std::max(err, std::fabs(m - static_cast<double>(k) / e));
                QVERIFY2(err <= 1e-14, qPrintable(QStringLiteral("logit %1: %2").arg(v).arg(err)));
                std::vector<int32_t> ids(k);
                std::iota(ids.begin(), ids.end(), 100);
                const double logC = std::lgamma(e + 1.0) - std::lgamma(k + 1.0) - std::lgamma(e - k + 1.0);
                QVERIFY(std::fabs(ek.subsetLogProb(ids.data(), k) + logC) <= 1e-12 * logC);
            }
    }

    // Linear path vs log-space path on router-like tokens (E = 64, k = 8, band 6..8).
    void pathsAgree()
    {
        const int e = 64, k = 8;
        ExactK fast(e, { 6, 8, k }), slow(e, { 6, 8, k }, ExactK::Path::LogSpace);
        std::vector<double> muFast(e), muSlow(e);
        double errZ = 0, errMu = 0;
        for (uint64_t seed = 0; seed < 200; ++seed) {
            const Logits theta = routerLogits(e, 0.5 + 0.05 * static_cast<double>(seed), seed);
            fast.load(theta.data());
            slow.load(theta.data());
            QVERIFY(!fast.usedLogSpace());
            for (int c = 0; c <= k; ++c)
                errZ = std::max(errZ, std::fabs(fast.logZ(c) - slow.logZ(c)) / std::max(1.0, std::fabs(slow.logZ(c))));
            fast.marginals(muFast.data());
            slow.marginals(muSlow.data());
            for (int i = 0; i < e; ++i)
                errMu = std::max(errMu, std::fabs(muFast[static_cast<size_t>(i)] - muSlow[static_cast<size_t>(i)]));
        }
        qInfo("linear vs log space: log Z relative %.2e, mu %.2e", errZ, errMu);
        QVERIFY(errZ <= 1e-13);
        QVERIFY(errMu <= 1e-12);
    }

    // k* against the rule as written: sort descending, prefix sums C_c, first argmax over the band.
    // Integer logits in [-3, 3] make zeros and ties common.
    void dynamicKRule()
    {
        SplitMix64 rng(5);
        int checked = 0;
        for (int token = 0; token < 2000; ++token) {
            const int e = 1 + static_cast<int>(rng.below(16));
            std::vector<float> s(static_cast<size_t>(e));
            for (float& x : s)
                x = static_cast<float>(rng.range(-3, 3));
            const int kMin = 1 + static_cast<int>(rng.below(static_cast<uint64_t>(e)));
            const int kMax = kMin + static_cast<int>(rng.below(static_cast<uint64_t>(e - kMin + 1)));
            std::vector<float> sorted = s;
            std::sort(sorted.begin(), sorted.end(), std::greater<>());
            double prefix = 0, best = -1e300;
            int want = 0;
            for (int c = 1; c <= kMax; ++c) {
                prefix += sorted[static_cast<size_t>(c - 1)];
                if (c >= kMin && prefix > best) {
                    best = prefix;
                    want = c;
                }
            }
            QCOMPARE(dynamicK(s.data(), e, kMin, kMax), want);
            ExactK ek(e, { kMin, kMax, kMin });
            ek.load(s.data());
            QCOMPARE(ek.kStar(), want);
            ++checked;
        }
        QCOMPARE(checked, 2000);
    }

    // The batch API equals the per-token calls, whatever the thread count; sums add.
    void tablesAndSums()
    {
        const int e = 16, t = 301;
        const ExactKParams params { 2, 5, 4 };
        std::vector<float> logits(static_cast<size_t>(t * e));
        SplitMix64 rng(11);
        for (float& x : logits)
            x = static_cast<float>(6.0 * rng.uniform() - 3.0);
        logits[5 * e + 3] = 58.0f; // a few extreme tokens take the log-space path
        for (int i = 0; i < e; ++i)
            logits[static_cast<size_t>(7 * e + i)] = i == 0 ? 60.0f : -60.0f;
        std::vector<int32_t> subsets(static_cast<size_t>(t * params.k));
        for (int n = 0; n < t; ++n)
            for (int j = 0; j < params.k; ++j)
                subsets[static_cast<size_t>(n * params.k + j)] = (n + 3 * j) % e;
        const int b = params.bins();
        auto run = [&](int threads) {
            struct Tables {
                std::vector<double> logZ, mu, card, entropy, subset;
                std::vector<int32_t> kStar;
                int64_t logSpace = 0;
            } r;
            r.logZ.resize(static_cast<size_t>(t * b));
            r.mu.resize(static_cast<size_t>(t * e));
            r.card.resize(static_cast<size_t>(t * b));
            r.entropy.resize(static_cast<size_t>(t));
            r.subset.resize(static_cast<size_t>(t));
            r.kStar.resize(static_cast<size_t>(t));
            ExactKOutputs out { r.logZ.data(), r.mu.data(), r.card.data(), r.entropy.data(), r.kStar.data(),
                r.subset.data() };
            exactKTables(logits.data(), t, e, params, subsets.data(), out, threads);
            r.logSpace = out.logSpaceTokens;
            return r;
        };
        const auto one = run(1), two = run(2), many = run(7);
        QVERIFY(one.logZ == two.logZ && one.mu == two.mu && one.card == two.card && one.entropy == two.entropy
            && one.subset == two.subset && one.kStar == two.kStar);
        QVERIFY(one.mu == many.mu && one.subset == many.subset);
        QVERIFY(one.logSpace >= 1);
        QCOMPARE(two.logSpace, one.logSpace);

        ExactK ek(e, params);
        std::vector<double> mu(static_cast<size_t>(e)), card(static_cast<size_t>(b));
        ExactKSums whole, first, second;
        whole.add(ek, logits.data(), t, subsets.data());
        first.add(ek, logits.data(), 100, subsets.data());
        second.add(ek, logits.data() + 100 * e, t - 100, subsets.data() + 100 * params.k);
        first += second;
        std::vector<double> muSum(static_cast<size_t>(e), 0.0);
        double subsetProb = 0;
        for (int n = 0; n < t; ++n) {
            ek.load(logits.data() + n * e);
            ek.marginals(mu.data());
            QVERIFY(std::equal(mu.begin(), mu.end(), one.mu.begin() + n * e)); // same path: bit for bit
            for (int c = params.kMin; c <= params.kMax; ++c)
                QCOMPARE(ek.logZ(c), one.logZ[static_cast<size_t>(n * b + c - params.kMin)]);
            QCOMPARE(ek.subsetLogProb(subsets.data() + n * params.k, params.k), one.subset[static_cast<size_t>(n)]);
            for (int i = 0; i < e; ++i)
                muSum[static_cast<size_t>(i)] += mu[static_cast<size_t>(i)];
            subsetProb += std::exp(one.subset[static_cast<size_t>(n)]);
        }
        QCOMPARE(whole.tokens, static_cast<double>(t));
        QVERIFY(whole.marginal == muSum); // same order of sums
        QVERIFY(std::fabs(whole.subsetProb - subsetProb) <= 1e-12 * subsetProb);
        for (int i = 0; i < e; ++i) // another order of sums: rounding only
            QVERIFY(std::fabs(first.marginal[static_cast<size_t>(i)] - whole.marginal[static_cast<size_t>(i)])
                <= 1e-12 * t);
        QVERIFY(std::fabs(sum(whole.marginal) - params.k * t) <= 1e-10);
        QVERIFY(std::fabs(first.entropy - whole.entropy) <= 1e-12 * t);
        QCOMPARE(first.kStar, whole.kStar);
    }

    void badInput_data()
    {
        QTest::addColumn<int>("experts");
        QTest::addColumn<int>("kMin");
        QTest::addColumn<int>("kMax");
        QTest::addColumn<int>("k");
        QTest::addColumn<QString>("field");
        QTest::newRow("band min 0") << 8 << 0 << 2 << 2 << QStringLiteral("band");
        QTest::newRow("band max > E") << 8 << 2 << 9 << 2 << QStringLiteral("band");
        QTest::newRow("band min > max") << 8 << 4 << 3 << 2 << QStringLiteral("band");
        QTest::newRow("band negative") << 8 << -1 << -1 << 2 << QStringLiteral("band");
        QTest::newRow("k 0") << 8 << 1 << 2 << 0 << QStringLiteral("k");
        QTest::newRow("k > E") << 8 << 1 << 2 << 9 << QStringLiteral("k");
    }
    void badInput()
    {
        QFETCH(int, experts);
        QFETCH(int, kMin);
        QFETCH(int, kMax);
        QFETCH(int, k);
        QFETCH(QString, field);
        const std::string f = field.toStdString();
        const ExactKParams p { kMin, kMax, k };
        QString why = fieldNamed(f.c_str(), requestErrorOf([&] { ExactK(experts, p); }));
        QVERIFY2(why.isEmpty(), qPrintable(why));
        why = fieldNamed(f.c_str(), requestErrorOf([&] { checkExactKParams(p, experts); }));
        QVERIFY2(why.isEmpty(), qPrintable(why));
        std::vector<float> logits(static_cast<size_t>(experts), 0.0f);
        ExactKOutputs out;
        why = fieldNamed(f.c_str(), requestErrorOf([&] { exactKTables(logits.data(), 1, experts, p, nullptr, out); }));
        QVERIFY2(why.isEmpty(), qPrintable(why));
    }

    // Data errors (not request fields): InputError naming "logits" or "subset".
    void badData()
    {
        auto names = [](const char* word, const QString& message) {
            return message.contains(QLatin1String(word)) && !message.contains(QLatin1String("--"))
                && message != QLatin1String("<wrong exception type>");
        };
        QVERIFY(names("logits", inputErrorOf([] { ExactK(0, { 1, 1, 1 }); })));
        std::vector<float> none;
        ExactKOutputs out;
        QVERIFY(names("logits", inputErrorOf([&] { exactKTables(none.data(), 0, 0, { 1, 1, 1 }, nullptr, out); })));
        ExactK ek(4, { 1, 2, 2 });
        for (float bad : { std::nanf(""), INFINITY, -INFINITY }) {
            const float logits[4] = { 0.5f, bad, 0.0f, 1.0f };
            const QString m = inputErrorOf([&] { ek.load(logits); });
            QVERIFY2(names("logits", m) && m.contains(QLatin1String("expert 1")), qPrintable(m));
        }
        const float ok[4] = { 0.5f, 0.1f, 0.0f, 1.0f };
        ek.load(ok);
        const int32_t twice[2] = { 3, 3 }, outside[2] = { 0, 4 }, negative[2] = { -1, 0 };
        for (const int32_t* ids : { twice, outside, negative }) {
            const QString m = inputErrorOf([&] { ek.subsetLogProb(ids, 2); });
            QVERIFY2(names("subset", m), qPrintable(m));
        }
        // A refused subset leaves no trace: the next valid one is still accepted.
        const int32_t fine[2] = { 0, 3 };
        QVERIFY(std::isfinite(ek.subsetLogProb(fine, 2)));
        QCOMPARE(requestErrorOf([&] { ek.logZ(3); }).field, std::string("k"));
        QCOMPARE(requestErrorOf([&] { ek.subsetLogProb(fine, 3); }).field, std::string("k"));
    }
};

QTEST_GUILESS_MAIN(TestExactK)
#include "tst_exact_k.moc"
