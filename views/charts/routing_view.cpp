#include "charts/routing_view.h"

#include "atlas_document.h"
#include "charts/chart_parts.h"
#include "eval/eval.h"
#include "metrics/probmoe_reader.h"

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
#include <QScatterSeries>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <map>

namespace moeatlas::views {

namespace {

double maxOf(const std::vector<double>& v)
{
    return v.empty() ? 0.0 : std::max(0.0, *std::max_element(v.begin(), v.end()));
}

void bars(QChart* chart, const QStringList& categories,
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
    auto* x = new QBarCategoryAxis;
    x->append(categories);
    x->setTitleText(xTitle);
    x->setLabelsVisible(categories.size() <= 32);
    auto* y = new QValueAxis;
    y->setTitleText(yTitle);
    y->setRange(0, top > 0 ? top * 1.08 : 1);
    chart->addAxis(x, Qt::AlignBottom);
    chart->addAxis(y, Qt::AlignLeft);
    series->attachAxis(x);
    series->attachAxis(y);
    chart->legend()->setVisible(sets.size() > 1);
}

} // namespace

std::vector<RoutingTradeoffPoint> routingTradeoffPoints(const EvalTable& table, const std::string& label)
{
    std::vector<RoutingTradeoffPoint> out;
    double tokens = 0;
    for (const int64_t n : table.predictedTokens)
        tokens += static_cast<double>(n);
    const bool routed = std::any_of(
        table.variants.begin(), table.variants.end(), [](const EvalVariant& v) { return v.routing != "model"; });
    if (tokens <= 0 || !routed || table.meanExperts.size() != table.variants.size())
        return out;
    for (std::size_t v = 0; v < table.variants.size(); ++v) {
        RoutingTradeoffPoint p;
        p.table = label;
        p.variant = table.variants[v].name;
        p.rule = table.variants[v].routing;
        for (std::size_t d = 0; d < table.domains.size(); ++d) {
            const double w = static_cast<double>(table.predictedTokens[d]) / tokens;
            p.loss += table.nll[v][d] * w;
            p.meanExperts += table.meanExperts[v][d] * w;
        }
        out.push_back(std::move(p));
    }
    return out;
}

RoutingView::RoutingView(QWidget* parent)
    : QWidget(parent)
    , m_domainBox(new QComboBox(this))
    , m_layerBox(new QComboBox(this))
    , m_note(new QLabel(this))
    , m_kstarChart(new QChart)
    , m_cardChart(new QChart)
    , m_marginalChart(new QChart)
    , m_tradeoffChart(new QChart)
{
    m_note->setWordWrap(true);
    auto* bar = new QHBoxLayout;
    bar->addWidget(new QLabel(tr("Domain"), this));
    bar->addWidget(m_domainBox);
    bar->addWidget(new QLabel(tr("MoE layer"), this));
    bar->addWidget(m_layerBox);
    bar->addStretch(1);
    m_marginalView = makeChartView(m_marginalChart, this, 260);
    m_marginalView->setToolTip(
        tr("Exact-k marginals P(expert j chosen | exactly k chosen) under independent Bernoullis "
           "p_j = sigmoid(router logit), divided by k so that they sum to 1 like the softmax. Softmax routers are "
           "invariant to a shift of all logits, so sigmoid-based exact-k quantities are a post-hoc lens on models "
           "not trained with ProbMoE."));
    auto* kstarView = makeChartView(m_kstarChart, this, 260);
    kstarView->setToolTip(tr("Mean k* = clamp(#positive router logits, band) per MoE layer (ProbMoE's dynamic-k "
                             "rule). Softmax routers are invariant to a shift of all logits, so sigmoid-based exact-k "
                             "quantities are a post-hoc lens on models not trained with ProbMoE."));
    auto* cardView = makeChartView(m_cardChart, this, 260);
    cardView->setToolTip(kstarView->toolTip());
    auto* grid = new QGridLayout;
    grid->addWidget(kstarView, 0, 0);
    grid->addWidget(cardView, 0, 1);
    grid->addWidget(m_marginalView, 1, 0);
    grid->addWidget(makeChartView(m_tradeoffChart, this, 260), 1, 1);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(bar);
    layout->addWidget(m_note);
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

bool RoutingView::hasTables() const
{
    return m_snapshot && m_snapshot->probmoe;
}

QString RoutingView::noteText() const
{
    return m_note->text();
}

void RoutingView::clear()
{
    setSnapshot(nullptr);
}

void RoutingView::setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot)
{
    m_snapshot = std::move(snapshot);
    const QSignalBlocker b1(m_domainBox), b2(m_layerBox);
    m_domainBox->clear();
    m_layerBox->clear();
    m_row = m_layer = 0;
    if (hasTables()) {
        const ProbMoeTables& t = *m_snapshot->probmoe;
        for (const std::string& d : t.domains)
            m_domainBox->addItem(qs(d));
        m_domainBox->addItem(tr("pooled (all domains)"));
        for (const int l : t.layers)
            m_layerBox->addItem(tr("layer %1").arg(l));
        m_row = t.pooledRow();
        m_domainBox->setCurrentIndex(m_row);
    }
    rebuildTradeoff();
    rebuild();
}

void RoutingView::setDomainRow(int row)
{
    if (!hasTables() || row < 0 || row >= m_snapshot->probmoe->rows() || row == m_row)
        return;
    m_row = row;
    const QSignalBlocker block(m_domainBox);
    m_domainBox->setCurrentIndex(row);
    rebuild();
}

void RoutingView::setLayerIndex(int index)
{
    if (!hasTables() || index < 0 || index >= static_cast<int>(m_snapshot->probmoe->layers.size()) || index == m_layer)
        return;
    m_layer = index;
    const QSignalBlocker block(m_layerBox);
    m_layerBox->setCurrentIndex(index);
    rebuild();
}

void RoutingView::rebuild()
{
    QStringList notes;
    if (!m_snapshot)
        notes << tr("No atlas open.");
    else if (!hasTables())
        notes << tr("No ProbMoE exact-k tables in this atlas (/probmoe): run Jobs > Score atlas (or moeatlas "
                    "score) to write them.")
              << m_snapshot->probmoeNote;
    if (!m_tradeoffNote.isEmpty())
        notes << m_tradeoffNote;
    notes.removeAll(QString());
    m_note->setText(notes.join(QLatin1Char('\n')));
    m_note->setVisible(!notes.isEmpty());
    if (!hasTables()) {
        resetChart(m_kstarChart, QString());
        resetChart(m_cardChart, QString());
        resetChart(m_marginalChart, QString());
        return;
    }
    const ProbMoeTables& t = *m_snapshot->probmoe;
    const QString domain = m_row == t.pooledRow() ? tr("pooled") : qs(t.domains[static_cast<std::size_t>(m_row)]);
    const int layer = t.layers[static_cast<std::size_t>(m_layer)];

    resetChart(m_kstarChart, tr("Mean k* per layer, %1 (band %2–%3)").arg(domain).arg(t.bandMin).arg(t.bandMax));
    auto* line = new QLineSeries;
    line->setName(tr("mean k*"));
    line->setPointsVisible(true);
    const std::vector<double> kstar = t.perLayer(t.kstarMean, m_row);
    for (std::size_t i = 0; i < kstar.size(); ++i)
        line->append(t.layers[i], kstar[i]);
    m_kstarChart->addSeries(line);
    auto* x = new QValueAxis;
    x->setTitleText(tr("decoder layer"));
    x->setLabelFormat(QStringLiteral("%d"));
    const int span = std::max(t.layers.back() - t.layers.front(), 1);
    x->setRange(t.layers.front(), t.layers.front() + span);
    if (span <= 16)
        x->setTickCount(span + 1); // one tick per decoder layer: labels are whole layer numbers
    auto* y = new QValueAxis;
    y->setTitleText(tr("experts"));
    y->setRange(t.bandMin - 0.5, t.bandMax + 0.5);
    m_kstarChart->addAxis(x, Qt::AlignBottom);
    m_kstarChart->addAxis(y, Qt::AlignLeft);
    line->attachAxis(x);
    line->attachAxis(y);
    m_kstarChart->legend()->setVisible(false);

    QStringList cs;
    for (int b = 0; b < t.bins(); ++b)
        cs << QString::number(t.bandMin + b);
    resetChart(m_cardChart, tr("Cardinality over the band, layer %1, %2").arg(layer).arg(domain));
    bars(m_cardChart, cs, { { tr("P(|S| = c)"), t.cardinalityOf(m_row, m_layer) } }, tr("c (experts)"),
        tr("probability"));

    std::vector<double> marginal = t.marginalsOf(m_row, m_layer);
    for (double& m : marginal)
        m /= t.k;
    std::vector<std::pair<QString, std::vector<double>>> sets { { tr("exact-k marginal / k"), std::move(marginal) } };
    if (const AtlasArray* soft = m_snapshot->scoreArray("soft_mass"); soft && soft->dims.size() == 3
        && soft->dims[1] == t.layers.size() && soft->dims[2] == static_cast<uint64_t>(t.numExperts)
        && soft->dims[0] == static_cast<uint64_t>(t.rows())) {
        const auto E = static_cast<std::size_t>(t.numExperts);
        const std::size_t base
            = (static_cast<std::size_t>(m_row) * t.layers.size() + static_cast<std::size_t>(m_layer)) * E;
        sets.emplace_back(tr("mean softmax probability"),
            std::vector<double>(soft->values.begin() + static_cast<std::ptrdiff_t>(base),
                soft->values.begin() + static_cast<std::ptrdiff_t>(base + E)));
    }
    QStringList experts;
    for (int e = 0; e < t.numExperts; ++e)
        experts << QString::number(e);
    resetChart(
        m_marginalChart, tr("Exact-k marginals (k = %1) vs softmax, layer %2, %3").arg(t.k).arg(layer).arg(domain));
    bars(m_marginalChart, experts, sets, tr("expert"), tr("share of a token's experts"));
}

void RoutingView::rebuildTradeoff()
{
    m_points.clear();
    m_tradeoffNote.clear();
    resetChart(m_tradeoffChart, tr("Loss vs mean experts per token"));
    if (!m_snapshot)
        return;
    for (const auto& [label, group] : m_snapshot->evaluations) {
        try {
            const std::vector<RoutingTradeoffPoint> points
                = routingTradeoffPoints(evalTableFromResults(group, "/evaluation/" + label), label);
            m_points.insert(m_points.end(), points.begin(), points.end());
        } catch (const std::exception& e) {
            m_tradeoffNote = QString::fromUtf8(e.what());
        }
    }
    if (m_points.empty()) {
        if (m_tradeoffNote.isEmpty())
            m_tradeoffNote = tr("No evaluation with routing rules for the trade-off: moeatlas eval --atlas ATLAS "
                                "--routing probmoe:KMIN:KMAX --routing top-p:P ... adds one (with the fixed top-k "
                                "ladder each dynamic rule is compared with).");
        return;
    }
    std::map<std::string, QScatterSeries*> byRule;
    double xMin = m_points.front().meanExperts, xMax = xMin, yMin = m_points.front().loss, yMax = yMin;
    for (const RoutingTradeoffPoint& p : m_points) {
        // The model's k and the fixed top-k ladder are one series: the line a dynamic rule must beat.
        const bool fixed = p.rule == "model" || p.rule.rfind("top-k:", 0) == 0;
        QScatterSeries*& s = byRule[fixed ? std::string("fixed top-k") : p.rule];
        if (s == nullptr) {
            s = new QScatterSeries;
            s->setName(fixed ? tr("fixed top-k") : qs(p.rule));
            s->setMarkerSize(9);
        }
        s->append(p.meanExperts, p.loss);
        xMin = std::min(xMin, p.meanExperts);
        xMax = std::max(xMax, p.meanExperts);
        yMin = std::min(yMin, p.loss);
        yMax = std::max(yMax, p.loss);
    }
    auto* x = new QValueAxis;
    x->setTitleText(tr("mean experts per token"));
    x->setRange(std::max(0.0, xMin - 0.5), xMax + 0.5);
    auto* y = new QValueAxis;
    y->setTitleText(tr("loss (nats per token)"));
    const double pad = std::max(1e-3, 0.05 * (yMax - yMin));
    y->setRange(yMin - pad, yMax + pad);
    m_tradeoffChart->addAxis(x, Qt::AlignBottom);
    m_tradeoffChart->addAxis(y, Qt::AlignLeft);
    for (const auto& [rule, s] : byRule) {
        m_tradeoffChart->addSeries(s);
        s->attachAxis(x);
        s->attachAxis(y);
    }
    m_tradeoffChart->legend()->setVisible(true);
}

} // namespace moeatlas::views
