// Splitting one calibration set into two atlases and merging them gives the scores of the
// unsplit atlas (to 1e-12 relative); accumulators of the parts add up to the whole's.
#include "metrics/merge.h"
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

// Merged and unsplit scores are float64 sums of the same per-token terms, in another order: they differ
// by rounding alone (~1e-16 per term), on any CPU, so 1e-12 relative.
bool closeTo(const std::vector<double>& a, const std::vector<double>& b, std::string* why)
{
    if (a.size() != b.size()) {
        *why = "sizes differ";
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i)
        if (std::fabs(a[i] - b[i]) > 1e-12 * std::max(std::fabs(a[i]), std::fabs(b[i])) + 1e-300) {
            *why = "index " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
            return false;
        }
    return true;
}

// Domain ids of `s` renumbered so its domain list is in a different order (merge must
// match domains by name).
TinyAtlasSpec reorderDomains(TinyAtlasSpec s)
{
    const int n = static_cast<int>(s.domainNames.size());
    std::vector<std::string> names(s.domainNames.size());
    for (int d = 0; d < n; ++d)
        names[static_cast<size_t>((d + 1) % n)] = s.domainNames[static_cast<size_t>(d)];
    for (int16_t& id : s.domainIds)
        id = static_cast<int16_t>((id + 1) % n);
    s.domainNames = names;
    return s;
}

} // namespace

class TestMerge : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;
    fs::path file(const char* name) { return fs::path(m_dir.path().toStdString()) / name; }

private Q_SLOTS:
    void mergedEqualsUnsplit()
    {
        const TinyAtlasSpec whole = randomAtlas(5, 10, 37, 16, 4, 3, 3, true);
        writeTinyAtlas(file("whole.h5"), whole);
        writeTinyAtlas(file("a.h5"), sliceSequences(whole, 0, 4));
        writeTinyAtlas(file("b.h5"), reorderDomains(sliceSequences(whole, 4, 10)));
        const MergeReport report = mergeAtlases({ file("a.h5"), file("b.h5") }, file("all.h5"));
        QCOMPARE(report.numTokens, whole.numTokens());
        QCOMPARE(report.numDomains, 3);

        scoreAtlasFile(file("whole.h5"), {}, {});
        scoreAtlasFile(file("all.h5"), {}, {});
        AtlasFile w = AtlasFile::openReadOnly(file("whole.h5"));
        AtlasFile m = AtlasFile::openReadOnly(file("all.h5"));
        QCOMPARE(m.tokens(), w.tokens());
        QCOMPARE(m.domainIds(), w.domainIds());
        QCOMPARE(m.seqOffsets(), w.seqOffsets());
        QCOMPARE(m.calibration().domains.size(), size_t { 3 });
        for (size_t d = 0; d < 3; ++d) {
            QCOMPARE(m.calibration().domains[d].name, w.calibration().domains[d].name);
            QCOMPARE(m.calibration().domains[d].numTokens, w.calibration().domains[d].numTokens);
        }
        QCOMPARE(atlasFingerprint(m), atlasFingerprint(w)); // same inputs, same hashes
        std::vector<std::string> groups { "statistics", "probmoe" };
        for (const std::string& c : allCriteria())
            groups.push_back("scores/" + c);
        int arrays = 0;
        for (const std::string& g : groups) {
            const auto a = w.readResults(g), b = m.readResults(g);
            QVERIFY2(a && b, g.c_str());
            QCOMPARE(b->inputsHash, a->inputsHash);
            for (const AtlasArray& x : a->arrays) {
                const AtlasArray* y = b->find(x.name);
                QVERIFY(y != nullptr);
                QCOMPARE(y->dims, x.dims);
                std::string why;
                QVERIFY2(closeTo(x.values, y->values, &why), (g + "/" + x.name + ": " + why).c_str());
                ++arrays;
            }
        }
        QVERIFY(arrays > 55);
    }

    void accumulatorsAdd()
    {
        const TinyAtlasSpec whole = randomAtlas(6, 6, 29, 8, 2, 2, 2, true);
        writeTinyAtlas(file("w2.h5"), whole);
        writeTinyAtlas(file("a2.h5"), sliceSequences(whole, 0, 3));
        writeTinyAtlas(file("b2.h5"), sliceSequences(whole, 3, 6));
        auto acc = [&](const char* name) { return accumulateScores(AtlasFile::openReadOnly(file(name)), {}); };
        ScoreAccumulator sum = acc("a2.h5");
        sum += acc("b2.h5");
        const ScoreAccumulator all = acc("w2.h5");
        std::string why;
        for (auto member :
            { &ScoreAccumulator::tokens, &ScoreAccumulator::peuTopProbSum, &ScoreAccumulator::selectCount,
                &ScoreAccumulator::softMassSum, &ScoreAccumulator::actLogitSum, &ScoreAccumulator::allLogitSum,
                &ScoreAccumulator::gatedNormSum, &ScoreAccumulator::normSum, &ScoreAccumulator::entropySum,
                &ScoreAccumulator::m99Hist, &ScoreAccumulator::coactivation, &ScoreAccumulator::dynamicKHist })
            QVERIFY2(closeTo(sum.*member, all.*member, &why), why.c_str());
        QCOMPARE(sum.patterns, all.patterns);
        QCOMPARE(sum.probmoe.size(), all.probmoe.size());
        for (size_t i = 0; i < all.probmoe.size(); ++i) {
            const ExactKSums &x = sum.probmoe[i], &y = all.probmoe[i];
            QVERIFY2(closeTo(x.marginal, y.marginal, &why), why.c_str());
            QVERIFY2(closeTo(x.cardinality, y.cardinality, &why), why.c_str());
            QVERIFY2(closeTo({ x.tokens, x.entropy, x.kStar, x.subsetProb, x.subsetLogProb, x.logSpaceTokens },
                         { y.tokens, y.entropy, y.kStar, y.subsetProb, y.subsetLogProb, y.logSpaceTokens }, &why),
                why.c_str());
        }
    }

    void refusesAnotherModel()
    {
        TinyAtlasSpec other = randomAtlas(7, 2, 10, 16, 4, 3, 3, true);
        other.configSha = std::string(64, 'f');
        writeTinyAtlas(file("other.h5"), other);
        writeTinyAtlas(file("one.h5"), randomAtlas(8, 2, 10, 16, 4, 3, 3, true));
        try {
            mergeAtlases({ file("one.h5"), file("other.h5") }, file("bad.h5"));
            QFAIL("merge of different models succeeded");
        } catch (const InputError& e) {
            QVERIFY2(std::string(e.what()).find("different models") != std::string::npos, e.what());
        }
        QVERIFY(!fs::exists(file("bad.h5")));
    }
};

QTEST_GUILESS_MAIN(TestMerge)
#include "tst_merge.moc"
