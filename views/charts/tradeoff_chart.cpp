#include "charts/tradeoff_chart.h"

#include "charts/chart_image.h"
#include "charts/chart_parts.h"

#include <QAreaSeries>
#include <QChart>
#include <QChartView>
#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineSeries>
#include <QPen>
#include <QScatterSeries>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <cmath>
#include <iterator>

namespace moeatlas::views {

namespace {

// Curve colours (Tableau 10 without its grey): the default theme repeats after five series, and a
// specialist and the plan markers would share one. Random is grey, the full model and plans black.
QColor curveColor(int i)
{
    static const QRgb colors[]
        = { 0x4e79a7, 0xf28e2b, 0xe15759, 0x76b7b2, 0x59a14f, 0xedc948, 0xb07aa1, 0xff9da7, 0x9c755f };
    return QColor::fromRgb(colors[static_cast<std::size_t>(i) % std::size(colors)]);
}

} // namespace

TradeoffChartView::TradeoffChartView(QWidget* parent)
    : QWidget(parent)
    , m_domainBox(new QComboBox(this))
    , m_metricBox(new QComboBox(this))
    , m_chart(new QChart)
    , m_view(new QChartView(m_chart, this))
{
    m_metricBox->addItem(tr("Loss (nats per token)"));
    m_metricBox->addItem(tr("Perplexity"));
    m_view->setRenderHint(QPainter::Antialiasing);
    m_chart->legend()->setAlignment(Qt::AlignRight);
    // The axes live as long as the chart: deleting and recreating them on every rebuild leaves the
    // old ones in the scene until the event loop runs, and an image saved at once shows both.
    m_xAxis = new QValueAxis;
    m_xAxis->setTitleText(tr("sparsity (fraction of routed experts dropped)"));
    m_xAxis->setLabelFormat(QStringLiteral("%.1f"));
    m_yAxis = new QValueAxis;
    m_chart->addAxis(m_xAxis, Qt::AlignBottom);
    m_chart->addAxis(m_yAxis, Qt::AlignLeft);

    auto* bar = new QHBoxLayout;
    bar->addWidget(new QLabel(tr("Domain"), this));
    bar->addWidget(m_domainBox);
    bar->addWidget(new QLabel(tr("Metric"), this));
    bar->addWidget(m_metricBox);
    bar->addStretch(1);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(bar);
    layout->addWidget(m_view, 1);

    connect(m_domainBox, &QComboBox::currentIndexChanged, this, [this](int i) {
        if (i >= 0)
            setDomain(i);
    });
    connect(m_metricBox, &QComboBox::currentIndexChanged, this,
        [this](int i) { setMetric(i == 1 ? TradeoffMetric::Perplexity : TradeoffMetric::Nll); });
    rebuild();
}

QStringList TradeoffChartView::evaluationLabels(const AtlasFile& atlas)
{
    QStringList labels;
    for (const std::string& l : atlas.resultGroups("evaluation"))
        labels << qs(l);
    return labels;
}

void TradeoffChartView::setEvaluation(const AtlasResults* results)
{
    const QString shown = m_domain < m_domainBox->count() ? m_domainBox->itemText(m_domain) : QString();
    m_error.clear();
    try {
        m_table = results ? evalTableFromResults(*results, "/evaluation") : EvalTable {};
    } catch (const std::exception& e) {
        m_table = {};
        m_error = QString::fromUtf8(e.what());
    }
    const QSignalBlocker block(m_domainBox);
    m_domainBox->clear();
    for (const std::string& d : m_table.domains)
        m_domainBox->addItem(qs(d));
    m_domain = std::max(0, m_domainBox->findText(shown));
    m_domainBox->setCurrentIndex(m_domain);
    rebuild();
}

QStringList TradeoffChartView::domains() const
{
    QStringList out;
    for (const std::string& d : m_table.domains)
        out << qs(d);
    return out;
}

QList<QAbstractSeries*> TradeoffChartView::series() const
{
    return m_chart->series();
}

QAbstractSeries* TradeoffChartView::seriesNamed(const QString& name) const
{
    for (QAbstractSeries* s : m_chart->series())
        if (s->name() == name)
            return s;
    return nullptr;
}

bool TradeoffChartView::saveImage(const QString& path)
{
    return saveWidgetImage(this, path);
}

void TradeoffChartView::setDomain(int index)
{
    if (index < 0 || index >= static_cast<int>(m_table.domains.size()) || index == m_domain)
        return;
    m_domain = index;
    {
        const QSignalBlocker block(m_domainBox);
        m_domainBox->setCurrentIndex(index);
    }
    rebuild();
    Q_EMIT domainChanged(index);
}

void TradeoffChartView::setDomainName(const QString& name)
{
    const int i = static_cast<int>(domains().indexOf(name));
    if (i >= 0)
        setDomain(i);
}

void TradeoffChartView::setMetric(TradeoffMetric metric)
{
    if (metric == m_metric)
        return;
    m_metric = metric;
    {
        const QSignalBlocker block(m_metricBox);
        m_metricBox->setCurrentIndex(metric == TradeoffMetric::Perplexity ? 1 : 0);
    }
    rebuild();
}

void TradeoffChartView::rebuild()
{
    m_chart->removeAllSeries();
    m_xAxis->setVisible(!m_table.domains.empty());
    m_yAxis->setVisible(!m_table.domains.empty());
    if (m_table.domains.empty()) {
        m_chart->setTitle(m_error.isEmpty() ? tr("No evaluation table (run Eval)") : m_error);
        return;
    }
    const QString domainName = qs(m_table.domains[static_cast<std::size_t>(m_domain)]);
    const bool ppl = m_metric == TradeoffMetric::Perplexity;
    m_chart->setTitle((ppl ? tr("Perplexity on %1 vs sparsity") : tr("Loss on %1 vs sparsity")).arg(domainName));

    QValueAxis* xAxis = m_xAxis;
    QValueAxis* yAxis = m_yAxis;
    yAxis->setTitleText(
        ppl ? tr("perplexity on %1").arg(domainName) : tr("loss on %1 (nats per token)").arg(domainName));

    double xMax = 0, yMin = INFINITY, yMax = -INFINITY;
    auto extend = [&](double x, double y) {
        xMax = std::max(xMax, x);
        yMin = std::min(yMin, y);
        yMax = std::max(yMax, y);
    };
    auto add = [&](QAbstractSeries* s) {
        m_chart->addSeries(s);
        s->attachAxis(xAxis);
        s->attachAxis(yAxis);
    };

    int curveIndex = 0;
    for (const TradeoffFamily& f : tradeoffFamilies(m_table, m_domain, m_metric)) {
        if (f.kind == TradeoffFamily::Kind::Plans) {
            auto* s = new QScatterSeries;
            s->setName(tr("plans"));
            s->setMarkerSize(9);
            s->setMarkerShape(QScatterSeries::MarkerShapeRectangle);
            s->setColor(Qt::black);
            s->setBorderColor(Qt::black);
            for (std::size_t i = 0; i < f.x.size(); ++i) {
                s->append(f.x[i], f.y[i]);
                extend(f.x[i], f.y[i]);
            }
            add(s);
            continue;
        }
        auto* line = new QLineSeries;
        line->setName(qs(f.label));
        line->setPointsVisible(true);
        line->setColor(f.kind == TradeoffFamily::Kind::Random ? QColor(110, 110, 110) : curveColor(curveIndex++));
        for (std::size_t i = 0; i < f.x.size(); ++i) {
            line->append(f.x[i], f.y[i]);
            extend(f.x[i], f.y[i]);
        }
        if (f.kind == TradeoffFamily::Kind::Random) {
            auto* upper = new QLineSeries;
            auto* lower = new QLineSeries;
            for (std::size_t i = 0; i < f.x.size(); ++i) {
                upper->append(f.x[i], f.yMax[i]);
                lower->append(f.x[i], f.yMin[i]);
                extend(f.x[i], f.yMax[i]);
                extend(f.x[i], f.yMin[i]);
            }
            auto* band = new QAreaSeries(upper, lower);
            band->setName(tr("random min–max"));
            add(band); // the chart now owns the band; the band owns its bounds
            upper->setParent(band);
            lower->setParent(band);
            add(line);
            QColor c = line->color();
            c.setAlphaF(0.2);
            band->setColor(c);
            band->setBorderColor(c);
        } else {
            add(line);
        }
    }
    const double full = tradeoffFullValue(m_table, m_domain, m_metric);
    // Ticks every 0.1 up to the first tenth past the largest sparsity.
    const double xEnd = xMax > 0 ? std::min(1.0, std::ceil((xMax + 0.05) * 10 - 1e-9) / 10) : 1.0;
    if (std::isfinite(full)) {
        auto* s = new QLineSeries;
        s->setName(tr("full model"));
        s->append(0, full);
        s->append(xEnd, full);
        QPen pen(Qt::black);
        pen.setStyle(Qt::DashLine);
        pen.setWidthF(1.5);
        s->setPen(pen);
        extend(0, full);
        add(s);
    }
    xAxis->setRange(0, xEnd);
    xAxis->setTickCount(static_cast<int>(std::lround(xEnd * 10)) + 1);
    if (std::isfinite(yMin)) {
        const double pad = std::max(1e-6, 0.05 * (yMax - yMin));
        yAxis->setRange(yMin - pad, yMax + pad);
    }
}

} // namespace moeatlas::views
