#include "charts/routing_stats.h"

#include "charts/chart_image.h"
#include "charts/coactivation_map.h"

#include <QBarCategoryAxis>
#include <QBarSeries>
#include <QBarSet>
#include <QChart>
#include <QChartView>
#include <QComboBox>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineSeries>
#include <QPen>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>

namespace moeatlas::views {

namespace {

// Series go on every rebuild; axes stay (hidden while empty): deleted axes linger in the scene
// until the event loop runs, and an image saved at once would show old and new ones.
void clearChart(QChart* chart)
{
    chart->removeAllSeries();
    for (QAbstractAxis* axis : chart->axes())
        axis->setVisible(false);
}

// The chart's axis of that type on that side, created the first time.
template <class Axis> Axis* axisOf(QChart* chart, Qt::Alignment side)
{
    for (QAbstractAxis* a : chart->axes(side == Qt::AlignBottom ? Qt::Horizontal : Qt::Vertical))
        if (auto* axis = qobject_cast<Axis*>(a); axis && a->alignment() == side) {
            axis->setVisible(true);
            return axis;
        }
    auto* axis = new Axis;
    chart->addAxis(axis, side);
    return axis;
}

QChartView* viewOf(QChart* chart, QWidget* parent)
{
    auto* view = new QChartView(chart, parent);
    view->setRenderHint(QPainter::Antialiasing);
    view->setMinimumSize(260, 200);
    chart->legend()->setAlignment(Qt::AlignBottom);
    return view;
}

double maxOf(const std::vector<double>& v, double floor = 0)
{
    return v.empty() ? floor : std::max(floor, *std::max_element(v.begin(), v.end()));
}

// A bar chart with one bar set per entry of `sets` over `categories`.
void fillBars(QChart* chart, const QStringList& categories,
    const std::vector<std::pair<QString, std::vector<double>>>& sets, const QString& xTitle, const QString& yTitle)
{
    auto* series = new QBarSeries;
    double top = 0;
    for (const auto& [name, values] : sets) {
        auto* set = new QBarSet(name);
        for (const double v : values)
            set->append(v);
        series->append(set);
        top = std::max(top, maxOf(values));
    }
    chart->addSeries(series);
    auto* x = axisOf<QBarCategoryAxis>(chart, Qt::AlignBottom);
    x->clear();
    x->append(categories);
    x->setTitleText(xTitle);
    x->setLabelsVisible(categories.size() <= 32); // 64-128 expert ids would overprint each other
    auto* y = axisOf<QValueAxis>(chart, Qt::AlignLeft);
    y->setTitleText(yTitle);
    y->setRange(0, top > 0 ? top * 1.08 : 1);
    series->attachAxis(x);
    series->attachAxis(y);
    chart->legend()->setVisible(sets.size() > 1);
}

QStringList expertCategories(int n)
{
    QStringList c;
    for (int e = 0; e < n; ++e)
        c << QString::number(e);
    return c;
}

} // namespace

RoutingStatsView::RoutingStatsView(QWidget* parent)
    : QWidget(parent)
    , m_domainBox(new QComboBox(this))
    , m_layerBox(new QComboBox(this))
    , m_message(new QLabel(this))
    , m_loadChart(new QChart)
    , m_layerChart(new QChart)
    , m_dynKChart(new QChart)
    , m_specChart(new QChart)
    , m_coact(new CoactivationMap(this))
{
    auto* bar = new QHBoxLayout;
    bar->addWidget(new QLabel(tr("Domain"), this));
    bar->addWidget(m_domainBox);
    bar->addWidget(new QLabel(tr("MoE layer"), this));
    bar->addWidget(m_layerBox);
    bar->addWidget(m_message, 1);
    auto* grid = new QGridLayout;
    grid->addWidget(viewOf(m_loadChart, this), 0, 0);
    grid->addWidget(viewOf(m_specChart, this), 0, 1);
    grid->addWidget(m_coact, 0, 2);
    grid->addWidget(viewOf(m_layerChart, this), 1, 0, 1, 2);
    grid->addWidget(viewOf(m_dynKChart, this), 1, 2);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(bar);
    layout->addLayout(grid, 1);

    connect(m_domainBox, &QComboBox::currentIndexChanged, this, [this](int i) {
        if (i >= 0)
            setDomainRow(i);
    });
    connect(m_layerBox, &QComboBox::currentIndexChanged, this, [this](int i) {
        if (i >= 0)
            setLayerIndex(i);
    });
    clear();
}

void RoutingStatsView::setAtlas(const AtlasFile& atlas)
{
    try {
        setStatistics(routingStatsFromAtlas(atlas));
    } catch (const std::exception& e) {
        clear();
        m_error = QString::fromUtf8(e.what());
        m_message->setText(m_error);
    }
}

void RoutingStatsView::clear()
{
    m_stats = {};
    m_error.clear();
    m_message->clear();
    {
        const QSignalBlocker b1(m_domainBox), b2(m_layerBox);
        m_domainBox->clear();
        m_layerBox->clear();
    }
    m_row = m_layer = 0;
    rebuild();
}

void RoutingStatsView::setStatistics(RoutingStats stats)
{
    m_stats = std::move(stats);
    m_error.clear();
    m_message->clear();
    const QSignalBlocker b1(m_domainBox), b2(m_layerBox);
    m_domainBox->clear();
    for (const std::string& d : m_stats.domains)
        m_domainBox->addItem(QString::fromStdString(d));
    m_domainBox->addItem(tr("pooled (all domains)"));
    m_layerBox->clear();
    for (const int l : m_stats.layers)
        m_layerBox->addItem(tr("layer %1").arg(l));
    m_row = m_stats.pooledRow();
    m_layer = 0;
    m_domainBox->setCurrentIndex(m_row);
    m_layerBox->setCurrentIndex(m_layer);
    rebuild();
}

void RoutingStatsView::setDomainRow(int row)
{
    if (!hasStatistics() || row < 0 || row >= m_stats.rows() || row == m_row)
        return;
    m_row = row;
    {
        const QSignalBlocker block(m_domainBox);
        m_domainBox->setCurrentIndex(row);
    }
    rebuild();
}

void RoutingStatsView::setLayerIndex(int index)
{
    if (!hasStatistics() || index < 0 || index >= static_cast<int>(m_stats.layers.size()) || index == m_layer)
        return;
    m_layer = index;
    {
        const QSignalBlocker block(m_layerBox);
        m_layerBox->setCurrentIndex(index);
    }
    rebuild();
}

bool RoutingStatsView::saveImage(const QString& path)
{
    return saveWidgetImage(this, path);
}

void RoutingStatsView::rebuild()
{
    for (QChart* c : { m_loadChart, m_layerChart, m_dynKChart, m_specChart })
        clearChart(c);
    if (!hasStatistics()) {
        m_loadChart->setTitle(tr("No routing statistics (run Score)"));
        m_layerChart->setTitle(QString());
        m_dynKChart->setTitle(QString());
        m_specChart->setTitle(QString());
        m_coact->setMatrix(0, {});
        return;
    }
    const QString domain = m_row == m_stats.pooledRow()
        ? tr("pooled")
        : QString::fromStdString(m_stats.domains[static_cast<std::size_t>(m_row)]);
    const int layer = m_stats.layers[static_cast<std::size_t>(m_layer)];
    const QStringList experts = expertCategories(m_stats.numExperts);

    m_loadChart->setTitle(tr("Load share per expert, layer %1, %2").arg(layer).arg(domain));
    fillBars(m_loadChart, experts, { { tr("load share"), m_stats.loadShareOf(m_row, m_layer) } }, tr("expert"),
        tr("share of routed slots"));

    std::vector<std::pair<QString, std::vector<double>>> spec;
    spec.reserve(m_stats.domains.size());
    for (std::size_t d = 0; d < m_stats.domains.size(); ++d)
        spec.emplace_back(
            QString::fromStdString(m_stats.domains[d]), m_stats.specialisationOf(static_cast<int>(d), m_layer));
    m_specChart->setTitle(tr("Domain specialisation, layer %1 (1 = no preference)").arg(layer));
    fillBars(m_specChart, experts, spec, tr("expert"), tr("load share / token share"));

    QStringList ks;
    for (int b = 0; b < m_stats.bins(); ++b)
        ks << QString::number(m_stats.bandMin + b);
    m_dynKChart->setTitle(tr("Dynamic k, layer %1, %2").arg(layer).arg(domain));
    fillBars(m_dynKChart, ks, { { tr("tokens"), m_stats.dynamicKOf(m_row, m_layer) } }, tr("k* (positive logits)"),
        tr("tokens"));

    m_coact->setMatrix(m_stats.numExperts, m_stats.coactivationOf(m_layer),
        tr("Co-activation P(column | row), layer %1, pooled").arg(layer));
    rebuildLayerStats();
}

void RoutingStatsView::rebuildLayerStats()
{
    const QString domain = m_row == m_stats.pooledRow()
        ? tr("pooled")
        : QString::fromStdString(m_stats.domains[static_cast<std::size_t>(m_row)]);
    m_layerChart->setTitle(tr("Balance per layer, %1").arg(domain));
    auto* x = axisOf<QValueAxis>(m_layerChart, Qt::AlignBottom);
    x->setTitleText(tr("decoder layer"));
    x->setLabelFormat(QStringLiteral("%d"));
    const int first = m_stats.layers.front(), last = m_stats.layers.back();
    x->setRange(first, std::max(last, first + 1));
    x->setTickCount(std::min(last - first + 1, 12) + (last == first ? 1 : 0));
    auto* y = axisOf<QValueAxis>(m_layerChart, Qt::AlignLeft);
    y->setTitleText(tr("CV, normalised entropy"));
    auto* y2 = axisOf<QValueAxis>(m_layerChart, Qt::AlignRight);
    y2->setTitleText(tr("m99 (experts, dashed)"));

    double top = 1, top2 = 1;
    auto addLine = [&](const QString& name, const std::vector<double>& array, QValueAxis* axis) {
        auto* s = new QLineSeries;
        s->setName(name);
        s->setPointsVisible(true);
        const std::vector<double> v = m_stats.perLayer(array, m_row);
        for (std::size_t i = 0; i < v.size(); ++i)
            s->append(m_stats.layers[i], v[i]);
        m_layerChart->addSeries(s);
        s->attachAxis(x);
        s->attachAxis(axis);
        if (axis == y2) { // dashed: read on the right-hand axis
            QPen pen = s->pen();
            pen.setStyle(Qt::DashLine);
            s->setPen(pen);
        }
        return maxOf(v);
    };
    top = std::max(top, addLine(tr("load CV"), m_stats.loadCv, y));
    top = std::max(top, addLine(tr("load entropy"), m_stats.loadEntropy, y));
    top = std::max(top, addLine(tr("token entropy"), m_stats.tokenEntropy, y));
    top2 = std::max(top2, addLine(tr("m99"), m_stats.m99Mean, y2));
    y->setRange(0, top * 1.08);
    y2->setRange(0, top2 * 1.08);
    m_layerChart->legend()->setVisible(true);
}

} // namespace moeatlas::views
