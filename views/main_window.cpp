#include "main_window.h"

#include "atlas_document.h"
#include "budget_panel.h"
#include "budget_routing.h"
#include "charts/fisher_view.h"
#include "charts/prefetch_view.h"
#include "charts/routing_stats.h"
#include "charts/routing_view.h"
#include "charts/tradeoff_chart.h"
#include "fisher/fisher_store.h"
#include "fisher_ablation_model.h"
#include "heatmap_model.h"
#include "heatmap_view.h"
#include "jobs/capture_dialog.h"
#include "jobs/core_jobs.h"
#include "jobs/export_dialog.h"
#include "jobs/job_runner.h"
#include "jobs/jobs_panel.h"
#include "util/error.h"
#include "workbench_style.h"

#include <nlohmann/json.hpp>

#include <cmath>

#include <QAction>
#include <QApplication>
#include <QComboBox>
#include <QDockWidget>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QScrollArea>
#include <QStatusBar>
#include <QStyle>
#include <QTabWidget>
#include <QTableView>
#include <QToolBar>
#include <QVBoxLayout>

namespace moeatlas::views {

MainWindow::MainWindow(QWidget* parent)
    : QMainWindow(parent)
    , m_document(new AtlasDocument(this))
    , m_heatmapModel(new HeatmapModel(this))
{
    setWindowTitle(QStringLiteral("MoE Atlas"));
    setAcceptDrops(true);
    setObjectName(QStringLiteral("MainWindow"));

    // Heatmap page: quantity/domain pickers, sort and zoom, the heatmap in a scroll area.
    auto* page = new QWidget(this);
    auto* pageLayout = new QVBoxLayout(page);
    auto* bar = new QHBoxLayout;
    m_quantity = new QComboBox(page);
    m_quantity->setToolTip(tr("Score criterion, routing statistic or expert-level Fisher (fisher_<form>: the sum "
                              "of the expert's unit scores) to colour by"));
    m_quantity->setSizeAdjustPolicy(QComboBox::AdjustToContents);
    m_domain = new QComboBox(page);
    m_domain->setToolTip(tr("Domain row (or pooled over all domains)"));
    bar->addWidget(new QLabel(tr("Colour by:"), page));
    bar->addWidget(m_quantity);
    bar->addWidget(new QLabel(tr("Domain:"), page));
    bar->addWidget(m_domain);
    bar->addStretch(1);
    pageLayout->addLayout(bar);
    m_heatmap = new HeatmapView(page);
    m_heatmap->setModel(m_heatmapModel);
    m_heatmapScroll = new QScrollArea(page);
    m_heatmapScroll->setWidget(m_heatmap);
    m_heatmapScroll->setWidgetResizable(true);
    pageLayout->addWidget(m_heatmapScroll, 1);

    m_table = new QTableView(this);
    m_table->setModel(m_heatmapModel);
    m_table->horizontalHeader()->setDefaultSectionSize(72);

    m_tabs = new QTabWidget(this);
    m_tabs->addTab(page, tr("&Heatmap"));
    m_tabs->addTab(m_table, tr("T&able"));
    // Trade-off: an evaluation table of the atlas (moeatlas eval --atlas, or Evaluate…).
    auto* tradeoffPage = new QWidget(this);
    m_tradeoffPage = tradeoffPage;
    auto* tradeoffLayout = new QVBoxLayout(tradeoffPage);
    auto* evalBar = new QHBoxLayout;
    m_evalLabel = new QComboBox(tradeoffPage);
    m_evalLabel->setToolTip(tr("Evaluation table (/evaluation/<label>)"));
    evalBar->addWidget(new QLabel(tr("Evaluation:"), tradeoffPage));
    evalBar->addWidget(m_evalLabel);
    evalBar->addStretch(1);
    tradeoffLayout->addLayout(evalBar);
    m_evalNote = new QLabel(tradeoffPage);
    m_evalNote->setWordWrap(true);
    tradeoffLayout->addWidget(m_evalNote);
    m_tradeoff = new TradeoffChartView(tradeoffPage);
    tradeoffLayout->addWidget(m_tradeoff, 1);
    m_tabs->addTab(tradeoffPage, tr("T&rade-off"));

    auto* statsPage = new QWidget(this);
    m_statsPage = statsPage;
    auto* statsLayout = new QVBoxLayout(statsPage);
    m_statsNote = new QLabel(statsPage);
    m_statsNote->setWordWrap(true);
    m_statsNote->hide();
    statsLayout->addWidget(m_statsNote);
    m_stats = new RoutingStatsView(statsPage);
    statsLayout->addWidget(m_stats, 1);
    m_tabs->addTab(statsPage, tr("Routing &statistics"));
    // Routing: ProbMoE's exact-k tables (/probmoe) and the routing rules' trade-off.
    m_routing = new RoutingView(this);
    m_tabs->addTab(m_routing, tr("R&outing"));
    // Fisher: concentration, ablation and unit profiles of /fisher (moeatlas fisher).
    m_fisher = new FisherView(this);
    m_tabs->addTab(m_fisher, tr("&Fisher"));
    // Prefetch: hit rates of expert predictors (/prefetch_hit_rates), offload what-ifs, speculative quality.
    m_prefetch = new PrefetchView(this);
    m_tabs->addTab(m_prefetch, tr("&Prefetch"));
    setCentralWidget(m_tabs);

    createDocks();
    m_prefetch->setJobRunner(m_runner);
    connect(m_prefetch, &PrefetchView::message, this, &MainWindow::logMessage);
    connect(m_prefetch, &PrefetchView::hitTableStored, this, [this](const QString& atlas) {
        if (m_document->isOpen() && m_document->path() == atlas)
            m_document->open(atlas); // the atlas now holds /prefetch_hit_rates
    });
    createActions();

    connect(m_document, &AtlasDocument::loadingStarted, this,
        [this](const QString& path) { logMessage(tr("Opening %1 …").arg(path)); });
    connect(m_document, &AtlasDocument::loaded, this, &MainWindow::onLoaded);
    connect(m_document, &AtlasDocument::failed, this, &MainWindow::logError);
    connect(m_quantity, &QComboBox::currentIndexChanged, this, [this] {
        refreshDomains();
        refreshHeatmap();
    });
    connect(m_domain, &QComboBox::currentIndexChanged, this, &MainWindow::refreshHeatmap);
    // A click on a heatmap cell shows that expert's unit scores on the Fisher tab.
    connect(m_heatmap, &HeatmapView::cellClicked, m_fisher, &FisherView::setProfileExpert);
    connect(m_budget, &BudgetPanel::planChanged, this, [this](const Plan& plan) { m_heatmapModel->setPlan(plan); });
    connect(m_budget, &BudgetPanel::planFailed, this, [this](const QString& why) {
        m_heatmapModel->clearPlan();
        statusBar()->showMessage(why, 5000);
    });
    connect(m_budget, &BudgetPanel::message, this, &MainWindow::logMessage);
    connect(m_budget, &BudgetPanel::evaluateRequested, this, [this](const Plan& plan) {
        Q_EMIT evaluateRequested(plan);
        evaluatePlan(plan);
    });
    connect(m_evalLabel, &QComboBox::currentIndexChanged, this, &MainWindow::showEvaluation);
    readSettings();
}

MainWindow::~MainWindow() = default;

void MainWindow::createDocks()
{
    m_budget = new BudgetPanel(this);
    m_budgetDock = new QDockWidget(tr("Budget"), this);
    m_budgetDock->setObjectName(QStringLiteral("BudgetDock"));
    auto* budgetScroll = new QScrollArea(m_budgetDock);
    budgetScroll->setWidget(m_budget);
    budgetScroll->setWidgetResizable(true);
    m_budgetDock->setWidget(budgetScroll);
    addDockWidget(Qt::LeftDockWidgetArea, m_budgetDock);

    m_log = new QPlainTextEdit(this);
    m_log->setReadOnly(true);
    m_log->setMaximumBlockCount(5000);
    m_logDock = new QDockWidget(tr("Log"), this);
    m_logDock->setObjectName(QStringLiteral("LogDock"));
    m_logDock->setWidget(m_log);
    addDockWidget(Qt::BottomDockWidgetArea, m_logDock);

    m_jobsDock = new QDockWidget(tr("Jobs"), this);
    m_jobsDock->setObjectName(QStringLiteral("JobsDock"));
    m_runner = new JobRunner(this);
    m_jobsPanel = new JobsPanel(m_runner, m_jobsDock);
    m_jobsDock->setWidget(m_jobsPanel);
    connect(m_runner, &JobRunner::started, this, [this](int id, const QString& name) {
        m_runningJob = id;
        logMessage(tr("Job started: %1").arg(name));
    });
    connect(m_runner, &JobRunner::finished, this, [this](bool ok, const QString& message) {
        ok ? logMessage(message) : logError(message);
        if (ok && m_runningJob == m_evalJob && m_document->isOpen()) {
            m_preferredLabel = QString::fromLatin1(kEvaluationLabel);
            m_document->open(m_document->path()); // the atlas now holds the new table
        }
        if (ok && (m_runningJob == m_scoreJob || m_runningJob == m_fisherJob) && m_document->isOpen())
            m_document->open(m_document->path()); // the atlas now holds the new scores or Fisher tables
        m_runningJob = 0;
    });
    addDockWidget(Qt::BottomDockWidgetArea, m_jobsDock);
    tabifyDockWidget(m_logDock, m_jobsDock);
    m_logDock->raise();
    resizeDocks({ m_budgetDock }, { 380 }, Qt::Horizontal);
    resizeDocks({ m_logDock }, { 150 }, Qt::Vertical);
}

void MainWindow::createActions()
{
    QMenu* file = menuBar()->addMenu(tr("&File"));
    QAction* open = file->addAction(tr("&Open atlas…"), this, [this] {
        const QString path = QFileDialog::getOpenFileName(
            this, tr("Open atlas"), QString(), tr("Atlas files (*.atlas.h5 *.h5 *.partial);;All files (*)"));
        if (!path.isEmpty())
            openAtlas(path);
    });
    open->setShortcut(QKeySequence::Open);
    m_recentMenu = file->addMenu(tr("Open &recent"));
    file->addSeparator();
    QAction* savePlan = file->addAction(tr("&Save plan…"), this, [this] {
        const QString path
            = QFileDialog::getSaveFileName(this, tr("Save plan"), QStringLiteral("plan.json"), tr("Plans (*.json)"));
        QString error;
        if (path.isEmpty())
            return;
        if (m_budget->savePlan(path, &error))
            logMessage(tr("Plan written to %1").arg(path));
        else
            logError(error);
    });
    savePlan->setShortcut(QKeySequence::Save);
    // Image and table exports follow the tab on show: the heatmap (Heatmap, Table), the trade-off
    // chart and its evaluation table, or the routing-statistics charts.
    QAction* png = file->addAction(tr("Export current view as &PNG…"), this, [this] {
        const QString path = QFileDialog::getSaveFileName(
            this, tr("Export PNG"), currentViewName() + QStringLiteral(".png"), tr("PNG images (*.png)"));
        if (!path.isEmpty())
            exportCurrentView(path);
    });
    png->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
    QAction* svg = file->addAction(tr("Export current view as S&VG…"), this, [this] {
        const QString path = QFileDialog::getSaveFileName(
            this, tr("Export SVG"), currentViewName() + QStringLiteral(".svg"), tr("SVG images (*.svg)"));
        if (!path.isEmpty())
            exportCurrentView(path);
    });
    svg->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_E));
    QAction* csv = file->addAction(tr("Export table as &CSV…"), this, [this] {
        const QString path = QFileDialog::getSaveFileName(
            this, tr("Export CSV"), currentViewName() + QStringLiteral(".csv"), tr("CSV files (*.csv)"));
        if (!path.isEmpty())
            exportTableCsv(path);
    });
    csv->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_C));
    QAction* exportCkpt = file->addAction(tr("Export pruned &checkpoint…"), this, &MainWindow::exportCheckpoint);
    exportCkpt->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_X));
    file->addSeparator();
    QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
    quit->setShortcut(QKeySequence::Quit);

    QMenu* view = menuBar()->addMenu(tr("&View"));
    m_sortAction = view->addAction(tr("&Sort experts by value"));
    m_sortAction->setCheckable(true);
    m_sortAction->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_T));
    connect(m_sortAction, &QAction::toggled, m_heatmap, &HeatmapView::setSortedByValue);
    QAction* zoomIn = view->addAction(tr("Zoom &in"), m_heatmap, &HeatmapView::zoomIn);
    zoomIn->setShortcuts({ QKeySequence::ZoomIn, QKeySequence(Qt::CTRL | Qt::Key_Equal) });
    QAction* zoomOut = view->addAction(tr("Zoom &out"), m_heatmap, &HeatmapView::zoomOut);
    zoomOut->setShortcut(QKeySequence::ZoomOut);
    QAction* zoomReset = view->addAction(
        tr("&Fit heatmap"), this, [this] { m_heatmap->zoomToFit(m_heatmapScroll->viewport()->size()); });
    zoomReset->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_0));
    view->addSeparator();
    m_darkAction = view->addAction(tr("&Dark palette"));
    m_darkAction->setCheckable(true);
    m_darkAction->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_D));
    connect(m_darkAction, &QAction::toggled, this, &MainWindow::setDarkPalette);
    view->addSeparator();
    view->addAction(m_budgetDock->toggleViewAction());
    view->addAction(m_logDock->toggleViewAction());
    view->addAction(m_jobsDock->toggleViewAction());

    QMenu* jobs = menuBar()->addMenu(tr("&Jobs"));
    jobs->addAction(tr("&Capture new atlas…"), this, &MainWindow::showCaptureDialog);
    m_scoreAction = jobs->addAction(tr("&Score atlas"), this, &MainWindow::scoreAtlas);
    m_scoreAction->setEnabled(false);
    m_fisherAction = jobs->addAction(tr("Compute &Fisher…"), this, [this] {
        bool ok = false;
        const QString text = QInputDialog::getText(this, tr("Compute Fisher"),
            tr("Fisher importance of every expert unit (mask, weight and grad_abs forms, with the activation and "
               "magnitude baselines) on the atlas's calibration tokens, as moeatlas fisher.\n\n"
               "Ablation: units to remove (comma-separated counts, or none):"),
            QLineEdit::Normal, QStringLiteral("0,10,100,1000"), &ok);
        if (!ok)
            return;
        FisherRequest params;
        try {
            params.ablate = parseAblationCounts(text.trimmed().toStdString());
        } catch (const InputError& e) {
            logError(QString::fromUtf8(e.what()));
            return;
        }
        computeFisher(std::move(params), { { "ablate", tr("Ablation") } });
    });
    m_fisherAction->setEnabled(false);
    connect(m_document, &AtlasDocument::changed, this, [this] {
        const auto snapshot = m_document->snapshot();
        m_scoreAction->setEnabled(snapshot && snapshot->complete);
        m_fisherAction->setEnabled(snapshot && snapshot->complete);
    });

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("&About MoE Atlas"), this, [this] {
        QMessageBox::about(this, tr("About MoE Atlas"),
            tr("MoE Atlas: routing atlases, expert scores and pruning plans for Mixture-of-Experts LLMs."));
    });

    auto* tools = addToolBar(tr("Main"));
    tools->setObjectName(QStringLiteral("MainToolBar"));
    tools->addAction(open);
    tools->addAction(m_sortAction);
    tools->addAction(zoomIn);
    tools->addAction(zoomOut);
}

void MainWindow::openAtlas(const QString& path)
{
    m_document->open(path);
}

bool MainWindow::openAtlasBlocking(const QString& path)
{
    return m_document->openBlocking(path);
}

void MainWindow::onLoaded(const QString& path)
{
    const auto snapshot = m_document->snapshot();
    setWindowTitle(QStringLiteral("%1 — MoE Atlas").arg(QFileInfo(path).fileName()));
    logMessage(tr("Opened %1: %2, %3 MoE layers × %4 experts (top-%5), domains %6, criteria %7")
                   .arg(path, QString::fromStdString(snapshot->model.modelType))
                   .arg(snapshot->numLayers())
                   .arg(snapshot->numExperts())
                   .arg(snapshot->model.topK)
                   .arg(snapshot->domainNames().join(QStringLiteral(", ")),
                       snapshot->criteria().isEmpty() ? tr("none (Jobs > Score atlas)")
                                                      : snapshot->criteria().join(QStringLiteral(", "))));
    if (!snapshot->complete)
        logError(tr("%1 is a partial atlas (capture not finished): no scores or plans").arg(path));
    if (!snapshot->hasCosts)
        logMessage(snapshot->costsNote);
    if (snapshot->fisher) {
        QStringList forms;
        for (const FisherSummaryForm& f : snapshot->fisher->forms)
            forms << QString::fromStdString(f.form);
        logMessage(tr("Fisher tables: %1 (%2 sequences)%3")
                       .arg(forms.join(QStringLiteral(", ")))
                       .arg(snapshot->fisher->samples.back())
                       .arg(snapshot->fisherAblation ? tr(", with the ablation") : QString()));
    } else if (snapshot->complete && snapshot->fisherMalformed) {
        logError(snapshot->fisherNote);
    }
    const bool sameAtlas = !m_recent.isEmpty() && m_recent.first() == QFileInfo(path).absoluteFilePath();
    addRecent(path);
    refreshQuantities();
    m_budget->setSnapshot(snapshot);
    refreshCharts();
    if (!sameAtlas || m_heatmap->cellSize() == QSize(4, 8))
        m_heatmap->zoomToFit(m_heatmapScroll->viewport()->size());
}

void MainWindow::refreshCharts()
{
    const auto snapshot = m_document->snapshot();
    {
        const QSignalBlocker block(m_evalLabel);
        const QString previous = !m_preferredLabel.isEmpty() ? m_preferredLabel : m_evalLabel->currentText();
        m_preferredLabel.clear();
        m_evalLabel->clear();
        if (snapshot) {
            for (const auto& [label, table] : snapshot->evaluations)
                m_evalLabel->addItem(QString::fromStdString(label));
        }
        const int keep = m_evalLabel->findText(previous);
        const int fallback = m_evalLabel->findText(QStringLiteral("default"));
        m_evalLabel->setCurrentIndex(keep >= 0 ? keep : std::max(fallback, 0));
    }
    showEvaluation();
    if (snapshot && snapshot->routingStats) {
        m_stats->setStatistics(*snapshot->routingStats);
        m_statsNote->hide();
    } else {
        m_stats->clear();
        m_statsNote->setText(snapshot ? snapshot->routingStatsNote : QString());
        m_statsNote->setVisible(snapshot != nullptr);
    }
    m_fisher->setSnapshot(snapshot);
    m_routing->setSnapshot(snapshot);
    m_prefetch->setSnapshot(snapshot);
}

void MainWindow::showEvaluation()
{
    const auto snapshot = m_document->snapshot();
    const AtlasResults* table = nullptr;
    if (snapshot) {
        const auto it = snapshot->evaluations.find(m_evalLabel->currentText().toStdString());
        table = it == snapshot->evaluations.end() ? nullptr : &it->second;
    }
    // Without a table the chart is emptied too: the previous atlas's must not stay on show (or be
    // exported under the new atlas's name).
    m_tradeoff->setEvaluation(table);
    if (!table) {
        m_evalNote->setText(tr("No evaluation tables in this atlas: run moeatlas eval --atlas ATLAS --sparsity "
                               "0.25,0.5,0.75, or Evaluate… a plan in the budget panel."));
        m_evalNote->show();
        m_tradeoff->setEnabled(false);
        return;
    }
    m_tradeoff->setEnabled(true);
    m_evalNote->setVisible(!m_tradeoff->errorText().isEmpty());
    m_evalNote->setText(m_tradeoff->errorText());
}

int MainWindow::evaluatePlan(const Plan& plan)
{
    const auto snapshot = m_document->snapshot();
    if (!snapshot)
        return 0;
    // The plan's name in the table: method, domain, criterion and a running number.
    QString name = QString::fromStdString(plan.method);
    if (plan.method == "specialist" && plan.domainWeights.size() == 1)
        name += QLatin1Char('-') + QString::fromStdString(plan.domainWeights.begin()->first);
    name += QStringLiteral("-%1-%2").arg(QString::fromStdString(plan.criterion)).arg(++m_evaluatedPlans);
    EvalRequest params;
    params.atlas = snapshot->path.toStdString();
    params.plans = { { name.toStdString(), plan } };
    params.label = kEvaluationLabel;
    // The budget panel's routing rule: the full model and the plan also with it (and, for a dynamic
    // rule, the fixed top-k ladder it is compared with).
    const RoutingRule& rule = m_budget->routingRuleControl()->rule();
    if (!rule.isModel())
        params.routing = { rule.name() };
    logMessage(tr("Evaluating plan %1 into /evaluation/%2 of %3")
                   .arg(name, QString::fromLatin1(kEvaluationLabel), snapshot->path));
    m_evalJob = m_runner->start(evalJob(params));
    m_jobsDock->raise();
    return m_evalJob;
}

int MainWindow::scoreAtlas()
{
    const auto snapshot = m_document->snapshot();
    if (!snapshot)
        return 0;
    logMessage(tr("Scoring %1").arg(snapshot->path));
    m_scoreJob = m_runner->start(scoreJob(snapshot->path.toStdString()));
    m_jobsDock->raise();
    return m_scoreJob;
}

int MainWindow::computeFisher(FisherRequest params, FieldLabels labels)
{
    const auto snapshot = m_document->snapshot();
    if (!snapshot)
        return 0;
    params.atlas = snapshot->path.toStdString();
    logMessage(tr("Computing Fisher importance of %1").arg(snapshot->path));
    Job job = fisherJob(std::move(params));
    job.fieldLabels = std::move(labels);
    m_fisherJob = m_runner->start(std::move(job));
    m_jobsDock->raise();
    return m_fisherJob;
}

CaptureDialog* MainWindow::showCaptureDialog()
{
    auto* dialog = new CaptureDialog(m_runner, this);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    connect(dialog, &CaptureDialog::atlasReady, this, [this](const QString& path) {
        logMessage(tr("Atlas captured and scored: %1").arg(path));
        openAtlas(path);
    });
    dialog->show();
    m_jobsDock->raise();
    return dialog;
}

void MainWindow::exportCheckpoint()
{
    const auto snapshot = m_document->snapshot();
    const auto& plan = m_budget->plan();
    if (!snapshot || !plan) {
        logError(tr("No plan to export: open a scored atlas and choose a budget first."));
        return;
    }
    auto* dialog
        = new ExportDialog(*plan, QString(), QString::fromStdString(snapshot->model.checkpointPath), m_runner, this);
    dialog->setAtlasPath(snapshot->path);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    connect(dialog, &ExportDialog::exportFinished, this, [this](bool ok, const QString& text) {
        ok ? logMessage(tr("Pruned checkpoint written to %1").arg(text)) : logError(text);
    });
    dialog->show();
}

void MainWindow::refreshQuantities()
{
    const auto snapshot = m_document->snapshot();
    const QSignalBlocker block(m_quantity);
    const QString previous = m_quantity->currentText();
    m_quantity->clear();
    if (snapshot) {
        for (const HeatmapQuantity& q : heatmapQuantities(*snapshot))
            m_quantity->addItem(q.name, static_cast<int>(q.kind));
        const int keep = m_quantity->findText(previous);
        const int peu = m_quantity->findText(QStringLiteral("peu"));
        m_quantity->setCurrentIndex(keep >= 0 ? keep : std::max(peu, 0));
    }
    refreshDomains();
    refreshHeatmap();
}

void MainWindow::refreshDomains()
{
    const auto snapshot = m_document->snapshot();
    const QSignalBlocker block(m_domain);
    const QString previous = m_domain->currentText();
    m_domain->clear();
    if (!snapshot || m_quantity->currentIndex() < 0)
        return;
    HeatmapQuantity q { static_cast<HeatmapQuantity::Kind>(m_quantity->currentData().toInt()),
        m_quantity->currentText(), 0 };
    const QStringList names = heatmapDomainNames(*snapshot, q);
    for (int r = 0; r < names.size(); ++r)
        m_domain->addItem(names[r], r);
    const int keep = m_domain->findText(previous);
    m_domain->setCurrentIndex(keep >= 0 ? keep : static_cast<int>(names.size()) - 1);
}

void MainWindow::refreshHeatmap()
{
    const auto snapshot = m_document->snapshot();
    if (!snapshot || m_quantity->currentIndex() < 0 || m_domain->currentIndex() < 0) {
        m_heatmapModel->setHeatmap({});
        return;
    }
    const HeatmapQuantity q { static_cast<HeatmapQuantity::Kind>(m_quantity->currentData().toInt()),
        m_quantity->currentText(), m_domain->currentData().toInt() };
    try {
        m_heatmapModel->setHeatmap(heatmapData(*snapshot, q));
    } catch (const std::exception& e) {
        m_heatmapModel->setHeatmap({});
        logError(QString::fromUtf8(e.what()));
        return;
    }
    if (const auto& plan = m_budget->plan())
        m_heatmapModel->setPlan(*plan);
}

} // namespace moeatlas::views
