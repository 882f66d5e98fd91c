// Exports with a routing rule (`moeatlas export --routing`, ExportOptions::routing) of tiny
// transformers-built models of every architecture, checked by tests/export/check_routing.py against
// the ORIGINAL checkpoint run by stock transformers:
//   top-k:3 (the models route 2)  stock checkpoint, only num_experts_per_tok changes; reference: the
//                                 stock router with top_k = 3
//   top-p:0.8, probmoe:1:3        modeling_moeatlas.py (trust_remote_code); reference: the rule applied
//                                 by hand, token by token, in place of the source's routers
//   threshold:1.5 (+ thresholds)  the same, through the C++ API (the CLI cannot calibrate thresholds)
// probmoe runs on a non-uniform plan (4..6 experts per layer), so one modeling file serves a plan and
// a rule together. Bar: max |logit diff| <= 1e-4 in float32; the rule must move the logits away from
// the model's own top-k and, when dynamic, give tokens different k (check_routing.py says how).
// Every export is also compared with our engine's evaluation of the same plan and rule on the source
// (Executor::evaluate with ExpertMask::routing, what `moeatlas eval` runs), within 2e-5 of the largest
// |logit| (another implementation: check_export.py's bar).
#include "checkpoint/hf_config.h"
#include "eval/eval.h"
#include "export/exporter.h"
#include "plan/plan.h"
#include "reference_source.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <fstream>
#include <vector>

using namespace moeatlas;

namespace {

// Every MoE layer keeps 4 of its 8 experts (uniform) or 4, 5, 6, 4, ... of them (non-uniform).
nlohmann::json makePlan(const std::vector<int>& moeLayers, bool uniform)
{
    nlohmann::json layers = nlohmann::json::array();
    for (std::size_t i = 0; i < moeLayers.size(); ++i) {
        const int l = moeLayers[i];
        const int count = uniform ? 4 : 4 + static_cast<int>(i % 3);
        std::vector<int> keep;
        for (int e = 0; e < 8; ++e) // (3e + l) mod 8 runs over 0..7 once: `count` experts
            if (uniform ? (e + l) % 2 == 0 : (e * 3 + l) % 8 < count)
                keep.push_back(e);
        layers.push_back({ { "layer", l }, { "keep", keep } });
    }
    return { { "format", "moeatlas-plan" }, { "version", 1 }, { "source", { { "num_experts", 8 }, { "top_k", 2 } } },
        { "derivation", { { "method", "specialist" }, { "criterion", "test" } } }, { "layers", layers } };
}

// Our evaluation of `plan` with `rule` on the source for its ids, written as raw float32 logits
// [B, S, V] for check_routing.py --ours.
void writeOurLogits(const test::Source& source, const nlohmann::json& plan, const RoutingRule& rule, const QString& out)
{
    const Checkpoint ckpt(source.dir.toStdString());
    const ModelSpec spec = parseModelSpec(ckpt.config(), "config.json");
    EvalVariant variant = variantFromPlan(planFromJson(plan, "plan"), spec, "plan");
    variant.mask.routing = rule;
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets { 0 };
    for (const auto& seq : source.ids) {
        tokens.insert(tokens.end(), seq.begin(), seq.end());
        offsets.push_back(static_cast<int64_t>(tokens.size()));
    }
    Executor executor(ckpt, spec, {});
    const EvaluationResult r = executor.evaluate(tokens, offsets, std::vector<ExpertMask> { variant.mask }, true);
    const std::vector<float>& logits = r.variants.at(0).logits;
    std::ofstream(out.toStdString(), std::ios::binary)
        .write(
            reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
}

QString writePlan(const QTemporaryDir& dir, const QString& name, const nlohmann::json& plan)
{
    const QString path = dir.filePath(name + QStringLiteral(".json"));
    std::ofstream(path.toStdString()) << plan.dump(2);
    return path;
}

} // namespace

class TestExportRouting : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
        QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    }
    void rulesLoadWithParity_data()
    {
        QTest::addColumn<QString>("arch");
        QTest::addColumn<QString>("variant");
        // The first variant of each: norm_topk_prob true (qwen3_moe; Mixtral always renormalises) and
        // false (qwen2_moe, with a dense layer and a shared expert; olmoe).
        QTest::newRow("mixtral") << QStringLiteral("mixtral") << QStringLiteral("gqa_swa");
        QTest::newRow("qwen2_moe") << QStringLiteral("qwen2_moe") << QStringLiteral("shared_mlp_only");
        QTest::newRow("qwen3_moe") << QStringLiteral("qwen3_moe") << QStringLiteral("gqa_norm_topk");
        QTest::newRow("olmoe") << QStringLiteral("olmoe") << QStringLiteral("clip_qk_norm");
    }
    void rulesLoadWithParity()
    {
        QFETCH(QString, arch);
        QFETCH(QString, variant);
        QTemporaryDir dir;
        test::Source source;
        QVERIFY(test::makeSource(dir, arch, variant, QStringLiteral("per-expert"), source));
        const nlohmann::json uniform = makePlan(source.moeLayers, true);
        const nlohmann::json nonUniform = makePlan(source.moeLayers, false);
        const QString uniformPath = writePlan(dir, QStringLiteral("uniform"), uniform);
        const QString nonUniformPath = writePlan(dir, QStringLiteral("nonuniform"), nonUniform);

        const auto check = [&](const QString& out, const QString& planPath, const QString& rule,
                               const QString& thresholds, const RoutingRule& parsed) {
            const QString oursPath = out + QStringLiteral(".ours.f32");
            writeOurLogits(source, planPath == uniformPath ? uniform : nonUniform, parsed, oursPath);
            QStringList args = { QStringLiteral("--source"), source.dir, QStringLiteral("--export"), out,
                QStringLiteral("--plan"), planPath, QStringLiteral("--routing"), rule, QStringLiteral("--ids"),
                source.idsPath, QStringLiteral("--ours"), oursPath };
            if (!thresholds.isEmpty())
                args << QStringLiteral("--thresholds") << thresholds;
            const auto checked = test::runPython(QStringLiteral("tests/export/check_routing.py"), args);
            qInfo("%s %s: %s", qPrintable(arch), qPrintable(rule), qPrintable(checked.stdOut.trimmed()));
            return checked.exitCode == 0 ? QString() : checked.stdErr + checked.stdOut;
        };

        struct CliCase {
            QString rule;
            QString planPath;
            QString says; // in the CLI's summary
        };
        const std::vector<CliCase> cases = {
            { QStringLiteral("top-k:3"), uniformPath, QStringLiteral("loads in stock transformers") },
            { QStringLiteral("top-p:0.8"), uniformPath, QStringLiteral("with DYNAMIC-K routing") },
            { QStringLiteral("probmoe:1:3"), nonUniformPath, QStringLiteral("NON-UNIFORM") },
        };
        for (const CliCase& c : cases) {
            const QString out = dir.filePath(QString(c.rule).replace(QLatin1Char(':'), QLatin1Char('_')));
            const auto exported = test::runProcess(test::cliExecutable(),
                { QStringLiteral("export"), source.dir, QStringLiteral("--plan"), c.planPath, QStringLiteral("-o"), out,
                    QStringLiteral("--routing"), c.rule });
            QVERIFY2(exported.exitCode == 0, qPrintable(exported.stdErr));
            QVERIFY2(exported.stdOut.contains(c.says), qPrintable(exported.stdOut));
            const QString failed
                = check(out, c.planPath, c.rule, {}, exportRoutingRule(source.dir.toStdString(), c.rule.toStdString()));
            QVERIFY2(failed.isEmpty(), qPrintable(c.rule + QStringLiteral(": ") + failed));
        }

        // threshold: calibrated elsewhere, given here (one per MoE layer).
        RoutingRule rule = exportRoutingRule(source.dir.toStdString(), "threshold:1.5");
        nlohmann::json thresholds = nlohmann::json::object();
        for (std::size_t i = 0; i < source.moeLayers.size(); ++i) {
            const double t = 0.25 + 0.05 * static_cast<double>(i);
            rule.thresholds[source.moeLayers[i]] = t;
            thresholds[std::to_string(source.moeLayers[i])] = t;
        }
        ExportOptions options;
        options.routing = rule;
        const QString out = dir.filePath(QStringLiteral("threshold"));
        const ExportResult r
            = exportCheckpoint(source.dir.toStdString(), planFromJson(uniform, "plan"), out.toStdString(), options);
        QVERIFY(r.uniform && r.dynamicRouting);
        const QString failed
            = check(out, uniformPath, QStringLiteral("threshold:1.5"), QString::fromStdString(thresholds.dump()), rule);
        QVERIFY2(failed.isEmpty(), qPrintable(failed));
    }
};

QTEST_GUILESS_MAIN(TestExportRouting)
#include "tst_export_routing.moc"
