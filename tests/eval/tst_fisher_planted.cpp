// The Fisher-MoE planted-units test (METHODS.md section 4): a Qwen3-MoE built by
// tests/eval/make_planted_units.py in which, per domain, 4 expert units with small activations and
// below-typical weight norms are the only thing that predicts the domain's predictable tokens, while
// decoy units have the largest activations and weight norms and contribute nothing (README.planted_units.md).
// Per domain, the domain's mask-form Fisher (computeFisher, grouped by domain) must rank its planted units
// first while mean-|activation| and weight magnitude do not, and removing the top-n units by Fisher
// (ExpertMask::units through Executor::evaluate) must cost that domain much more held-out loss than
// removing the top-n by activation or magnitude, and cost the other domains next to nothing. Our losses
// are checked against transformers' (full model, and each domain's planted units removed).
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "runtime/executor.h"
#include "runtime/fisher.h"
#include "test_io.h"
#include "test_support.h"
#include "text/calibration.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <numeric>
#include <set>
#include <tuple>

using namespace moeatlas;

namespace {

// A routed-expert unit, layer = decoder layer.
using Unit = std::tuple<int, int, int>;

// Ranking criteria compared per domain.
enum Criterion { Fisher, Activation, Magnitude, CriterionCount };
const char* const kCriterionNames[] = { "Fisher (mask)", "activation", "magnitude" };

struct TokenSet {
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets { 0 };
    std::vector<int> group; // per sequence: domain index
    std::vector<std::pair<int64_t, int64_t>> domainRange; // per domain: [begin, end) token indices
};

TokenSet readDomains(const QString& dir, const std::vector<std::string>& domains, int64_t vocab)
{
    TokenSet set;
    for (std::size_t d = 0; d < domains.size(); ++d) {
        const int64_t begin = set.offsets.back();
        for (const auto& seq :
            readInputIdsJsonl(QString(dir + QLatin1Char('/')).toStdString() + domains[d] + ".jsonl", vocab)) {
            set.tokens.insert(set.tokens.end(), seq.begin(), seq.end());
            set.offsets.push_back(static_cast<int64_t>(set.tokens.size()));
            set.group.push_back(static_cast<int>(d));
        }
        set.domainRange.emplace_back(begin, set.offsets.back());
    }
    return set;
}

// Mean next-token NLL over a domain's tokens (the NaN at each sequence's end skipped).
double domainNll(const std::vector<float>& tokenNll, std::pair<int64_t, int64_t> range)
{
    double sum = 0;
    int64_t n = 0;
    for (int64_t t = range.first; t < range.second; ++t)
        if (!std::isnan(tokenNll[static_cast<std::size_t>(t)])) {
            sum += tokenNll[static_cast<std::size_t>(t)];
            ++n;
        }
    return sum / static_cast<double>(n);
}

} // namespace

class TstFisherPlanted : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    std::string m_modelDir;
    nlohmann::json m_reference; // make_planted_units.py's transformers losses
    std::vector<std::string> m_domains;
    std::vector<std::set<Unit>> m_planted; // per domain
    TokenSet m_calib, m_heldout;
    FisherResult m_fisher;
    int64_t m_experts = 0, m_units = 0; // routed experts per MoE layer, units per expert
    // Per domain and criterion: every unit of the model, best first (ties to the lower layer, expert, unit).
    std::vector<std::array<std::vector<Unit>, CriterionCount>> m_ranking;

    // Scores of one domain over the whole model, in (MoE layer, expert, unit) order.
    std::vector<double> scores(std::size_t domain, Criterion c) const
    {
        std::vector<double> all;
        for (const FisherLayer& l : m_fisher.layers) {
            const std::vector<double>& v = c == Fisher ? l.mask : c == Activation ? l.activation : l.magnitude;
            const auto begin
                = v.begin() + (c == Magnitude ? 0 : static_cast<std::ptrdiff_t>(domain * m_experts * m_units));
            all.insert(all.end(), begin, begin + m_experts * m_units);
        }
        return all;
    }

    std::vector<Unit> rank(const std::vector<double>& s) const
    {
        std::vector<std::size_t> idx(s.size());
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return s[a] > s[b]; });
        std::vector<Unit> out;
        for (const std::size_t i : idx) {
            const auto u = static_cast<int64_t>(i);
            out.emplace_back(m_fisher.layers[static_cast<std::size_t>(u / (m_experts * m_units))].layer,
                static_cast<int>(u / m_units % m_experts), static_cast<int>(u % m_units));
        }
        return out;
    }

    // How many of the domain's planted units a ranking puts in its first k.
    int plantedInTop(std::size_t domain, Criterion c, std::size_t k) const
    {
        const auto& r = m_ranking[domain][c];
        return static_cast<int>(std::count_if(r.begin(), r.begin() + static_cast<std::ptrdiff_t>(k),
            [&](const Unit& u) { return m_planted[domain].count(u) > 0; }));
    }

    // The variant without `removed` (every other unit of every expert kept).
    ExpertMask without(const std::string& name, const std::set<Unit>& removed) const
    {
        ExpertMask mask { name, {}, {}, {}, {} };
        for (const FisherLayer& l : m_fisher.layers) {
            auto& perExpert = mask.units[l.layer];
            perExpert.resize(static_cast<std::size_t>(m_experts));
            for (int e = 0; e < m_experts; ++e)
                for (int j = 0; j < m_units; ++j)
                    if (!removed.count({ l.layer, e, j }))
                        perExpert[static_cast<std::size_t>(e)].push_back(j);
        }
        return mask;
    }

    std::vector<VariantOutput> evaluateHeldout(const std::vector<ExpertMask>& variants) const
    {
        const Checkpoint ckpt(m_modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_modelDir + "/config.json");
        ExecutorOptions o;
        o.keepWeightsResident = true;
        Executor executor(ckpt, spec, o);
        return executor.evaluate(m_heldout.tokens, m_heldout.offsets, variants).variants;
    }

    double referenceNll(const std::string& domain, const char* key) const
    {
        return m_reference["domains"][domain][key].get<double>();
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
        const auto made = test::runPython(
            QStringLiteral("tests/eval/make_planted_units.py"), { QStringLiteral("--out"), m_dir.path() });
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr + made.stdOut));
        m_reference = nlohmann::json::parse(made.stdOut.trimmed().split(QLatin1Char('\n')).last().toStdString());
        std::ifstream in(m_dir.filePath(QStringLiteral("planted.json")).toStdString());
        const nlohmann::json layout = nlohmann::json::parse(in);
        m_domains = layout["domains"].get<std::vector<std::string>>();
        for (const std::string& d : m_domains) {
            std::set<Unit> units;
            for (const auto& u : layout["planted"][d])
                units.insert({ u[0].get<int>(), u[1].get<int>(), u[2].get<int>() });
            m_planted.push_back(units);
        }

        m_modelDir = m_dir.filePath(QStringLiteral("model")).toStdString();
        const Checkpoint ckpt(m_modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_modelDir + "/config.json");
        m_experts = spec.router.numExperts;
        m_units = spec.moeIntermediate;
        m_calib = readDomains(m_dir.filePath(QStringLiteral("calib")), m_domains, spec.vocabSize);
        m_heldout = readDomains(m_dir.filePath(QStringLiteral("heldout")), m_domains, spec.vocabSize);
        FisherOptions o;
        o.weightForm = false;
        o.gradAbs = false;
        m_fisher = computeFisher(ckpt, spec, m_calib.tokens, m_calib.offsets, m_calib.group, o);
        QCOMPARE(m_fisher.groups, static_cast<int>(m_domains.size()));
        for (std::size_t d = 0; d < m_domains.size(); ++d) {
            m_ranking.emplace_back();
            for (const Criterion c : { Fisher, Activation, Magnitude })
                m_ranking.back()[c] = rank(scores(d, c));
        }
    }

    // The planted model is what we think it is: our losses are transformers' (calibration sequences as
    // computeFisher differentiated them; held-out NLL of the full model and without each domain's planted
    // units, removed here by the unit mask and in transformers by zeroing their weights). Two float32
    // implementations summing in other orders: within kReorderRtol (test_io.h) of the largest |logit|
    // (make_planted_units.py reports it; ~5.4).
    void lossEqualsTransformers()
    {
        const double scale = m_reference["max_abs_logit"].get<double>();
        QVERIFY(scale > 0);
        double worst = 0;
        for (std::size_t d = 0; d < m_domains.size(); ++d) {
            const auto ref = m_reference["domains"][m_domains[d]]["calib_sequence_loss"].get<std::vector<double>>();
            std::size_t k = 0;
            for (std::size_t n = 0; n < m_calib.group.size(); ++n)
                if (m_calib.group[n] == static_cast<int>(d)) {
                    QVERIFY(k < ref.size());
                    worst = std::max(worst, std::fabs(m_fisher.sampleLoss[n] - ref[k++]));
                }
            QCOMPARE(k, ref.size());
        }
        qInfo("calibration per-sequence loss, computeFisher vs transformers: max abs diff %.2g (max |logit| %.3g)",
            worst, scale);
        QVERIFY(worst <= test::kReorderRtol * scale);

        std::vector<ExpertMask> variants { ExpertMask { "full", {}, {}, {}, {} } };
        for (std::size_t d = 0; d < m_domains.size(); ++d)
            variants.push_back(without("no planted " + m_domains[d], m_planted[d]));
        const auto out = evaluateHeldout(variants);
        for (std::size_t d = 0; d < m_domains.size(); ++d) {
            const std::string& name = m_domains[d];
            const double full = domainNll(out[0].tokenNll, m_heldout.domainRange[d]);
            const double removed = domainNll(out[d + 1].tokenNll, m_heldout.domainRange[d]);
            qInfo("%s held-out NLL: full %.6f (transformers %.6f), planted units removed %.6f (transformers %.6f)",
                name.c_str(), full, referenceNll(name, "heldout_nll_full"), removed,
                referenceNll(name, "heldout_nll_no_planted"));
            QVERIFY(std::fabs(full - referenceNll(name, "heldout_nll_full")) <= test::kReorderRtol * scale);
            QVERIFY(std::fabs(removed - referenceNll(name, "heldout_nll_no_planted")) <= test::kReorderRtol * scale);
        }
    }

    // Per domain: the planted units are the domain's top Fisher units; activation and magnitude put
    // (almost) none of them in their top 2x.
    void fisherFindsPlantedUnits()
    {
        for (std::size_t d = 0; d < m_domains.size(); ++d) {
            const std::size_t planted = m_planted[d].size();
            QString line = QString::fromStdString(m_domains[d])
                + QStringLiteral(": planted units' ranks (of %1)").arg(m_ranking[d][Fisher].size());
            for (const Criterion c : { Fisher, Activation, Magnitude }) {
                QStringList ranks;
                const auto& r = m_ranking[d][c];
                for (std::size_t i = 0; i < r.size(); ++i)
                    if (m_planted[d].count(r[i]))
                        ranks << QString::number(i + 1);
                line += QStringLiteral("; %1: %2").arg(QLatin1String(kCriterionNames[c]), ranks.join(QLatin1Char(' ')));
            }
            qInfo("%s", qPrintable(line));
            QCOMPARE(plantedInTop(d, Fisher, 2 * planted), static_cast<int>(planted));
            QVERIFY(plantedInTop(d, Activation, 2 * planted) <= static_cast<int>(planted) / 4);
            QVERIFY(plantedInTop(d, Magnitude, 2 * planted) <= static_cast<int>(planted) / 4);
        }
    }

    // Per domain: removing the domain's top-n Fisher units (n = planted count) costs the domain much
    // more held-out loss than removing the top-n by activation or by magnitude, and costs the other
    // domains next to nothing.
    void ablation()
    {
        const std::size_t D = m_domains.size();
        std::vector<ExpertMask> variants { ExpertMask { "full", {}, {}, {}, {} } };
        for (std::size_t d = 0; d < D; ++d)
            for (const Criterion c : { Fisher, Activation, Magnitude }) {
                const auto& r = m_ranking[d][c];
                const std::set<Unit> top(r.begin(), r.begin() + static_cast<std::ptrdiff_t>(m_planted[d].size()));
                variants.push_back(without(m_domains[d] + " " + kCriterionNames[c], top));
            }
        const auto out = evaluateHeldout(variants);
        // nll[v][d]: variant v's held-out NLL on domain d.
        std::vector<std::vector<double>> nll(variants.size(), std::vector<double>(D));
        for (std::size_t v = 0; v < variants.size(); ++v)
            for (std::size_t d = 0; d < D; ++d)
                nll[v][d] = domainNll(out[v].tokenNll, m_heldout.domainRange[d]);

        const std::size_t n = m_planted[0].size();
        qInfo("| domain | planted in top-%zu: Fisher / activation / magnitude | held-out NLL full | minus top-%zu "
              "Fisher | minus top-%zu activation | minus top-%zu magnitude | other domains, minus this Fisher "
              "top-%zu: max change |",
            2 * n, n, n, n, n);
        qInfo("|---|---|---|---|---|---|---|");
        for (std::size_t d = 0; d < D; ++d) {
            const double full = nll[0][d];
            double delta[CriterionCount];
            for (const Criterion c : { Fisher, Activation, Magnitude })
                delta[c] = nll[1 + d * CriterionCount + c][d] - full;
            double others = 0;
            for (std::size_t o = 0; o < D; ++o)
                if (o != d)
                    others = std::max(others, std::fabs(nll[1 + d * CriterionCount + Fisher][o] - nll[0][o]));
            const std::size_t k = 2 * m_planted[d].size();
            qInfo("| %s | %d/%zu / %d/%zu / %d/%zu | %.4f | %.4f (%+.4f) | %.4f (%+.4f) | %.4f (%+.4f) | %.2g |",
                m_domains[d].c_str(), plantedInTop(d, Fisher, k), m_planted[d].size(), plantedInTop(d, Activation, k),
                m_planted[d].size(), plantedInTop(d, Magnitude, k), m_planted[d].size(), full, full + delta[Fisher],
                delta[Fisher], full + delta[Activation], delta[Activation], full + delta[Magnitude], delta[Magnitude],
                others);
            QVERIFY(delta[Fisher] >= 0.3);
            QVERIFY(std::fabs(delta[Activation]) <= 0.05 * delta[Fisher]);
            QVERIFY(std::fabs(delta[Magnitude]) <= 0.05 * delta[Fisher]);
            QVERIFY(others <= 0.05 * delta[Fisher]);
        }
    }
};

QTEST_GUILESS_MAIN(TstFisherPlanted)
#include "tst_fisher_planted.moc"
