// The budget panel's routing rule: a field for the rule a plan would route with (model, top-k:K,
// probmoe:KMIN:KMAX, top-p:P, threshold:M; checkpoint/routing_rule.h) and the predicted active
// parameters per token of the current plan under it: the routed experts' share scaled by the rule's
// mean k per MoE layer (metrics/routing_rule_stats.h on the atlas's recorded logits, computed on a
// worker thread and cached per rule) instead of the model's top-k (plan/routing_active.h).
#pragma once

#include "checkpoint/routing_rule.h"
#include "plan/plan.h"

#include <QString>
#include <QWidget>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

class QComboBox;
class QLabel;

namespace moeatlas::views {

struct AtlasSnapshot;

// Mean k per MoE layer (pooled over the domains) of a rule on the atlas, or the error that stopped it.
struct RuleMeanK {
    std::vector<double> meanK;
    QString error;
};

class RoutingRuleControl : public QWidget {
    Q_OBJECT
public:
    explicit RoutingRuleControl(QWidget* parent = nullptr);
    ~RoutingRuleControl() override;

    // A new atlas: presets for its router, the cache emptied.
    void setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot);
    // The plan whose active parameters are predicted (null: none).
    void setPlan(const Plan* plan);

    // Types a rule as the user would (validated at once; an invalid one shows its error and changes
    // nothing else).
    void setRuleText(const QString& text);
    QString ruleText() const;
    // The last valid rule (the model's top-k until one was entered).
    const RoutingRule& rule() const { return m_rule; }
    QString errorText() const;
    bool isComputing() const { return m_computing; }
    // The prediction the label shows (empty without a plan with costs or while computing).
    std::optional<double> predictedActiveParams() const { return m_predicted; }
    QLabel* predictionLabel() const { return m_prediction; }
    QComboBox* ruleField() const { return m_field; }

Q_SIGNALS:
    void predictionChanged();

private:
    void apply(const QString& text);
    void refresh();
    void finish(quint64 generation, const std::string& key, const RuleMeanK& result);

    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    std::optional<Plan> m_plan;
    RoutingRule m_rule;
    std::map<std::string, std::vector<double>> m_cache; // rule name -> mean k per MoE layer
    std::optional<double> m_predicted;
    bool m_computing = false;
    std::string m_pendingKey; // the rule being predicted while m_computing
    quint64 m_generation = 0;

    QComboBox* m_field = nullptr;
    QLabel* m_error = nullptr;
    QLabel* m_prediction = nullptr;
};

} // namespace moeatlas::views
