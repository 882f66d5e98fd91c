#include "heatmap_scale.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moeatlas::views {

namespace {

// Viridis anchors every 1/8 (matplotlib's table, sampled); linear interpolation in between.
constexpr std::array<std::array<int, 3>, 9> kAnchors { {
    { 68, 1, 84 },
    { 71, 44, 122 },
    { 59, 81, 139 },
    { 44, 113, 142 },
    { 33, 144, 141 },
    { 39, 173, 129 },
    { 92, 200, 99 },
    { 170, 220, 50 },
    { 253, 231, 37 },
} };

std::array<QRgb, 256> makeTable()
{
    std::array<QRgb, 256> table {};
    for (int i = 0; i < 256; ++i) {
        const double t = i / 255.0 * 8.0;
        const int a = std::min(7, static_cast<int>(t));
        const double f = t - a;
        int rgb[3];
        for (int k = 0; k < 3; ++k)
            rgb[k] = static_cast<int>(std::lround(kAnchors[a][k] + f * (kAnchors[a + 1][k] - kAnchors[a][k])));
        table[i] = qRgb(rgb[0], rgb[1], rgb[2]);
    }
    return table;
}

const std::array<QRgb, 256>& table()
{
    static const std::array<QRgb, 256> t = makeTable();
    return t;
}

} // namespace

ColorScale::ColorScale(double low, double high)
    : m_low(low)
    , m_high(high > low ? high : low + 1.0)
{
}

ColorScale ColorScale::fitting(std::span<const double> values)
{
    double lo = std::numeric_limits<double>::infinity();
    double hi = -lo;
    for (const double v : values) {
        if (!std::isfinite(v))
            continue;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    if (!std::isfinite(lo))
        return ColorScale(0, 1);
    return ColorScale(lo, hi);
}

QRgb ColorScale::colorAt(double t)
{
    if (std::isnan(t))
        return qRgb(128, 128, 128);
    const int i = static_cast<int>(std::lround(std::clamp(t, 0.0, 1.0) * 255.0));
    return table()[static_cast<std::size_t>(i)];
}

QRgb ColorScale::color(double value) const
{
    return colorAt((value - m_low) / (m_high - m_low));
}

QRgb droppedColor(QRgb kept)
{
    // 20 % of the colour over a light grey: still readable as "high/low", clearly switched off
    // (viridis never comes near a neutral grey).
    const auto mix = [](int c) { return (c + 4 * 160) / 5; };
    return qRgb(mix(qRed(kept)), mix(qGreen(kept)), mix(qBlue(kept)));
}

QRect HeatmapLayout::cellRect(int row, int col) const
{
    return QRect(origin.x() + col * cellWidth, origin.y() + row * cellHeight, cellWidth, cellHeight);
}

std::optional<std::pair<int, int>> HeatmapLayout::cellAt(QPoint pos) const
{
    if (cellWidth <= 0 || cellHeight <= 0)
        return std::nullopt;
    const int dx = pos.x() - origin.x();
    const int dy = pos.y() - origin.y();
    if (dx < 0 || dy < 0)
        return std::nullopt;
    const int col = dx / cellWidth;
    const int row = dy / cellHeight;
    if (row >= rows || col >= cols)
        return std::nullopt;
    return std::pair { row, col };
}

} // namespace moeatlas::views
