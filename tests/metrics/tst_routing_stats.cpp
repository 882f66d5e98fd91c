// Routing statistics on the 4-token atlas of tst_peu, against values worked out by hand.
#include "metrics/scores.h"
#include "metrics_fixture.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

namespace {

// E = 4, k = 2, one layer. Domain a: t0..t2, domain b: t3 (logits as in tst_peu).
// Recorded top-2: t0 {0,1}, t1 {0,1}, t2 {2,0}, t3 {0,1}.

double value(const AtlasResults& r, const char* name, size_t index)
{
    return r.find(name)->values.at(index);
}

// Statistics are double arithmetic on the atlas's fp32 logits (no BLAS, no threads): they differ from
// the hand values (given to 10+ digits) by rounding alone, whatever the CPU. The values are O(1-4), so
// the absolute 1e-9 is relative to them.
#define NEAR(got, want)                                                                                                \
    QVERIFY2(std::fabs((got) - (want)) <= 1e-9,                                                                        \
        qPrintable(QStringLiteral("%1 vs %2").arg(got, 0, 'g', 12).arg(want, 0, 'g', 12)))

} // namespace

class TestRoutingStats : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;
    fs::path m_path;

    AtlasResults stats(const ScoreParams& p = {})
    {
        AtlasFile atlas = AtlasFile::openReadOnly(m_path);
        return statisticsResults(accumulateScores(atlas, p), "h");
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_path = fs::path(m_dir.path().toStdString()) / "hand.atlas.h5";
        writeTinyAtlas(m_path, handComputedSpec());
    }

    void load()
    {
        const AtlasResults r = stats();
        // Loads: a [3, 2, 1, 0] (6 slots), b [1, 1, 0, 0], pooled [4, 3, 1, 0].
        QCOMPARE(r.find("load_counts")->values, (std::vector<double> { 3, 2, 1, 0, 1, 1, 0, 0 }));
        QCOMPARE(r.find("token_counts")->values, (std::vector<double> { 3, 1 }));
        NEAR(value(r, "load_share", 1), 1.0 / 3);
        NEAR(value(r, "load_share", 8 + 1), 0.375);
        // a: f = [1/2, 1/3, 1/6, 0], mean 1/4, population std sqrt((2 (1/4)^2 + 2 (1/12)^2)/4)
        //    = 0.1863389981 -> CV 0.7453559925; MaxVio (1/2 - 1/4)/(1/4) = 1.
        NEAR(value(r, "load_cv", 0), 0.7453559924999299);
        NEAR(value(r, "load_cv", 1), 1.0); // b: f = [1/2, 1/2, 0, 0]
        NEAR(value(r, "load_cv", 2), 0.7905694150420949); // pooled: std 0.1976423538
        NEAR(value(r, "load_max_vio", 0), 1.0);
        NEAR(value(r, "load_max_vio", 2), 1.0);
        // Load entropy / ln 4: a -(1/2 ln 1/2 + 1/3 ln 1/3 + 1/6 ln 1/6)/ln 4; b ln 2 / ln 4.
        NEAR(value(r, "load_entropy", 0), 0.7295739585136223);
        NEAR(value(r, "load_entropy", 1), 0.5);
        NEAR(value(r, "load_entropy", 2), 0.7028195311147832);
    }

    void tokenEntropyAndM99()
    {
        const AtlasResults r = stats();
        // Softmax rows: t0 [.6439, .2369, .0871, .0321] H/ln4 = 0.6835034395;
        // t1 [.4863, .4863, .0242, .0033] 0.5843113299; t2 0.7360221232; t3 0.8396817539.
        NEAR(value(r, "token_entropy", 0), (0.6835034395 + 0.5843113299 + 0.7360221232) / 3);
        QVERIFY(std::fabs(value(r, "token_entropy", 1) - 0.8396817539) < 1e-9);
        // m99: t0 cum .6439 .8808 .9679 1 -> 4; t1 .4863 .9725 .9967 -> 3; t2 .5377 .8638
        // .9838 -> 4; t3 .3279 .6558 .9837 -> 4.
        NEAR(value(r, "m99_mean", 0), 11.0 / 3);
        NEAR(value(r, "m99_mean", 1), 4.0);
        NEAR(value(r, "m99_mean", 2), 15.0 / 4);
        QCOMPARE(r.find("m99_hist")->values, (std::vector<double> { 0, 0, 1, 2, 0, 0, 0, 1 }));
    }

    void patternsAndCoactivation()
    {
        const AtlasResults r = stats();
        // a: {0,1} twice, {0,2} once; b: {0,1}; pooled {0,1} x3, {0,2} x1.
        QCOMPARE(r.find("distinct_patterns")->values, (std::vector<double> { 2, 1, 2 }));
        NEAR(value(r, "pattern_entropy", 0), 0.6365141682948128);
        NEAR(value(r, "pattern_entropy", 1), 0.0);
        NEAR(value(r, "pattern_entropy", 2), 0.5623351446188083);
        // coact(i, j) = both / tokens with i: e0 in 4 tokens, e1 in 3, e2 in 1 (pooled).
        NEAR(value(r, "coactivation", 0 * 4 + 1), 0.75);
        NEAR(value(r, "coactivation", 1 * 4 + 0), 1.0);
        NEAR(value(r, "coactivation", 0 * 4 + 2), 0.25);
        NEAR(value(r, "coactivation", 2 * 4 + 0), 1.0);
        NEAR(value(r, "coactivation", 1 * 4 + 2), 0.0);
        NEAR(value(r, "coactivation", 0 * 4 + 0), 1.0);
        NEAR(value(r, "coactivation", 3 * 4 + 3), 0.0); // never routed: row left 0
    }

    void specialisation()
    {
        const AtlasResults r = stats();
        // (share of e's load from d) / (d's token share): a holds 3/4 of the tokens.
        NEAR(value(r, "specialisation", 0), (3.0 / 4) / (3.0 / 4)); // a, e0
        NEAR(value(r, "specialisation", 2), 1.0 / (3.0 / 4)); // a, e2: only a uses it
        NEAR(value(r, "specialisation", 3), 0.0); // e3 unused
        NEAR(value(r, "specialisation", 4 + 1), (1.0 / 3) / (1.0 / 4)); // b, e1
    }

    void dynamicK()
    {
        // Band defaults to [max(1, k-2), k] = [1, 2]. Positive logits: t0 2 -> k* 2; t1 0
        // (zeros are not positive) -> 1; t2 0 -> 1; t3 3 -> 2.
        AtlasResults r = stats();
        QCOMPARE(r.find("dynamic_k_hist")->values, (std::vector<double> { 2, 1, 0, 1 }));
        NEAR(value(r, "dynamic_k_mean", 0), 4.0 / 3);
        NEAR(value(r, "dynamic_k_fraction", 0), 2.0 / 3);
        NEAR(value(r, "dynamic_k_fraction", 1), 1.0);
        NEAR(value(r, "dynamic_k_mean", 2), 1.5);
        ScoreParams p;
        p.bandMin = 2; // band 2:3: t0 2, t1 2, t2 2, t3 3
        p.bandMax = 3;
        r = stats(p);
        NEAR(value(r, "dynamic_k_mean", 0), 2.0);
        NEAR(value(r, "dynamic_k_mean", 1), 3.0);
        NEAR(value(r, "dynamic_k_fraction", 2), 9.0 / 4 / 2);
        QVERIFY(r.paramsJson.find("\"dynamic_k_band\":[2,3]") != std::string::npos);
    }
};

QTEST_GUILESS_MAIN(TestRoutingStats)
#include "tst_routing_stats.moc"
