// Fisher tables in the atlas (core/fisher/fisher_store.h).
// Hand-computed: concentration shares (order, ties, zero mass, ceil of f x n and its rounding guard,
// n below 1/f), their [R, L + 1, F] layout, and fisherTables on a hand-made grouped result (pooled
// rows, expert sums, counts and concentration in closed form). Engine: the pooled row of a grouped
// computeFisher on the demo model equals an ungrouped computeFisher over the same samples. Atlas:
// write -> read through a copy of the demo atlas, /fisher replaced whole, and malformed /fisher
// groups refused with a message naming the atlas and the dataset.
#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "eval/eval.h"
#include "fisher/fisher_store.h"
#include "runtime/fisher.h"
#include "test_io.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QCryptographicHash>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <set>

using namespace moeatlas;

namespace {

// ---- the hand-made grouped result ---------------------------------------------------------------
// Two groups (1 and 3 samples), MoE layers 1 and 3 (l = 0, 1), E = 2 experts, I = 3 units.
constexpr int64_t kE = 2, kI = 3;
const int kLayers[] = { 1, 3 };
// Tokens of group g routed to expert e, per layer ([G * E]): layer 1 (l = 1) routes nothing to
// expert 1, and group 1 routes nothing at all there.
const std::vector<int64_t> kRouted[] = { { 4, 0, 12, 6 }, { 5, 0, 0, 0 } };

double maskValue(int l, int g, int e, int j)
{
    return 1 + j + 3 * e + 6 * g + 12 * l;
}
double activationValue(int l, int g, int e, int j)
{
    return 2 + j + 5 * e + 10 * g + 20 * l;
}
double magnitudeValue(int l, int e, int j)
{
    return 100 + 10 * l + 3 * e + j;
}

FisherResult handResult()
{
    FisherResult r;
    r.groups = 2;
    r.groupSamples = { 1, 3 };
    r.groupTokens = { 10, 20 }; // not in proportion to the samples: token weights would show
    r.samples = 4;
    r.tokens = 30;
    r.seconds = 1.5;
    for (int l = 0; l < 2; ++l) {
        FisherLayer f;
        f.layer = kLayers[l];
        f.numExperts = kE;
        f.intermediate = kI;
        f.expertTokens = kRouted[l];
        for (int g = 0; g < 2; ++g)
            for (int e = 0; e < kE; ++e)
                for (int j = 0; j < kI; ++j) {
                    f.mask.push_back(maskValue(l, g, e, j));
                    // The engine's convention: 0 for an expert the group never routed to.
                    f.activation.push_back(
                        kRouted[l][static_cast<std::size_t>(g * kE + e)] ? activationValue(l, g, e, j) : 0.0);
                }
        for (int e = 0; e < kE; ++e)
            for (int j = 0; j < kI; ++j)
                f.magnitude.push_back(magnitudeValue(l, e, j));
        r.layers.push_back(f);
    }
    return r;
}

// [R, L, E, I] index of the tables.
std::size_t at(int r, int l, int e, int j)
{
    return static_cast<std::size_t>(((r * 2 + l) * kE + e) * kI + j);
}

// ---- helpers ------------------------------------------------------------------------------------
// Largest |a - b| over the largest |b| (infinity on a size mismatch).
double relativeError(std::span<const double> a, std::span<const double> b)
{
    if (a.size() != b.size() || b.empty())
        return std::numeric_limits<double>::infinity();
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        err = std::max(err, std::fabs(a[i] - b[i]));
        scale = std::max(scale, std::fabs(b[i]));
    }
    return scale > 0 ? err / scale : err;
}

QString sha256Of(const std::string& text)
{
    return QString::fromLatin1(
        QCryptographicHash::hash(QByteArray::fromStdString(text), QCryptographicHash::Sha256).toHex());
}

// Random ids over the demo vocabulary, sequences of the given lengths.
void randomSequences(std::initializer_list<int> lengths, int64_t vocab, uint64_t seed, std::vector<int32_t>& tokens,
    std::vector<int64_t>& offsets)
{
    offsets = { 0 };
    tokens.clear();
    for (const int len : lengths) {
        for (int i = 0; i < len; ++i) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            tokens.push_back(static_cast<int32_t>((seed >> 33) % static_cast<uint64_t>(vocab)));
        }
        offsets.push_back(static_cast<int64_t>(tokens.size()));
    }
}

const char* const kAllGroups[] = { "fisher", "fisher/mask", "fisher/weight", "fisher/grad_abs", "fisher/activation",
    "fisher/magnitude", "fisher/concentration" };

} // namespace

class TstFisherStore : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    std::string m_modelDir;
    QString m_demoAtlas;
    std::vector<int32_t> m_tokens;
    std::vector<int64_t> m_offsets;
    std::vector<int> m_groups;
    FisherResult m_grouped; // 3 groups
    FisherResult m_ungrouped; // the same samples, one group
    FisherTables m_tables; // computeFisherTables on the same samples as m_grouped
    QString m_validAtlas; // a demo atlas copy holding m_tables
    std::map<std::string, AtlasResults> m_validGroups; // its /fisher groups as stored
    int m_copies = 0;

    // A fresh writable copy of the demo atlas.
    QString copyDemo()
    {
        const QString path = m_dir.filePath(QStringLiteral("copy%1.atlas.h5").arg(++m_copies));
        if (!QFile::copy(m_demoAtlas, path))
            return {};
        QFile::setPermissions(path, QFile::ReadOwner | QFile::WriteOwner);
        return path;
    }

    // A copy of the demo atlas with `edit` applied through the update path.
    QString editedCopy(const std::function<void(AtlasFile&)>& edit)
    {
        const QString path = copyDemo();
        AtlasFile update = AtlasFile::openForUpdate(path.toStdString());
        edit(update);
        update.commitUpdate();
        return path;
    }

    // Writes `groups` as they are: /fisher first (writeResults replaces a group whole, subgroups included).
    static void writeGroups(AtlasFile& update, const std::map<std::string, AtlasResults>& groups)
    {
        if (groups.count("fisher"))
            update.writeResults("fisher", groups.at("fisher"));
        for (const auto& [name, g] : groups)
            if (name != "fisher")
                update.writeResults(name, g);
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_modelDir = test::sourcePath(QStringLiteral("resources/demo/model")).toStdString();
        m_demoAtlas = test::sourcePath(QStringLiteral("resources/demo/demo.atlas.h5"));
        QVERIFY(QFile::exists(m_demoAtlas));
        const Checkpoint ckpt(m_modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_modelDir + "/config.json");
        randomSequences({ 33, 20, 41, 27, 16, 38 }, spec.vocabSize, 2024, m_tokens, m_offsets);
        m_groups = { 0, 1, 2, 0, 2, 1 };
        FisherOptions o;
        // One intra-op thread: two OpenMP threads on a loaded 2-core machine run ~5x slower.
        o.threads = 1;
        m_grouped = computeFisher(ckpt, spec, m_tokens, m_offsets, m_groups, o);
        m_ungrouped = computeFisher(ckpt, spec, m_tokens, m_offsets, {}, o);

        EvalTokens tokens;
        tokens.domains = { "alpha", "beta", "gamma" };
        tokens.tokens = m_tokens;
        tokens.seqOffsets = m_offsets;
        tokens.seqDomain = m_groups;
        tokens.source = "hand-made test tokens";
        const FisherRunInfo info { "hand-made test tokens", m_modelDir, "0123abcd" };
        m_tables = computeFisherTables(ckpt, spec, tokens, o, info);

        m_validAtlas = editedCopy([&](AtlasFile& u) { writeFisherTables(u, m_tables); });
        const AtlasFile atlas = AtlasFile::openReadOnly(m_validAtlas.toStdString());
        for (const char* g : kAllGroups) {
            const std::optional<AtlasResults> r = atlas.readResults(g);
            QVERIFY2(r, g);
            m_validGroups[g] = *r;
        }
    }

    void concentrationShares_data()
    {
        QTest::addColumn<QList<double>>("scores");
        QTest::addColumn<QList<double>>("fractions");
        QTest::addColumn<QList<double>>("expected");
        // Counts are max(1, ceil(f n)).
        QTest::newRow("sorted, n = 4") << QList<double> { 4, 3, 2, 1 } << QList<double> { 0.25, 0.5, 1.0, 0.01 }
                                       << QList<double> { 0.4, 0.7, 1.0, 0.4 };
        // counts 1, 2, ceil(2.5) = 3, ceil(3) = 3 of {5, 3, 1, 1, 0} (sum 10)
        QTest::newRow("unsorted, ceil") << QList<double> { 1, 5, 3, 0, 1 } << QList<double> { 0.2, 0.4, 0.5, 0.6 }
                                        << QList<double> { 0.5, 0.8, 0.9, 0.9 };
        QTest::newRow("ties") << QList<double> { 2, 2, 2, 2 } << QList<double> { 0.25, 0.5 }
                              << QList<double> { 0.25, 0.5 };
        QTest::newRow("zero total") << QList<double> { 0, 0, 0 } << QList<double> { 0.5, 1.0 }
                                    << QList<double> { 0, 0 };
        QTest::newRow("no scores") << QList<double> {} << QList<double> { 0.5, 1.0 } << QList<double> { 0, 0 };
        QTest::newRow("one score") << QList<double> { 7 } << QList<double> { 1e-5, 1e-4, 1e-3, 1e-2 }
                                   << QList<double> { 1, 1, 1, 1 };
        // n = 10: every fraction of the statistics rounds up to a single unit (10 of 1 + ... + 10 = 55).
        QList<double> tenScores;
        for (int i = 1; i <= 10; ++i)
            tenScores << i;
        QTest::newRow("n below 1/f") << tenScores << QList<double> { 1e-5, 1e-4, 1e-3, 1e-2 }
                                     << QList<double> { 10 / 55.0, 10 / 55.0, 10 / 55.0, 10 / 55.0 };
        // 1..100 (sum 5050): 0.07 * 100 is 7.000000000000001 in doubles, still 7 units (94..100), not 8.
        QList<double> hundred;
        for (int i = 1; i <= 100; ++i)
            hundred << i;
        QTest::newRow("exact products") << hundred << QList<double> { 0.01, 0.02, 0.07, 0.035 }
                                        << QList<double> { 100 / 5050.0, 199 / 5050.0, 679 / 5050.0, 394 / 5050.0 };
        // 300000 equal scores: the share is exactly count / n, so one unit too many shows
        // (1e-5 * 300000 is 3.0000000000000004 in doubles).
        QList<double> ones(300000, 1.0);
        QTest::newRow("1e-5 of 300000") << ones << QList<double> { 1e-5, 1e-4, 1e-3, 1e-2 }
                                        << QList<double> { 1e-5, 1e-4, 1e-3, 1e-2 };
    }

    void concentrationShares()
    {
        QFETCH(QList<double>, scores);
        QFETCH(QList<double>, fractions);
        QFETCH(QList<double>, expected);
        const std::vector<double> s(scores.begin(), scores.end()), f(fractions.begin(), fractions.end());
        const std::vector<double> shares = moeatlas::concentrationShares(s, f);
        QCOMPARE(shares.size(), f.size());
        // Sums of integers (exact in double) over their total: one rounded division of a value <= 1.
        for (std::size_t k = 0; k < shares.size(); ++k)
            QVERIFY2(std::fabs(shares[k] - expected[static_cast<qsizetype>(k)]) <= 1e-12,
                qPrintable(QStringLiteral("fraction %1: share %2, expected %3")
                               .arg(f[k])
                               .arg(shares[k], 0, 'g', 17)
                               .arg(expected[static_cast<qsizetype>(k)], 0, 'g', 17)));
    }

    // [R, L + 1, F]: per layer, then all layers of the row.
    void formConcentrationLayout()
    {
        // rows 2, layers 2, 2 units per layer.
        const std::vector<double> units { 1, 3, 0, 0, /* row 1 */ 2, 2, 5, 1 };
        const std::vector<double> fractions { 0.5, 1.0 };
        const std::vector<double> expected { 0.75, 1, 0, 0, 1, 1, /* row 1 */ 0.5, 1, 5 / 6.0, 1, 0.7, 1 };
        const std::vector<double> out = formConcentration(units, 2, 2, 2, fractions);
        QCOMPARE(out.size(), expected.size());
        // Exact sums of small integers, one rounded division of a value <= 1 (~1e-16).
        for (std::size_t i = 0; i < out.size(); ++i)
            QVERIFY2(std::fabs(out[i] - expected[i]) <= 1e-15, qPrintable(QStringLiteral("index %1").arg(i)));
    }

    // fisherTables on the hand-made result, every number in closed form (double arithmetic on small
    // integers and halves: exact but for the divisions, whose rounding QCOMPARE's fuzzy compare absorbs).
    void tablesFromHandResult()
    {
        const FisherTables t = fisherTables(handResult(), { "x", "y" });
        QCOMPARE(t.domains, (std::vector<std::string> { "x", "y", "pooled" }));
        QCOMPARE(t.layers, (std::vector<int> { 1, 3 }));
        QCOMPARE(t.numExperts, kE);
        QCOMPARE(t.intermediate, kI);
        QCOMPARE(t.unitsPerRow(), int64_t { 12 });
        QCOMPARE(t.samples, (std::vector<int64_t> { 1, 3, 4 }));
        QCOMPARE(t.tokens, (std::vector<int64_t> { 10, 20, 30 }));
        QCOMPARE(t.seconds, 1.5);
        QVERIFY(t.paramsJson.empty());
        // [R, L, E]: group 0, group 1, then their sum.
        QCOMPARE(t.expertTokens, (std::vector<int64_t> { 4, 0, 5, 0, /* y */ 12, 6, 0, 0, /* pooled */ 16, 6, 5, 0 }));
        // Forms present: the computed ones in storage order, then magnitude.
        std::vector<std::string> forms;
        for (const FisherFormTable& f : t.forms)
            forms.push_back(f.form);
        QCOMPARE(forms, (std::vector<std::string> { "mask", "activation", "magnitude" }));
        QVERIFY(!t.find("weight"));
        QVERIFY(!t.find("grad_abs"));

        const FisherFormTable& mask = *t.find("mask");
        const FisherFormTable& act = *t.find("activation");
        const FisherFormTable& mag = *t.find("magnitude");
        QCOMPARE(mask.units.size(), std::size_t(3 * 12));
        QCOMPARE(act.units.size(), std::size_t(3 * 12));
        QCOMPARE(mag.units.size(), std::size_t(12));
        for (int l = 0; l < 2; ++l)
            for (int e = 0; e < kE; ++e)
                for (int j = 0; j < kI; ++j) {
                    for (int g = 0; g < 2; ++g)
                        QCOMPARE(mask.units[at(g, l, e, j)], maskValue(l, g, e, j));
                    // Sample-weighted: (v * 1 + (v + 6) * 3) / 4 = v + 4.5.
                    QCOMPARE(mask.units[at(2, l, e, j)], maskValue(l, 0, e, j) + 4.5);
                    QCOMPARE(mag.units[static_cast<std::size_t>((l * kE + e) * kI + j)], magnitudeValue(l, e, j));
                }
        // Activation, weighted by routed tokens: layer 1 expert 0: (a * 4 + (a + 10) * 12) / 16 = a + 7.5;
        // expert 1: only group 1 routed (6 tokens); layer 3 expert 0: only group 0; expert 1: nobody -> 0.
        for (int j = 0; j < kI; ++j) {
            QCOMPARE(act.units[at(2, 0, 0, j)], activationValue(0, 0, 0, j) + 7.5);
            QCOMPARE(act.units[at(2, 0, 1, j)], activationValue(0, 1, 1, j));
            QCOMPARE(act.units[at(2, 1, 0, j)], activationValue(1, 0, 0, j));
            QCOMPARE(act.units[at(2, 1, 1, j)], 0.0);
            QCOMPARE(act.units[at(0, 1, 0, j)], activationValue(1, 0, 0, j));
        }
        // Expert sums: sum_j (c + j) = 3c + 3.
        QCOMPARE(mask.experts.size(), std::size_t(3 * 2 * kE));
        QCOMPARE(mag.experts.size(), std::size_t(2 * kE));
        for (int l = 0; l < 2; ++l)
            for (int e = 0; e < kE; ++e) {
                for (int g = 0; g < 2; ++g)
                    QCOMPARE(
                        mask.experts[static_cast<std::size_t>((g * 2 + l) * kE + e)], 3 * maskValue(l, g, e, 0) + 3);
                QCOMPARE(mask.experts[static_cast<std::size_t>((2 * 2 + l) * kE + e)],
                    3 * (maskValue(l, 0, e, 0) + 4.5) + 3);
                QCOMPARE(mag.experts[static_cast<std::size_t>(l * kE + e)], 3 * magnitudeValue(l, e, 0) + 3);
            }
        // Concentration: 6 units per layer, 12 per row, so every fraction takes one unit: max / sum.
        // mask row d, layer l: max 6 + 6d + 12l, sum 21 + 36d + 72l; all layers: 18 + 6d over 114 + 72d;
        // pooled (+4.5 each): 10.5 + 12l over 48 + 72l, all layers 22.5 / 168.
        const std::size_t F = kConcentrationFractions.size();
        QCOMPARE(mask.concentration.size(), 3 * 3 * F);
        QCOMPARE(mag.concentration.size(), 1 * 3 * F);
        const auto share = [&](const FisherFormTable& f, int r, int l, std::size_t k) {
            return f.concentration[(static_cast<std::size_t>(r) * 3 + static_cast<std::size_t>(l)) * F + k];
        };
        for (std::size_t k = 0; k < F; ++k) {
            for (int d = 0; d < 2; ++d) {
                for (int l = 0; l < 2; ++l)
                    QCOMPARE(share(mask, d, l, k), (6.0 + 6 * d + 12 * l) / (21.0 + 36 * d + 72 * l));
                QCOMPARE(share(mask, d, 2, k), (18.0 + 6 * d) / (114.0 + 72 * d));
            }
            QCOMPARE(share(mask, 2, 0, k), 10.5 / 48.0);
            QCOMPARE(share(mask, 2, 1, k), 22.5 / 120.0);
            QCOMPARE(share(mask, 2, 2, k), 22.5 / 168.0);
            // magnitude: layer l max 105 + 10l over 615 + 60l; all 115 / 1290.
            QCOMPARE(share(mag, 0, 0, k), 105.0 / 615.0);
            QCOMPARE(share(mag, 0, 1, k), 115.0 / 675.0);
            QCOMPARE(share(mag, 0, 2, k), 115.0 / 1290.0);
        }
    }

    void tablesRefuseBadInput()
    {
        QVERIFY_THROWS_EXCEPTION(Error, fisherTables(handResult(), { "only one" }));
        FisherResult none = handResult();
        none.layers.clear();
        QVERIFY_THROWS_EXCEPTION(Error, fisherTables(none, { "x", "y" }));
        // "pooled" is the name of the pooled row.
        const QString reserved = test::inputErrorOf([] { fisherTables(handResult(), { "x", "pooled" }); });
        QVERIFY2(reserved.contains(QLatin1String("\x27pooled\x27")) && reserved.contains(QLatin1String("reserved")),
            qPrintable(reserved));
    }

    // The pooled row of a grouped run is the Fisher over all samples at once (an ungrouped run).
    void pooledEqualsUngroupedRun()
    {
        const FisherTables t = fisherTables(m_grouped, { "alpha", "beta", "gamma" });
        QCOMPARE(m_ungrouped.groups, 1);
        QCOMPARE(t.samples, (std::vector<int64_t> { 2, 2, 2, 6 }));
        QCOMPARE(t.tokens, (std::vector<int64_t> { 33 + 27, 20 + 38, 41 + 16, 175 }));
        QCOMPARE(t.samples.back(), m_ungrouped.samples);
        QCOMPARE(t.tokens.back(), m_ungrouped.tokens);
        const auto L = static_cast<int64_t>(t.layers.size()), E = t.numExperts, I = t.intermediate, D = int64_t { 3 };
        QCOMPARE(static_cast<std::size_t>(L), m_ungrouped.layers.size());
        for (int64_t l = 0; l < L; ++l) {
            const FisherLayer& u = m_ungrouped.layers[static_cast<std::size_t>(l)];
            for (int64_t e = 0; e < E; ++e)
                QCOMPARE(t.expertTokens[static_cast<std::size_t>((D * L + l) * E + e)],
                    u.expertTokens[static_cast<std::size_t>(e)]);
        }
        const auto ungroupedForm = [&](const std::string& form) {
            std::vector<double> all;
            for (const FisherLayer& l : m_ungrouped.layers) {
                const std::vector<double>& v = form == "mask" ? l.mask
                    : form == "weight"                        ? l.weight
                    : form == "grad_abs"                      ? l.gradAbs
                    : form == "activation"                    ? l.activation
                                                              : l.magnitude;
                all.insert(all.end(), v.begin(), v.end());
            }
            return all;
        };
        const std::size_t row = static_cast<std::size_t>(L * E * I);
        for (const char* form : { "mask", "weight", "grad_abs", "activation" }) {
            const FisherFormTable* f = t.find(form);
            QVERIFY2(f, form);
            const std::span<const double> pooled = std::span<const double>(f->units).subspan(3 * row, row);
            const std::vector<double> reference = ungroupedForm(form);
            const double err = relativeError(pooled, reference);
            qInfo("%s: pooled row vs ungrouped run, max relative error %.3g", form, err);
            // Both runs (threads 1, this process) compute the same per-sample gradients bit for bit; the
            // pooled row sums them through the group means, i.e. float64 sums in another order: 1e-12.
            QVERIFY(err <= 1e-12);
            // The domains really are different (the test would not see a pooled row copied from one of them).
            QVERIFY(relativeError(std::span<const double>(f->units).subspan(0, row), reference) > 1e-3);
            // Domain rows are the grouped run's own.
            for (int64_t d = 0; d < D; ++d)
                for (int64_t l = 0; l < L; ++l) {
                    const FisherLayer& g = m_grouped.layers[static_cast<std::size_t>(l)];
                    const std::vector<double>& v = std::string(form) == "mask" ? g.mask
                        : std::string(form) == "weight"                        ? g.weight
                        : std::string(form) == "grad_abs"                      ? g.gradAbs
                                                                               : g.activation;
                    QVERIFY(std::equal(v.begin() + d * E * I, v.begin() + (d + 1) * E * I,
                        f->units.begin() + static_cast<std::ptrdiff_t>(d * L * E * I + l * E * I)));
                }
        }
        QCOMPARE(t.find("magnitude")->units, ungroupedForm("magnitude"));
    }

    // computeFisherTables is fisherTables of the same run, with its params. The units compare exactly:
    // its computeFisher runs with the same options (threads 1) in this process, so the same operations
    // in the same order, on any CPU.
    void computeTablesParams()
    {
        const FisherTables expected = fisherTables(m_grouped, { "alpha", "beta", "gamma" });
        QCOMPARE(m_tables.forms.size(), expected.forms.size());
        for (std::size_t i = 0; i < expected.forms.size(); ++i) {
            QCOMPARE(m_tables.forms[i].form, expected.forms[i].form);
            QVERIFY2(m_tables.forms[i].units == expected.forms[i].units, expected.forms[i].form.c_str());
        }
        const nlohmann::json p = nlohmann::json::parse(m_tables.paramsJson);
        QCOMPARE(p.at("format").get<std::string>(), std::string("moeatlas-fisher"));
        QCOMPARE(p.at("version").get<int>(), 1);
        QCOMPARE(p.at("domains").get<std::vector<std::string>>(),
            (std::vector<std::string> { "alpha", "beta", "gamma", "pooled" }));
        QCOMPARE(p.at("layers").get<std::vector<int>>(), (std::vector<int> { 0, 1, 2, 3 }));
        QCOMPARE(p.at("num_experts").get<int64_t>(), int64_t { 16 });
        QCOMPARE(p.at("intermediate_size").get<int64_t>(), int64_t { 128 });
        QCOMPARE(p.at("forms").get<std::vector<std::string>>(),
            (std::vector<std::string> { "mask", "weight", "grad_abs", "activation", "magnitude" }));
        QCOMPARE(p.at("samples").get<int64_t>(), int64_t { 6 });
        QCOMPARE(p.at("tokens").get<int64_t>(), int64_t { 175 });
        QCOMPARE(p.at("token_source").get<std::string>(), std::string("hand-made test tokens"));
        QCOMPARE(p.at("checkpoint").get<std::string>(), m_modelDir);
        QCOMPARE(p.at("config_sha256").get<std::string>(), std::string("0123abcd"));
        QCOMPARE(p.at("mode").get<std::string>(), std::string("resident"));
        QCOMPARE(p.at("threads").get<int>(), 1);
        QCOMPARE(p.at("concentration_fractions").get<std::vector<double>>(),
            (std::vector<double> { 1e-5, 1e-4, 1e-3, 1e-2 }));

        // Every domain needs a sequence; "pooled" is refused before any computation.
        const Checkpoint ckpt(m_modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_modelDir + "/config.json");
        EvalTokens tokens { { "alpha", "empty" }, m_tokens, m_offsets, { 0, 0, 0, 0, 0, 0 }, "two domains" };
        QString error = test::inputErrorOf([&] { computeFisherTables(ckpt, spec, tokens, {}, {}); });
        QVERIFY2(error.contains(QLatin1String("'empty'")) && error.contains(QLatin1String("two domains")),
            qPrintable(error));
        tokens.domains = { "pooled" };
        int progressCalls = 0;
        error = test::inputErrorOf([&] {
            computeFisherTables(ckpt, spec, tokens, {}, {}, [&](const Progress&) { return ++progressCalls > 0; });
        });
        QVERIFY2(error.contains(QLatin1String("'pooled'")), qPrintable(error));
        QCOMPARE(progressCalls, 0);
    }

    // write -> read through an atlas file: readFisherTable and readFisherSummary give back the tables.
    void roundTrip()
    {
        const AtlasFile atlas = AtlasFile::openReadOnly(m_validAtlas.toStdString());
        const std::optional<AtlasResults> top = atlas.readResults("fisher");
        QVERIFY(top);
        QCOMPARE(top->paramsJson, m_tables.paramsJson);
        QCOMPARE(QString::fromStdString(top->inputsHash), sha256Of(m_tables.paramsJson));
        const auto array = [&](const AtlasResults& g, const char* name) {
            const AtlasArray* a = g.find(name);
            return a ? *a : AtlasArray { "missing", {}, {} };
        };
        QCOMPARE(array(*top, "layers").values, (std::vector<double> { 0, 1, 2, 3 }));
        QCOMPARE(array(*top, "samples").values, (std::vector<double> { 2, 2, 2, 6 }));
        QCOMPARE(array(*top, "tokens").dims, (std::vector<uint64_t> { 4 }));
        QCOMPARE(array(*top, "expert_tokens").dims, (std::vector<uint64_t> { 4, 4, 16 }));
        QCOMPARE(array(*top, "expert_tokens").values,
            std::vector<double>(m_tables.expertTokens.begin(), m_tables.expertTokens.end()));

        for (const FisherFormTable& f : m_tables.forms) {
            const bool magnitude = f.form == "magnitude";
            const FisherTable t = readFisherTable(m_validAtlas.toStdString(), f.form);
            QCOMPARE(t.form, f.form);
            const std::vector<std::string> rows = magnitude
                ? std::vector<std::string> { "pooled" }
                : std::vector<std::string> { "alpha", "beta", "gamma", "pooled" };
            QCOMPARE(t.domains, rows);
            QCOMPARE(t.layers, (std::vector<int> { 0, 1, 2, 3 }));
            QCOMPARE(t.numExperts, int64_t { 16 });
            QCOMPARE(t.intermediate, int64_t { 128 });
            QCOMPARE(t.params, m_tables.paramsJson);
            QCOMPARE(t.atlas, std::filesystem::path(m_validAtlas.toStdString()));
            QCOMPARE(t.units.size(), f.units.size());
            for (std::size_t i = 0; i < f.units.size(); ++i)
                if (t.units[i] != static_cast<float>(f.units[i]))
                    QFAIL(qPrintable(QStringLiteral("%1 unit %2 differs").arg(QString::fromStdString(f.form)).arg(i)));
            // Rows by domain name; "" and "pooled" are the pooled row; magnitude has one row for all.
            const std::size_t row = 4 * 16 * 128;
            if (magnitude) {
                QCOMPARE(t.row("beta"), 0);
                QCOMPARE(t.row("anything"), 0);
            } else {
                QCOMPARE(t.row("alpha"), 0);
                QCOMPARE(t.row("gamma"), 2);
                QCOMPARE(t.row(""), 3);
                QCOMPARE(t.row("pooled"), 3);
                const std::span<const float> beta = t.rowUnits(1);
                QCOMPARE(beta.size(), row);
                QVERIFY(std::equal(beta.begin(), beta.end(), t.units.begin() + static_cast<std::ptrdiff_t>(row)));
                const QString error = test::inputErrorOf([&] { (void)t.row("delta"); });
                QVERIFY2(error.contains(m_validAtlas) && error.contains(QLatin1String("'delta'"))
                        && error.contains(QLatin1String("alpha, beta, gamma, pooled")),
                    qPrintable(error));
            }
        }
        QCOMPARE(readFisherTable(m_validAtlas.toStdString(), "grad-abs").form, std::string("grad_abs"));

        const std::optional<FisherSummary> s = readFisherSummary(atlas);
        QVERIFY(s);
        QCOMPARE(s->domains, m_tables.domains);
        QCOMPARE(s->layers, m_tables.layers);
        QCOMPARE(s->samples, m_tables.samples);
        QCOMPARE(s->tokens, m_tables.tokens);
        QCOMPARE(s->fractions, (std::vector<double> { 1e-5, 1e-4, 1e-3, 1e-2 }));
        QCOMPARE(s->params, m_tables.paramsJson);
        QCOMPARE(s->forms.size(), m_tables.forms.size());
        for (std::size_t i = 0; i < s->forms.size(); ++i) {
            QCOMPARE(s->forms[i].form, m_tables.forms[i].form);
            QCOMPARE(s->forms[i].rows, m_tables.forms[i].form == "magnitude" ? int64_t { 1 } : int64_t { 4 });
            QCOMPARE(s->forms[i].experts, m_tables.forms[i].experts);
            QCOMPARE(s->forms[i].concentration, m_tables.forms[i].concentration);
        }
        QVERIFY(s->find("grad-abs"));
        QVERIFY(!s->find("nope"));
        QVERIFY(!readFisherSummary(AtlasFile::openReadOnly(m_demoAtlas.toStdString())));
    }

    // A new run replaces /fisher whole: forms and an ablation of an older run do not survive; the
    // rest of the atlas does.
    void rewriteReplacesWhole()
    {
        FisherTables maskOnly = m_tables;
        maskOnly.forms.erase(std::remove_if(maskOnly.forms.begin(), maskOnly.forms.end(),
                                 [](const FisherFormTable& f) { return f.form != "mask"; }),
            maskOnly.forms.end());
        const QString path = editedCopy([&](AtlasFile& u) {
            writeFisherTables(u, m_tables);
            u.writeResults("fisher/ablation", AtlasResults { "{}", "", { { "nll", { 1 }, { 1.0 } } } });
        });
        {
            AtlasFile u = AtlasFile::openForUpdate(path.toStdString());
            writeFisherTables(u, maskOnly);
            u.commitUpdate();
        }
        const AtlasFile atlas = AtlasFile::openReadOnly(path.toStdString());
        const std::vector<std::string> groups = atlas.resultGroups("fisher");
        QCOMPARE(
            std::set<std::string>(groups.begin(), groups.end()), (std::set<std::string> { "concentration", "mask" }));
        QVERIFY(!atlas.readResults("fisher/ablation"));
        QCOMPARE(atlas.readResults("fisher/concentration")->arrays.size(), std::size_t(1));
        const AtlasFile demo = AtlasFile::openReadOnly(m_demoAtlas.toStdString());
        QCOMPARE(atlas.readResults("scores/peu")->arrays.front().values,
            demo.readResults("scores/peu")->arrays.front().values);
        QCOMPARE(atlas.tokens(), demo.tokens());
        QVERIFY(atlas.isComplete());
        const QString error = test::inputErrorOf([&] { readFisherTable(atlas, "weight"); });
        QVERIFY2(error.contains(path) && error.contains(QLatin1String("/fisher/weight/units"))
                && error.contains(QLatin1String("missing")),
            qPrintable(error));
    }

    // Broken /fisher groups, made with the atlas API: readFisherTable names the atlas and the dataset.
    void malformedTable_data()
    {
        QTest::addColumn<QString>("edit");
        QTest::addColumn<QString>("form");
        QTest::addColumn<QStringList>("keywords");
        QTest::newRow("no /fisher") << QStringLiteral("none") << QStringLiteral("mask")
                                    << QStringList { QStringLiteral("/fisher"), QStringLiteral("no Fisher tables") };
        QTest::newRow("unknown form") << QStringLiteral("valid") << QStringLiteral("fishy")
                                      << QStringList { QStringLiteral("unknown Fisher form"),
                                             QStringLiteral("'fishy'") };
        QTest::newRow("params not JSON") << QStringLiteral("params garbage") << QStringLiteral("mask")
                                         << QStringList { QStringLiteral("/fisher: attribute params") };
        QTest::newRow("params without num_experts")
            << QStringLiteral("params no num_experts") << QStringLiteral("mask")
            << QStringList { QStringLiteral("params"), QStringLiteral("num_experts") };
        QTest::newRow("params domains without pooled")
            << QStringLiteral("params no pooled") << QStringLiteral("mask")
            << QStringList { QStringLiteral("params"), QStringLiteral("\"pooled\"") };
        QTest::newRow("params layers not a list")
            << QStringLiteral("params layers string") << QStringLiteral("weight")
            << QStringList { QStringLiteral("params"), QStringLiteral("expected JSON") };
        QTest::newRow("units of the wrong shape")
            << QStringLiteral("mask shape") << QStringLiteral("mask")
            << QStringList { QStringLiteral("/fisher/mask/units"), QStringLiteral("[4, 4, 16, 128]") };
        QTest::newRow("magnitude with a domain axis")
            << QStringLiteral("magnitude shape") << QStringLiteral("magnitude")
            << QStringList { QStringLiteral("/fisher/magnitude/units"), QStringLiteral("[4, 16, 128]") };
        QTest::newRow("negative score") << QStringLiteral("mask negative") << QStringLiteral("mask")
                                        << QStringList { QStringLiteral("/fisher/mask/units"),
                                               QStringLiteral("negative") };
        QTest::newRow("NaN score") << QStringLiteral("mask nan") << QStringLiteral("grad-abs")
                                   << QStringList { QStringLiteral("/fisher/grad_abs/units"),
                                          QStringLiteral("non-finite") };
    }

    void malformedTable()
    {
        QFETCH(QString, edit);
        QFETCH(QString, form);
        QFETCH(QStringList, keywords);
        std::map<std::string, AtlasResults> groups = m_validGroups;
        nlohmann::json params = nlohmann::json::parse(m_tables.paramsJson);
        const auto units = [&](const std::string& f) -> AtlasArray& {
            for (AtlasArray& a : groups.at("fisher/" + f).arrays)
                if (a.name == "units")
                    return a;
            throw std::runtime_error("no units");
        };
        if (edit == QLatin1String("none"))
            groups.clear();
        else if (edit == QLatin1String("params garbage"))
            groups["fisher"].paramsJson = "{\"domains\": [";
        else if (edit == QLatin1String("params no num_experts")) {
            params.erase("num_experts");
            groups["fisher"].paramsJson = params.dump();
        } else if (edit == QLatin1String("params no pooled")) {
            params["domains"] = { "alpha", "beta", "gamma", "all" };
            groups["fisher"].paramsJson = params.dump();
        } else if (edit == QLatin1String("params layers string")) {
            params["layers"] = "0-3";
            groups["fisher"].paramsJson = params.dump();
        } else if (edit == QLatin1String("mask shape")) {
            units("mask").dims = { 4, 4, 128, 16 }; // same count, axes swapped
        } else if (edit == QLatin1String("magnitude shape")) {
            AtlasArray& a = units("magnitude");
            a.dims = { 1, 4, 16, 128 };
        } else if (edit == QLatin1String("mask negative")) {
            units("mask").values[12345] = -1e-9;
        } else if (edit == QLatin1String("mask nan")) {
            units("grad_abs").values[7] = std::nan("");
        } else {
            QVERIFY(edit == QLatin1String("valid"));
        }
        const QString path = editedCopy([&](AtlasFile& u) { writeGroups(u, groups); });
        const QString error = test::inputErrorOf([&] { readFisherTable(path.toStdString(), form.toStdString()); });
        QVERIFY2(error.contains(path), qPrintable(QStringLiteral("message does not name the atlas: ") + error));
        for (const QString& k : keywords)
            QVERIFY2(
                error.contains(k), qPrintable(QStringLiteral("message lacks '") + k + QStringLiteral("': ") + error));
        // The valid groups read fine (the edit is what breaks it).
        if (edit != QLatin1String("none") && edit != QLatin1String("valid")) {
            const QString fine = test::inputErrorOf([&] { readFisherTable(m_validAtlas.toStdString(), "mask"); });
            QVERIFY2(fine.isEmpty(), qPrintable(fine));
        }
    }

    // readFisherSummary: the small tables' shapes are checked too.
    void malformedSummary_data()
    {
        QTest::addColumn<QString>("edit");
        QTest::addColumn<QStringList>("keywords");
        QTest::newRow("samples of the wrong length")
            << QStringLiteral("samples") << QStringList { QStringLiteral("/fisher/samples"), QStringLiteral("[4]") };
        QTest::newRow("experts of the wrong shape") << QStringLiteral(
            "experts") << QStringList { QStringLiteral("/fisher/weight/experts"), QStringLiteral("[4, 4, 16]") };
        QTest::newRow("concentration missing") << QStringLiteral(
            "no concentration") << QStringList { QStringLiteral("/fisher/concentration"), QStringLiteral("missing") };
        QTest::newRow("concentration without fractions") << QStringLiteral(
            "no fractions") << QStringList { QStringLiteral("/fisher/concentration"), QStringLiteral("fractions") };
        QTest::newRow("concentration of a form missing") << QStringLiteral(
            "no activation shares") << QStringList { QStringLiteral("/fisher/concentration/activation") };
    }

    void malformedSummary()
    {
        QFETCH(QString, edit);
        QFETCH(QStringList, keywords);
        std::map<std::string, AtlasResults> groups = m_validGroups;
        const auto array = [&](const std::string& g, const std::string& name) -> AtlasArray& {
            for (AtlasArray& a : groups.at(g).arrays)
                if (a.name == name)
                    return a;
            throw std::runtime_error("no array " + name);
        };
        if (edit == QLatin1String("samples")) {
            AtlasArray& s = array("fisher", "samples");
            s.values.pop_back();
            s.dims = { 3 };
        } else if (edit == QLatin1String("experts")) {
            array("fisher/weight", "experts").dims = { 4, 16, 4 };
        } else if (edit == QLatin1String("no concentration")) {
            groups.erase("fisher/concentration");
        } else if (edit == QLatin1String("no fractions")) {
            groups["fisher/concentration"].paramsJson = "{\"fraction\": [0.01]}";
        } else {
            auto& arrays = groups["fisher/concentration"].arrays;
            arrays.erase(std::remove_if(
                             arrays.begin(), arrays.end(), [](const AtlasArray& a) { return a.name == "activation"; }),
                arrays.end());
        }
        const QString path = editedCopy([&](AtlasFile& u) { writeGroups(u, groups); });
        const AtlasFile atlas = AtlasFile::openReadOnly(path.toStdString());
        const QString error = test::inputErrorOf([&] { readFisherSummary(atlas); });
        QVERIFY2(error.contains(path), qPrintable(QStringLiteral("message does not name the atlas: ") + error));
        for (const QString& k : keywords)
            QVERIFY2(
                error.contains(k), qPrintable(QStringLiteral("message lacks '") + k + QStringLiteral("': ") + error));
    }
};

QTEST_GUILESS_MAIN(TstFisherStore)
#include "tst_fisher_store.moc"
