#include "jobs/jobs_panel.h"

#include "jobs/job_runner.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QListWidget>
#include <QProgressBar>
#include <QPushButton>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

namespace moeatlas::views {

namespace {
constexpr int kBarSteps = 1000; // the bar counts per mille: int64 work units do not fit an int
}

JobsPanel::JobsPanel(JobRunner* runner, QWidget* parent)
    : QWidget(parent)
    , m_runner(runner)
    , m_name(new QLabel(tr("No job running"), this))
    , m_stage(new QLabel(this))
    , m_eta(new QLabel(this))
    , m_bar(new QProgressBar(this))
    , m_cancel(new QPushButton(tr("Cancel"), this))
    , m_log(new QListWidget(this))
{
    m_bar->setRange(0, kBarSteps);
    m_bar->setValue(0);
    m_cancel->setEnabled(false);
    m_cancel->setToolTip(tr("Stop the running job at its next safe point"));

    auto* top = new QHBoxLayout;
    top->addWidget(m_name);
    top->addWidget(m_stage, 1);
    top->addWidget(m_eta);
    auto* bar = new QHBoxLayout;
    bar->addWidget(m_bar, 1);
    bar->addWidget(m_cancel);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(top);
    layout->addLayout(bar);
    layout->addWidget(m_log, 1);

    connect(m_cancel, &QPushButton::clicked, this, [this] {
        m_cancelled = true;
        m_cancel->setEnabled(false);
        m_stage->setText(tr("cancelling…"));
        m_runner->cancel();
    });
    connect(runner, &JobRunner::started, this, &JobsPanel::onStarted);
    connect(runner, &JobRunner::progress, this, &JobsPanel::onProgress);
    connect(runner, &JobRunner::finished, this, &JobsPanel::onFinished);
    connect(runner, &JobRunner::cancelled, this, [this] { m_cancelled = true; });
}

QString JobsPanel::stageText() const
{
    return m_stage->text();
}

QString JobsPanel::etaText() const
{
    return m_eta->text();
}

QStringList JobsPanel::logLines() const
{
    QStringList lines;
    for (int i = 0; i < m_log->count(); ++i)
        lines << m_log->item(i)->text();
    return lines;
}

QString JobsPanel::formatEta(double seconds)
{
    if (seconds < 0 || !std::isfinite(seconds))
        return {};
    const auto s = static_cast<qint64>(std::llround(seconds));
    if (s >= 3600)
        return tr("%1 h %2 min").arg(s / 3600).arg((s % 3600) / 60);
    if (s >= 60)
        return tr("%1 min %2 s").arg(s / 60).arg(s % 60);
    return tr("%1 s").arg(s);
}

void JobsPanel::onStarted(int /*jobId*/, const QString& name)
{
    m_currentName = name;
    m_cancelled = false;
    m_name->setText(name);
    m_stage->setText(tr("starting…"));
    m_eta->clear();
    m_bar->setRange(0, 0); // busy indicator until the first report with a total
    m_cancel->setEnabled(true);
}

void JobsPanel::onProgress(const QString& stage, qint64 done, qint64 total, double eta)
{
    if (!m_cancelled)
        m_stage->setText(stage);
    if (total > 0) {
        m_bar->setRange(0, kBarSteps);
        m_bar->setValue(static_cast<int>(std::min<qint64>(kBarSteps, done * kBarSteps / total)));
    }
    const QString left = formatEta(eta);
    m_eta->setText(left.isEmpty() ? QString() : tr("%1 left").arg(left));
}

void JobsPanel::onFinished(bool ok, const QString& message)
{
    const QString mark = ok ? QStringLiteral("✓") : m_cancelled ? QStringLiteral("⊘") : QStringLiteral("✗");
    auto* item = new QListWidgetItem(mark + QLatin1Char(' ') + m_currentName + QStringLiteral(": ") + message);
    if (!ok && !m_cancelled)
        item->setForeground(Qt::darkRed);
    m_log->addItem(item);
    m_log->scrollToBottom();
    m_name->setText(m_runner->isBusy() ? m_runner->currentJobName() : tr("No job running"));
    m_stage->clear();
    m_eta->clear();
    m_bar->setRange(0, kBarSteps);
    m_bar->setValue(ok ? kBarSteps : 0);
    m_cancel->setEnabled(false);
}

} // namespace moeatlas::views
