// `moeatlas fisher` on copies of the demo atlas (resources/demo), checked against independent runs:
// - /fisher equals computeFisher on the atlas's calibration tokens (selected here from the atlas's
//   own arrays) grouped by domain, the pooled row an ungrouped computeFisher; expert sums and
//   concentration recomputed here; params and inputs_hash.
// - /fisher/ablation: the units each variant removed are the top-n of the stored scores (ranked
//   here), and its losses equal Executor::evaluate with unit masks built here (full-width masked path).
// - -d/--ablation-domain: Fisher on held-out domains, the ablation measured on other held-out text.
// - --mode streaming stores the same tables as resident; a rerun replaces /fisher only.
// - Broken input (options, checkpoint of another config, incomplete atlas) and Ctrl-C: exit != 0 (130),
//   a message naming the field, the atlas bytes unchanged and nothing left next to it.
// h5pyReadsLayout (label reference) has h5py + numpy read /fisher as docs/atlas-format.md says.
#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "fisher/fisher_ablation.h"
#include "runtime/capture.h"
#include "runtime/executor.h"
#include "runtime/fisher.h"
#include "test_io.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QCryptographicHash>
#include <QDir>
#include <QFile>
#include <QProcess>
#include <QRegularExpression>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <map>
#include <numeric>
#include <set>
#include <tuple>

using namespace moeatlas;

namespace {

constexpr int64_t kE = 16, kI = 128, kL = 4, kRow = kL * kE * kI; // the demo model
const std::vector<std::string> kDemoDomains { "arith", "code", "json", "prose" };

QByteArray fileHash(const QString& path)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly))
        return {};
    QCryptographicHash h(QCryptographicHash::Sha256);
    h.addData(&f);
    return h.result().toHex();
}

AtlasArray arrayOf(const AtlasFile& atlas, const std::string& group, const std::string& name)
{
    const std::optional<AtlasResults> g = atlas.readResults(group);
    const AtlasArray* a = g ? g->find(name) : nullptr;
    return a ? *a : AtlasArray { "missing", {}, {} };
}

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

// One form of a FisherResult as a [G, L, E, I] array.
std::vector<double> formOf(const FisherResult& r, const std::string& form)
{
    std::vector<double> out;
    for (int g = 0; g < r.groups; ++g)
        for (const FisherLayer& l : r.layers) {
            const std::vector<double>& v = form == "mask" ? l.mask
                : form == "weight"                        ? l.weight
                : form == "grad_abs"                      ? l.gradAbs
                                                          : l.activation;
            out.insert(out.end(), v.begin() + g * kE * kI, v.begin() + (g + 1) * kE * kI);
        }
    return out;
}

// Share of the largest max(1, ceil(f n)) scores in their total, by a full sort.
std::vector<double> shares(std::vector<double> s, const std::vector<double>& fractions)
{
    std::sort(s.begin(), s.end(), std::greater<>());
    const double total = std::accumulate(s.begin(), s.end(), 0.0);
    std::vector<double> out;
    for (const double f : fractions) {
        const auto count
            = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(f * static_cast<double>(s.size()))));
        out.push_back(
            total > 0 ? std::accumulate(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(count), 0.0) / total : 0.0);
    }
    return out;
}

// Tokens, sequences and their domains.
struct TokenSet {
    std::vector<std::string> domains;
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets { 0 };
    std::vector<int> group;

    void add(const std::vector<int32_t>& seq, int domain)
    {
        tokens.insert(tokens.end(), seq.begin(), seq.end());
        offsets.push_back(static_cast<int64_t>(tokens.size()));
        group.push_back(domain);
    }
};

// The first `perDomain` sequences of each domain, read from the atlas's own arrays.
TokenSet atlasTokens(const QString& atlasPath, int perDomain)
{
    const AtlasFile atlas = AtlasFile::openReadOnly(atlasPath.toStdString());
    TokenSet set;
    for (const AtlasDomain& d : atlas.calibration().domains)
        set.domains.push_back(d.name);
    const std::vector<int32_t> ids = atlas.tokens();
    const std::vector<int64_t> offsets = atlas.seqOffsets();
    const std::vector<int16_t> domain = atlas.domainIds();
    std::vector<int> taken(set.domains.size(), 0);
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
        const int d = domain[static_cast<std::size_t>(offsets[s])];
        if (taken[static_cast<std::size_t>(d)]++ < perDomain)
            set.add({ ids.begin() + offsets[s], ids.begin() + offsets[s + 1] }, d);
    }
    return set;
}

// Held-out text packed as the CLI's -d/--ablation-domain options pack it (--seq-len 128 --add-bos).
TokenSet packedText(const std::string& model, const std::vector<std::string>& domainArgs)
{
    CaptureParams p;
    p.checkpoint = model;
    for (const std::string& d : domainArgs)
        p.domains.push_back(parseDomainArgument(d));
    p.packing.seqLen = 128;
    p.addBos = true;
    const CalibrationSet cal = loadCalibration(p, 512);
    TokenSet set;
    for (std::size_t d = 0; d < cal.domains.size(); ++d) {
        set.domains.push_back(cal.domains[d].name);
        for (const std::vector<int32_t>& seq : cal.domains[d].sequences)
            set.add(seq, static_cast<int>(d));
    }
    return set;
}

} // namespace

class TstCliFisher : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    QString m_model, m_demoAtlas;
    QString m_resident; // copy of the demo atlas after `fisher --max-samples 2 --ablate 0,5,40 --seed 3`
    int m_copies = 0;

    QString src(const QString& relative) const { return test::sourcePath(relative); }

    // A fresh writable copy of the demo atlas in a directory of its own.
    QString copyDemo(const QString& from = {})
    {
        const QString dir = m_dir.filePath(QStringLiteral("run%1").arg(++m_copies));
        QDir().mkpath(dir);
        const QString path = dir + QStringLiteral("/demo.atlas.h5");
        if (!QFile::copy(from.isEmpty() ? m_demoAtlas : from, path))
            return {};
        QFile::setPermissions(path, QFile::ReadOwner | QFile::WriteOwner);
        return path;
    }

    // moeatlas fisher ATLAS args --threads 1 (one OpenMP thread: two run several times slower on a
    // loaded 2-core machine) --checkpoint <demo model> unless args name one.
    QStringList fisherArgs(const QString& atlas, const QStringList& args) const
    {
        QStringList all { QStringLiteral("fisher"), atlas };
        all << args << QStringLiteral("--threads") << QStringLiteral("1");
        if (!args.contains(QStringLiteral("--checkpoint")))
            all << QStringLiteral("--checkpoint") << m_model;
        return all;
    }

    QString residentAtlas()
    {
        if (m_resident.isEmpty()) {
            const QString atlas = copyDemo();
            const auto r = test::runCli(fisherArgs(atlas,
                { QStringLiteral("--max-samples"), QStringLiteral("2"), QStringLiteral("--ablate"),
                    QStringLiteral("0,5,40"), QStringLiteral("--seed"), QStringLiteral("3") }));
            if (r.exitCode == 0)
                m_resident = atlas;
            m_residentStdout = r.stdOut;
        }
        return m_resident;
    }
    QString m_residentStdout;

    // /fisher of `atlas` against computeFisher on `set` (grouped, and ungrouped for the pooled row). The
    // CLI (--threads 1) and computeFisher here (threads 1) run the same per-sample operations on the same
    // shapes on this machine, so the per-sample gradients are the same numbers; only float64 sums and
    // means (the pooled row is the sample-weighted mean of the domain rows) may run in another order,
    // hence 1e-12 relative; shares lie in [0, 1], so 1e-12 absolute is relative to their scale.
    void checkTables(const QString& atlasPath, const TokenSet& set, const std::vector<std::string>& forms)
    {
        const Checkpoint ckpt(m_model.toStdString());
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_model.toStdString() + "/config.json");
        FisherOptions o;
        o.threads = 1;
        const auto has = [&](const char* f) { return std::find(forms.begin(), forms.end(), f) != forms.end(); };
        o.maskForm = has("mask");
        o.weightForm = has("weight");
        o.gradAbs = has("grad_abs");
        o.activation = has("activation");
        o.magnitude = has("magnitude");
        const FisherResult grouped = computeFisher(ckpt, spec, set.tokens, set.offsets, set.group, o);
        const FisherResult all = computeFisher(ckpt, spec, set.tokens, set.offsets, {}, o);

        const AtlasFile atlas = AtlasFile::openReadOnly(atlasPath.toStdString());
        const std::optional<AtlasResults> top = atlas.readResults("fisher");
        QVERIFY(top);
        const nlohmann::json p = nlohmann::json::parse(top->paramsJson);
        std::vector<std::string> rows = set.domains;
        rows.push_back("pooled");
        const auto D = static_cast<int64_t>(set.domains.size());
        QCOMPARE(p.at("domains").get<std::vector<std::string>>(), rows);
        QCOMPARE(p.at("forms").get<std::vector<std::string>>(), forms);
        QCOMPARE(arrayOf(atlas, "fisher", "layers").values, (std::vector<double> { 0, 1, 2, 3 }));
        std::vector<double> samples, tokens;
        for (int64_t d = 0; d < D; ++d) {
            samples.push_back(static_cast<double>(std::count(set.group.begin(), set.group.end(), static_cast<int>(d))));
            double n = 0;
            for (std::size_t s = 0; s < set.group.size(); ++s)
                if (set.group[s] == d)
                    n += static_cast<double>(set.offsets[s + 1] - set.offsets[s]);
            tokens.push_back(n);
        }
        samples.push_back(static_cast<double>(set.group.size()));
        tokens.push_back(static_cast<double>(set.tokens.size()));
        QCOMPARE(arrayOf(atlas, "fisher", "samples").values, samples);
        QCOMPARE(arrayOf(atlas, "fisher", "tokens").values, tokens);
        const AtlasArray routed = arrayOf(atlas, "fisher", "expert_tokens");
        QCOMPARE(routed.dims, (std::vector<uint64_t> { static_cast<uint64_t>(D + 1), kL, kE }));
        for (int64_t l = 0; l < kL; ++l)
            for (int64_t e = 0; e < kE; ++e) {
                for (int64_t d = 0; d < D; ++d)
                    QCOMPARE(routed.values[static_cast<std::size_t>((d * kL + l) * kE + e)],
                        static_cast<double>(grouped.layers[static_cast<std::size_t>(l)]
                                                .expertTokens[static_cast<std::size_t>(d * kE + e)]));
                QCOMPARE(routed.values[static_cast<std::size_t>((D * kL + l) * kE + e)],
                    static_cast<double>(
                        all.layers[static_cast<std::size_t>(l)].expertTokens[static_cast<std::size_t>(e)]));
            }

        const std::vector<double> fractions { 1e-5, 1e-4, 1e-3, 1e-2 };
        for (const std::string& form : forms) {
            const bool magnitude = form == "magnitude";
            const int64_t R = magnitude ? 1 : D + 1;
            const AtlasArray units = arrayOf(atlas, "fisher/" + form, "units");
            std::vector<uint64_t> dims { kL, kE, kI };
            if (!magnitude)
                dims.insert(dims.begin(), static_cast<uint64_t>(R));
            QCOMPARE(units.dims, dims);
            if (magnitude) {
                std::vector<double> ref;
                for (const FisherLayer& l : grouped.layers)
                    ref.insert(ref.end(), l.magnitude.begin(), l.magnitude.end());
                QCOMPARE(units.values, ref);
            } else {
                const std::span<const double> v(units.values);
                const double domainErr
                    = relativeError(v.subspan(0, static_cast<std::size_t>(D * kRow)), formOf(grouped, form));
                const double pooledErr
                    = relativeError(v.subspan(static_cast<std::size_t>(D * kRow)), formOf(all, form));
                qInfo("%s: domain rows vs grouped computeFisher %.3g, pooled row vs ungrouped %.3g (relative)",
                    form.c_str(), domainErr, pooledErr);
                QVERIFY(domainErr <= 1e-12);
                QVERIFY(pooledErr <= 1e-12);
            }
            // Expert sums and concentration, recomputed from the stored units.
            const AtlasArray experts = arrayOf(atlas, "fisher/" + form, "experts");
            QCOMPARE(experts.values.size(), units.values.size() / kI);
            for (std::size_t k = 0; k < experts.values.size(); ++k) {
                const double sum = std::accumulate(units.values.begin() + static_cast<std::ptrdiff_t>(k * kI),
                    units.values.begin() + static_cast<std::ptrdiff_t>((k + 1) * kI), 0.0);
                QVERIFY(std::fabs(experts.values[k] - sum) <= 1e-12 * std::max(1e-300, std::fabs(sum)));
            }
            const AtlasArray conc = arrayOf(atlas, "fisher/concentration", form);
            QCOMPARE(conc.dims, (std::vector<uint64_t> { static_cast<uint64_t>(R), kL + 1, 4 }));
            for (int64_t r = 0; r < R; ++r)
                for (int64_t l = 0; l <= kL; ++l) {
                    const auto first
                        = units.values.begin() + static_cast<std::ptrdiff_t>(r * kRow + (l < kL ? l * kE * kI : 0));
                    const std::vector<double> want = shares({ first, first + (l < kL ? kE * kI : kRow) }, fractions);
                    for (std::size_t k = 0; k < 4; ++k)
                        QVERIFY2(std::fabs(conc.values[static_cast<std::size_t>((r * (kL + 1) + l) * 4) + k] - want[k])
                                <= 1e-12,
                            qPrintable(QStringLiteral("%1 concentration [%2, %3, %4]")
                                           .arg(QString::fromStdString(form))
                                           .arg(r)
                                           .arg(l)
                                           .arg(k)));
                }
        }
    }

    // /fisher/ablation of `atlas` against masks built here and evaluated on `set`; counts n > 0 in order.
    void checkAblation(const QString& atlasPath, const TokenSet& set, const std::vector<int64_t>& counts,
        const std::vector<std::string>& rankingRows, uint64_t seed)
    {
        const AtlasFile atlas = AtlasFile::openReadOnly(atlasPath.toStdString());
        const std::optional<AtlasResults> g = atlas.readResults("fisher/ablation");
        QVERIFY(g);
        const nlohmann::json p = nlohmann::json::parse(g->paramsJson);
        QCOMPARE(p.at("form").get<std::string>(), std::string("mask"));
        QCOMPARE(p.at("seed").get<uint64_t>(), seed);
        QCOMPARE(p.at("domains").get<std::vector<std::string>>(), set.domains);
        // Rows of the ranking scores as stored.
        const nlohmann::json fp = nlohmann::json::parse(atlas.readResults("fisher")->paramsJson);
        const auto fisherRows = fp.at("domains").get<std::vector<std::string>>();
        const AtlasArray scores = arrayOf(atlas, "fisher/mask", "units");
        std::vector<std::string> names { "full" };
        std::vector<std::vector<int64_t>> removed { {} };
        for (const int64_t n : counts) {
            for (const std::string& r : rankingRows) {
                const auto row
                    = static_cast<std::size_t>(std::find(fisherRows.begin(), fisherRows.end(), r) - fisherRows.begin());
                QVERIFY(row < fisherRows.size());
                std::vector<int64_t> idx(static_cast<std::size_t>(kRow));
                std::iota(idx.begin(), idx.end(), int64_t { 0 });
                const double* s = scores.values.data() + row * kRow;
                std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
                names.push_back("top-" + std::to_string(n) + ":" + r);
                removed.emplace_back(idx.begin(), idx.begin() + n);
            }
            names.push_back("random-" + std::to_string(n));
            removed.push_back(randomUnits(kRow, n, seed));
        }
        const std::size_t V = names.size();
        QCOMPARE(p.at("variants").size(), V);
        const AtlasArray ru = arrayOf(atlas, "fisher/ablation", "removed_units");
        const uint64_t M = static_cast<uint64_t>(counts.empty() ? 0 : counts.back());
        QCOMPARE(ru.dims, (std::vector<uint64_t> { V, M, 3 }));
        std::vector<ExpertMask> masks;
        for (std::size_t v = 0; v < V; ++v) {
            QCOMPARE(p["variants"][v].at("name").get<std::string>(), names[v]);
            QCOMPARE(p["variants"][v].at("removed").get<int64_t>(), static_cast<int64_t>(removed[v].size()));
            std::set<std::tuple<int, int, int>> gone;
            for (std::size_t k = 0; k < M; ++k) {
                const double* row = &ru.values[(v * M + k) * 3];
                if (k >= removed[v].size()) {
                    QVERIFY(row[0] == -1 && row[1] == -1 && row[2] == -1);
                    continue;
                }
                const int64_t u = removed[v][k];
                QCOMPARE(row[0], static_cast<double>(u / (kE * kI)));
                QCOMPARE(row[1], static_cast<double>(u / kI % kE));
                QCOMPARE(row[2], static_cast<double>(u % kI));
                gone.insert({ static_cast<int>(row[0]), static_cast<int>(row[1]), static_cast<int>(row[2]) });
            }
            ExpertMask mask { names[v], {}, {}, {}, {} };
            if (v > 0)
                for (int l = 0; l < kL; ++l) {
                    auto& experts = mask.units[l];
                    experts.resize(kE);
                    for (int e = 0; e < kE; ++e)
                        for (int j = 0; j < kI; ++j)
                            if (!gone.count({ l, e, j }))
                                experts[static_cast<std::size_t>(e)].push_back(j);
                }
            masks.push_back(mask);
        }

        const Checkpoint ckpt(m_model.toStdString());
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_model.toStdString() + "/config.json");
        ExecutorOptions o;
        o.threads = 1;
        o.maskedUnits = true;
        o.keepWeightsResident = true;
        Executor executor(ckpt, spec, o);
        const std::vector<VariantOutput> out = executor.evaluate(set.tokens, set.offsets, masks, true).variants;
        // The CLI evaluates the sliced experts, this the full-width masked ones: other GEMM shapes, so the
        // per-token losses agree up to the order of fp32 sums, within kReorderRtol of the largest |logit|
        // (test_io.h), and so do their means.
        double scale = 0;
        for (const VariantOutput& v : out)
            scale = std::max(scale, test::maxAbs(v.logits));
        const std::size_t D = set.domains.size();
        const AtlasArray nll = arrayOf(atlas, "fisher/ablation", "nll");
        QCOMPARE(nll.dims, (std::vector<uint64_t> { V, D }));
        std::vector<double> predicted(D, 0);
        double worst = 0, effect = 0;
        for (std::size_t v = 0; v < V; ++v)
            for (std::size_t d = 0; d < D; ++d) {
                double sum = 0, n = 0;
                for (std::size_t s = 0; s < set.group.size(); ++s)
                    if (set.group[s] == static_cast<int>(d))
                        for (int64_t t = set.offsets[s]; t + 1 < set.offsets[s + 1]; ++t) {
                            sum += out[v].tokenNll[static_cast<std::size_t>(t)];
                            ++n;
                        }
                predicted[d] = n;
                worst = std::max(worst, std::fabs(nll.values[v * D + d] - sum / n));
                effect = std::max(effect, std::fabs(nll.values[v * D + d] - nll.values[d]));
            }
        qInfo("ablation: max |nll - masked evaluation| %.3g (max |logit| %.3g) over %zu variants; largest change "
              "from the full model %.3f",
            worst, scale, V, effect);
        QVERIFY(worst <= test::kReorderRtol * scale);
        QVERIFY(effect > 0.01);
        QCOMPARE(arrayOf(atlas, "fisher/ablation", "tokens").values, predicted);
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset (run through ctest)");
        m_model = src(QStringLiteral("resources/demo/model"));
        m_demoAtlas = src(QStringLiteral("resources/demo/demo.atlas.h5"));
        QVERIFY(QFile::exists(m_demoAtlas));
    }

    // The atlas's first 2 sequences per domain: /fisher = computeFisher's numbers, the ablation = a
    // masked evaluation of the units ranked here, params as documented; the rest of the atlas as it was.
    void tablesMatchEngine()
    {
        const QString atlas = residentAtlas();
        QVERIFY2(!atlas.isEmpty(), "moeatlas fisher failed");
        const TokenSet set = atlasTokens(m_demoAtlas, 2);
        QCOMPARE(set.domains, kDemoDomains);
        QCOMPARE(set.group, (std::vector<int> { 0, 0, 1, 1, 2, 2, 3, 3 }));
        checkTables(atlas, set, { "mask", "weight", "grad_abs", "activation", "magnitude" });
        if (QTest::currentTestFailed())
            return;
        checkAblation(atlas, set, { 5, 40 }, { "pooled", "arith", "code", "json", "prose" }, 3);
        if (QTest::currentTestFailed())
            return;

        const AtlasFile a = AtlasFile::openReadOnly(atlas.toStdString());
        const std::optional<AtlasResults> top = a.readResults("fisher");
        QCOMPARE(top->inputsHash,
            QCryptographicHash::hash(QByteArray::fromStdString(top->paramsJson), QCryptographicHash::Sha256)
                .toHex()
                .toStdString());
        const nlohmann::json p = nlohmann::json::parse(top->paramsJson);
        QCOMPARE(p.at("format").get<std::string>(), std::string("moeatlas-fisher"));
        QCOMPARE(p.at("version").get<int>(), 1);
        QCOMPARE(p.at("layers").get<std::vector<int>>(), (std::vector<int> { 0, 1, 2, 3 }));
        QCOMPARE(p.at("num_experts").get<int64_t>(), kE);
        QCOMPARE(p.at("intermediate_size").get<int64_t>(), kI);
        QCOMPARE(p.at("samples").get<int64_t>(), int64_t { 8 });
        QCOMPARE(p.at("tokens").get<int64_t>(), int64_t { 8 * 128 });
        QCOMPARE(p.at("mode").get<std::string>(), std::string("resident"));
        QCOMPARE(p.at("threads").get<int>(), 1);
        const QString source = QString::fromStdString(p.at("token_source").get<std::string>());
        QVERIFY2(source.contains(atlas) && source.contains(QLatin1String("first 2")), qPrintable(source));
        QCOMPARE(QDir(QString::fromStdString(p.at("checkpoint").get<std::string>())).canonicalPath(),
            QDir(m_model).canonicalPath());
        QFile config(m_model + QStringLiteral("/config.json"));
        QVERIFY(config.open(QIODevice::ReadOnly));
        QCOMPARE(QString::fromStdString(p.at("config_sha256").get<std::string>()),
            QString::fromLatin1(QCryptographicHash::hash(config.readAll(), QCryptographicHash::Sha256).toHex()));
        QCOMPARE(p.at("concentration_fractions").get<std::vector<double>>(),
            (std::vector<double> { 1e-5, 1e-4, 1e-3, 1e-2 }));

        // The printed ablation table shows the stored losses (4 decimals).
        const AtlasArray nll = arrayOf(a, "fisher/ablation", "nll");
        const QStringList lines = m_residentStdout.split(QLatin1Char('\n'));
        const auto full = std::find_if(
            lines.begin(), lines.end(), [](const QString& l) { return l.startsWith(QLatin1String("full ")); });
        QVERIFY2(full != lines.end(), qPrintable(m_residentStdout));
        const QStringList cells = full->split(QLatin1Char(' '), Qt::SkipEmptyParts);
        QCOMPARE(cells.size(), 2 + 4);
        for (int d = 0; d < 4; ++d)
            QVERIFY(std::fabs(cells[2 + d].toDouble() - nll.values[static_cast<std::size_t>(d)]) <= 5.01e-5);

        // Only /fisher was added.
        const AtlasFile demo = AtlasFile::openReadOnly(m_demoAtlas.toStdString());
        QVERIFY(a.isComplete());
        QCOMPARE(a.tokens(), demo.tokens());
        QCOMPARE(a.readLogits(2), demo.readLogits(2));
        QCOMPARE(arrayOf(a, "scores/peu", "value").values, arrayOf(demo, "scores/peu", "value").values);
        QCOMPARE(arrayOf(a, "evaluation/default", "nll").values, arrayOf(demo, "evaluation/default", "nll").values);
        QVERIFY(!demo.readResults("fisher"));
    }

    // Streaming in 4 chunks stores the resident run's numbers, bit for bit (two runs of this binary on this
    // machine with --threads 1: the same operations on the same per-sample shapes, runtime/fisher.cpp);
    // --ablate none writes no ablation.
    void streamingEqualsResident()
    {
        const QString resident = residentAtlas();
        QVERIFY(!resident.isEmpty());
        const QString atlas = copyDemo();
        const auto r = test::runCli(fisherArgs(atlas,
            { QStringLiteral("--max-samples"), QStringLiteral("2"), QStringLiteral("--mode"),
                QStringLiteral("streaming"), QStringLiteral("--chunk-tokens"), QStringLiteral("256"),
                QStringLiteral("--ablate"), QStringLiteral("none") }));
        QCOMPARE(r.exitCode, 0);
        QVERIFY2(r.stdErr.contains(QLatin1String("streaming mode")), qPrintable(r.stdErr));
        const AtlasFile a = AtlasFile::openReadOnly(atlas.toStdString());
        const AtlasFile b = AtlasFile::openReadOnly(resident.toStdString());
        const nlohmann::json p = nlohmann::json::parse(a.readResults("fisher")->paramsJson);
        QCOMPARE(p.at("mode").get<std::string>(), std::string("streaming"));
        QVERIFY(p.at("chunks").get<int>() > 1);
        QVERIFY(!a.readResults("fisher/ablation"));
        for (const char* name : { "samples", "tokens", "expert_tokens" })
            QCOMPARE(arrayOf(a, "fisher", name).values, arrayOf(b, "fisher", name).values);
        for (const std::string form : { "mask", "weight", "grad_abs", "activation", "magnitude" }) {
            for (const char* name : { "units", "experts" }) {
                const AtlasArray x = arrayOf(a, "fisher/" + form, name), y = arrayOf(b, "fisher/" + form, name);
                QVERIFY2(x.dims == y.dims && x.values == y.values, (form + "/" + name).c_str());
            }
            QVERIFY(arrayOf(a, "fisher/concentration", form).values == arrayOf(b, "fisher/concentration", form).values);
        }
    }

    // -d: Fisher on held-out domains (not the atlas's tokens); --ablation-domain: the ablation measured
    // on other held-out text, ranked by those Fisher tables.
    void heldoutDomains()
    {
        const QString atlas = copyDemo();
        const QString cal = src(QStringLiteral("resources/demo/calibration/")),
                      held = src(QStringLiteral("resources/demo/heldout/"));
        const auto r = test::runCli(fisherArgs(atlas,
            { QStringLiteral("-d"), QStringLiteral("code=") + cal + QStringLiteral("code.txt:2"), QStringLiteral("-d"),
                QStringLiteral("prose=") + cal + QStringLiteral("prose.txt:1"), QStringLiteral("--seq-len"),
                QStringLiteral("128"), QStringLiteral("--add-bos"), QStringLiteral("--forms"), QStringLiteral("mask"),
                QStringLiteral("--no-baselines"), QStringLiteral("--ablation-domain"),
                QStringLiteral("arith=") + held + QStringLiteral("arith.txt:2"), QStringLiteral("--ablation-domain"),
                QStringLiteral("json=") + held + QStringLiteral("json.txt:2"), QStringLiteral("--ablate"),
                QStringLiteral("0,300") }));
        QCOMPARE(r.exitCode, 0);
        const TokenSet fisherSet = packedText(m_model.toStdString(),
            { "code=" + cal.toStdString() + "code.txt:2", "prose=" + cal.toStdString() + "prose.txt:1" });
        const TokenSet evalSet = packedText(m_model.toStdString(),
            { "arith=" + held.toStdString() + "arith.txt:2", "json=" + held.toStdString() + "json.txt:2" });
        QCOMPARE(fisherSet.group, (std::vector<int> { 0, 0, 1 }));
        QCOMPARE(evalSet.group, (std::vector<int> { 0, 0, 1, 1 }));
        checkTables(atlas, fisherSet, { "mask" });
        if (QTest::currentTestFailed())
            return;
        checkAblation(atlas, evalSet, { 300 }, { "pooled", "code", "prose" }, 0);
        const AtlasFile a = AtlasFile::openReadOnly(atlas.toStdString());
        const nlohmann::json fp = nlohmann::json::parse(a.readResults("fisher")->paramsJson);
        const nlohmann::json ap = nlohmann::json::parse(a.readResults("fisher/ablation")->paramsJson);
        QVERIFY(QString::fromStdString(fp.at("token_source").get<std::string>())
                    .contains(QLatin1String("calibration/code.txt")));
        QVERIFY(QString::fromStdString(ap.at("token_source").get<std::string>())
                    .contains(QLatin1String("heldout/json.txt")));
        QCOMPARE(a.resultGroups("fisher"), (std::vector<std::string> { "ablation", "concentration", "mask" }));
    }

    // A second run replaces /fisher whole (forms and ablation of the first are gone) and nothing else.
    void rerunReplacesFisherOnly()
    {
        const QString first = residentAtlas();
        QVERIFY(!first.isEmpty());
        const QString atlas = copyDemo(first);
        const auto r = test::runCli(fisherArgs(atlas,
            { QStringLiteral("--max-samples"), QStringLiteral("1"), QStringLiteral("--forms"), QStringLiteral("weight"),
                QStringLiteral("--no-baselines"), QStringLiteral("--ablate"), QStringLiteral("none") }));
        QCOMPARE(r.exitCode, 0);
        const AtlasFile a = AtlasFile::openReadOnly(atlas.toStdString());
        QCOMPARE(a.resultGroups("fisher"), (std::vector<std::string> { "concentration", "weight" }));
        QCOMPARE(arrayOf(a, "fisher", "samples").values, (std::vector<double> { 1, 1, 1, 1, 4 }));
        QCOMPARE(arrayOf(a, "fisher/concentration", "weight").dims, (std::vector<uint64_t> { 5, 5, 4 }));
        QCOMPARE(arrayOf(a, "fisher/concentration", "mask").dims, std::vector<uint64_t> {});
        const AtlasFile demo = AtlasFile::openReadOnly(m_demoAtlas.toStdString());
        QCOMPARE(arrayOf(a, "scores/peu", "value").values, arrayOf(demo, "scores/peu", "value").values);
        QCOMPARE(a.seqOffsets(), demo.seqOffsets());
        QVERIFY(a.isComplete());
    }

    // Broken input: a message naming the field, exit != 0, the atlas bytes unchanged, nothing left beside it.
    void badInput_data()
    {
        QTest::addColumn<QStringList>("args");
        QTest::addColumn<QStringList>("keywords");
        const auto l = [](std::initializer_list<const char*> items) {
            QStringList out;
            for (const char* i : items)
                out << QString::fromUtf8(i);
            return out;
        };
        QTest::newRow("unknown form") << l({ "--forms", "mask,fisher" }) << l({ "--forms", "'fisher'" });
        QTest::newRow("negative ablation count") << l({ "--ablate", "10,-1" }) << l({ "--ablate", "'-1'" });
        QTest::newRow("ablation count not a number") << l({ "--ablate", "ten" }) << l({ "--ablate", "'ten'" });
        QTest::newRow("empty ablation count") << l({ "--ablate", "1,,2" }) << l({ "--ablate", "''" });
        QTest::newRow("unknown mode") << l({ "--mode", "fast" }) << l({ "--mode", "'fast'" });
        QTest::newRow("negative chunk tokens") << l({ "--chunk-tokens", "-5" }) << l({ "--chunk-tokens", "-5" });
        QTest::newRow("budget too small") << l({ "--memory-budget-mib", "1" }) << l({ "memory plan", "MiB" });
        QTest::newRow("budget too small for resident")
            << l({ "--mode", "resident", "--memory-budget-mib", "20" }) << l({ "resident", "--mode streaming" });
        QTest::newRow("ablation domain with --ablate none")
            << l({ "--ablate", "none", "--ablation-domain", "x=@HELDOUT@arith.txt" })
            << l({ "--ablation-domain", "none" });
        QTest::newRow("malformed ablation domain")
            << l({ "--ablation-domain", "arith" }) << l({ "--ablation-domain", "NAME=PATH" });
        QTest::newRow("missing ablation domain file")
            << l({ "--ablation-domain", "x=@HELDOUT@nope.txt" }) << l({ "--ablation-domain", "nope.txt" });
        QTest::newRow("missing domain file") << l({ "-d", "x=@HELDOUT@nope.txt" }) << l({ "nope.txt" });
        QTest::newRow("domain named pooled")
            << l({ "-d", "pooled=@HELDOUT@arith.txt:1", "--seq-len", "128" }) << l({ "'pooled'", "reserved" });
        QTest::newRow("domain named full") << l({ "-d", "full=@HELDOUT@arith.txt:1", "--seq-len", "128" })
                                           << l({ "'full'", "reserved", "--ablate none" });
        QTest::newRow("domain named random")
            << l({ "-d", "random=@HELDOUT@arith.txt:1", "--seq-len", "128", "--ablate", "4" })
            << l({ "'random'", "reserved" });
        QTest::newRow("checkpoint of another config")
            << l({ "--checkpoint", "@OTHER@" }) << l({ "@OTHER@/config.json", "not the config.json" });
        QTest::newRow("missing checkpoint") << l({ "--checkpoint", "@NONE@" }) << l({ "@NONE@" });
    }

    void badInput()
    {
        QFETCH(QStringList, args);
        QFETCH(QStringList, keywords);
        // A checkpoint whose config.json differs by one byte from the one the atlas was captured from.
        const QString other = m_dir.filePath(QStringLiteral("other-model"));
        if (!QFile::exists(other)) {
            QDir().mkpath(other);
            for (const QString& f : QDir(m_model).entryList(QDir::Files))
                QVERIFY(QFile::copy(m_model + QLatin1Char('/') + f, other + QLatin1Char('/') + f));
            QFile config(other + QStringLiteral("/config.json"));
            QVERIFY(config.open(QIODevice::Append));
            config.write("\n");
        }
        const auto substitute = [&](QStringList list) {
            for (QString& a : list) {
                a.replace(QLatin1String("@HELDOUT@"), src(QStringLiteral("resources/demo/heldout/")));
                a.replace(QLatin1String("@OTHER@"), other);
                a.replace(QLatin1String("@NONE@"), m_dir.filePath(QStringLiteral("no-such-model")));
            }
            return list;
        };
        args = substitute(args);
        keywords = substitute(keywords);
        const QString atlas = copyDemo();
        const QByteArray before = fileHash(atlas);
        const auto r = test::runProcess(test::cliExecutable(),
            fisherArgs(atlas, args + QStringList { QStringLiteral("--max-samples"), QStringLiteral("1") }));
        const QString context = QStringLiteral("\nexit %1\nstderr: %2").arg(r.exitCode).arg(r.stdErr);
        QVERIFY2(r.exitCode != 0 && r.exitCode != -1, qPrintable(QStringLiteral("no clean failure") + context));
        QVERIFY2(r.stdErr.contains(QLatin1String("moeatlas: error: ")), qPrintable(context));
        for (const QString& k : keywords)
            QVERIFY2(
                r.stdErr.contains(k), qPrintable(QStringLiteral("message lacks '") + k + QLatin1Char('\'') + context));
        QCOMPARE(fileHash(atlas), before);
        QCOMPARE(QDir(QFileInfo(atlas).path()).entryList(QDir::Files | QDir::Hidden),
            QStringList { QStringLiteral("demo.atlas.h5") });
    }

    // An atlas whose capture did not finish, and one that does not exist.
    void incompleteOrMissingAtlas()
    {
        const QString dir = m_dir.filePath(QStringLiteral("partial"));
        QDir().mkpath(dir);
        const QString final = dir + QStringLiteral("/cut.atlas.h5"), partial = final + QStringLiteral(".partial");
        {
            const AtlasFile demo = AtlasFile::openReadOnly(m_demoAtlas.toStdString());
            const std::vector<int32_t> tokens = demo.tokens();
            const std::vector<int16_t> ids = demo.domainIds();
            const std::vector<int64_t> offsets = demo.seqOffsets();
            AtlasFile cut
                = AtlasFile::create(final.toStdString(), demo.model(), demo.calibration(), tokens, ids, offsets, {});
            cut.markLayerComplete(0); // the capture stops after layer 0
        }
        QVERIFY(QFile::exists(partial));
        const QByteArray before = fileHash(partial);
        auto r = test::runProcess(
            test::cliExecutable(), fisherArgs(partial, { QStringLiteral("--max-samples"), QStringLiteral("1") }));
        QVERIFY2(r.exitCode > 0, qPrintable(r.stdErr));
        QVERIFY2(r.stdErr.contains(partial) && r.stdErr.contains(QLatin1String("not complete")), qPrintable(r.stdErr));
        QCOMPARE(fileHash(partial), before);
        QCOMPARE(
            QDir(dir).entryList(QDir::Files | QDir::Hidden), QStringList { QStringLiteral("cut.atlas.h5.partial") });

        const QString missing = dir + QStringLiteral("/missing.atlas.h5");
        r = test::runProcess(test::cliExecutable(), fisherArgs(missing, {}));
        QVERIFY2(r.exitCode > 0 && r.stdErr.contains(missing), qPrintable(r.stdErr));
        QVERIFY(!QFile::exists(missing));
    }

    // Ctrl-C while Fisher runs, and while the ablation runs: exit 130, the atlas unchanged.
    void interrupt_data()
    {
        QTest::addColumn<QStringList>("args");
        QTest::addColumn<QByteArray>("waitFor");
        QTest::newRow("during Fisher") << QStringList { QStringLiteral("--forms"), QStringLiteral("mask"),
            QStringLiteral("--ablate"), QStringLiteral("none") }
                                       << QByteArray("fisher [");
        QStringList ablation { QStringLiteral("--max-samples"), QStringLiteral("1"), QStringLiteral("--forms"),
            QStringLiteral("mask"), QStringLiteral("--no-baselines"), QStringLiteral("--ablate"),
            QStringLiteral("0,10,100,1000"), QStringLiteral("--seq-len"), QStringLiteral("128"),
            QStringLiteral("--add-bos") };
        for (const char* d : { "arith", "code", "json", "prose" })
            ablation << QStringLiteral("--ablation-domain")
                     << QString::fromLatin1(d) + QLatin1Char('=') + src(QStringLiteral("resources/demo/heldout/"))
                    + QString::fromLatin1(d) + QStringLiteral(".txt:8");
        QTest::newRow("during the ablation") << ablation << QByteArray("ablation [");
    }

    void interrupt()
    {
        QFETCH(QStringList, args);
        QFETCH(QByteArray, waitFor);
        const QString atlas = copyDemo();
        const QByteArray before = fileHash(atlas);
        QProcess proc;
        auto env = QProcessEnvironment::systemEnvironment();
        env.insert(QStringLiteral("MOEATLAS_PROGRESS_INTERVAL_MS"), QStringLiteral("20"));
        proc.setProcessEnvironment(env);
        proc.start(test::cliExecutable(), fisherArgs(atlas, args));
        QVERIFY(proc.waitForStarted());
        QByteArray err;
        while (!err.contains(waitFor) && proc.state() == QProcess::Running) {
            proc.waitForReadyRead(100);
            err += proc.readAllStandardError();
        }
        QVERIFY2(proc.state() == QProcess::Running, "fisher ended before it could be interrupted");
        ::kill(static_cast<pid_t>(proc.processId()), SIGINT);
        QVERIFY(proc.waitForFinished(120000));
        err += proc.readAllStandardError();
        QCOMPARE(proc.exitStatus(), QProcess::NormalExit);
        QCOMPARE(proc.exitCode(), 130);
        QVERIFY2(err.contains("interrupted: the atlas is unchanged"), err.constData());
        QCOMPARE(fileHash(atlas), before);
        QCOMPARE(QDir(QFileInfo(atlas).path()).entryList(QDir::Files | QDir::Hidden),
            QStringList { QStringLiteral("demo.atlas.h5") });
    }

    // h5py + numpy read /fisher as docs/atlas-format.md describes it (tests/fisher/check_fisher_h5py.py).
    void h5pyReadsLayout()
    {
        // The unit entry (ctest tst_cli_fisher) leaves this to the reference entry tst_cli_fisher_h5py.
        if (qEnvironmentVariableIsSet("MOEATLAS_SKIP_H5PY"))
            QSKIP("run by tst_cli_fisher_h5py (label reference)");
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the h5py check needs the venv");
        const QString atlas = residentAtlas();
        QVERIFY(!atlas.isEmpty());
        const auto r = test::runPython(QStringLiteral("tests/fisher/check_fisher_h5py.py"), { atlas });
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr + r.stdOut));
    }
};

QTEST_GUILESS_MAIN(TstCliFisher)
#include "tst_cli_fisher.moc"
