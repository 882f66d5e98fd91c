// The specialist-vs-generalist trade-off chart (PreMoE's figure): loss (or perplexity) on one
// evaluated domain against sparsity, one curve per plan family, random plans as mean with a
// min–max band, the full model as a horizontal reference line. Input: an /evaluation/<label> table.
#pragma once

#include "charts/tradeoff_data.h"

#include <QString>
#include <QStringList>
#include <QWidget>

class QChart;
class QChartView;
class QAbstractSeries;
class QComboBox;
class QValueAxis;

namespace moeatlas::views {

class TradeoffChartView : public QWidget {
    Q_OBJECT
public:
    explicit TradeoffChartView(QWidget* parent = nullptr);

    // Shows a table read with AtlasFile::readResults("evaluation/<label>"); null: no table (an
    // atlas without /evaluation), the chart empty. A malformed table leaves the chart empty with the
    // reason in errorText(). Keeps the domain shown when the new table has it.
    void setEvaluation(const AtlasResults* table);
    // The labels under /evaluation of an atlas ("default", ...), for a selector in the main window.
    static QStringList evaluationLabels(const AtlasFile& atlas);

    const EvalTable& table() const { return m_table; }
    QStringList domains() const;
    int domain() const { return m_domain; }
    TradeoffMetric metric() const { return m_metric; }
    QString errorText() const { return m_error; }

    // The chart and its series (named as in the legend: "full model", "specialist: math (peu)",
    // "generalist (peu)", "random (…)" mean and "random min–max" band, "plans").
    QChart* chart() const { return m_chart; }
    QList<QAbstractSeries*> series() const;
    QAbstractSeries* seriesNamed(const QString& name) const;

    // .svg (vector) or .png/.jpg (raster) of the whole view; false when it cannot be written.
    bool saveImage(const QString& path);

public Q_SLOTS:
    void setDomain(int index);
    void setDomainName(const QString& name);
    void setMetric(moeatlas::views::TradeoffMetric metric);

Q_SIGNALS:
    void domainChanged(int index);

private:
    void rebuild();

    EvalTable m_table;
    int m_domain = 0;
    TradeoffMetric m_metric = TradeoffMetric::Nll;
    QString m_error;

    QComboBox* m_domainBox;
    QComboBox* m_metricBox;
    QChart* m_chart;
    QChartView* m_view;
    QValueAxis* m_xAxis;
    QValueAxis* m_yAxis;
};

} // namespace moeatlas::views
