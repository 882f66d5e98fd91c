#include "sim/simulator.h"

#include "sim/expert_cache.h"
#include "sim/sim_checks.h"
#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace moeatlas {

using detail::CacheEntry;
using detail::EvictionKey;
using detail::ExpertCache;
using detail::Pin;

namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// The decode steps: batch b of sequences [b*B, (b+1)*B), step j runs token j of each of them that has one.
struct Steps {
    std::vector<int64_t> offsets { 0 }; // [S+1] into tokens
    std::vector<int64_t> tokens; // trace token index
    std::vector<int64_t> contexts; // keys the token attends to: its position in its sequence + 1
    int64_t count() const { return static_cast<int64_t>(offsets.size()) - 1; }
};

Steps buildSteps(const RoutingTrace& trace, int batch)
{
    Steps st;
    const int64_t numSeqs = static_cast<int64_t>(trace.seqOffsets.size()) - 1;
    for (int64_t first = 0; first < numSeqs; first += batch) {
        const int64_t last = std::min(numSeqs, first + batch);
        int64_t longest = 0;
        for (int64_t s = first; s < last; ++s)
            longest = std::max(longest, trace.seqOffsets[s + 1] - trace.seqOffsets[s]);
        for (int64_t j = 0; j < longest; ++j) {
            for (int64_t s = first; s < last; ++s) {
                if (trace.seqOffsets[s] + j < trace.seqOffsets[s + 1]) {
                    st.tokens.push_back(trace.seqOffsets[s] + j);
                    st.contexts.push_back(j + 1);
                }
            }
            st.offsets.push_back(static_cast<int64_t>(st.tokens.size()));
        }
    }
    return st;
}

// Percentile with linear interpolation between order statistics (numpy's default) of sorted values.
double percentile(const std::vector<double>& sorted, double q)
{
    if (sorted.empty())
        return 0;
    const double at = q * static_cast<double>(sorted.size() - 1);
    const std::size_t lo = static_cast<std::size_t>(std::floor(at));
    const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (at - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

void add(SimLayerStats& into, const SimLayerStats& s)
{
    into.compute += s.compute;
    into.stall += s.stall;
    into.bytes += s.bytes;
    into.transfers += s.transfers;
    into.hits += s.hits;
    into.misses += s.misses;
    into.prefetchHits += s.prefetchHits;
    into.latePrefetchHits += s.latePrefetchHits;
    into.prefetches += s.prefetches;
    into.wastedPrefetches += s.wastedPrefetches;
    into.droppedPrefetches += s.droppedPrefetches;
    into.skipped += s.skipped;
    into.replaced += s.replaced;
}

} // namespace

// The step loop is one class so that its state (clock, copy stream, cache, statistics) is shared by the
// three phases of a layer without a dozen parameters; see docs/methods.md "Offload simulator" for the rules.
class Simulation {
public:
    Simulation(const RoutingTrace& trace, std::span<const PredictionSet> predictions, const ComputeModel& compute,
        const SimConfig& config);
    SimResult run(const ProgressFn& progress, const StopToken* stop);

private:
    void demandSet(int64_t step, int layer);
    void buildNextUses();
    int64_t nextUse(int id) const;
    EvictionKey keyOf(int id) const;
    double transfer(int64_t step, int layer, int expert, bool prefetch, double issue, SimLayerStats& stats);
    void runLayer(int64_t step, int layer, SimLayerStats& stats);
    void prefetchFor(int64_t step, int source, double issue);
    bool preemptPrefetch(int64_t step, int id, int layer);
    void countReplaced(int64_t step, int layer, SimLayerStats& stats);
    SimLayerStats& statsFor(int64_t step, int layer)
    {
        return (step < m_config.warmupSteps ? m_warmupStats : m_stats)[static_cast<std::size_t>(layer)];
    }

    const RoutingTrace& m_trace;
    const ComputeModel& m_compute;
    SimConfig m_config;
    int m_layers = 0;
    int m_experts = 0;
    int m_topK = 0;
    int m_lookahead = 0;
    int m_budget = 0;
    std::vector<const PredictionSet*> m_bySource; // [L]
    Steps m_steps;
    ExpertCache m_cache;
    std::vector<std::vector<int>> m_targets; // [L]: ids pinned as prefetched for that layer of this step
    std::vector<std::vector<int32_t>> m_occurrences; // Belady: [id] steps that need it, ascending
    std::vector<std::size_t> m_cursor; // Belady: [id] first occurrence not yet used

    // Scratch of one layer.
    std::vector<int32_t> m_set; // distinct experts needed
    std::vector<int32_t> m_assign; // tokens per expert of m_set
    std::vector<int64_t> m_stamp; // [E]: == m_stampNow when in m_set
    std::vector<int32_t> m_slotOf; // [E]: index in m_set
    int64_t m_stampNow = 0;
    std::vector<char> m_run; // per m_set entry: resident or fetched, run by the layer
    std::vector<int32_t> m_ran, m_ranAssign;
    std::vector<int32_t> m_predicted; // predicted experts to fetch, best first

    double m_clock = 0; // compute stream
    double m_linkFree = 0; // copy stream
    int64_t m_position = 0; // step * L + layer
    int64_t m_timelineEnd = 0;
    std::vector<SimLayerStats> m_stats; // [L]
    std::vector<SimLayerStats> m_warmupStats; // [L], discarded
    SimResult m_result;
};

Simulation::Simulation(const RoutingTrace& trace, std::span<const PredictionSet> predictions,
    const ComputeModel& compute, const SimConfig& config)
    : m_trace(trace)
    , m_compute(compute)
    , m_config(config)
    , m_layers(trace.numMoeLayers())
    , m_experts(trace.numExperts)
    , m_topK(trace.topK)
    , m_bySource(static_cast<std::size_t>(m_layers), nullptr)
    , m_steps(buildSteps(trace, config.batch))
    , m_cache(config.cache, compute.costs, m_layers)
    , m_targets(static_cast<std::size_t>(m_layers))
    , m_stamp(static_cast<std::size_t>(m_experts), -1)
    , m_slotOf(static_cast<std::size_t>(m_experts), 0)
    , m_stats(static_cast<std::size_t>(m_layers))
    , m_warmupStats(static_cast<std::size_t>(m_layers))
{
    if (config.policy != SimPolicy::OnDemand) {
        m_lookahead = predictions.front().lookahead;
        m_budget = predictions.front().budget;
        for (const PredictionSet& p : predictions)
            m_bySource[static_cast<std::size_t>(p.source)] = &p;
    }
    m_timelineEnd = config.timelineSteps;
    if (config.eviction == Eviction::Belady)
        buildNextUses();
}

// The distinct experts layer `layer` runs at `step` (m_set, with tokens per expert in m_assign): the
// routed ones, or under speculative execution past the first d layers, each token's predicted top-k.
void Simulation::demandSet(int64_t step, int layer)
{
    ++m_stampNow;
    m_set.clear();
    m_assign.clear();
    const bool speculative = m_config.policy == SimPolicy::Speculative && layer >= m_lookahead;
    const PredictionSet* pred = speculative ? m_bySource[static_cast<std::size_t>(layer - m_lookahead)] : nullptr;
    const std::vector<int32_t>& routed = m_trace.routed[static_cast<std::size_t>(layer)];
    for (int64_t i = m_steps.offsets[step]; i < m_steps.offsets[step + 1]; ++i) {
        const int64_t t = m_steps.tokens[static_cast<std::size_t>(i)];
        const int32_t* row = pred ? pred->ids.data() + t * m_budget : routed.data() + t * m_topK;
        for (int j = 0; j < m_topK; ++j) {
            const int32_t e = row[j];
            if (m_stamp[static_cast<std::size_t>(e)] != m_stampNow) {
                m_stamp[static_cast<std::size_t>(e)] = m_stampNow;
                m_slotOf[static_cast<std::size_t>(e)] = static_cast<int32_t>(m_set.size());
                m_set.push_back(e);
                m_assign.push_back(0);
            }
            ++m_assign[static_cast<std::size_t>(m_slotOf[static_cast<std::size_t>(e)])];
        }
    }
}

void Simulation::buildNextUses()
{
    m_occurrences.assign(static_cast<std::size_t>(m_layers) * static_cast<std::size_t>(m_experts), {});
    m_cursor.assign(m_occurrences.size(), 0);
    for (int64_t s = 0; s < m_steps.count(); ++s)
        for (int l = 0; l < m_layers; ++l) {
            demandSet(s, l);
            const std::size_t base = static_cast<std::size_t>(l) * static_cast<std::size_t>(m_experts);
            for (const int32_t e : m_set)
                m_occurrences[base + static_cast<std::size_t>(e)].push_back(static_cast<int32_t>(s));
        }
}

// Belady: the position of the next step at or after the current one that needs `id`.
int64_t Simulation::nextUse(int id) const
{
    const auto& occ = m_occurrences[static_cast<std::size_t>(id)];
    const std::size_t at = m_cursor[static_cast<std::size_t>(id)];
    if (at >= occ.size())
        return kNever;
    return static_cast<int64_t>(occ[at]) * m_layers + id / m_experts;
}

EvictionKey Simulation::keyOf(int id) const
{
    const CacheEntry& e = m_cache.entry(id);
    switch (m_config.eviction) {
    case Eviction::Lru:
        return { e.lastUse, 0 };
    case Eviction::Lfu:
        return { e.uses, e.lastUse };
    case Eviction::Belady:
        return { -nextUse(id), 0 };
    }
    return { 0, 0 };
}

// Queues one expert on the copy stream at `issue`; returns its arrival.
double Simulation::transfer(int64_t step, int layer, int expert, bool prefetch, double issue, SimLayerStats& stats)
{
    const double bytes = m_compute.costs.bytesOf(layer, expert);
    const double start = std::max(issue, m_linkFree);
    const double end = start + m_config.linkLatency + bytes / m_config.linkBandwidth;
    m_linkFree = end;
    stats.bytes += bytes;
    ++stats.transfers;
    if (step < m_timelineEnd)
        m_result.transfers.push_back(SimTransfer { step, layer, expert, prefetch, issue, start, end });
    return end;
}

// Global byte budget only: a demand fetch that finds nothing evictable takes the place of a pending
// prefetch, the one for the farthest layer, worst-ranked first.
bool Simulation::preemptPrefetch(int64_t step, int id, int layer)
{
    for (int target = m_layers - 1; target > layer; --target) {
        auto& list = m_targets[static_cast<std::size_t>(target)];
        for (std::size_t i = list.size(); i-- > 0;) {
            const int victim = list[i];
            CacheEntry& v = m_cache.entry(victim);
            if (!v.resident || v.pin != Pin::Prefetch || m_cache.poolOf(victim) != m_cache.poolOf(id))
                continue;
            if (v.prefetchedUnused)
                ++statsFor(step, target).wastedPrefetches;
            m_cache.evict(victim);
            list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
            return true;
        }
    }
    return false;
}

void Simulation::runLayer(int64_t step, int layer, SimLayerStats& stats)
{
    const std::span<const int64_t> contexts(m_steps.contexts.data() + m_steps.offsets[step],
        static_cast<std::size_t>(m_steps.offsets[step + 1] - m_steps.offsets[step]));
    const double start = m_clock;
    const double pre = m_compute.preTime(layer, contexts);
    const double router = start + pre; // routing and this layer's predictions are known here
    m_position = step * m_layers + layer;
    demandSet(step, layer);
    const int base = layer * m_experts;
    double ready = router;

    // (a) needed and resident (or in flight): hits; pinned for the layer.
    m_run.assign(m_set.size(), 0);
    for (std::size_t i = 0; i < m_set.size(); ++i) {
        const int id = base + m_set[i];
        CacheEntry& e = m_cache.entry(id);
        if (!e.resident)
            continue;
        if (e.prefetchedUnused) {
            ++stats.prefetchHits;
            if (e.arrival > router)
                ++stats.latePrefetchHits;
            e.prefetchedUnused = false;
        } else {
            ++stats.hits;
        }
        ready = std::max(ready, e.arrival);
        m_cache.pin(id, Pin::Need);
        m_run[i] = 1;
    }
    // (b) what was prefetched for this layer and is not needed: wasted, evictable from now on.
    for (const int id : m_targets[static_cast<std::size_t>(layer)]) {
        CacheEntry& e = m_cache.entry(id);
        if (!e.resident || e.pin != Pin::Prefetch)
            continue;
        if (e.prefetchedUnused) {
            ++stats.wastedPrefetches;
            e.prefetchedUnused = false;
        }
        m_cache.release(id, keyOf(id));
    }
    m_targets[static_cast<std::size_t>(layer)].clear();
    // (c) misses: fetched on demand, or under speculative execution left out.
    const bool speculative = m_config.policy == SimPolicy::Speculative && layer >= m_lookahead;
    for (std::size_t i = 0; i < m_set.size(); ++i) {
        if (m_run[i])
            continue;
        if (speculative) {
            ++stats.skipped;
            continue;
        }
        const int id = base + m_set[i];
        while (!m_cache.makeRoom(id))
            if (!preemptPrefetch(step, id, layer))
                throw std::logic_error("offload simulator: no room for a needed expert");
        m_cache.admit(id);
        CacheEntry& e = m_cache.entry(id);
        e.arrival = transfer(step, layer, m_set[i], false, router, stats);
        m_cache.pin(id, Pin::Need);
        ready = std::max(ready, e.arrival);
        ++stats.misses;
        m_run[i] = 1;
    }
    // Uses: recency, frequency, and (Belady) the cursor past this step for every needed expert.
    m_ran.clear();
    m_ranAssign.clear();
    for (std::size_t i = 0; i < m_set.size(); ++i) {
        const int id = base + m_set[i];
        if (!m_cursor.empty())
            ++m_cursor[static_cast<std::size_t>(id)];
        if (!m_run[i])
            continue;
        CacheEntry& e = m_cache.entry(id);
        e.lastUse = m_position;
        ++e.uses;
        m_ran.push_back(m_set[i]);
        m_ranAssign.push_back(m_assign[i]);
    }
    if (speculative)
        countReplaced(step, layer, stats);
    // (d) prefetch for layer + d, issued at this router point after this layer's demand fetches.
    if (m_config.policy != SimPolicy::OnDemand && layer + m_lookahead < m_layers)
        prefetchFor(step, layer, router);

    const int tokens = static_cast<int>(contexts.size());
    const double moe = m_compute.moeTime(layer, m_ran, m_ranAssign, tokens);
    m_clock = ready + moe;
    for (const int32_t e : m_ran)
        m_cache.release(base + e, keyOf(base + e));
    stats.compute += pre + moe;
    stats.stall += ready - router;
    if (step < m_timelineEnd)
        m_result.timeline.push_back(SimLayerEvent { step, layer, start, router, ready, m_clock, m_ran });
}

// Speculative execution: routed (token, expert) pairs the layer does not run, because the token's predicted
// top-k does not hold the expert or the predicted expert was not resident.
void Simulation::countReplaced(int64_t step, int layer, SimLayerStats& stats)
{
    const PredictionSet& pred = *m_bySource[static_cast<std::size_t>(layer - m_lookahead)];
    const std::vector<int32_t>& routed = m_trace.routed[static_cast<std::size_t>(layer)];
    for (int64_t i = m_steps.offsets[step]; i < m_steps.offsets[step + 1]; ++i) {
        const int64_t t = m_steps.tokens[static_cast<std::size_t>(i)];
        const int32_t* want = routed.data() + t * m_topK;
        const int32_t* ran = pred.ids.data() + t * m_budget;
        for (int j = 0; j < m_topK; ++j) {
            const int32_t e = want[j];
            const bool predicted = std::find(ran, ran + m_topK, e) != ran + m_topK;
            const bool resident = predicted && m_run[static_cast<std::size_t>(m_slotOf[static_cast<std::size_t>(e)])];
            if (!resident)
                ++stats.replaced;
        }
    }
}

// At layer `source`'s router point: fetch the predicted experts of layer source + d (rank-major over the
// batch's tokens: every token's best guess first) that are not resident, into free or evictable room only
// (no room: dropped); pin every predicted expert until that layer's router point.
void Simulation::prefetchFor(int64_t step, int source, double issue)
{
    const int target = source + m_lookahead;
    SimLayerStats& stats = statsFor(step, target);
    const PredictionSet& pred = *m_bySource[static_cast<std::size_t>(source)];
    const int base = target * m_experts;
    auto& pinned = m_targets[static_cast<std::size_t>(target)];
    // The batch's predictions, rank-major and distinct; the resident ones are pinned first, so that fetching
    // one predicted expert never evicts another.
    ++m_stampNow;
    m_predicted.clear();
    for (int r = 0; r < m_budget; ++r) {
        for (int64_t i = m_steps.offsets[step]; i < m_steps.offsets[step + 1]; ++i) {
            const int64_t t = m_steps.tokens[static_cast<std::size_t>(i)];
            const int32_t e = pred.ids[static_cast<std::size_t>(t * m_budget + r)];
            if (m_stamp[static_cast<std::size_t>(e)] == m_stampNow)
                continue;
            m_stamp[static_cast<std::size_t>(e)] = m_stampNow;
            const int id = base + e;
            CacheEntry& entry = m_cache.entry(id);
            if (!entry.resident) {
                m_predicted.push_back(e);
            } else if (entry.pin == Pin::None) {
                m_cache.pin(id, Pin::Prefetch);
                pinned.push_back(id);
            }
        }
    }
    for (const int32_t e : m_predicted) {
        const int id = base + e;
        if (!m_cache.makeRoom(id)) {
            ++stats.droppedPrefetches;
            continue;
        }
        m_cache.admit(id);
        CacheEntry& entry = m_cache.entry(id);
        entry.arrival = transfer(step, target, e, true, issue, stats);
        entry.prefetchedUnused = true;
        entry.lastUse = m_position;
        m_cache.pin(id, Pin::Prefetch);
        pinned.push_back(id);
        ++stats.prefetches;
    }
}

SimResult Simulation::run(const ProgressFn& progress, const StopToken* stop)
{
    const int64_t numSteps = m_steps.count();
    m_result.stepTimes.reserve(static_cast<std::size_t>(numSteps));
    std::vector<double> tokenTimes, tokenCompute;
    double stallSum = 0, computeSum = 0;
    for (int64_t s = 0; s < numSteps; ++s) {
        if ((s & 63) == 0) {
            if (stop && stop->stopRequested())
                throw Cancelled();
            if (progress && !progress(Progress { "simulate", s, numSteps }))
                throw Cancelled();
        }
        const double stepStart = m_clock;
        double compute = 0, stall = 0;
        for (int l = 0; l < m_layers; ++l) {
            SimLayerStats& stats = statsFor(s, l);
            const double c0 = stats.compute, s0 = stats.stall;
            runLayer(s, l, stats);
            compute += stats.compute - c0;
            stall += stats.stall - s0;
        }
        const std::span<const int64_t> contexts(m_steps.contexts.data() + m_steps.offsets[s],
            static_cast<std::size_t>(m_steps.offsets[s + 1] - m_steps.offsets[s]));
        const double tail = m_compute.tailTime(contexts);
        m_clock += tail;
        compute += tail;
        const double stepTime = m_clock - stepStart;
        m_result.stepTimes.push_back(stepTime);
        if (s < m_config.warmupSteps)
            continue;
        const int64_t tokens = m_steps.offsets[s + 1] - m_steps.offsets[s];
        ++m_result.steps;
        m_result.tokens += tokens;
        m_result.totalTime += stepTime;
        for (int64_t i = 0; i < tokens; ++i)
            tokenTimes.push_back(stepTime);
        computeSum += compute * static_cast<double>(tokens);
        stallSum += stall * static_cast<double>(tokens);
    }
    if (progress)
        progress(Progress { "simulate", numSteps, numSteps });

    SimResult& r = m_result;
    r.layers = m_stats;
    for (const SimLayerStats& l : m_stats)
        add(r.total, l);
    if (r.tokens > 0) {
        const double n = static_cast<double>(r.tokens);
        double sum = 0;
        for (const double x : tokenTimes)
            sum += x;
        r.tpotMean = sum / n;
        r.computePerToken = computeSum / n;
        r.stallPerToken = stallSum / n;
        r.bytesPerToken = r.total.bytes / n;
        r.tokensPerSecond = r.totalTime > 0 ? n / r.totalTime : 0;
        std::sort(tokenTimes.begin(), tokenTimes.end());
        r.tpotP50 = percentile(tokenTimes, 0.50);
        r.tpotP90 = percentile(tokenTimes, 0.90);
        r.tpotP99 = percentile(tokenTimes, 0.99);
        r.tpotMax = tokenTimes.back();
    }
    return std::move(m_result);
}

SimResult simulate(const RoutingTrace& trace, std::span<const PredictionSet> predictions, const ComputeModel& compute,
    const SimConfig& config, const ProgressFn& progress, const StopToken* stop)
{
    validateSimulation(trace, predictions, compute, config);
    Simulation sim(trace, predictions, compute, config);
    return sim.run(progress, stop);
}

} // namespace moeatlas
