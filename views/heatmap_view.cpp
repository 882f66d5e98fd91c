#include "heatmap_view.h"

#include "heatmap_model.h"

#include <QEvent>
#include <QHelpEvent>
#include <QKeyEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QSvgGenerator>
#include <QToolTip>
#include <QWheelEvent>

#include <algorithm>
#include <cmath>

namespace moeatlas::views {

namespace {

constexpr int kLeftMargin = 44; // row labels
constexpr int kTopMargin = 22; // title
constexpr int kBottomMargin = 22; // column axis label
constexpr int kLegendGap = 12;
constexpr int kLegendWidth = 14;
constexpr int kLegendLabels = 70;
constexpr int kDefaultCellWidth = 4;
constexpr int kDefaultCellHeight = 8;

} // namespace

HeatmapView::HeatmapView(QWidget* parent)
    : QWidget(parent)
{
    setMouseTracking(true);
    setFocusPolicy(Qt::StrongFocus);
    setAttribute(Qt::WA_OpaquePaintEvent);
    m_layout.cellWidth = kDefaultCellWidth;
    m_layout.cellHeight = kDefaultCellHeight;
    m_layout.origin = QPoint(kLeftMargin, kTopMargin);
}

void HeatmapView::setModel(HeatmapModel* model)
{
    if (m_model)
        disconnect(m_model, nullptr, this, nullptr);
    m_model = model;
    if (m_model) {
        connect(m_model, &QAbstractItemModel::modelReset, this, &HeatmapView::rebuildColors);
        connect(m_model, &HeatmapModel::overlayChanged, this, &HeatmapView::recompose);
    }
    rebuildColors();
}

void HeatmapView::setSortedByValue(bool sorted)
{
    if (sorted == m_sorted)
        return;
    m_sorted = sorted;
    rebuildColors();
}

int HeatmapView::columnOf(int row, int expert) const
{
    if (!m_sorted || !m_model)
        return expert;
    return m_columnOfExpert[static_cast<std::size_t>(row) * m_layout.cols + expert];
}

void HeatmapView::rebuildColors()
{
    const HeatmapData* d = m_model ? &m_model->heatmap() : nullptr;
    const int rows = d ? d->rows : 0;
    const int cols = d ? d->cols : 0;
    m_layout.rows = rows;
    m_layout.cols = cols;
    m_scale = d ? ColorScale::fitting(d->values) : ColorScale();
    m_colors = QImage(std::max(cols, 1), std::max(rows, 1), QImage::Format_RGB32);
    m_colors.fill(palette().color(QPalette::Window));
    m_columnOfExpert.assign(static_cast<std::size_t>(rows) * cols, 0);
    for (int r = 0; r < rows; ++r) {
        auto* line = reinterpret_cast<QRgb*>(m_colors.scanLine(r));
        for (int p = 0; p < cols; ++p) {
            const int e = m_sorted ? m_model->expertAtRank(r, p) : p;
            m_columnOfExpert[static_cast<std::size_t>(r) * cols + e] = p;
            line[p] = m_scale.color(d->at(r, e));
        }
    }
    updateLayout();
    recompose();
}

void HeatmapView::recompose()
{
    m_composed = m_colors;
    if (m_model && m_model->hasPlan()) {
        for (int r = 0; r < m_layout.rows; ++r) {
            auto* line = reinterpret_cast<QRgb*>(m_composed.scanLine(r));
            for (int p = 0; p < m_layout.cols; ++p) {
                const int e = m_sorted ? m_model->expertAtRank(r, p) : p;
                if (!m_model->isKept(r, e))
                    line[p] = droppedColor(line[p]);
            }
        }
    }
    rescale();
}

void HeatmapView::rescale()
{
    if (m_layout.rows == 0 || m_layout.cols == 0) {
        m_scaled = QImage();
    } else {
        m_scaled = m_composed.scaled(m_layout.cols * m_layout.cellWidth, m_layout.rows * m_layout.cellHeight,
            Qt::IgnoreAspectRatio, Qt::FastTransformation);
    }
    update();
}

void HeatmapView::updateLayout()
{
    setMinimumSize(sizeHint());
    updateGeometry();
}

void HeatmapView::zoomIn()
{
    setCellSize(static_cast<int>(std::ceil(m_layout.cellWidth * 1.25)),
        static_cast<int>(std::ceil(m_layout.cellHeight * 1.25)));
}

void HeatmapView::zoomOut()
{
    setCellSize(static_cast<int>(std::floor(m_layout.cellWidth / 1.25)),
        static_cast<int>(std::floor(m_layout.cellHeight / 1.25)));
}

void HeatmapView::resetZoom()
{
    setCellSize(kDefaultCellWidth, kDefaultCellHeight);
}

void HeatmapView::zoomToFit(QSize available)
{
    if (m_layout.rows == 0 || m_layout.cols == 0)
        return;
    const int w = (available.width() - kLeftMargin - kLegendGap - kLegendWidth - kLegendLabels) / m_layout.cols;
    const int h = (available.height() - kTopMargin - kBottomMargin) / m_layout.rows;
    setCellSize(std::clamp(w, 1, 64), std::clamp(h, 2, 48));
}

void HeatmapView::setCellSize(int width, int height)
{
    width = std::clamp(width, 1, 64);
    height = std::clamp(height, 2, 64);
    if (width == m_layout.cellWidth && height == m_layout.cellHeight)
        return;
    m_layout.cellWidth = width;
    m_layout.cellHeight = height;
    updateLayout();
    rescale();
    Q_EMIT zoomChanged();
}

std::optional<std::pair<int, int>> HeatmapView::cellAt(QPoint pos) const
{
    const auto cell = m_layout.cellAt(pos);
    if (!cell || !m_model)
        return std::nullopt;
    const auto [row, col] = *cell;
    return std::pair { row, m_sorted ? m_model->expertAtRank(row, col) : col };
}

QPoint HeatmapView::cellCenter(int row, int expert) const
{
    return m_layout.cellRect(row, columnOf(row, expert)).center();
}

QString HeatmapView::toolTipAt(QPoint pos) const
{
    const auto cell = cellAt(pos);
    return cell ? m_model->toolTip(cell->first, cell->second) : QString();
}

QRgb HeatmapView::cellColor(int row, int expert) const
{
    return m_composed.pixel(columnOf(row, expert), row);
}

QSize HeatmapView::sizeHint() const
{
    const QRect grid = m_layout.gridRect();
    return { kLeftMargin + std::max(grid.width(), 120) + kLegendGap + kLegendWidth + kLegendLabels,
        kTopMargin + std::max(grid.height(), 120) + kBottomMargin };
}

QSize HeatmapView::minimumSizeHint() const
{
    return sizeHint();
}

void HeatmapView::render(QPainter& p) const
{
    const QSize size = sizeHint();
    p.fillRect(QRect(QPoint(0, 0), size), palette().color(QPalette::Window));
    p.setPen(palette().color(QPalette::WindowText));
    const QFontMetrics fm(font());
    if (!m_model || m_layout.rows == 0) {
        p.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter, tr("No data: open a scored atlas"));
        return;
    }
    const HeatmapData& d = m_model->heatmap();
    const QRect grid = m_layout.gridRect();
    QString title = QStringLiteral("%1 — %2").arg(d.quantity, d.domain);
    if (m_model->hasPlan())
        title += tr("   (dimmed: dropped by the plan)");
    const int titleWidth = std::max(size.width(), p.device() ? p.device()->width() : 0);
    p.drawText(QRect(4, 0, titleWidth, kTopMargin), Qt::AlignVCenter | Qt::AlignLeft, title);
    p.drawImage(grid.topLeft(), m_scaled);

    // Row labels: as many as fit without overlapping.
    const int step = std::max(1, (fm.height() + m_layout.cellHeight - 1) / m_layout.cellHeight);
    for (int r = 0; r < m_layout.rows; r += step) {
        const QRect cell = m_layout.cellRect(r, 0);
        p.drawText(QRect(0, cell.center().y() - fm.height() / 2, kLeftMargin - 4, fm.height()),
            Qt::AlignRight | Qt::AlignVCenter, QString::number(d.rowLabel(r)));
    }
    const QString axis = m_sorted ? tr("experts by rank within the layer →") : tr("expert →");
    p.drawText(QRect(grid.left(), grid.bottom() + 2, std::max(grid.width(), 200), kBottomMargin),
        Qt::AlignLeft | Qt::AlignVCenter, axis);
    p.save();
    const int middle = grid.top() + grid.height() / 2; // whole pixels
    p.translate(10, middle);
    p.rotate(-90);
    p.drawText(QRect(-60, -8, 120, 16), Qt::AlignCenter, tr("layer"));
    p.restore();

    // Legend: a vertical colour bar with its range.
    const int lh = std::max(grid.height(), 120);
    const QRect bar(grid.left() + std::max(grid.width(), 120) + kLegendGap, grid.top(), kLegendWidth, lh);
    QImage legend(1, 256, QImage::Format_RGB32);
    for (int i = 0; i < 256; ++i)
        legend.setPixel(0, i, ColorScale::colorAt(1.0 - i / 255.0));
    p.drawImage(bar, legend);
    p.drawRect(bar.adjusted(0, 0, -1, -1));
    const int lx = bar.right() + 4;
    p.drawText(
        QRect(lx, bar.top(), kLegendLabels, fm.height()), Qt::AlignLeft, QString::number(m_scale.high(), 'g', 4));
    p.drawText(QRect(lx, bar.bottom() - fm.height(), kLegendLabels, fm.height()), Qt::AlignLeft,
        QString::number(m_scale.low(), 'g', 4));
}

bool HeatmapView::exportPng(const QString& path) const
{
    QImage image(sizeHint(), QImage::Format_ARGB32_Premultiplied);
    QPainter p(&image);
    render(p);
    p.end();
    return image.save(path, "PNG");
}

bool HeatmapView::exportSvg(const QString& path) const
{
    QSvgGenerator svg;
    svg.setFileName(path);
    svg.setSize(sizeHint());
    svg.setViewBox(QRect(QPoint(0, 0), sizeHint()));
    svg.setTitle(QStringLiteral("MoE Atlas expert heatmap"));
    QPainter p;
    if (!p.begin(&svg))
        return false;
    render(p);
    return p.end();
}

void HeatmapView::paintEvent(QPaintEvent*)
{
    QPainter p(this);
    p.fillRect(rect(), palette().color(QPalette::Window));
    render(p);
}

bool HeatmapView::event(QEvent* event)
{
    if (event->type() == QEvent::ToolTip) {
        const auto* help = static_cast<QHelpEvent*>(event);
        const QString text = toolTipAt(help->pos());
        if (text.isEmpty())
            QToolTip::hideText();
        else
            QToolTip::showText(help->globalPos(), text, this);
        return true;
    }
    return QWidget::event(event);
}

void HeatmapView::wheelEvent(QWheelEvent* event)
{
    if (!(event->modifiers() & Qt::ControlModifier)) {
        QWidget::wheelEvent(event); // the scroll area scrolls
        return;
    }
    if (event->angleDelta().y() > 0)
        zoomIn();
    else if (event->angleDelta().y() < 0)
        zoomOut();
    event->accept();
}

void HeatmapView::mousePressEvent(QMouseEvent* event)
{
    if (event->button() == Qt::LeftButton)
        if (const auto cell = cellAt(event->position().toPoint()))
            Q_EMIT cellClicked(cell->first, cell->second);
    QWidget::mousePressEvent(event);
}

void HeatmapView::keyPressEvent(QKeyEvent* event)
{
    switch (event->key()) {
    case Qt::Key_Plus:
    case Qt::Key_Equal:
        zoomIn();
        break;
    case Qt::Key_Minus:
        zoomOut();
        break;
    case Qt::Key_0:
        resetZoom();
        break;
    default:
        QWidget::keyPressEvent(event);
        return;
    }
    event->accept();
}

void HeatmapView::changeEvent(QEvent* event)
{
    if (event->type() == QEvent::PaletteChange)
        update();
    QWidget::changeEvent(event);
}

} // namespace moeatlas::views
