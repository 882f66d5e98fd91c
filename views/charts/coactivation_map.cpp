#include "charts/coactivation_map.h"

#include <QPainter>

#include <algorithm>
#include <cmath>

namespace moeatlas::views {

CoactivationMap::CoactivationMap(QWidget* parent)
    : QWidget(parent)
{
    setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
}

QRgb CoactivationMap::colorFor(double value, double max)
{
    const double t = max > 0 && std::isfinite(value) ? std::clamp(value / max, 0.0, 1.0) : 0.0;
    // white -> rgb(8, 48, 107) (ColorBrewer Blues' darkest)
    auto mix = [t](int from, int to) { return static_cast<int>(std::lround(from + t * (to - from))); };
    return qRgb(mix(255, 8), mix(255, 48), mix(255, 107));
}

void CoactivationMap::setMatrix(int n, std::vector<double> values, const QString& title)
{
    m_n = values.size() == static_cast<std::size_t>(n) * static_cast<std::size_t>(n) ? n : 0;
    m_values = m_n > 0 ? std::move(values) : std::vector<double> {};
    m_title = title;
    m_max = 0;
    for (int i = 0; i < m_n; ++i)
        for (int j = 0; j < m_n; ++j)
            if (i != j && std::isfinite(value(i, j)))
                m_max = std::max(m_max, value(i, j));
    m_image = QImage(std::max(m_n, 1), std::max(m_n, 1), QImage::Format_RGB32);
    m_image.fill(Qt::white);
    for (int i = 0; i < m_n; ++i)
        for (int j = 0; j < m_n; ++j)
            m_image.setPixel(j, i, i == j ? diagonalColor() : colorFor(value(i, j), m_max));
    update();
}

void CoactivationMap::paintEvent(QPaintEvent*)
{
    QPainter p(this);
    p.fillRect(rect(), palette().window());
    const int titleHeight = fontMetrics().height() + 4;
    const QRect titleRect(0, 0, width(), titleHeight);
    p.drawText(titleRect, Qt::AlignCenter,
        m_title.isEmpty() ? tr("Co-activation P(column | row), max %1").arg(m_max, 0, 'f', 3)
                          : m_title + tr(" (max %1)").arg(m_max, 0, 'f', 3));
    if (m_n == 0)
        return;
    const int side = std::max(1, std::min(width() - 8, height() - titleHeight - 8));
    const QRect target((width() - side) / 2, titleHeight + 4, side, side);
    p.drawImage(target, m_image); // nearest-neighbour: each cell stays a crisp square
    p.setPen(palette().windowText().color());
    p.drawRect(target.adjusted(0, 0, -1, -1));
}

} // namespace moeatlas::views
