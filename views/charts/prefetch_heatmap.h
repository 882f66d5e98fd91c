// The layer x lookahead heatmap of the Prefetch tab: one cell per (source MoE layer, lookahead) coloured
// by the hit rate (or recall) on a fixed 0..1 viridis scale (heatmap_scale.h), the value written in cells
// large enough, grey where layer + d does not exist; tooltips give the exact value and the tokens counted.
#pragma once

#include "charts/prefetch_data.h"
#include "heatmap_scale.h"

#include <QWidget>

namespace moeatlas::views {

class PrefetchHeatmap : public QWidget {
    Q_OBJECT
public:
    explicit PrefetchHeatmap(QWidget* parent = nullptr);

    void setGrid(PrefetchGrid grid);
    void clear();
    const PrefetchGrid& grid() const { return m_grid; }
    bool isEmpty() const { return m_grid.rows == 0; }

    // Geometry at the current size, and what a position shows (tests and tooltips).
    HeatmapLayout layout() const;
    QPoint cellCenter(int row, int col) const;
    QString toolTipAt(QPoint pos) const;
    QRgb cellColor(int row, int col) const;

    QSize sizeHint() const override;
    QSize minimumSizeHint() const override;

protected:
    void paintEvent(QPaintEvent* event) override;
    bool event(QEvent* event) override;

private:
    PrefetchGrid m_grid;
    ColorScale m_scale { 0.0, 1.0 };
};

} // namespace moeatlas::views
