// Interactive cost of the heatmap at DeepSeek-V3 scale (61 MoE layers x 256 experts, in memory):
// one full repaint, and one budget change end to end (slider value -> plan -> overlay -> repaint).
// QBENCHMARK reports; nothing here asserts a time (the budget is 16 ms per frame).
#include "budget_panel.h"
#include "heatmap_model.h"
#include "heatmap_view.h"
#include "views_fixture.h"

#include <QElapsedTimer>
#include <QSlider>
#include <QTest>

using namespace moeatlas;
using namespace moeatlas::views;

class TstHeatmapBench : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void repaint();
    void budgetChange_data();
    void budgetChange();

private:
    std::shared_ptr<AtlasSnapshot> m_snapshot;
};

void TstHeatmapBench::initTestCase()
{
    m_snapshot = test::syntheticSnapshot(61, 256, 8);
}

void TstHeatmapBench::repaint()
{
    HeatmapModel model;
    model.setHeatmap(heatmapData(*m_snapshot, { HeatmapQuantity::Kind::Score, QStringLiteral("peu"), 2 }));
    HeatmapView view;
    view.setModel(&model);
    view.resize(view.sizeHint());
    view.show();
    QVERIFY(QTest::qWaitForWindowExposed(&view));
    QCOMPARE(view.layout().rows, 61);
    QCOMPARE(view.layout().cols, 256);
    QBENCHMARK
    {
        view.repaint();
    }
}

void TstHeatmapBench::budgetChange_data()
{
    QTest::addColumn<QString>("target");
    QTest::addColumn<bool>("global");
    QTest::newRow("specialist uniform") << QStringLiteral("math") << false;
    QTest::newRow("generalist uniform") << QString() << false;
    QTest::newRow("generalist global") << QString() << true;
}

void TstHeatmapBench::budgetChange()
{
    QFETCH(QString, target);
    QFETCH(bool, global);
    BudgetPanel panel;
    HeatmapModel model;
    HeatmapView view;
    view.setModel(&model);
    model.setHeatmap(heatmapData(*m_snapshot, { HeatmapQuantity::Kind::Score, QStringLiteral("peu"), 2 }));
    QObject::connect(&panel, &BudgetPanel::planChanged, &model, [&model](const Plan& p) { model.setPlan(p); });
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(target);
    panel.setScope(global ? BudgetScope::Global : BudgetScope::Uniform);
    view.resize(view.sizeHint());
    view.show();
    QVERIFY(QTest::qWaitForWindowExposed(&view));
    QSlider* slider = panel.sparsitySlider();
    int value = 40;
    QBENCHMARK
    {
        value = value == 40 ? 60 : 40;
        slider->setValue(value);
        view.repaint();
    }
    // The work really happened: the overlay holds the last plan.
    QVERIFY(panel.plan());
    QVERIFY(model.hasPlan());
    int kept = 0;
    for (int l = 0; l < 61; ++l)
        kept += model.keptInRow(l);
    const double keep = 1.0 - value / 100.0;
    QCOMPARE(
        kept, global ? static_cast<int>(std::lround(keep * 256 * 61)) : static_cast<int>(std::lround(keep * 256)) * 61);
}

QTEST_MAIN(TstHeatmapBench)
#include "tst_heatmap_bench.moc"
