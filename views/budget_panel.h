// The budget panel: criterion, specialist/generalist target (with per-domain weights), scope and
// budget (percent of routed experts dropped, or a byte/parameter target) compiled into a Plan on
// every change, with predicted savings and a quick quality proxy (retained routing mass).
#pragma once

#include "plan/plan.h"

#include <QString>
#include <QWidget>

#include <memory>
#include <optional>
#include <vector>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QFormLayout;
class QLabel;
class QPushButton;
class QSlider;
class QVBoxLayout;

namespace moeatlas::views {

struct AtlasSnapshot;

// Retained routing mass per domain for a kept set: for each domain d, the mean over MoE layers of
// the sum over kept experts of mass[d, l, e], where mass is scores/soft_mass/value (the mean
// full-softmax probability per expert) or, without it, statistics/load_share. 1 = nothing lost.
struct RoutingMassProxy {
    QString source; // "soft_mass", "load_share" or empty (neither in the atlas)
    std::vector<double> perDomain;
};
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

    QSlider* sparsitySlider() const { return m_slider; }
    // The budget the controls describe.
    Budget budget() const;
    // The last compiled plan (empty when nothing is open or the budget is refused).
    const std::optional<Plan>& plan() const { return m_plan; }
    const RoutingMassProxy& proxy() const { return m_proxy; }
    QString statusText() const;

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
    void saveWithDialog();

    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    std::optional<Plan> m_plan;
    RoutingMassProxy m_proxy;
    QString m_error;
    bool m_updating = false;

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
    QLabel* m_kept = nullptr;
    QLabel* m_savings = nullptr;
    QLabel* m_proxyLabel = nullptr;
    QPushButton* m_evaluate = nullptr;
    QPushButton* m_save = nullptr;
};

} // namespace moeatlas::views
