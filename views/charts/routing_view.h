// The Routing tab: ProbMoE's exact-k tables of a scored atlas (/probmoe) and the routing rules'
// trade-off. Per layer the mean k* of the dynamic-k rule; for one (domain, layer) the cardinality
// distribution over the band and the exact-k marginals next to the mean softmax probabilities; the
// loss against the mean experts per token of every evaluated variant, one series per routing rule.
#pragma once

#include <QString>
#include <QWidget>

#include <memory>
#include <string>
#include <vector>

class QChart;
class QChartView;
class QComboBox;
class QLabel;

namespace moeatlas {
struct EvalTable;
} // namespace moeatlas

namespace moeatlas::views {

struct AtlasSnapshot;

// One evaluated variant on the trade-off chart: its routing rule, the mean number of routed experts
// a token used (over all MoE layers and domains) and its loss (nats per predicted token, weighted
// by the domains' predicted tokens).
struct RoutingTradeoffPoint {
    std::string table; // /evaluation/<label>
    std::string variant;
    std::string rule; // routing rule name ("model", "probmoe:6:8", ...)
    double meanExperts = 0;
    double loss = 0;
};

// The points of one evaluation table that routes some variant with a rule (moeatlas eval --routing):
// every variant's routing rule, mean experts per token and loss, both token-weighted over the domains.
// A table without routing rules gives none.
std::vector<RoutingTradeoffPoint> routingTradeoffPoints(const EvalTable& table, const std::string& label);

class RoutingView : public QWidget {
    Q_OBJECT
public:
    explicit RoutingView(QWidget* parent = nullptr);

    // Shows the snapshot's /probmoe tables and evaluation tables; an atlas without /probmoe shows a
    // note saying which action writes it (noteText()) and empty charts.
    void setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot);
    void clear();

    bool hasTables() const;
    QString noteText() const;
    int domainRow() const { return m_row; } // domain index, or the pooled row (= number of domains)
    int layerIndex() const { return m_layer; } // index into the atlas's MoE layers

    // Series, for tests and screenshots. k*: "mean k*" (x = decoder layer). Cardinality: one QBarSet
    // "P(|S| = c)" over c = band min..max. Marginals: QBarSets "exact-k marginal / k" and "mean softmax
    // probability" (when /scores/soft_mass exists), E values each. Trade-off: one QScatterSeries per
    // routing rule (x = mean experts per token, y = loss).
    QChart* kstarChart() const { return m_kstarChart; }
    QChart* cardinalityChart() const { return m_cardChart; }
    QChart* marginalChart() const { return m_marginalChart; }
    QChart* tradeoffChart() const { return m_tradeoffChart; }
    QChartView* marginalView() const { return m_marginalView; }
    const std::vector<RoutingTradeoffPoint>& tradeoffPoints() const { return m_points; }

public Q_SLOTS:
    void setDomainRow(int row);
    void setLayerIndex(int index);

private:
    void rebuild();
    void rebuildTradeoff();

    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    std::vector<RoutingTradeoffPoint> m_points;
    QString m_tradeoffNote;
    int m_row = 0;
    int m_layer = 0;

    QComboBox* m_domainBox;
    QComboBox* m_layerBox;
    QLabel* m_note;
    QChart* m_kstarChart;
    QChart* m_cardChart;
    QChart* m_marginalChart;
    QChart* m_tradeoffChart;
    QChartView* m_marginalView = nullptr;
};

} // namespace moeatlas::views
