// View math of the expert heatmap, kept out of the widget so it can be tested on its own: the
// colour scale (value -> colour) and the layout (pixel <-> layer row / expert column).
#pragma once

#include <QPoint>
#include <QRect>
#include <QRgb>

#include <array>
#include <optional>
#include <span>

namespace moeatlas::views {

// A sequential perceptual colour map (viridis, 256 entries) over [low, high]; values outside
// are clamped, NaN is grey. A constant input gets a unit-wide range so nothing divides by zero.
class ColorScale {
public:
    ColorScale() = default;
    ColorScale(double low, double high);
    static ColorScale fitting(std::span<const double> values); // min..max of the finite values

    double low() const { return m_low; }
    double high() const { return m_high; }
    QRgb color(double value) const;
    static QRgb colorAt(double t); // t in [0, 1]

private:
    double m_low = 0;
    double m_high = 1;
};

// Dims a cell the current plan drops: mostly a neutral grey, a trace of its colour left.
QRgb droppedColor(QRgb kept);

// Cell geometry: row r (MoE layer) and column c (expert, or rank position when sorted) occupy
// the rectangle at grid.topLeft() + (c * cellWidth, r * cellHeight).
struct HeatmapLayout {
    int rows = 0;
    int cols = 0;
    int cellWidth = 4;
    int cellHeight = 8;
    QPoint origin; // top-left of the grid in widget coordinates

    QRect gridRect() const { return QRect(origin, QSize(cols * cellWidth, rows * cellHeight)); }
    QRect cellRect(int row, int col) const;
    // The (row, column) under a widget position, or nothing outside the grid.
    std::optional<std::pair<int, int>> cellAt(QPoint pos) const;
};

} // namespace moeatlas::views
