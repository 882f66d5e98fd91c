// The budget panel: criterion, specialist/generalist target (with per-domain weights), scope and
// budget (percent of routed experts dropped, or a byte/parameter target) compiled into a Plan on
// every change, optionally with dimension pruning of the kept experts (Fisher-MoE: scope IntDim-E/
// L/G, unit sparsity, unit-score form), with predicted savings and a quick quality proxy.
#pragma once

#include "plan/dim_plan.h"
#include "plan/plan.h"
#include "plan/routing_mass.h"

#include <QString>
#include <QWidget>

#include <memory>
#include <optional>
#include <vector>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QFormLayout;
class QGroupBox;
class QLabel;
class QPushButton;
class QSlider;
class QVBoxLayout;

namespace moeatlas::views {

struct AtlasSnapshot;
class DimPlanner;
class RoutingRuleControl;

// The retained routing mass of a plan (plan/routing_mass.h) from the snapshot's arrays.
RoutingMassProxy retainedRoutingMass(const AtlasSnapshot& snapshot, const Plan& plan);

class BudgetPanel : public QWidget {
    Q_OBJECT
public:
    enum class BudgetKind { DropPercent, TargetBytes, TargetParams };

    explicit BudgetPanel(QWidget* parent = nullptr);
    ~BudgetPanel() override;

    // A new atlas (null: nothing open). Resets the controls to its criteria and domains.
    void setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot);

    void setCriterion(const QString& criterion);
    QString criterion() const;
    // Empty = generalist; otherwise the specialist's domain.
    void setTargetDomain(const QString& domain);
    QString targetDomain() const;
    void setCustomWeights(bool custom);
    void setDomainWeight(const QString& domain, int weight); // 0..100
    void setScope(BudgetScope scope);
    BudgetScope scope() const;
    void setBudgetKind(BudgetKind kind);
    BudgetKind budgetKind() const;
    void setSparsityPercent(int percent); // routed experts dropped
    int sparsityPercent() const;
    // Targets in MB (bytes) or millions (params), as the spin box shows them.
    void setTargetAmount(double amount);

    // Dimension pruning (needs the atlas's /fisher unit scores): the kept experts' units ranked by
    // a form's scores, of the specialist's domain or pooled for a generalist, compiled with
    // compileDimPlan on a worker thread (isCompiling() until planChanged/planFailed). Byte and
    // parameter targets apply to expert plans only, so turning dims on selects "Drop %".
    void setDimsEnabled(bool enabled);
    bool dimsEnabled() const;
    void setDimScope(DimScope scope);
    DimScope dimScope() const;
    void setDimSparsityPercent(int percent); // units of the kept experts dropped
    int dimSparsityPercent() const;
    void setDimForm(const QString& form); // mask, weight, grad_abs, activation, magnitude
    QString dimForm() const;
    DimBudget dimBudget() const;
    bool isCompiling() const { return m_compiling; }

    QSlider* sparsitySlider() const { return m_slider; }
    QSlider* dimSlider() const { return m_dimSlider; }
    // The budget the controls describe.
    Budget budget() const;
    // The last compiled plan (empty when nothing is open, the budget is refused or the unit
    // selection is still compiling).
    const std::optional<Plan>& plan() const { return m_plan; }
    const RoutingMassProxy& proxy() const { return m_proxy; }
    QString statusText() const;
    // The routing rule field and its predicted active parameters per token (budget_routing.h).
    RoutingRuleControl* routingRuleControl() const { return m_routingRule; }

    // Writes the current plan as `moeatlas plan` does; false with a message on failure.
    bool savePlan(const QString& path, QString* error = nullptr) const;

Q_SIGNALS:
    void planChanged(const moeatlas::Plan& plan);
    void planFailed(const QString& message);
    void evaluateRequested(const moeatlas::Plan& plan);
    void message(const QString& text);

private:
    void recompile();
    void rebuildWeights();
    void updateBudgetControls();
    void showResult();
    void finishDims(quint64 generation, const Plan* plan, const QString& error);
    void saveWithDialog();

    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    std::optional<Plan> m_plan;
    RoutingMassProxy m_proxy;
    QString m_error;
    bool m_updating = false;
    bool m_compiling = false;
    quint64 m_dimGeneration = 0;
    DimPlanner* m_planner = nullptr;

    QComboBox* m_criterion = nullptr;
    QComboBox* m_target = nullptr;
    QCheckBox* m_customWeights = nullptr;
    QVBoxLayout* m_weightsBox = nullptr;
    std::vector<std::pair<QString, QSlider*>> m_weights;
    QComboBox* m_scope = nullptr;
    QComboBox* m_kind = nullptr;
    QSlider* m_slider = nullptr;
    QLabel* m_sliderLabel = nullptr;
    QDoubleSpinBox* m_amount = nullptr;
    QGroupBox* m_dims = nullptr;
    QComboBox* m_dimScope = nullptr;
    QComboBox* m_dimForm = nullptr;
    QSlider* m_dimSlider = nullptr;
    QLabel* m_dimSliderLabel = nullptr;
    QLabel* m_dimNote = nullptr;
    QLabel* m_kept = nullptr;
    QLabel* m_units = nullptr;
    QLabel* m_savings = nullptr;
    QLabel* m_proxyLabel = nullptr;
    QPushButton* m_evaluate = nullptr;
    QPushButton* m_save = nullptr;
    RoutingRuleControl* m_routingRule = nullptr;
};

} // namespace moeatlas::views
