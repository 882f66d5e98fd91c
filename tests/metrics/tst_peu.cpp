// PEU (PreMoE, arXiv 2505.17639 v3) and the baseline criteria on a 4-token atlas whose values
// were worked out by hand (below), including ties, negative logits and the case of a selected
// expert with a negative logit next to a never-selected one.
#include "metrics/scores.h"
#include "metrics_fixture.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

namespace {

// E = 4, k = 2, one MoE layer; domain a = tokens 0..2, domain b = token 3.
//   t0 (a): s = [ 2,  1,  0,   -1]  pool {0, 1}; local p = [1/(1+e^-1), e^-1/(1+e^-1)]
//                                   = [0.7310585786, 0.2689414214]
//   t1 (a): s = [ 0,  0, -3,   -5]  tie: pool {0, 1}, p = [0.5, 0.5]
//   t2 (a): s = [-1, -2, -0.5, -4]  all negative: pool {2, 0}, p = [0.6224593312, 0.3775406688]
//   t3 (b): s = [ 3,  3,  3,    0]  three-way tie: pool keeps the lower ids {0, 1}, p = 0.5 each
// r_a = (0.7310585786 + 0.5 + 0.6224593312) / 3 = 0.6178393033; r_b = 0.5.
// Kept (p >= r): t0 expert 0 (s = 2), t2 expert 2 (s = -0.5); t1 none (0.5 < r_a);
// t3 experts 0 and 1 (0.5 >= 0.5: the tie is kept).
// f = max(s, sigmoid s): f(2) = 2, f(-0.5) = sigmoid(-0.5) = 0.3775406688, f(3) = 3.
//   PEU_a = [2/3, 0, 0.3775406688/3, 0] = [0.6666666667, 0, 0.1258468896, 0]
//   PEU_b = [3, 3, 0, 0]
//   pooled = (sums_a + sums_b) / 4 tokens = [1.25, 0.75, 0.0943851672, 0]
// Expert 2 (selected with a negative logit) ranks above never-selected experts 1 and 3 under
// max-sigmoid; under identity it scores -0.5/3 = -0.1666666667, below them.

// value[row, layer 0, expert] of a criterion's [D+1, L, E] array.
double at(const AtlasResults& r, const char* array, int row, int expert, int numExperts = 4)
{
    const AtlasArray* a = r.find(array);
    if (a == nullptr)
        return std::nan("");
    return a->values[static_cast<size_t>(row * numExperts + expert)];
}

// Scores are double arithmetic on the atlas's fp32 logits (no BLAS, no threads): they differ from the
// hand values by rounding alone, whatever the CPU; the values are O(1), so 1e-9 absolute is relative.
void compareRow(const AtlasResults& r, int row, std::initializer_list<double> want)
{
    int e = 0;
    for (double w : want) {
        const double got = at(r, "value", row, e);
        QVERIFY2(std::fabs(got - w) <= 1e-9,
            qPrintable(
                QStringLiteral("row %1 expert %2: %3 vs %4").arg(row).arg(e).arg(got, 0, 'g', 12).arg(w, 0, 'g', 12)));
        ++e;
    }
}

} // namespace

class TestPeu : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;
    fs::path m_path;

    ScoreAccumulator score(const ScoreParams& p = {})
    {
        AtlasFile atlas = AtlasFile::openReadOnly(m_path);
        return accumulateScores(atlas, p);
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_path = fs::path(m_dir.path().toStdString()) / "hand.atlas.h5";
        writeTinyAtlas(m_path, handComputedSpec());
    }

    void peuDefault()
    {
        const ScoreAccumulator acc = score();
        const AtlasResults r = criterionResults(acc, "peu", "h");
        compareRow(r, 0, { 2.0 / 3.0, 0.0, 0.1258468895993818, 0.0 });
        compareRow(r, 1, { 3.0, 3.0, 0.0, 0.0 });
        compareRow(r, 2, { 1.25, 0.75, 0.09438516719953635, 0.0 });
        QVERIFY(std::fabs(r.find("threshold")->values[0] - 0.6178393032772864) < 1e-12);
        QCOMPARE(r.find("threshold")->values[1], 0.5);
        // The selected-but-negative expert beats the never-selected ones.
        QVERIFY(at(r, "value", 0, 2) > at(r, "value", 0, 1));
        QVERIFY(at(r, "value", 0, 2) > at(r, "value", 0, 3));
        QVERIFY(r.paramsJson.find("\"transform\":\"max-sigmoid\"") != std::string::npos);
    }

    void peuTransforms()
    {
        ScoreParams p;
        p.peu.transform = PeuTransform::Identity; // e2: -0.5/3, below never-selected 0
        AtlasResults r = criterionResults(score(p), "peu", "h");
        compareRow(r, 0, { 2.0 / 3.0, 0.0, -0.5 / 3.0, 0.0 });
        QVERIFY(at(r, "value", 0, 2) < at(r, "value", 0, 3));
        p.peu.transform = PeuTransform::Sigmoid; // sigmoid(2) = 0.8807970780
        r = criterionResults(score(p), "peu", "h");
        compareRow(r, 0, { 0.8807970779778823 / 3, 0.0, 0.3775406687981454 / 3, 0.0 });
        p.peu.transform = PeuTransform::Exp; // e^2 = 7.3890560989, e^-0.5 = 0.6065306597
        r = criterionResults(score(p), "peu", "h");
        compareRow(r, 1, { std::exp(3.0), std::exp(3.0), 0.0, 0.0 });
        compareRow(r, 0, { 7.38905609893065 / 3, 0.0, 0.6065306597126334 / 3, 0.0 });
    }

    void peuPoolSize()
    {
        // K_a = 1: the pool is the top-1 alone, p = 1 >= r = 1 for every token, f(top logit).
        // a: t0 e0 f(2)=2, t1 e0 (tie -> lower id) f(0)=0.5, t2 e2 f(-0.5)=0.3775406688.
        ScoreParams p;
        p.peu.poolK = 1;
        const AtlasResults r = criterionResults(score(p), "peu", "h");
        compareRow(r, 0, { 2.5 / 3, 0.0, 0.3775406687981454 / 3, 0.0 });
        compareRow(r, 1, { 3.0, 0.0, 0.0, 0.0 });
        QVERIFY(r.paramsJson.find("\"pool_k\":1") != std::string::npos);
    }

    void baselines()
    {
        const ScoreAccumulator acc = score();
        // Frequency (recorded ids t0 {0,1}, t1 {0,1}, t2 {2,0}, t3 {0,1}).
        AtlasResults r = criterionResults(acc, "frequency", "h");
        compareRow(r, 0, { 1.0, 2.0 / 3, 1.0 / 3, 0.0 });
        compareRow(r, 2, { 1.0, 0.75, 0.25, 0.0 });
        // Act-Logits: pool logits only. a: e0 2+0-1, e1 1+0, e2 -0.5.
        r = criterionResults(acc, "act_logits", "h");
        compareRow(r, 0, { 1.0 / 3, 1.0 / 3, -0.5 / 3, 0.0 });
        compareRow(r, 1, { 3.0, 3.0, 0.0, 0.0 });
        // All-Logits: column means. a: e2 (0-3-0.5)/3, e3 (-1-5-4)/3.
        r = criterionResults(acc, "all_logits", "h");
        compareRow(r, 0, { 1.0 / 3, -1.0 / 3, -3.5 / 3, -10.0 / 3 });
        compareRow(r, 2, { 4.0 / 4, 2.0 / 4, -0.5 / 4, -10.0 / 4 });
        // Soft mass: mean full-softmax probability (per-token values in tst_routing_stats).
        r = criterionResults(acc, "soft_mass", "h");
        compareRow(r, 0, { 0.4854293424, 0.2810371898, 0.2163430117, 0.0171904561 });
        // REAP: mean of weight * norm over routed tokens; slot 0 = 0.75*2 = 1.5, slot 1 = 1.
        // a: e0 (1.5 + 1.5 + 1)/3, e1 (1 + 1)/2, e2 1.5, e3 never routed.
        r = criterionResults(acc, "reap", "h");
        compareRow(r, 0, { 4.0 / 3, 1.0, 1.5, 0.0 });
        compareRow(r, 2, { (4.0 + 1.5) / 4, 3.0 / 3, 1.5, 0.0 }); // b: t3 adds 1.5 to e0, 1 to e1
        // EAN: norms summed over routed tokens / domain tokens. a: e0 2+2+4, e1 4+4, e2 2.
        r = criterionResults(acc, "ean", "h");
        compareRow(r, 0, { 8.0 / 3, 8.0 / 3, 2.0 / 3, 0.0 });
        // Random: seeded, same for every row, different for another seed.
        r = criterionResults(acc, "random", "h");
        QCOMPARE(at(r, "value", 0, 1), at(r, "value", 2, 1));
        QVERIFY(at(r, "value", 0, 1) >= 0.0 && at(r, "value", 0, 1) < 1.0);
        ScoreParams p;
        p.seed = 7;
        QVERIFY(criterionResults(score(p), "random", "h").find("value")->values[1] != r.find("value")->values[1]);
    }

    void withoutNormsReapIsUnavailable()
    {
        TinyAtlasSpec s = handComputedSpec();
        s.norms.clear();
        const fs::path path = fs::path(m_dir.path().toStdString()) / "nonorms.atlas.h5";
        writeTinyAtlas(path, s);
        ScoreRunOptions options;
        const ScoreRunReport report = scoreAtlasFile(path, {}, options);
        QCOMPARE(report.skipped, (std::vector<std::string> { "reap", "ean" }));
        AtlasFile atlas = AtlasFile::openReadOnly(path);
        QVERIFY(!atlas.readResults("scores/reap"));
        QVERIFY(atlas.readResults("scores/peu"));
    }

    void scoreFileSkipsWhenUpToDate()
    {
        const fs::path path = fs::path(m_dir.path().toStdString()) / "file.atlas.h5";
        writeTinyAtlas(path, handComputedSpec());
        ScoreRunOptions options;
        ScoreRunReport report = scoreAtlasFile(path, {}, options);
        QVERIFY(!report.upToDate);
        QCOMPARE(report.written.size(), size_t { 11 }); // 9 criteria + statistics + probmoe
        report = scoreAtlasFile(path, {}, options);
        QVERIFY(report.upToDate);
        ScoreParams changed;
        changed.peu.transform = PeuTransform::Exp;
        QVERIFY(!scoreAtlasFile(path, changed, options).upToDate); // parameters changed
        options.force = true;
        QVERIFY(!scoreAtlasFile(path, changed, options).upToDate);
        AtlasFile atlas = AtlasFile::openReadOnly(path);
        const auto peu = atlas.readResults("scores/peu");
        QVERIFY(peu);
        QVERIFY(peu->paramsJson.find("\"exp\"") != std::string::npos);
        QCOMPARE(peu->find("value")->dims, (std::vector<uint64_t> { 3, 1, 4 }));
        QVERIFY(std::fabs(peu->find("value")->values[1 * 4 + 0] - std::exp(3.0)) < 1e-9);
        QVERIFY(!fs::exists(fs::path(path.string() + ".partial")));
        const auto groups = atlas.resultGroups("scores");
        QCOMPARE(groups.size(), size_t { 9 });
    }

    void badParameters()
    {
        ScoreParams p;
        p.peu.poolK = 5;
        try {
            score(p);
            QFAIL("K_a = 5 > E = 4 was accepted");
        } catch (const RequestError& e) {
            QCOMPARE(e.field(), std::string("poolK"));
            QVERIFY2(std::string(e.what()).find("K_a = 5 is outside [1, 4]") != std::string::npos, e.what());
        }
        QVERIFY_THROWS_EXCEPTION(InputError, parsePeuTransform("softplus"));
        QCOMPARE(parsePeuTransform("max-sigmoid"), PeuTransform::MaxSigmoid);
    }
};

QTEST_GUILESS_MAIN(TestPeu)
#include "tst_peu.moc"
