// Hand-computed schedules of the offload simulator: 3 MoE layers, 4 experts, top-1, 2 slots per layer,
// given times, every event time written out below and compared exactly (all times are multiples of 1/2,
// exact in binary floating point). Rules: docs/methods.md "Offload simulator".
//
// Common setting (schedules 1-3): measured times pre = 1 s, experts = 2 s per layer, tail = 1 s; every
// expert 2 bytes over a 1 byte/s link with 0.5 s latency: a transfer takes 2.5 s. One sequence of 4 tokens:
//   token  layer0 layer1 layer2
//   t0     0      1      2
//   t1     1      1      3
//   t2     2      1      2
//   t3     0      1      3
#include "sim/simulator.h"
#include "sim_fixture.h"
#include "util/error.h"

#include <QTest>

using namespace moeatlas;
using namespace moeatlas::test;

namespace {

RoutingTrace handTrace()
{
    return makeTrace(4, 1,
        { { { 0 }, { 1 }, { 2 }, { 0 } }, { { 1 }, { 1 }, { 1 }, { 1 } }, { { 2 }, { 3 }, { 2 }, { 3 } } }, { 4 });
}

ComputeModel handModel()
{
    return measuredModel(3, 4, 1, 2.0, LayerTime { 1.0, 2.0, 0.0 }, 1.0);
}

SimConfig handConfig(SimPolicy policy, Eviction eviction)
{
    SimConfig c;
    c.policy = policy;
    c.eviction = eviction;
    c.cache.slots = 2;
    c.linkBandwidth = 1.0;
    c.linkLatency = 0.5;
    c.timelineSteps = 100;
    return c;
}

// Predictions for schedules 2 and 3 (lookahead 1, budget 1): source 0 guesses layer 1, source 1 layer 2.
//   token  layer1 guess (true)   layer2 guess (true)
//   t0     1 (1)                 2 (2)
//   t1     0 (1) wrong           2 (3) wrong
//   t2     1 (1)                 2 (2)
//   t3     1 (1)                 3 (3)
std::vector<PredictionSet> handPredictions()
{
    return { makePredictions(0, 1, { { 1 }, { 0 }, { 1 }, { 1 } }),
        makePredictions(1, 1, { { 2 }, { 2 }, { 2 }, { 3 } }) };
}

struct Ev {
    double start, router, ready, end;
};

std::string num(double x)
{
    return QByteArray::number(x).toStdString();
}

void checkTimeline(const SimResult& r, const std::vector<Ev>& expected)
{
    QCOMPARE(r.timeline.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const SimLayerEvent& e = r.timeline[i];
        const Ev& x = expected[i];
        const std::string what = "step " + std::to_string(e.step) + " layer " + std::to_string(e.layer) + ": "
            + num(e.start) + " " + num(e.router) + " " + num(e.ready) + " " + num(e.end) + ", expected " + num(x.start)
            + " " + num(x.router) + " " + num(x.ready) + " " + num(x.end);
        QVERIFY2(e.start == x.start && e.router == x.router && e.ready == x.ready && e.end == x.end, what.c_str());
    }
}

struct Tr {
    int64_t step;
    int layer, expert;
    bool prefetch;
    double start, end;
};

void checkTransfers(const SimResult& r, const std::vector<Tr>& expected)
{
    QCOMPARE(r.transfers.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const SimTransfer& t = r.transfers[i];
        const Tr& x = expected[i];
        const std::string what = "transfer " + std::to_string(i) + ": step " + std::to_string(t.step) + " layer "
            + std::to_string(t.layer) + " expert " + std::to_string(t.expert) + (t.prefetch ? " prefetch " : " demand ")
            + num(t.start) + " -> " + num(t.end);
        QVERIFY2(t.step == x.step && t.layer == x.layer && t.expert == x.expert && t.prefetch == x.prefetch
                && t.start == x.start && t.end == x.end,
            what.c_str());
    }
}

} // namespace

class TstSimSchedule : public QObject {
    Q_OBJECT

private Q_SLOTS:
    // Schedule 1, on-demand, LRU. Each layer: router = start + 1; a miss is fetched at the router point;
    // ready = last arrival; end = ready + 2; the step ends 1 s (tail) after layer 2.
    // step 0: L0 start 0, router 1, miss 0: link 1 -> 3.5, ready 3.5, end 5.5
    //         L1 start 5.5, router 6.5, miss 1: 6.5 -> 9, end 11
    //         L2 start 11, router 12, miss 2: 12 -> 14.5, end 16.5; tail -> 17.5       (step 17.5)
    // step 1: L0 start 17.5, router 18.5, miss 1 (free slot): 18.5 -> 21, end 23
    //         L1 start 23, router 24, hit 1, ready 24, end 26
    //         L2 start 26, router 27, miss 3 (free slot): 27 -> 29.5, end 31.5; tail -> 32.5  (step 15)
    // step 2: L0 start 32.5, router 33.5, miss 2: evict the LRU of {0 (step 0), 1 (step 1)} = 0: 33.5 -> 36, end 38
    //         L1 start 38, router 39, hit, end 41
    //         L2 start 41, router 42, hit 2, end 44; tail -> 45                          (step 12.5)
    // step 3: L0 start 45, router 46, miss 0: evict the LRU of {1 (step 1), 2 (step 2)} = 1: 46 -> 48.5, end 50.5
    //         L1 start 50.5, router 51.5, hit, end 53.5
    //         L2 start 53.5, router 54.5, hit 3, end 56.5; tail -> 57.5                  (step 12.5)
    // Misses 4 + 1 + 2 = 7, hits 0 + 3 + 2 = 5; stall 2.5 per miss.
    void onDemandLru()
    {
        const SimResult r = simulate(handTrace(), {}, handModel(), handConfig(SimPolicy::OnDemand, Eviction::Lru));
        checkTimeline(r,
            { { 0, 1, 3.5, 5.5 }, { 5.5, 6.5, 9, 11 }, { 11, 12, 14.5, 16.5 }, { 17.5, 18.5, 21, 23 },
                { 23, 24, 24, 26 }, { 26, 27, 29.5, 31.5 }, { 32.5, 33.5, 36, 38 }, { 38, 39, 39, 41 },
                { 41, 42, 42, 44 }, { 45, 46, 48.5, 50.5 }, { 50.5, 51.5, 51.5, 53.5 }, { 53.5, 54.5, 54.5, 56.5 } });
        checkTransfers(r,
            { { 0, 0, 0, false, 1, 3.5 }, { 0, 1, 1, false, 6.5, 9 }, { 0, 2, 2, false, 12, 14.5 },
                { 1, 0, 1, false, 18.5, 21 }, { 1, 2, 3, false, 27, 29.5 }, { 2, 0, 2, false, 33.5, 36 },
                { 3, 0, 0, false, 46, 48.5 } });
        QCOMPARE(r.stepTimes, (std::vector<double> { 17.5, 15, 12.5, 12.5 }));
        QCOMPARE(r.tpotMean, (17.5 + 15 + 12.5 + 12.5) / 4);
        // Sorted 12.5, 12.5, 15, 17.5: p50 at rank 1.5 = 13.75, p90 at rank 2.7 = 15 + 0.7 * 2.5.
        QCOMPARE(r.tpotP50, 13.75);
        QVERIFY(qFuzzyCompare(r.tpotP90, 15 + 0.7 * 2.5));
        QCOMPARE(r.tpotMax, 17.5);
        QCOMPARE(r.layers[0].misses, 4);
        QCOMPARE(r.layers[1].misses, 1);
        QCOMPARE(r.layers[2].misses, 2);
        QCOMPARE(r.total.hits, 5);
        QCOMPARE(r.total.bytes, 14.0);
        QCOMPARE(r.layers[0].stall, 10.0);
        QCOMPARE(r.stallPerToken, 17.5 / 4);
        QCOMPARE(r.computePerToken, 10.0);
        QCOMPARE(r.total.compute, 36.0); // 3 s per layer and step; the tail is in the step, not in a layer
    }

    // Belady on the same trace: at step 2 layer 0 it evicts 1 (never needed again) instead of 0 (needed at
    // step 3), so step 3's layer 0 hits: L0 start 45, router 46, ready 46, end 48; ... tail -> 55 (step 10).
    // LFU: at step 2, experts 0 and 1 were used once each; the tie goes to the least recent (0) = LRU.
    void onDemandBeladyAndLfu()
    {
        const SimResult b = simulate(handTrace(), {}, handModel(), handConfig(SimPolicy::OnDemand, Eviction::Belady));
        QCOMPARE(b.stepTimes, (std::vector<double> { 17.5, 15, 12.5, 10 }));
        QCOMPARE(b.layers[0].misses, 3);
        QCOMPARE(b.timeline[9].router, 46.0);
        QCOMPARE(b.timeline[9].ready, 46.0);
        const SimResult f = simulate(handTrace(), {}, handModel(), handConfig(SimPolicy::OnDemand, Eviction::Lfu));
        QCOMPARE(f.stepTimes, (std::vector<double> { 17.5, 15, 12.5, 12.5 }));
        QCOMPARE(f.layers[0].misses, 4);
    }

    // Schedule 2, prefetch (lookahead 1, budget 1), LRU. At each router point: demand fetches first, then the
    // prefetch for the next layer, FIFO on one link.
    // step 0: L0 router 1: miss 0: 1 -> 3.5; prefetch L1 e1: 3.5 -> 6. ready 3.5, end 5.5
    //         L1 start 5.5, router 6.5: e1 prefetched, arrived 6 <= 6.5: prefetch hit, no stall;
    //            prefetch L2 e2: 6.5 -> 9. end 8.5
    //         L2 start 8.5, router 9.5: e2 arrived 9: prefetch hit. end 11.5; tail -> 12.5   (step 12.5)
    // step 1: L0 start 12.5, router 13.5: miss 1: 13.5 -> 16; prefetch L1 e0 (wrong): 16 -> 18.5. ready 16, end 18
    //         L1 start 18, router 19: e1 resident: hit. e0 prefetched, unused: wasted (evictable from now on).
    //            prefetch L2 e2: resident, pinned, no transfer. end 21
    //         L2 start 21, router 22: e3 missing: miss (free slot): 22 -> 24.5. end 26.5; tail -> 27.5  (step 15)
    // step 2: L0 start 27.5, router 28.5: miss 2, evict LRU 0: 28.5 -> 31; L1's e1 and L2's e2 resident.
    //            ready 31, end 33; L1 34 -> 36 hit; L2 37 -> 39 hit; tail -> 40             (step 12.5)
    // step 3: L0 start 40, router 41: miss 0, evict LRU 1: 41 -> 43.5, end 45.5; L1 46.5 -> 48.5 hit;
    //         prefetch L2 e3: resident (step 1's demand fetch). L2 start 48.5 router 49.5 hit, end 51.5;
    //         tail -> 52.5                                                                (step 12.5)
    void prefetch()
    {
        const auto preds = handPredictions();
        const SimResult r = simulate(handTrace(), preds, handModel(), handConfig(SimPolicy::Prefetch, Eviction::Lru));
        checkTimeline(r,
            { { 0, 1, 3.5, 5.5 }, { 5.5, 6.5, 6.5, 8.5 }, { 8.5, 9.5, 9.5, 11.5 }, { 12.5, 13.5, 16, 18 },
                { 18, 19, 19, 21 }, { 21, 22, 24.5, 26.5 }, { 27.5, 28.5, 31, 33 }, { 33, 34, 34, 36 },
                { 36, 37, 37, 39 }, { 40, 41, 43.5, 45.5 }, { 45.5, 46.5, 46.5, 48.5 }, { 48.5, 49.5, 49.5, 51.5 } });
        checkTransfers(r,
            { { 0, 0, 0, false, 1, 3.5 }, { 0, 1, 1, true, 3.5, 6 }, { 0, 2, 2, true, 6.5, 9 },
                { 1, 0, 1, false, 13.5, 16 }, { 1, 1, 0, true, 16, 18.5 }, { 1, 2, 3, false, 22, 24.5 },
                { 2, 0, 2, false, 28.5, 31 }, { 3, 0, 0, false, 41, 43.5 } });
        QCOMPARE(r.stepTimes, (std::vector<double> { 12.5, 15, 12.5, 12.5 }));
        QCOMPARE(r.total.misses, 5);
        QCOMPARE(r.total.prefetchHits, 2);
        QCOMPARE(r.total.latePrefetchHits, 0);
        QCOMPARE(r.total.hits, 5);
        QCOMPARE(r.layers[1].wastedPrefetches, 1);
        QCOMPARE(r.layers[1].prefetches, 2);
        QCOMPARE(r.layers[2].prefetches, 1);
        QCOMPARE(r.total.bytes, 16.0);
    }

    // Schedule 3, speculative (lookahead 1, budget 1): layers 1 and 2 run the predicted expert; a routed
    // expert not predicted is replaced, never fetched.
    // step 0: as schedule 2 (every guess right): L0 router 1, 1 -> 3.5, prefetch e1 3.5 -> 6, end 5.5;
    //         L1 5.5/6.5 runs e1 (prefetch hit), prefetch e2 6.5 -> 9, end 8.5; L2 8.5/9.5 runs e2, end 11.5;
    //         tail -> 12.5
    // step 1: L0 router 13.5, miss 1: 13.5 -> 16, prefetch L1 e0: 16 -> 18.5, end 18
    //         L1 start 18, router 19: runs e0 (arrived 18.5: prefetch hit), routed e1 replaced;
    //            prefetch L2 e2: resident. end 21
    //         L2 start 21, router 22: runs e2 (hit), routed e3 replaced. end 24; tail -> 25    (step 12.5)
    // step 2: L0 start 25, router 26: miss 2, evict LRU 0: 26 -> 28.5, end 30.5; L1 30.5/31.5 e1 hit, end 33.5;
    //         L2 33.5/34.5 e2 hit, end 36.5; tail -> 37.5                                     (step 12.5)
    // step 3: L0 start 37.5, router 38.5: miss 0, evict LRU 1: 38.5 -> 41, end 43
    //         L1 start 43, router 44: e1 hit; prefetch L2 e3 (free slot): 44 -> 46.5. end 46
    //         L2 start 46, router 47: e3 arrived 46.5: prefetch hit. end 49; tail -> 50           (step 12.5)
    void speculative()
    {
        const auto preds = handPredictions();
        const SimResult r
            = simulate(handTrace(), preds, handModel(), handConfig(SimPolicy::Speculative, Eviction::Lru));
        checkTimeline(r,
            { { 0, 1, 3.5, 5.5 }, { 5.5, 6.5, 6.5, 8.5 }, { 8.5, 9.5, 9.5, 11.5 }, { 12.5, 13.5, 16, 18 },
                { 18, 19, 19, 21 }, { 21, 22, 22, 24 }, { 25, 26, 28.5, 30.5 }, { 30.5, 31.5, 31.5, 33.5 },
                { 33.5, 34.5, 34.5, 36.5 }, { 37.5, 38.5, 41, 43 }, { 43, 44, 44, 46 }, { 46, 47, 47, 49 } });
        checkTransfers(r,
            { { 0, 0, 0, false, 1, 3.5 }, { 0, 1, 1, true, 3.5, 6 }, { 0, 2, 2, true, 6.5, 9 },
                { 1, 0, 1, false, 13.5, 16 }, { 1, 1, 0, true, 16, 18.5 }, { 2, 0, 2, false, 26, 28.5 },
                { 3, 0, 0, false, 38.5, 41 }, { 3, 2, 3, true, 44, 46.5 } });
        QCOMPARE(r.stepTimes, (std::vector<double> { 12.5, 12.5, 12.5, 12.5 }));
        QCOMPARE(r.timeline[4].experts, (std::vector<int32_t> { 0 }));
        QCOMPARE(r.layers[1].replaced, 1);
        QCOMPARE(r.layers[2].replaced, 1);
        QCOMPARE(r.total.misses, 4);
        QCOMPARE(r.total.skipped, 0);
        QCOMPARE(r.total.prefetchHits, 4);
        QCOMPARE(r.total.wastedPrefetches, 0);
    }

    // A late prefetch behind a wrong one (FIFO link): 2 layers, one token routed 0 then 2; pre 1 s, experts 1 s,
    // no tail; lookahead 1, budget 2: layer 1 predicted [1, 2].
    // L0 router 1: miss 0: 1 -> 3.5; prefetch e1: 3.5 -> 6, e2: 6 -> 8.5. ready 3.5, end 4.5
    // L1 start 4.5, router 5.5: e2 in flight until 8.5: late prefetch hit, stall 3; e1 wasted. end 9.5
    void latePrefetch()
    {
        const RoutingTrace trace = makeTrace(4, 1, { { { 0 } }, { { 2 } } }, { 1 });
        const ComputeModel model = measuredModel(2, 4, 1, 2.0, LayerTime { 1.0, 1.0, 0.0 }, 0.0);
        const std::vector<PredictionSet> preds { makePredictions(0, 1, { { 1, 2 } }) };
        const SimResult r = simulate(trace, preds, model, handConfig(SimPolicy::Prefetch, Eviction::Lru));
        checkTimeline(r, { { 0, 1, 3.5, 4.5 }, { 4.5, 5.5, 8.5, 9.5 } });
        QCOMPARE(r.layers[1].stall, 3.0);
        QCOMPARE(r.layers[1].latePrefetchHits, 1);
        QCOMPARE(r.layers[1].wastedPrefetches, 1);
        QCOMPARE(r.stepTimes, (std::vector<double> { 9.5 }));
    }

    // Batch 2: sequences A (2 tokens: {0,1}, {2,3}) and B (1 token: {1,2}); one layer, 4 slots; pre 1 s,
    // experts 1 s + 0.5 s per distinct expert, no tail; transfers 2.5 s.
    // step 0 (A0, B0): union {0, 1, 2}: misses 0: 1 -> 3.5, 1: 3.5 -> 6, 2: 6 -> 8.5; end 8.5 + 1 + 1.5 = 11
    // step 1 (A1): {2, 3}: 2 hit, 3 miss 12 -> 14.5; end 14.5 + 1 + 1 = 16.5 (step 5.5)
    // TPOT over tokens: (11 + 11 + 5.5) / 3.
    void batchUnion()
    {
        const RoutingTrace trace = makeTrace(4, 2, { { { 0, 1 }, { 2, 3 }, { 1, 2 } } }, { 2, 1 });
        const ComputeModel model = measuredModel(1, 4, 2, 2.0, LayerTime { 1.0, 1.0, 0.5 }, 0.0);
        SimConfig c = handConfig(SimPolicy::OnDemand, Eviction::Lru);
        c.batch = 2;
        c.cache.slots = 4;
        const SimResult r = simulate(trace, {}, model, c);
        QCOMPARE(r.stepTimes, (std::vector<double> { 11, 5.5 }));
        QCOMPARE(r.steps, 2);
        QCOMPARE(r.tokens, 3);
        QCOMPARE(r.total.misses, 4);
        QCOMPARE(r.total.hits, 1);
        QCOMPARE(r.tpotMean, (11 + 11 + 5.5) / 3);
        QCOMPARE(r.timeline[0].experts, (std::vector<int32_t> { 0, 1, 2 }));
        // Slots below min(E, k x B) = 4 cannot hold one step's experts.
        c.cache.slots = 3;
        try {
            simulate(trace, {}, model, c);
            QFAIL("3 slots accepted for a batch needing 4");
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QStringLiteral("cache"));
        }
    }

    // A global budget of 2 experts, batch 2 (one token in each of two sequences), lookahead 2, budget 1.
    //   routing: L0 {0, 0}, L1 {0, 1}, L2 {2, 2}, L3 {0, 0}; predictions for L2: {3, 3}, for L3: {0, 0}
    // R0: miss L0e0 (1 used); prefetch L2e3 (2 used, pinned). L0e0 evictable after L0.
    // R1: L1 needs e0 and e1: e0 evicts L0e0; e1 finds nothing evictable and takes the place of the pending
    //     prefetch L2e3 (wasted); the prefetch for L3 finds no room: dropped.
    // R2: L2e2 miss (L2e3 is gone). R3: L3e0 miss.
    void globalDemandPreemptsPrefetch()
    {
        const RoutingTrace trace
            = makeTrace(4, 1, { { { 0 }, { 0 } }, { { 0 }, { 1 } }, { { 2 }, { 2 } }, { { 0 }, { 0 } } }, { 1, 1 });
        const ComputeModel model = measuredModel(4, 4, 1, 1.0, LayerTime { 1.0, 1.0, 0.0 }, 0.0);
        const std::vector<PredictionSet> preds { makePredictions(0, 2, { { 3 }, { 3 } }),
            makePredictions(1, 2, { { 0 }, { 0 } }) };
        SimConfig c = handConfig(SimPolicy::Prefetch, Eviction::Lru);
        c.batch = 2;
        c.cache.kind = CacheSpec::Kind::GlobalBytes;
        c.cache.bytes = 2;
        const SimResult r = simulate(trace, preds, model, c);
        QCOMPARE(r.layers[1].misses, 2);
        QCOMPARE(r.layers[2].prefetches, 1);
        QCOMPARE(r.layers[2].wastedPrefetches, 1);
        QCOMPARE(r.layers[2].misses, 1);
        QCOMPARE(r.layers[3].droppedPrefetches, 1);
        QCOMPARE(r.layers[3].misses, 1);
        QCOMPARE(r.total.transfers, 6);
    }

    // Progress reports the steps; returning false, or a stop request, cancels.
    void progressAndCancel()
    {
        std::vector<int64_t> seen;
        simulate(handTrace(), {}, handModel(), handConfig(SimPolicy::OnDemand, Eviction::Lru), [&](const Progress& p) {
            seen.push_back(p.done);
            return p.total == 4;
        });
        QCOMPARE(seen.front(), 0);
        QCOMPARE(seen.back(), 4);
        QVERIFY_THROWS_EXCEPTION(Cancelled,
            simulate(handTrace(), {}, handModel(), handConfig(SimPolicy::OnDemand, Eviction::Lru),
                [](const Progress&) { return false; }));
        StopToken stop;
        stop.requestStop();
        QVERIFY_THROWS_EXCEPTION(Cancelled,
            simulate(handTrace(), {}, handModel(), handConfig(SimPolicy::OnDemand, Eviction::Lru), {}, &stop));
    }

    // Warm-up steps are simulated but not counted.
    void warmup()
    {
        SimConfig c = handConfig(SimPolicy::OnDemand, Eviction::Lru);
        c.warmupSteps = 2;
        const SimResult r = simulate(handTrace(), {}, handModel(), c);
        QCOMPARE(r.steps, 2);
        QCOMPARE(r.tpotMean, 12.5);
        QCOMPARE(r.total.misses, 2); // step 2 layer 0, step 3 layer 0
        QCOMPARE(r.stepTimes.size(), std::size_t(4));
    }
};

QTEST_APPLESS_MAIN(TstSimSchedule)
#include "tst_sim_schedule.moc"
