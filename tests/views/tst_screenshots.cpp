// Renders the workbench's main views on an atlas to PNG: into $MOEATLAS_SCREENSHOTS_DIR when set
// (docs/screenshots/), otherwise into a temporary directory; either way the images must show
// something (many distinct colours, not one flat fill). Uses the trained demo atlas when present;
// the Fisher views use its /fisher tables, or `moeatlas fisher` on a copy when it has none.
#include "atlas_document.h"
#include "budget_panel.h"
#include "charts/fisher_view.h"
#include "charts/prefetch_view.h"
#include "charts/prefetch_whatif.h"
#include "fisher/fisher_store.h"
#include "heatmap_model.h"
#include "heatmap_view.h"
#include "main_window.h"
#include "test_support.h"
#include "views_fixture.h"

#include <QChart>
#include <QComboBox>
#include <QDir>
#include <QFileInfo>
#include <QSet>
#include <QSettings>
#include <QSlider>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

int distinctColors(const QImage& image)
{
    QSet<QRgb> colors;
    const QImage rgb = image.convertToFormat(QImage::Format_RGB32);
    for (int y = 0; y < rgb.height(); y += 2)
        for (int x = 0; x < rgb.width(); x += 2)
            colors.insert(rgb.pixel(x, y));
    return static_cast<int>(colors.size());
}

} // namespace

class TstScreenshots : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void render_data();
    void render();
    void fisherTab();
    void prefetchTab();
    void deepSeekScale();

private:
    QTemporaryDir m_tmp;
    QTemporaryDir m_settings;
    QString m_atlas;
    QString m_out;
};

void TstScreenshots::initTestCase()
{
    QVERIFY(m_tmp.isValid() && m_settings.isValid());
    QStandardPaths::setTestModeEnabled(true);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_settings.path());
    const QString demo = test::sourcePath(QStringLiteral("resources/demo/demo.atlas.h5"));
    if (QFileInfo::exists(demo)) {
        m_atlas = demo;
    } else {
        QString error;
        m_atlas = test::buildViewsAtlas(m_tmp.path(), &error);
        QVERIFY2(!m_atlas.isEmpty(), qPrintable(error));
    }
    m_out = qEnvironmentVariable("MOEATLAS_SCREENSHOTS_DIR");
    if (m_out.isEmpty())
        m_out = m_tmp.filePath(QStringLiteral("screenshots"));
    QVERIFY(QDir().mkpath(m_out));
    qInfo("screenshots of %s into %s", qPrintable(m_atlas), qPrintable(m_out));
}

void TstScreenshots::render_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<bool>("dark");
    QTest::newRow("light") << QStringLiteral("workbench") << false;
    QTest::newRow("dark") << QStringLiteral("workbench-dark") << true;
}

void TstScreenshots::render()
{
    QFETCH(QString, name);
    QFETCH(bool, dark);
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    w.setDarkPalette(dark);
    w.resize(1440, 900);
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    QVERIFY(w.openAtlasBlocking(m_atlas));
    const QStringList domains = w.document()->snapshot()->domainNames();
    QVERIFY(!domains.isEmpty());
    w.budgetPanel()->setTargetDomain(domains.first());
    w.budgetPanel()->sparsitySlider()->setValue(50);
    QTest::qWait(200); // let the docks' layouts settle (posted layout requests)

    const auto save = [this](const QImage& image, const QString& file) {
        const QString path = QDir(m_out).filePath(file);
        QVERIFY2(image.save(path), qPrintable(path));
        QVERIFY2(distinctColors(image) > 16, qPrintable(path + QStringLiteral(" looks blank")));
    };
    save(w.grab().toImage(), name + QStringLiteral(".png"));
    if (dark)
        return;

    // The heatmap alone: by expert index and sorted by value, with the plan overlay.
    const QString heatmap = QDir(m_out).filePath(QStringLiteral("heatmap.png"));
    QVERIFY(w.heatmapView()->exportPng(heatmap));
    QVERIFY(distinctColors(QImage(heatmap)) > 16);
    w.heatmapView()->setSortedByValue(true);
    const QString sorted = QDir(m_out).filePath(QStringLiteral("heatmap-sorted.png"));
    QVERIFY(w.heatmapView()->exportPng(sorted));
    QVERIFY(distinctColors(QImage(sorted)) > 16);
    w.heatmapView()->setSortedByValue(false);

    // Load share, per domain.
    w.quantityCombo()->setCurrentText(QStringLiteral("load_share"));
    w.domainCombo()->setCurrentIndex(0);
    const QString load = QDir(m_out).filePath(QStringLiteral("heatmap-load-share.png"));
    QVERIFY(w.heatmapView()->exportPng(load));

    // The other tabs (trade-off chart, routing statistics) as the window shows them.
    for (int i = 1; i < w.tabs()->count(); ++i) {
        if (w.tabs()->widget(i) == w.fisherView() || w.tabs()->widget(i) == w.prefetchView())
            continue; // fisherTab() and prefetchTab() render them from an atlas with their tables
        w.tabs()->setCurrentIndex(i);
        QCoreApplication::processEvents();
        QString tab = w.tabs()->tabText(i).remove(QLatin1Char('&')).toLower();
        tab.replace(QLatin1Char(' '), QLatin1Char('-'));
        const QString file = QStringLiteral("tab-%1.png").arg(tab);
        const QImage image = w.tabs()->currentWidget()->grab().toImage();
        QVERIFY(image.save(QDir(m_out).filePath(file)));
    }
}

void TstScreenshots::fisherTab()
{
    QString atlas = m_atlas;
    if (!AtlasFile::openReadOnly(atlas.toStdString()).readResults("fisher")) {
        atlas = m_tmp.filePath(QStringLiteral("fisher.atlas.h5"));
        QFile::remove(atlas);
        QVERIFY(QFile::copy(m_atlas, atlas));
        QFile(atlas).setPermissions(QFile::ReadOwner | QFile::WriteOwner);
        QString error;
        QVERIFY2(test::addFisherTables(atlas, &error, QStringLiteral("0,10,100"),
                     { QStringLiteral("--max-samples"), QStringLiteral("2") }),
            qPrintable(error));
    }
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    w.setDarkPalette(false); // render() left the dark one in the settings
    w.resize(1440, 900);
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    QVERIFY(w.openAtlasBlocking(atlas));
    const auto snapshot = w.document()->snapshot();
    QVERIFY(snapshot->fisher);

    // Workbench: heatmap coloured by pooled expert-level Fisher (mask form), a generalist plan at
    // 25 % of the experts with half of the kept experts' units pruned per layer (IntDim-L).
    w.quantityCombo()->setCurrentText(QStringLiteral("fisher_mask"));
    w.budgetPanel()->setCriterion(QStringLiteral("fisher_mask"));
    w.budgetPanel()->setTargetDomain(QString());
    w.budgetPanel()->setSparsityPercent(25);
    w.budgetPanel()->setDimScope(DimScope::Layer);
    w.budgetPanel()->setDimSparsityPercent(50);
    w.budgetPanel()->setDimsEnabled(true);
    QTRY_VERIFY_WITH_TIMEOUT(!w.budgetPanel()->isCompiling(), 30000);
    QVERIFY(w.budgetPanel()->plan() && w.budgetPanel()->plan()->hasDims());
    QTest::qWait(200);
    const auto save = [this](const QImage& image, const QString& file) {
        const QString path = QDir(m_out).filePath(file);
        QVERIFY2(image.save(path), qPrintable(path));
        QVERIFY2(distinctColors(image) > 16, qPrintable(path + QStringLiteral(" looks blank")));
    };
    save(w.grab().toImage(), QStringLiteral("workbench-fisher.png"));

    // The Fisher tab: all layers, the first domain's ablation, the profile of the expert with the
    // largest pooled Fisher in the middle MoE layer.
    FisherView* view = w.fisherView();
    w.tabs()->setCurrentWidget(view);
    view->setForm(QStringLiteral("mask"));
    view->setLayerIndex(-1);
    view->setAblationDomain(0);
    const FisherSummary& f = *snapshot->fisher;
    const int layer = static_cast<int>(f.layers.size() / 2);
    const FisherSummaryForm* mask = f.find("mask");
    const auto E = static_cast<std::size_t>(f.numExperts);
    const auto pooled = mask->experts.begin()
        + static_cast<std::ptrdiff_t>(((f.domains.size() - 1) * f.layers.size() + static_cast<std::size_t>(layer)) * E);
    const int expert = static_cast<int>(std::max_element(pooled, pooled + static_cast<std::ptrdiff_t>(E)) - pooled);
    view->setProfileExpert(layer, expert);
    QTRY_VERIFY_WITH_TIMEOUT(!view->isProfileLoading(), 30000);
    QVERIFY(!view->profileChart()->series().isEmpty());
    QVERIFY(!view->ablationChart()->series().isEmpty());
    QTest::qWait(200);
    save(view->grab().toImage(), QStringLiteral("tab-fisher.png"));
}

void TstScreenshots::prefetchTab()
{
    QString atlas = m_atlas;
    if (!AtlasFile::openReadOnly(atlas.toStdString()).readResults("prefetch_hit_rates")) {
        atlas = m_tmp.filePath(QStringLiteral("prefetch.atlas.h5"));
        QFile::remove(atlas);
        QVERIFY(QFile::copy(m_atlas, atlas));
        QFile(atlas).setPermissions(QFile::ReadOwner | QFile::WriteOwner);
        const test::ProcessResult r = test::runCli({ QStringLiteral("prefetch"), atlas });
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    }
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    w.setDarkPalette(false);
    w.resize(1440, 900);
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    QVERIFY(w.openAtlasBlocking(atlas));
    PrefetchView* view = w.prefetchView();
    w.tabs()->setCurrentWidget(view);
    QVERIFY(view->hasTable());
    // The frequency baseline's held-out hit rates, pooled; the what-if at prefetch with frequency.
    view->predictorBox()->setCurrentText(QStringLiteral("frequency"));
    view->domainBox()->setCurrentText(QStringLiteral("pooled"));
    PrefetchWhatIf* whatIf = view->whatIf();
    whatIf->policyBox()->setCurrentText(QStringLiteral("prefetch"));
    whatIf->predictorBox()->setCurrentText(QStringLiteral("frequency"));
    QTRY_VERIFY_WITH_TIMEOUT(whatIf->shownOutcome() && !whatIf->runner()->isBusy(), 120000);
    QVERIFY2(whatIf->errorText().isEmpty(), qPrintable(whatIf->errorText()));
    QTest::qWait(200);
    const QImage image = view->grab().toImage();
    const QString path = QDir(m_out).filePath(QStringLiteral("tab-prefetch.png"));
    QVERIFY2(image.save(path), qPrintable(path));
    QVERIFY2(distinctColors(image) > 16, qPrintable(path + QStringLiteral(" looks blank")));
}

void TstScreenshots::deepSeekScale()
{
    // DeepSeek-V3's shape (61 MoE layers x 256 experts, synthetic scores), sorted, with a 75 %
    // global generalist plan from the budget panel.
    const auto snapshot = test::syntheticSnapshot(61, 256, 8);
    HeatmapModel model;
    model.setHeatmap(heatmapData(*snapshot, { HeatmapQuantity::Kind::Score, QStringLiteral("peu"), 2 }));
    BudgetPanel panel;
    panel.setSnapshot(snapshot);
    panel.setScope(BudgetScope::Global);
    panel.setSparsityPercent(75);
    QVERIFY(panel.plan());
    QVERIFY(model.setPlan(*panel.plan()));
    HeatmapView view;
    view.setModel(&model);
    view.setSortedByValue(true);
    view.setCellSize(4, 6);
    const QString path = QDir(m_out).filePath(QStringLiteral("heatmap-61x256.png"));
    QVERIFY(view.exportPng(path));
    QVERIFY(distinctColors(QImage(path)) > 16);
}

QTEST_MAIN(TstScreenshots)
#include "tst_screenshots.moc"
