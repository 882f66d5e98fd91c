// The workbench window: the expert heatmap (and its table) of the open atlas, the budget panel
// driving a live plan overlay, the chart tabs (trade-off, routing statistics, Fisher, prefetch), jobs, a log,
// menus and settings.
#pragma once

#include "jobs/job_runner.h"
#include "plan/plan.h"

#include <QMainWindow>
#include <QStringList>

#include <memory>

class QAction;
class QComboBox;
class QDockWidget;
class QMenu;
class QPlainTextEdit;
class QScrollArea;
class QTabWidget;
class QTableView;
class QLabel;

namespace moeatlas {
struct FisherRequest;
}

namespace moeatlas::views {

class AtlasDocument;
class BudgetPanel;
class CaptureDialog;
class FisherView;
class HeatmapModel;
class HeatmapView;
class JobRunner;
class JobsPanel;
class PrefetchView;
class RoutingStatsView;
class RoutingView;
class TradeoffChartView;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget* parent = nullptr);
    ~MainWindow() override;

    // Loading happens in the background; errors go to the log (and a non-modal dialog).
    void openAtlas(const QString& path);
    bool openAtlasBlocking(const QString& path);

    AtlasDocument* document() const { return m_document; }
    HeatmapModel* heatmapModel() const { return m_heatmapModel; }
    HeatmapView* heatmapView() const { return m_heatmap; }
    BudgetPanel* budgetPanel() const { return m_budget; }
    QTabWidget* tabs() const { return m_tabs; }
    QComboBox* quantityCombo() const { return m_quantity; }
    QComboBox* domainCombo() const { return m_domain; }
    QString logText() const;
    QStringList recentFiles() const { return m_recent; }

    bool exportHeatmapPng(const QString& path);
    bool exportHeatmapSvg(const QString& path);
    // The current tab as an image (.svg: vector, else PNG): the heatmap (Heatmap and Table tabs),
    // the trade-off chart, the routing-statistics charts or the Fisher tab.
    bool exportCurrentView(const QString& path);
    // The current tab's table: the evaluation table on the Trade-off tab (as `moeatlas eval
    // --csv` writes it), the ablation table on the Fisher tab, else the heatmap's cells.
    bool exportTableCsv(const QString& path);

    void setDarkPalette(bool dark);
    bool isDarkPalette() const { return m_dark; }
    // Errors are always logged; the dialog can be turned off (tests, batch use).
    void setErrorDialogsEnabled(bool enabled) { m_errorDialogs = enabled; }

    // The chart and job widgets (views/charts, views/jobs) the window hosts.
    TradeoffChartView* tradeoffChart() const { return m_tradeoff; }
    QComboBox* evaluationCombo() const { return m_evalLabel; }
    RoutingStatsView* routingStatsView() const { return m_stats; }
    RoutingView* routingView() const { return m_routing; }
    FisherView* fisherView() const { return m_fisher; }
    PrefetchView* prefetchView() const { return m_prefetch; }
    JobRunner* jobRunner() const { return m_runner; }
    JobsPanel* jobsPanel() const { return m_jobsPanel; }

    // Evaluates a plan in the background (`moeatlas eval --atlas ATLAS --plan FILE --label
    // workbench`) and reloads the atlas when done; returns the job id (0 when nothing is open).
    int evaluatePlan(const moeatlas::Plan& plan);
    static constexpr const char* kEvaluationLabel = "workbench";
    // Jobs > Score atlas: `moeatlas score ATLAS` (no --force) on the open atlas as a background
    // job, reloading it when done; returns the job id (0 when nothing is open).
    int scoreAtlas();
    // Jobs > Capture new atlas…: opens the capture dialog (the atlas it makes is opened).
    CaptureDialog* showCaptureDialog();
    // Jobs > Compute Fisher…: `moeatlas fisher ATLAS` (params.atlas is set to the open atlas) as a
    // background job, reloading the atlas when done; returns the job id (0 when nothing is open).
    // `labels` names the controls of the request's fields in its error messages.
    int computeFisher(FisherRequest params, FieldLabels labels = {});
    QAction* scoreAction() const { return m_scoreAction; }
    QAction* fisherAction() const { return m_fisherAction; }

    static constexpr int kMaxRecentFiles = 8;

public Q_SLOTS:
    void logMessage(const QString& text);
    void logError(const QString& text);

Q_SIGNALS:
    // The budget panel's "Evaluate…" (evaluatePlan() runs it).
    void evaluateRequested(const moeatlas::Plan& plan);

protected:
    void closeEvent(QCloseEvent* event) override;
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;

private:
    void createActions();
    void createDocks();
    void onLoaded(const QString& path);
    void refreshQuantities();
    void refreshDomains();
    void refreshHeatmap();
    void addRecent(const QString& path);
    void rebuildRecentMenu();
    void readSettings();
    void writeSettings() const;
    void refreshCharts();
    void showEvaluation();
    void exportCheckpoint();

    AtlasDocument* m_document = nullptr;
    HeatmapModel* m_heatmapModel = nullptr;
    HeatmapView* m_heatmap = nullptr;
    QScrollArea* m_heatmapScroll = nullptr;
    QTableView* m_table = nullptr;
    BudgetPanel* m_budget = nullptr;
    QPlainTextEdit* m_log = nullptr;
    QString currentViewName() const; // file name stem for exports of the current tab
    QWidget* m_tradeoffPage = nullptr;
    QWidget* m_statsPage = nullptr;
    QTabWidget* m_tabs = nullptr;
    QComboBox* m_quantity = nullptr;
    QComboBox* m_domain = nullptr;
    QDockWidget* m_budgetDock = nullptr;
    QDockWidget* m_logDock = nullptr;
    QDockWidget* m_jobsDock = nullptr;
    QMenu* m_recentMenu = nullptr;
    QAction* m_sortAction = nullptr;
    QAction* m_darkAction = nullptr;
    QAction* m_scoreAction = nullptr;
    QAction* m_fisherAction = nullptr;
    QStringList m_recent;
    bool m_dark = false;
    bool m_errorDialogs = true;
    TradeoffChartView* m_tradeoff = nullptr;
    QComboBox* m_evalLabel = nullptr;
    QLabel* m_evalNote = nullptr;
    RoutingStatsView* m_stats = nullptr;
    QLabel* m_statsNote = nullptr;
    RoutingView* m_routing = nullptr;
    FisherView* m_fisher = nullptr;
    PrefetchView* m_prefetch = nullptr;
    JobRunner* m_runner = nullptr;
    JobsPanel* m_jobsPanel = nullptr;
    int m_evalJob = 0; // the evaluation job last started
    int m_scoreJob = 0; // the score job last started
    int m_fisherJob = 0; // the Fisher job last started
    int m_runningJob = 0;
    int m_evaluatedPlans = 0;
    QString m_preferredLabel;
};

} // namespace moeatlas::views
