// TradeoffChartView on a real /evaluation table (CLI eval of a generated model): every point of
// every curve, the random mean and band, the plan scatter and the full-model line equal the values
// read independently from the atlas (nll [V, D], params.variants), for both domains and both
// metrics; malformed tables are refused; saveImage writes a real PNG and SVG.
#include "charts/tradeoff_chart.h"
#include "tst_charts_fixture.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <QAreaSeries>
#include <QChart>
#include <QComboBox>
#include <QFile>
#include <QImage>
#include <QLineSeries>
#include <QScatterSeries>
#include <QTemporaryDir>
#include <QTest>
#include <QValueAxis>

#include <cmath>
#include <map>
#include <set>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

// Chart points are the table's doubles (sparsity exactly; the loss, or exp of it, or a mean of random
// plans' losses summed in another order): double arithmetic, so 1e-9 relative is far above its rounding.
bool hasPoint(const QList<QPointF>& points, double x, double y)
{
    for (const QPointF& p : points)
        if (std::abs(p.x() - x) < 1e-12 && std::abs(p.y() - y) <= 1e-9 * std::max(1.0, std::abs(y)))
            return true;
    return false;
}

} // namespace

class TstChartsTradeoff : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void seriesEqualTheAtlasTable_data();
    void seriesEqualTheAtlasTable();
    void domainSelectorSwitchesTheChart();
    void familiesOfASyntheticTable();
    void malformedTableIsRefused();
    void saveImage();

private:
    QTemporaryDir m_dir;
    test::AtlasFixture m_f;
    AtlasResults m_table;
};

void TstChartsTradeoff::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    QVERIFY(test::buildAtlas(m_dir.path(), m_f));
    const AtlasFile atlas = AtlasFile::openReadOnly(m_f.atlas.toStdString());
    QCOMPARE(TradeoffChartView::evaluationLabels(atlas), QStringList { QStringLiteral("default") });
    const auto table = atlas.readResults("evaluation/default");
    QVERIFY(table.has_value());
    m_table = *table;
}

void TstChartsTradeoff::seriesEqualTheAtlasTable_data()
{
    QTest::addColumn<int>("domain");
    QTest::addColumn<bool>("perplexity");
    for (int d = 0; d < 2; ++d)
        for (const bool ppl : { false, true })
            QTest::addRow("domain %d %s", d, ppl ? "perplexity" : "nll") << d << ppl;
}

void TstChartsTradeoff::seriesEqualTheAtlasTable()
{
    QFETCH(int, domain);
    QFETCH(bool, perplexity);
    // The table as the format documents it, read without the view's parser.
    const nlohmann::json params = nlohmann::json::parse(m_table.paramsJson);
    const std::size_t D = params["domains"].size(), V = params["variants"].size();
    QCOMPARE(D, std::size_t { 2 });
    const std::vector<double>& nll = m_table.find("nll")->values;
    const std::vector<double>& sparsity = m_table.find("sparsity")->values;
    QCOMPARE(nll.size(), V * D);
    auto value = [&](std::size_t v) {
        const double x = nll[v * D + static_cast<std::size_t>(domain)];
        return perplexity ? std::exp(x) : x;
    };

    TradeoffChartView view;
    view.setEvaluation(&m_table);
    QVERIFY2(view.errorText().isEmpty(), qPrintable(view.errorText()));
    view.setDomain(domain);
    view.setMetric(perplexity ? TradeoffMetric::Perplexity : TradeoffMetric::Nll);
    QCOMPARE(view.domain(), domain);
    const QString domainName = QString::fromStdString(params["domains"][static_cast<std::size_t>(domain)]);
    QVERIFY2(view.chart()->title().contains(domainName), qPrintable(view.chart()->title()));

    std::size_t checked = 0, specialists = 0, generalists = 0, plans = 0;
    std::map<double, std::vector<double>> random;
    for (std::size_t v = 0; v < V; ++v) {
        const nlohmann::json& var = params["variants"][v];
        const std::string method = var["method"];
        const double x = sparsity[v], y = value(v);
        if (method == "full") {
            auto* full = qobject_cast<QLineSeries*>(view.seriesNamed(QStringLiteral("full model")));
            QVERIFY(full);
            QCOMPARE(full->count(), 2);
            for (const QPointF& p : full->points())
                QCOMPARE(p.y(), y);
            ++checked;
        } else if (method == "random") {
            random[x].push_back(y);
        } else if (var["name"].get<std::string>().ends_with(".json")) { // the --plan file
            auto* scatter = qobject_cast<QScatterSeries*>(view.seriesNamed(QStringLiteral("plans")));
            QVERIFY(scatter);
            QVERIFY(hasPoint(scatter->points(), x, y));
            ++plans;
            ++checked;
        } else {
            QString name = QString::fromStdString(method);
            if (!var["domain"].get<std::string>().empty())
                name += QStringLiteral(": ") + QString::fromStdString(var["domain"]);
            name += QStringLiteral(" (") + QString::fromStdString(var["criterion"]) + QLatin1Char(')');
            auto* line = qobject_cast<QLineSeries*>(view.seriesNamed(name));
            QVERIFY2(line, qPrintable(name));
            QVERIFY2(hasPoint(line->points(), x, y), qPrintable(name));
            QCOMPARE(line->count(), 2); // two sparsities per family
            (method == "specialist" ? specialists : generalists)++;
            ++checked;
        }
    }
    QCOMPARE(specialists, std::size_t { 4 }); // 2 domains x 2 sparsities
    QCOMPARE(generalists, std::size_t { 2 });
    QCOMPARE(plans, std::size_t { 1 });
    QCOMPARE(random.size(), std::size_t { 2 });

    // Random: the mean line through the per-sparsity means, the band between min and max.
    QLineSeries* mean = nullptr;
    QAreaSeries* band = nullptr;
    for (QAbstractSeries* s : view.series()) {
        if (s->name().startsWith(QStringLiteral("random (")))
            mean = qobject_cast<QLineSeries*>(s);
        if (s->name() == QStringLiteral("random min–max"))
            band = qobject_cast<QAreaSeries*>(s);
    }
    QVERIFY(mean && band);
    QCOMPARE(mean->count(), 2);
    for (const auto& [x, ys] : random) {
        QCOMPARE(ys.size(), std::size_t { 2 });
        QVERIFY(hasPoint(mean->points(), x, (ys[0] + ys[1]) / 2));
        QVERIFY(hasPoint(band->upperSeries()->points(), x, std::max(ys[0], ys[1])));
        QVERIFY(hasPoint(band->lowerSeries()->points(), x, std::min(ys[0], ys[1])));
    }
    // Series: full, 2 specialists, generalist, random mean + band, plans; nothing else.
    QCOMPARE(view.series().size(), 7);
    QVERIFY(checked > 0);

    // Axes are titled with what they show.
    const auto axes = view.chart()->axes();
    QCOMPARE(axes.size(), 2);
    QVERIFY(view.chart()->axes(Qt::Horizontal).first()->titleText().contains(QStringLiteral("sparsity")));
    QVERIFY(view.chart()
                ->axes(Qt::Vertical)
                .first()
                ->titleText()
                .contains(perplexity ? QStringLiteral("perplexity") : QStringLiteral("nats")));
}

void TstChartsTradeoff::domainSelectorSwitchesTheChart()
{
    TradeoffChartView view;
    view.setEvaluation(&m_table);
    QCOMPARE(view.domains(), (QStringList { QStringLiteral("math"), QStringLiteral("code") }));
    auto* box = view.findChildren<QComboBox*>().first();
    QCOMPARE(box->count(), 2);
    const double before = qobject_cast<QLineSeries*>(view.seriesNamed(QStringLiteral("full model")))->at(0).y();
    box->setCurrentIndex(1);
    QCOMPARE(view.domain(), 1);
    const double after = qobject_cast<QLineSeries*>(view.seriesNamed(QStringLiteral("full model")))->at(0).y();
    const std::vector<double>& nll = m_table.find("nll")->values;
    const int full = view.table().fullIndex();
    QVERIFY(full >= 0);
    QCOMPARE(before, nll[static_cast<std::size_t>(full) * 2 + 0]);
    QCOMPARE(after, nll[static_cast<std::size_t>(full) * 2 + 1]);
    QVERIFY(before != after);
    // A new table keeps the domain shown.
    view.setEvaluation(&m_table);
    QCOMPARE(view.domain(), 1);
}

// Grouping rules on a hand-written table: sweep curves sorted by sparsity whatever the row
// order, random plans reduced to mean/min/max per sparsity, plan files and method "plan" as points.
void TstChartsTradeoff::familiesOfASyntheticTable()
{
    auto variant = [](const char* name, const char* method, const char* criterion, const char* domain) {
        return nlohmann::json { { "name", name }, { "method", method }, { "criterion", criterion },
            { "domain", domain }, { "keep", nlohmann::json::object() } };
    };
    const nlohmann::json params = { { "domains", { "a", "b" } },
        { "variants",
            { variant("full", "full", "", ""), variant("specialist:a/peu@0.50", "specialist", "peu", "a"),
                variant("specialist:a/peu@0.25", "specialist", "peu", "a"),
                variant("generalist/peu@0.50", "generalist", "peu", ""), variant("random#0@0.50", "random", "", ""),
                variant("random#1@0.50", "random", "", ""), variant("a.plan.json", "specialist", "peu", "a"),
                variant("custom", "plan", "", "") } } };
    AtlasResults r;
    r.paramsJson = params.dump();
    // nll [V=8, D=2]: domain b = domain a + 10.
    const std::vector<double> a { 1.0, 3.0, 2.0, 2.5, 4.0, 6.0, 3.5, 7.0 };
    AtlasArray nll { "nll", { 8, 2 }, {} };
    for (const double x : a)
        nll.values.insert(nll.values.end(), { x, x + 10 });
    r.arrays = { nll, AtlasArray { "sparsity", { 8 }, { 0, 0.5, 0.25, 0.5, 0.5, 0.5, 0.5, 0.3 } },
        AtlasArray { "tokens", { 2 }, { 100, 200 } } };

    const EvalTable t = evalTableFromResults(r, "test table");
    QCOMPARE(t.fullIndex(), 0);
    QCOMPARE(tradeoffFullValue(t, 1, TradeoffMetric::Nll), 11.0);
    QCOMPARE(tradeoffFullValue(t, 0, TradeoffMetric::Perplexity), std::exp(1.0));
    const std::vector<TradeoffFamily> f = tradeoffFamilies(t, 1, TradeoffMetric::Nll);
    QCOMPARE(f.size(), std::size_t { 4 });
    QCOMPARE(f[0].label, std::string("specialist: a (peu)"));
    QCOMPARE(f[0].x, (std::vector<double> { 0.25, 0.5 }));
    QCOMPARE(f[0].y, (std::vector<double> { 12.0, 13.0 }));
    QCOMPARE(f[1].label, std::string("generalist (peu)"));
    QCOMPARE(f[2].kind, TradeoffFamily::Kind::Random);
    QCOMPARE(f[2].x, (std::vector<double> { 0.5 }));
    QCOMPARE(f[2].y, (std::vector<double> { 15.0 }));
    QCOMPARE(f[2].yMin, (std::vector<double> { 14.0 }));
    QCOMPARE(f[2].yMax, (std::vector<double> { 16.0 }));
    QCOMPARE(f[3].kind, TradeoffFamily::Kind::Plans);
    QCOMPARE(f[3].names, (std::vector<std::string> { "a.plan.json", "custom" }));
    QCOMPARE(f[3].y, (std::vector<double> { 13.5, 17.0 }));
    QVERIFY(tradeoffFamilies(t, 2, TradeoffMetric::Nll).empty());
}

void TstChartsTradeoff::malformedTableIsRefused()
{
    AtlasResults broken = m_table;
    broken.arrays.erase(
        std::remove_if(broken.arrays.begin(), broken.arrays.end(), [](const AtlasArray& a) { return a.name == "nll"; }),
        broken.arrays.end());
    QVERIFY_THROWS_EXCEPTION(InputError, evalTableFromResults(broken, "test table"));
    TradeoffChartView view;
    view.setEvaluation(&broken);
    QVERIFY(view.errorText().contains(QStringLiteral("nll")));
    QVERIFY(view.series().isEmpty());
    view.setEvaluation(&m_table);
    QVERIFY(view.errorText().isEmpty());
    QVERIFY(!view.series().isEmpty());
}

void TstChartsTradeoff::saveImage()
{
    TradeoffChartView view;
    view.setEvaluation(&m_table);
    view.resize(900, 600);
    view.show();
    QVERIFY(QTest::qWaitForWindowExposed(&view));
    const QString png = m_dir.filePath(QStringLiteral("tradeoff.png"));
    const QString svg = m_dir.filePath(QStringLiteral("tradeoff.svg"));
    QVERIFY(view.saveImage(png));
    QVERIFY(view.saveImage(svg));
    QVERIFY(!view.saveImage(m_dir.filePath(QStringLiteral("no/such/dir/x.png"))));

    const QImage image(png);
    QVERIFY(!image.isNull());
    QCOMPARE(image.size(), view.size() * view.devicePixelRatio());
    std::set<QRgb> colours;
    for (int y = 0; y < image.height(); y += 3)
        for (int x = 0; x < image.width(); x += 3)
            colours.insert(image.pixel(x, y));
    QVERIFY2(colours.size() > 20, qPrintable(QString::number(colours.size()))); // lines, text, legend

    QFile file(svg);
    QVERIFY(file.open(QIODevice::ReadOnly));
    const QByteArray text = file.readAll();
    QVERIFY(text.contains("<svg"));
    QVERIFY(text.contains("sparsity")); // the axis title, as vector text
    QVERIFY(text.contains("full model")); // the legend
    QVERIFY(text.contains("<path") || text.contains("<polyline"));

    // Saved right after a switch, with no event loop in between: the new chart, legend included.
    view.setDomain(1);
    view.setMetric(TradeoffMetric::Perplexity);
    QVERIFY(view.saveImage(svg));
    QFile again(svg);
    QVERIFY(again.open(QIODevice::ReadOnly));
    const QByteArray switched = again.readAll();
    QVERIFY(switched.contains("Perplexity on code"));
    QVERIFY(switched.contains("full model"));
}

QTEST_MAIN(TstChartsTradeoff)
#include "tst_charts_tradeoff.moc"
