#include "jobs/capture_dialog.h"

#include "jobs/core_jobs.h"
#include "jobs/job_runner.h"

#include <QCheckBox>
#include <QDialogButtonBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSet>
#include <QSpinBox>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <functional>
#include <utility>

namespace moeatlas::views {

namespace {

// The rule of parseDomainArgument (core/text/calibration.cpp) for the NAME of --domain NAME=PATH.
bool validDomainName(const QString& name)
{
    return std::all_of(name.begin(), name.end(), [](QChar c) {
        return c.unicode() < 128
            && (c.isLetterOrNumber() || c == QLatin1Char('_') || c == QLatin1Char('-') || c == QLatin1Char('.'));
    });
}

QString cellText(const QTableWidget* table, int row, int column)
{
    const QTableWidgetItem* item = table->item(row, column);
    return item ? item->text().trimmed() : QString();
}

} // namespace

CaptureDialog::CaptureDialog(JobRunner* runner, QWidget* parent)
    : QDialog(parent)
    , m_runner(runner)
    , m_checkpoint(new QLineEdit(this))
    , m_browseCheckpoint(new QPushButton(tr("Browse…"), this))
    , m_domains(new QTableWidget(0, 2, this))
    , m_addRow(new QPushButton(tr("Add"), this))
    , m_addFiles(new QPushButton(tr("Add files…"), this))
    , m_addDirectory(new QPushButton(tr("Add folder…"), this))
    , m_removeRows(new QPushButton(tr("Remove"), this))
    , m_seqLen(new QSpinBox(this))
    , m_maxSamples(new QSpinBox(this))
    , m_expertNorms(new QCheckBox(tr("Record expert output norms (needed for REAP and EAN)"), this))
    , m_chatTemplate(new QCheckBox(tr("Render \"messages\" with the model's chat template"), this))
    , m_output(new QLineEdit(this))
    , m_browseOutput(new QPushButton(tr("Browse…"), this))
    , m_force(new QCheckBox(tr("Replace an existing atlas"), this))
    , m_bar(new QProgressBar(this))
    , m_status(new QLabel(this))
    , m_buttons(new QDialogButtonBox(QDialogButtonBox::Close, this))
    , m_startButton(m_buttons->addButton(tr("Capture"), QDialogButtonBox::AcceptRole))
{
    setWindowTitle(tr("Capture new atlas"));
    m_checkpoint->setPlaceholderText(tr("Hugging Face checkpoint directory"));
    m_domains->setHorizontalHeaderLabels({ tr("Name"), tr("Path") });
    m_domains->horizontalHeader()->setStretchLastSection(true);
    m_domains->verticalHeader()->hide();
    m_domains->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_chatTemplate->setChecked(true);
    m_chatTemplate->setToolTip(tr("Conversations of JSONL \"messages\" domains are rendered by the checkpoint's own "
                                  "chat template, as transformers' apply_chat_template renders them; unchecked, as "
                                  "\"role: content\" lines (docs/calibration.md, \"Chat templates\")"));
    m_domains->setToolTip(tr("One calibration domain per row: a text file, a directory of .txt files, or a JSONL "
                             "file with a text field, \"messages\" or \"input_ids\" (docs/calibration.md)"));
    m_seqLen->setRange(1, 1 << 20);
    m_seqLen->setValue(512); // the CLI's --seq-len default
    m_seqLen->setSuffix(tr(" tokens"));
    m_maxSamples->setRange(0, 1 << 30);
    m_maxSamples->setSpecialValueText(tr("all"));
    m_maxSamples->setValue(0);
    m_output->setPlaceholderText(tr("run.atlas.h5"));
    m_status->setWordWrap(true);
    m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_bar->setRange(0, 1000);
    m_bar->setValue(0);

    auto* checkpointRow = new QHBoxLayout;
    checkpointRow->addWidget(m_checkpoint, 1);
    checkpointRow->addWidget(m_browseCheckpoint);
    auto* domainButtons = new QHBoxLayout;
    domainButtons->addWidget(m_addRow);
    domainButtons->addWidget(m_addFiles);
    domainButtons->addWidget(m_addDirectory);
    domainButtons->addWidget(m_removeRows);
    domainButtons->addStretch(1);
    auto* domainBox = new QVBoxLayout;
    domainBox->addWidget(m_domains, 1);
    domainBox->addLayout(domainButtons);
    auto* outputRow = new QHBoxLayout;
    outputRow->addWidget(m_output, 1);
    outputRow->addWidget(m_browseOutput);
    auto* form = new QFormLayout;
    form->addRow(tr("Checkpoint"), checkpointRow);
    form->addRow(tr("Domains"), domainBox);
    form->addRow(tr("Sequence length"), m_seqLen);
    form->addRow(tr("Sequences per domain"), m_maxSamples);
    form->addRow(QString(), m_expertNorms);
    form->addRow(QString(), m_chatTemplate);
    form->addRow(tr("Output atlas"), outputRow);
    form->addRow(QString(), m_force);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(form);
    layout->addWidget(m_bar);
    layout->addWidget(m_status);
    layout->addWidget(m_buttons);
    resize(640, 480);

    connect(m_browseCheckpoint, &QPushButton::clicked, this, &CaptureDialog::browseCheckpoint);
    connect(m_browseOutput, &QPushButton::clicked, this, &CaptureDialog::browseOutput);
    connect(m_addRow, &QPushButton::clicked, this, [this] {
        addDomainRow(QString(), QString());
        m_domains->editItem(m_domains->item(m_domains->rowCount() - 1, 0));
    });
    connect(m_addFiles, &QPushButton::clicked, this, &CaptureDialog::addDomainFiles);
    connect(m_addDirectory, &QPushButton::clicked, this, &CaptureDialog::addDomainDirectory);
    connect(m_removeRows, &QPushButton::clicked, this, [this] {
        QList<int> rows;
        for (const QModelIndex& index : m_domains->selectionModel()->selectedRows())
            rows << index.row();
        if (rows.isEmpty() && m_domains->currentRow() >= 0)
            rows << m_domains->currentRow();
        std::sort(rows.begin(), rows.end(), std::greater<int>());
        for (const int row : rows)
            m_domains->removeRow(row);
    });
    // Capture does not close the dialog (accepted() is left unconnected): it stays open to show
    // progress and errors.
    connect(m_startButton, &QPushButton::clicked, this, &CaptureDialog::start);
    connect(m_buttons, &QDialogButtonBox::rejected, this, &CaptureDialog::reject);

    connect(m_runner, &JobRunner::started, this, [this](int id, const QString&) {
        m_runningId = id;
        if (m_cancelled && (id == m_captureId || id == m_scoreId))
            m_runner->cancel(); // cancelled while it waited in the queue
    });
    connect(m_runner, &JobRunner::progress, this, [this](const QString& stage, qint64 done, qint64 total, double) {
        if (m_runningId == 0 || (m_runningId != m_captureId && m_runningId != m_scoreId) || m_cancelled)
            return; // another job's, or "Cancelling…" stays until the job has stopped
        if (total > 0)
            m_bar->setValue(static_cast<int>(std::min<qint64>(1000, done * 1000 / total)));
        m_status->setText(m_runningId == m_captureId ? tr("Capture: %1").arg(stage) : tr("Score: %1").arg(stage));
    });
    connect(m_runner, &JobRunner::cancelled, this, [this] {
        if (m_runningId != 0 && (m_runningId == m_captureId || m_runningId == m_scoreId))
            m_jobCancelled = true;
    });
    connect(m_runner, &JobRunner::finished, this, [this](bool ok, const QString& message) {
        if (m_runningId != 0 && (m_runningId == m_captureId || m_runningId == m_scoreId))
            onFinished(ok, message);
    });
}

void CaptureDialog::setCheckpoint(const QString& dir)
{
    m_checkpoint->setText(dir);
}

void CaptureDialog::setDomains(const QList<QPair<QString, QString>>& domains)
{
    m_domains->setRowCount(0);
    for (const auto& [name, path] : domains)
        addDomainRow(name, path);
}

void CaptureDialog::setSeqLen(int tokens)
{
    m_seqLen->setValue(tokens);
}

void CaptureDialog::setMaxSamples(int perDomain)
{
    m_maxSamples->setValue(perDomain);
}

void CaptureDialog::setExpertNorms(bool record)
{
    m_expertNorms->setChecked(record);
}

void CaptureDialog::setOutput(const QString& atlas)
{
    m_output->setText(atlas);
}

void CaptureDialog::setForce(bool force)
{
    m_force->setChecked(force);
}

QList<QPair<QString, QString>> CaptureDialog::domains() const
{
    QList<QPair<QString, QString>> out;
    for (int row = 0; row < m_domains->rowCount(); ++row)
        out.append({ cellText(m_domains, row, 0), cellText(m_domains, row, 1) });
    return out;
}

QString CaptureDialog::output() const
{
    return m_output->text().trimmed();
}

QString CaptureDialog::statusText() const
{
    return m_status->text();
}

void CaptureDialog::addDomainRow(const QString& name, const QString& path)
{
    const int row = m_domains->rowCount();
    m_domains->insertRow(row);
    m_domains->setItem(row, 0, new QTableWidgetItem(name));
    m_domains->setItem(row, 1, new QTableWidgetItem(path));
}

void CaptureDialog::addDomainFiles()
{
    const QStringList files = QFileDialog::getOpenFileNames(this, tr("Calibration files"), QString(),
        tr("Calibration data (*.jsonl *.ndjson *.json *.txt);;All files (*)"));
    // The file's name without its extensions names the domain (math.jsonl -> math); edit as needed.
    for (const QString& file : files)
        addDomainRow(QFileInfo(file).baseName(), file);
}

void CaptureDialog::addDomainDirectory()
{
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Directory of .txt files"));
    if (!dir.isEmpty())
        addDomainRow(QFileInfo(dir).fileName(), dir);
}

void CaptureDialog::browseCheckpoint()
{
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Checkpoint directory"), m_checkpoint->text());
    if (!dir.isEmpty())
        m_checkpoint->setText(dir);
}

void CaptureDialog::browseOutput()
{
    const QString path = QFileDialog::getSaveFileName(this, tr("Output atlas"),
        m_output->text().isEmpty() ? QStringLiteral("run.atlas.h5") : m_output->text(), tr("Atlas files (*.h5)"),
        nullptr, QFileDialog::DontConfirmOverwrite);
    if (!path.isEmpty())
        m_output->setText(path);
}

QString CaptureDialog::validate() const
{
    const QString checkpoint = m_checkpoint->text().trimmed();
    if (checkpoint.isEmpty())
        return tr("Choose the checkpoint directory");
    if (!QFileInfo(checkpoint).isDir())
        return tr("%1: no such directory").arg(checkpoint);
    if (!QFileInfo::exists(QDir(checkpoint).filePath(QStringLiteral("config.json"))))
        return tr("%1: no config.json (not a Hugging Face checkpoint)").arg(checkpoint);
    const auto rows = domains();
    if (rows.isEmpty())
        return tr("Add at least one calibration domain");
    QSet<QString> names;
    for (int row = 0; row < rows.size(); ++row) {
        const auto& [name, path] = rows[row];
        if (name.isEmpty())
            return tr("Domain %1: the name is empty").arg(row + 1);
        if (!validDomainName(name))
            return tr("Domain %1: domain names use letters, digits, '_', '-', '.'").arg(name);
        if (names.contains(name))
            return tr("Domain %1 is listed twice").arg(name);
        names.insert(name);
        if (path.isEmpty())
            return tr("Domain %1: choose a file or directory").arg(name);
        if (!QFileInfo::exists(path))
            return tr("Domain %1: %2: no such file or directory").arg(name, path);
    }
    const QString out = output();
    if (out.isEmpty())
        return tr("Choose the output atlas");
    if (QFileInfo::exists(out) && !m_force->isChecked())
        return tr("%1 already exists: tick \"Replace an existing atlas\" to overwrite it").arg(out);
    return {};
}

bool CaptureDialog::start()
{
    if (isRunning()) {
        m_status->setText(tr("A capture is already running"));
        return false;
    }
    if (const QString error = validate(); !error.isEmpty()) {
        m_status->setText(error);
        return false;
    }
    // The parameters `moeatlas capture` builds from the same arguments (app/cmd_capture.cpp,
    // app/calibration_args.h); paths go in as typed, like the CLI's.
    CaptureParams params;
    params.checkpoint = m_checkpoint->text().trimmed().toStdString();
    for (const auto& [name, path] : domains())
        params.domains.push_back({ name.toStdString(), path.toStdString(), std::nullopt });
    params.packing.seqLen = m_seqLen->value();
    if (m_maxSamples->value() > 0)
        params.packing.maxSamplesPerDomain = m_maxSamples->value();
    params.executor.recordExpertNorms = m_expertNorms->isChecked();
    // --chat-template auto (the model's template when it has one) or none ("role: content" lines).
    params.text.chatTemplate = m_chatTemplate->isChecked() ? "auto" : "none";
    params.output = output().toStdString();
    params.overwrite = m_force->isChecked();

    m_atlas = output();
    m_cancelled = false;
    m_bar->setValue(0);
    m_status->setText(m_runner->isBusy() ? tr("Waiting for the running job…") : tr("Starting…"));
    setRunning(true);
    Job job = captureJob(std::move(params));
    job.fieldLabels
        = { { "domains", tr("Domains") }, { "seqLen", tr("Sequence length") }, { "overwrite", m_force->text() } };
    m_captureId = m_runner->start(std::move(job));
    return true;
}

void CaptureDialog::cancel()
{
    if (!isRunning())
        return;
    m_cancelled = true;
    m_status->setText(tr("Cancelling…"));
    if (m_runningId == m_captureId || m_runningId == m_scoreId)
        m_runner->cancel(); // otherwise it is still queued: cancelled when it starts
}

void CaptureDialog::reject()
{
    if (isRunning()) {
        cancel();
        m_closeWhenDone = true;
        return; // closes once the job has stopped (onFinished)
    }
    QDialog::reject();
}

void CaptureDialog::onFinished(bool ok, const QString& message)
{
    const bool wasCapture = m_runningId == m_captureId;
    const bool stopped = std::exchange(m_jobCancelled, false) || (ok && m_cancelled && wasCapture);
    m_runningId = 0;
    if (wasCapture) {
        m_captureId = 0;
        if (ok && !stopped) {
            // Chained: score the new atlas as `moeatlas score ATLAS` does.
            m_bar->setValue(0);
            m_status->setText(tr("Captured (%1); scoring…").arg(message));
            m_scoreId = m_runner->start(scoreJob(m_atlas.toStdString()));
            return;
        }
    } else {
        m_scoreId = 0;
    }
    setRunning(false);
    m_cancelled = false;
    if (ok && !stopped) {
        m_bar->setValue(1000);
        m_status->setText(tr("Captured and scored %1 (%2)").arg(m_atlas, message));
        Q_EMIT atlasReady(m_atlas);
    } else if (stopped) {
        m_bar->setValue(0);
        m_status->setText(wasCapture && !ok ? tr("Capture cancelled: %1.partial keeps the completed layers "
                                                 "(moeatlas capture --resume continues it)")
                                                  .arg(m_atlas)
                                            : tr("Scoring cancelled: %1 is captured but not scored").arg(m_atlas));
        Q_EMIT cancelled();
    } else {
        m_bar->setValue(0);
        m_status->setText(message);
        Q_EMIT failed(message);
    }
    if (std::exchange(m_closeWhenDone, false))
        QDialog::reject();
}

void CaptureDialog::setRunning(bool running)
{
    m_startButton->setEnabled(!running);
    for (QWidget* w : std::initializer_list<QWidget*> { m_checkpoint, m_browseCheckpoint, m_domains, m_addRow,
             m_addFiles, m_addDirectory, m_removeRows, m_seqLen, m_maxSamples, m_expertNorms, m_chatTemplate, m_output,
             m_browseOutput, m_force })
        w->setEnabled(!running);
}

} // namespace moeatlas::views
