#include "charts/prefetch_view.h"

#include "atlas_document.h"
#include "charts/chart_parts.h"
#include "charts/prefetch_heatmap.h"
#include "charts/prefetch_whatif.h"
#include "jobs/core_jobs.h"
#include "jobs/job_runner.h"

#include <QComboBox>
#include <QFileInfo>
#include <QGridLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

namespace moeatlas::views {

namespace {

QTableWidgetItem* item(const QString& text)
{
    auto* i = new QTableWidgetItem(text);
    i->setFlags(Qt::ItemIsSelectable | Qt::ItemIsEnabled);
    return i;
}

QString signedNumber(double v)
{
    return (v >= 0 ? QStringLiteral("+") : QString()) + QString::number(v, 'f', 4);
}

} // namespace

PrefetchView::PrefetchView(QWidget* parent)
    : QWidget(parent)
    , m_predictor(new QComboBox(this))
    , m_domain(new QComboBox(this))
    , m_split(new QComboBox(this))
    , m_metric(new QComboBox(this))
    , m_note(new QLabel(this))
    , m_compute(new QPushButton(tr("Compute hit rates"), this))
    , m_cancel(new QPushButton(tr("Cancel"), this))
    , m_progress(new QProgressBar(this))
    , m_heatmap(new PrefetchHeatmap(this))
    , m_whatIf(new PrefetchWhatIf(this))
    , m_qualityNote(new QLabel(this))
    , m_quality(new QTableWidget(this))
{
    m_split->addItem(tr("held-out"), static_cast<int>(HitSplit::Heldout));
    m_split->addItem(tr("all tokens"), static_cast<int>(HitSplit::All));
    m_split->setToolTip(tr("Tokens of the held-out sequences (the learned estimators and the frequency baseline were "
                           "fitted on the others), or all tokens"));
    m_metric->addItem(tr("hit rate"));
    m_metric->addItem(tr("recall at budget"));
    m_metric->setToolTip(tr("Hit rate: |first k predicted ∩ routed| / k per token; recall at budget B: |first B "
                            "predicted ∩ routed| / k"));
    m_predictor->setToolTip(tr("Who predicts layer l + d's experts at layer l"));
    m_note->setWordWrap(true);
    m_note->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_compute->setToolTip(tr("moeatlas prefetch ATLAS: hit rates of every predictor the atlas supports, stored in it "
                             "as /prefetch_hit_rates (a background job)"));
    m_progress->setTextVisible(true);

    // Two rows of two pickers: the tab stays narrow enough for the what-if panel beside it.
    auto* selectors = new QGridLayout;
    int cell = 0;
    for (const auto& [label, box] : { std::pair { tr("Predictor"), m_predictor }, std::pair { tr("Domain"), m_domain },
             std::pair { tr("Split"), m_split }, std::pair { tr("Metric"), m_metric } }) {
        selectors->addWidget(new QLabel(label, this), cell / 2, (cell % 2) * 2);
        selectors->addWidget(box, cell / 2, (cell % 2) * 2 + 1);
        ++cell;
    }
    selectors->setColumnStretch(1, 1);
    selectors->setColumnStretch(3, 1);
    auto* jobRow = new QHBoxLayout;
    jobRow->addWidget(m_compute);
    jobRow->addWidget(m_progress, 1);
    jobRow->addWidget(m_cancel);
    auto* left = new QWidget(this);
    auto* leftLayout = new QVBoxLayout(left);
    leftLayout->setContentsMargins(0, 0, 0, 0);
    leftLayout->addLayout(selectors);
    leftLayout->addWidget(m_note);
    leftLayout->addLayout(jobRow);
    leftLayout->addWidget(m_heatmap, 1);

    auto* whatIfBox = new QGroupBox(tr("What if: offload simulator"), this);
    auto* whatIfLayout = new QVBoxLayout(whatIfBox);
    whatIfLayout->addWidget(m_whatIf);
    auto* qualityBox = new QGroupBox(tr("Speculative execution: quality next to speed"), this);
    auto* qualityLayout = new QVBoxLayout(qualityBox);
    m_qualityNote->setWordWrap(true);
    m_qualityNote->setTextInteractionFlags(Qt::TextSelectableByMouse);
    qualityLayout->addWidget(m_qualityNote);
    qualityLayout->addWidget(m_quality);
    m_quality->verticalHeader()->hide();
    m_quality->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_quality->setMaximumHeight(140);
    auto* right = new QWidget(this);
    auto* rightLayout = new QVBoxLayout(right);
    rightLayout->setContentsMargins(0, 0, 0, 0);
    rightLayout->addWidget(whatIfBox, 1);
    rightLayout->addWidget(qualityBox);

    auto* split = new QSplitter(Qt::Horizontal, this);
    split->addWidget(left);
    split->addWidget(right);
    split->setStretchFactor(0, 1);
    split->setStretchFactor(1, 2);
    // In a scroll area: the tab must not force a minimum window size (the other tabs do not).
    auto* scroll = new QScrollArea(this);
    scroll->setWidget(split);
    scroll->setWidgetResizable(true);
    scroll->setFrameShape(QFrame::NoFrame);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(scroll);

    for (QComboBox* box : { m_predictor, m_domain, m_split, m_metric })
        connect(box, &QComboBox::currentIndexChanged, this, &PrefetchView::rebuildHeatmap);
    connect(m_compute, &QPushButton::clicked, this, &PrefetchView::computeHitRates);
    connect(m_cancel, &QPushButton::clicked, this, [this] {
        if (!m_runner || m_job == 0)
            return;
        if (m_jobRunning) {
            m_runner->cancel();
        } else {
            m_runner->dropQueued(m_job);
            m_job = 0;
            m_jobNote = tr("Cancelled before it started: the atlas is unchanged.");
            showState();
        }
    });
    connect(m_whatIf, &PrefetchWhatIf::outcomeShown, this, &PrefetchView::updateSpeed);
    setSnapshot(nullptr);
}

void PrefetchView::setJobRunner(JobRunner* runner)
{
    if (m_runner)
        disconnect(m_runner, nullptr, this, nullptr);
    m_runner = runner;
    if (!m_runner)
        return;
    connect(m_runner, &JobRunner::started, this, [this](int id, const QString&) {
        if (id == m_job) {
            m_jobRunning = true;
            showState();
        }
    });
    connect(m_runner, &JobRunner::progress, this, [this](const QString& stage, qint64 done, qint64 total, double) {
        if (!m_jobRunning)
            return;
        m_progress->setRange(0, total > 0 ? static_cast<int>(std::min<qint64>(total, 1 << 30)) : 0);
        m_progress->setValue(static_cast<int>(std::min<qint64>(done, 1 << 30)));
        m_progress->setFormat(stage + QStringLiteral(" %p%"));
    });
    connect(m_runner, &JobRunner::cancelled, this, [this] {
        if (m_jobRunning)
            m_jobNote = tr("Cancelled: the atlas is unchanged.");
    });
    connect(m_runner, &JobRunner::finished, this, [this](bool ok, const QString& text) {
        if (!m_jobRunning)
            return;
        const QString atlas = m_snapshot ? m_snapshot->path : QString();
        m_jobRunning = false;
        m_job = 0;
        if (ok) {
            m_jobNote = tr("Hit rates stored: %1").arg(text);
            Q_EMIT message(m_jobNote);
            Q_EMIT hitTableStored(atlas);
        } else if (m_jobNote.isEmpty()) {
            m_jobNote = text;
        }
        showState();
    });
}

bool PrefetchView::hasTable() const
{
    return m_snapshot && m_snapshot->prefetchHits;
}

QString PrefetchView::noteText() const
{
    return m_note->text();
}

QString PrefetchView::qualityNote() const
{
    return m_qualityNote->text();
}

int PrefetchView::computeHitRates()
{
    if (!m_snapshot || !m_runner || m_job != 0)
        return 0;
    PrefetchRequest request;
    request.atlas = m_snapshot->path.toStdString();
    m_jobNote.clear();
    m_job = m_runner->start(prefetchJob(std::move(request)));
    // started() came before start() returned when the runner was idle.
    m_jobRunning = m_runner->currentJobId() == m_job;
    showState();
    return m_job;
}

void PrefetchView::setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot)
{
    m_snapshot = std::move(snapshot);
    if (m_job == 0)
        m_jobNote.clear();
    rebuildSelectors();
    rebuildQuality();
    m_whatIf->setSnapshot(m_snapshot);
    rebuildHeatmap();
}

void PrefetchView::rebuildSelectors()
{
    const QSignalBlocker b1(m_predictor), b2(m_domain);
    const QString predictor = m_predictor->currentText();
    const QString domain = m_domain->currentText();
    m_predictor->clear();
    m_domain->clear();
    if (!hasTable())
        return;
    const PrefetchHitTable& t = *m_snapshot->prefetchHits;
    for (const Predictor p : t.predictors)
        m_predictor->addItem(qs(predictorName(p)));
    for (const std::string& d : t.domains)
        m_domain->addItem(qs(d));
    m_domain->addItem(tr("pooled"));
    const int p = m_predictor->findText(predictor);
    m_predictor->setCurrentIndex(std::max(p, 0));
    const int d = m_domain->findText(domain);
    m_domain->setCurrentIndex(d >= 0 ? d : m_domain->count() - 1);
}

void PrefetchView::rebuildHeatmap()
{
    showState();
    if (!hasTable() || m_predictor->currentIndex() < 0 || m_domain->currentIndex() < 0) {
        m_heatmap->clear();
        return;
    }
    m_heatmap->setGrid(prefetchGrid(*m_snapshot->prefetchHits, static_cast<std::size_t>(m_predictor->currentIndex()),
        static_cast<HitSplit>(m_split->currentData().toInt()), static_cast<std::size_t>(m_domain->currentIndex()),
        m_metric->currentIndex() == 1));
}

void PrefetchView::showState()
{
    const bool table = hasTable();
    for (QComboBox* box : { m_predictor, m_domain, m_split, m_metric })
        box->setEnabled(table);
    QStringList notes;
    if (!m_snapshot) {
        notes << tr("No atlas open.");
    } else if (!table) {
        notes << (m_snapshot->prefetchMalformed ? m_snapshot->prefetchNote
                                                : tr("No prefetch hit rates in this atlas yet: run moeatlas prefetch "
                                                     "%1, or Compute hit rates here (a background job).")
                                                      .arg(QFileInfo(m_snapshot->path).fileName()));
        if (!m_snapshot->complete)
            notes << tr("This is a partial atlas: finish the capture first.");
    } else {
        const PrefetchHitTable& t = *m_snapshot->prefetchHits;
        notes << tr("Top-%1 of %2 experts, budget %3; %4 held-out of %5 tokens. Hover a cell for its value.")
                     .arg(t.topK)
                     .arg(t.numExperts)
                     .arg(t.budget)
                     .arg(t.tokens(HitSplit::Heldout, t.numDomains()))
                     .arg(t.tokens(HitSplit::All, t.numDomains()));
        if (!m_snapshot->prefetchInfo)
            notes << tr("Recorded predictors (next-router, quasi-hidden, linear, mlp) need a capture with --prefetch.");
    }
    if (!m_jobNote.isEmpty())
        notes << m_jobNote;
    m_note->setText(notes.join(QLatin1Char('\n')));
    const bool computing = m_job != 0;
    m_compute->setVisible(m_snapshot && !table);
    m_compute->setEnabled(m_snapshot && m_snapshot->complete && m_runner && !computing);
    m_progress->setVisible(computing);
    m_cancel->setVisible(computing);
    if (computing && !m_jobRunning) {
        m_progress->setRange(0, 0);
        m_progress->setFormat(tr("waiting for the running job"));
    }
}

void PrefetchView::rebuildQuality()
{
    m_spec.clear();
    QString error;
    if (m_snapshot)
        m_spec = speculativeQuality(m_snapshot->evaluations, &error);
    std::vector<Predictor> predictors;
    for (const SpeculativeQuality& q : m_spec)
        if (q.knownPredictor && std::find(predictors.begin(), predictors.end(), q.predictor) == predictors.end())
            predictors.push_back(q.predictor);
    m_whatIf->setSpeculativePredictors(predictors);

    m_quality->clear();
    m_quality->setRowCount(0);
    if (m_spec.empty()) {
        m_quality->setColumnCount(0);
        m_quality->hide();
        m_qualityNote->setText(m_snapshot ? tr("Speculative execution not evaluated: run moeatlas eval --atlas %1 "
                                               "--speculative PREDICTOR for its loss change per domain.%2")
                                                .arg(QFileInfo(m_snapshot->path).fileName(),
                                                    error.isEmpty() ? QString() : QStringLiteral("\n") + error)
                                          : QString());
        return;
    }
    m_quality->show();
    std::vector<std::string> domains = m_spec.front().domains;
    QStringList headers { tr("variant"), tr("predictor") };
    for (const std::string& d : domains)
        headers << tr("Δ loss %1").arg(qs(d));
    headers << tr("Δ loss pooled") << tr("TPOT speculative / on-demand");
    m_quality->setColumnCount(static_cast<int>(headers.size()));
    m_quality->setHorizontalHeaderLabels(headers);
    m_quality->setRowCount(static_cast<int>(m_spec.size()));
    for (int r = 0; r < static_cast<int>(m_spec.size()); ++r) {
        const SpeculativeQuality& q = m_spec[static_cast<std::size_t>(r)];
        m_quality->setItem(r, 0, item(qs(q.table + "/" + q.variant)));
        m_quality->setItem(r, 1, item(qs(q.predictorText)));
        for (std::size_t d = 0; d < domains.size(); ++d)
            m_quality->setItem(r, static_cast<int>(2 + d),
                item(d < q.deltaNll.size() ? signedNumber(q.deltaNll[d]) : QStringLiteral("–")));
        m_quality->setItem(r, static_cast<int>(2 + domains.size()), item(signedNumber(q.pooledDelta)));
        m_quality->setItem(r, static_cast<int>(3 + domains.size()), item(tr("simulating…")));
    }
    m_qualityNote->setText(tr("Loss change (nats per token) of executing the predicted experts instead of the routed "
                              "ones, from /evaluation; the speed side is the what-if's cache and link with speculative "
                              "execution (lookahead 1, budget top-k) against on-demand."));
    updateSpeed();
}

void PrefetchView::updateSpeed()
{
    if (m_spec.empty())
        return;
    const auto outcome = m_whatIf->shownOutcome();
    const int column = m_quality->columnCount() - 1;
    for (int r = 0; r < static_cast<int>(m_spec.size()); ++r) {
        const SpeculativeQuality& q = m_spec[static_cast<std::size_t>(r)];
        QString text = tr("–");
        if (!q.knownPredictor) {
            text = tr("unknown predictor");
        } else if (outcome) {
            const auto it = std::find_if(outcome->speculative.begin(), outcome->speculative.end(),
                [&](const WhatIfOutcome::Speculative& s) { return s.predictor == q.predictor; });
            if (it != outcome->speculative.end() && it->result) {
                const double spec = it->result->tpotMean;
                const double base = outcome->baseline.tpotMean;
                const auto [scale, unit] = timeUnit(std::max(spec, base));
                text = tr("%1 / %2 %3 (%4× faster)")
                           .arg(spec * scale, 0, 'f', 3)
                           .arg(base * scale, 0, 'f', 3)
                           .arg(unit)
                           .arg(spec > 0 ? base / spec : 0.0, 0, 'f', 2);
            } else if (it != outcome->speculative.end()) {
                text = tr("not simulated: %1").arg(it->error);
            }
        }
        m_quality->setItem(r, column, item(text));
    }
}

} // namespace moeatlas::views
