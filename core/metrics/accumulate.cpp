// The scoring kernel: one read of each layer's records, fp64 sums per (domain, layer, expert).
// PEU needs r_l (the mean top-1 local probability of the domain) before it can mask: pass 1
// caches each token's top-K_a pool (ids + logits, 8 bytes per entry) and sums the top-1 local
// probabilities; pass 2 walks the cache with r_l known. The cache avoids reading and
// re-selecting the logits twice (PreMoE arXiv 2505.17639 v3 notes either works).
#include "metrics/scores.h"

#include "util/error.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

namespace moeatlas {

std::string peuTransformName(PeuTransform f)
{
    switch (f) {
    case PeuTransform::MaxSigmoid:
        return "max-sigmoid";
    case PeuTransform::Sigmoid:
        return "sigmoid";
    case PeuTransform::Exp:
        return "exp";
    case PeuTransform::Identity:
        return "identity";
    }
    return "?";
}

PeuTransform parsePeuTransform(const std::string& name)
{
    for (PeuTransform f :
        { PeuTransform::MaxSigmoid, PeuTransform::Sigmoid, PeuTransform::Exp, PeuTransform::Identity })
        if (peuTransformName(f) == name)
            return f;
    throw InputError("unknown PEU transform \"" + name + "\" (expected max-sigmoid, sigmoid, exp or identity)");
}

double applyPeuTransform(PeuTransform f, double s)
{
    switch (f) {
    case PeuTransform::MaxSigmoid:
        return std::max(s, 1.0 / (1.0 + std::exp(-s)));
    case PeuTransform::Sigmoid:
        return 1.0 / (1.0 + std::exp(-s));
    case PeuTransform::Exp:
        return std::exp(s);
    case PeuTransform::Identity:
        return s;
    }
    return s;
}

ResolvedParams resolveParams(const ScoreParams& params, int numExperts, int topK)
{
    ResolvedParams r;
    r.poolK = params.peu.poolK == 0 ? topK : params.peu.poolK;
    r.transform = params.peu.transform;
    r.bandMin = params.bandMin == 0 ? std::max(1, topK - 2) : params.bandMin;
    r.bandMax = params.bandMax == 0 ? topK : params.bandMax;
    r.seed = params.seed;
    if (r.poolK < 1 || r.poolK > numExperts)
        throw RequestError("poolK",
            "PEU pool size K_a = " + std::to_string(r.poolK) + " is outside [1, " + std::to_string(numExperts)
                + "] (the number of experts)");
    if (r.bandMin < 1 || r.bandMax < r.bandMin || r.bandMax > numExperts)
        throw RequestError("band",
            "dynamic-k band " + std::to_string(r.bandMin) + ":" + std::to_string(r.bandMax)
                + " must satisfy 1 <= min <= max <= " + std::to_string(numExperts) + " (the number of experts)");
    return r;
}

void ScoreAccumulator::reset(int domains, int layers, int experts, int k, const ResolvedParams& p, bool norms)
{
    numDomains = domains;
    numLayers = layers;
    numExperts = experts;
    topK = k;
    params = p;
    hasNorms = norms;
    const size_t nDl = static_cast<size_t>(domains) * layers;
    const size_t nDle = nDl * experts;
    tokens.assign(nDl, 0.0);
    peuTopProbSum.assign(nDl, 0.0);
    entropySum.assign(nDl, 0.0);
    for (auto* v : { &peuSum, &selectCount, &actLogitSum, &allLogitSum, &softMassSum, &m99Hist })
        v->assign(nDle, 0.0);
    normSum.assign(norms ? nDle : 0, 0.0);
    gatedNormSum.assign(norms ? nDle : 0, 0.0);
    coactivation.assign(nDle * experts, 0.0);
    dynamicKHist.assign(nDl * static_cast<size_t>(bandBins()), 0.0);
    patterns.assign(nDl, {});
    ExactKSums empty;
    empty.reset(experts, bandBins());
    probmoe.assign(nDl, empty);
}

ScoreAccumulator& ScoreAccumulator::operator+=(const ScoreAccumulator& o)
{
    if (o.numLayers != numLayers || o.numExperts != numExperts || o.topK != topK || o.params.poolK != params.poolK
        || o.params.transform != params.transform || o.params.bandMin != params.bandMin
        || o.params.bandMax != params.bandMax || o.hasNorms != hasNorms || o.domainNames != domainNames)
        throw InputError("cannot add score accumulators of different models, domains or "
                         "parameters");
    auto add = [](std::vector<double>& a, const std::vector<double>& b) {
        for (size_t i = 0; i < a.size(); ++i)
            a[i] += b[i];
    };
    for (auto [a, b] : { std::pair { &tokens, &o.tokens }, { &peuTopProbSum, &o.peuTopProbSum }, { &peuSum, &o.peuSum },
             { &selectCount, &o.selectCount }, { &actLogitSum, &o.actLogitSum }, { &allLogitSum, &o.allLogitSum },
             { &softMassSum, &o.softMassSum }, { &normSum, &o.normSum }, { &gatedNormSum, &o.gatedNormSum },
             { &entropySum, &o.entropySum }, { &m99Hist, &o.m99Hist }, { &coactivation, &o.coactivation },
             { &dynamicKHist, &o.dynamicKHist } })
        add(*a, *b);
    for (size_t i = 0; i < patterns.size(); ++i)
        for (const auto& [key, count] : o.patterns[i])
            patterns[i][key] += count;
    for (size_t i = 0; i < probmoe.size(); ++i)
        probmoe[i] += o.probmoe[i];
    return *this;
}

namespace {

// Work of one MoE layer; writes only the accumulator's entries of its layer slot, so layers
// run on separate threads without locks (HDF5 reads take the atlas's own lock).
class LayerScorer {
public:
    LayerScorer(const AtlasFile& atlas, ScoreAccumulator& acc, const std::vector<int16_t>& domain, int slot,
        int64_t blockTokens)
        : m_atlas(atlas)
        , m_acc(acc)
        , m_domain(domain)
        , m_slot(slot)
        , m_layer(atlas.model().moeLayers[static_cast<size_t>(slot)])
        , m_block(blockTokens)
        , m_exactK(acc.numExperts, acc.exactKParams())
    {
    }

    // Returns false when `keepGoing` asked to stop.
    template <typename KeepGoing> bool run(KeepGoing&& keepGoing)
    {
        const int64_t total = m_atlas.numTokens();
        const int pool = m_acc.params.poolK;
        m_poolIds.resize(static_cast<size_t>(total * pool));
        m_poolLogits.resize(static_cast<size_t>(total * pool));
        for (int64_t begin = 0; begin < total; begin += m_block) {
            const int64_t n = std::min(m_block, total - begin);
            passOne(begin, n);
            if (!keepGoing(n))
                return false;
        }
        passTwo(total);
        return true;
    }

private:
    void passOne(int64_t begin, int64_t n)
    {
        const int numE = m_acc.numExperts, k = m_acc.topK, pool = m_acc.params.poolK;
        const std::vector<float> logits = m_atlas.readLogits(m_layer, begin, n);
        const std::vector<int32_t> ids = m_atlas.readTopkIds(m_layer, begin, n);
        std::vector<float> weights, norms;
        if (m_acc.hasNorms) {
            weights = m_atlas.readTopkWeights(m_layer, begin, n);
            norms = m_atlas.readExpertNorms(m_layer, begin, n);
        }
        const double logE = numE > 1 ? std::log(static_cast<double>(numE)) : 1.0;
        std::vector<double> prob(static_cast<size_t>(numE)), sorted(static_cast<size_t>(numE));
        std::vector<int32_t> pattern(static_cast<size_t>(k));
        for (int64_t t = 0; t < n; ++t) {
            const int d = m_domain[static_cast<size_t>(begin + t)];
            const float* s = logits.data() + t * numE;
            const size_t base = m_acc.dle(d, m_slot, 0);
            m_acc.tokens[m_acc.dl(d, m_slot)] += 1.0;

            // Full softmax: soft mass, token entropy (normalised by log E) and m99.
            double mx = s[0];
            for (int e = 1; e < numE; ++e)
                mx = std::max(mx, static_cast<double>(s[e]));
            double z = 0.0;
            for (int e = 0; e < numE; ++e) {
                prob[static_cast<size_t>(e)] = std::exp(static_cast<double>(s[e]) - mx);
                z += prob[static_cast<size_t>(e)];
            }
            // H = -sum p log p = log z - sum p (s - mx): no log per expert.
            double weighted = 0.0;
            int positive = 0;
            for (int e = 0; e < numE; ++e) {
                const double p = prob[static_cast<size_t>(e)] / z;
                prob[static_cast<size_t>(e)] = p;
                weighted += p * (static_cast<double>(s[e]) - mx);
                m_acc.softMassSum[base + static_cast<size_t>(e)] += p;
                m_acc.allLogitSum[base + static_cast<size_t>(e)] += s[e];
                positive += s[e] > 0.0f;
            }
            m_acc.entropySum[m_acc.dl(d, m_slot)] += (std::log(z) - weighted) / logE;
            // m99 (ProbMoE's routing diversity): fewest experts whose sorted probabilities
            // reach 99% of the mass.
            std::copy(prob.begin(), prob.end(), sorted.begin());
            std::sort(sorted.begin(), sorted.end(), std::greater<>());
            double cumulative = 0.0;
            int m99 = numE;
            for (int e = 0; e < numE; ++e) {
                cumulative += sorted[static_cast<size_t>(e)];
                if (cumulative >= 0.99) {
                    m99 = e + 1;
                    break;
                }
            }
            m_acc.m99Hist[base + static_cast<size_t>(m99 - 1)] += 1.0;
            // Dynamic-k (ProbMoE): k* = argmax_k prefix sum of sorted logits over the band,
            // i.e. the number of positive logits clamped to [bandMin, bandMax].
            const int kStar = std::clamp(positive, m_acc.params.bandMin, m_acc.params.bandMax);
            m_acc.dynamicKHist[m_acc.dl(d, m_slot) * static_cast<size_t>(m_acc.bandBins())
                + static_cast<size_t>(kStar - m_acc.params.bandMin)]
                += 1.0;

            selectPool(s, begin + t);
            const size_t cache = static_cast<size_t>((begin + t) * pool);
            double poolZ = 0.0;
            for (int i = 0; i < pool; ++i) {
                poolZ += std::exp(
                    static_cast<double>(m_poolLogits[cache + static_cast<size_t>(i)]) - m_poolLogits[cache]);
                m_acc.actLogitSum[base + static_cast<size_t>(m_poolIds[cache + static_cast<size_t>(i)])]
                    += m_poolLogits[cache + static_cast<size_t>(i)];
            }
            m_acc.peuTopProbSum[m_acc.dl(d, m_slot)] += 1.0 / poolZ; // p of the pool's top-1

            // Recorded routing: frequency/load, co-activation, patterns, REAP and EAN.
            const int32_t* row = ids.data() + t * k;
            for (int i = 0; i < k; ++i) {
                const size_t e = static_cast<size_t>(row[i]);
                m_acc.selectCount[base + e] += 1.0;
                for (int j = 0; j < k; ++j)
                    m_acc.coactivation[(base + e) * static_cast<size_t>(numE) + static_cast<size_t>(row[j])] += 1.0;
                if (m_acc.hasNorms) {
                    const double norm = norms[static_cast<size_t>(t * k + i)];
                    m_acc.normSum[base + e] += norm;
                    m_acc.gatedNormSum[base + e] += weights[static_cast<size_t>(t * k + i)] * norm;
                }
            }
            std::copy(row, row + k, pattern.begin());
            std::sort(pattern.begin(), pattern.end());
            m_key.assign(reinterpret_cast<const char*>(pattern.data()),
                pattern.size() * sizeof(int32_t)); // reused buffer: no allocation
            m_acc.patterns[m_acc.dl(d, m_slot)][m_key] += 1.0;
        }
        addExactK(begin, n, logits, ids);
    }

    // ProbMoE exact-k sums, one ExactKSums::add per run of tokens of one domain.
    void addExactK(int64_t begin, int64_t n, const std::vector<float>& logits, const std::vector<int32_t>& ids)
    {
        const int64_t numE = m_acc.numExperts, k = m_acc.topK;
        for (int64_t t0 = 0; t0 < n;) {
            const int d = m_domain[static_cast<size_t>(begin + t0)];
            int64_t t1 = t0 + 1;
            while (t1 < n && m_domain[static_cast<size_t>(begin + t1)] == d)
                ++t1;
            try {
                m_acc.probmoe[m_acc.dl(d, m_slot)].add(
                    m_exactK, logits.data() + t0 * numE, t1 - t0, ids.data() + t0 * k);
            } catch (const InputError& e) { // "logits: ..." or "subset: ...": say where
                throw InputError(m_atlas.path().string() + ": layers/" + std::to_string(m_layer) + ", tokens "
                    + std::to_string(begin + t0) + ".." + std::to_string(begin + t1 - 1) + ": " + e.what());
            }
            t0 = t1;
        }
    }

    // The K_a largest logits, largest first; ties keep the lower expert index first (a stable
    // descending sort), which the numpy reference reproduces with argsort(kind="stable").
    void selectPool(const float* s, int64_t token)
    {
        const int numE = m_acc.numExperts, pool = m_acc.params.poolK;
        int32_t* ids = m_poolIds.data() + token * pool;
        float* vals = m_poolLogits.data() + token * pool;
        int filled = 0;
        for (int e = 0; e < numE; ++e) {
            const float v = s[e];
            if (filled == pool && !(v > vals[pool - 1]))
                continue;
            int at = filled < pool ? filled++ : pool - 1;
            while (at > 0 && v > vals[at - 1]) { // strict: equal values stay in index order
                vals[at] = vals[at - 1];
                ids[at] = ids[at - 1];
                --at;
            }
            vals[at] = v;
            ids[at] = e;
        }
    }

    void passTwo(int64_t total)
    {
        const int pool = m_acc.params.poolK;
        std::vector<double> threshold(static_cast<size_t>(m_acc.numDomains), 0.0);
        for (int d = 0; d < m_acc.numDomains; ++d) {
            const double count = m_acc.tokens[m_acc.dl(d, m_slot)];
            threshold[static_cast<size_t>(d)] = count > 0 ? m_acc.peuTopProbSum[m_acc.dl(d, m_slot)] / count : 0.0;
        }
        std::vector<double> local(static_cast<size_t>(pool));
        for (int64_t t = 0; t < total; ++t) {
            const int d = m_domain[static_cast<size_t>(t)];
            const size_t cache = static_cast<size_t>(t * pool);
            const double top = m_poolLogits[cache];
            double poolZ = 0.0;
            for (int i = 0; i < pool; ++i) {
                local[static_cast<size_t>(i)]
                    = std::exp(static_cast<double>(m_poolLogits[cache + static_cast<size_t>(i)]) - top);
                poolZ += local[static_cast<size_t>(i)];
            }
            const size_t base = m_acc.dle(d, m_slot, 0);
            const double r = threshold[static_cast<size_t>(d)];
            for (int i = 0; i < pool; ++i) {
                if (local[static_cast<size_t>(i)] / poolZ >= r)
                    m_acc.peuSum[base + static_cast<size_t>(m_poolIds[cache + static_cast<size_t>(i)])]
                        += applyPeuTransform(m_acc.params.transform, m_poolLogits[cache + static_cast<size_t>(i)]);
            }
        }
        m_poolIds = {};
        m_poolLogits = {};
    }

    const AtlasFile& m_atlas;
    ScoreAccumulator& m_acc;
    const std::vector<int16_t>& m_domain;
    int m_slot;
    int m_layer;
    int64_t m_block;
    std::vector<int32_t> m_poolIds; // [T, K_a] cache between the passes
    std::vector<float> m_poolLogits; // [T, K_a]
    std::string m_key; // pattern key buffer
    ExactK m_exactK; // one token's exact-k scratch, reused
};

} // namespace

ScoreAccumulator accumulateScores(
    const AtlasFile& atlas, const ScoreParams& params, const ProgressFn& progress, const StopToken* stop)
{
    const AtlasModelInfo& model = atlas.model();
    const int numLayers = static_cast<int>(model.moeLayers.size());
    if (atlas.completedLayers().size() != model.moeLayers.size())
        throw InputError(atlas.path().string() + ": not every MoE layer is complete; finish the capture first");
    ScoreAccumulator acc;
    const ResolvedParams resolved = resolveParams(params, model.numExperts, model.topK);
    const auto& domains = atlas.calibration().domains;
    acc.reset(static_cast<int>(domains.size()), numLayers, model.numExperts, model.topK, resolved,
        atlas.options().storeExpertNorms);
    for (const AtlasDomain& d : domains)
        acc.domainNames.push_back(d.name);
    const std::vector<int16_t> domain = atlas.domainIds();
    for (int16_t d : domain)
        if (d < 0 || d >= acc.numDomains)
            throw InputError(atlas.path().string() + ": token domain id " + std::to_string(d) + " is outside [0, "
                + std::to_string(acc.numDomains) + ")");

    const int64_t total = atlas.numTokens() * numLayers;
    std::atomic<int64_t> done { 0 };
    std::atomic<int> nextSlot { 0 };
    std::atomic<bool> stopped { false };
    std::mutex reportMutex;
    std::exception_ptr failure;
    auto keepGoing = [&](int64_t n) {
        const int64_t now = done.fetch_add(n) + n;
        if (stop != nullptr && stop->stopRequested())
            stopped = true;
        if (progress && !stopped) {
            std::lock_guard lock(reportMutex);
            if (!progress(Progress { "scoring", now, total }))
                stopped = true;
        }
        return !stopped.load();
    };
    auto worker = [&] {
        try {
            for (int slot = nextSlot++; slot < numLayers && !stopped; slot = nextSlot++) {
                LayerScorer scorer(atlas, acc, domain, slot, std::max<int64_t>(1, params.blockTokens));
                if (!scorer.run(keepGoing))
                    return;
            }
        } catch (...) {
            std::lock_guard lock(reportMutex);
            if (!failure)
                failure = std::current_exception();
            stopped = true;
        }
    };
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const int threads
        = std::clamp(params.threads > 0 ? params.threads : static_cast<int>(hw), 1, std::max(1, numLayers));
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i)
        pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool)
        t.join();
    if (failure)
        std::rethrow_exception(failure);
    if (stopped)
        throw Cancelled();
    return acc;
}

} // namespace moeatlas
