// The /probmoe exact-k tables and the probmoe_marginal criterion written by scoreAtlasFile: hand-computed
// values on a 3-token atlas, the invariants on a random one (marginals sum to k, k* as /statistics
// counts it), a plan built from the criterion, and a bad band refused before the atlas is touched.
// (The numpy reference of every array on random atlases is tst_metrics_numpy.)
#include "metrics/scores.h"
#include "metrics_fixture.h"
#include "plan/atlas_scores.h"
#include "plan/plan.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <numeric>
#include <optional>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

namespace {

std::string fileBytes(const fs::path& path)
{
    std::ifstream in(path, std::ios::binary);
    return { std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>() };
}

const AtlasArray& array(const AtlasResults& r, const char* name)
{
    const AtlasArray* a = r.find(name);
    if (a == nullptr)
        throw std::runtime_error(std::string("no array ") + name);
    return *a;
}

} // namespace

class TestProbMoe : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;
    fs::path file(const char* name) { return fs::path(m_dir.path().toStdString()) / name; }

    static void compareArray(const AtlasArray& a, const std::vector<double>& expected, double tol)
    {
        QCOMPARE(a.values.size(), expected.size());
        for (size_t i = 0; i < expected.size(); ++i)
            QVERIFY2(std::fabs(a.values[i] - expected[i]) <= tol,
                qPrintable(QStringLiteral("%1[%2]: %3 vs %4")
                               .arg(QString::fromStdString(a.name))
                               .arg(i)
                               .arg(a.values[i], 0, 'g', 12)
                               .arg(expected[i], 0, 'g', 12)));
    }

private Q_SLOTS:
    void initTestCase() { QVERIFY(m_dir.isValid()); }

    // E = 4, k = 2, default band [max(1, k - 2), k] = [1, 2]. Domain a: t0, t1; domain b: t2.
    // t0 and t2 have p = (0.8, 0.6, 0.4, 0.2) (METHODS.md section 5), i.e. odds w = (4, 3/2, 2/3, 1/4):
    //   e1 = 77/12, e2 = 6 + 8/3 + 1 + 1 + 3/8 + 1/6 = 269/24;
    //   mu_i = w_i e1(the others) / e2 = (4 * 29/12, 3/2 * 59/12, 2/3 * 23/4, 1/4 * 37/6) / e2
    //        = (232, 177, 92, 37) / 269;
    //   P({0,1}) = 6 / e2 = 144/269, P({1,2}) = 1 / e2 = 24/269;
    //   cardinality over [1, 2]: e1 / (e1 + e2) = 154/423, 269/423; k* = clamp(2 positive, 1, 2) = 2.
    // t1 has all logits 0 (p = 1/2): mu = 1/2 each, P({2,3}) = 1/6, cardinality (4, 6) / 10, k* = 1.
    void handComputed()
    {
        TinyAtlasSpec s;
        s.domainNames = { "a", "b" };
        s.domainIds = { 0, 0, 1 };
        const float l8 = std::log(4.0f), l6 = std::log(1.5f);
        s.logits = { { l8, l6, -l6, -l8, 0, 0, 0, 0, l8, l6, -l6, -l8 } };
        s.ids = { { 0, 1, 2, 3, 1, 2 } };
        s.weights = { std::vector<float>(6, 0.5f) };
        const fs::path path = file("hand.atlas.h5");
        writeTinyAtlas(path, s);
        const ScoreRunReport report = scoreAtlasFile(path, {}, {});
        QVERIFY(std::find(report.written.begin(), report.written.end(), "probmoe") != report.written.end());
        QVERIFY(
            std::find(report.written.begin(), report.written.end(), "scores/probmoe_marginal") != report.written.end());
        const AtlasFile atlas = AtlasFile::openReadOnly(path);
        const auto pm = atlas.readResults("probmoe");
        const auto crit = atlas.readResults("scores/probmoe_marginal");
        QVERIFY(pm && crit);

        const std::vector<double> mu { 232.0 / 269, 177.0 / 269, 92.0 / 269, 37.0 / 269 };
        std::vector<double> marginal;
        marginal.reserve(12);
        for (double m : mu) // domain a
            marginal.push_back((m + 0.5) / 2);
        marginal.insert(marginal.end(), mu.begin(), mu.end()); // domain b
        for (double m : mu) // pooled
            marginal.push_back((2 * m + 0.5) / 3);
        // Stored logits are floats: log 4 and log 1.5 carry a relative rounding of ~6e-8.
        const double tol = 1e-6;
        compareArray(array(*pm, "marginal_mean"), marginal, tol);
        compareArray(array(*crit, "value"), marginal, tol);
        const double pa = 144.0 / 269, pb = 24.0 / 269;
        compareArray(array(*pm, "topk_prob"), { (pa + 1.0 / 6) / 2, pb, (pa + 1.0 / 6 + pb) / 3 }, tol);
        compareArray(array(*pm, "topk_log_prob"),
            { (std::log(pa) + std::log(1.0 / 6)) / 2, std::log(pb),
                (std::log(pa) + std::log(1.0 / 6) + std::log(pb)) / 3 },
            tol);
        const double c1 = 154.0 / 423, c2 = 269.0 / 423;
        compareArray(array(*pm, "cardinality"),
            { (c1 + 0.4) / 2, (c2 + 0.6) / 2, c1, c2, (2 * c1 + 0.4) / 3, (2 * c2 + 0.6) / 3 }, tol);
        const double h0 = -(c1 * std::log(c1) + c2 * std::log(c2)), h1 = -(0.4 * std::log(0.4) + 0.6 * std::log(0.6));
        compareArray(array(*pm, "cardinality_entropy"), { (h0 + h1) / 2, h0, (2 * h0 + h1) / 3 }, tol);
        compareArray(array(*pm, "kstar_mean"), { 1.5, 2.0, 5.0 / 3 }, 0.0);
        compareArray(array(*pm, "token_counts"), { 2, 1 }, 0.0);
        compareArray(array(*pm, "kstar_sums"), { 3, 2 }, 0.0);
        compareArray(array(*pm, "log_space_tokens"), { 0, 0 }, 0.0);
        QCOMPARE(array(*pm, "cardinality").dims, (std::vector<uint64_t> { 3, 1, 2 }));
        QCOMPARE(array(*pm, "marginal_sums").dims, (std::vector<uint64_t> { 2, 1, 4 }));
        QVERIFY(pm->paramsJson.find("\"band\":[1,2]") != std::string::npos);
        QVERIFY(pm->paramsJson.find("\"k\":2") != std::string::npos);
        QVERIFY(pm->paramsJson.find("sigmoid(raw router logit)") != std::string::npos);
    }

    // Marginals sum to k per token, hence their token means per (row, layer) too; the cardinality
    // distribution sums to 1; k* agrees with /statistics' dynamic-k histogram (counted elsewhere).
    void invariants()
    {
        const fs::path path = file("random.atlas.h5");
        writeTinyAtlas(path, randomAtlas(21, 9, 33, 16, 4, 3, 3, false));
        ScoreParams p;
        p.bandMin = 2;
        p.bandMax = 6;
        p.blockTokens = 50;
        scoreAtlasFile(path, p, {});
        const AtlasFile atlas = AtlasFile::openReadOnly(path);
        const auto pm = atlas.readResults("probmoe");
        const auto crit = atlas.readResults("scores/probmoe_marginal");
        const auto stats = atlas.readResults("statistics");
        QVERIFY(pm && crit && stats);
        const AtlasArray& value = array(*crit, "value");
        QCOMPARE(value.dims, (std::vector<uint64_t> { 4, 3, 16 }));
        for (size_t row = 0; row < size_t { 12 }; ++row) {
            const double sum = std::accumulate(value.values.begin() + static_cast<std::ptrdiff_t>(row * 16),
                value.values.begin() + static_cast<std::ptrdiff_t>((row + 1) * 16), 0.0);
            QVERIFY2(std::fabs(sum - 4.0) < 1e-12, qPrintable(QString::number(sum, 'g', 17)));
            const AtlasArray& card = array(*pm, "cardinality");
            const double total = std::accumulate(card.values.begin() + static_cast<std::ptrdiff_t>(row * 5),
                card.values.begin() + static_cast<std::ptrdiff_t>((row + 1) * 5), 0.0);
            QVERIFY(std::fabs(total - 1.0) < 1e-12);
        }
        QCOMPARE(array(*pm, "marginal_mean").values, value.values);
        compareArray(array(*pm, "kstar_mean"), array(*stats, "dynamic_k_mean").values, 1e-12);
        compareArray(array(*pm, "token_counts"), array(*stats, "token_counts").values, 0.0);
        for (double v : array(*pm, "topk_prob").values)
            QVERIFY(v > 0.0 && v < 1.0);
    }

    // A plan ranked by probmoe_marginal, through the reader `moeatlas plan` uses: a valid plan that
    // keeps each layer's top experts by the stored value.
    void planFromCriterion()
    {
        const fs::path path = file("plan.atlas.h5");
        writeTinyAtlas(path, randomAtlas(22, 6, 20, 8, 2, 2, 2, false));
        ScoreRunOptions options;
        options.criteria = { "probmoe_marginal" };
        scoreAtlasFile(path, {}, options);
        const AtlasScores scores = readAtlasScores(path, "probmoe_marginal");
        QCOMPARE(scores.source, std::string("/scores/probmoe_marginal"));
        QCOMPARE(scores.domains.size(), size_t { 2 });
        PlanContext ctx;
        ctx.topK = 2;
        ctx.numLayers = 4;
        ctx.costs.fixedBytes = 1000;
        ctx.costs.fixedParams = 500;
        ctx.costs.expertBytes = { 100, 100 };
        ctx.costs.expertParams = { 50, 50 };
        ctx.costs.activeParamsBefore = 800;
        ctx.costs.routerRowParams = 2;
        const Budget budget { BudgetScope::Uniform, BudgetUnit::Experts, 3, 0 };
        const Plan plan = compileSpecialist(scores.domains, "domain1", budget, ctx);
        const Plan back = planFromJson(planToJson(plan), "probmoe plan"); // validates the plan
        QCOMPARE(back.criterion, std::string("probmoe_marginal"));
        QCOMPARE(back.keep, plan.keep);
        const AtlasFile atlas = AtlasFile::openReadOnly(path);
        // Kept in a local: a reference into the temporary optional would dangle (found by the asan run).
        const std::optional<AtlasResults> stored = atlas.readResults("scores/probmoe_marginal");
        QVERIFY(stored.has_value());
        const std::vector<double>& v = array(*stored, "value").values;
        for (size_t l = 0; l < 2; ++l) {
            const double* row = v.data() + (size_t { 2 } + l) * 8; // domain1 (row 1 of 2 layers), layer l
            std::vector<int> order(8);
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
            std::vector<int> top(order.begin(), order.begin() + 3);
            std::sort(top.begin(), top.end());
            QCOMPARE(plan.keep[l], top);
        }
        const Plan pooled = compilePooledGeneralist(scores.domains, scores.pooled, budget, ctx);
        QCOMPARE(planFromJson(planToJson(pooled), "pooled plan").keep.size(), size_t { 2 });
    }

    void badBand_data() // NOLINT(readability-identifier-naming): QtTest's name for the rows of badBand
    {
        QTest::addColumn<int>("bandMin");
        QTest::addColumn<int>("bandMax");
        QTest::addColumn<QString>("named");
        QTest::newRow("min below 1") << 0 << 2 << QStringLiteral("band -1:2");
        QTest::newRow("min above max") << 3 << 2 << QStringLiteral("band 3:2");
        QTest::newRow("max above E") << 1 << 9 << QStringLiteral("band 1:9");
    }

    // Refused before anything is read or written: RequestError on field "band" naming the values and
    // the range; the atlas's bytes stay as they were and no update file is left beside it.
    void badBand()
    {
        QFETCH(int, bandMin);
        QFETCH(int, bandMax);
        QFETCH(QString, named);
        QTemporaryDir dir;
        const fs::path path = fs::path(dir.path().toStdString()) / "bad.atlas.h5";
        writeTinyAtlas(path, randomAtlas(23, 2, 10, 8, 2, 1, 1, false));
        const std::string before = fileBytes(path);
        ScoreParams p;
        p.bandMin = bandMin == 0 ? -1 : bandMin; // 0 means "default"
        p.bandMax = bandMax;
        try {
            scoreAtlasFile(path, p, {});
            QFAIL("a bad band was accepted");
        } catch (const RequestError& e) {
            QCOMPARE(e.field(), std::string("band"));
            const std::string what = e.what();
            QVERIFY2(what.find(named.toStdString()) != std::string::npos, e.what());
            QVERIFY2(what.find("1 <= min <= max <= 8") != std::string::npos, e.what());
        }
        QVERIFY(fileBytes(path) == before);
        QCOMPARE(std::distance(fs::directory_iterator(dir.path().toStdString()), fs::directory_iterator {}), 1);
    }
};

QTEST_GUILESS_MAIN(TestProbMoe)
#include "tst_probmoe.moc"
