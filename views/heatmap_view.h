// The expert heatmap widget: layers x experts coloured by the model's values, painted from a
// cached image (one pixel per cell, scaled once per zoom), with a colour legend, hover tooltips,
// zoom, per-layer sorting by value and the kept/dropped overlay of the current plan.
#pragma once

#include "heatmap_scale.h"

#include <QImage>
#include <QPointer>
#include <QWidget>

namespace moeatlas::views {

class HeatmapModel;

class HeatmapView : public QWidget {
    Q_OBJECT
public:
    explicit HeatmapView(QWidget* parent = nullptr);

    void setModel(HeatmapModel* model);
    HeatmapModel* model() const { return m_model; }

    // Sorted: each row lists its experts by rank (column = rank position) instead of by index.
    void setSortedByValue(bool sorted);
    bool isSortedByValue() const { return m_sorted; }

    // Cell size in pixels; zoom steps multiply it by 1.25 (kept within 1..64 px wide).
    void zoomIn();
    void zoomOut();
    void resetZoom();
    // The largest cells (up to 64 x 48 px) with which the whole heatmap fits `available`.
    void zoomToFit(QSize available);
    void setCellSize(int width, int height);
    QSize cellSize() const { return { m_layout.cellWidth, m_layout.cellHeight }; }

    const HeatmapLayout& layout() const { return m_layout; }
    const ColorScale& colorScale() const { return m_scale; }
    // (row, expert) under a widget position, taking sorting into account.
    std::optional<std::pair<int, int>> cellAt(QPoint pos) const;
    // The position of an expert's cell centre (inverse of cellAt).
    QPoint cellCenter(int row, int expert) const;
    QString toolTipAt(QPoint pos) const;
    // The colour a cell is painted with (after the overlay), for tests.
    QRgb cellColor(int row, int expert) const;

    // Paints the whole heatmap (grid, labels, legend) at its natural size; used by paintEvent
    // and by the PNG/SVG export.
    void render(QPainter& painter) const;
    bool exportPng(const QString& path) const;
    bool exportSvg(const QString& path) const;

    QSize sizeHint() const override;
    QSize minimumSizeHint() const override;

Q_SIGNALS:
    void zoomChanged();
    // A left click on a cell (row = MoE layer index, expert id; sorting taken into account).
    void cellClicked(int row, int expert);

protected:
    void paintEvent(QPaintEvent* event) override;
    bool event(QEvent* event) override;
    void wheelEvent(QWheelEvent* event) override;
    void keyPressEvent(QKeyEvent* event) override;
    void mousePressEvent(QMouseEvent* event) override;
    void changeEvent(QEvent* event) override;

private:
    void rebuildColors(); // values or sorting changed
    void recompose(); // overlay changed
    void rescale(); // zoom changed
    void updateLayout();
    int columnOf(int row, int expert) const;

    QPointer<HeatmapModel> m_model;
    bool m_sorted = false;
    HeatmapLayout m_layout;
    ColorScale m_scale;
    QImage m_colors; // rows x cols, no overlay
    QImage m_composed; // rows x cols, overlay applied
    QImage m_scaled; // the grid at the current cell size
    std::vector<int> m_columnOfExpert; // sorted mode: [row * cols + expert] -> column
};

} // namespace moeatlas::views
