// Small pieces the chart tabs share (Routing, Prefetch, Fisher, trade-off).
#pragma once

#include <QString>

#include <string>

class QChart;
class QChartView;
class QWidget;

namespace moeatlas::views {

inline QString qs(const std::string& s)
{
    return QString::fromStdString(s);
}

// A view of `chart` with antialiasing, its legend at the bottom, at least minWidth x 200 pixels.
QChartView* makeChartView(QChart* chart, QWidget* parent, int minWidth);

// Removes every series and axis of `chart` (charts are rebuilt whole) and sets its title.
void resetChart(QChart* chart, const QString& title);

} // namespace moeatlas::views
