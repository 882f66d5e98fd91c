#include "dim_planner.h"

#include "fisher/fisher_store.h"
#include "fisher_data.h"
#include "util/error.h"

#include <QFutureWatcher>
#include <QtConcurrent/QtConcurrentRun>

namespace moeatlas::views {

// The unit table of the last (store, form, domain): reading a form's row costs about as much as a
// compile at scale, and a slider drag keeps them fixed.
struct DimUnitCache {
    std::weak_ptr<FisherUnitStore> store;
    std::string form, domain;
    std::shared_ptr<const UnitScoreTable> table;
};

namespace {

struct Outcome {
    std::optional<Plan> plan;
    QString error;
};

std::shared_ptr<const UnitScoreTable> unitsFor(const DimRequest& r, DimUnitCache* cache)
{
    if (!r.units)
        throw InputError("no Fisher unit scores in this atlas (Jobs > Compute Fisher…, or moeatlas fisher)");
    if (cache && cache->table && cache->store.lock() == r.units && cache->form == r.form && cache->domain == r.domain)
        return cache->table;
    // The stored float64 scores, read as `moeatlas plan --dims` reads them (FisherUnitStore keeps
    // float32 copies for display, which could merge near-ties).
    auto table = std::make_shared<const UnitScoreTable>(
        readFisherUnitScores(AtlasFile::openReadOnly(r.units->atlas()), r.form, r.domain));
    if (cache)
        *cache = DimUnitCache { r.units, r.form, r.domain, table };
    return table;
}

} // namespace

DimPlanner::DimPlanner(QObject* parent)
    : QObject(parent)
    , m_cache(std::make_shared<DimUnitCache>())
{
}

DimPlanner::~DimPlanner() = default;

quint64 DimPlanner::request(DimRequest request)
{
    m_pending = std::make_pair(++m_generation, std::move(request));
    if (!m_running)
        startNext();
    return m_generation;
}

void DimPlanner::cancel()
{
    ++m_generation;
    m_pending.reset();
}

Plan DimPlanner::compile(const DimRequest& r)
{
    return compileDimPlan(r.expertPlan, *unitsFor(r, nullptr), r.budget, r.context);
}

void DimPlanner::startNext()
{
    if (!m_pending)
        return;
    auto [generation, request] = std::move(*m_pending);
    m_pending.reset();
    m_running = true;
    auto* watcher = new QFutureWatcher<Outcome>(this);
    connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, generation = generation] {
        const Outcome outcome = watcher->result();
        watcher->deleteLater();
        m_running = false;
        if (generation == m_generation) {
            if (outcome.plan)
                Q_EMIT compiled(generation, *outcome.plan);
            else
                Q_EMIT failed(generation, outcome.error);
        }
        startNext();
    });
    // The job owns copies of the request and the cache: it may outlive the planner.
    watcher->setFuture(QtConcurrent::run([request = std::move(request), cache = m_cache]() -> Outcome {
        try {
            return {
                compileDimPlan(request.expertPlan, *unitsFor(request, cache.get()), request.budget, request.context), {}
            };
        } catch (const std::exception& e) {
            return { std::nullopt, QString::fromUtf8(e.what()) };
        }
    }));
}

} // namespace moeatlas::views
