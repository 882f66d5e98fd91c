// Routing rules on recorded logits: per-token k histograms and threshold calibration. One worker per
// MoE layer at a time reads the layer's logits in token blocks (as the scoring kernel does).
#include "metrics/routing_rule_stats.h"

#include "util/error.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>

namespace moeatlas {

namespace {

constexpr int64_t kBlockTokens = 4096;

// Refuses an atlas whose logits cannot be read: no tokens, or a MoE layer the capture did not finish.
void requireLogits(const AtlasFile& atlas)
{
    const std::string where = atlas.path().string();
    if (atlas.numTokens() == 0)
        throw RequestError("routing",
            where
                + " records no tokens (/tokens/ids is empty), so there are no router logits to apply a routing rule "
                  "to");
    const std::vector<int> done = atlas.completedLayers();
    for (const int layer : atlas.model().moeLayers)
        if (std::find(done.begin(), done.end(), layer) == done.end())
            throw RequestError("routing",
                where + ": MoE layer " + std::to_string(layer) + " has no recorded router logits (/layers/"
                    + std::to_string(layer)
                    + "/router_logits is incomplete: the capture did not finish that layer); resume the capture "
                      "before applying a routing rule");
    const auto numDomains = static_cast<int>(atlas.calibration().domains.size());
    for (const int16_t d : atlas.domainIds())
        if (d < 0 || d >= numDomains)
            throw InputError(where + ": token domain id " + std::to_string(d) + " is outside [0, "
                + std::to_string(numDomains) + ")");
}

// One token's routing probabilities: fp32 softmax over all experts, the first `keep` sorted descending.
// Returns the number of logits > 0.
int sortedSoftmax(const float* logits, int numExperts, int keep, std::vector<float>& p)
{
    float mx = logits[0];
    int positive = 0;
    for (int e = 0; e < numExperts; ++e) {
        mx = std::max(mx, logits[e]);
        positive += logits[e] > 0.0f ? 1 : 0;
    }
    float sum = 0.0f;
    for (int e = 0; e < numExperts; ++e) {
        p[static_cast<std::size_t>(e)] = std::exp(logits[e] - mx);
        sum += p[static_cast<std::size_t>(e)];
    }
    for (int e = 0; e < numExperts; ++e)
        p[static_cast<std::size_t>(e)] /= sum;
    std::partial_sort(p.begin(), p.begin() + keep, p.end(), std::greater<>());
    return positive;
}

// Runs `perLayer(slot, keepGoing)` for every MoE layer on `threads` workers; keepGoing(n) reports n
// more tokens done and says whether to go on. Rethrows a worker's failure; Cancelled on a stop.
void overLayers(const AtlasFile& atlas, int threads, const ProgressFn& progress, const StopToken* stop,
    const std::string& stage, const std::function<void(int, const std::function<bool(int64_t)>&)>& perLayer)
{
    const auto numLayers = static_cast<int>(atlas.model().moeLayers.size());
    const int64_t total = atlas.numTokens() * numLayers;
    std::atomic<int64_t> done { 0 };
    std::atomic<int> nextSlot { 0 };
    std::atomic<bool> stopped { false };
    std::mutex mutex;
    std::exception_ptr failure;
    const std::function<bool(int64_t)> keepGoing = [&](int64_t n) {
        const int64_t now = done.fetch_add(n) + n;
        if (stop != nullptr && stop->stopRequested())
            stopped = true;
        if (progress && !stopped) {
            const std::lock_guard lock(mutex);
            if (!progress(Progress { stage, now, total }))
                stopped = true;
        }
        return !stopped.load();
    };
    const auto worker = [&] {
        try {
            for (int slot = nextSlot++; slot < numLayers && !stopped; slot = nextSlot++)
                perLayer(slot, keepGoing);
        } catch (...) {
            const std::lock_guard lock(mutex);
            if (!failure)
                failure = std::current_exception();
            stopped = true;
        }
    };
    const unsigned hw = std::max(1U, std::thread::hardware_concurrency());
    const int n = std::clamp(threads > 0 ? threads : static_cast<int>(hw), 1, std::max(1, numLayers));
    std::vector<std::thread> pool;
    pool.reserve(static_cast<std::size_t>(n - 1));
    for (int i = 1; i < n; ++i)
        pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool)
        t.join();
    if (failure)
        std::rethrow_exception(failure);
    if (stopped)
        throw Cancelled();
}

// Calls fn(token, sorted, positives) for every token of one layer; false when stopped.
template <typename Fn>
bool forEachToken(const AtlasFile& atlas, int layer, int keep, const std::function<bool(int64_t)>& keepGoing, Fn&& fn)
{
    const int64_t total = atlas.numTokens();
    const int numE = atlas.model().numExperts;
    std::vector<float> p(static_cast<std::size_t>(numE));
    for (int64_t begin = 0; begin < total; begin += kBlockTokens) {
        const int64_t n = std::min(kBlockTokens, total - begin);
        const std::vector<float> logits = atlas.readLogits(layer, begin, n);
        for (int64_t t = 0; t < n; ++t) {
            const int positive = sortedSoftmax(logits.data() + t * numE, numE, keep, p);
            fn(begin + t, p.data(), positive);
        }
        if (!keepGoing(n))
            return false;
    }
    return true;
}

// The calibrated threshold of one layer from the band slots' probabilities `v` (any order; sorted
// here) of `numTokens` tokens: see calibrateThresholds.
double thresholdFor(std::vector<float>& v, int64_t numTokens, const RoutingRule& rule)
{
    if (v.empty())
        return 1.0;
    std::sort(v.begin(), v.end(), std::greater<>());
    // Mean k at threshold t = KMIN + #{v >= t} / T: aim for #{v >= t} = (M - KMIN) T.
    const double target = (rule.meanK - rule.kMin) * static_cast<double>(numTokens);
    // Candidate "above every value": count 0.
    double best = std::nextafter(v.front(), std::numeric_limits<float>::infinity());
    double bestDistance = target;
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (i + 1 < v.size() && v[i + 1] == v[i])
            continue; // the count of v[i] includes its ties
        const double distance = std::fabs(static_cast<double>(i + 1) - target);
        if (distance < bestDistance) { // strict: ties keep the higher threshold
            bestDistance = distance;
            best = v[i];
        }
        if (static_cast<double>(i + 1) > target)
            break; // counts only grow from here
    }
    return best;
}

RuleKStats emptyStats(const AtlasFile& atlas, const RoutingRule& rule)
{
    RuleKStats s;
    s.rule = rule;
    for (const AtlasDomain& d : atlas.calibration().domains)
        s.domains.push_back(d.name);
    s.layers = atlas.model().moeLayers;
    s.modelTopK = atlas.model().topK;
    s.maxK = rule.maxK(s.modelTopK);
    const auto rows = static_cast<std::size_t>(s.rows()), L = s.layers.size();
    s.tokens.assign(rows * L, 0.0);
    s.kSum.assign(rows * L, 0.0);
    s.kHist.assign(rows * L * (static_cast<std::size_t>(s.maxK) + 1), 0.0);
    return s;
}

void checkRule(const AtlasFile& atlas, const RoutingRule& rule)
{
    const int maxK = rule.maxK(atlas.model().topK);
    if (maxK < 1 || maxK > atlas.model().numExperts)
        throw RequestError("routing",
            "routing '" + rule.name() + "' routes up to " + std::to_string(maxK) + " experts; the atlas's router has "
                + std::to_string(atlas.model().numExperts));
}

} // namespace

double RuleKStats::meanK(int row, int layer) const
{
    const std::size_t i = static_cast<std::size_t>(row) * layers.size() + static_cast<std::size_t>(layer);
    return tokens[i] > 0.0 ? kSum[i] / tokens[i] : 0.0;
}

std::vector<double> RuleKStats::histogram(int row, int layer) const
{
    const auto bins = static_cast<std::size_t>(maxK) + 1;
    const std::size_t base = (static_cast<std::size_t>(row) * layers.size() + static_cast<std::size_t>(layer)) * bins;
    return { kHist.begin() + static_cast<std::ptrdiff_t>(base),
        kHist.begin() + static_cast<std::ptrdiff_t>(base + bins) };
}

RuleKStats routingRuleStats(
    const AtlasFile& atlas, const RoutingRule& rule, const ProgressFn& progress, const StopToken* stop, int threads)
{
    requireLogits(atlas);
    checkRule(atlas, rule);
    RuleKStats s = emptyStats(atlas, rule);
    const std::vector<int16_t> domain = atlas.domainIds();
    const std::size_t L = s.layers.size(), bins = static_cast<std::size_t>(s.maxK) + 1;
    const auto pooled = static_cast<std::size_t>(s.pooledRow());
    overLayers(atlas, threads, progress, stop, "routing " + rule.name(), [&](int slot, const auto& keepGoing) {
        const int layer = s.layers[static_cast<std::size_t>(slot)];
        const auto it = rule.thresholds.find(layer);
        // A threshold rule without this layer's threshold routes it with KMAX (every slot passes).
        const double threshold = it != rule.thresholds.end() ? it->second : -std::numeric_limits<double>::infinity();
        forEachToken(atlas, layer, s.maxK, keepGoing, [&](int64_t t, const float* sorted, int positive) {
            const int k = ruleTokenK(rule, s.modelTopK, sorted, positive, threshold);
            const auto d = static_cast<std::size_t>(domain[static_cast<std::size_t>(t)]);
            for (const std::size_t row : { d, pooled }) {
                const std::size_t i = row * L + static_cast<std::size_t>(slot);
                s.tokens[i] += 1.0;
                s.kSum[i] += k;
                s.kHist[i * bins + static_cast<std::size_t>(k)] += 1.0;
            }
        });
    });
    return s;
}

void calibrateThresholds(
    const AtlasFile& atlas, RoutingRule& rule, const ProgressFn& progress, const StopToken* stop, int threads)
{
    if (rule.kind != RoutingRule::Kind::Threshold)
        return;
    requireLogits(atlas);
    checkRule(atlas, rule);
    const std::vector<int>& layers = atlas.model().moeLayers;
    std::vector<double> thresholds(layers.size(), 1.0);
    const auto width = static_cast<std::size_t>(rule.kMax - rule.kMin);
    overLayers(atlas, threads, progress, stop, "calibrating " + rule.name(), [&](int slot, const auto& keepGoing) {
        std::vector<float> v;
        v.reserve(static_cast<std::size_t>(atlas.numTokens()) * width);
        const bool done = forEachToken(atlas, layers[static_cast<std::size_t>(slot)], rule.kMax, keepGoing,
            [&](int64_t, const float* sorted, int) { v.insert(v.end(), sorted + rule.kMin, sorted + rule.kMax); });
        if (done)
            thresholds[static_cast<std::size_t>(slot)] = thresholdFor(v, atlas.numTokens(), rule);
    });
    rule.thresholds.clear();
    for (std::size_t i = 0; i < layers.size(); ++i)
        rule.thresholds[layers[i]] = thresholds[i];
}

} // namespace moeatlas
