// Loading and slicing of one layer's weights (model/layer_weights.h): checkpoint bytes of every dtype
// converted to compute tensors (hand-decoded values, FP8 included), experts cut to kept units
// (sliceExperts) against index loops written here, and the [gate; up] packing moeForward relies on, read
// back from tiny generated checkpoints (random_model.h) in both expert layouts. Everything here is a
// copy or an exactly representable conversion: compared bit for bit.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/random_model.h"
#include "model/layer_weights.h"
#include "test_io.h"

#include <ATen/ATen.h>

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

using namespace moeatlas;
namespace fs = std::filesystem;

namespace {

template <class T> std::vector<std::byte> bytesOf(const std::vector<T>& values)
{
    std::vector<std::byte> b(values.size() * sizeof(T));
    std::memcpy(b.data(), values.data(), b.size());
    return b;
}

// Bitwise equality of two float vectors (NaN == NaN, -0 != +0).
bool sameBits(const std::vector<float>& a, const std::vector<float>& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> floats(const at::Tensor& t)
{
    const at::Tensor c = t.to(at::kFloat).contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// The tensor `name` of the checkpoint as fp32, converted straight from its bytes.
at::Tensor stored(const Checkpoint& ckpt, const std::string& name)
{
    const TensorInfo& info = ckpt.info(name);
    return tensorFromBytes(ckpt.bytes(name).data(), info.dtype, info.shape, at::kFloat, c10::Device(c10::kCPU));
}

} // namespace

class TstLayerWeights : public QObject {
    Q_OBJECT

private Q_SLOTS:
    // Every checkpoint dtype, decoded by hand: sign, exponent and mantissa of each pattern.
    void tensorFromBytesDecodes_data()
    {
        QTest::addColumn<int>("dtype");
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<std::vector<float>>("expected");
        const auto raw = [](const auto& v) {
            const std::vector<std::byte> b = bytesOf(v);
            return QByteArray(reinterpret_cast<const char*>(b.data()), static_cast<qsizetype>(b.size()));
        };
        const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
        QTest::newRow("F32") << static_cast<int>(DType::F32) << raw(std::vector<float> { 1.5f, -2.0f, 0.1f })
                             << std::vector<float> { 1.5f, -2.0f, 0.1f };
        QTest::newRow("F64") << static_cast<int>(DType::F64) << raw(std::vector<double> { 0.25, -3.0 })
                             << std::vector<float> { 0.25f, -3.0f };
        // F16: 1.0, -2.0, 65504 (largest), 2^-24 (smallest subnormal), 1/3 rounded to 0x3555.
        QTest::newRow("F16") << static_cast<int>(DType::F16)
                             << raw(std::vector<uint16_t> { 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555 })
                             << std::vector<float> { 1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), 0.333251953125f };
        // BF16: the high half of the fp32 pattern: 1.0, -5.0, 0x3EAB = 0.333984375.
        QTest::newRow("BF16") << static_cast<int>(DType::BF16) << raw(std::vector<uint16_t> { 0x3F80, 0xC0A0, 0x3EAB })
                              << std::vector<float> { 1.0f, -5.0f, 0.333984375f };
        // E4M3 (bias 7, no infinities): 0x38 = 2^0, 0xB8 = -1, 0x7E = 1.75 * 2^8 = 448 (largest), 0x08 = 2^-6
        // (smallest normal), 0x01 = 1/8 * 2^-6 (subnormal), 0x7F and 0xFF NaN, 0x80 = -0.
        QTest::newRow("F8_E4M3") << static_cast<int>(DType::F8_E4M3)
                                 << raw(std::vector<uint8_t> { 0x38, 0xB8, 0x7E, 0x08, 0x01, 0x7F, 0xFF, 0x80 })
                                 << std::vector<float> { 1.0f, -1.0f, 448.0f, std::ldexp(1.0f, -6),
                                        std::ldexp(1.0f, -9), nan, -nan, -0.0f };
        // E5M2 (bias 15): 0x3C = 1, 0x7B = 1.75 * 2^15 = 57344, 0x7C = inf, 0xFC = -inf, 0x7D NaN,
        // 0x04 = 2^-14, 0x01 = 1/4 * 2^-14.
        QTest::newRow("F8_E5M2") << static_cast<int>(DType::F8_E5M2)
                                 << raw(std::vector<uint8_t> { 0x3C, 0x7B, 0x7C, 0xFC, 0x7D, 0x04, 0x01 })
                                 << std::vector<float> { 1.0f, 57344.0f, inf, -inf, nan, std::ldexp(1.0f, -14),
                                        std::ldexp(1.0f, -16) };
        QTest::newRow("I32") << static_cast<int>(DType::I32) << raw(std::vector<int32_t> { 7, -3 })
                             << std::vector<float> { 7.0f, -3.0f };
    }
    void tensorFromBytesDecodes()
    {
        QFETCH(int, dtype);
        QFETCH(QByteArray, bytes);
        QFETCH(std::vector<float>, expected);
        QByteArray copy = bytes;
        const auto n = static_cast<int64_t>(expected.size());
        const at::Tensor t = tensorFromBytes(
            copy.constData(), static_cast<DType>(dtype), { 1, n }, at::kFloat, c10::Device(c10::kCPU));
        QVERIFY(t.scalar_type() == at::kFloat && t.sizes() == (at::IntArrayRef { 1, n }));
        std::vector<float> got = floats(t);
        // NaN payloads are not specified: compare NaN as NaN, everything else bit for bit (-0 included).
        for (std::size_t i = 0; i < got.size(); ++i)
            if (std::isnan(got[i]) && std::isnan(expected[i]))
                got[i] = expected[i];
        QVERIFY2(sameBits(got, expected), qPrintable(QStringLiteral("decoded %1 ...").arg(got.front())));
        // An owned copy: the source bytes can go away.
        copy.fill('\0');
        QVERIFY(sameBits(floats(t), got));
    }

    void tensorFromBytesToComputeDtype()
    {
        const std::vector<float> v { 1.0f, 3.0f, -0.5f };
        const at::Tensor t = tensorFromBytes(v.data(), DType::F32, { 3 }, at::kBFloat16, c10::Device(c10::kCPU));
        QVERIFY(t.scalar_type() == at::kBFloat16);
        QVERIFY(sameBits(floats(t), v)); // exactly representable in bf16
    }

    // sliceExperts keeps, for expert e, gate rows u, up rows I + u and down columns u of its kept units u,
    // in order; a zero-width expert has no tensors.
    void sliceExpertsCopiesKeptUnits()
    {
        const int64_t E = 4, I = 6, H = 5;
        at::manual_seed(3);
        LayerWeights w;
        w.layer = 2;
        w.gateUp = at::randn({ E, 2 * I, H });
        w.down = at::randn({ E, H, I });
        const std::vector<std::vector<int>> units { { 0, 2, 5 }, {}, { 1 }, { 0, 1, 2, 3, 4, 5 } };
        const RaggedExperts r = sliceExperts(w, units);
        QCOMPARE(r.numExperts(), E);
        QCOMPARE(r.maxWidth(), I);
        uint64_t bytes = 0;
        for (int64_t e = 0; e < E; ++e) {
            const std::vector<int>& u = units[static_cast<std::size_t>(e)];
            const auto width = static_cast<int64_t>(u.size());
            QCOMPARE(r.widths[static_cast<std::size_t>(e)], width);
            const at::Tensor& gateUp = r.gateUp[static_cast<std::size_t>(e)];
            const at::Tensor& down = r.down[static_cast<std::size_t>(e)];
            if (width == 0) {
                QVERIFY(!gateUp.defined() && !down.defined());
                continue;
            }
            QVERIFY(gateUp.sizes() == (at::IntArrayRef { 2 * width, H }));
            QVERIFY(down.sizes() == (at::IntArrayRef { H, width }));
            for (int64_t j = 0; j < width; ++j) {
                const int64_t unit = u[static_cast<std::size_t>(j)];
                QVERIFY(at::equal(gateUp[j], w.gateUp[e][unit]));
                QVERIFY(at::equal(gateUp[width + j], w.gateUp[e][I + unit]));
                QVERIFY(at::equal(down.select(1, j), w.down[e].select(1, unit)));
            }
            bytes += static_cast<uint64_t>(3 * width * H) * sizeof(float);
        }
        QCOMPARE(r.bytes(), bytes);
        QCOMPARE(RaggedExperts {}.maxWidth(), int64_t { 0 });

        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, sliceExperts(w, { { 0 }, { 0 } }));
        LayerWeights ragged;
        ragged.ragged = r;
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, sliceExperts(ragged, units));
    }

    // loadLayer packs each expert's gate and up projections into one [2I, H] block, gate rows first, and
    // keeps down as [H, I] -- the layout moeForward and sliceExperts index -- from per-expert tensors
    // (hub layout) as from fused ones (transformers v5); shared expert, its gate and a dense layer as
    // stored. BF16 storage is widened exactly.
    void loadLayerPacksExperts_data()
    {
        QTest::addColumn<bool>("fused");
        QTest::addColumn<int>("dtype");
        QTest::newRow("per-expert, f32") << false << static_cast<int>(DType::F32);
        QTest::newRow("per-expert, bf16") << false << static_cast<int>(DType::BF16);
        QTest::newRow("fused, f32") << true << static_cast<int>(DType::F32);
    }
    void loadLayerPacksExperts()
    {
        QFETCH(bool, fused);
        QFETCH(int, dtype);
        RandomModelOptions o;
        o.arch = Architecture::Qwen2Moe;
        o.numLayers = 2;
        o.mlpOnlyLayers = { 1 };
        o.hiddenSize = 16;
        o.numHeads = 2;
        o.numKvHeads = 1;
        o.headDim = 8;
        o.numExperts = 4;
        o.moeIntermediate = 6;
        o.sharedIntermediate = 10;
        o.denseIntermediate = 12;
        o.vocabSize = 32;
        o.fusedExperts = fused;
        o.dtype = static_cast<DType>(dtype);
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const fs::path path(dir.filePath(QStringLiteral("model")).toStdString());
        writeRandomModel(o, path, false);
        const Checkpoint ckpt(path);
        const ModelSpec spec = parseModelSpec(ckpt.config(), "config.json");
        const WeightLoader loader(ckpt, spec, {});
        const TensorLayout& names = loader.layout();
        QVERIFY(names.expertLayout() == (fused ? ExpertLayout::Fused : ExpertLayout::PerExpert));
        const int64_t I = spec.moeIntermediate;

        const LayerWeights w = loader.loadLayer(0);
        QVERIFY(w.moe && w.ragged.empty());
        QVERIFY(w.gateUp.scalar_type() == at::kFloat);
        QVERIFY(at::equal(w.router, stored(ckpt, names.routerName(0))));
        if (fused) {
            QVERIFY(at::equal(w.gateUp, stored(ckpt, names.fusedGateUpName(0))));
            QVERIFY(at::equal(w.down, stored(ckpt, names.fusedDownName(0))));
        } else {
            for (int e = 0; e < spec.router.numExperts; ++e) {
                QVERIFY(at::equal(w.gateUp[e].narrow(0, 0, I), stored(ckpt, names.expertName(0, e, ExpertProj::Gate))));
                QVERIFY(at::equal(w.gateUp[e].narrow(0, I, I), stored(ckpt, names.expertName(0, e, ExpertProj::Up))));
                QVERIFY(at::equal(w.down[e], stored(ckpt, names.expertName(0, e, ExpertProj::Down))));
            }
        }
        const std::string moe = names.moePrefix(0);
        QVERIFY(at::equal(w.mlpGate.weight, stored(ckpt, moe + "shared_expert.gate_proj.weight")));
        QVERIFY(at::equal(w.mlpDown.weight, stored(ckpt, moe + "shared_expert.down_proj.weight")));
        QVERIFY(at::equal(w.sharedExpertGate, stored(ckpt, moe + "shared_expert_gate.weight")));
        QVERIFY(w.q.bias.defined()); // qwen2_moe: q/k/v biases, none on o
        QVERIFY(!w.o.bias.defined());
        QVERIFY(at::equal(w.q.bias, stored(ckpt, "model.layers.0.self_attn.q_proj.bias")));

        const LayerWeights dense = loader.loadLayer(1);
        QVERIFY(!dense.moe && !dense.gateUp.defined() && !dense.sharedExpertGate.defined());
        QVERIFY(at::equal(dense.mlpUp.weight, stored(ckpt, "model.layers.1.mlp.up_proj.weight")));

        // Embedding rows by id; ids outside the vocabulary are refused with their position.
        const at::Tensor table = stored(ckpt, "model.embed_tokens.weight");
        QVERIFY(at::equal(loader.embed({ 3, 0, 31 }), at::stack({ table[3], table[0], table[31] })));
        const QString error = test::inputErrorOf([&] { loader.embed({ 1, 32 }); });
        QVERIFY2(error.contains(QStringLiteral("token id 32 at position 1")), qPrintable(error));
    }
};

QTEST_GUILESS_MAIN(TstLayerWeights)
#include "tst_layer_weights.moc"
