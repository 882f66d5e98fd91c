// RoutingStatsView on a real scored atlas: for every domain row (and pooled) and every MoE layer,
// the load-share bars, the per-layer lines, the dynamic-k bars, the specialisation bars and the
// co-activation cells (values and pixels) equal the /statistics arrays read independently from
// the atlas; an unscored atlas says to run score; saveImage writes a real PNG and SVG.
#include "charts/coactivation_map.h"
#include "charts/routing_stats.h"
#include "tst_charts_fixture.h"

#include <nlohmann/json.hpp>

#include <QBarSeries>
#include <QBarSet>
#include <QChart>
#include <QComboBox>
#include <QFile>
#include <QImage>
#include <QLineSeries>
#include <QTemporaryDir>
#include <QTest>

#include <set>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

std::vector<double> barValues(QChart* chart, const QString& set)
{
    std::vector<double> out;
    for (QAbstractSeries* s : chart->series())
        if (auto* bars = qobject_cast<QBarSeries*>(s))
            for (QBarSet* b : bars->barSets())
                if (b->label() == set)
                    for (int i = 0; i < b->count(); ++i)
                        out.push_back(b->at(i));
    return out;
}

QLineSeries* line(QChart* chart, const QString& name)
{
    for (QAbstractSeries* s : chart->series())
        if (s->name() == name)
            return qobject_cast<QLineSeries*>(s);
    return nullptr;
}

} // namespace

class TstChartsRouting : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void chartsEqualTheStatistics_data();
    void chartsEqualTheStatistics();
    void selectorsDriveTheView();
    void unscoredAtlasSaysWhy();
    void saveImage();

private:
    const AtlasArray& array(const char* name) const { return *m_stats.find(name); }

    QTemporaryDir m_dir;
    test::AtlasFixture m_f;
    AtlasResults m_stats;
    int m_D = 0, m_L = 0, m_E = 0;
};

void TstChartsRouting::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    QVERIFY(test::buildAtlas(m_dir.path(), m_f, /*evaluate=*/false));
    const AtlasFile atlas = AtlasFile::openReadOnly(m_f.atlas.toStdString());
    const auto stats = atlas.readResults("statistics");
    QVERIFY(stats.has_value());
    m_stats = *stats;
    m_D = static_cast<int>(atlas.calibration().domains.size());
    m_L = static_cast<int>(atlas.model().moeLayers.size());
    m_E = atlas.model().numExperts;
    QCOMPARE(m_D, 2);
    QCOMPARE(m_L, 2);
    QCOMPARE(m_E, 8);
    for (const char* name : { "load_share", "load_cv", "load_entropy", "token_entropy", "m99_mean", "dynamic_k_hist",
             "specialisation", "coactivation" })
        QVERIFY2(m_stats.find(name), name);
}

void TstChartsRouting::chartsEqualTheStatistics_data()
{
    QTest::addColumn<int>("row");
    QTest::addColumn<int>("layer");
    for (int row = 0; row <= 2; ++row)
        for (int layer = 0; layer < 2; ++layer)
            QTest::addRow("row %d layer %d", row, layer) << row << layer;
}

void TstChartsRouting::chartsEqualTheStatistics()
{
    QFETCH(int, row);
    QFETCH(int, layer);
    const std::size_t D = static_cast<std::size_t>(m_D), L = static_cast<std::size_t>(m_L),
                      E = static_cast<std::size_t>(m_E), r = static_cast<std::size_t>(row),
                      l = static_cast<std::size_t>(layer);
    const AtlasFile atlas = AtlasFile::openReadOnly(m_f.atlas.toStdString());
    RoutingStatsView view;
    view.setAtlas(atlas);
    QVERIFY2(view.hasStatistics(), qPrintable(view.errorText()));
    QCOMPARE(view.domainRow(), m_D); // pooled first
    view.setDomainRow(row);
    view.setLayerIndex(layer);
    QCOMPARE(view.domainRow(), row);
    QCOMPARE(view.layerIndex(), layer);

    // Load share [D+1, L, E] at (row, layer).
    const std::vector<double> load = barValues(view.loadShareChart(), QStringLiteral("load share"));
    QCOMPARE(load.size(), E);
    for (std::size_t e = 0; e < E; ++e)
        QCOMPARE(load[e], array("load_share").values[(r * L + l) * E + e]);

    // Per-layer lines [D+1, L], x = decoder layer index.
    const std::vector<int>& layers = atlas.model().moeLayers;
    for (const auto& [name, key] : { std::pair { "load CV", "load_cv" }, std::pair { "load entropy", "load_entropy" },
             std::pair { "token entropy", "token_entropy" }, std::pair { "m99", "m99_mean" } }) {
        QLineSeries* s = line(view.layerStatsChart(), QString::fromLatin1(name));
        QVERIFY2(s, name);
        QCOMPARE(s->count(), m_L);
        for (std::size_t i = 0; i < L; ++i) {
            QCOMPARE(s->at(static_cast<int>(i)).x(), static_cast<double>(layers[i]));
            QCOMPARE(s->at(static_cast<int>(i)).y(), array(key).values[r * L + i]);
        }
    }

    // Dynamic k [D, L, B]; pooled = the sum over domains (counts).
    const AtlasArray& hist = array("dynamic_k_hist");
    const std::size_t B = hist.dims[2];
    const std::vector<double> dynk = barValues(view.dynamicKChart(), QStringLiteral("tokens"));
    QCOMPARE(dynk.size(), B);
    double total = 0;
    for (std::size_t b = 0; b < B; ++b) {
        double expected = 0;
        for (std::size_t d = 0; d < D; ++d)
            if (row == m_D || d == r)
                expected += hist.values[(d * L + l) * B + b];
        QCOMPARE(dynk[b], expected);
        total += expected;
    }
    QVERIFY(total > 0);
    // Bin labels: the band from the statistics params.
    const nlohmann::json params = nlohmann::json::parse(m_stats.paramsJson);
    QCOMPARE(view.statistics().bandMin, params["dynamic_k_band"][0].get<int>());

    // Specialisation [D, L, E]: one bar set per domain, whatever the row.
    for (std::size_t d = 0; d < D; ++d) {
        const QString name = QString::fromStdString(atlas.calibration().domains[d].name);
        const std::vector<double> spec = barValues(view.specialisationChart(), name);
        QCOMPARE(spec.size(), E);
        for (std::size_t e = 0; e < E; ++e)
            QCOMPARE(spec[e], array("specialisation").values[(d * L + l) * E + e]);
    }

    // Co-activation [L, E, E] (pooled): values and their pixels.
    CoactivationMap* map = view.coactivationMap();
    QCOMPARE(map->matrixSize(), m_E);
    double max = 0;
    for (std::size_t i = 0; i < E; ++i)
        for (std::size_t j = 0; j < E; ++j) {
            const double v = array("coactivation").values[(l * E + i) * E + j];
            QCOMPARE(map->value(static_cast<int>(i), static_cast<int>(j)), v);
            if (i != j)
                max = std::max(max, v);
        }
    QVERIFY(max > 0);
    QCOMPARE(map->scaleMax(), max);
    for (std::size_t i = 0; i < E; ++i)
        for (std::size_t j = 0; j < E; ++j) {
            const QRgb expected = i == j
                ? CoactivationMap::diagonalColor()
                : CoactivationMap::colorFor(array("coactivation").values[(l * E + i) * E + j], max);
            QCOMPARE(map->image().pixel(static_cast<int>(j), static_cast<int>(i)), expected);
        }
}

void TstChartsRouting::selectorsDriveTheView()
{
    const AtlasFile atlas = AtlasFile::openReadOnly(m_f.atlas.toStdString());
    RoutingStatsView view;
    view.setAtlas(atlas);
    const QList<QComboBox*> boxes = view.findChildren<QComboBox*>();
    QCOMPARE(boxes.size(), 2);
    QComboBox* domains = boxes[0];
    QComboBox* layers = boxes[1];
    QCOMPARE(domains->count(), m_D + 1);
    QCOMPARE(domains->itemText(0), QStringLiteral("math"));
    QCOMPARE(layers->count(), m_L);
    domains->setCurrentIndex(1);
    layers->setCurrentIndex(1);
    QCOMPARE(view.domainRow(), 1);
    QCOMPARE(view.layerIndex(), 1);
    const std::vector<double> load = barValues(view.loadShareChart(), QStringLiteral("load share"));
    QCOMPARE(load[0], array("load_share").values[(1 * 2 + 1) * 8 + 0]);
    // Rebuilds replace series and keep the axes.
    QCOMPARE(view.loadShareChart()->series().size(), 1);
    QCOMPARE(view.loadShareChart()->axes().size(), 2);
    QCOMPARE(view.layerStatsChart()->axes().size(), 3);
    QCOMPARE(view.layerStatsChart()->series().size(), 4);
    // Colour scale ends.
    QCOMPARE(CoactivationMap::colorFor(0, 1), qRgb(255, 255, 255));
    QCOMPARE(CoactivationMap::colorFor(1, 1), qRgb(8, 48, 107));
    QCOMPARE(CoactivationMap::colorFor(2, 1), qRgb(8, 48, 107));
    QCOMPARE(CoactivationMap::colorFor(0.5, 0), qRgb(255, 255, 255));
}

void TstChartsRouting::unscoredAtlasSaysWhy()
{
    const QString plain = m_dir.filePath(QStringLiteral("plain.atlas.h5"));
    QCOMPARE(test::runMoeatlas(test::captureArgs(m_f, plain)).exitCode, 0);
    RoutingStatsView view;
    view.setAtlas(AtlasFile::openReadOnly(m_f.atlas.toStdString()));
    QVERIFY(view.hasStatistics());
    view.setAtlas(AtlasFile::openReadOnly(plain.toStdString()));
    QVERIFY(!view.hasStatistics());
    QVERIFY2(view.errorText().contains(QStringLiteral("score")) && view.errorText().contains(QStringLiteral("plain")),
        qPrintable(view.errorText()));
    QVERIFY(view.loadShareChart()->series().isEmpty());
    QCOMPARE(view.coactivationMap()->matrixSize(), 0);
}

void TstChartsRouting::saveImage()
{
    RoutingStatsView view;
    view.setAtlas(AtlasFile::openReadOnly(m_f.atlas.toStdString()));
    view.resize(1200, 800);
    view.show();
    QVERIFY(QTest::qWaitForWindowExposed(&view));
    const QString png = m_dir.filePath(QStringLiteral("routing.png"));
    const QString svg = m_dir.filePath(QStringLiteral("routing.svg"));
    QVERIFY(view.saveImage(png));
    QVERIFY(view.saveImage(svg));
    const QImage image(png);
    QVERIFY(!image.isNull());
    QVERIFY(image.width() >= 1200 && image.height() >= 800);
    std::set<QRgb> colours;
    for (int y = 0; y < image.height(); y += 3)
        for (int x = 0; x < image.width(); x += 3)
            colours.insert(image.pixel(x, y));
    QVERIFY2(colours.size() > 20, qPrintable(QString::number(colours.size())));
    QFile file(svg);
    QVERIFY(file.open(QIODevice::ReadOnly));
    const QByteArray text = file.readAll();
    QVERIFY(text.contains("<svg"));
    QVERIFY(text.contains("Load share per expert"));
    QVERIFY(text.contains("<image")); // the co-activation heatmap

    // Saved right after a switch, with no event loop in between: only the new charts.
    view.setLayerIndex(1);
    QVERIFY(view.saveImage(svg));
    QFile again(svg);
    QVERIFY(again.open(QIODevice::ReadOnly));
    const QByteArray switched = again.readAll();
    QVERIFY(switched.contains("Load share per expert, layer 1"));
    QVERIFY(!switched.contains("Load share per expert, layer 0"));
}

QTEST_MAIN(TstChartsRouting)
#include "tst_charts_routing.moc"
