// Hardware presets and the roofline of the offload simulator: the shipped presets parse and match their
// files, a preset missing any field is refused naming the file and the field, zero or negative bandwidth is
// refused naming it; the roofline's FLOPs and bytes equal counts made by hand for a small Qwen2-MoE config,
// and with every expert resident a simulated step takes exactly that compute.
#include "checkpoint/hf_config.h"
#include "sim/hardware.h"
#include "sim/simulator.h"
#include "sim_fixture.h"
#include "test_support.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QTest>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

using namespace moeatlas;
using namespace moeatlas::test;

namespace {

// Qwen2-MoE, 3 decoder layers: layer 0 dense (mlp_only_layers), layers 1 and 2 MoE. H = 16, 4 heads of
// head_dim 16/4 = 4, 2 KV heads, 4 experts of width 8, top-2, a shared expert of width 12, dense width 20,
// vocabulary 100, bf16 (2 bytes).
nlohmann::json tinyConfig()
{
    return nlohmann::json::parse(R"({
        "model_type": "qwen2_moe", "vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts_per_tok": 2, "num_experts": 4,
        "moe_intermediate_size": 8, "shared_expert_intermediate_size": 12, "intermediate_size": 20,
        "mlp_only_layers": [0], "torch_dtype": "bfloat16", "rope_theta": 10000.0
    })");
}

// Hand counts (parameters; FLOPs per token = 2 x parameters, bytes = 2 x parameters):
//   attention of one layer: q 16x16 + k 16x8 + v 16x8 + o 16x16 = 768
//   router: 16x4 = 64; dense MLP: 3 x 16 x 20 = 960; shared expert 3 x 16 x 12 + gate 16 = 592
//   routed expert: 3 x 16 x 8 = 384 (768 bytes, 768 FLOPs per token routed to it); LM head 16 x 100 = 1600
//   pre of MoE layer 0 = layer 0 (768 + 960) + layer 1 attention 768 + router 64 = 2560, 2 attention blocks
//   pre of MoE layer 1 = 768 + 64 = 832, 1 attention block; tail = 1600
//   per attention block and key: 4 x heads x head_dim = 64 FLOPs per token, KV 2 x 2 x 4 x 2 = 32 bytes
constexpr double kAttnFlopsPerKey = 64, kKvBytesPerKey = 32;

std::string readText(const std::string& path)
{
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

} // namespace

class TstSimModel : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void presetsParse()
    {
        const std::vector<std::string> names = hardwarePresetNames();
        for (const char* required : { "a6000-pcie4", "h100-pcie5", "rtx4090-pcie4" })
            QVERIFY2(std::find(names.begin(), names.end(), required) != names.end(), required);
        for (const std::string& name : names) {
            const HardwareSpec hw = loadHardware(name, "hardware");
            QCOMPARE(QString::fromStdString(hw.name), QString::fromStdString(name));
            validateHardware(hw, "hardware");
            QVERIFY(hw.flopsPerSecond.count("bf16") == 1);
            QVERIFY(!hw.source.empty());
            // The built-in text is the file in resources/sim, and loading the file gives the same numbers.
            const std::string file
                = sourcePath(QStringLiteral("resources/sim/%1.json").arg(QString::fromStdString(name))).toStdString();
            QCOMPARE(
                QString::fromStdString(hardwarePresetText(name, "hardware")), QString::fromStdString(readText(file)));
            const HardwareSpec fromFile = loadHardware(file, "hardware");
            QCOMPARE(fromFile.linkBandwidth, hw.linkBandwidth);
            QCOMPARE(fromFile.memoryBandwidth, hw.memoryBandwidth);
            QCOMPARE(fromFile.flopsPerSecond, hw.flopsPerSecond);
        }
        const HardwareSpec a6000 = loadHardware("a6000-pcie4", "hardware");
        QCOMPARE(a6000.memoryBandwidth, 768e9);
        QCOMPARE(a6000.linkBandwidth, 31.5e9);
        QCOMPARE(flopsFor(a6000, DType::BF16, "dtype"), 154.8e12);
        try {
            flopsFor(a6000, DType::F8_E4M3, "dtype");
            QFAIL("FP8 FLOP/s invented for the A6000");
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QStringLiteral("dtype"));
        }
        try {
            loadHardware("a6000", "hardware");
            QFAIL("unknown preset accepted");
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QStringLiteral("hardware"));
            QVERIFY(std::string(e.what()).find("a6000-pcie4") != std::string::npos); // lists the presets
        }
    }

    void presetMissingField_data()
    {
        QTest::addColumn<QString>("field");
        for (const char* f :
            { "gpu", "link", "source", "flops_per_s", "memory_bytes_per_s", "link_bytes_per_s", "link_latency_s" })
            QTest::newRow(f) << QString::fromLatin1(f);
    }
    void presetMissingField()
    {
        QFETCH(QString, field);
        QTemporaryDir dir;
        nlohmann::json doc = nlohmann::json::parse(hardwarePresetText("h100-pcie5", "hardware"));
        doc.erase(field.toStdString());
        const std::string path = dir.filePath(QStringLiteral("mine.json")).toStdString();
        std::ofstream(path) << doc.dump();
        try {
            loadHardware(path, "hardware");
            QFAIL("a preset missing a field was accepted");
        } catch (const RequestError&) {
            QFAIL("a file's problem reported as a request field");
        } catch (const InputError& e) {
            const std::string msg = e.what();
            QVERIFY2(msg.find(path) != std::string::npos, msg.c_str());
            QVERIFY2(msg.find("'" + field.toStdString() + "'") != std::string::npos, msg.c_str());
        }
    }

    void zeroBandwidthRefused_data()
    {
        QTest::addColumn<double>("bandwidth");
        QTest::newRow("zero") << 0.0;
        QTest::newRow("negative") << -1e9;
    }
    void zeroBandwidthRefused()
    {
        QFETCH(double, bandwidth);
        // In a file: InputError naming the file and the field.
        QTemporaryDir dir;
        nlohmann::json doc = nlohmann::json::parse(hardwarePresetText("a6000-pcie4", "hardware"));
        doc["link_bytes_per_s"] = bandwidth;
        const std::string path = dir.filePath(QStringLiteral("slow.json")).toStdString();
        std::ofstream(path) << doc.dump();
        try {
            loadHardware(path, "hardware");
            QFAIL("zero link bandwidth accepted in a file");
        } catch (const InputError& e) {
            QVERIFY(std::string(e.what()).find("link_bytes_per_s") != std::string::npos);
            QVERIFY(std::string(e.what()).find(path) != std::string::npos);
        }
        // As an override: RequestError naming the field.
        HardwareSpec hw = loadHardware("a6000-pcie4", "hardware");
        hw.linkBandwidth = bandwidth;
        try {
            validateHardware(hw, "hardware");
            QFAIL("zero link bandwidth validated");
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QStringLiteral("hardware.linkBandwidth"));
        }
        // In the simulator itself.
        const RoutingTrace trace = makeTrace(4, 1, { { { 0 }, { 1 } } }, { 2 });
        SimConfig c;
        c.cache.slots = 2;
        c.linkBandwidth = bandwidth;
        try {
            simulate(trace, {}, measuredModel(1, 4, 1, 1.0, LayerTime { 1, 1, 0 }, 0), c);
            QFAIL("simulated over a link of no bandwidth");
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QStringLiteral("linkBandwidth"));
        }
    }

    void rooflineCounts()
    {
        const ModelSpec spec = parseModelSpec(tinyConfig(), "tiny/config.json");
        const ModelCosts costs = modelCosts(spec, weightDtype(spec, "", "dtype"));
        QCOMPARE(costs.moeLayers, (std::vector<int> { 1, 2 }));
        QCOMPARE(costs.bytesOf(0, 3), 768.0);
        QCOMPARE(costs.attentionFlopsPerKey, kAttnFlopsPerKey);
        QCOMPARE(costs.kvBytesPerKey, kKvBytesPerKey);

        ComputeModel m;
        m.costs = costs;
        m.flopsPerSecond = 1000;
        m.memoryBandwidth = 1000;
        // A step of two tokens at positions 3 and 5 (keys 3 and 5).
        const std::vector<int64_t> contexts { 3, 5 };
        // pre of MoE layer 0: FLOPs 2 tokens x 5120 + (3 + 5) keys x 2 blocks x 64 = 11264;
        // bytes 5120 + 8 x 2 x 32 = 5632; time max(11.264, 5.632) = 11.264 s.
        const auto pre0 = m.phaseWork(costs.pre[0], contexts);
        QCOMPARE(pre0.flops, 11264.0);
        QCOMPARE(pre0.bytes, 5632.0);
        QCOMPARE(m.preTime(0, contexts), 11.264);
        // pre of MoE layer 1: FLOPs 2 x 1664 + 8 x 64 = 3840; bytes 1664 + 8 x 32 = 1920.
        const auto pre1 = m.phaseWork(costs.pre[1], contexts);
        QCOMPARE(pre1.flops, 3840.0);
        QCOMPARE(pre1.bytes, 1920.0);
        // experts of MoE layer 0: experts {1, 3} run by 2 and 1 tokens: FLOPs 2 x 1184 (shared) + 3 x 768 = 4672;
        // bytes 1184 + 2 x 768 = 2720.
        const std::vector<int32_t> experts { 1, 3 }, assign { 2, 1 };
        const auto moe = m.moeWork(0, experts, assign, 2);
        QCOMPARE(moe.flops, 4672.0);
        QCOMPARE(moe.bytes, 2720.0);
        QCOMPARE(m.moeTime(0, experts, assign, 2), 4.672);
        // tail: LM head, FLOPs 2 x 3200 = 6400, bytes 3200.
        QCOMPARE(m.tailTime(contexts), 6.4);
        // Memory-bound at 100 bytes/s: pre 0 takes 5632 / 100.
        m.memoryBandwidth = 100;
        QCOMPARE(m.preTime(0, contexts), 56.32);
        // float32 override doubles every byte, not the FLOPs.
        const ModelCosts f32 = modelCosts(spec, weightDtype(spec, "float32", "dtype"));
        QCOMPARE(f32.bytesOf(1, 0), 1536.0);
        QCOMPARE(f32.expertFlops[0], 768.0);
    }

    // Every expert resident after one step that routes to all: each later step of one token at key count c
    // takes pure compute: pre0 + pre1 + experts(layer 0) + experts(layer 1) + tail, counted by hand with
    // 1e6 FLOP/s and 1e5 bytes/s (every phase memory-bound at batch 1, see below).
    void infiniteCacheRoofline()
    {
        const ModelSpec spec = parseModelSpec(tinyConfig(), "tiny/config.json");
        ComputeModel m;
        m.costs = modelCosts(spec, DType::BF16);
        m.flopsPerSecond = 1e6;
        m.memoryBandwidth = 1e5;
        // One sequence of 6 tokens; tokens 0, 1 route to {0,1}, {2,3} in both layers, then a mix.
        const RoutingTrace trace = makeTrace(4, 2,
            { { { 0, 1 }, { 2, 3 }, { 1, 2 }, { 0, 3 }, { 3, 1 }, { 2, 0 } },
                { { 0, 1 }, { 2, 3 }, { 3, 2 }, { 1, 0 }, { 0, 2 }, { 1, 3 } } },
            { 6 });
        SimConfig c;
        c.cache.slots = 4;
        c.linkBandwidth = 1e3;
        c.warmupSteps = 2;
        const SimResult r = simulate(trace, {}, m, c);
        QCOMPARE(r.total.stall, 0.0);
        // Token at position p has p + 1 keys. Batch 1, bytes dominate (FLOPs/1e6 < bytes/1e5 in every phase):
        //   pre0 = (5120 + (p+1) x 2 x 32) / 1e5; pre1 = (1664 + (p+1) x 32) / 1e5
        //   experts = (1184 + 2 x 768) / 1e5 per MoE layer; tail = 3200 / 1e5
        for (int p = 2; p < 6; ++p) {
            const double keys = p + 1;
            const double expected = (5120 + keys * 64) / 1e5 + (1664 + keys * 32) / 1e5 + 2 * 2720 / 1e5 + 3200 / 1e5;
            QVERIFY2(std::abs(r.stepTimes[p] - expected) <= 1e-12 * expected,
                (std::to_string(r.stepTimes[p]) + " vs " + std::to_string(expected)).c_str());
        }
    }

    void measuredTimesFile()
    {
        const nlohmann::json ok = nlohmann::json::parse(
            R"({"layers": [{"pre": 1e-4, "moe": 2e-4, "per_expert": 1e-5}, {"pre": 1e-4, "moe": 2e-4, "per_expert": 0}], "tail": 3e-4})");
        const MeasuredTimes t = parseMeasuredTimes(ok, "times.json", 2);
        QCOMPARE(t.layers[0].perExpert, 1e-5);
        QCOMPARE(t.tail, 3e-4);
        nlohmann::json bad = ok;
        bad["layers"][1].erase("moe");
        try {
            parseMeasuredTimes(bad, "times.json", 2);
            QFAIL("missing field accepted");
        } catch (const InputError& e) {
            QVERIFY(std::string(e.what()).find("layers[1].moe") != std::string::npos);
        }
        try {
            parseMeasuredTimes(ok, "times.json", 3);
            QFAIL("wrong layer count accepted");
        } catch (const InputError&) {
        }
    }
};

QTEST_APPLESS_MAIN(TstSimModel)
#include "tst_sim_model.moc"
