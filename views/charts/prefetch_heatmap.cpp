#include "charts/prefetch_heatmap.h"

#include <QHelpEvent>
#include <QPainter>
#include <QToolTip>

#include <algorithm>
#include <cmath>

namespace moeatlas::views {

namespace {

constexpr int kLeft = 56; // row labels
constexpr int kTop = 40; // title and column labels
constexpr int kBottom = 8;
constexpr int kLegendGap = 14;
constexpr int kLegendWidth = 14;
constexpr int kLegendLabels = 44;
constexpr int kMaxCellWidth = 96;
constexpr int kMaxCellHeight = 40;

} // namespace

PrefetchHeatmap::PrefetchHeatmap(QWidget* parent)
    : QWidget(parent)
{
    setMouseTracking(true);
    setMinimumHeight(120);
}

void PrefetchHeatmap::setGrid(PrefetchGrid grid)
{
    m_grid = std::move(grid);
    updateGeometry();
    update();
}

void PrefetchHeatmap::clear()
{
    setGrid({});
}

HeatmapLayout PrefetchHeatmap::layout() const
{
    HeatmapLayout l;
    l.rows = m_grid.rows;
    l.cols = m_grid.cols;
    l.origin = QPoint(kLeft, kTop);
    if (l.rows == 0 || l.cols == 0)
        return l;
    const int w = width() - kLeft - kLegendGap - kLegendWidth - kLegendLabels;
    const int h = height() - kTop - kBottom;
    l.cellWidth = std::clamp(w / l.cols, 4, kMaxCellWidth);
    l.cellHeight = std::clamp(h / l.rows, 3, kMaxCellHeight);
    return l;
}

QPoint PrefetchHeatmap::cellCenter(int row, int col) const
{
    return layout().cellRect(row, col).center();
}

QString PrefetchHeatmap::toolTipAt(QPoint pos) const
{
    const auto cell = layout().cellAt(pos);
    return cell ? m_grid.toolTip(cell->first, cell->second) : QString();
}

QRgb PrefetchHeatmap::cellColor(int row, int col) const
{
    return m_scale.color(m_grid.at(row, col));
}

QSize PrefetchHeatmap::sizeHint() const
{
    return { kLeft + std::max(m_grid.cols, 1) * 72 + kLegendGap + kLegendWidth + kLegendLabels,
        kTop + std::max(m_grid.rows, 1) * 24 + kBottom };
}

QSize PrefetchHeatmap::minimumSizeHint() const
{
    return { kLeft + std::max(m_grid.cols, 1) * 16 + kLegendGap + kLegendWidth + kLegendLabels, 120 };
}

bool PrefetchHeatmap::event(QEvent* event)
{
    if (event->type() == QEvent::ToolTip) {
        auto* help = static_cast<QHelpEvent*>(event);
        const QString text = toolTipAt(help->pos());
        if (text.isEmpty())
            QToolTip::hideText();
        else
            QToolTip::showText(help->globalPos(), text, this);
        return true;
    }
    return QWidget::event(event);
}

void PrefetchHeatmap::paintEvent(QPaintEvent*)
{
    QPainter p(this);
    p.fillRect(rect(), palette().color(QPalette::Base));
    if (m_grid.rows == 0 || m_grid.cols == 0)
        return;
    const HeatmapLayout l = layout();
    p.setPen(palette().color(QPalette::Text));
    p.drawText(QRect(0, 0, width(), 20), Qt::AlignLeft | Qt::AlignVCenter,
        QStringLiteral("%1 of %2 (%3, %4)").arg(m_grid.metric, m_grid.predictor, m_grid.domain, m_grid.split));
    QFont small = font();
    small.setPointSizeF(std::max(6.0, small.pointSizeF() * 0.85));
    p.setFont(small);
    for (int c = 0; c < l.cols; ++c)
        p.drawText(QRect(l.cellRect(0, c).left(), 20, l.cellWidth, 18), Qt::AlignCenter,
            QStringLiteral("d=%1").arg(m_grid.lookaheads[static_cast<std::size_t>(c)]));
    const int labelEvery = std::max(1, (p.fontMetrics().height() + l.cellHeight - 1) / std::max(l.cellHeight, 1));
    for (int r = 0; r < l.rows; ++r) {
        p.setPen(palette().color(QPalette::Text)); // the cells' labels below change it
        if (r % labelEvery == 0)
            p.drawText(QRect(0, l.cellRect(r, 0).top(), kLeft - 6, l.cellHeight), Qt::AlignRight | Qt::AlignVCenter,
                QStringLiteral("L%1").arg(m_grid.layers[static_cast<std::size_t>(r)]));
        for (int c = 0; c < l.cols; ++c) {
            const QRect cell = l.cellRect(r, c);
            const double v = m_grid.at(r, c);
            const QColor color = QColor::fromRgb(m_scale.color(v));
            p.fillRect(cell, color);
            if (l.cellHeight >= p.fontMetrics().height()
                && l.cellWidth >= p.fontMetrics().horizontalAdvance(QStringLiteral("0.000"))) {
                p.setPen(color.lightness() > 140 ? Qt::black : Qt::white);
                p.drawText(cell, Qt::AlignCenter, std::isfinite(v) ? QString::number(v, 'f', 3) : QStringLiteral("–"));
            }
        }
    }
    // Legend: the fixed 0..1 scale.
    const QRect grid = l.gridRect();
    const QRect legend(grid.right() + kLegendGap, grid.top(), kLegendWidth, std::max(grid.height(), 40));
    for (int y = 0; y < legend.height(); ++y) {
        const double t = 1.0 - static_cast<double>(y) / std::max(legend.height() - 1, 1);
        p.setPen(QColor::fromRgb(ColorScale::colorAt(t)));
        p.drawLine(legend.left(), legend.top() + y, legend.right(), legend.top() + y);
    }
    p.setPen(palette().color(QPalette::Text));
    p.drawText(QRect(legend.right() + 4, legend.top() - 6, kLegendLabels, 14), Qt::AlignLeft, QStringLiteral("1"));
    p.drawText(QRect(legend.right() + 4, legend.bottom() - 8, kLegendLabels, 14), Qt::AlignLeft, QStringLiteral("0"));
}

} // namespace moeatlas::views
