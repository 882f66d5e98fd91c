// The Fisher views: the core readers of /fisher (summary, ablation) against the atlas's raw
// arrays, the heatmap's Fisher sources, the Fisher tab's charts and ablation table (values equal
// what the atlas holds), the unit-profile chart, the pure chart-data functions, and the main
// window's Fisher tab. The atlas is the views fixture after `moeatlas fisher --ablate 0,10,100`.
#include "atlas_document.h"
#include "charts/fisher_view.h"
#include "fisher/fisher_ablation.h"
#include "fisher/fisher_store.h"
#include "fisher_ablation_model.h"
#include "fisher_data.h"
#include "heatmap_model.h"
#include "heatmap_view.h"
#include "main_window.h"
#include "views_fixture.h"

#include <nlohmann/json.hpp>

#include <QAbstractItemModelTester>
#include <QChart>
#include <QComboBox>
#include <QLineSeries>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <functional>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

AtlasResults group(const QString& atlas, const std::string& name)
{
    const std::optional<AtlasResults> g = AtlasFile::openReadOnly(atlas.toStdString()).readResults(name);
    if (!g)
        qFatal("%s has no /%s", qPrintable(atlas), name.c_str());
    return *g;
}

std::vector<QPointF> pointsOf(QAbstractSeries* series)
{
    auto* line = qobject_cast<QLineSeries*>(series);
    if (!line)
        return {};
    const QList<QPointF> points = line->points();
    return { points.begin(), points.end() };
}

bool close(double a, double b, double tolerance = 1e-12)
{
    return std::abs(a - b) <= tolerance * std::max(1.0, std::abs(b));
}

} // namespace

class TstFisherViews : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void summaryEqualsAtlas();
    void ablationEqualsAtlas();
    void heatmapShowsExpertFisher_data();
    void heatmapShowsExpertFisher();
    void concentrationChart_data();
    void concentrationChart();
    void ablationChartAndTable_data();
    void ablationChartAndTable();
    void unitProfile();
    void chartDataFunctions();
    void ablationCurvesSortByUnits();
    void atlasWithoutFisher();
    void mainWindowTab();

private:
    QTemporaryDir m_dir;
    QTemporaryDir m_settings;
    QString m_plain; // scored, no /fisher
    QString m_atlas; // with /fisher
    std::shared_ptr<const AtlasSnapshot> m_snapshot;
};

void TstFisherViews::initTestCase()
{
    QVERIFY(m_dir.isValid() && m_settings.isValid());
    QStandardPaths::setTestModeEnabled(true);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_settings.path());
    QString error;
    m_plain = test::buildViewsAtlas(m_dir.path(), &error);
    QVERIFY2(!m_plain.isEmpty(), qPrintable(error));
    m_atlas = m_dir.filePath(QStringLiteral("fisher.atlas.h5"));
    QVERIFY(QFile::copy(m_plain, m_atlas));
    QVERIFY2(test::addFisherTables(m_atlas, &error), qPrintable(error));
    m_snapshot = loadAtlasSnapshot(m_atlas);
    QVERIFY2(m_snapshot->fisher, qPrintable(m_snapshot->fisherNote));
    QVERIFY(m_snapshot->fisherAblation);
}

void TstFisherViews::summaryEqualsAtlas()
{
    const FisherSummary& s = *m_snapshot->fisher;
    const nlohmann::json params = nlohmann::json::parse(group(m_atlas, "fisher").paramsJson);
    QCOMPARE(s.domains, (std::vector<std::string> { "math", "code", "pooled" }));
    QCOMPARE(s.layers, params.at("layers").get<std::vector<int>>());
    QCOMPARE(s.layers, m_snapshot->model.moeLayers);
    QCOMPARE(s.numExperts, int64_t { 8 });
    QCOMPARE(s.intermediate, int64_t { 32 });
    QCOMPARE(s.fractions, std::vector<double>(kConcentrationFractions.begin(), kConcentrationFractions.end()));
    std::vector<std::string> forms;
    for (const FisherSummaryForm& f : s.forms)
        forms.push_back(f.form);
    QCOMPARE(forms, (std::vector<std::string> { "mask", "weight", "grad_abs", "activation", "magnitude" }));
    const AtlasResults concentration = group(m_atlas, "fisher/concentration");
    for (const FisherSummaryForm& f : s.forms) {
        QCOMPARE(f.experts, group(m_atlas, "fisher/" + f.form).find("experts")->values);
        QCOMPARE(f.concentration, concentration.find(f.form)->values);
        // Consistency with the unit scores: expert sums and the all-layer shares recomputed, in double,
        // from the units as FisherTable holds them (rounded to fp32). Scores are >= 0, so each recomputed
        // sum is within 2^-24 relative of the stored one (a float64 sum of the float64 units): 1e-6 of
        // the sum, with no floor at 1 (Fisher scores can be far below 1), + 1e-40 for scores below
        // fp32's normal range. Shares lie in [0, 1]: 1e-5 absolute is relative to their scale.
        const FisherTable units = readFisherTable(m_atlas.toStdString(), f.form);
        const std::size_t L = s.layers.size(), E = 8, I = 32;
        for (std::size_t r = 0; r < static_cast<std::size_t>(f.rows); ++r) {
            const std::span<const float> row = units.rowUnits(static_cast<int>(r));
            for (std::size_t k = 0; k < L * E; ++k) {
                double sum = 0;
                for (std::size_t j = 0; j < I; ++j)
                    sum += row[k * I + j];
                QVERIFY2(std::abs(f.experts[r * L * E + k] - sum) <= 1e-6 * sum + 1e-40, f.form.c_str());
            }
            const std::vector<double> all(row.begin(), row.end());
            const std::vector<double> shares = concentrationShares(all, s.fractions);
            for (std::size_t q = 0; q < shares.size(); ++q)
                QVERIFY(close(f.concentration[(r * (L + 1) + L) * shares.size() + q], shares[q], 1e-5));
        }
    }
    QCOMPARE(s.samples.back(), s.samples[0] + s.samples[1]);
}

void TstFisherViews::ablationEqualsAtlas()
{
    const FisherAblationResults& a = *m_snapshot->fisherAblation;
    const AtlasResults g = group(m_atlas, "fisher/ablation");
    const nlohmann::json params = nlohmann::json::parse(g.paramsJson);
    QCOMPARE(a.form, std::string("mask"));
    QCOMPARE(a.domains, (std::vector<std::string> { "math", "code" }));
    // full, then per n in {10, 100}: pooled, math, code, random.
    QCOMPARE(a.variants.size(), std::size_t(9));
    QCOMPARE(a.fullIndex(), 0);
    const AtlasArray* nll = g.find("nll");
    for (std::size_t v = 0; v < a.variants.size(); ++v) {
        QCOMPARE(a.variants[v].name, params["variants"][v]["name"].get<std::string>());
        QCOMPARE(a.variants[v].ranking, params["variants"][v]["ranking"].get<std::string>());
        QCOMPARE(a.variants[v].removed, params["variants"][v]["removed"].get<int64_t>());
        for (std::size_t d = 0; d < 2; ++d)
            QCOMPARE(a.variants[v].nll[d], nll->values[v * 2 + d]);
    }
    QCOMPARE(a.variants[1].name, std::string("top-10:pooled"));
    QCOMPARE(a.variants[4].ranking, std::string("random"));
    QCOMPARE(a.tokens.size(), std::size_t(2));
}

void TstFisherViews::heatmapShowsExpertFisher_data()
{
    QTest::addColumn<QString>("form");
    QTest::addColumn<int>("row");
    for (const char* form : { "mask", "weight", "grad_abs", "activation" })
        for (const int row : { 0, 1, 2 })
            QTest::addRow("%s row %d", form, row) << QString::fromLatin1(form) << row;
    QTest::newRow("magnitude") << QStringLiteral("magnitude") << 0;
}

void TstFisherViews::heatmapShowsExpertFisher()
{
    QFETCH(QString, form);
    QFETCH(int, row);
    const QString name = QStringLiteral("fisher_") + form;
    const HeatmapQuantity q { HeatmapQuantity::Kind::Fisher, name, row };
    bool listed = false;
    for (const HeatmapQuantity& h : heatmapQuantities(*m_snapshot))
        listed = listed || (h.kind == HeatmapQuantity::Kind::Fisher && h.name == name);
    QVERIFY(listed);
    const int rows = form == QLatin1String("magnitude") ? 1 : 3;
    QCOMPARE(heatmapDomainRows(*m_snapshot, q), rows);
    QCOMPARE(heatmapDomainNames(*m_snapshot, q).last(), QStringLiteral("pooled"));

    HeatmapModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setHeatmap(heatmapData(*m_snapshot, q));
    const AtlasResults fisherGroup = group(m_atlas, "fisher/" + form.toStdString());
    const AtlasArray* experts = fisherGroup.find("experts");
    const int L = 3, E = 8;
    QCOMPARE(model.rowCount(), L);
    QCOMPARE(model.columnCount(), E);
    for (int l = 0; l < L; ++l)
        for (int e = 0; e < E; ++e)
            QCOMPARE(model.data(model.index(l, e), HeatmapModel::ValueRole).toDouble(),
                experts->values[(static_cast<std::size_t>(row) * L + l) * E + e]);
    QCOMPARE(model.heatmap().quantity, name);
    QCOMPARE(model.heatmap().domain, row == rows - 1 ? QStringLiteral("pooled") : m_snapshot->domainNames()[row]);
}

void TstFisherViews::concentrationChart_data()
{
    QTest::addColumn<QString>("form");
    QTest::addColumn<int>("layer");
    for (const char* form : { "mask", "grad_abs", "magnitude" })
        for (const int layer : { -1, 0, 2 })
            QTest::addRow("%s layer %d", form, layer) << QString::fromLatin1(form) << layer;
}

void TstFisherViews::concentrationChart()
{
    QFETCH(QString, form);
    QFETCH(int, layer);
    FisherView view;
    view.setSnapshot(m_snapshot);
    view.setForm(form);
    view.setLayerIndex(layer);
    QCOMPARE(view.form(), form);
    QCOMPARE(view.layerIndex(), layer);
    const AtlasResults concentration = group(m_atlas, "fisher/concentration");
    const AtlasArray* shares = concentration.find(form.toStdString());
    QVERIFY(shares);
    const std::size_t rows = shares->dims[0], columns = shares->dims[1], F = shares->dims[2];
    const std::size_t column = layer < 0 ? columns - 1 : static_cast<std::size_t>(layer);
    const QStringList labels = form == QLatin1String("magnitude")
        ? QStringList { form }
        : QStringList { QStringLiteral("math"), QStringLiteral("code"), QStringLiteral("pooled") };
    QCOMPARE(static_cast<std::size_t>(labels.size()), rows);
    QCOMPARE(view.concentrationChart()->series().size(), labels.size() + 1); // + "uniform"
    for (std::size_t r = 0; r < rows; ++r) {
        const std::vector<QPointF> points = pointsOf(view.seriesNamed(view.concentrationChart(), labels[int(r)]));
        QCOMPARE(points.size(), F);
        for (std::size_t k = 0; k < F; ++k) {
            QCOMPARE(points[k].x(), 100.0 * kConcentrationFractions[k]);
            QCOMPARE(points[k].y(), 100.0 * shares->values[(r * columns + column) * F + k]);
        }
    }
    const std::vector<QPointF> uniform
        = pointsOf(view.seriesNamed(view.concentrationChart(), QStringLiteral("uniform")));
    QCOMPARE(uniform.size(), F);
    QCOMPARE(uniform.back().y(), uniform.back().x());
}

void TstFisherViews::ablationChartAndTable_data()
{
    QTest::addColumn<int>("domain");
    QTest::newRow("math") << 0;
    QTest::newRow("code") << 1;
}

void TstFisherViews::ablationChartAndTable()
{
    QFETCH(int, domain);
    FisherView view;
    view.setSnapshot(m_snapshot);
    view.setAblationDomain(domain);
    QCOMPARE(view.ablationDomain(), domain);
    const AtlasResults g = group(m_atlas, "fisher/ablation");
    const nlohmann::json variants = nlohmann::json::parse(g.paramsJson)["variants"];
    const AtlasArray* nll = g.find("nll");
    const auto lossOf = [&](const std::string& name) {
        for (std::size_t v = 0; v < variants.size(); ++v)
            if (variants[v]["name"] == name)
                return nll->values[v * 2 + static_cast<std::size_t>(domain)];
        qFatal("no variant %s", name.c_str());
    };
    // pooled, math's own, code's own, random, full model.
    QCOMPARE(view.ablationChart()->series().size(), 5);
    const std::vector<std::pair<QString, std::string>> rankings { { QStringLiteral("pooled"), "pooled" },
        { QStringLiteral("math's own"), "math" }, { QStringLiteral("code's own"), "code" },
        { QStringLiteral("random"), "" } };
    for (const auto& [series, ranking] : rankings) {
        const std::vector<QPointF> points = pointsOf(view.seriesNamed(view.ablationChart(), series));
        QCOMPARE(points.size(), std::size_t(2));
        for (const QPointF& p : points) {
            const auto n = static_cast<int>(p.x());
            const std::string name
                = ranking.empty() ? "random-" + std::to_string(n) : "top-" + std::to_string(n) + ":" + ranking;
            QCOMPARE(p.y(), lossOf(name));
        }
        QCOMPARE(points[0].x(), 10.0);
        QCOMPARE(points[1].x(), 100.0);
    }
    for (const QPointF& p : pointsOf(view.seriesNamed(view.ablationChart(), QStringLiteral("full model"))))
        QCOMPARE(p.y(), lossOf("full"));

    FisherAblationModel* model = view.ablationModel();
    QAbstractItemModelTester tester(model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    QCOMPARE(model->rowCount(), int(variants.size()));
    QCOMPARE(model->columnCount(), FisherAblationModel::FirstDomainColumn + 4);
    const int lossColumn = FisherAblationModel::FirstDomainColumn + 2 * domain;
    QCOMPARE(model->headerData(lossColumn, Qt::Horizontal).toString(),
        QString::fromStdString(m_snapshot->fisherAblation->domains[domain]) + QStringLiteral(" loss"));
    for (int v = 0; v < model->rowCount(); ++v) {
        const std::string name = variants[v]["name"];
        QCOMPARE(
            model->data(model->index(v, FisherAblationModel::VariantColumn)).toString(), QString::fromStdString(name));
        QCOMPARE(model->data(model->index(v, FisherAblationModel::RemovedColumn)).toLongLong(),
            variants[v]["removed"].get<qint64>());
        QCOMPARE(model->data(model->index(v, lossColumn), FisherAblationModel::ValueRole).toDouble(), lossOf(name));
        QCOMPARE(model->data(model->index(v, lossColumn)).toString(), QString::number(lossOf(name), 'f', 4));
        const QVariant delta = model->data(model->index(v, lossColumn + 1), FisherAblationModel::ValueRole);
        if (name == "full") {
            QVERIFY(!delta.isValid());
        } else {
            QCOMPARE(delta.toDouble(), lossOf(name) - lossOf("full"));
            const QString text = model->data(model->index(v, lossColumn + 1)).toString();
            QVERIFY(text.startsWith(delta.toDouble() >= 0 ? QLatin1Char('+') : QLatin1Char('-')));
        }
    }
    const QStringList csv = model->toCsv().split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    QCOMPARE(csv.size(), 1 + 2 * model->rowCount());
    QCOMPARE(csv.first(), QStringLiteral("variant,ranking,removed,domain,tokens,nll,perplexity,delta_nll"));
}

void TstFisherViews::unitProfile()
{
    FisherView view;
    QSignalSpy ready(&view, &FisherView::profileReady);
    view.setSnapshot(loadAtlasSnapshot(m_atlas)); // a fresh store: the units are read on demand
    view.setForm(QStringLiteral("weight"));
    view.setProfileExpert(2, 5);
    QTRY_VERIFY_WITH_TIMEOUT(!view.isProfileLoading() && ready.count() > 0, 20000);
    QCOMPARE(view.profileLayer(), 2);
    QCOMPARE(view.profileExpert(), 5);
    const FisherTable units = readFisherTable(m_atlas.toStdString(), "weight");
    const QStringList rows { QStringLiteral("math"), QStringLiteral("code"), QStringLiteral("pooled") };
    QCOMPARE(view.profileChart()->series().size(), rows.size());
    for (int r = 0; r < rows.size(); ++r) {
        const std::span<const float> row = units.rowUnits(r);
        std::vector<double> expected(row.begin() + (2 * 8 + 5) * 32, row.begin() + (2 * 8 + 6) * 32);
        std::sort(expected.begin(), expected.end(), std::greater<>());
        expected.erase(std::find(expected.begin(), expected.end(), 0.0), expected.end()); // log axis: positive only
        QVERIFY(!expected.empty());
        const std::vector<QPointF> points = pointsOf(view.seriesNamed(view.profileChart(), rows[r]));
        QCOMPARE(points.size(), expected.size());
        for (std::size_t j = 0; j < points.size(); ++j) {
            QCOMPARE(points[j].x(), double(j + 1));
            QCOMPARE(points[j].y(), expected[j]);
        }
    }
}

void TstFisherViews::chartDataFunctions()
{
    // A hand-made summary: 2 rows (a, pooled), 2 layers, 2 fractions.
    FisherSummary s;
    s.domains = { "a", "pooled" };
    s.layers = { 1, 3 };
    s.numExperts = 1;
    s.intermediate = 2;
    s.fractions = { 0.1, 0.5 };
    s.tokens = { 5, 5 };
    s.forms.push_back({ "mask", 2, { 1, 2, 3, 4 }, { 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2 } });
    const std::vector<ConcentrationCurve> all = concentrationCurves(s, "mask", -1);
    QCOMPARE(all.size(), std::size_t(2));
    QCOMPARE(all[0].label, std::string("a"));
    QCOMPARE(all[0].shares, (std::vector<double> { 0.5, 0.6 }));
    QCOMPARE(all[1].shares, (std::vector<double> { 1.1, 1.2 }));
    QCOMPARE(concentrationCurves(s, "mask", 1)[1].shares, (std::vector<double> { 0.9, 1.0 }));
    QVERIFY(concentrationCurves(s, "weight", -1).empty());
    QVERIFY(concentrationCurves(s, "mask", 2).empty());

    QCOMPARE(fisherCriterionName("activation"), std::string("activation"));
    QCOMPARE(fisherCriterionName("grad_abs"), std::string("fisher_grad_abs"));
    QVERIFY(isExpertPlanForm("weight") && !isExpertPlanForm("activation") && !isExpertPlanForm("magnitude"));

    FisherTable t;
    t.form = "mask";
    t.domains = { "a", "pooled" };
    t.layers = { 1, 3 };
    t.numExperts = 1;
    t.intermediate = 2;
    t.units = { 1, 5, 2, 0, 7, 3, 4, 9 };
    QCOMPARE(views::unitProfile(t, 1, 1, 0), (std::vector<double> { 9, 4 }));
    QVERIFY(views::unitProfile(t, 2, 0, 0).empty());
}

void TstFisherViews::ablationCurvesSortByUnits()
{
    FisherAblationResults a;
    a.domains = { "a", "b" };
    a.variants = { { "top-100:pooled", "pooled", 100, { 3, 30 } }, { "full", "full", 0, { 1, 10 } },
        { "top-10:pooled", "pooled", 10, { 2, 20 } }, { "random-10", "random", 10, { 1.5, 15 } } };
    const std::vector<AblationCurve> curves = ablationCurves(a, 1);
    QCOMPARE(curves.size(), std::size_t(2));
    QCOMPARE(curves[0].ranking, std::string("pooled"));
    QCOMPARE(curves[0].removed, (std::vector<double> { 10, 100 }));
    QCOMPARE(curves[0].nll, (std::vector<double> { 20, 30 }));
    QCOMPARE(curves[1].nll, (std::vector<double> { 15 }));
    QCOMPARE(ablationFullLoss(a, 1), 10.0);
    QVERIFY(ablationCurves(a, 2).empty());
    a.variants.erase(a.variants.begin() + 1);
    QVERIFY(std::isnan(ablationFullLoss(a, 0)));
}

void TstFisherViews::atlasWithoutFisher()
{
    const auto plain = loadAtlasSnapshot(m_plain);
    QVERIFY(!plain->fisher && !plain->fisherAblation && !plain->fisherUnits);
    QVERIFY(plain->fisherNote.contains(QStringLiteral("moeatlas fisher")));
    for (const HeatmapQuantity& q : heatmapQuantities(*plain))
        QVERIFY(q.kind != HeatmapQuantity::Kind::Fisher);
    QCOMPARE(plain->scores.count("fisher_mask"), std::size_t(0));
    QVERIFY(m_snapshot->scores.count("fisher_mask") && m_snapshot->scores.count("fisher_grad_abs"));
    QCOMPARE(m_snapshot->scores.count("activation") + m_snapshot->scores.count("fisher_activation"), std::size_t(0));
    FisherView view;
    view.setSnapshot(plain);
    QVERIFY(!view.hasFisher());
    QCOMPARE(view.noteText(), plain->fisherNote);
    QVERIFY(view.concentrationChart()->series().isEmpty());
    QVERIFY(view.ablationChart()->series().isEmpty());
    QCOMPARE(view.ablationModel()->rowCount(), 0);
}

void TstFisherViews::mainWindowTab()
{
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    w.resize(1200, 800);
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    QVERIFY(w.openAtlasBlocking(m_atlas));
    QVERIFY(w.fisherView()->hasFisher());
    QVERIFY(w.fisherAction()->isEnabled());
    int tab = -1;
    for (int i = 0; i < w.tabs()->count(); ++i)
        if (w.tabs()->widget(i) == w.fisherView())
            tab = i;
    QVERIFY(tab >= 0);
    QCOMPARE(w.tabs()->tabText(tab), QStringLiteral("&Fisher"));
    // Colour the heatmap by expert-level Fisher, then click a cell: the profile follows.
    w.quantityCombo()->setCurrentText(QStringLiteral("fisher_mask"));
    QCOMPARE(w.heatmapModel()->heatmap().quantity, QStringLiteral("fisher_mask"));
    QCOMPARE(w.domainCombo()->count(), 3);
    QCOMPARE(w.domainCombo()->currentText(), QStringLiteral("pooled"));
    QTest::mouseClick(w.heatmapView(), Qt::LeftButton, {}, w.heatmapView()->cellCenter(1, 6));
    QCOMPARE(w.fisherView()->profileLayer(), 1);
    QCOMPARE(w.fisherView()->profileExpert(), 6);
    // Exports follow the tab: the ablation table as CSV, the tab as an image.
    w.tabs()->setCurrentIndex(tab);
    const QString csv = m_dir.filePath(QStringLiteral("ablation.csv"));
    QVERIFY(w.exportTableCsv(csv));
    QFile file(csv);
    QVERIFY(file.open(QIODevice::ReadOnly));
    QVERIFY(file.readLine().startsWith("variant,ranking,removed,domain"));
    QVERIFY(w.exportCurrentView(m_dir.filePath(QStringLiteral("fisher.png"))));
    QVERIFY(!QImage(m_dir.filePath(QStringLiteral("fisher.png"))).isNull());
}

QTEST_MAIN(TstFisherViews)
#include "tst_fisher_views.moc"
