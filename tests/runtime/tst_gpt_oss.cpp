// gpt_oss specifics beyond the transformers parity suite (tst_reference_parity runs its fixtures):
// MXFP4 expert weights (hub gpt-oss checkpoints) decoded on the fly against transformers on the weights
// dequantized in Python (tests/reference/make_mxfp4.py, which packs them from the format's definition),
// expert-pruning exports that keep the kept experts' MXFP4 bytes and scales byte for byte, and clear
// errors on malformed MXFP4 shapes and unknown layer_types entries.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/mxfp4.h"
#include "checkpoint/random_model.h"
#include "checkpoint/safetensors.h"
#include "export/exporter.h"
#include "runtime/executor.h"
#include "test_io.h"
#include "test_support.h"
#include "test_tensors.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

using namespace moeatlas;

namespace {

// Runs make_mxfp4.py into dir/<name>; returns the checkpoint directory ("" on failure, with a message).
std::string makeMxfp4(const QTemporaryDir& dir, const QString& name, const QStringList& extra = {})
{
    const QString out = dir.filePath(name);
    const auto made = test::runPython(
        QStringLiteral("tests/reference/make_mxfp4.py"), QStringList { QStringLiteral("--out"), out } + extra);
    if (made.exitCode != 0) {
        qWarning("%s", qPrintable(made.stdErr));
        return {};
    }
    return out.toStdString();
}

class NoObserver : public ExecutionObserver { };

nlohmann::json gptOssConfig()
{
    return nlohmann::json {
        { "model_type", "gpt_oss" },
        { "vocab_size", 256 },
        { "hidden_size", 64 },
        { "intermediate_size", 32 },
        { "num_hidden_layers", 2 },
        { "num_attention_heads", 4 },
        { "num_key_value_heads", 2 },
        { "head_dim", 16 },
        { "num_local_experts", 8 },
        { "num_experts_per_tok", 2 },
        { "sliding_window", 8 },
        { "layer_types", { "sliding_attention", "full_attention" } },
    };
}

} // namespace

class TestGptOss : public QObject {
    Q_OBJECT
private Q_SLOTS:
    // The E2M1 table by hand (OCP MX spec: sign, 2 exponent bits, 1 mantissa bit) and one packed block.
    void e2m1Values()
    {
        const float want[16] = { 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
            -3.0f, -4.0f, -6.0f };
        for (int i = 0; i < 16; ++i)
            QCOMPARE(decodeE2M1(static_cast<uint8_t>(i)), want[i]);
        // One row of 32 values: byte i holds element 2i (low nibble) and 2i + 1 (high); scale 129 = 2^2.
        uint8_t blocks[16];
        for (int i = 0; i < 16; ++i)
            blocks[i] = static_cast<uint8_t>((i & 0xF) | (((15 - i) & 0xF) << 4));
        const uint8_t scale = 129;
        float out[32];
        decodeMxfp4(blocks, &scale, 1, 32, out);
        for (int i = 0; i < 16; ++i) {
            QCOMPARE(out[2 * i], 4.0f * want[i]);
            QCOMPARE(out[2 * i + 1], 4.0f * want[15 - i]);
        }
    }

    void configParse()
    {
        const ModelSpec s = parseModelSpec(gptOssConfig(), "dir/config.json");
        QCOMPARE(s.arch, Architecture::GptOss);
        QVERIFY(s.router.softmaxAfterTopk && s.router.bias && s.attentionSinks && s.expertBias && s.qkvBias && s.oBias);
        QVERIFY(s.layers[0].slidingWindow && !s.layers[1].slidingWindow);
        // GptOssConfig's defaults: YaRN (factor 32, no truncation, theta 150000), limit 7, alpha 1.702.
        QCOMPARE(QString::fromStdString(s.rope.type), QStringLiteral("yarn"));
        QCOMPARE(s.rope.theta, 150000.0);
        QCOMPARE(s.rope.factor, 32.0);
        QVERIFY(!s.rope.truncate);
        QCOMPARE(s.swigluLimit, 7.0);
        QCOMPARE(s.swigluAlpha, 1.702);
        // No layer_types: even layers slide.
        nlohmann::json c = gptOssConfig();
        c.erase("layer_types");
        const ModelSpec d = parseModelSpec(c, "dir/config.json");
        QVERIFY(d.layers[0].slidingWindow && !d.layers[1].slidingWindow);
    }

    void unknownLayerType()
    {
        nlohmann::json c = gptOssConfig();
        c["layer_types"] = { "sliding_attention", "linear_attention" };
        try {
            parseModelSpec(c, "dir/config.json");
            QFAIL("no error");
        } catch (const InputError& e) {
            const QString what = QString::fromUtf8(e.what());
            QVERIFY2(what.contains(QStringLiteral("dir/config.json")) && what.contains(QStringLiteral("layer_types"))
                    && what.contains(QStringLiteral("linear_attention")),
                qPrintable(what));
        }
    }

    void mxfp4Parity()
    {
        QTemporaryDir dir;
        const std::string model = makeMxfp4(dir, QStringLiteral("mx"));
        QVERIFY(!model.empty());
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), model + "/config.json");
        const SafetensorsFile ref(model + "/reference.safetensors");
        const std::vector<int64_t> ids64 = test::tensorValues<int64_t>(ref, "input_ids");
        const auto& shape = ref.info("input_ids").shape;
        std::vector<int32_t> tokens(ids64.begin(), ids64.end());
        std::vector<int64_t> offsets;
        for (int64_t b = 0; b <= shape[0]; ++b)
            offsets.push_back(b * shape[1]);
        ExecutorOptions options;
        options.computeLogits = true;
        Executor executor(ckpt, spec, options);
        NoObserver none;
        const ExecutionResult result = executor.run(tokens, offsets, none);
        const std::vector<float> want = test::tensorValues<float>(ref, "logits");
        const double err = test::relDiff(result.logits, want, test::maxAbs(want));
        qInfo("MXFP4 logits max error %.3g of max |logit| %.3g", err, test::maxAbs(want));
        QVERIFY2(err <= test::kReorderRtol, qPrintable(QString::number(err)));
    }

    // Expert pruning keeps the kept experts' packed bytes and scales as they are (dimension 0 sliced).
    void mxfp4ExportKeepsBytes()
    {
        QTemporaryDir dir;
        const std::string model = makeMxfp4(dir, QStringLiteral("mx"));
        QVERIFY(!model.empty());
        Plan plan;
        plan.method = "specialist";
        plan.criterion = "peu";
        plan.modelType = "gpt_oss";
        plan.numExperts = 8;
        plan.topK = 2;
        plan.layers = { 0, 1 };
        plan.keep = { { 1, 3, 4, 6 }, { 0, 2, 5, 7 } };
        const std::string out = dir.filePath(QStringLiteral("pruned")).toStdString();
        exportCheckpoint(model, plan, out);
        const Checkpoint src(model), dst(out);
        QCOMPARE(dst.config()["num_local_experts"].get<int>(), 4);
        int compared = 0;
        for (int l = 0; l < 2; ++l)
            for (const char* suffix : { "gate_up_proj_blocks", "gate_up_proj_scales", "down_proj_blocks",
                     "down_proj_scales", "gate_up_proj_bias", "down_proj_bias" }) {
                const std::string name = "model.layers." + std::to_string(l) + ".mlp.experts." + suffix;
                const auto a = src.bytes(name), b = dst.bytes(name);
                const std::size_t per = a.size() / 8;
                QCOMPARE(b.size(), 4 * per);
                QCOMPARE(dst.info(name).dtype, src.info(name).dtype);
                for (std::size_t j = 0; j < 4; ++j) {
                    const auto e = static_cast<std::size_t>(plan.keep[static_cast<std::size_t>(l)][j]);
                    QVERIFY2(std::memcmp(a.data() + e * per, b.data() + j * per, per) == 0, name.c_str());
                    ++compared;
                }
            }
        QCOMPARE(compared, 48);
        // The pruned checkpoint runs (its router rows and biases sliced with the experts).
        const ModelSpec spec = parseModelSpec(dst.config(), out + "/config.json");
        QCOMPARE(spec.router.numExperts, 4);
        Executor executor(dst, spec, {});
        NoObserver none;
        const std::vector<int32_t> tokens = { 3, 1, 4, 1, 5, 9, 2, 6 };
        const std::vector<int64_t> offsets = { 0, 8 };
        executor.run(tokens, offsets, none);
    }

    // moeatlas generate --arch gpt_oss: stock transformers loads it with no missing or unexpected keys and
    // gives our logits (sliding and full layers, sinks, biases, interleaved experts as the generator wrote them).
    void generatedModelMatchesTransformers()
    {
        QTemporaryDir dir;
        RandomModelOptions o;
        o.arch = Architecture::GptOss;
        o.numLayers = 2;
        o.hiddenSize = 64;
        o.numHeads = 4;
        o.numKvHeads = 2;
        o.headDim = 16;
        o.numExperts = 8;
        o.topK = 2;
        o.moeIntermediate = 32;
        o.vocabSize = 256;
        o.initStd = 0.2;
        const std::string model = dir.filePath(QStringLiteral("gen")).toStdString();
        writeRandomModel(o, model, false);
        // 2 sequences of 150 tokens: past the generator's 128-token window.
        const int64_t S = 150;
        std::vector<int32_t> tokens;
        QString ids;
        for (int b = 0; b < 2; ++b) {
            for (int64_t t = 0; t < S; ++t) {
                tokens.push_back(static_cast<int32_t>((37 * (t + 1) + 11 * b) % 256));
                ids += (t ? QStringLiteral(",") : QString()) + QString::number(tokens.back());
            }
            ids += b == 0 ? QStringLiteral(";") : QString();
        }
        const QString out = dir.filePath(QStringLiteral("logits.f32"));
        const auto ran = test::runPython(QStringLiteral("tests/reference/stock_logits.py"),
            { QStringLiteral("--model"), QString::fromStdString(model), QStringLiteral("--ids"), ids,
                QStringLiteral("--out"), out });
        QVERIFY2(ran.exitCode == 0, qPrintable(ran.stdErr));
        std::vector<float> want(static_cast<std::size_t>(2 * S * 256));
        std::ifstream(out.toStdString(), std::ios::binary)
            .read(reinterpret_cast<char*>(want.data()), static_cast<std::streamsize>(want.size() * sizeof(float)));
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), model + "/config.json");
        QVERIFY(spec.layers[0].slidingWindow && !spec.layers[1].slidingWindow && *spec.slidingWindow == 128);
        ExecutorOptions options;
        options.computeLogits = true;
        Executor executor(ckpt, spec, options);
        NoObserver none;
        const std::vector<int64_t> offsets = { 0, S, 2 * S };
        const ExecutionResult result = executor.run(tokens, offsets, none);
        const double err = test::relDiff(result.logits, want, test::maxAbs(want));
        qInfo("generated gpt_oss: logits max error %.3g of max |logit| %.3g", err, test::maxAbs(want));
        QVERIFY2(err <= test::kReorderRtol, qPrintable(QString::number(err)));
    }

    void malformedMxfp4()
    {
        QFETCH(QString, which);
        QFETCH(QString, tensor);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const std::string model = makeMxfp4(dir, which, { QStringLiteral("--malformed"), which });
        QVERIFY(!model.empty());
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), model + "/config.json");
        try {
            const Executor executor(ckpt, spec, {});
            QFAIL("no error");
        } catch (const InputError& e) {
            const QString what = QString::fromUtf8(e.what());
            QVERIFY2(
                what.contains(QStringLiteral("model.safetensors")) && what.contains(tensor) && what.contains(expected),
                qPrintable(what));
        }
    }
    void malformedMxfp4_data()
    {
        QTest::addColumn<QString>("which");
        QTest::addColumn<QString>("tensor");
        QTest::addColumn<QString>("expected");
        QTest::addRow("blocks") << QStringLiteral("blocks")
                                << QStringLiteral("model.layers.1.mlp.experts.gate_up_proj_blocks")
                                << QStringLiteral("expected [8, 64, 2, 16]");
        QTest::addRow("scales") << QStringLiteral("scales")
                                << QStringLiteral("model.layers.1.mlp.experts.gate_up_proj_scales")
                                << QStringLiteral("expected [8, 64, 2]");
    }
};

QTEST_GUILESS_MAIN(TestGptOss)
#include "tst_gpt_oss.moc"
