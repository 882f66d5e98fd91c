#include "charts/prefetch_sim.h"

#include "atlas/atlas_file.h"
#include "prefetch/prefetch_atlas.h"
#include "util/error.h"

#include <QFutureWatcher>
#include <QtConcurrent/QtConcurrentRun>

#include <numeric>

namespace moeatlas::views {

SimulateRequest whatIfRequest(
    const std::filesystem::path& atlas, const WhatIfSettings& s, SimPolicy policy, double totalExpertBytes)
{
    SimulateRequest r;
    r.atlas = atlas;
    r.hardware = s.hardware;
    if (s.linkBandwidth > 0)
        r.linkBandwidth = s.linkBandwidth;
    r.policy = policy;
    r.eviction = s.eviction;
    if (s.globalCache) {
        r.cache.kind = CacheSpec::Kind::GlobalBytes;
        r.cache.bytes = s.globalFraction * totalExpertBytes;
    } else {
        r.cache.kind = CacheSpec::Kind::PerLayerSlots;
        r.cache.slots = s.slots;
    }
    r.predictor = s.predictor;
    r.lookahead = s.lookahead;
    r.budget = s.budget;
    return r;
}

PrefetchSource::PrefetchSource(std::filesystem::path atlas)
    : m_atlas(std::move(atlas))
{
}

std::shared_ptr<const RoutingTrace> PrefetchSource::trace()
{
    const std::lock_guard lock(m_mutex);
    if (!m_trace)
        m_trace = std::make_shared<const RoutingTrace>(readRoutingTrace(AtlasFile::openReadOnly(m_atlas)));
    return m_trace;
}

std::vector<PredictionSet> PrefetchSource::predictionsFor(const PreparedSimulation& job, const StopToken* stop)
{
    const std::shared_ptr<const RoutingTrace> whole = trace();
    const std::lock_guard lock(m_mutex);
    std::optional<AtlasFile> file;
    std::vector<PredictionSet> out;
    for (const int source : job.predictionSources()) {
        if (stop && stop->stopRequested())
            throw Cancelled();
        const auto key = std::make_tuple(static_cast<int>(job.predictor), source, job.lookahead, job.budget);
        auto it = m_predictions.find(key);
        if (it == m_predictions.end()) {
            if (!file)
                file.emplace(AtlasFile::openReadOnly(m_atlas));
            it = m_predictions
                     .emplace(key, predictions(*file, *whole, job.predictor, source, job.lookahead, job.budget))
                     .first;
        }
        out.push_back(it->second);
    }
    return out;
}

namespace {

SimResult simulateSlice(PrefetchSource& source, const PreparedSimulation& job, const RoutingTrace& sliced,
    const TraceSlice& slice, const StopToken* stop)
{
    std::vector<PredictionSet> sets = source.predictionsFor(job, stop);
    for (PredictionSet& set : sets)
        set = slicePredictions(set, slice);
    SimulationReport report = runSimulation(job, sliced, sets, {}, stop);
    return std::move(*report.detail);
}

} // namespace

WhatIfOutcome runWhatIf(PrefetchSource& source, const WhatIfSettings& settings, const StopToken* stop)
{
    WhatIfOutcome out;
    out.settings = settings;
    // The model's expert bytes first (a global cache is a share of them).
    WhatIfSettings probe = settings;
    probe.globalCache = false;
    probe.slots = 1;
    const PreparedSimulation shapes = prepareSimulation(whatIfRequest(source.atlas(), probe, SimPolicy::OnDemand, 0));
    const std::vector<double>& bytes = shapes.compute.costs.expertBytes;
    out.totalExpertBytes = std::accumulate(bytes.begin(), bytes.end(), 0.0);

    out.job = prepareSimulation(whatIfRequest(source.atlas(), settings, settings.policy, out.totalExpertBytes));
    const std::shared_ptr<const RoutingTrace> whole = source.trace();
    out.slice = sliceFirstSequences(*whole, settings.sequencesPerDomain);
    const RoutingTrace sliced = sliceTrace(*whole, out.slice);
    out.result = simulateSlice(source, out.job, sliced, out.slice, stop);

    PreparedSimulation baseline = out.job;
    baseline.config.policy = SimPolicy::OnDemand;
    out.baseline = simulateSlice(source, baseline, sliced, out.slice, stop);

    for (const Predictor p : settings.speculative) {
        WhatIfOutcome::Speculative spec;
        spec.predictor = p;
        WhatIfSettings s = settings;
        s.predictor = p;
        s.lookahead = 1;
        s.budget = 0;
        try {
            const PreparedSimulation job
                = prepareSimulation(whatIfRequest(source.atlas(), s, SimPolicy::Speculative, out.totalExpertBytes));
            spec.result = simulateSlice(source, job, sliced, out.slice, stop);
        } catch (const Cancelled&) {
            throw;
        } catch (const std::exception& e) {
            spec.error = QString::fromUtf8(e.what());
        }
        out.speculative.push_back(std::move(spec));
    }
    return out;
}

WhatIfRunner::WhatIfRunner(QObject* parent)
    : QObject(parent)
{
}

WhatIfRunner::~WhatIfRunner()
{
    if (m_stop)
        m_stop->requestStop(); // the job keeps its own copies and ends soon after
}

void WhatIfRunner::setAtlas(const QString& path)
{
    if (m_source && QString::fromStdString(m_source->atlas().string()) == path)
        return;
    cancel();
    m_outcome.reset();
    m_source = path.isEmpty() ? nullptr : std::make_shared<PrefetchSource>(path.toStdString());
}

QString WhatIfRunner::atlas() const
{
    return m_source ? QString::fromStdString(m_source->atlas().string()) : QString();
}

quint64 WhatIfRunner::request(const WhatIfSettings& settings)
{
    m_pending = std::make_pair(++m_generation, settings);
    if (m_running && m_stop)
        m_stop->requestStop(); // its result would be stale
    if (!m_running)
        startNext();
    return m_generation;
}

void WhatIfRunner::cancel()
{
    ++m_generation;
    m_pending.reset();
    if (m_stop)
        m_stop->requestStop();
}

void WhatIfRunner::startNext()
{
    if (!m_pending || !m_source) {
        m_pending.reset();
        Q_EMIT busyChanged(m_running);
        return;
    }
    auto [generation, settings] = std::move(*m_pending);
    m_pending.reset();
    m_running = true;
    Q_EMIT busyChanged(true);
    m_stop = std::make_shared<StopToken>();
    struct Result {
        std::shared_ptr<const WhatIfOutcome> outcome;
        QString error;
        bool cancelled = false;
    };
    auto* watcher = new QFutureWatcher<Result>(this);
    connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, generation = generation] {
        const Result r = watcher->result();
        watcher->deleteLater();
        m_running = false;
        m_stop.reset();
        if (generation == m_generation && !r.cancelled) {
            if (r.outcome) {
                m_outcome = r.outcome;
                Q_EMIT simulated(generation);
            } else {
                Q_EMIT failed(generation, r.error);
            }
        }
        startNext();
    });
    watcher->setFuture(
        QtConcurrent::run([source = m_source, settings = std::move(settings), stop = m_stop]() -> Result {
            try {
                return { std::make_shared<const WhatIfOutcome>(runWhatIf(*source, settings, stop.get())), {}, false };
            } catch (const Cancelled&) {
                return { nullptr, {}, true };
            } catch (const RequestError& e) {
                return { nullptr,
                    QStringLiteral("%1: %2").arg(QString::fromStdString(e.field()), QString::fromUtf8(e.what())),
                    false };
            } catch (const std::exception& e) {
                return { nullptr, QString::fromUtf8(e.what()), false };
            }
        }));
}

} // namespace moeatlas::views
