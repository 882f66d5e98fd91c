// Dimension plans (Fisher-MoE unit pruning on top of an expert plan) compiled off the GUI thread
// for the budget panel: compileDimPlan on a worker, the latest request wins.
#pragma once

#include "plan/dim_plan.h"
#include "plan/plan.h"

#include <QObject>
#include <QString>

#include <memory>
#include <optional>
#include <string>

namespace moeatlas::views {

class FisherUnitStore;
struct DimUnitCache;

// What to compile: the expert plan's kept experts lose `budget.sparsity` of their units, ranked by
// one row of a form's unit scores (readFisherUnitScores of the store's atlas, on first use).
struct DimRequest {
    Plan expertPlan;
    std::shared_ptr<FisherUnitStore> units;
    std::string form; // mask | weight | grad_abs | activation | magnitude
    std::string domain; // "" = the pooled row
    DimBudget budget;
    PlanContext context;
};

// Runs one compile at a time on the global thread pool. A request made while one runs replaces
// the pending one (a slider drag compiles its first and last positions, not every step); the
// result of a superseded request is dropped. At DeepSeek-V3's shape a global (IntDim-G) compile
// ranks ~30 M units, about a second: too slow for the GUI thread, fine for a trailing update.
class DimPlanner : public QObject {
    Q_OBJECT
public:
    explicit DimPlanner(QObject* parent = nullptr);
    ~DimPlanner() override;

    // Queues a compile; returns its generation (the id compiled()/failed() carry).
    quint64 request(DimRequest request);
    // Drops the pending request and the running one's result.
    void cancel();
    bool isBusy() const { return m_running || m_pending.has_value(); }
    quint64 generation() const { return m_generation; }

    // The compile itself (blocking): reads the unit scores and runs compileDimPlan.
    static Plan compile(const DimRequest& request);

Q_SIGNALS:
    // Only for the latest generation.
    void compiled(quint64 generation, const moeatlas::Plan& plan);
    void failed(quint64 generation, const QString& message);

private:
    void startNext();

    quint64 m_generation = 0;
    std::optional<std::pair<quint64, DimRequest>> m_pending;
    bool m_running = false;
    std::shared_ptr<DimUnitCache> m_cache; // the last unit table converted; one job at a time uses it
};

} // namespace moeatlas::views
