// Routing statistics of a scored atlas as charts: per-expert load share of one layer, per-layer
// balance (CV, load entropy, token entropy, m99), the dynamic-k histogram, per-domain expert
// specialisation and the co-activation heatmap; a domain selector (domains + pooled) and a layer selector.
#pragma once

#include "metrics/routing_stats_reader.h"

#include <QString>
#include <QWidget>

class QChart;
class QChartView;
class QComboBox;
class QLabel;

namespace moeatlas::views {

class CoactivationMap;

class RoutingStatsView : public QWidget {
    Q_OBJECT
public:
    explicit RoutingStatsView(QWidget* parent = nullptr);

    // Reads /statistics of the atlas (on the calling thread: a few small arrays). An atlas that
    // was not scored shows the reason (errorText()) and empty charts.
    void setAtlas(const AtlasFile& atlas);
    void setStatistics(RoutingStats stats);
    void clear();

    bool hasStatistics() const { return m_stats.numExperts > 0; }
    const RoutingStats& statistics() const { return m_stats; }
    QString errorText() const { return m_error; }
    int domainRow() const { return m_row; } // domain index, or statistics().pooledRow()
    int layerIndex() const { return m_layer; } // index into statistics().layers

    // The charts, for tests and screenshots. Series: load share "load share" (one QBarSet, E
    // values); per layer "load CV", "load entropy", "token entropy", "m99" (x = decoder layer);
    // dynamic k "tokens" (B values, k = bandMin + b); specialisation one QBarSet per domain.
    QChart* loadShareChart() const { return m_loadChart; }
    QChart* layerStatsChart() const { return m_layerChart; }
    QChart* dynamicKChart() const { return m_dynKChart; }
    QChart* specialisationChart() const { return m_specChart; }
    CoactivationMap* coactivationMap() const { return m_coact; }

    bool saveImage(const QString& path);

public Q_SLOTS:
    void setDomainRow(int row);
    void setLayerIndex(int index);

private:
    void rebuild();
    void rebuildLayerStats();

    RoutingStats m_stats;
    QString m_error;
    int m_row = 0;
    int m_layer = 0;

    QComboBox* m_domainBox;
    QComboBox* m_layerBox;
    QLabel* m_message;
    QChart* m_loadChart;
    QChart* m_layerChart;
    QChart* m_dynKChart;
    QChart* m_specChart;
    CoactivationMap* m_coact;
};

} // namespace moeatlas::views
