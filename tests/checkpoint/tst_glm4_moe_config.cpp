// glm4_moe's config.json into a ModelSpec (sigmoid router, groups, dense prefix, shared experts, partial RoPE,
// q/k norm), the clear errors, deepseek_v2 refused by name, and the plain sigmoid router
// (checkpoint/group_router.h) on hand-computed tokens.
#include "checkpoint/group_router.h"
#include "checkpoint/hf_config.h"
#include "util/error.h"

#include <QTest>
#include <nlohmann/json.hpp>

#include <cmath>

using namespace moeatlas;
using nlohmann::json;

namespace {

// As Glm4MoeConfig.save_pretrained writes it (transformers 5.x), tiny.
json glmConfig()
{
    return json::parse(R"({
        "model_type": "glm4_moe", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
        "intermediate_size": 96, "moe_intermediate_size": 32, "n_routed_experts": 8, "n_shared_experts": 2,
        "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1,
        "norm_topk_prob": true, "routed_scaling_factor": 2.5, "use_qk_norm": true, "attention_bias": true,
        "num_nextn_predict_layers": 1,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    })");
}

double sigmoid(double z)
{
    return 1.0 / (1.0 + std::exp(-z));
}

void expectFailure(const json& c, const char* needle)
{
    try {
        parseModelSpec(c, "config.json");
        QFAIL(qPrintable(QStringLiteral("accepted; expected an error naming ") + QString::fromLatin1(needle)));
    } catch (const InputError& e) {
        QVERIFY2(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
}

} // namespace

class TestGlm4MoeConfig : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void spec()
    {
        const ModelSpec s = parseModelSpec(glmConfig(), "config.json");
        QCOMPARE(s.arch, Architecture::Glm4Moe);
        QCOMPARE(std::string(architectureName(s.arch)), std::string("glm4_moe"));
        QVERIFY(!s.layers[0].moe && s.layers[1].moe && s.layers[2].moe);
        QCOMPARE(s.layers[0].denseIntermediate, int64_t(96));
        QCOMPARE(s.router.numExperts, 8);
        QVERIFY(s.router.sigmoid() && s.router.correctionBias && s.router.normTopkProb && !s.router.bias);
        QCOMPARE(s.router.numGroups, 4);
        QCOMPARE(s.router.topkGroup, 2);
        QCOMPARE(s.router.scalingFactor, 2.5);
        QCOMPARE(s.sharedIntermediate, int64_t(64)); // moe_intermediate_size * n_shared_experts
        QVERIFY(s.sharedExpertsPlural && !s.sharedExpertGate);
        QVERIFY(s.qkvBias && !s.oBias);
        QCOMPARE(s.qkNorm, QkNorm::PerHead);
        QCOMPARE(s.rope.partialRotaryFactor, 0.5);
        QCOMPARE(s.rmsNormEps, 1e-5); // Glm4MoeConfig's default
    }
    void defaults()
    {
        // Glm4MoeConfig: partial_rotary_factor 0.5, first_k_dense_replace 1, n_group/topk_group 1,
        // norm_topk_prob true, use_qk_norm false, n_shared_experts 1.
        json c = glmConfig();
        for (const char* k : { "rope_parameters", "first_k_dense_replace", "n_group", "topk_group", "norm_topk_prob",
                 "use_qk_norm", "n_shared_experts", "routed_scaling_factor" })
            c.erase(k);
        const ModelSpec s = parseModelSpec(c, "config.json");
        QCOMPARE(s.rope.partialRotaryFactor, 0.5);
        QVERIFY(!s.layers[0].moe && s.layers[1].moe);
        QCOMPARE(s.router.numGroups, 1);
        QVERIFY(s.router.normTopkProb);
        QCOMPARE(s.qkNorm, QkNorm::None);
        QCOMPARE(s.sharedIntermediate, int64_t(32));
        QCOMPARE(s.router.scalingFactor, 1.0);
    }
    void errors()
    {
        json c = glmConfig();
        c["n_group"] = 3; // 8 experts do not split into 3 groups
        expectFailure(c, "'n_group'");
        c = glmConfig();
        c["n_group"] = 8; // groups of one expert: no top-2 sum
        expectFailure(c, "at least 2");
        c = glmConfig();
        c["topk_group"] = 5;
        expectFailure(c, "'topk_group'");
        c = glmConfig();
        c["topk_group"] = 1;
        c["num_experts_per_tok"] = 3; // one group of 2 cannot give 3 experts
        expectFailure(c, "fewer experts than num_experts_per_tok");
        c = glmConfig();
        c["first_k_dense_replace"] = 4;
        expectFailure(c, "'first_k_dense_replace'");
        c = glmConfig();
        c["model_type"] = "deepseek_v2";
        expectFailure(c, "deepseek_v2");
    }
    void routeByHand()
    {
        // 8 experts, 4 groups of 2, 2 groups kept, top-2, bias on expert 6.
        RouterSpec r;
        r.numExperts = 8;
        r.topK = 2;
        r.score = RouterScore::Sigmoid;
        r.numGroups = 4;
        r.topkGroup = 2;
        r.normTopkProb = false;
        r.scalingFactor = 2.0;
        const float logits[8] = { 2.0f, -3.0f, 1.0f, 0.5f, 0.0f, 0.0f, -1.0f, -1.0f };
        const float bias[8] = { 0, 0, 0, 0, 0, 0, 1.0f, 0.0f };
        // Choice scores: s + b. Group sums of the top 2: g0 = s(2)+s(-3) = 0.8808+0.0474 = 0.928,
        // g1 = s(1)+s(.5) = 0.7311+0.6225 = 1.354, g2 = 0.5+0.5 = 1.0, g3 = (0.2689+1)+0.2689 = 1.538.
        // Kept groups: g3 and g1; the top 2 choices there: expert 6 (1.269) and expert 2 (0.731).
        TokenRoute t = sigmoidRoute(r, logits, bias, nullptr, 2);
        QCOMPARE(t.ids, (std::vector<int> { 6, 2 }));
        // Weights: unbiased sigmoid scores times the scaling factor (no renormalisation).
        QVERIFY(std::fabs(t.weights[0] - 2.0 * sigmoid(-1.0)) < 1e-6);
        QVERIFY(std::fabs(t.weights[1] - 2.0 * sigmoid(1.0)) < 1e-6);
        // Expert 0 has the largest score but its group lost: without groups it would be chosen.
        r.numGroups = 1;
        r.topkGroup = 1;
        t = sigmoidRoute(r, logits, bias, nullptr, 2);
        QCOMPARE(t.ids, (std::vector<int> { 6, 0 }));
        // Without the bias, expert 6 drops out; renormalised weights sum to the scaling factor.
        r.normTopkProb = true;
        t = sigmoidRoute(r, logits, nullptr, nullptr, 2);
        QCOMPARE(t.ids, (std::vector<int> { 0, 2 }));
        const double s0 = sigmoid(2.0), s2 = sigmoid(1.0);
        QVERIFY(std::fabs(t.weights[0] - 2.0 * s0 / (s0 + s2)) < 1e-6);
        QVERIFY(std::fabs(t.weights[1] - 2.0 * s2 / (s0 + s2)) < 1e-6);
    }
    void routeWithPrunedExperts()
    {
        // Pruned experts are neither chosen nor part of a group's top-2: group 3 keeps only expert 7 here, its
        // score becomes -inf, and the groups kept are g1 (1.354) and g2 (1.0).
        RouterSpec r;
        r.numExperts = 8;
        r.topK = 2;
        r.score = RouterScore::Sigmoid;
        r.numGroups = 4;
        r.topkGroup = 2;
        r.normTopkProb = true;
        const float logits[8] = { 2.0f, -3.0f, 1.0f, 0.5f, 0.0f, 0.1f, -1.0f, -1.0f };
        const float bias[8] = { 0, 0, 0, 0, 0, 0, 1.0f, 0.0f };
        const bool kept[8] = { true, true, true, true, true, true, false, true };
        const TokenRoute t = sigmoidRoute(r, logits, bias, kept, 2);
        QCOMPARE(t.ids, (std::vector<int> { 2, 3 }));
        // Too few selectable experts: an error, not a silent -inf pick.
        const bool none[8] = { true, false, false, false, false, false, false, false };
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, sigmoidRoute(r, logits, bias, none, 2));
    }
};

QTEST_GUILESS_MAIN(TestGlm4MoeConfig)
#include "tst_glm4_moe_config.moc"
