// FP8 block-scaled weights (checkpoint/fp8.h, decision 55): the E4M3 table checked by hand, block dequantization
// with partial edge blocks, quantization_config parsing, generated FP8 checkpoints (qwen3_moe per-expert with a
// dense layer, qwen3_moe fused, mixtral) against transformers on the weights dequantized in Python
// (tests/reference/fp8_dequantize.py), expert-pruning exports that keep FP8 bytes and scales bit for bit and
// match our masked evaluation, the memory plan, and clear errors on bad scales and configs.
#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/fp8.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/random_model.h"
#include "checkpoint/tensor_layout.h"
#include "export/exporter.h"
#include "runtime/executor.h"
#include "test_io.h"
#include "test_support.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

using namespace moeatlas;

namespace {

class NoObserver : public ExecutionObserver { };

// Tiny models whose dimensions are not multiples of the 16 x 12 blocks: hidden 40 = 12 + 12 + 12 + 4 columns,
// 40 = 16 + 16 + 8 rows; expert width 24 = 16 + 8 rows, 12 + 12 columns.
RandomModelOptions tinyFp8(Architecture arch, bool fused)
{
    RandomModelOptions o;
    o.arch = arch;
    o.numLayers = 3;
    o.hiddenSize = 40;
    o.numHeads = 2;
    o.numKvHeads = 1;
    o.headDim = 16;
    o.numExperts = 6;
    o.topK = 2;
    o.moeIntermediate = 24;
    o.denseIntermediate = 36;
    if (arch == Architecture::Qwen3Moe && !fused)
        o.mlpOnlyLayers = { 0 };
    // deepseek_v3: MLA whose q_a_proj [20, 40] has partial blocks too (16 + 4 rows); layer 0 dense.
    o.qLoraRank = 20;
    o.kvLoraRank = 16;
    o.qkNopeHeadDim = 8;
    o.qkRopeHeadDim = 4;
    o.vHeadDim = 8;
    o.vocabSize = 96;
    o.fusedExperts = fused;
    o.initStd = 0.1;
    o.fp8 = true;
    o.fp8BlockRows = 16;
    o.fp8BlockCols = 12;
    o.seed = 7;
    return o;
}

const std::vector<int32_t> kTokens = { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4 };
const std::vector<int64_t> kOffsets = { 0, 12, 24 };

std::vector<float> ourLogits(const std::string& model)
{
    const Checkpoint ckpt(model);
    const ModelSpec spec = parseModelSpec(ckpt.config(), model + "/config.json");
    ExecutorOptions options;
    options.computeLogits = true;
    Executor executor(ckpt, spec, options);
    NoObserver none;
    return executor.run(kTokens, kOffsets, none).logits;
}

// One tensor of a checkpoint being rewritten.
struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> bytes;
};

// Copies `src` to `dst` through `edit` (which may change, add or drop tensors and the config).
void rewrite(const std::string& src, const std::string& dst,
    const std::function<void(std::vector<Tensor>&, nlohmann::json&)>& edit)
{
    const Checkpoint in(src);
    std::vector<Tensor> tensors;
    for (const std::string& n : in.names()) {
        const auto b = in.bytes(n);
        tensors.push_back({ n, in.info(n).dtype, in.info(n).shape, std::vector<std::byte>(b.begin(), b.end()) });
    }
    nlohmann::json config = in.config();
    edit(tensors, config);
    CheckpointWriter w(dst);
    w.setConfig(config);
    for (const Tensor& t : tensors)
        w.declare(t.name, t.dtype, t.shape);
    for (const Tensor& t : tensors)
        w.write(t.name, t.bytes);
    w.finish();
}

// The InputError text of constructing an executor on `model` ("" if none).
QString loadError(const std::string& model)
{
    try {
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), model + "/config.json");
        const Executor executor(ckpt, spec, {});
    } catch (const InputError& e) {
        return QString::fromUtf8(e.what());
    }
    return {};
}

QString parseError(const nlohmann::json& config)
{
    try {
        parseModelSpec(config, "dir/config.json");
    } catch (const InputError& e) {
        return QString::fromUtf8(e.what());
    }
    return {};
}

} // namespace

class TestFp8 : public QObject {
    Q_OBJECT
private Q_SLOTS:
    // E4M3 (OCP FP8, torch.float8_e4m3fn) by hand: s eeee mmm, bias 7, subnormals m/8 * 2^-6, no infinities,
    // S.1111.111 NaN, largest 1.75 * 2^8 = 448.
    void e4m3Values()
    {
        QCOMPARE(decodeE4M3(0x00), 0.0f);
        QVERIFY(std::signbit(decodeE4M3(0x80)) && decodeE4M3(0x80) == 0.0f);
        QCOMPARE(decodeE4M3(0x01), 0.001953125f); // 1/8 * 2^-6 = 2^-9, the smallest subnormal
        QCOMPARE(decodeE4M3(0x07), 0.013671875f); // 7/8 * 2^-6, the largest subnormal
        QCOMPARE(decodeE4M3(0x08), 0.015625f); // 2^-6, the smallest normal
        QCOMPARE(decodeE4M3(0x38), 1.0f); // exponent 7 = bias
        QCOMPARE(decodeE4M3(0x39), 1.125f);
        QCOMPARE(decodeE4M3(0x3c), 1.5f);
        QCOMPARE(decodeE4M3(0x40), 2.0f);
        QCOMPARE(decodeE4M3(0x77), 240.0f); // 1.875 * 2^7
        QCOMPARE(decodeE4M3(0x78), 256.0f); // exponent 15 is a normal exponent in E4M3
        QCOMPARE(decodeE4M3(0x7e), 448.0f); // the largest finite value
        QVERIFY(std::isnan(decodeE4M3(0x7f)));
        QVERIFY(std::isnan(decodeE4M3(0xff)));
        QCOMPARE(decodeE4M3(0xb8), -1.0f);
        QCOMPARE(decodeE4M3(0xc0), -2.0f);
        QCOMPARE(decodeE4M3(0x81), -0.001953125f);
        QCOMPARE(decodeE4M3(0xfe), -448.0f);
        // The table: exactly two NaNs, and codes 0x00..0x7e strictly increasing (what encodeE4M3 searches).
        const std::array<float, 256>& t = e4m3Table();
        int nans = 0;
        for (const float v : t)
            nans += std::isnan(v) ? 1 : 0;
        QCOMPARE(nans, 2);
        for (int i = 1; i < 0x7f; ++i)
            QVERIFY(t[static_cast<std::size_t>(i)] > t[static_cast<std::size_t>(i - 1)]);
        for (int i = 0; i < 0x7f; ++i)
            QCOMPARE(t[static_cast<std::size_t>(i | 0x80)], -t[static_cast<std::size_t>(i)]);
    }

    // Encoding: every value round-trips to its code; halfway cases go to the even code; saturation at 448.
    void e4m3Encode()
    {
        for (int i = 0; i < 256; ++i)
            if (i != 0x7f && i != 0xff)
                QCOMPARE(encodeE4M3(decodeE4M3(static_cast<uint8_t>(i))), static_cast<uint8_t>(i));
        QCOMPARE(encodeE4M3(1.0625f), uint8_t { 0x38 }); // halfway 1 (0x38) .. 1.125 (0x39): even
        QCOMPARE(encodeE4M3(1.1875f), uint8_t { 0x3a }); // halfway 1.125 (0x39) .. 1.25 (0x3a): even
        QCOMPARE(encodeE4M3(1.07f), uint8_t { 0x39 });
        QCOMPARE(encodeE4M3(0.0009765625f), uint8_t { 0x00 }); // 2^-10: halfway 0 .. 2^-9
        QCOMPARE(encodeE4M3(0.001f), uint8_t { 0x01 });
        QCOMPARE(encodeE4M3(500.0f), uint8_t { 0x7e });
        QCOMPARE(encodeE4M3(-1e9f), uint8_t { 0xfe });
        QCOMPARE(encodeE4M3(-1.5f), uint8_t { 0xbc });
        QCOMPARE(encodeE4M3(NAN), uint8_t { 0x7f });
    }

    // A 3 x 5 matrix at 2 x 3 blocks (rows x columns): a 2 x 2 grid, the last row and column blocks partial.
    void blockDequantize()
    {
        const uint8_t q[15]
            = { 0x38, 0x40, 0x3c, 0xb8, 0x00, 0x40, 0x38, 0x38, 0x38, 0x7e, 0x39, 0xc0, 0x01, 0x38, 0x38 };
        const float scale[4] = { 0.5f, 2.0f, 4.0f, 0.25f };
        float out[15];
        dequantizeFp8(q, scale, 3, 5, 2, 3, out);
        const float want[15] = { 0.5f, 1.0f, 0.75f, -2.0f, 0.0f, //
            1.0f, 0.5f, 0.5f, 2.0f, 896.0f, //
            4.5f, -8.0f, 0.0078125f, 0.25f, 0.25f };
        for (int i = 0; i < 15; ++i)
            QCOMPARE(out[i], want[i]);
        const Fp8Quantization q128 { true, 128, 128 };
        QCOMPARE(fp8ScaleShape({ 7168, 2048 }, q128), (std::vector<int64_t> { 56, 16 }));
        QCOMPARE(fp8ScaleShape({ 256, 4096, 7000 }, q128), (std::vector<int64_t> { 256, 32, 55 }));
        // Quantize then dequantize: within half an E4M3 step (2^-4 relative) of the block's values.
        float values[15];
        for (int i = 0; i < 15; ++i)
            values[i] = static_cast<float>(std::sin(1.0 + i) * std::pow(10.0, i % 3));
        uint8_t bytes[15];
        float scales[4];
        quantizeFp8(values, 3, 5, 2, 3, bytes, scales);
        dequantizeFp8(bytes, scales, 3, 5, 2, 3, out);
        for (int i = 0; i < 15; ++i)
            QVERIFY2(std::fabs(out[i] - values[i]) <= std::fabs(values[i]) / 16 + 1e-9, qPrintable(QString::number(i)));
    }

    void quantizationConfig()
    {
        nlohmann::json c = nlohmann::json::parse(randomModelConfig(tinyFp8(Architecture::Qwen3Moe, false)));
        const ModelSpec s = parseModelSpec(c, "dir/config.json");
        QVERIFY(s.fp8.enabled);
        QCOMPARE(s.fp8.blockRows, int64_t { 16 });
        QCOMPARE(s.fp8.blockCols, int64_t { 12 });
        c.erase("quantization_config");
        QVERIFY(!parseModelSpec(c, "dir/config.json").fp8.enabled);
        // DeepSeek-V3's own block, with the hub's keys.
        c["quantization_config"] = { { "quant_method", "fp8" }, { "fmt", "e4m3" }, { "activation_scheme", "dynamic" },
            { "weight_block_size", { 128, 128 } } };
        QCOMPARE(parseModelSpec(c, "dir/config.json").fp8.blockRows, int64_t { 128 });
    }

    void badQuantizationConfig()
    {
        QFETCH(QString, field);
        QFETCH(QString, value);
        QFETCH(QString, expected);
        nlohmann::json c = nlohmann::json::parse(randomModelConfig(tinyFp8(Architecture::Qwen3Moe, false)));
        c["quantization_config"][field.toStdString()] = nlohmann::json::parse(value.toStdString());
        const QString what = parseError(c);
        QVERIFY2(what.contains(QStringLiteral("dir/config.json"))
                && what.contains(QStringLiteral("quantization_config.")) && what.contains(field)
                && what.contains(expected),
            qPrintable(what));
    }
    void badQuantizationConfig_data()
    {
        QTest::addColumn<QString>("field");
        QTest::addColumn<QString>("value");
        QTest::addColumn<QString>("expected");
        QTest::addRow("method") << QStringLiteral("quant_method") << QStringLiteral("\"awq\"")
                                << QStringLiteral("\"awq\"");
        QTest::addRow("fmt") << QStringLiteral("fmt") << QStringLiteral("\"e5m2\"")
                             << QStringLiteral("expected \"e4m3\"");
        QTest::addRow("activations") << QStringLiteral("activation_scheme") << QStringLiteral("\"static\"")
                                     << QStringLiteral("expected \"dynamic\"");
        QTest::addRow("block one") << QStringLiteral("weight_block_size") << QStringLiteral("[128]")
                                   << QStringLiteral("two positive integers");
        QTest::addRow("block zero") << QStringLiteral("weight_block_size") << QStringLiteral("[128, 0]")
                                    << QStringLiteral("two positive integers");
        QTest::addRow("block null") << QStringLiteral("weight_block_size") << QStringLiteral("null")
                                    << QStringLiteral("per-tensor FP8 is not supported");
        QTest::addRow("ue8m0") << QStringLiteral("scale_fmt") << QStringLiteral("\"ue8m0\"")
                               << QStringLiteral("expected \"float\"");
    }

    // Generated FP8 checkpoints against transformers on the same weights dequantized in Python.
    void parityWithTransformers()
    {
        QFETCH(int, arch);
        QFETCH(bool, fused);
        QTemporaryDir dir;
        const std::string model = dir.filePath(QStringLiteral("fp8")).toStdString();
        writeRandomModel(tinyFp8(static_cast<Architecture>(arch), fused), model, false);
        {
            // The generator wrote what the test means: FP8 experts and attention, a plain router.
            const Checkpoint c(model);
            const std::string moe = fused || arch != static_cast<int>(Architecture::Mixtral)
                ? "model.layers.1.mlp."
                : "model.layers.1.block_sparse_moe.";
            const std::string q = arch == static_cast<int>(Architecture::DeepseekV3)
                ? "model.layers.1.self_attn.q_a_proj.weight"
                : "model.layers.1.self_attn.q_proj.weight";
            QCOMPARE(c.info(q).dtype, DType::F8_E4M3);
            QCOMPARE(c.info(q + "_scale_inv").shape, (std::vector<int64_t> { 2, 4 }));
            QCOMPARE(c.info(moe + "gate.weight").dtype, DType::F32);
            QVERIFY(!c.contains(moe + "gate.weight_scale_inv"));
        }
        const QString plain = dir.filePath(QStringLiteral("plain"));
        const auto made = test::runPython(QStringLiteral("tests/reference/fp8_dequantize.py"),
            { QStringLiteral("--model"), QString::fromStdString(model), QStringLiteral("--out"), plain });
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr));
        QString ids;
        for (std::size_t i = 0; i < kTokens.size(); ++i)
            ids += (i == 0           ? QString()
                           : i == 12 ? QStringLiteral(";")
                                     : QStringLiteral(","))
                + QString::number(kTokens[i]);
        const QString out = dir.filePath(QStringLiteral("logits.f32"));
        const auto ran = test::runPython(QStringLiteral("tests/reference/stock_logits.py"),
            { QStringLiteral("--model"), plain, QStringLiteral("--ids"), ids, QStringLiteral("--out"), out });
        QVERIFY2(ran.exitCode == 0, qPrintable(ran.stdErr));
        std::vector<float> want(kTokens.size() * 96);
        std::ifstream(out.toStdString(), std::ios::binary)
            .read(reinterpret_cast<char*>(want.data()), static_cast<std::streamsize>(want.size() * sizeof(float)));
        const std::vector<float> got = ourLogits(model);
        const double err = test::relDiff(got, want, test::maxAbs(want));
        qInfo("FP8 logits max error %.3g of max |logit| %.3g", err, test::maxAbs(want));
        QVERIFY2(err <= 1e-4, qPrintable(QString::number(err)));
        // The same model unquantized differs by far more: the parity is not blind to the scales.
        RandomModelOptions o = tinyFp8(static_cast<Architecture>(arch), fused);
        o.fp8 = false;
        const std::string unquantized = dir.filePath(QStringLiteral("f32")).toStdString();
        writeRandomModel(o, unquantized, false);
        QVERIFY(test::relDiff(ourLogits(unquantized), want, test::maxAbs(want)) > 1e-3);
    }
    void parityWithTransformers_data()
    {
        QTest::addColumn<int>("arch");
        QTest::addColumn<bool>("fused");
        QTest::addRow("qwen3_moe per-expert, dense layer") << static_cast<int>(Architecture::Qwen3Moe) << false;
        QTest::addRow("qwen3_moe fused") << static_cast<int>(Architecture::Qwen3Moe) << true;
        QTest::addRow("mixtral") << static_cast<int>(Architecture::Mixtral) << false;
        QTest::addRow("deepseek_v3 (MLA, YaRN, sigmoid router)") << static_cast<int>(Architecture::DeepseekV3) << false;
    }

    // Expert pruning keeps the kept experts' FP8 bytes and scales bit for bit; the export runs and equals the
    // masked evaluation of the same plan on the source.
    void exportKeepsBytes()
    {
        QFETCH(bool, fused);
        QTemporaryDir dir;
        const std::string model = dir.filePath(QStringLiteral("fp8")).toStdString();
        writeRandomModel(tinyFp8(Architecture::Qwen3Moe, fused), model, false);
        Plan plan;
        plan.method = "specialist";
        plan.criterion = "peu";
        plan.modelType = "qwen3_moe";
        plan.numExperts = 6;
        plan.topK = 2;
        plan.layers = fused ? std::vector<int> { 0, 1, 2 } : std::vector<int> { 1, 2 };
        plan.keep = fused ? std::vector<std::vector<int>> { { 0, 2, 3, 5 }, { 1, 2, 4, 5 }, { 0, 1, 3, 4 } }
                          : std::vector<std::vector<int>> { { 1, 2, 4, 5 }, { 0, 1, 3, 4 } };
        const std::string out = dir.filePath(QStringLiteral("pruned")).toStdString();
        exportCheckpoint(model, plan, out);
        const Checkpoint src(model), dst(out);
        QCOMPARE(dst.config()["num_experts"].get<int>(), 4);
        QVERIFY(dst.config()["quantization_config"] == src.config()["quantization_config"]);
        int compared = 0;
        for (std::size_t i = 0; i < plan.layers.size(); ++i) {
            const std::string p = "model.layers." + std::to_string(plan.layers[i]) + ".mlp.experts.";
            for (std::size_t j = 0; j < 4; ++j) {
                const int e = plan.keep[i][j];
                for (const char* proj :
                    { "gate_proj.weight", "up_proj.weight", "down_proj.weight", "gate_up_proj", "down_proj" }) {
                    const bool fusedName = std::strchr(proj, '.') == nullptr;
                    if (fusedName != fused)
                        continue;
                    for (const std::string& name : { std::string(proj), fp8ScaleName(proj) }) {
                        // Per-expert: expert e's tensor becomes expert j's; fused: slice e of dimension 0 becomes j.
                        const std::string from = fused ? p + name : p + std::to_string(e) + "." + name;
                        const std::string to = fused ? p + name : p + std::to_string(j) + "." + name;
                        const std::size_t per = src.bytes(from).size() / (fused ? 6 : 1);
                        const std::size_t at = fused ? static_cast<std::size_t>(e) * per : 0;
                        const std::size_t into = fused ? j * per : 0;
                        QCOMPARE(dst.bytes(to).size(), fused ? 4 * per : per);
                        QCOMPARE(dst.info(to).dtype, src.info(from).dtype);
                        QVERIFY2(std::memcmp(src.bytes(from).data() + at, dst.bytes(to).data() + into, per) == 0,
                            to.c_str());
                        ++compared;
                    }
                }
            }
        }
        QCOMPARE(compared, static_cast<int>(plan.layers.size()) * 4 * (fused ? 4 : 6));
        // Attention weights and their scales are copied whole.
        for (const std::string n :
            { "model.layers.1.self_attn.o_proj.weight", "model.layers.1.self_attn.o_proj.weight_scale_inv" })
            QVERIFY(std::memcmp(src.bytes(n).data(), dst.bytes(n).data(), src.bytes(n).size()) == 0);
        // The export's logits equal the masked evaluation of the plan on the source.
        const std::vector<float> exported = ourLogits(out);
        const ModelSpec spec = parseModelSpec(src.config(), model + "/config.json");
        ExpertMask mask;
        mask.name = "plan";
        for (std::size_t i = 0; i < plan.layers.size(); ++i)
            mask.keep[plan.layers[i]] = plan.keep[i];
        Executor executor(src, spec, {});
        const EvaluationResult r = executor.evaluate(kTokens, kOffsets, std::vector<ExpertMask> { mask }, true);
        const std::vector<float>& masked = r.variants.at(0).logits;
        const double err = test::relDiff(exported, masked, test::maxAbs(masked));
        qInfo("FP8 export vs masked evaluation: max error %.3g of max |logit| %.3g", err, test::maxAbs(masked));
        QVERIFY2(err <= test::kReorderRtol, qPrintable(QString::number(err)));
    }
    void exportKeepsBytes_data()
    {
        QTest::addColumn<bool>("fused");
        QTest::addRow("per-expert") << false;
        QTest::addRow("fused") << true;
    }

    // Cutting FP8 experts to intermediate units is refused before anything is written.
    void exportRefusesDimensionPlans()
    {
        QTemporaryDir dir;
        const std::string model = dir.filePath(QStringLiteral("fp8")).toStdString();
        writeRandomModel(tinyFp8(Architecture::Qwen3Moe, false), model, false);
        Plan plan;
        plan.method = "specialist";
        plan.criterion = "peu";
        plan.modelType = "qwen3_moe";
        plan.numExperts = 6;
        plan.topK = 2;
        plan.layers = { 1, 2 };
        plan.keep = { { 0, 1, 2, 3, 4, 5 }, { 0, 1, 2, 3, 4, 5 } };
        std::vector<int> units(16);
        for (int u = 0; u < 16; ++u)
            units[static_cast<std::size_t>(u)] = u;
        plan.units = { std::vector<std::vector<int>>(6, units), std::vector<std::vector<int>>(6, units) };
        plan.dims = DimPruning { "IntDim-G", "test", "", 1.0 / 3.0, 24 };
        const std::string out = dir.filePath(QStringLiteral("pruned")).toStdString();
        QString what;
        try {
            exportCheckpoint(model, plan, out);
        } catch (const InputError& e) {
            what = QString::fromUtf8(e.what());
        }
        QVERIFY2(what.contains(QStringLiteral("model.layers.1.mlp.experts.0.down_proj.weight"))
                && what.contains(QStringLiteral("FP8 block-scaled")) && what.contains(QStringLiteral("[16, 12]"))
                && what.contains(QStringLiteral("expert pruning only")),
            qPrintable(what));
        QVERIFY(!std::filesystem::exists(out));
        QVERIFY(!std::filesystem::exists(out + ".partial"));
    }

    // The memory plan counts an FP8 layer at its dequantized size; the layer's source bytes are the FP8 bytes and
    // their scales.
    void memoryPlan()
    {
        QTemporaryDir dir;
        const RandomModelOptions o = tinyFp8(Architecture::Qwen3Moe, false);
        RandomModelOptions plain = o;
        plain.fp8 = false;
        const std::string a = dir.filePath(QStringLiteral("fp8")).toStdString();
        const std::string b = dir.filePath(QStringLiteral("f32")).toStdString();
        writeRandomModel(o, a, false);
        writeRandomModel(plain, b, false);
        const Checkpoint ca(a), cb(b);
        const ModelSpec sa = parseModelSpec(ca.config(), a), sb = parseModelSpec(cb.config(), b);
        const Executor ea(ca, sa, {}), eb(cb, sb, {});
        QCOMPARE(ea.plannedPeakBytes(1000, 100), eb.plannedPeakBytes(1000, 100));
        const TensorLayout la(ca, sa);
        for (int l = 0; l < 3; ++l) {
            uint64_t want = 0;
            const std::string prefix = "model.layers." + std::to_string(l) + ".";
            for (const std::string& n : ca.names())
                if (n.starts_with(prefix))
                    want += ca.info(n).byteSize();
            QCOMPARE(la.layerBytes(ca, l), want);
            QCOMPARE(la.layerValues(l) * 4, TensorLayout(cb, sb).layerBytes(cb, l));
        }
    }

    void badScales()
    {
        QFETCH(QString, what);
        QFETCH(QString, tensor);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const std::string model = dir.filePath(QStringLiteral("fp8")).toStdString();
        writeRandomModel(tinyFp8(Architecture::Qwen3Moe, false), model, false);
        const std::string bad = dir.filePath(QStringLiteral("bad")).toStdString();
        const std::string target = tensor.toStdString();
        rewrite(model, bad, [&](std::vector<Tensor>& tensors, nlohmann::json& config) {
            if (what == QStringLiteral("no config")) {
                config.erase("quantization_config");
                return;
            }
            for (auto it = tensors.begin(); it != tensors.end(); ++it) {
                if (it->name != target)
                    continue;
                if (what == QStringLiteral("missing")) {
                    tensors.erase(it);
                } else if (what == QStringLiteral("block count")) {
                    it->shape = { 2, 3 }; // the down projection [40, 24] at 16 x 12 has a 3 x 2 grid
                    it->bytes.resize(6 * 4);
                } else if (what == QStringLiteral("dtype")) {
                    it->dtype = DType::BF16;
                    it->bytes.resize(it->bytes.size() / 2);
                } else if (what == QStringLiteral("e5m2")) {
                    it->dtype = DType::F8_E5M2;
                }
                return;
            }
            QFAIL("no such tensor");
        });
        const QString error = loadError(bad);
        QVERIFY2(
            error.contains(QStringLiteral("model.safetensors")) && error.contains(tensor) && error.contains(expected),
            qPrintable(error));
    }
    void badScales_data()
    {
        QTest::addColumn<QString>("what");
        QTest::addColumn<QString>("tensor");
        QTest::addColumn<QString>("expected");
        const QString down = QStringLiteral("model.layers.2.mlp.experts.3.down_proj.weight");
        const QString scale = down + QStringLiteral("_scale_inv");
        const QString grid = QStringLiteral("has shape [2, 3], expected [3, 2]: one scale per block of '") + down
            + QStringLiteral("' [40, 24] at weight_block_size [16, 12]");
        QTest::addRow("missing") << QStringLiteral("missing") << scale
                                 << QStringLiteral("are missing (expected F32 [3, 2]");
        QTest::addRow("block count") << QStringLiteral("block count") << scale << grid;
        QTest::addRow("dtype") << QStringLiteral("dtype") << scale << QStringLiteral("has dtype BF16, expected F32");
        QTest::addRow("e5m2") << QStringLiteral("e5m2") << down << QStringLiteral("F8_E5M2, expected F8_E4M3");
        QTest::addRow("no quantization_config")
            << QStringLiteral("no config") << QStringLiteral("model.layers.0.mlp.down_proj.weight_scale_inv")
            << QStringLiteral("config.json has no quantization_config");
    }
};

QTEST_GUILESS_MAIN(TestFp8)
#include "tst_fp8.moc"
