// Eviction policies of the offload simulator: Belady's demand misses against LRU and LFU on 100 seeded random
// traces (per-layer slots and a global budget, batch 1 and 2), and against a brute-force optimum (dynamic
// programming over every cache state) on tiny traces; with an infinite cache, after warm-up, no stall and
// every step takes exactly its compute time.
#include "sim/simulator.h"
#include "sim_fixture.h"

#include <QTest>

#include <bit>
#include <map>
#include <set>

using namespace moeatlas;
using namespace moeatlas::test;

namespace {

SimConfig onDemand(Eviction eviction, int slots, int batch)
{
    SimConfig c;
    c.eviction = eviction;
    c.cache.slots = slots;
    c.batch = batch;
    c.linkBandwidth = 4.0;
    c.linkLatency = 0.25;
    return c;
}

// The distinct experts of each (step, layer) in position order, batch 1: one token per step.
std::vector<std::vector<int>> requests(const RoutingTrace& t, int layer)
{
    std::vector<std::vector<int>> out;
    for (int64_t i = 0; i < t.numTokens(); ++i) {
        std::set<int> s;
        for (int j = 0; j < t.topK; ++j)
            s.insert(t.routed[static_cast<std::size_t>(layer)][static_cast<std::size_t>(i * t.topK + j)]);
        out.emplace_back(s.begin(), s.end());
    }
    return out;
}

// Fewest misses of any policy that keeps a request's items resident together, `capacity` items, cold start:
// dynamic programming over the resident set (a bit mask) after each request.
int64_t optimumMisses(const std::vector<std::vector<int>>& reqs, int capacity)
{
    std::map<uint32_t, int64_t> best { { 0u, 0 } };
    for (const auto& r : reqs) {
        uint32_t need = 0;
        for (const int x : r)
            need |= 1u << x;
        std::map<uint32_t, int64_t> next;
        for (const auto& [state, cost] : best) {
            const int64_t c = cost + std::popcount(need & ~state);
            const uint32_t optional = state & ~need; // what may be kept besides the request
            // every subset of `optional` of size <= capacity - |need|
            for (uint32_t keep = optional;; keep = (keep - 1) & optional) {
                if (std::popcount(keep) + std::popcount(need) <= capacity) {
                    const uint32_t s = keep | need;
                    auto it = next.find(s);
                    if (it == next.end() || c < it->second)
                        next[s] = c;
                }
                if (keep == 0)
                    break;
            }
        }
        best = std::move(next);
    }
    int64_t m = INT64_MAX;
    for (const auto& [state, cost] : best)
        m = std::min(m, cost);
    return m;
}

} // namespace

class TstSimEviction : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void beladyNeverWorse()
    {
        std::mt19937_64 rng(20260317);
        int strictlyBetter = 0;
        for (int trial = 0; trial < 100; ++trial) {
            const int layers = std::uniform_int_distribution<int>(1, 4)(rng);
            const int experts = std::uniform_int_distribution<int>(4, 16)(rng);
            const int topK = std::uniform_int_distribution<int>(1, std::min(4, experts / 2))(rng);
            const int batch = trial % 3 == 0 ? 2 : 1;
            const RoutingTrace trace = randomTrace(rng, layers, experts, topK, 150, 1.0);
            const ComputeModel model = measuredModel(layers, experts, topK, 1.0, LayerTime { 0.5, 1.0, 0.0 }, 0.25);
            const int minSlots = std::min(experts, topK * batch);
            const int slots = std::uniform_int_distribution<int>(minSlots, experts)(rng);
            const bool global = trial % 2 == 1;
            std::map<Eviction, int64_t> misses;
            for (const Eviction e : { Eviction::Lru, Eviction::Lfu, Eviction::Belady }) {
                SimConfig c = onDemand(e, slots, batch);
                if (global) {
                    c.cache.kind = CacheSpec::Kind::GlobalBytes;
                    c.cache.bytes = std::max(minSlots, slots * layers / 2); // every expert is 1 byte
                }
                const SimResult r = simulate(trace, {}, model, c);
                misses[e] = r.total.misses;
                // Time adds up: every step is its compute (layers' pre + experts, tail) plus its stalls.
                QVERIFY(std::abs(r.totalTime - (r.total.compute + r.total.stall + 0.25 * double(r.steps)))
                    <= 1e-9 * r.totalTime);
                QCOMPARE(r.total.hits + r.total.misses + r.total.prefetchHits, [&] {
                    // distinct experts needed per (step, layer), counted here from the trace
                    int64_t n = 0;
                    for (int l = 0; l < layers; ++l)
                        for (int64_t s = 0; s + 1 < int64_t(trace.seqOffsets.size()); ++s)
                            for (int64_t j = 0;; ++j) { // steps of the batch holding sequence s
                                if (s % batch != 0)
                                    break;
                                std::set<int> u;
                                for (int64_t q = s; q < std::min<int64_t>(s + batch, trace.seqOffsets.size() - 1); ++q)
                                    if (trace.seqOffsets[q] + j < trace.seqOffsets[q + 1])
                                        for (int i = 0; i < topK; ++i)
                                            u.insert(trace.routed[l][(trace.seqOffsets[q] + j) * topK + i]);
                                if (u.empty())
                                    break;
                                n += int64_t(u.size());
                            }
                    return n;
                }());
            }
            const QByteArray at = "trial " + QByteArray::number(trial);
            QVERIFY2(misses[Eviction::Belady] <= misses[Eviction::Lru], at.constData());
            QVERIFY2(misses[Eviction::Belady] <= misses[Eviction::Lfu], at.constData());
            strictlyBetter += misses[Eviction::Belady] < misses[Eviction::Lru] ? 1 : 0;
        }
        // The traces are not so easy that every policy ties.
        QVERIFY(strictlyBetter > 50);
    }

    void beladyIsOptimal_data()
    {
        QTest::addColumn<bool>("global");
        QTest::newRow("per-layer slots") << false;
        QTest::newRow("global budget") << true;
    }
    void beladyIsOptimal()
    {
        QFETCH(bool, global);
        std::mt19937_64 rng(global ? 7 : 11);
        for (int trial = 0; trial < 40; ++trial) {
            const int layers = global ? 2 : std::uniform_int_distribution<int>(1, 2)(rng);
            const int experts = std::uniform_int_distribution<int>(3, 5)(rng);
            const int topK = std::uniform_int_distribution<int>(1, 2)(rng);
            const int tokens = std::uniform_int_distribution<int>(4, 12)(rng);
            const RoutingTrace trace = randomTrace(rng, layers, experts, topK, tokens, 0.5);
            const ComputeModel model = measuredModel(layers, experts, topK, 1.0, LayerTime { 0.5, 1.0, 0.0 }, 0.0);
            SimConfig c = onDemand(Eviction::Belady, 0, 1);
            int64_t optimum = 0;
            if (global) {
                const int capacity = std::uniform_int_distribution<int>(topK, layers * experts - 1)(rng);
                c.cache.kind = CacheSpec::Kind::GlobalBytes;
                c.cache.bytes = capacity;
                // One request per (step, layer), in position order; item = layer * E + expert.
                std::vector<std::vector<int>> all;
                const auto r0 = requests(trace, 0), r1 = requests(trace, 1);
                for (std::size_t s = 0; s < r0.size(); ++s) {
                    all.push_back(r0[s]);
                    std::vector<int> shifted;
                    for (const int x : r1[s])
                        shifted.push_back(experts + x);
                    all.push_back(shifted);
                }
                optimum = optimumMisses(all, capacity);
            } else {
                c.cache.slots = std::uniform_int_distribution<int>(topK, experts - 1)(rng);
                for (int l = 0; l < layers; ++l)
                    optimum += optimumMisses(requests(trace, l), c.cache.slots);
            }
            const SimResult r = simulate(trace, {}, model, c);
            QCOMPARE(r.total.misses, optimum);
        }
    }

    // An oracle prefetch (lookahead 1, budget k) with per-layer slots moves exactly the bytes of on-demand (pool
    // l+1 is touched by nothing between layer l's and layer l+1's router points, so the same victims go) but
    // issues every transfer of layers >= 1 one layer earlier: it is never slower, and no prefetch is wasted.
    void oraclePrefetchNeverSlower()
    {
        std::mt19937_64 rng(99);
        for (int trial = 0; trial < 30; ++trial) {
            const int layers = std::uniform_int_distribution<int>(2, 4)(rng);
            const int experts = std::uniform_int_distribution<int>(4, 12)(rng);
            const int topK = std::uniform_int_distribution<int>(1, 3)(rng);
            const RoutingTrace trace = randomTrace(rng, layers, experts, topK, 120, 1.0);
            const ComputeModel model = measuredModel(layers, experts, topK, 1.0, LayerTime { 0.5, 1.0, 0.0 }, 0.25);
            for (const Eviction e : { Eviction::Lru, Eviction::Lfu, Eviction::Belady }) {
                SimConfig c = onDemand(e, std::uniform_int_distribution<int>(topK, experts)(rng), 1);
                const SimResult base = simulate(trace, {}, model, c);
                std::vector<PredictionSet> oracle;
                for (int s = 0; s + 1 < layers; ++s) {
                    PredictionSet p;
                    p.source = s;
                    p.budget = topK;
                    p.ids = trace.routed[s + 1];
                    oracle.push_back(p);
                }
                c.policy = SimPolicy::Prefetch;
                const SimResult pre = simulate(trace, oracle, model, c);
                QCOMPARE(pre.total.bytes, base.total.bytes);
                QCOMPARE(pre.total.wastedPrefetches, 0);
                QCOMPARE(pre.total.misses + pre.total.prefetches, base.total.misses);
                QVERIFY(pre.totalTime <= base.totalTime);
            }
        }
    }

    // All experts fit: after a warm-up that touches every expert, no step stalls and each takes exactly
    // sum over layers (pre + experts + per-expert x distinct) + tail, counted here from the trace.
    void infiniteCacheIsPureCompute_data()
    {
        QTest::addColumn<int>("policy");
        QTest::newRow("on-demand") << int(SimPolicy::OnDemand);
        QTest::newRow("prefetch (oracle)") << int(SimPolicy::Prefetch);
    }
    void infiniteCacheIsPureCompute()
    {
        QFETCH(int, policy);
        std::mt19937_64 rng(5);
        const int layers = 3, experts = 8, topK = 2;
        RoutingTrace trace = randomTrace(rng, layers, experts, topK, 200, 1.2);
        for (int l = 0; l < layers; ++l) // the first 4 tokens: experts {0,1}, {2,3}, {4,5}, {6,7}
            for (int i = 0; i < 8; ++i)
                trace.routed[l][i] = i;
        const ComputeModel model = measuredModel(layers, experts, topK, 3.0, LayerTime { 0.375, 1.5, 0.125 }, 0.5);
        SimConfig c = onDemand(Eviction::Lru, experts, 1);
        c.policy = SimPolicy(policy);
        c.warmupSteps = 4;
        std::vector<PredictionSet> preds;
        if (c.policy == SimPolicy::Prefetch)
            for (int s = 0; s + 1 < layers; ++s) {
                PredictionSet p;
                p.source = s;
                p.lookahead = 1;
                p.budget = topK;
                p.ids = trace.routed[s + 1];
                preds.push_back(p);
            }
        const SimResult r = simulate(trace, preds, model, c);
        QCOMPARE(r.total.stall, 0.0);
        QCOMPARE(r.total.misses, 0);
        QCOMPARE(r.total.bytes, 0.0);
        double sum = 0;
        for (int64_t t = 4; t < trace.numTokens(); ++t) { // batch 1: step t is token t
            double expected = 0.5;
            for (int l = 0; l < layers; ++l) {
                const int a = trace.routed[l][t * 2], b = trace.routed[l][t * 2 + 1];
                expected += 0.375 + 1.5 + 0.125 * (a == b ? 1 : 2);
            }
            QVERIFY(std::abs(r.stepTimes[t] - expected) <= 1e-12 * expected);
            sum += expected;
        }
        QVERIFY(std::abs(r.tpotMean - sum / double(trace.numTokens() - 4)) <= 1e-12 * sum);
        QVERIFY(std::abs(r.tpotMean - r.computePerToken) <= 1e-12 * r.tpotMean);
    }
};

QTEST_APPLESS_MAIN(TstSimEviction)
#include "tst_sim_eviction.moc"
