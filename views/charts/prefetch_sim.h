// The Prefetch tab's what-ifs: the offload simulator (workflows/simulate_workflow.h) on a bounded slice
// of the atlas's recorded sequences, with the on-demand baseline at the same cache and link, run off the
// GUI thread. The routing trace and every predictor's predictions are read from the atlas once and kept.
#pragma once

#include "charts/prefetch_data.h"
#include "workflows/simulate_workflow.h"

#include <QObject>
#include <QString>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

namespace moeatlas::views {

// What the what-if panel sets. The cache is slots per MoE layer, or a share of all routed experts' bytes
// held in one global budget (shown in GiB).
struct WhatIfSettings {
    std::string hardware = "a6000-pcie4"; // a built-in preset
    bool globalCache = false;
    int slots = 0; // per layer (globalCache false)
    double globalFraction = 0.25; // of all experts' bytes (globalCache true)
    double linkBandwidth = 0; // bytes/s; 0: the preset's
    SimPolicy policy = SimPolicy::Prefetch;
    Eviction eviction = Eviction::Lru;
    Predictor predictor = Predictor::Frequency;
    int lookahead = 1;
    int budget = 0; // 0: the model's top-k
    int64_t sequencesPerDomain = 8; // <= 0: every sequence
    // Predictors evaluated with speculative execution (/evaluation): each is also simulated speculative
    // (lookahead 1, budget top-k) at the same cache and link, for the speed side next to the loss change.
    std::vector<Predictor> speculative;
};

// The request the panel's settings make for `policy` (prepareSimulation), on `atlas`'s shapes. A global
// cache needs the bytes of all experts (PreparedSimulation::compute.costs).
SimulateRequest whatIfRequest(
    const std::filesystem::path& atlas, const WhatIfSettings& s, SimPolicy policy, double totalExpertBytes);

// One what-if run: the policy's result and the on-demand baseline on the same slice, cache, link and eviction.
struct WhatIfOutcome {
    WhatIfSettings settings;
    PreparedSimulation job; // the policy's, as prepared
    SimResult result;
    SimResult baseline;
    TraceSlice slice;
    double totalExpertBytes = 0;
    struct Speculative {
        Predictor predictor = Predictor::Oracle;
        std::optional<SimResult> result;
        QString error; // why it could not be simulated (e.g. predictions not recorded)
    };
    std::vector<Speculative> speculative;
};

// The atlas's trace and predictions, read on first use and kept (thread-safe; one per atlas).
class PrefetchSource {
public:
    explicit PrefetchSource(std::filesystem::path atlas);
    const std::filesystem::path& atlas() const { return m_atlas; }
    // The whole routing trace (readRoutingTrace).
    std::shared_ptr<const RoutingTrace> trace();
    // predictions() of the atlas on the whole trace, every source layer job.predictionSources() lists.
    std::vector<PredictionSet> predictionsFor(const PreparedSimulation& job, const StopToken* stop);

private:
    std::filesystem::path m_atlas;
    std::mutex m_mutex;
    std::shared_ptr<const RoutingTrace> m_trace;
    std::map<std::tuple<int, int, int, int>, PredictionSet> m_predictions; // (predictor, source, d, budget)
};

// Runs the settings (blocking): prepareSimulation, the slice, the policy, the baseline, the speculative
// predictors. RequestError/InputError of a bad setting propagate; Cancelled when stopped.
WhatIfOutcome runWhatIf(PrefetchSource& source, const WhatIfSettings& settings, const StopToken* stop = nullptr);

// runWhatIf on the global thread pool, one at a time: a request made while one runs stops it (its
// result is stale) and replaces any pending one, so the latest settings win.
class WhatIfRunner : public QObject {
    Q_OBJECT
public:
    explicit WhatIfRunner(QObject* parent = nullptr);
    ~WhatIfRunner() override;

    // A new atlas (empty: none); drops the kept trace and predictions of the previous one.
    void setAtlas(const QString& path);
    QString atlas() const;
    // Queues a run; returns its generation.
    quint64 request(const WhatIfSettings& settings);
    void cancel();
    bool isBusy() const { return m_running || m_pending.has_value(); }
    quint64 generation() const { return m_generation; }
    // The latest finished run (null before the first).
    std::shared_ptr<const WhatIfOutcome> outcome() const { return m_outcome; }

Q_SIGNALS:
    // Only for the latest generation.
    void simulated(quint64 generation);
    void failed(quint64 generation, const QString& message);
    void busyChanged(bool busy);

private:
    void startNext();

    std::shared_ptr<PrefetchSource> m_source;
    quint64 m_generation = 0;
    std::optional<std::pair<quint64, WhatIfSettings>> m_pending;
    std::shared_ptr<StopToken> m_stop; // of the running job
    bool m_running = false;
    std::shared_ptr<const WhatIfOutcome> m_outcome;
};

} // namespace moeatlas::views
