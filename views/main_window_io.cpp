// MainWindow, continued: the log, image and table exports, the palette, recent files and settings,
// and drag-and-drop of atlases (main_window.cpp builds the window and runs the jobs).
#include "main_window.h"

#include "atlas_document.h"
#include "charts/chart_image.h"
#include "charts/fisher_view.h"
#include "charts/prefetch_view.h"
#include "charts/routing_stats.h"
#include "charts/tradeoff_chart.h"
#include "fisher_ablation_model.h"
#include "heatmap_model.h"
#include "heatmap_view.h"
#include "workbench_style.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFileInfo>
#include <QMenu>
#include <QMessageBox>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QSaveFile>
#include <QSettings>
#include <QStatusBar>
#include <QStyle>

namespace moeatlas::views {

namespace {

bool isAtlasFile(const QString& path)
{
    return path.endsWith(QLatin1String(".h5"), Qt::CaseInsensitive)
        || path.endsWith(QLatin1String(".h5.partial"), Qt::CaseInsensitive);
}

} // namespace

QString MainWindow::logText() const
{
    return m_log->toPlainText();
}

void MainWindow::logMessage(const QString& text)
{
    if (text.isEmpty())
        return;
    m_log->appendPlainText(
        QStringLiteral("[%1] %2").arg(QTime::currentTime().toString(QStringLiteral("HH:mm:ss")), text));
    statusBar()->showMessage(text, 5000);
}

void MainWindow::logError(const QString& text)
{
    logMessage(tr("Error: %1").arg(text));
    if (!m_errorDialogs)
        return;
    auto* box = new QMessageBox(QMessageBox::Warning, tr("MoE Atlas"), text, QMessageBox::Ok, this);
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->setModal(false);
    box->show();
}

bool MainWindow::exportHeatmapPng(const QString& path)
{
    const bool ok = m_heatmap->exportPng(path);
    ok ? logMessage(tr("Heatmap written to %1").arg(path)) : logError(tr("Cannot write %1").arg(path));
    return ok;
}

bool MainWindow::exportHeatmapSvg(const QString& path)
{
    const bool ok = m_heatmap->exportSvg(path);
    ok ? logMessage(tr("Heatmap written to %1").arg(path)) : logError(tr("Cannot write %1").arg(path));
    return ok;
}

QString MainWindow::currentViewName() const
{
    if (m_tabs->currentWidget() == m_tradeoffPage)
        return QStringLiteral("tradeoff");
    if (m_tabs->currentWidget() == m_statsPage)
        return QStringLiteral("routing-statistics");
    if (m_tabs->currentWidget() == m_fisher)
        return QStringLiteral("fisher");
    if (m_tabs->currentWidget() == m_prefetch)
        return QStringLiteral("prefetch");
    return QStringLiteral("heatmap");
}

bool MainWindow::exportCurrentView(const QString& path)
{
    const bool svg = path.endsWith(QStringLiteral(".svg"), Qt::CaseInsensitive);
    QWidget* tab = m_tabs->currentWidget();
    if (tab == m_tradeoffPage || tab == m_statsPage || tab == m_fisher || tab == m_prefetch) {
        const bool ok = tab == m_tradeoffPage ? m_tradeoff->saveImage(path)
            : tab == m_statsPage              ? m_stats->saveImage(path)
            : tab == m_prefetch               ? saveWidgetImage(m_prefetch, path)
                                              : m_fisher->saveImage(path);
        ok ? logMessage(tr("Chart written to %1").arg(path)) : logError(tr("Cannot write %1").arg(path));
        return ok;
    }
    return svg ? exportHeatmapSvg(path) : exportHeatmapPng(path);
}

bool MainWindow::exportTableCsv(const QString& path)
{
    QString text;
    if (m_tabs->currentWidget() == m_tradeoffPage) {
        // The evaluation table on show, one row per (variant, domain): `moeatlas eval --csv`'s writer.
        text = QString::fromStdString(evalTableCsv(m_tradeoff->table()));
    } else if (m_tabs->currentWidget() == m_fisher) {
        text = m_fisher->ablationModel()->toCsv(); // the ablation table
    } else {
        text = m_heatmapModel->toCsv();
    }
    QSaveFile out(path);
    bool ok = out.open(QIODevice::WriteOnly | QIODevice::Text);
    if (ok) {
        out.write(text.toUtf8());
        ok = out.commit();
    }
    ok ? logMessage(tr("Table written to %1").arg(path)) : logError(tr("Cannot write %1").arg(path));
    return ok;
}

void MainWindow::setDarkPalette(bool dark)
{
    m_dark = dark;
    if (m_darkAction && m_darkAction->isChecked() != dark)
        m_darkAction->setChecked(dark);
    QApplication::setPalette(dark ? darkPalette() : QApplication::style()->standardPalette());
    m_heatmap->setPalette(QApplication::palette());
    m_heatmap->update();
}

void MainWindow::addRecent(const QString& path)
{
    const QString absolute = QFileInfo(path).absoluteFilePath();
    m_recent.removeAll(absolute);
    m_recent.prepend(absolute);
    while (m_recent.size() > kMaxRecentFiles)
        m_recent.removeLast();
    rebuildRecentMenu();
    writeSettings();
}

void MainWindow::rebuildRecentMenu()
{
    m_recentMenu->clear();
    for (int i = 0; i < m_recent.size(); ++i) {
        const QString path = m_recent[i];
        QAction* a = m_recentMenu->addAction(
            QStringLiteral("&%1 %2").arg(i + 1).arg(path), this, [this, path] { openAtlas(path); });
        a->setToolTip(path);
    }
    m_recentMenu->setEnabled(!m_recent.isEmpty());
}

void MainWindow::readSettings()
{
    const QSettings s = workbenchSettings();
    m_recent = s.value(QStringLiteral("recentFiles")).toStringList();
    rebuildRecentMenu();
    if (!restoreGeometry(s.value(QStringLiteral("geometry")).toByteArray()))
        resize(1280, 800);
    restoreState(s.value(QStringLiteral("windowState")).toByteArray());
    setDarkPalette(s.value(QStringLiteral("darkPalette"), false).toBool());
    m_sortAction->setChecked(s.value(QStringLiteral("heatmap/sorted"), false).toBool());
}

void MainWindow::writeSettings() const
{
    QSettings s = workbenchSettings();
    s.setValue(QStringLiteral("recentFiles"), m_recent);
    s.setValue(QStringLiteral("geometry"), saveGeometry());
    s.setValue(QStringLiteral("windowState"), saveState());
    s.setValue(QStringLiteral("darkPalette"), m_dark);
    s.setValue(QStringLiteral("heatmap/sorted"), m_sortAction->isChecked());
}

void MainWindow::closeEvent(QCloseEvent* event)
{
    writeSettings();
    QMainWindow::closeEvent(event);
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event)
{
    for (const QUrl& url : event->mimeData()->urls()) {
        if (url.isLocalFile() && isAtlasFile(url.toLocalFile())) {
            event->acceptProposedAction();
            return;
        }
    }
}

void MainWindow::dropEvent(QDropEvent* event)
{
    for (const QUrl& url : event->mimeData()->urls()) {
        if (url.isLocalFile() && isAtlasFile(url.toLocalFile())) {
            openAtlas(url.toLocalFile());
            event->acceptProposedAction();
            return;
        }
    }
}

} // namespace moeatlas::views
