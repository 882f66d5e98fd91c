// deepseek_v3's config.json into a ModelSpec: the hub's DeepSeek-V3 config (rope_scaling YaRN, no head_dim),
// the config transformers 5.x saves (rope_parameters, head_dim = qk_rope_head_dim), q_lora_rank null,
// DeepseekV3Config's defaults, and the clear errors naming the field.
#include "checkpoint/hf_config.h"
#include "util/error.h"

#include <QTest>
#include <nlohmann/json.hpp>

using namespace moeatlas;
using nlohmann::json;

namespace {

// deepseek-ai/DeepSeek-V3's config.json (the keys transformers reads; quantization_config left out).
json hubConfig()
{
    return json::parse(R"({
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 129280,
        "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
        "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
        "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": true,
        "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": false, "rope_theta": 10000, "num_nextn_predict_layers": 1,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
        "attention_bias": false, "torch_dtype": "bfloat16"
    })");
}

// As DeepseekV3Config.save_pretrained writes a tiny model (transformers 5.24): head_dim and qk_head_dim derived.
json savedConfig()
{
    return json::parse(R"({
        "model_type": "deepseek_v3", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 4, "qk_head_dim": 12, "hidden_act": "silu",
        "intermediate_size": 96, "moe_intermediate_size": 32, "n_routed_experts": 8, "n_shared_experts": 2,
        "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "first_k_dense_replace": 0, "norm_topk_prob": false,
        "routed_scaling_factor": 1.5, "q_lora_rank": null, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4, "v_head_dim": 12, "rope_interleave": false, "attention_bias": true,
        "num_nextn_predict_layers": 1, "rms_norm_eps": 1e-06, "max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}
    })");
}

void expectFailure(const json& c, const char* needle)
{
    try {
        parseModelSpec(c, "config.json");
        QFAIL(qPrintable(QStringLiteral("accepted; expected an error naming ") + QString::fromLatin1(needle)));
    } catch (const InputError& e) {
        QVERIFY2(std::string(e.what()).find(needle) != std::string::npos, e.what());
        QVERIFY2(std::string(e.what()).find("config.json") != std::string::npos, e.what());
    }
}

} // namespace

class TestDeepseekV3Config : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void hub()
    {
        const ModelSpec s = parseModelSpec(hubConfig(), "config.json");
        QCOMPARE(s.arch, Architecture::DeepseekV3);
        QCOMPARE(std::string(architectureName(s.arch)), std::string("deepseek_v3"));
        QCOMPARE(s.numLayers, 61);
        QCOMPARE(s.numMoeLayers(), 58); // first_k_dense_replace 3
        QVERIFY(!s.layers[2].moe && s.layers[3].moe && s.layers[60].moe);
        QCOMPARE(s.layers[0].denseIntermediate, int64_t(18432));
        QVERIFY(s.router.sigmoid() && s.router.correctionBias && s.router.normTopkProb);
        QCOMPARE(s.router.numExperts, 256);
        QCOMPARE(s.router.topK, 8);
        QCOMPARE(s.router.numGroups, 8);
        QCOMPARE(s.router.topkGroup, 4);
        QCOMPARE(s.router.scalingFactor, 2.5);
        QCOMPARE(s.sharedIntermediate, int64_t(2048));
        QVERIFY(s.sharedExpertsPlural && !s.sharedExpertGate);
        QVERIFY(s.mla.enabled());
        QCOMPARE(s.mla.qLoraRank, int64_t(1536));
        QCOMPARE(s.mla.kvLoraRank, int64_t(512));
        QCOMPARE(s.mla.qkNopeHeadDim, int64_t(128));
        QCOMPARE(s.mla.qkRopeHeadDim, int64_t(64));
        QCOMPARE(s.mla.qkHeadDim(), int64_t(192));
        QCOMPARE(s.mla.vHeadDim, int64_t(128));
        QVERIFY(s.mla.ropeInterleave && !s.mla.attentionBias);
        QCOMPARE(s.headDim, int64_t(64)); // transformers' head_dim = qk_rope_head_dim: the rotary width
        QVERIFY(!s.qkvBias && !s.oBias && s.qkNorm == QkNorm::None);
        QCOMPARE(QString::fromStdString(s.rope.type), QStringLiteral("yarn"));
        QCOMPARE(s.rope.factor, 40.0);
        QCOMPARE(s.rope.mscale, 1.0);
        QCOMPARE(s.rope.mscaleAllDim, 1.0);
        QCOMPARE(s.rope.originalMaxPositionEmbeddings, int64_t(4096));
        QCOMPARE(s.maxPositionEmbeddings, int64_t(163840));
    }
    void saved()
    {
        const ModelSpec s = parseModelSpec(savedConfig(), "config.json");
        QCOMPARE(s.mla.qLoraRank, int64_t(0)); // null: q_proj
        QCOMPARE(s.mla.kvLoraRank, int64_t(16));
        QCOMPARE(s.headDim, int64_t(4));
        QVERIFY(!s.mla.ropeInterleave && s.mla.attentionBias);
        QVERIFY(s.layers[0].moe && s.layers[1].moe);
        QCOMPARE(s.sharedIntermediate, int64_t(64));
        QVERIFY(!s.router.normTopkProb);
        QCOMPARE(s.router.numGroups, 2);
        // head_dim is overwritten by DeepseekV3Config (qk_rope_head_dim): another value is ignored, as there.
        json c = savedConfig();
        c["head_dim"] = 16;
        QCOMPARE(parseModelSpec(c, "config.json").headDim, int64_t(4));
        // hidden_size need not divide by the heads (the head widths are the MLA keys).
        c["hidden_size"] = 66;
        c.erase("head_dim");
        QCOMPARE(parseModelSpec(c, "config.json").headDim, int64_t(4));
    }
    void defaults()
    {
        // DeepseekV3Config's defaults: q_lora_rank 1536, kv_lora_rank 512, qk dims 128 + 64, v 128, rope_interleave
        // true, first_k_dense_replace 3, n_group 8, topk_group 4, routed_scaling_factor 2.5, n_shared_experts 1.
        json c = hubConfig();
        for (const char* k : { "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                 "first_k_dense_replace", "n_group", "topk_group", "routed_scaling_factor", "n_shared_experts",
                 "norm_topk_prob", "attention_bias" })
            c.erase(k);
        c["rope_interleave"] = nullptr;
        const ModelSpec s = parseModelSpec(c, "config.json");
        QCOMPARE(s.mla.qLoraRank, int64_t(1536));
        QCOMPARE(s.mla.kvLoraRank, int64_t(512));
        QCOMPARE(s.mla.qkHeadDim(), int64_t(192));
        QCOMPARE(s.mla.vHeadDim, int64_t(128));
        QVERIFY(s.mla.ropeInterleave && !s.mla.attentionBias);
        QCOMPARE(s.numMoeLayers(), 58);
        QCOMPARE(s.router.numGroups, 8);
        QCOMPARE(s.router.topkGroup, 4);
        QCOMPARE(s.router.scalingFactor, 2.5);
        QVERIFY(s.router.normTopkProb);
        QCOMPARE(s.sharedIntermediate, int64_t(2048));
    }
    void errors()
    {
        json c = savedConfig();
        c["num_key_value_heads"] = 2;
        expectFailure(c, "'num_key_value_heads'");
        c = savedConfig();
        c["qk_rope_head_dim"] = 5;
        expectFailure(c, "'qk_rope_head_dim'");
        c = savedConfig();
        c["v_head_dim"] = nullptr;
        expectFailure(c, "'v_head_dim' is null");
        c = savedConfig();
        c["kv_lora_rank"] = 0;
        expectFailure(c, "'kv_lora_rank' must be > 0");
        c = savedConfig();
        c["q_lora_rank"] = "big";
        expectFailure(c, "'q_lora_rank' must be an integer");
        c = savedConfig();
        c["rope_interleave"] = 1;
        expectFailure(c, "'rope_interleave' must be true or false");
        c = savedConfig();
        c["n_group"] = 3;
        expectFailure(c, "'n_group'");
        c = savedConfig();
        c["first_k_dense_replace"] = 3;
        expectFailure(c, "'first_k_dense_replace'");
        c = hubConfig();
        c["rope_scaling"].erase("factor");
        expectFailure(c, "'rope_scaling.factor' is required");
        c = hubConfig();
        c["rope_scaling"]["partial_rotary_factor"] = 0.5;
        expectFailure(c, "partial_rotary_factor");
        c = savedConfig();
        c["moeatlas_expert_widths"] = json::array({ nullptr, nullptr });
        expectFailure(c, "not supported for deepseek_v3");
        c = savedConfig();
        c["model_type"] = "deepseek_v2";
        expectFailure(c, "deepseek_v2");
    }
};

QTEST_GUILESS_MAIN(TestDeepseekV3Config)
#include "tst_deepseek_v3_config.moc"
