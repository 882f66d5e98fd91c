// MainWindow: open (and failures, logged without blocking), recent files and window state in
// QSettings (a temporary settings path), palette, exports (PNG/SVG/CSV), drag and drop, and the
// budget slider driving the heatmap overlay.
#include "atlas/atlas_file.h"
#include "atlas_document.h"
#include "budget_panel.h"
#include "budget_routing.h"
#include "charts/routing_stats.h"
#include "charts/tradeoff_chart.h"
#include "heatmap_model.h"
#include "heatmap_view.h"
#include "main_window.h"
#include "views_fixture.h"

#include <nlohmann/json.hpp>

#include <QApplication>
#include <QComboBox>
#include <QFile>
#include <QFileInfo>
#include <QImage>
#include <QMimeData>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QSlider>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTest>

#include <QUrl>
#include <cmath>

using namespace moeatlas;
using namespace moeatlas::views;

class TstMainWindow : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void init();
    void opensAndShowsHeatmap();
    void openFailureIsLogged();
    void recentFilesAndStateRoundTrip();
    void paletteRoundTrip();
    void exports();
    void dropOpensAtlas();
    void sliderDrivesOverlay();
    void chartsShowAtlas();
    void evaluatePlanEndToEnd();
    void evaluatePlanWithRoutingRule();

private:
    QTemporaryDir m_dir;
    QTemporaryDir m_settings;
    QString m_atlas;
};

void TstMainWindow::initTestCase()
{
    QVERIFY(m_dir.isValid() && m_settings.isValid());
    QStandardPaths::setTestModeEnabled(true);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_settings.path());
    QString error;
    m_atlas = test::buildViewsAtlas(m_dir.path(), &error);
    QVERIFY2(!m_atlas.isEmpty(), qPrintable(error));
}

void TstMainWindow::init()
{
    QSettings(QSettings::IniFormat, QSettings::UserScope, QStringLiteral("MoE Atlas"), QStringLiteral("moeatlas-gui"))
        .clear();
}

void TstMainWindow::opensAndShowsHeatmap()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QSignalSpy loaded(w.document(), &AtlasDocument::loaded);
    w.openAtlas(m_atlas);
    QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 60000);
    QVERIFY2(w.logText().contains(QStringLiteral("Opened")), qPrintable(w.logText()));
    QVERIFY(w.windowTitle().contains(QStringLiteral("run.atlas.h5")));
    // PEU pooled by default; every quantity and domain row is offered.
    QCOMPARE(w.quantityCombo()->currentText(), QStringLiteral("peu"));
    QCOMPARE(w.domainCombo()->currentText(), QStringLiteral("pooled"));
    QVERIFY(w.quantityCombo()->findText(QStringLiteral("load_share")) >= 0);
    QCOMPARE(w.heatmapModel()->rowCount(), 3);
    QCOMPARE(w.heatmapModel()->columnCount(), 8);
    const AtlasArray* peu = w.document()->snapshot()->scoreArray("peu");
    QCOMPARE(w.heatmapModel()->heatmap().values[0], peu->values[2 * 3 * 8]);
    // Switching the domain re-reads the matrix.
    w.domainCombo()->setCurrentText(QStringLiteral("math"));
    QCOMPARE(w.heatmapModel()->heatmap().values[0], peu->values[0]);
    // Specialisation has no pooled row.
    w.quantityCombo()->setCurrentText(QStringLiteral("specialisation"));
    QCOMPARE(w.domainCombo()->count(), 2);
    QCOMPARE(w.heatmapModel()->heatmap().quantity, QStringLiteral("specialisation"));
    // The budget panel's plan is drawn over the heatmap.
    QVERIFY(w.budgetPanel()->plan());
    QVERIFY(w.heatmapModel()->hasPlan());
}

void TstMainWindow::openFailureIsLogged()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QSignalSpy failed(w.document(), &AtlasDocument::failed);
    const QString missing = m_dir.filePath(QStringLiteral("nope.atlas.h5"));
    w.openAtlas(missing);
    QTRY_COMPARE_WITH_TIMEOUT(failed.count(), 1, 60000);
    QVERIFY2(w.logText().contains(QStringLiteral("Error")) && w.logText().contains(missing), qPrintable(w.logText()));
    QVERIFY(w.recentFiles().isEmpty());
    // With dialogs on, the error shows a non-modal box and nothing blocks.
    MainWindow v;
    v.openAtlasBlocking(missing);
    QVERIFY(QApplication::activeModalWidget() == nullptr);
}

void TstMainWindow::recentFilesAndStateRoundTrip()
{
    QByteArray geometry;
    {
        MainWindow w;
        w.setErrorDialogsEnabled(false);
        w.resize(900, 640);
        QVERIFY(w.openAtlasBlocking(m_atlas));
        QCOMPARE(w.recentFiles(), QStringList { QFileInfo(m_atlas).absoluteFilePath() });
        // Reopening does not duplicate; the list is bounded.
        QVERIFY(w.openAtlasBlocking(m_atlas));
        QCOMPARE(w.recentFiles().size(), 1);
        w.close();
        geometry = w.saveGeometry();
    }
    const QSettings s(
        QSettings::IniFormat, QSettings::UserScope, QStringLiteral("MoE Atlas"), QStringLiteral("moeatlas-gui"));
    QVERIFY2(s.fileName().startsWith(m_settings.path()), qPrintable(s.fileName()));
    QCOMPARE(
        s.value(QStringLiteral("recentFiles")).toStringList(), QStringList { QFileInfo(m_atlas).absoluteFilePath() });
    QCOMPARE(s.value(QStringLiteral("geometry")).toByteArray(), geometry);
    MainWindow again;
    QCOMPARE(again.recentFiles(), QStringList { QFileInfo(m_atlas).absoluteFilePath() });
    // Restored, not the 1280x800 default (the offscreen platform adds its own title-bar margin to
    // the height of a never-shown window, so only the width is exact).
    QCOMPARE(again.width(), 900);
    QVERIFY2(qAbs(again.height() - 640) <= 64, qPrintable(QString::number(again.height())));
}

void TstMainWindow::paletteRoundTrip()
{
    {
        MainWindow w;
        const QColor light = QApplication::palette().color(QPalette::Window);
        w.setDarkPalette(true);
        QVERIFY(w.isDarkPalette());
        QVERIFY(QApplication::palette().color(QPalette::Window).lightness() < 100);
        QVERIFY(QApplication::palette().color(QPalette::Window) != light);
        w.close();
    }
    {
        MainWindow w;
        QVERIFY(w.isDarkPalette());
        w.setDarkPalette(false);
        QVERIFY(QApplication::palette().color(QPalette::Window).lightness() > 150);
        w.close();
    }
}

void TstMainWindow::exports()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QVERIFY(w.openAtlasBlocking(m_atlas));
    const QString png = m_dir.filePath(QStringLiteral("heatmap.png"));
    const QString svg = m_dir.filePath(QStringLiteral("heatmap.svg"));
    const QString csv = m_dir.filePath(QStringLiteral("heatmap.csv"));
    QVERIFY(w.exportHeatmapPng(png));
    QVERIFY(w.exportHeatmapSvg(svg));
    QVERIFY(w.exportTableCsv(csv));

    const QImage image(png);
    QVERIFY(!image.isNull());
    QCOMPARE(image.size(), w.heatmapView()->sizeHint());
    // The top-ranked expert of layer 0 is painted in its colour.
    const HeatmapModel* m = w.heatmapModel();
    const QPoint c = w.heatmapView()->cellCenter(0, m->expertAtRank(0, 0));
    QCOMPARE(image.pixel(c) & 0xFFFFFF, w.heatmapView()->cellColor(0, m->expertAtRank(0, 0)) & 0xFFFFFF);

    QFile svgFile(svg);
    QVERIFY(svgFile.open(QIODevice::ReadOnly));
    const QByteArray svgText = svgFile.readAll();
    QVERIFY(svgText.contains("<svg"));
    QVERIFY(svgText.contains("<image")); // the heatmap grid
    QVERIFY(svgText.size() > 1000);

    QFile csvFile(csv);
    QVERIFY(csvFile.open(QIODevice::ReadOnly | QIODevice::Text));
    const QStringList lines = QString::fromUtf8(csvFile.readAll()).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    QCOMPARE(lines.size(), 1 + 3 * 8);
    QCOMPARE(lines[0], QStringLiteral("layer,expert,value,rank,kept"));
    const QStringList first = lines[1].split(QLatin1Char(','));
    QCOMPARE(first[0].toInt(), w.document()->snapshot()->model.moeLayers[0]);
    QCOMPARE(first[2].toDouble(), m->heatmap().at(0, 0)); // 17 significant digits: the double round-trips
    // Failures are reported, not thrown.
    QVERIFY(!w.exportTableCsv(m_dir.filePath(QStringLiteral("no/such/dir/x.csv"))));
    QVERIFY(w.logText().contains(QStringLiteral("Cannot write")));

    // On the Trade-off tab: the chart as PNG/SVG and the evaluation table as CSV, whose nll
    // column is the atlas's /evaluation table read independently.
    w.tabs()->setCurrentIndex(2);
    const QString chartPng = m_dir.filePath(QStringLiteral("tradeoff.png"));
    const QString chartSvg = m_dir.filePath(QStringLiteral("tradeoff.svg"));
    QVERIFY(w.exportCurrentView(chartPng));
    QVERIFY(w.exportCurrentView(chartSvg));
    QVERIFY(!QImage(chartPng).isNull());
    QVERIFY(QFileInfo(chartSvg).size() > 1000);
    const QString evalCsv = m_dir.filePath(QStringLiteral("tradeoff.csv"));
    QVERIFY(w.exportTableCsv(evalCsv));
    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    const QString label = w.evaluationCombo()->currentText();
    const auto table = atlas.readResults("evaluation/" + label.toStdString());
    QVERIFY(table.has_value());
    const AtlasArray* nll = table->find("nll");
    QFile evalFile(evalCsv);
    QVERIFY(evalFile.open(QIODevice::ReadOnly | QIODevice::Text));
    const QStringList rows = QString::fromUtf8(evalFile.readAll()).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    QCOMPARE(static_cast<std::size_t>(rows.size()), 1 + nll->values.size());
    QVERIFY(rows[0].startsWith(QStringLiteral("variant,method,criterion")));
    // The CSV prints 9 significant digits (relative rounding <= 5e-9); the values are the stored doubles.
    for (int i = 1; i < rows.size(); ++i)
        QVERIFY(std::abs(rows[i].split(QLatin1Char(','))[8].toDouble() - nll->values[static_cast<std::size_t>(i - 1)])
            <= 1e-7 * std::max(1.0, nll->values[static_cast<std::size_t>(i - 1)]));

    w.tabs()->setCurrentIndex(3);
    const QString statsPng = m_dir.filePath(QStringLiteral("routing.png"));
    QVERIFY(w.exportCurrentView(statsPng));
    QVERIFY(!QImage(statsPng).isNull());
}

void TstMainWindow::dropOpensAtlas()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QSignalSpy loaded(w.document(), &AtlasDocument::loaded);
    QMimeData mime;
    mime.setUrls({ QUrl::fromLocalFile(m_atlas) });
    const QPoint at(50, 50);
    QDragEnterEvent enter(at, Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QApplication::sendEvent(&w, &enter);
    QVERIFY(enter.isAccepted());
    QDropEvent drop(QPointF(at), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QApplication::sendEvent(&w, &drop);
    QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 60000);
    // Other files are not accepted.
    QMimeData text;
    text.setUrls({ QUrl::fromLocalFile(m_dir.filePath(QStringLiteral("math.jsonl"))) });
    QDragEnterEvent other(at, Qt::CopyAction, &text, Qt::LeftButton, Qt::NoModifier);
    other.setAccepted(false);
    QApplication::sendEvent(&w, &other);
    QVERIFY(!other.isAccepted());
}

void TstMainWindow::sliderDrivesOverlay()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QVERIFY(w.openAtlasBlocking(m_atlas));
    BudgetPanel* panel = w.budgetPanel();
    panel->setTargetDomain(QStringLiteral("math"));
    for (const int percent : { 0, 25, 75 }) {
        panel->sparsitySlider()->setValue(percent);
        const int kept = 8 - static_cast<int>(std::lround(8 * percent / 100.0));
        for (int l = 0; l < 3; ++l)
            QCOMPARE(w.heatmapModel()->keptInRow(l), kept);
    }
}

void TstMainWindow::chartsShowAtlas()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QVERIFY(w.openAtlasBlocking(m_atlas));
    // Trade-off: the atlas's "default" evaluation table, both domains.
    QCOMPARE(w.evaluationCombo()->currentText(), QStringLiteral("default"));
    QVERIFY2(w.tradeoffChart()->errorText().isEmpty(), qPrintable(w.tradeoffChart()->errorText()));
    QCOMPARE(w.tradeoffChart()->domains(), (QStringList { QStringLiteral("math"), QStringLiteral("code") }));
    // Routing statistics: the atlas's /statistics.
    QVERIFY(w.routingStatsView()->hasStatistics());
    QCOMPARE(w.routingStatsView()->statistics().numExperts, 8);
    QCOMPARE(w.routingStatsView()->statistics().layers, w.document()->snapshot()->model.moeLayers);
}

void TstMainWindow::evaluatePlanEndToEnd()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QVERIFY(w.openAtlasBlocking(m_atlas));
    w.budgetPanel()->setTargetDomain(QStringLiteral("code"));
    w.budgetPanel()->setSparsityPercent(50);
    QSignalSpy requested(&w, &MainWindow::evaluateRequested);
    QSignalSpy loaded(w.document(), &AtlasDocument::loaded);
    QPushButton* evaluate = nullptr;
    for (QPushButton* b : w.budgetPanel()->findChildren<QPushButton*>())
        if (b->text().contains(QStringLiteral("Evaluate")))
            evaluate = b;
    QVERIFY(evaluate);
    QTest::mouseClick(evaluate, Qt::LeftButton);
    QCOMPARE(requested.count(), 1);
    // The job runs in the background, writes /evaluation/workbench and the atlas is reloaded.
    QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 240000);
    const auto& evals = w.document()->snapshot()->evaluations;
    QVERIFY(evals.count("workbench") == 1);
    QVERIFY(evals.count("default") == 1);
    const AtlasResults& table = evals.at("workbench");
    const auto params = nlohmann::json::parse(table.paramsJson);
    QCOMPARE(params["variants"].size(), std::size_t(2)); // full + the plan
    const auto& variant = params["variants"][1];
    QCOMPARE(variant["method"].get<std::string>(), std::string("specialist"));
    QCOMPARE(variant["domain"].get<std::string>(), std::string("code"));
    // The evaluated plan is the panel's: same kept experts per layer.
    const Plan& plan = *w.budgetPanel()->plan();
    for (std::size_t i = 0; i < plan.layers.size(); ++i)
        QCOMPARE(variant["keep"][std::to_string(plan.layers[i])].get<std::vector<int>>(), plan.keep[i]);
    QCOMPARE(w.evaluationCombo()->currentText(), QStringLiteral("workbench"));
    QVERIFY(w.logText().contains(QStringLiteral("Evaluating plan")));
}

// The budget panel's routing rule goes with the evaluation: every variant also routed with it.
void TstMainWindow::evaluatePlanWithRoutingRule()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QVERIFY(w.openAtlasBlocking(m_atlas));
    w.budgetPanel()->setTargetDomain(QStringLiteral("code"));
    w.budgetPanel()->setSparsityPercent(50);
    w.budgetPanel()->routingRuleControl()->setRuleText(QStringLiteral("top-k:1"));
    QCOMPARE(QString::fromStdString(w.budgetPanel()->routingRuleControl()->rule().name()), QStringLiteral("top-k:1"));
    QSignalSpy loaded(w.document(), &AtlasDocument::loaded);
    QVERIFY(w.evaluatePlan(*w.budgetPanel()->plan()) > 0);
    QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 240000);
    const auto params = nlohmann::json::parse(w.document()->snapshot()->evaluations.at("workbench").paramsJson);
    // full, the plan, and both with top-k:1 (a fixed rule adds no ladder).
    QCOMPARE(params["variants"].size(), std::size_t(4));
    QCOMPARE(params["variants"][2]["routing"].get<std::string>(), std::string("top-k:1"));
    QCOMPARE(params["variants"][2]["base"].get<std::string>(), std::string("full"));
    QCOMPARE(params["variants"][3]["base"].get<std::string>(), params["variants"][1]["name"].get<std::string>());
    const AtlasArray* mean = w.document()->snapshot()->evaluations.at("workbench").find("mean_experts");
    QVERIFY(mean && mean->values.size() == 4 * mean->dims[1]);
    QCOMPARE(mean->values[2 * mean->dims[1]], 1.0);
}

QTEST_MAIN(TstMainWindow)
#include "tst_main_window.moc"
