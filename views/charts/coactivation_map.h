// A small E x E heatmap of expert co-activation for one MoE layer: cell (row i, column j) is the
// fraction of tokens routed to i that were also routed to j. Painted from a QImage, one pixel per cell.
#pragma once

#include <QImage>
#include <QString>
#include <QWidget>

#include <vector>

namespace moeatlas::views {

class CoactivationMap : public QWidget {
    Q_OBJECT
public:
    explicit CoactivationMap(QWidget* parent = nullptr);

    // values: [n, n] row-major. The colour scale runs from 0 to the largest off-diagonal value
    // (the diagonal is 1 whenever the expert is routed at all, and would flatten the scale);
    // diagonal cells are drawn grey.
    void setMatrix(int n, std::vector<double> values, const QString& title = {});

    int matrixSize() const { return m_n; }
    double value(int row, int column) const
    {
        const auto n = static_cast<std::size_t>(m_n);
        return m_values[static_cast<std::size_t>(row) * n + static_cast<std::size_t>(column)];
    }
    double scaleMax() const { return m_max; }
    // The cells as pixels: pixel (x = column, y = row).
    const QImage& image() const { return m_image; }

    // White (0) to dark blue (max), linear in value; max <= 0 gives white.
    static QRgb colorFor(double value, double max);
    static QRgb diagonalColor() { return qRgb(200, 200, 200); }

    QSize sizeHint() const override { return { 320, 320 }; }
    QSize minimumSizeHint() const override { return { 120, 120 }; }

protected:
    void paintEvent(QPaintEvent* event) override;

private:
    int m_n = 0;
    std::vector<double> m_values;
    double m_max = 0;
    QImage m_image;
    QString m_title;
};

} // namespace moeatlas::views
