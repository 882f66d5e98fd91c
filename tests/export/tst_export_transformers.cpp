// Exports of tiny transformers-built models (tests/reference/make_reference.py) must load in
// stock transformers (uniform plans) or with trust_remote_code (non-uniform plans) with no
// missing/unexpected keys, and give the logits of the original model whose router ignores the
// dropped experts, and the logits of our own masked evaluation of the plan on the source
// (Executor::evaluate, what `moeatlas eval` runs) (tests/export/check_export.py, max |diff| <= 1e-4
// in float32).
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "eval/eval.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <fstream>
#include <vector>

using namespace moeatlas;

namespace {

// Uniform: 4 of 8 experts per MoE layer, a different set per layer. Non-uniform: 2..6 experts.
nlohmann::json makePlan(const std::vector<int>& moeLayers, bool uniform)
{
    nlohmann::json layers = nlohmann::json::array();
    for (std::size_t i = 0; i < moeLayers.size(); ++i) {
        const int l = moeLayers[i];
        const int count = uniform ? 4 : 2 + static_cast<int>((i * 3 + 1) % 5);
        std::vector<int> keep;
        for (int j = 0; j < count; ++j)
            keep.push_back(uniform ? (l * 3 + j * 2) % 8 : (l * 5 + j * 3) % 8);
        std::sort(keep.begin(), keep.end());
        layers.push_back({ { "layer", l }, { "keep", keep } });
    }
    return { { "format", "moeatlas-plan" }, { "version", 1 }, { "source", { { "num_experts", 8 }, { "top_k", 2 } } },
        { "derivation", { { "method", "specialist" }, { "criterion", "test" } } }, { "layers", layers } };
}

// Our masked evaluation of `plan` on the source for `ids` (B sequences of S tokens), written as raw
// float32 logits [B, S, V] for check_export.py --ours.
void writeOurLogits(
    const QString& source, const nlohmann::json& plan, const std::vector<std::vector<int32_t>>& ids, const QString& out)
{
    const Checkpoint ckpt(source.toStdString());
    const ModelSpec spec = parseModelSpec(ckpt.config(), "config.json");
    const EvalVariant variant = variantFromPlan(planFromJson(plan, "plan"), spec, "plan");
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets { 0 };
    for (const auto& seq : ids) {
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

} // namespace

class TestExportTransformers : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
    }
    void loadsWithParity_data()
    {
        QTest::addColumn<QString>("arch");
        QTest::addColumn<QString>("variant");
        QTest::addColumn<QString>("layout");
        const auto list = test::runPython(
            QStringLiteral("tests/reference/make_reference.py"), { QStringLiteral("--list-variants") });
        QVERIFY2(list.exitCode == 0, qPrintable(list.stdErr));
        QStringList seen;
        for (const QString& line : list.stdOut.split(QLatin1Char('\n'), Qt::SkipEmptyParts)) {
            const QStringList parts = line.split(QLatin1Char(' '));
            if (seen.contains(parts.value(0)))
                continue; // first variant of each architecture
            seen.append(parts.value(0));
            QTest::addRow("%s/per-expert", qPrintable(parts.value(0)))
                << parts.value(0) << parts.value(1) << QStringLiteral("per-expert");
            if (parts.value(0) == QLatin1String("qwen3_moe") || parts.value(0) == QLatin1String("mixtral"))
                QTest::addRow("%s/fused", qPrintable(parts.value(0)))
                    << parts.value(0) << parts.value(1) << QStringLiteral("fused");
        }
    }
    void loadsWithParity()
    {
        QFETCH(QString, arch);
        QFETCH(QString, variant);
        QFETCH(QString, layout);
        QTemporaryDir dir;
        const QString src = dir.filePath(QStringLiteral("src"));
        const auto made = test::runPython(QStringLiteral("tests/reference/make_reference.py"),
            { QStringLiteral("--arch"), arch, QStringLiteral("--variant"), variant, QStringLiteral("--layout"), layout,
                QStringLiteral("--skip-layout-check"), QStringLiteral("--out"), src });
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr));
        std::ifstream refIn(QString(src + QStringLiteral("/reference.json")).toStdString());
        const nlohmann::json reference = nlohmann::json::parse(refIn);
        const std::vector<int> moeLayers = reference["moe_layers"].get<std::vector<int>>();
        // Three sequences of 24 token ids, the same for transformers and for our evaluation.
        std::vector<std::vector<int32_t>> ids(3);
        const int64_t vocab = Checkpoint(src.toStdString()).config()["vocab_size"].get<int64_t>();
        for (std::size_t b = 0; b < ids.size(); ++b)
            for (int64_t t = 0; t < 24; ++t)
                ids[b].push_back(static_cast<int32_t>(
                    (b * 7919 + static_cast<std::size_t>(t) * 104729 + 13) % static_cast<std::size_t>(vocab)));
        const QString idsPath = dir.filePath(QStringLiteral("ids.json"));
        std::ofstream(idsPath.toStdString()) << nlohmann::json(ids).dump();

        for (const bool uniform : { true, false }) {
            const QString kind = uniform ? QStringLiteral("uniform") : QStringLiteral("nonuniform");
            const QString planPath = dir.filePath(kind + QStringLiteral(".json"));
            const QString out = dir.filePath(kind);
            const nlohmann::json plan = makePlan(moeLayers, uniform);
            std::ofstream(planPath.toStdString()) << plan.dump(2);
            const QString oursPath = dir.filePath(kind + QStringLiteral(".ours.f32"));
            writeOurLogits(src, plan, ids, oursPath);
            const auto exported = test::runProcess(test::cliExecutable(),
                { QStringLiteral("export"), src, QStringLiteral("--plan"), planPath, QStringLiteral("-o"), out,
                    QStringLiteral("--max-shard-mib"), QStringLiteral("1") });
            QVERIFY2(exported.exitCode == 0, qPrintable(exported.stdErr));
            QVERIFY(exported.stdOut.contains(uniform ? QStringLiteral("UNIFORM") : QStringLiteral("NON-UNIFORM")));
            QStringList args
                = { QStringLiteral("--source"), src, QStringLiteral("--export"), out, QStringLiteral("--plan"),
                      planPath, QStringLiteral("--ids"), idsPath, QStringLiteral("--ours"), oursPath };
            if (!uniform)
                args.append(QStringLiteral("--trust-remote-code"));
            const auto checked = test::runPython(QStringLiteral("tests/export/check_export.py"), args);
            qInfo("%s %s: %s", qPrintable(QString(arch + QLatin1Char('/') + layout)), qPrintable(kind),
                qPrintable(checked.stdOut.trimmed()));
            QVERIFY2(checked.exitCode == 0, qPrintable(checked.stdErr));
        }
    }
};

QTEST_GUILESS_MAIN(TestExportTransformers)
#include "tst_export_transformers.moc"
