#include "charts/fisher_view.h"

#include "atlas_document.h"
#include "charts/chart_image.h"
#include "charts/chart_parts.h"
#include "fisher/fisher_ablation.h"
#include "fisher/fisher_store.h"
#include "fisher_ablation_model.h"
#include "fisher_data.h"

#include <QChart>
#include <QChartView>
#include <QComboBox>
#include <QFutureWatcher>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QPen>
#include <QSpinBox>
#include <QTableView>
#include <QVBoxLayout>
#include <QValueAxis>
#include <QtConcurrent/QtConcurrentRun>

#include <algorithm>
#include <cmath>
#include <iterator>

namespace moeatlas::views {

namespace {

// One colour per row or ranking (Tableau 10 without grey); "pooled" dark purple, "random" grey
// (black is the full model's dashed reference, as on the trade-off chart).
QColor seriesColor(const std::string& name, int index)
{
    if (name == "pooled")
        return QColor(72, 32, 120);
    if (name == "random")
        return QColor(120, 120, 120);
    static const QRgb colors[]
        = { 0x4e79a7, 0xf28e2b, 0xe15759, 0x76b7b2, 0x59a14f, 0xedc948, 0xb07aa1, 0xff9da7, 0x9c755f };
    return QColor::fromRgb(colors[static_cast<std::size_t>(index) % std::size(colors)]);
}

QChartView* viewOf(QChart* chart, QWidget* parent)
{
    auto* view = new QChartView(chart, parent);
    view->setRenderHint(QPainter::Antialiasing);
    view->setMinimumSize(260, 160);
    chart->legend()->setAlignment(Qt::AlignBottom);
    return view;
}

// Axes live as long as their chart (see routing_stats.cpp: deleted axes linger until the event loop runs).
template <class X, class Y> void addAxes(QChart* chart, X* x, Y* y)
{
    chart->addAxis(x, Qt::AlignBottom);
    chart->addAxis(y, Qt::AlignLeft);
}

void addSeries(QChart* chart, QAbstractSeries* series)
{
    chart->addSeries(series);
    for (QAbstractAxis* axis : chart->axes())
        series->attachAxis(axis);
}

QLineSeries* line(const QString& name, const QColor& color, bool points)
{
    auto* s = new QLineSeries;
    s->setName(name);
    QPen pen(color);
    pen.setWidthF(2);
    s->setPen(pen);
    s->setPointsVisible(points);
    return s;
}

// Axis range with a margin, never empty.
std::pair<double, double> padded(double lo, double hi, double floor)
{
    if (!std::isfinite(lo) || !std::isfinite(hi))
        return { 0, 1 };
    const double pad = std::max(floor, 0.06 * (hi - lo));
    return { lo - pad, hi + pad };
}

} // namespace

FisherView::FisherView(QWidget* parent)
    : QWidget(parent)
    , m_formBox(new QComboBox(this))
    , m_layerBox(new QComboBox(this))
    , m_domainBox(new QComboBox(this))
    , m_profileLayerBox(new QComboBox(this))
    , m_expertBox(new QSpinBox(this))
    , m_note(new QLabel(this))
    , m_concChart(new QChart)
    , m_concX(new QLogValueAxis)
    , m_concY(new QValueAxis)
    , m_ablChart(new QChart)
    , m_ablX(new QLogValueAxis)
    , m_ablY(new QValueAxis)
    , m_profChart(new QChart)
    , m_profX(new QValueAxis)
    , m_profY(new QLogValueAxis)
    , m_ablTable(new QTableView(this))
    , m_ablModel(new FisherAblationModel(this))
{
    m_formBox->setToolTip(tr("Score form: mask / weight (squared-gradient Fisher), grad_abs (the authors' mean "
                             "|gradient|), activation and magnitude (baselines)"));
    m_layerBox->setToolTip(tr("Concentration within one MoE layer's units, or over all units"));
    m_domainBox->setToolTip(tr("Evaluated domain of the ablation chart"));
    m_note->setWordWrap(true);
    auto* bar = new QHBoxLayout;
    bar->addWidget(new QLabel(tr("Form"), this));
    bar->addWidget(m_formBox);
    bar->addWidget(new QLabel(tr("Layers"), this));
    bar->addWidget(m_layerBox);
    bar->addSpacing(16);
    bar->addWidget(new QLabel(tr("Ablation on"), this));
    bar->addWidget(m_domainBox);
    bar->addSpacing(16);
    bar->addWidget(new QLabel(tr("Expert profile: layer"), this));
    bar->addWidget(m_profileLayerBox);
    bar->addWidget(new QLabel(tr("expert"), this));
    bar->addWidget(m_expertBox);
    bar->addStretch(1);

    m_concX->setBase(10);
    m_concX->setLabelFormat(QStringLiteral("%g%%"));
    m_concX->setTitleText(tr("top units (% of the units, log scale)"));
    m_concY->setTitleText(tr("mass share (%)"));
    m_concY->setLabelFormat(QStringLiteral("%.0f"));
    m_concY->setRange(0, 100);
    m_concY->setTickCount(6);
    addAxes(m_concChart, m_concX, m_concY);
    m_ablX->setBase(10);
    m_ablX->setLabelFormat(QStringLiteral("%g"));
    m_ablX->setTitleText(tr("units removed (log scale)"));
    m_ablY->setTitleText(tr("loss (nats/token)"));
    m_ablY->setLabelFormat(QStringLiteral("%.2f"));
    addAxes(m_ablChart, m_ablX, m_ablY);
    m_profX->setTitleText(tr("unit rank within the expert"));
    m_profX->setLabelFormat(QStringLiteral("%d"));
    m_profY->setBase(10);
    m_profY->setLabelFormat(QStringLiteral("%.0g"));
    m_profY->setTitleText(tr("score (log)"));
    addAxes(m_profChart, m_profX, m_profY);

    m_ablTable->setModel(m_ablModel);
    m_ablTable->verticalHeader()->hide();
    m_ablTable->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_ablTable->setMinimumSize(260, 120);

    auto* grid = new QGridLayout;
    grid->addWidget(viewOf(m_concChart, this), 0, 0);
    grid->addWidget(viewOf(m_ablChart, this), 0, 1);
    m_ablChart->legend()->setAlignment(Qt::AlignRight); // one entry per ranking: too long for a row
    grid->addWidget(viewOf(m_profChart, this), 1, 0);
    grid->addWidget(m_ablTable, 1, 1);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(bar);
    layout->addWidget(m_note);
    layout->addLayout(grid, 1);

    connect(m_formBox, &QComboBox::currentIndexChanged, this, [this] {
        rebuildConcentration();
        rebuildProfile();
    });
    connect(m_layerBox, &QComboBox::currentIndexChanged, this, &FisherView::rebuildConcentration);
    connect(m_domainBox, &QComboBox::currentIndexChanged, this, &FisherView::rebuildAblation);
    connect(m_profileLayerBox, &QComboBox::currentIndexChanged, this, &FisherView::rebuildProfile);
    connect(m_expertBox, &QSpinBox::valueChanged, this, &FisherView::rebuildProfile);
    setSnapshot(nullptr);
}

FisherView::~FisherView() = default;

bool FisherView::hasFisher() const
{
    return m_snapshot && m_snapshot->fisher;
}

QString FisherView::noteText() const
{
    return m_note->text();
}

void FisherView::setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot)
{
    m_snapshot = std::move(snapshot);
    m_profileJob = 0; // a read in flight belongs to the previous atlas
    const QString form = this->form();
    const QString layer = m_layerBox->currentText();
    const QString domain = m_domainBox->currentText();
    const int profileLayer = std::max(0, m_profileLayerBox->currentIndex());
    const int expert = m_expertBox->value();
    {
        const QSignalBlocker b1(m_formBox), b2(m_layerBox), b3(m_domainBox), b4(m_profileLayerBox), b5(m_expertBox);
        m_formBox->clear();
        m_layerBox->clear();
        m_domainBox->clear();
        m_profileLayerBox->clear();
        const FisherSummary* f = hasFisher() ? m_snapshot->fisher.get() : nullptr;
        if (f) {
            for (const FisherSummaryForm& s : f->forms)
                m_formBox->addItem(qs(fisherCriterionName(s.form)), qs(s.form));
            const int keep = m_formBox->findData(form);
            m_formBox->setCurrentIndex(keep >= 0 ? keep : std::max(0, m_formBox->findData(QStringLiteral("mask"))));
            m_layerBox->addItem(tr("All layers"), -1);
            for (std::size_t l = 0; l < f->layers.size(); ++l) {
                m_layerBox->addItem(QStringLiteral("L%1").arg(f->layers[l]), static_cast<int>(l));
                m_profileLayerBox->addItem(QStringLiteral("L%1").arg(f->layers[l]), static_cast<int>(l));
            }
            m_layerBox->setCurrentIndex(std::max(0, m_layerBox->findText(layer)));
            m_profileLayerBox->setCurrentIndex(std::min(profileLayer, m_profileLayerBox->count() - 1));
            m_expertBox->setRange(0, static_cast<int>(f->numExperts) - 1);
            m_expertBox->setValue(expert);
        }
        if (m_snapshot && m_snapshot->fisherAblation) {
            for (const std::string& d : m_snapshot->fisherAblation->domains)
                m_domainBox->addItem(qs(d));
            m_domainBox->setCurrentIndex(std::max(0, m_domainBox->findText(domain)));
        }
    }
    for (QWidget* w : std::initializer_list<QWidget*> { m_formBox, m_layerBox, m_profileLayerBox, m_expertBox })
        w->setEnabled(hasFisher());
    m_domainBox->setEnabled(m_domainBox->count() > 0);
    QString note;
    if (!m_snapshot)
        note = tr("No atlas open.");
    else if (!m_snapshot->fisher)
        note = m_snapshot->fisherNote;
    else if (!m_snapshot->fisherAblation)
        note = m_snapshot->fisherNote.isEmpty() ? tr("No ablation in this atlas: Jobs > Compute Fisher… with ablation "
                                                     "counts (moeatlas fisher --ablate 0,10,100).")
                                                : m_snapshot->fisherNote;
    m_note->setText(note);
    m_note->setVisible(!note.isEmpty());
    m_ablModel->setResults(m_snapshot ? m_snapshot->fisherAblation : nullptr);
    rebuildConcentration();
    rebuildAblation();
    rebuildProfile();
}

QStringList FisherView::forms() const
{
    QStringList out;
    for (int i = 0; i < m_formBox->count(); ++i)
        out << m_formBox->itemData(i).toString();
    return out;
}

QString FisherView::form() const
{
    return m_formBox->currentData().toString();
}

int FisherView::layerIndex() const
{
    return m_layerBox->currentIndex() < 0 ? -1 : m_layerBox->currentData().toInt();
}

int FisherView::ablationDomain() const
{
    return m_domainBox->currentIndex();
}

int FisherView::profileLayer() const
{
    return m_profileLayerBox->currentIndex();
}

int FisherView::profileExpert() const
{
    return m_expertBox->value();
}

void FisherView::setForm(const QString& form)
{
    const int i = m_formBox->findData(form);
    if (i >= 0)
        m_formBox->setCurrentIndex(i);
}

void FisherView::setLayerIndex(int index)
{
    const int i = m_layerBox->findData(index);
    if (i >= 0)
        m_layerBox->setCurrentIndex(i);
}

void FisherView::setAblationDomain(int index)
{
    if (index >= 0 && index < m_domainBox->count())
        m_domainBox->setCurrentIndex(index);
}

void FisherView::setProfileExpert(int layerIndex, int expert)
{
    if (layerIndex < 0 || layerIndex >= m_profileLayerBox->count())
        return;
    {
        const QSignalBlocker b1(m_profileLayerBox), b2(m_expertBox);
        m_profileLayerBox->setCurrentIndex(layerIndex);
        m_expertBox->setValue(expert);
    }
    rebuildProfile();
}

QAbstractSeries* FisherView::seriesNamed(QChart* chart, const QString& name) const
{
    for (QAbstractSeries* s : chart->series())
        if (s->name() == name)
            return s;
    return nullptr;
}

bool FisherView::saveImage(const QString& path)
{
    return saveWidgetImage(this, path);
}

void FisherView::rebuildConcentration()
{
    m_concChart->removeAllSeries();
    const std::vector<ConcentrationCurve> curves = hasFisher()
        ? concentrationCurves(*m_snapshot->fisher, form().toStdString(), layerIndex())
        : std::vector<ConcentrationCurve> {};
    m_concX->setVisible(!curves.empty());
    m_concY->setVisible(!curves.empty());
    if (curves.empty()) {
        m_concChart->setTitle(hasFisher() ? tr("No concentration for this form") : tr("No Fisher tables"));
        return;
    }
    const QString where = layerIndex() < 0 ? tr("all layers") : m_layerBox->currentText();
    m_concChart->setTitle(tr("Where the %1 mass sits (%2)").arg(m_formBox->currentText(), where));
    double xLo = INFINITY, xHi = 0;
    int index = 0;
    for (const ConcentrationCurve& c : curves) {
        QLineSeries* s = line(qs(c.label), seriesColor(c.label, index++), true);
        for (std::size_t k = 0; k < c.fractions.size(); ++k) {
            s->append(100.0 * c.fractions[k], 100.0 * c.shares[k]);
            xLo = std::min(xLo, 100.0 * c.fractions[k]);
            xHi = std::max(xHi, 100.0 * c.fractions[k]);
        }
        addSeries(m_concChart, s);
    }
    // Uniform scores would hold exactly their fraction of the mass.
    QLineSeries* uniform = line(tr("uniform"), QColor(150, 150, 150), false);
    QPen pen = uniform->pen();
    pen.setStyle(Qt::DashLine);
    pen.setWidthF(1.2);
    uniform->setPen(pen);
    for (const double f : curves.front().fractions)
        uniform->append(100.0 * f, 100.0 * f);
    addSeries(m_concChart, uniform);
    m_concX->setRange(xLo / 2, xHi * 2); // y: shares in percent, 0..100 (set once)
}

void FisherView::rebuildAblation()
{
    m_ablChart->removeAllSeries();
    const FisherAblationResults* a = m_snapshot ? m_snapshot->fisherAblation.get() : nullptr;
    const int domain = ablationDomain();
    const std::vector<AblationCurve> curves = a ? ablationCurves(*a, domain) : std::vector<AblationCurve> {};
    const bool empty = curves.empty() || curves.front().removed.empty();
    m_ablX->setVisible(!empty);
    m_ablY->setVisible(!empty);
    if (empty) {
        m_ablChart->setTitle(a ? tr("The ablation removed no units") : tr("No ablation"));
        return;
    }
    m_ablChart->setTitle(tr("Loss on %1 after removing the top units (%2)")
                             .arg(m_domainBox->currentText(), qs(fisherCriterionName(a->form))));
    double xLo = INFINITY, xHi = 0, yLo = INFINITY, yHi = -INFINITY;
    int index = 0;
    for (const AblationCurve& c : curves) {
        const QString name
            = c.ranking == "pooled" || c.ranking == "random" ? qs(c.ranking) : tr("%1's own").arg(qs(c.ranking));
        QLineSeries* s
            = line(name, seriesColor(c.ranking, c.ranking == "pooled" || c.ranking == "random" ? 0 : index++), true);
        if (c.ranking == "random") {
            QPen pen = s->pen();
            pen.setStyle(Qt::DotLine);
            s->setPen(pen);
        }
        for (std::size_t k = 0; k < c.removed.size(); ++k) {
            s->append(c.removed[k], c.nll[k]);
            xLo = std::min(xLo, c.removed[k]);
            xHi = std::max(xHi, c.removed[k]);
            yLo = std::min(yLo, c.nll[k]);
            yHi = std::max(yHi, c.nll[k]);
        }
        addSeries(m_ablChart, s);
    }
    const double full = ablationFullLoss(*a, domain);
    if (std::isfinite(full)) {
        QLineSeries* s = line(tr("full model"), Qt::black, false);
        QPen pen = s->pen();
        pen.setStyle(Qt::DashLine);
        pen.setWidthF(1.5);
        s->setPen(pen);
        s->append(xLo / 2, full);
        s->append(xHi * 2, full);
        addSeries(m_ablChart, s);
        yLo = std::min(yLo, full);
        yHi = std::max(yHi, full);
    }
    m_ablX->setRange(xLo / 2, xHi * 2);
    const auto [lo, hi] = padded(yLo, yHi, 1e-3);
    m_ablY->setRange(lo, hi);
    m_ablY->applyNiceNumbers();
}

void FisherView::rebuildProfile()
{
    m_profChart->removeAllSeries();
    m_profX->setVisible(false);
    m_profY->setVisible(false);
    if (!hasFisher() || !m_snapshot->fisherUnits || form().isEmpty() || profileLayer() < 0) {
        m_profChart->setTitle(tr("Unit scores of one expert"));
        return;
    }
    const std::string name = form().toStdString();
    if (auto table = m_snapshot->fisherUnits->peek(name)) {
        m_profileJob = 0;
        showProfile(*table);
        return;
    }
    // The unit scores are read on first use, off the GUI thread; a newer request supersedes.
    m_profChart->setTitle(tr("Reading the %1 unit scores…").arg(m_formBox->currentText()));
    const quint64 job = ++m_jobs;
    m_profileJob = job;
    auto* watcher = new QFutureWatcher<QString>(this);
    connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, job] {
        const QString error = watcher->result();
        watcher->deleteLater();
        if (job != m_profileJob)
            return;
        m_profileJob = 0;
        if (!error.isEmpty())
            m_profChart->setTitle(error);
        else
            rebuildProfile();
        Q_EMIT profileReady();
    });
    watcher->setFuture(QtConcurrent::run([store = m_snapshot->fisherUnits, name]() -> QString {
        try {
            store->load(name);
            return {};
        } catch (const std::exception& e) {
            return QString::fromUtf8(e.what());
        }
    }));
}

void FisherView::showProfile(const FisherTable& table)
{
    const int layer = profileLayer();
    const int expert = profileExpert();
    m_profChart->setTitle(tr("Unit scores of layer %1, expert %2 (%3), sorted")
                              .arg(m_profileLayerBox->currentText().mid(1))
                              .arg(expert)
                              .arg(m_formBox->currentText()));
    // Log scale: the scores span orders of magnitude. Units scored 0 (never reached) are not drawn.
    double yLo = INFINITY, yHi = 0;
    for (int r = 0; r < static_cast<int>(table.domains.size()); ++r) {
        const std::vector<double> units = unitProfile(table, r, layer, expert);
        const std::string label = table.form == "magnitude" ? table.form : table.domains[static_cast<std::size_t>(r)];
        QLineSeries* s = line(qs(label), seriesColor(label, r), false);
        for (std::size_t j = 0; j < units.size() && units[j] > 0; ++j) {
            s->append(static_cast<double>(j + 1), units[j]);
            yLo = std::min(yLo, units[j]);
            yHi = std::max(yHi, units[j]);
        }
        addSeries(m_profChart, s);
    }
    m_profX->setVisible(true);
    m_profY->setVisible(yHi > 0);
    m_profX->setRange(1, std::max<double>(2, static_cast<double>(table.intermediate)));
    // At most 8 decades (more labels would be elided); lower scores leave the plot at the bottom.
    if (yHi > 0)
        m_profY->setRange(std::pow(10.0, std::floor(std::log10(std::max(yLo, yHi * 1e-8)))),
            std::pow(10.0, std::ceil(std::log10(yHi))));
    Q_EMIT profileReady();
}

} // namespace moeatlas::views
