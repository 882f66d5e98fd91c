#include "charts/chart_parts.h"

#include <QAbstractAxis>
#include <QChart>
#include <QChartView>
#include <QLegend>
#include <QPainter>

namespace moeatlas::views {

QChartView* makeChartView(QChart* chart, QWidget* parent, int minWidth)
{
    auto* view = new QChartView(chart, parent);
    view->setRenderHint(QPainter::Antialiasing);
    view->setMinimumSize(minWidth, 200);
    chart->legend()->setAlignment(Qt::AlignBottom);
    return view;
}

void resetChart(QChart* chart, const QString& title)
{
    chart->removeAllSeries();
    for (QAbstractAxis* axis : chart->axes()) {
        chart->removeAxis(axis);
        delete axis;
    }
    chart->setTitle(title);
}

} // namespace moeatlas::views
