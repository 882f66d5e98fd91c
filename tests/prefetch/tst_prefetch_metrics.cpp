// Derived predictors and hit rates on a hand-built trace (every expected number worked out by hand in
// the comments), the table's reader round trip and CSV, and the properties of the seeded split.
#include "prefetch/prefetch_atlas.h"
#include "prefetch/prefetch_derived.h"
#include "prefetch/prefetch_metrics.h"
#include "util/error.h"

#include <QTest>

#include <cmath>
#include <map>
#include <set>

using namespace moeatlas;

namespace {

// E = 4 experts, k = 2, MoE layers 0, 1, 2 (decoder indices 0, 1, 2); two domains.
// Sequences: s0 = tokens 0..2 (domain "a", training), s1 = tokens 3..4 ("a", held out),
// s2 = tokens 5..6 ("b", held out).
//          t0     t1     t2     t3     t4     t5     t6
// layer 0: [0,1]  [0,1]  [0,1]  [0,1]  [0,1]  [0,1]  [0,1]   (a source only)
// layer 1: [0,1]  [1,2]  [1,0]  [3,2]  [2,1]  [0,3]  [3,0]
// layer 2: [2,3]  [3,2]  [0,2]  [1,0]  [0,1]  [2,1]  [1,2]
// Training tokens t0..t2: layer 1 counts e0 2, e1 3, e2 1, e3 0 -> frequency order [1, 0, 2, 3];
// layer 2 counts e0 1, e1 0, e2 3, e3 2 -> [2, 3, 0, 1].
RoutingTrace handTrace()
{
    RoutingTrace t;
    t.numExperts = 4;
    t.topK = 2;
    t.moeLayers = { 0, 1, 2 };
    t.seqOffsets = { 0, 3, 5, 7 };
    t.domainIds = { 0, 0, 0, 0, 0, 1, 1 };
    t.domainNames = { "a", "b" };
    t.routed = { { 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1 }, { 0, 1, 1, 2, 1, 0, 3, 2, 2, 1, 0, 3, 3, 0 },
        { 2, 3, 3, 2, 0, 2, 1, 0, 0, 1, 2, 1, 1, 2 } };
    t.trainSequences = { 1, 0, 0 };
    return t;
}

std::vector<int32_t> row(const PredictionSet& s, std::size_t token)
{
    const auto b = static_cast<std::size_t>(s.budget);
    return { s.ids.begin() + static_cast<std::ptrdiff_t>(token * b),
        s.ids.begin() + static_cast<std::ptrdiff_t>((token + 1) * b) };
}

template <class F> std::string requestFieldOf(F f)
{
    try {
        f();
    } catch (const RequestError& e) {
        return e.field() + ": " + e.what();
    }
    return {};
}

PrefetchHitTable handTable(const RoutingTrace& trace)
{
    return computeHitTable(trace, { Predictor::Frequency, Predictor::Previous, Predictor::Oracle }, { 1, 2 }, 3,
        [&](Predictor p, int s, int d, int b) { return derivedPredictions(trace, p, s, d, b); });
}

} // namespace

class TstPrefetchMetrics : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void frequencyOrderCountsTrainingTokens();
    void derivedRows();
    void hitRatesByHand();
    void oracleIsExactlyOne();
    void errorsNameTheField();
    void resultsRoundTripAndCsv();
    void cancelStops();
    void splitIsSeededPerDomainWithFraction();
};

void TstPrefetchMetrics::frequencyOrderCountsTrainingTokens()
{
    const RoutingTrace t = handTrace();
    QCOMPARE(frequencyOrder(t, 1), (std::vector<int32_t> { 1, 0, 2, 3 }));
    QCOMPARE(frequencyOrder(t, 2), (std::vector<int32_t> { 2, 3, 0, 1 }));
    // Layer 0: e0 3, e1 3, e2 0, e3 0 -> ties by the lower id: [0, 1, 2, 3].
    QCOMPARE(frequencyOrder(t, 0), (std::vector<int32_t> { 0, 1, 2, 3 }));
    // All held out: every count 0, the order is by id.
    RoutingTrace none = t;
    none.trainSequences = { 0, 0, 0 };
    QCOMPARE(frequencyOrder(none, 2), (std::vector<int32_t> { 0, 1, 2, 3 }));
}

void TstPrefetchMetrics::derivedRows()
{
    const RoutingTrace t = handTrace();
    const PredictionSet f = derivedPredictions(t, Predictor::Frequency, 0, 1, 3);
    for (std::size_t x = 0; x < 7; ++x)
        QCOMPARE(row(f, x), (std::vector<int32_t> { 1, 0, 2 }));
    const PredictionSet p = derivedPredictions(t, Predictor::Previous, 0, 1, 3);
    // t0, t3, t5 start their sequences: the frequency row. Otherwise the previous token's layer-1
    // experts in slot order, filled from [1, 0, 2, 3] without repeats.
    const std::vector<std::vector<int32_t>> previous { { 1, 0, 2 }, { 0, 1, 2 }, { 1, 2, 0 }, { 1, 0, 2 }, { 3, 2, 1 },
        { 1, 0, 2 }, { 0, 3, 1 } };
    for (std::size_t x = 0; x < 7; ++x)
        QCOMPARE(row(p, x), previous[x]);
    const PredictionSet o = derivedPredictions(t, Predictor::Oracle, 0, 1, 4);
    // The token's own experts, then the rest by frequency: t3 = [3, 2] + [1, 0].
    QCOMPARE(row(o, 3), (std::vector<int32_t> { 3, 2, 1, 0 }));
    QCOMPARE(row(o, 6), (std::vector<int32_t> { 3, 0, 1, 2 }));
    // Budget k: exactly the routed experts.
    const PredictionSet o2 = derivedPredictions(t, Predictor::Oracle, 1, 1, 2);
    QCOMPARE(row(o2, 2), (std::vector<int32_t> { 0, 2 }));
}

void TstPrefetchMetrics::hitRatesByHand()
{
    const RoutingTrace trace = handTrace();
    const PrefetchHitTable t = handTable(trace);
    const auto H = HitSplit::Heldout, A = HitSplit::All;
    QCOMPARE(t.tokens(A, 0), int64_t { 5 });
    QCOMPARE(t.tokens(H, 0), int64_t { 2 });
    QCOMPARE(t.tokens(H, 1), int64_t { 2 });
    QCOMPARE(t.tokens(H, 2), int64_t { 4 }); // pooled

    // frequency, source 0, d = 1, budget 3: row [1, 0, 2], top-k {1, 0}.
    //   t0 {0,1}: hits 2, recall 2 | t1 {1,2}: 1, 2 | t2 {1,0}: 2, 2 | t3 {3,2}: 0, 1 | t4 {2,1}: 1, 2
    //   t5 {0,3}: 1, 1 | t6 {3,0}: 1, 1
    // a all: 6/10, recall 9/10; a held out (t3, t4): 1/4, recall 3/4; b: 2/4, recall 2/4;
    // pooled held out (t3..t6): 3/8, recall 5/8; pooled all 8/14.
    QCOMPARE(t.hitRate(0, A, 0, 0, 0), 0.6);
    QCOMPARE(t.recall(0, A, 0, 0, 0), 0.9);
    QCOMPARE(t.hitRate(0, H, 0, 0, 0), 0.25);
    QCOMPARE(t.recall(0, H, 0, 0, 0), 0.75);
    QCOMPARE(t.hitRate(0, H, 1, 0, 0), 0.5);
    QCOMPARE(t.hitRate(0, A, 1, 0, 0), 0.5);
    QCOMPARE(t.hitRate(0, H, 2, 0, 0), 0.375);
    QCOMPARE(t.recall(0, H, 2, 0, 0), 0.625);
    QCOMPARE(t.hitRate(0, A, 2, 0, 0), 8.0 / 14.0);

    // previous, source 0, d = 1 (rows in derivedRows): hits t0 2, t1 1, t2 1, t3 0, t4 1, t5 1, t6 2.
    // a all 5/10, a held out 1/4, b 3/4, pooled held out 4/8.
    QCOMPARE(t.hitRate(1, A, 0, 0, 0), 0.5);
    QCOMPARE(t.hitRate(1, H, 0, 0, 0), 0.25);
    QCOMPARE(t.hitRate(1, H, 1, 0, 0), 0.75);
    QCOMPARE(t.hitRate(1, H, 2, 0, 0), 0.5);

    // frequency, source 0, d = 2: layer-2 row [2, 3, 0], top-k {2, 3}: hits t0 2, t1 2, t2 1, t3 0, t4 0,
    // t5 1, t6 1 -> a all 5/10, b 2/4.
    QCOMPARE(t.hitRate(0, A, 0, 0, 1), 0.5);
    QCOMPARE(t.hitRate(0, A, 1, 0, 1), 0.5);
    // frequency, source 1, d = 1 (target layer 2): the same layer-2 row -> the same numbers.
    QCOMPARE(t.hitRate(0, A, 0, 1, 0), 0.5);

    // Source 1 with d = 2 and source 2 have no target layer: NaN, and absent from the heatmap's numbers.
    QVERIFY(!t.valid(1, 1));
    QVERIFY(std::isnan(t.hitRate(0, A, 0, 1, 1)));
    QVERIFY(std::isnan(t.hitRate(0, A, 0, 2, 0)));
    const std::vector<double> map = t.heatmap(0, A, 0);
    QCOMPARE(map.size(), std::size_t { 6 }); // 3 layers x 2 lookaheads
    QCOMPARE(map[0], 0.6);
    QCOMPARE(map[1], 0.5);
    QCOMPARE(map[2], 0.5);
    QVERIFY(std::isnan(map[3]) && std::isnan(map[4]) && std::isnan(map[5]));
    // Mean over source layers for d = 1: layers 0 (0.6) and 1 (0.5).
    QCOMPARE(t.meanOverLayers(0, A, 0, 0), 0.55);
}

void TstPrefetchMetrics::oracleIsExactlyOne()
{
    const PrefetchHitTable t = handTable(handTrace());
    for (const HitSplit s : { HitSplit::Heldout, HitSplit::All })
        for (std::size_t d = 0; d <= 2; ++d)
            for (std::size_t l = 0; l < 3; ++l)
                for (std::size_t a = 0; a < 2; ++a)
                    if (t.valid(l, a)) {
                        QCOMPARE(t.hitRate(2, s, d, l, a), 1.0);
                        QCOMPARE(t.recall(2, s, d, l, a), 1.0);
                    }
}

void TstPrefetchMetrics::errorsNameTheField()
{
    const RoutingTrace t = handTrace();
    const std::string beyond = requestFieldOf([&] { derivedPredictions(t, Predictor::Frequency, 1, 2, 2); });
    QVERIFY2(beyond.rfind("lookahead: ", 0) == 0 && beyond.find("0, 1, 2") != std::string::npos, beyond.c_str());
    QVERIFY(requestFieldOf([&] { derivedPredictions(t, Predictor::Oracle, 0, 0, 2); }).rfind("lookahead: ", 0) == 0);
    QVERIFY(requestFieldOf([&] { derivedPredictions(t, Predictor::Oracle, 0, 1, 1); }).rfind("budget: ", 0) == 0);
    QVERIFY(requestFieldOf([&] { derivedPredictions(t, Predictor::Oracle, 0, 1, 5); }).rfind("budget: ", 0) == 0);
    QVERIFY(
        requestFieldOf([&] { derivedPredictions(t, Predictor::NextRouter, 0, 1, 2); }).rfind("predictor: ", 0) == 0);
    QVERIFY(requestFieldOf([&] { parsePredictor("nope", "predictors"); }).rfind("predictors: ", 0) == 0);
    // Budget E is allowed: every expert.
    QCOMPARE(derivedPredictions(t, Predictor::Frequency, 0, 1, 4).ids.size(), std::size_t { 28 });
}

void TstPrefetchMetrics::resultsRoundTripAndCsv()
{
    const PrefetchHitTable t = handTable(handTrace());
    const AtlasResults r = hitTableResults(t, TraceSplit { false, 0.5, 42 });
    const AtlasArray* hit = r.find("hit_rate");
    QVERIFY(hit);
    QCOMPARE(hit->dims, (std::vector<uint64_t> { 3, 2, 3, 3, 2 }));
    // [p=0, split all=1, domain a=0, layer 0, d index 0]
    QCOMPARE(hit->values[(((0 * 2 + 1) * 3 + 0) * 3 + 0) * 2 + 0], 0.6);
    const PrefetchHitTable back = hitTableFromResults(r, "test");
    QCOMPARE(back.predictors, t.predictors);
    QCOMPARE(back.domains, t.domains);
    QCOMPARE(back.layers, t.layers);
    QCOMPARE(back.lookaheads, t.lookaheads);
    QCOMPARE(back.hitSums, t.hitSums);
    QCOMPARE(back.recallSums, t.recallSums);
    QCOMPARE(back.tokenCounts, t.tokenCounts);
    QCOMPARE(back.hitRate(1, HitSplit::Heldout, 1, 0, 0), 0.75);

    // 3 predictors x 3 valid (layer, d) pairs x 3 domain rows x 2 splits, plus the header.
    const std::string csv = hitTableCsv(t);
    QCOMPARE(std::count(csv.begin(), csv.end(), '\n'), std::ptrdiff_t { 1 + 3 * 3 * 3 * 2 });
    QVERIFY(csv.find("\nfrequency,0,1,1,a,all,5,0.59999999999999998,0.90000000000000002,3,2\n") != std::string::npos);
    QVERIFY(csv.find("\nfrequency,0,1,1,pooled,heldout,4,0.375,0.625,3,2\n") != std::string::npos);

    AtlasResults broken = r;
    broken.arrays.erase(broken.arrays.begin() + 2); // hit_sums
    QVERIFY_THROWS_EXCEPTION(InputError, hitTableFromResults(broken, "test"));
}

void TstPrefetchMetrics::cancelStops()
{
    const RoutingTrace trace = handTrace();
    StopToken stop;
    stop.requestStop();
    QVERIFY_THROWS_EXCEPTION(Cancelled,
        computeHitTable(
            trace, { Predictor::Oracle }, { 1 }, 2,
            [&](Predictor p, int s, int d, int b) { return derivedPredictions(trace, p, s, d, b); }, {}, &stop));
    int calls = 0;
    QVERIFY_THROWS_EXCEPTION(Cancelled,
        computeHitTable(
            trace, { Predictor::Oracle }, { 1 }, 2,
            [&](Predictor p, int s, int d, int b) { return derivedPredictions(trace, p, s, d, b); },
            [&](const Progress&) { return ++calls < 1; }));
    QCOMPARE(calls, 1);
}

void TstPrefetchMetrics::splitIsSeededPerDomainWithFraction()
{
    // Three domains of 10, 7 and 1 sequences of varying length.
    std::vector<int64_t> offsets { 0 };
    std::vector<int16_t> domains;
    const int perDomain[] = { 10, 7, 1 };
    for (int16_t d = 0; d < 3; ++d)
        for (int s = 0; s < perDomain[d]; ++s) {
            const int64_t len = 2 + (s % 3);
            offsets.push_back(offsets.back() + len);
            domains.insert(domains.end(), static_cast<std::size_t>(len), d);
        }
    for (const double fraction : { 0.5, 0.3, 0.9 }) {
        const std::vector<uint8_t> a = splitSequences(offsets, domains, fraction, 7);
        QCOMPARE(a, splitSequences(offsets, domains, fraction, 7)); // seeded: the same again
        std::map<int16_t, int> train, count;
        for (std::size_t s = 0; s < a.size(); ++s) {
            const int16_t d = domains[static_cast<std::size_t>(offsets[s])];
            ++count[d];
            train[d] += a[s];
        }
        for (int16_t d = 0; d < 3; ++d) {
            const int n = count[d];
            int expected = static_cast<int>(std::llround(fraction * n));
            if (n >= 2)
                expected = std::clamp(expected, 1, n - 1); // at least one of each
            QCOMPARE(train[d], expected);
        }
    }
    // Another seed draws another split (over 10 sequences, some seed among a few differs).
    bool differs = false;
    for (uint64_t seed = 8; seed < 12 && !differs; ++seed)
        differs = splitSequences(offsets, domains, 0.5, seed) != splitSequences(offsets, domains, 0.5, 7);
    QVERIFY(differs);
    QCOMPARE(
        requestFieldOf([&] { splitSequences(offsets, domains, 1.0, 1); }).substr(0, 14), std::string("trainFraction:"));
}

QTEST_GUILESS_MAIN(TstPrefetchMetrics)
#include "tst_prefetch_metrics.moc"
