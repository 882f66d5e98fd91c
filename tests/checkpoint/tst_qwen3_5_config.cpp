// Qwen3.5-MoE's config.json (text-only and multimodal with text_config) into a ModelSpec, its tensor names,
// the clear errors for what the engine cannot run, and the generator's checkpoints against the layout.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/random_model.h"
#include "checkpoint/tensor_layout.h"
#include "test_io.h"

#include <QTemporaryDir>
#include <QTest>
#include <nlohmann/json.hpp>

using namespace moeatlas;
using nlohmann::json;

namespace {

// A text config as Qwen3_5MoeForCausalLM.save_pretrained writes it (transformers 5.24), tiny.
json textConfig()
{
    return json::parse(R"({
        "model_type": "qwen3_5_moe_text", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "tie_word_embeddings": false, "attention_bias": false,
        "layer_types": ["linear_attention", "full_attention", "linear_attention", "full_attention"],
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 16, "linear_num_key_heads": 2,
        "linear_num_value_heads": 4, "linear_value_head_dim": 8, "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48, "num_experts": 8, "num_experts_per_tok": 2,
        "rope_parameters": {"partial_rotary_factor": 0.25, "rope_theta": 10000.0, "rope_type": "default"}
    })");
}

} // namespace

class TestQwen35Config : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void textConfig()
    {
        const ModelSpec s = parseModelSpec(::textConfig(), "config.json");
        QCOMPARE(s.arch, Architecture::Qwen3_5Moe);
        QCOMPARE(std::string(architectureName(s.arch)), std::string("qwen3_5_moe"));
        QCOMPARE(s.tensorPrefix, std::string("model."));
        QCOMPARE(s.numMoeLayers(), 4); // every layer MoE
        QVERIFY(s.layers[0].linearAttention && !s.layers[1].linearAttention && s.layers[2].linearAttention);
        QCOMPARE(s.linearAttention.numKeyHeads, 2);
        QCOMPARE(s.linearAttention.numValueHeads, 4);
        QCOMPARE(s.linearAttention.convDim(), int64_t(2 * 2 * 16 + 4 * 8));
        QCOMPARE(s.linearAttention.convKernel, int64_t(4));
        QVERIFY(s.attnOutputGate && s.zeroCentredNorm && s.sharedExpertGate && s.router.normTopkProb);
        QCOMPARE(s.qkNorm, QkNorm::PerHead);
        QCOMPARE(s.sharedIntermediate, int64_t(48));
        QCOMPARE(s.rope.partialRotaryFactor, 0.25);
    }
    void defaults()
    {
        // Without layer_types every 4th layer is full attention (full_attention_interval); without a
        // partial_rotary_factor transformers assumes 0.25; head_dim defaults to 256.
        json c = ::textConfig();
        c.erase("layer_types");
        c.erase("rope_parameters");
        c.erase("head_dim");
        c["full_attention_interval"] = 2;
        const ModelSpec s = parseModelSpec(c, "config.json");
        QVERIFY(s.layers[0].linearAttention && !s.layers[1].linearAttention);
        QVERIFY(s.layers[2].linearAttention && !s.layers[3].linearAttention);
        QCOMPARE(s.rope.partialRotaryFactor, 0.25);
        QCOMPARE(s.headDim, int64_t(256));
    }
    void multimodal()
    {
        json text = ::textConfig();
        text["num_experts"] = 16;
        const json c = { { "model_type", "qwen3_5_moe" }, { "text_config", text },
            { "vision_config", { { "depth", 1 } } }, { "tie_word_embeddings", false } };
        const ModelSpec s = parseModelSpec(c, "config.json");
        QCOMPARE(s.arch, Architecture::Qwen3_5Moe);
        QCOMPARE(s.modelType, std::string("qwen3_5_moe"));
        QCOMPARE(s.tensorPrefix, std::string("model.language_model."));
        QCOMPARE(s.router.numExperts, 16);
        const QString err = test::inputErrorOf([] {
            parseModelSpec(json { { "model_type", "qwen3_5_moe" }, { "text_config", 3 } }, "config.json");
        });
        QVERIFY2(err.contains(QStringLiteral("config.json")) && err.contains(QStringLiteral("text_config")),
            qPrintable(err));
    }
    void badInput_data()
    {
        QTest::addColumn<QString>("key");
        QTest::addColumn<QString>("value");
        QTest::addColumn<QString>("expected");
        QTest::newRow("unknown layer type")
            << "layer_types"
            << R"(["linear_attention", "sliding_attention", "full_attention", "full_attention"])"
            << "entry 1 is \"sliding_attention\"";
        QTest::newRow("layer types count") << "layer_types"
                                           << R"(["full_attention"])"
                                           << "num_hidden_layers";
        QTest::newRow("value heads") << "linear_num_value_heads"
                                     << "3"
                                     << "multiple of linear_num_key_heads";
        QTest::newRow("conv kernel") << "linear_conv_kernel_dim"
                                     << "0"
                                     << "must be > 0";
        QTest::newRow("rotary factor") << "rope_parameters"
                                       << R"({"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 1.5})"
                                       << "partial_rotary_factor";
    }
    void badInput()
    {
        QFETCH(QString, key);
        QFETCH(QString, value);
        QFETCH(QString, expected);
        json c = ::textConfig();
        c[key.toStdString()] = json::parse(value.toStdString());
        const QString err = test::inputErrorOf([&] { parseModelSpec(c, "config.json"); });
        QVERIFY2(err.contains(QStringLiteral("config.json")) && err.contains(key) && err.contains(expected),
            qPrintable(err));
    }
    void tensorNames()
    {
        // The generator writes what the layout expects (names, shapes), for both layer kinds.
        QTemporaryDir dir;
        RandomModelOptions o;
        o.arch = Architecture::Qwen3_5Moe;
        o.numLayers = 4;
        o.hiddenSize = 32;
        o.headDim = 8;
        o.numExperts = 4;
        o.moeIntermediate = 16;
        o.linearKeyHeadDim = 8;
        o.linearValueHeadDim = 8;
        o.vocabSize = 64;
        writeRandomModel(o, dir.path().toStdString(), true);
        const Checkpoint ckpt(dir.path().toStdString());
        const ModelSpec s = parseModelSpec(ckpt.config(), "config.json");
        const TensorLayout layout(ckpt, s);
        layout.validate(ckpt);
        QVERIFY(s.layers[0].linearAttention && !s.layers[3].linearAttention);
        const auto names = [&](int l) {
            QStringList out;
            for (const ExpectedTensor& t : layout.layerTensors(l))
                out << QString::fromStdString(t.name);
            return out;
        };
        QVERIFY(names(0).contains(QStringLiteral("model.layers.0.linear_attn.in_proj_qkv.weight")));
        QVERIFY(!names(0).contains(QStringLiteral("model.layers.0.self_attn.q_proj.weight")));
        QVERIFY(names(3).contains(QStringLiteral("model.layers.3.self_attn.q_norm.weight")));
        for (const ExpectedTensor& t : layout.layerTensors(3))
            if (t.name == "model.layers.3.self_attn.q_proj.weight")
                QCOMPARE(t.shape, (std::vector<int64_t> { 2 * 4 * 8, 32 })); // query and gate rows
    }
};

QTEST_GUILESS_MAIN(TestQwen35Config)
#include "tst_qwen3_5_config.moc"
