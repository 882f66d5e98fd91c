#include "jobs/export_dialog.h"

#include "jobs/core_jobs.h"
#include "jobs/job_runner.h"

#include <QCheckBox>
#include <QDialogButtonBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QVBoxLayout>

#include <algorithm>
#include <utility>

namespace moeatlas::views {

namespace {

QString planSummary(const Plan& plan)
{
    int kept = 0;
    for (std::size_t i = 0; i < plan.keep.size(); ++i)
        kept += plan.keptIn(i);
    const int total = plan.numExperts * static_cast<int>(plan.keep.size());
    QString s = QObject::tr("%1 plan (%2), %3 of %4 routed experts kept in %5 MoE layers")
                    .arg(QString::fromStdString(plan.method), QString::fromStdString(plan.criterion))
                    .arg(kept)
                    .arg(total)
                    .arg(plan.keep.size());
    s += plan.uniform() ? QObject::tr("; uniform: loads in stock transformers")
                        : QObject::tr("; non-uniform: loads with trust_remote_code=True");
    return s;
}

} // namespace

ExportDialog::ExportDialog(
    Plan plan, const QString& planPath, const QString& sourceDir, JobRunner* runner, QWidget* parent)
    : QDialog(parent)
    , m_plan(std::move(plan))
    , m_planPath(planPath)
    , m_runner(runner)
    , m_summary(new QLabel(planSummary(m_plan), this))
    , m_source(new QLineEdit(sourceDir, this))
    , m_output(new QLineEdit(this))
    , m_browse(new QPushButton(tr("Browse…"), this))
    , m_force(new QCheckBox(tr("Replace a non-empty output directory"), this))
    , m_shard(new QSpinBox(this))
    , m_routing(new QLineEdit(QStringLiteral("model"), this))
    , m_bar(new QProgressBar(this))
    , m_status(new QLabel(this))
    , m_buttons(new QDialogButtonBox(QDialogButtonBox::Close, this))
    , m_exportButton(m_buttons->addButton(tr("Export"), QDialogButtonBox::AcceptRole))
{
    setWindowTitle(tr("Export pruned checkpoint"));
    m_summary->setWordWrap(true);
    m_status->setWordWrap(true);
    m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_shard->setRange(1, 1 << 20);
    m_shard->setValue(5000); // the CLI's --max-shard-mib default
    m_shard->setSuffix(tr(" MiB"));
    m_bar->setRange(0, 1000);
    m_bar->setValue(0);
    m_output->setPlaceholderText(tr("new or empty directory"));
    m_routing->setPlaceholderText(tr("model, top-k:K, probmoe:KMIN:KMAX, top-p:P[:KMIN:KMAX] or threshold:M"));
    m_routing->setToolTip(tr("How the exported model routes each token (the CLI's --routing). model and top-k:K "
                             "give a stock checkpoint; probmoe, top-p and threshold give every token its own number "
                             "of experts and load with trust_remote_code=True. threshold:M calibrates its "
                             "thresholds on the plan's atlas for a mean k of M."));

    auto* outRow = new QHBoxLayout;
    outRow->addWidget(m_output, 1);
    outRow->addWidget(m_browse);
    auto* form = new QFormLayout;
    form->addRow(tr("Source checkpoint"), m_source);
    form->addRow(tr("Output directory"), outRow);
    form->addRow(QString(), m_force);
    form->addRow(tr("Largest shard"), m_shard);
    form->addRow(tr("Routing rule"), m_routing);
    auto* layout = new QVBoxLayout(this);
    layout->addWidget(m_summary);
    layout->addLayout(form);
    layout->addWidget(m_bar);
    layout->addWidget(m_status);
    layout->addWidget(m_buttons);

    connect(m_browse, &QPushButton::clicked, this, &ExportDialog::browse);
    // Export does not close the dialog (accepted() is left unconnected): it stays open to show
    // progress and errors.
    connect(m_exportButton, &QPushButton::clicked, this, &ExportDialog::startExport);
    connect(m_buttons, &QDialogButtonBox::rejected, this, &ExportDialog::reject);

    connect(m_runner, &JobRunner::started, this, [this](int id, const QString&) { m_runningId = id; });
    connect(m_runner, &JobRunner::progress, this, [this](const QString& stage, qint64 done, qint64 total, double) {
        if (m_jobId == 0 || m_runningId != m_jobId)
            return;
        if (total > 0)
            m_bar->setValue(static_cast<int>(std::min<qint64>(1000, done * 1000 / total)));
        m_status->setText(stage);
    });
    connect(m_runner, &JobRunner::finished, this, [this](bool ok, const QString& message) {
        if (m_jobId != 0 && m_runningId == m_jobId)
            onFinished(ok, message);
    });
}

void ExportDialog::setSourceDir(const QString& dir)
{
    m_source->setText(dir);
}

void ExportDialog::setOutputDir(const QString& dir)
{
    m_output->setText(dir);
}

void ExportDialog::setForce(bool force)
{
    m_force->setChecked(force);
}

void ExportDialog::setMaxShardMiB(int mib)
{
    m_shard->setValue(mib);
}

void ExportDialog::setRouting(const QString& rule)
{
    m_routing->setText(rule);
}

void ExportDialog::setAtlasPath(const QString& atlas)
{
    m_atlasPath = atlas;
}

QString ExportDialog::outputDir() const
{
    return m_output->text();
}

QString ExportDialog::statusText() const
{
    return m_status->text();
}

bool ExportDialog::startExport()
{
    if (m_jobId != 0) {
        m_status->setText(tr("An export is already running"));
        return false;
    }
    // Paths go to the exporter exactly as typed (like the CLI's arguments): the model card
    // records them, and a byte-identical checkpoint needs the same strings.
    const QString out = m_output->text().trimmed();
    const QString source = m_source->text().trimmed();
    if (out.isEmpty() || source.isEmpty()) {
        m_status->setText(out.isEmpty() ? tr("Choose an output directory") : tr("Choose the source checkpoint"));
        return false;
    }
    ExportOptions options;
    options.force = m_force->isChecked();
    options.maxShardBytes = static_cast<uint64_t>(m_shard->value()) << 20;
    options.planPath = m_planPath.toStdString();
    options.atlasPath = m_atlasPath.toStdString();
    m_bar->setValue(0);
    m_status->setText(m_runner->isBusy() ? tr("Waiting for the running job…") : tr("Starting…"));
    m_exportButton->setEnabled(false);
    // The form describes the export under way until it ends.
    m_output->setReadOnly(true);
    m_source->setReadOnly(true);
    m_routing->setReadOnly(true);
    m_exportingTo = out;
    const QString routing = m_routing->text().trimmed();
    Job job = exportJob(source.toStdString(), m_plan, out.toStdString(), options,
        routing.isEmpty() ? std::string("model") : routing.toStdString());
    job.fieldLabels = { { "force", m_force->text() }, { "routing", tr("Routing rule") } };
    m_jobId = m_runner->start(std::move(job));
    return true;
}

void ExportDialog::reject()
{
    if (m_jobId != 0 && m_runningId == m_jobId) {
        m_runner->cancel();
        m_closeWhenDone = true;
        m_status->setText(tr("Cancelling…"));
        return; // closes once the export has stopped (onFinished)
    }
    if (m_jobId != 0) {
        // Still queued behind another job: an export nobody can follow or stop must not run later.
        m_runner->dropQueued(m_jobId);
        m_jobId = 0;
    }
    QDialog::reject();
}

void ExportDialog::browse()
{
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Output directory"), m_output->text());
    if (!dir.isEmpty())
        m_output->setText(dir);
}

void ExportDialog::onFinished(bool ok, const QString& message)
{
    m_jobId = 0;
    m_exportButton->setEnabled(true);
    m_output->setReadOnly(false);
    m_source->setReadOnly(false);
    m_routing->setReadOnly(false);
    if (ok) {
        m_bar->setValue(1000);
        m_status->setText(message);
        Q_EMIT exportFinished(true, m_exportingTo);
    } else {
        m_bar->setValue(0);
        m_status->setText(message);
        Q_EMIT exportFinished(false, message);
    }
    if (std::exchange(m_closeWhenDone, false))
        QDialog::reject();
}

} // namespace moeatlas::views
