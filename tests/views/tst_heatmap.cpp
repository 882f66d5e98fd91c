// The expert heatmap: its model against the atlas arrays (QAbstractItemModelTester), ranks, the
// plan overlay, the colour scale and layout math, and the view's sort, zoom, tooltip and overlay.
#include "atlas_document.h"
#include "heatmap_model.h"
#include "heatmap_scale.h"
#include "heatmap_view.h"
#include "plan/plan.h"
#include "views_fixture.h"

#include <QAbstractItemModelTester>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>
#include <QWheelEvent>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

HeatmapData matrix(int rows, int cols, std::vector<double> values)
{
    HeatmapData d;
    d.rows = rows;
    d.cols = cols;
    d.values = std::move(values);
    d.quantity = QStringLiteral("test");
    d.domain = QStringLiteral("pooled");
    return d;
}

} // namespace

class TstHeatmap : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void modelMatchesAtlas_data();
    void modelMatchesAtlas();
    void ranksWithinLayer();
    void planOverlay();
    void toolTipNamesEverything();
    void csvHasEveryCell();
    void colorScale();
    void layoutMapsPixels_data();
    void layoutMapsPixels();
    void viewSortsByValue();
    void viewZooms();
    void viewOverlayDimsDropped();

private:
    QTemporaryDir m_dir;
    QString m_atlas;
    std::shared_ptr<const AtlasSnapshot> m_snapshot;
};

void TstHeatmap::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QString error;
    m_atlas = test::buildViewsAtlas(m_dir.path(), &error);
    QVERIFY2(!m_atlas.isEmpty(), qPrintable(error));
    m_snapshot = loadAtlasSnapshot(m_atlas);
}

void TstHeatmap::modelMatchesAtlas_data()
{
    QTest::addColumn<int>("kind");
    QTest::addColumn<QString>("name");
    QTest::addColumn<QString>("group");
    QTest::addColumn<int>("row");
    QTest::newRow("peu pooled") << 0 << QStringLiteral("peu") << QStringLiteral("scores/peu") << 2;
    QTest::newRow("peu math") << 0 << QStringLiteral("peu") << QStringLiteral("scores/peu") << 0;
    QTest::newRow("frequency code") << 0 << QStringLiteral("frequency") << QStringLiteral("scores/frequency") << 1;
    QTest::newRow("load_share pooled") << 1 << QStringLiteral("load_share") << QStringLiteral("statistics") << 2;
    QTest::newRow("specialisation code") << 1 << QStringLiteral("specialisation") << QStringLiteral("statistics") << 1;
}

void TstHeatmap::modelMatchesAtlas()
{
    QFETCH(int, kind);
    QFETCH(QString, name);
    QFETCH(QString, group);
    QFETCH(int, row);
    HeatmapModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    const HeatmapQuantity q { static_cast<HeatmapQuantity::Kind>(kind), name, row };
    model.setHeatmap(heatmapData(*m_snapshot, q));

    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    const auto results = atlas.readResults(group.toStdString());
    QVERIFY(results);
    const AtlasArray* a = results->find(kind == 0 ? "value" : name.toStdString());
    QVERIFY(a);
    const int L = 3, E = 8;
    QCOMPARE(model.rowCount(), L);
    QCOMPARE(model.columnCount(), E);
    for (int l = 0; l < L; ++l) {
        QCOMPARE(model.headerData(l, Qt::Vertical).toString(),
            QStringLiteral("L%1").arg(atlas.model().moeLayers[static_cast<std::size_t>(l)]));
        for (int e = 0; e < E; ++e) {
            const double expected = a->values[(static_cast<std::size_t>(row) * L + l) * E + e];
            QCOMPARE(model.data(model.index(l, e)).toDouble(), expected);
            QCOMPARE(model.data(model.index(l, e), HeatmapModel::ValueRole).toDouble(), expected);
            QCOMPARE(model.data(model.index(l, e), HeatmapModel::ExpertRole).toInt(), e);
        }
    }
    const QString domain = row == 2 ? QStringLiteral("pooled") : m_snapshot->domainNames()[row];
    QCOMPARE(model.heatmap().domain, domain);
}

void TstHeatmap::ranksWithinLayer()
{
    HeatmapModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    // Row 0 has a tie (experts 1 and 3): the lower index ranks first, as the planner breaks ties.
    model.setHeatmap(matrix(2, 4, { 0.1, 0.5, 0.2, 0.5, 4, 3, 2, 1 }));
    const int expected[2][4] = { { 4, 1, 3, 2 }, { 1, 2, 3, 4 } };
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 4; ++c)
            QCOMPARE(model.data(model.index(r, c), HeatmapModel::RankRole).toInt(), expected[r][c]);
    QCOMPARE(model.expertAtRank(0, 0), 1);
    QCOMPARE(model.expertAtRank(0, 1), 3);
    QCOMPARE(model.expertAtRank(0, 3), 0);

    // Cells without a value (NaN) rank after every number, in expert order.
    const double nan = std::nan("");
    model.setHeatmap(matrix(1, 5, { nan, 0.2, nan, 0.9, 0.2 }));
    const int withNan[5] = { 4, 2, 5, 1, 3 };
    for (int c = 0; c < 5; ++c)
        QCOMPARE(model.data(model.index(0, c), HeatmapModel::RankRole).toInt(), withNan[c]);
}

void TstHeatmap::planOverlay()
{
    HeatmapModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setHeatmap(matrix(2, 4, { 0.1, 0.5, 0.2, 0.4, 4, 3, 2, 1 }));
    QVERIFY(!model.hasPlan());
    QVERIFY(!model.data(model.index(0, 0), HeatmapModel::KeptRole).isValid());
    QSignalSpy overlay(&model, &HeatmapModel::overlayChanged);
    QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
    Plan plan;
    plan.keep = { { 1, 3 }, { 0, 2 } };
    QVERIFY(model.setPlan(plan));
    QCOMPARE(overlay.count(), 1);
    QCOMPARE(changed.count(), 1);
    QCOMPARE(model.keptInRow(0), 2);
    QCOMPARE(model.data(model.index(0, 1), HeatmapModel::KeptRole).toBool(), true);
    QCOMPARE(model.data(model.index(0, 0), HeatmapModel::KeptRole).toBool(), false);
    QCOMPARE(model.data(model.index(1, 2), HeatmapModel::KeptRole).toBool(), true);
    QCOMPARE(model.data(model.index(1, 3), HeatmapModel::KeptRole).toBool(), false);
    // A plan of another shape is refused and leaves the overlay as it was.
    Plan wrong;
    wrong.keep = { { 0 } };
    QVERIFY(!model.setPlan(wrong));
    wrong.keep = { { 0 }, { 9 } };
    QVERIFY(!model.setPlan(wrong));
    QCOMPARE(model.keptInRow(1), 2);
    model.clearPlan();
    QVERIFY(!model.hasPlan());
    QCOMPARE(model.keptInRow(1), 4);
    // A new matrix drops the overlay.
    QVERIFY(model.setPlan(plan));
    model.setHeatmap(matrix(2, 4, std::vector<double>(8, 1.0)));
    QVERIFY(!model.hasPlan());
}

void TstHeatmap::toolTipNamesEverything()
{
    HeatmapModel model;
    model.setHeatmap(heatmapData(*m_snapshot, { HeatmapQuantity::Kind::Score, QStringLiteral("peu"), 2 }));
    Plan plan;
    plan.keep = { { 0, 1, 2, 3 }, { 0, 1, 2, 3 }, { 4, 5, 6, 7 } };
    QVERIFY(model.setPlan(plan));
    const QString tip = model.data(model.index(2, 5), Qt::ToolTipRole).toString();
    const int layer = m_snapshot->model.moeLayers[2];
    QVERIFY2(tip.contains(QStringLiteral("Layer %1, expert 5").arg(layer)), qPrintable(tip));
    QVERIFY2(
        tip.contains(QStringLiteral("peu (pooled): %1").arg(model.heatmap().at(2, 5), 0, 'g', 6)), qPrintable(tip));
    QVERIFY2(tip.contains(QStringLiteral("Rank in layer: %1 of 8").arg(model.rank(2, 5))), qPrintable(tip));
    QVERIFY2(tip.contains(QStringLiteral("Kept")), qPrintable(tip));
    QVERIFY2(tip.contains(QStringLiteral("math")) && tip.contains(QStringLiteral("code")), qPrintable(tip));
    QVERIFY(model.data(model.index(0, 5), Qt::ToolTipRole).toString().contains(QStringLiteral("Dropped")));
    // Domain shares: load_counts of the expert by domain over its total.
    const AtlasArray* counts = m_snapshot->statisticsArray("load_counts");
    const double math = counts->values[(0 * 3 + 2) * 8 + 5];
    const double code = counts->values[(1 * 3 + 2) * 8 + 5];
    QVERIFY(math + code > 0);
    QCOMPARE(model.heatmap().domainShares[0][2 * 8 + 5], math / (math + code));
}

void TstHeatmap::csvHasEveryCell()
{
    HeatmapModel model;
    model.setHeatmap(matrix(2, 3, { 1, 2, 3, 4, 5, 6.5 }));
    Plan plan;
    plan.keep = { { 2 }, { 0, 1 } };
    QVERIFY(model.setPlan(plan));
    const QStringList lines = model.toCsv().split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    QCOMPARE(lines.size(), 7);
    QCOMPARE(lines[0], QStringLiteral("layer,expert,value,rank,kept"));
    QCOMPARE(lines[1], QStringLiteral("0,0,1,3,0"));
    QCOMPARE(lines[3], QStringLiteral("0,2,3,1,1"));
    QCOMPARE(lines[6], QStringLiteral("1,2,6.5,1,0"));
}

void TstHeatmap::colorScale()
{
    const ColorScale scale(0.0, 2.0);
    QCOMPARE(scale.color(0.0), ColorScale::colorAt(0.0));
    QCOMPARE(scale.color(2.0), ColorScale::colorAt(1.0));
    QCOMPARE(scale.color(-5.0), ColorScale::colorAt(0.0)); // clamped
    QCOMPARE(scale.color(1.0), ColorScale::colorAt(0.5));
    QCOMPARE(ColorScale::colorAt(0.0), qRgb(68, 1, 84)); // viridis ends
    QCOMPARE(ColorScale::colorAt(1.0), qRgb(253, 231, 37));
    QVERIFY(qGray(ColorScale::colorAt(0.75)) > qGray(ColorScale::colorAt(0.25))); // monotone lightness
    const std::vector<double> values { 3.0, std::nan(""), -1.0, 7.0 };
    const ColorScale fit = ColorScale::fitting(values);
    QCOMPARE(fit.low(), -1.0);
    QCOMPARE(fit.high(), 7.0);
    const ColorScale flat = ColorScale::fitting(std::vector<double> { 2.0, 2.0 });
    QVERIFY(flat.high() > flat.low());
    QVERIFY(droppedColor(qRgb(253, 231, 37)) != qRgb(253, 231, 37));
}

void TstHeatmap::layoutMapsPixels_data()
{
    QTest::addColumn<QPoint>("pos");
    QTest::addColumn<int>("row");
    QTest::addColumn<int>("col");
    QTest::newRow("first cell") << QPoint(10, 20) << 0 << 0;
    QTest::newRow("inside first cell") << QPoint(13, 27) << 0 << 0;
    QTest::newRow("next column") << QPoint(14, 20) << 0 << 1;
    QTest::newRow("last cell") << QPoint(10 + 4 * 10 - 1, 20 + 8 * 3 - 1) << 2 << 9;
    QTest::newRow("left of grid") << QPoint(9, 20) << -1 << -1;
    QTest::newRow("below grid") << QPoint(10, 20 + 24) << -1 << -1;
    QTest::newRow("right of grid") << QPoint(50, 20) << -1 << -1;
}

void TstHeatmap::layoutMapsPixels()
{
    QFETCH(QPoint, pos);
    QFETCH(int, row);
    QFETCH(int, col);
    HeatmapLayout layout { 3, 10, 4, 8, QPoint(10, 20) };
    const auto cell = layout.cellAt(pos);
    if (row < 0) {
        QVERIFY(!cell);
        return;
    }
    QVERIFY(cell);
    QCOMPARE(cell->first, row);
    QCOMPARE(cell->second, col);
    QVERIFY(layout.cellRect(row, col).contains(pos));
}

void TstHeatmap::viewSortsByValue()
{
    HeatmapModel model;
    model.setHeatmap(heatmapData(*m_snapshot, { HeatmapQuantity::Kind::Score, QStringLiteral("peu"), 2 }));
    HeatmapView view;
    view.setModel(&model);
    view.resize(view.sizeHint());
    for (int r = 0; r < 3; ++r) {
        const int best = model.expertAtRank(r, 0);
        // Unsorted: column = expert index.
        QCOMPARE(view.cellAt(view.layout().cellRect(r, best).center())->second, best);
    }
    view.setSortedByValue(true);
    QVERIFY(view.isSortedByValue());
    for (int r = 0; r < 3; ++r) {
        // Sorted: column p holds the expert of rank p + 1, so values fall along the row.
        for (int p = 0; p < 8; ++p) {
            const auto cell = view.cellAt(view.layout().cellRect(r, p).center());
            QVERIFY(cell);
            QCOMPARE(cell->second, model.expertAtRank(r, p));
            QCOMPARE(model.rank(r, cell->second), p + 1);
            QCOMPARE(view.cellAt(view.cellCenter(r, cell->second))->second, cell->second);
        }
        QCOMPARE(view.cellColor(r, model.expertAtRank(r, 0)),
            view.colorScale().color(model.heatmap().at(r, model.expertAtRank(r, 0))));
    }
    const QPoint first = view.layout().cellRect(1, 0).center();
    QVERIFY(view.toolTipAt(first).contains(QStringLiteral("Rank in layer: 1 of 8")));
    QVERIFY(view.toolTipAt(QPoint(0, 0)).isEmpty());
}

void TstHeatmap::viewZooms()
{
    HeatmapModel model;
    model.setHeatmap(matrix(4, 64, std::vector<double>(256, 0.5)));
    HeatmapView view;
    view.setModel(&model);
    QSignalSpy zoomed(&view, &HeatmapView::zoomChanged);
    const QSize cell = view.cellSize();
    const QSize hint = view.sizeHint();
    view.zoomIn();
    QVERIFY(view.cellSize().width() > cell.width());
    QVERIFY(view.cellSize().height() > cell.height());
    QVERIFY(view.sizeHint().width() > hint.width());
    QCOMPARE(zoomed.count(), 1);
    // Keys: + and - zoom, 0 resets.
    QTest::keyClick(&view, Qt::Key_Plus);
    QCOMPARE(zoomed.count(), 2);
    QTest::keyClick(&view, Qt::Key_0);
    QCOMPARE(view.cellSize(), cell);
    QTest::keyClick(&view, Qt::Key_Minus);
    QVERIFY(view.cellSize().width() < cell.width());
    view.resetZoom();
    // Ctrl+wheel zooms; a plain wheel does not (it scrolls).
    const QPointF at(20, 30);
    QWheelEvent plain(
        at, view.mapToGlobal(at), QPoint(), QPoint(0, 120), Qt::NoButton, Qt::NoModifier, Qt::NoScrollPhase, false);
    QApplication::sendEvent(&view, &plain);
    QCOMPARE(view.cellSize(), cell);
    QWheelEvent ctrl(at, view.mapToGlobal(at), QPoint(), QPoint(0, 120), Qt::NoButton, Qt::ControlModifier,
        Qt::NoScrollPhase, false);
    QApplication::sendEvent(&view, &ctrl);
    QVERIFY(view.cellSize().width() > cell.width());
    // Bounded.
    for (int i = 0; i < 50; ++i)
        view.zoomIn();
    QCOMPARE(view.cellSize().width(), 64);
    for (int i = 0; i < 50; ++i)
        view.zoomOut();
    QCOMPARE(view.cellSize().width(), 1);
}

void TstHeatmap::viewOverlayDimsDropped()
{
    HeatmapModel model;
    model.setHeatmap(matrix(2, 4, { 0.1, 0.5, 0.2, 0.4, 4, 3, 2, 1 }));
    HeatmapView view;
    view.setModel(&model);
    const QRgb before = view.cellColor(0, 0);
    QCOMPARE(before, view.colorScale().color(0.1));
    Plan plan;
    plan.keep = { { 1, 3 }, { 0, 1 } };
    QVERIFY(model.setPlan(plan));
    QCOMPARE(view.cellColor(0, 0), droppedColor(before));
    QCOMPARE(view.cellColor(0, 1), view.colorScale().color(0.5));
    QCOMPARE(view.cellColor(1, 3), droppedColor(view.colorScale().color(1.0)));
    // Sorting keeps each expert's overlay with the expert.
    view.setSortedByValue(true);
    QCOMPARE(view.cellColor(0, 0), droppedColor(before));
    QCOMPARE(view.cellColor(0, 3), view.colorScale().color(0.4));
    // The painted widget shows the dimmed colour at the cell.
    view.resize(view.sizeHint());
    const QImage shot = view.grab().toImage();
    const QPoint c = view.cellCenter(0, 0);
    QCOMPARE(shot.pixel(c * shot.devicePixelRatio()) & 0xFFFFFF, droppedColor(before) & 0xFFFFFF);
    model.clearPlan();
    QCOMPARE(view.cellColor(0, 0), before);
}

QTEST_MAIN(TstHeatmap)
#include "tst_heatmap.moc"
