// The Fisher-MoE top-n unit ablation (core/fisher/fisher_ablation.h).
// Hand-computed: topUnits order and ties, randomUnits (distinct, seeded, uniform over units and over
// subsets), removalMask, ablationCounts, ablationVariants names and contents (rankings recomputed here
// with a stable sort). Demo model: runFisherAblation's per-domain losses equal Executor::evaluate with
// unit masks built here (on the masked full-width path, not the sliced one runFisherAblation takes);
// writeFisherAblation -> readFisherAblation through an atlas copy; malformed /fisher/ablation refused.
#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "fisher/fisher_ablation.h"
#include "runtime/executor.h"
#include "runtime/fisher.h"
#include "test_io.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <tuple>

using namespace moeatlas;

namespace {

using Unit = std::tuple<int, int, int>; // decoder layer, expert, unit

// Indices of a row by descending score, ties to the lower index (std::stable_sort).
std::vector<int64_t> ranking(std::span<const double> scores)
{
    std::vector<int64_t> idx(scores.size());
    std::iota(idx.begin(), idx.end(), int64_t { 0 });
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
        return scores[static_cast<std::size_t>(a)] > scores[static_cast<std::size_t>(b)];
    });
    return idx;
}

std::vector<int64_t> firstOf(const std::vector<int64_t>& v, int64_t n)
{
    return { v.begin(), v.begin() + std::min<int64_t>(n, static_cast<int64_t>(v.size())) };
}

// A hand-made grouped result: domains x, y; MoE layers 2 and 5; E = 2, I = 2 (8 units per row).
FisherResult smallResult()
{
    FisherResult r;
    r.groups = 2;
    r.groupSamples = { 1, 1 };
    r.groupTokens = { 5, 5 };
    r.samples = 2;
    r.tokens = 10;
    // x and y disagree on the order; a tie in y (units 1 and 6 of the row, both 0.5).
    const double x[] = { 0.1, 0.9, 0.3, 0.2, 0.8, 0.05, 0.7, 0.0 };
    const double y[] = { 0.6, 0.5, 0.1, 0.9, 0.2, 0.3, 0.5, 0.05 };
    for (int l = 0; l < 2; ++l) {
        FisherLayer f;
        f.layer = l == 0 ? 2 : 5;
        f.numExperts = 2;
        f.intermediate = 2;
        f.expertTokens = { 1, 1, 1, 1 };
        for (int g = 0; g < 2; ++g)
            for (int k = 0; k < 4; ++k)
                f.mask.push_back((g == 0 ? x : y)[l * 4 + k]);
        r.layers.push_back(f);
    }
    return r;
}

// The mask that keeps every unit of every MoE layer except `removed`, built unit by unit.
ExpertMask maskWithout(
    const std::string& name, const std::vector<int>& layers, int experts, int units, const std::set<Unit>& removed)
{
    ExpertMask mask { name, {}, {}, {}, {} };
    for (const int layer : layers) {
        auto& perExpert = mask.units[layer];
        perExpert.assign(static_cast<std::size_t>(experts), {});
        for (int e = 0; e < experts; ++e)
            for (int j = 0; j < units; ++j)
                if (!removed.count({ layer, e, j }))
                    perExpert[static_cast<std::size_t>(e)].push_back(j);
    }
    return mask;
}

} // namespace

class TstFisherAblation : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    std::string m_modelDir;
    QString m_demoAtlas;
    EvalTokens m_tokens; // 4 demo domains, one 64-token sequence each
    FisherTables m_tables; // mask form of m_tokens
    FisherAblationOptions m_options;
    FisherAblation m_ablation;
    QString m_ablationAtlas; // demo copy with m_tables and m_ablation written
    int m_copies = 0;

    QString copyDemo()
    {
        const QString path = m_dir.filePath(QStringLiteral("copy%1.atlas.h5").arg(++m_copies));
        if (!QFile::copy(m_demoAtlas, path))
            return {};
        QFile::setPermissions(path, QFile::ReadOwner | QFile::WriteOwner);
        return path;
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_modelDir = test::sourcePath(QStringLiteral("resources/demo/model")).toStdString();
        m_demoAtlas = test::sourcePath(QStringLiteral("resources/demo/demo.atlas.h5"));
        QVERIFY(QFile::exists(m_demoAtlas));
        // The first 64 tokens of each domain's first calibration sequence of the demo atlas.
        const AtlasFile demo = AtlasFile::openReadOnly(m_demoAtlas.toStdString());
        const std::vector<int32_t> ids = demo.tokens();
        const std::vector<int64_t> offsets = demo.seqOffsets();
        const std::vector<int16_t> domainIds = demo.domainIds();
        m_tokens.seqOffsets = { 0 };
        for (const AtlasDomain& d : demo.calibration().domains)
            m_tokens.domains.push_back(d.name);
        std::vector<bool> taken(m_tokens.domains.size(), false);
        for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
            const int d = domainIds[static_cast<std::size_t>(offsets[s])];
            if (taken[static_cast<std::size_t>(d)])
                continue;
            taken[static_cast<std::size_t>(d)] = true;
            m_tokens.tokens.insert(m_tokens.tokens.end(), ids.begin() + offsets[s], ids.begin() + offsets[s] + 64);
            m_tokens.seqOffsets.push_back(static_cast<int64_t>(m_tokens.tokens.size()));
            m_tokens.seqDomain.push_back(d);
        }
        QCOMPARE(m_tokens.seqDomain.size(), std::size_t(4));
        m_tokens.source = "demo atlas, first 64 tokens per domain";

        const Checkpoint ckpt(m_modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_modelDir + "/config.json");
        FisherOptions fo;
        fo.threads = 1; // two OpenMP threads on a loaded 2-core machine run several times slower
        fo.weightForm = fo.gradAbs = fo.activation = fo.magnitude = false;
        m_tables = computeFisherTables(ckpt, spec, m_tokens, fo, { m_tokens.source, m_modelDir, "" });
        m_options.counts = { 60, 0, 4 };
        m_options.seed = 11;
        ExecutorOptions eo;
        eo.threads = 1;
        m_ablation = runFisherAblation(ckpt, spec, eo, m_tokens, m_tables, m_options);
    }

    void topUnits_data()
    {
        QTest::addColumn<QList<double>>("scores");
        QTest::addColumn<qint64>("n");
        QTest::addColumn<QList<qint64>>("expected");
        QTest::newRow("descending") << QList<double> { 0.1, 0.5, 0.3, 0.9 } << qint64(3) << QList<qint64> { 3, 1, 2 };
        QTest::newRow("ties: lower index first")
            << QList<double> { 1, 2, 2, 0, 2 } << qint64(4) << QList<qint64> { 1, 2, 4, 0 };
        QTest::newRow("all equal") << QList<double> { 0, 0, 0 } << qint64(2) << QList<qint64> { 0, 1 };
        QTest::newRow("n above the size") << QList<double> { 3, 1, 2 } << qint64(10) << QList<qint64> { 0, 2, 1 };
        QTest::newRow("n = 0") << QList<double> { 3, 1, 2 } << qint64(0) << QList<qint64> {};
        QTest::newRow("negative n") << QList<double> { 3, 1, 2 } << qint64(-4) << QList<qint64> {};
        QTest::newRow("no scores") << QList<double> {} << qint64(3) << QList<qint64> {};
    }

    void topUnits()
    {
        QFETCH(QList<double>, scores);
        QFETCH(qint64, n);
        QFETCH(QList<qint64>, expected);
        const std::vector<double> s(scores.begin(), scores.end());
        const std::vector<int64_t> top = moeatlas::topUnits(s, n);
        QCOMPARE(top, std::vector<int64_t>(expected.begin(), expected.end()));
    }

    // topUnits on a larger row with many ties agrees with a stable sort.
    void topUnitsMatchesStableSort()
    {
        std::vector<double> s;
        for (int i = 0; i < 5000; ++i)
            s.push_back(static_cast<double>((i * 7919) % 97) / 8.0); // 97 distinct values, ~52 ties each
        for (const int64_t n : { 1, 51, 52, 53, 700, 5000 })
            QCOMPARE(moeatlas::topUnits(s, n), firstOf(ranking(s), n));
    }

    void randomUnitsBasics()
    {
        for (const auto& [total, n] : std::vector<std::pair<int64_t, int64_t>> {
                 { 10, 3 }, { 10, 10 }, { 10, 0 }, { 5, 7 }, { 100000, 50 }, { 1, 1 } }) {
            const std::vector<int64_t> u = randomUnits(total, n, 42);
            QCOMPARE(static_cast<int64_t>(u.size()), std::min(n, total));
            QVERIFY(std::is_sorted(u.begin(), u.end()));
            QVERIFY(std::adjacent_find(u.begin(), u.end()) == u.end()); // distinct
            for (const int64_t i : u)
                QVERIFY(i >= 0 && i < total);
            QCOMPARE(randomUnits(total, n, 42), u); // seeded
        }
        std::set<std::vector<int64_t>> distinct;
        for (uint64_t seed = 0; seed < 20; ++seed)
            distinct.insert(randomUnits(1000, 5, seed));
        QCOMPARE(distinct.size(), std::size_t(20));
    }

    // Every unit equally likely (marginals), and every subset equally likely (Floyd's sampling).
    // Chi-square bounds at p ~ 1e-4 for fixed seeds: deterministic, and a biased sampler fails them.
    void randomUnitsUniform()
    {
        std::vector<int> hits(20, 0);
        const int draws = 4000;
        for (int seed = 0; seed < draws; ++seed)
            for (const int64_t u : randomUnits(20, 5, static_cast<uint64_t>(seed)))
                ++hits[static_cast<std::size_t>(u)];
        double chi2 = 0;
        const double expected = draws * 5.0 / 20.0;
        for (const int h : hits)
            chi2 += (h - expected) * (h - expected) / expected;
        qInfo("unit marginals: chi-square %.1f (19 degrees of freedom)", chi2);
        QVERIFY(chi2 < 50);

        std::map<std::vector<int64_t>, int> subsets;
        for (int seed = 0; seed < 5000; ++seed)
            ++subsets[randomUnits(5, 2, static_cast<uint64_t>(1000000 + seed))];
        QCOMPARE(subsets.size(), std::size_t(10));
        chi2 = 0;
        for (const auto& [subset, count] : subsets)
            chi2 += (count - 500.0) * (count - 500.0) / 500.0;
        qInfo("2-subsets of 5: chi-square %.1f (9 degrees of freedom)", chi2);
        QVERIFY(chi2 < 33);
    }

    void removalMask()
    {
        // Layers 1 and 3, E = 2, I = 3: flat unit (l E + e) I + j.
        const std::vector<int> layers { 1, 3 };
        const std::vector<int64_t> removed { 5, 0, 6, 9, 10, 11 }; // (1,1,2) (1,0,0) (3,0,0) (3,1,0..2)
        const ExpertMask m = moeatlas::removalMask("m", layers, 2, 3, removed);
        QCOMPARE(m.name, std::string("m"));
        QVERIFY(m.keep.empty());
        QCOMPARE(m.units.size(), std::size_t(2));
        QCOMPARE(m.units.at(1), (std::vector<std::vector<int>> { { 1, 2 }, { 0, 1 } }));
        QCOMPARE(m.units.at(3), (std::vector<std::vector<int>> { { 1, 2 }, {} })); // expert 1: zero width

        // Only layers with a removed unit are listed; nothing removed: the full model.
        const ExpertMask one = moeatlas::removalMask("one", layers, 2, 3, std::vector<int64_t> { 7 });
        QCOMPARE(one.units.size(), std::size_t(1));
        QCOMPARE(one.units.at(3), (std::vector<std::vector<int>> { { 0, 2 }, { 0, 1, 2 } }));
        QVERIFY(moeatlas::removalMask("none", layers, 2, 3, {}).units.empty());
    }

    void ablationCounts_data()
    {
        QTest::addColumn<QList<qint64>>("counts");
        QTest::addColumn<qint64>("total");
        QTest::addColumn<QList<qint64>>("expected");
        QTest::newRow("default") << QList<qint64> { 0, 10, 100, 1000 } << qint64(500)
                                 << QList<qint64> { 0, 10, 100, 500 };
        QTest::newRow("empty") << QList<qint64> {} << qint64(500) << QList<qint64> { 0 };
        QTest::newRow("unsorted duplicates")
            << QList<qint64> { 10, 10, 5 } << qint64(500) << QList<qint64> { 0, 5, 10 };
        QTest::newRow("clipped duplicates")
            << QList<qint64> { 700, 600, 500 } << qint64(500) << QList<qint64> { 0, 500 };
        QTest::newRow("no units") << QList<qint64> { 3 } << qint64(0) << QList<qint64> { 0 };
    }

    void ablationCounts()
    {
        QFETCH(QList<qint64>, counts);
        QFETCH(qint64, total);
        QFETCH(QList<qint64>, expected);
        QCOMPARE(moeatlas::ablationCounts(std::vector<int64_t>(counts.begin(), counts.end()), total),
            std::vector<int64_t>(expected.begin(), expected.end()));
    }

    void ablationCountsNegative()
    {
        const QString error = test::inputErrorOf([] { moeatlas::ablationCounts({ 10, -3 }, 100); });
        QVERIFY2(error.contains(QLatin1String("-3")) && error.contains(QLatin1String("negative")), qPrintable(error));
    }

    void ablationVariants()
    {
        const FisherTables t = fisherTables(smallResult(), { "x", "y" });
        const std::span<const double> units(t.find("mask")->units);
        const std::vector<int64_t> rx = ranking(units.subspan(0, 8)), ry = ranking(units.subspan(8, 8)),
                                   rp = ranking(units.subspan(16, 8));
        QCOMPARE(firstOf(ry, 4), (std::vector<int64_t> { 3, 0, 1, 6 })); // the tie 1/6 in y: lower first
        FisherAblationOptions o;
        o.counts = { 3, 0, 100, 3 }; // -> 0, 3, 8 (all units)
        o.seed = 5;
        const std::vector<AblationVariant> v = moeatlas::ablationVariants(t, o);
        QCOMPARE(v.size(), std::size_t(9));
        QCOMPARE(v[0].ranking, std::string("full"));
        QCOMPARE(v[0].removed, int64_t { 0 });
        QVERIFY(v[0].units.empty());
        std::size_t k = 1;
        for (const int64_t n : { 3, 8 }) {
            const std::pair<const char*, const std::vector<int64_t>*> expected[]
                = { { "pooled", &rp }, { "x", &rx }, { "y", &ry } };
            for (const auto& [name, order] : expected) {
                QCOMPARE(v[k].ranking, std::string(name));
                QCOMPARE(v[k].removed, n);
                QCOMPARE(v[k].units, firstOf(*order, n));
                ++k;
            }
            QCOMPARE(v[k].ranking, std::string("random"));
            QCOMPARE(v[k].removed, n);
            QCOMPARE(v[k].units, randomUnits(8, n, 5));
            ++k;
        }
        // Pooled (mean of x and y) differs from both domains' rankings here.
        QVERIFY(firstOf(rp, 3) != firstOf(rx, 3) && firstOf(rp, 3) != firstOf(ry, 3));

        o.perDomain = false;
        o.random = false;
        o.counts = { 2 };
        const std::vector<AblationVariant> pooledOnly = moeatlas::ablationVariants(t, o);
        QCOMPARE(pooledOnly.size(), std::size_t(2));
        QCOMPARE(pooledOnly[1].ranking, std::string("pooled"));
        QCOMPARE(pooledOnly[1].units, firstOf(rp, 2));

        // Forms the tables lack, magnitude (no domain rows), reserved domain names.
        for (const char* form : { "weight", "magnitude" }) {
            o.form = form;
            const QString error = test::inputErrorOf([&] { moeatlas::ablationVariants(t, o); });
            QVERIFY2(error.contains(QLatin1String(form)), qPrintable(error));
        }
        o.form = "mask";
        for (const char* name : { "full", "random" }) {
            const FisherTables clash = fisherTables(smallResult(), { "x", name });
            QVERIFY(test::inputErrorOf([&] { moeatlas::ablationVariants(clash, o); }).isEmpty()); // no per-domain rows
            FisherAblationOptions perDomain;
            const QString error = test::inputErrorOf([&] { moeatlas::ablationVariants(clash, perDomain); });
            QVERIFY2(
                error.contains(QLatin1String(name)) && error.contains(QLatin1String("reserved")), qPrintable(error));
        }
    }

    // runFisherAblation on the demo model: the per-domain losses equal an evaluation with masks built
    // here from the tables' rankings (full-width masked path as the reference).
    void lossesMatchMaskedEvaluation()
    {
        const FisherAblation& a = m_ablation;
        const std::vector<int> layers { 0, 1, 2, 3 };
        QCOMPARE(a.layers, layers);
        QCOMPARE(a.numExperts, int64_t { 16 });
        QCOMPARE(a.intermediate, int64_t { 128 });
        QCOMPARE(a.form, std::string("mask"));
        QCOMPARE(a.seed, uint64_t { 11 });
        const int64_t total = 4 * 16 * 128;
        const std::span<const double> units(m_tables.find("mask")->units);
        const std::vector<std::string> rows { "pooled", "arith", "code", "json", "prose" };
        const std::map<std::string, std::size_t> rowIndex { { "arith", 0 }, { "code", 1 }, { "json", 2 },
            { "prose", 3 }, { "pooled", 4 } };
        QCOMPARE(m_tables.domains, (std::vector<std::string> { "arith", "code", "json", "prose", "pooled" }));

        // Expected variants, in order, and the units each removes.
        std::vector<std::string> names { "full" };
        std::vector<std::vector<int64_t>> removed { {} };
        for (const int64_t n : { 4, 60 }) {
            for (const std::string& r : rows) {
                names.push_back("top-" + std::to_string(n) + ":" + r);
                removed.push_back(firstOf(ranking(units.subspan(rowIndex.at(r) * total, total)), n));
            }
            names.push_back("random-" + std::to_string(n));
            removed.push_back(randomUnits(total, n, 11));
        }
        QCOMPARE(a.table.variants.size(), names.size());
        QCOMPARE(a.variants.size(), names.size());
        std::vector<ExpertMask> masks;
        for (std::size_t v = 0; v < names.size(); ++v) {
            const EvalVariant& ev = a.table.variants[v];
            QCOMPARE(ev.name, names[v]);
            QCOMPARE(a.variants[v].units, removed[v]);
            QCOMPARE(a.variants[v].removed, static_cast<int64_t>(removed[v].size()));
            const bool random = names[v].rfind("random", 0) == 0;
            QCOMPARE(ev.method, std::string(v == 0 ? "full" : random ? "random" : "fisher"));
            QCOMPARE(ev.criterion, std::string(v == 0 || random ? "" : "fisher_mask"));
            const std::string rankedBy = a.variants[v].ranking;
            QCOMPARE(ev.domain,
                rankedBy == "pooled" || rankedBy == "full" || rankedBy == "random" ? std::string() : rankedBy);
            QCOMPARE(ev.sparsity, static_cast<double>(removed[v].size()) / static_cast<double>(total));
            std::set<Unit> gone;
            for (const int64_t u : removed[v])
                gone.insert(
                    { static_cast<int>(u / (16 * 128)), static_cast<int>(u / 128 % 16), static_cast<int>(u % 128) });
            masks.push_back(v == 0 ? ExpertMask { "full", {}, {}, {}, {} } : maskWithout(names[v], layers, 16, 128, gone));
        }

        const Checkpoint ckpt(m_modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_modelDir + "/config.json");
        ExecutorOptions o;
        o.threads = 1;
        o.maskedUnits = true;
        o.keepWeightsResident = true;
        Executor executor(ckpt, spec, o);
        const std::vector<VariantOutput> out
            = executor.evaluate(m_tokens.tokens, m_tokens.seqOffsets, masks, true).variants;
        // runFisherAblation evaluates the sliced experts, this the full-width masked ones: other GEMM
        // shapes, so the per-token losses (and their means) agree up to the order of fp32 sums, within
        // kReorderRtol of the largest |logit| (test_io.h).
        double scale = 0;
        for (const VariantOutput& v : out)
            scale = std::max(scale, test::maxAbs(v.logits));
        QCOMPARE(a.table.domains, m_tokens.domains);
        QCOMPARE(a.table.predictedTokens, (std::vector<int64_t> { 63, 63, 63, 63 }));
        double worst = 0, biggestEffect = 0;
        for (std::size_t v = 0; v < masks.size(); ++v)
            for (std::size_t d = 0; d < 4; ++d) {
                double sum = 0;
                int n = 0;
                for (int64_t t = m_tokens.seqOffsets[d]; t < m_tokens.seqOffsets[d + 1]; ++t)
                    if (!std::isnan(out[v].tokenNll[static_cast<std::size_t>(t)])) {
                        sum += out[v].tokenNll[static_cast<std::size_t>(t)];
                        ++n;
                    }
                QCOMPARE(n, 63);
                worst = std::max(worst, std::fabs(a.table.nll[v][d] - sum / n));
                biggestEffect = std::max(biggestEffect, std::fabs(a.table.nll[v][d] - a.table.nll[0][d]));
            }
        qInfo("ablation nll vs masked evaluation: max abs diff %.3g (max |logit| %.3g); largest change from the full "
              "model %.3f",
            worst, scale, biggestEffect);
        QVERIFY(worst <= test::kReorderRtol * scale);
        QVERIFY(biggestEffect > 0.01); // the masks do something, so equal losses are not both "full"
    }

    void writeReadRoundTrip()
    {
        const QString path = copyDemo();
        {
            AtlasFile u = AtlasFile::openForUpdate(path.toStdString());
            writeFisherTables(u, m_tables);
            writeFisherAblation(u, m_ablation);
            u.commitUpdate();
        }
        const AtlasFile atlas = AtlasFile::openReadOnly(path.toStdString());
        const std::optional<FisherAblationResults> r = readFisherAblation(atlas);
        QVERIFY(r);
        QCOMPARE(r->form, std::string("mask"));
        QCOMPARE(r->seed, uint64_t { 11 });
        QCOMPARE(r->domains, m_tokens.domains);
        QCOMPARE(r->tokens, (std::vector<int64_t> { 63, 63, 63, 63 }));
        QCOMPARE(r->tokenSource, m_tokens.source);
        QCOMPARE(r->variants.size(), m_ablation.variants.size());
        QCOMPARE(r->fullIndex(), 0);
        for (std::size_t v = 0; v < r->variants.size(); ++v) {
            QCOMPARE(r->variants[v].name, m_ablation.table.variants[v].name);
            QCOMPARE(r->variants[v].ranking, m_ablation.variants[v].ranking);
            QCOMPARE(r->variants[v].removed, m_ablation.variants[v].removed);
            QCOMPARE(r->variants[v].nll, m_ablation.table.nll[v]); // float64 stored and read back: exact
        }
        // removed_units [V, M, 3]: (decoder layer, expert, unit) in removal order, -1 padding.
        const std::optional<AtlasResults> g = atlas.readResults("fisher/ablation");
        const AtlasArray* ru = g->find("removed_units");
        QVERIFY(ru);
        const uint64_t V = m_ablation.variants.size(), M = 60;
        QCOMPARE(ru->dims, (std::vector<uint64_t> { V, M, 3 }));
        QCOMPARE(g->find("removed")->values.size(), std::size_t(V));
        for (uint64_t v = 0; v < V; ++v) {
            const std::vector<int64_t>& units = m_ablation.variants[v].units;
            QCOMPARE(g->find("removed")->values[v], static_cast<double>(units.size()));
            for (uint64_t k = 0; k < M; ++k) {
                const double* row = &ru->values[(v * M + k) * 3];
                if (k < units.size()) {
                    const int64_t u = units[k];
                    QCOMPARE(row[0], static_cast<double>(u / 2048)); // layer l is decoder layer l here
                    QCOMPARE(row[1], static_cast<double>(u % 2048 / 128));
                    QCOMPARE(row[2], static_cast<double>(u % 128));
                } else {
                    QVERIFY(row[0] == -1 && row[1] == -1 && row[2] == -1);
                }
            }
        }
        const nlohmann::json p = nlohmann::json::parse(g->paramsJson);
        QCOMPARE(p.at("format").get<std::string>(), std::string("moeatlas-fisher-ablation"));
        QCOMPARE(p.at("variants").size(), std::size_t(V));
        QCOMPARE(p.at("checkpoint").get<std::string>(), m_modelDir);
        QVERIFY(!readFisherAblation(AtlasFile::openReadOnly(m_demoAtlas.toStdString())));
        m_ablationAtlas = path;
    }

    void malformedAblation_data()
    {
        QTest::addColumn<QString>("edit");
        QTest::addColumn<QStringList>("keywords");
        QTest::newRow("nll of the wrong shape") << QStringLiteral(
            "nll") << QStringList { QStringLiteral("/fisher/ablation/nll"), QStringLiteral("[13, 4]") };
        QTest::newRow("tokens missing") << QStringLiteral("tokens")
                                        << QStringList { QStringLiteral("/fisher/ablation/tokens") };
        QTest::newRow("params without variants")
            << QStringLiteral("params") << QStringList { QStringLiteral("/fisher/ablation"), QStringLiteral("params") };
        QTest::newRow("variant without a name") << QStringLiteral(
            "variant") << QStringList { QStringLiteral("/fisher/ablation"), QStringLiteral("params") };
    }

    void malformedAblation()
    {
        QFETCH(QString, edit);
        QFETCH(QStringList, keywords);
        QVERIFY2(!m_ablationAtlas.isEmpty(), "writeReadRoundTrip runs first");
        AtlasResults g = *AtlasFile::openReadOnly(m_ablationAtlas.toStdString()).readResults("fisher/ablation");
        nlohmann::json p = nlohmann::json::parse(g.paramsJson);
        const auto drop = [&](const char* name) {
            g.arrays.erase(
                std::remove_if(g.arrays.begin(), g.arrays.end(), [&](const AtlasArray& a) { return a.name == name; }),
                g.arrays.end());
        };
        if (edit == QLatin1String("nll")) {
            for (AtlasArray& a : g.arrays)
                if (a.name == "nll")
                    a.dims = { 4, 13 };
        } else if (edit == QLatin1String("tokens")) {
            drop("tokens");
        } else if (edit == QLatin1String("params")) {
            p.erase("variants");
            g.paramsJson = p.dump();
        } else {
            p["variants"][3].erase("name");
            g.paramsJson = p.dump();
        }
        const QString path = copyDemo();
        {
            AtlasFile u = AtlasFile::openForUpdate(path.toStdString());
            u.writeResults("fisher/ablation", g);
            u.commitUpdate();
        }
        const AtlasFile atlas = AtlasFile::openReadOnly(path.toStdString());
        const QString error = test::inputErrorOf([&] { readFisherAblation(atlas); });
        QVERIFY2(error.contains(path), qPrintable(QStringLiteral("message does not name the atlas: ") + error));
        for (const QString& k : keywords)
            QVERIFY2(
                error.contains(k), qPrintable(QStringLiteral("message lacks '") + k + QStringLiteral("': ") + error));
    }

    // A false progress return stops the evaluation with Cancelled.
    void cancellation()
    {
        const Checkpoint ckpt(m_modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_modelDir + "/config.json");
        ExecutorOptions eo;
        eo.threads = 1;
        int calls = 0;
        QVERIFY_THROWS_EXCEPTION(Cancelled,
            runFisherAblation(
                ckpt, spec, eo, m_tokens, m_tables, m_options, [&](const Progress&) { return ++calls < 2; }));
        QCOMPARE(calls, 2);
    }
};

QTEST_GUILESS_MAIN(TstFisherAblation)
#include "tst_fisher_ablation.moc"
