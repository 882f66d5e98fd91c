// Routing rules in evaluation (checkpoint/routing_rule.h, EvalVariant/withRoutingRules, the routing
// cost columns of EvalTable): the rule's per-token k against ruleTokenK on the router logits the
// capture path records, the model's own k as a rule equal to the model, active parameters against the
// checkpoint's inventory by hand, the equal-cost top-k interpolation, the table in the atlas format
// and CSV, and the errors bad rules get. Parity with transformers is in tst_reference_parity.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/inventory.h"
#include "checkpoint/random_model.h"
#include "checkpoint/routing_rule.h"
#include "eval/eval.h"
#include "runtime/executor.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <sstream>

using namespace moeatlas;
namespace fs = std::filesystem;

namespace {

// Qwen3-MoE, MoE layers 0 and 2 around a dense layer, 8 experts, top-2.
RandomModelOptions modelOptions()
{
    RandomModelOptions o;
    o.arch = Architecture::Qwen3Moe;
    o.numLayers = 3;
    o.mlpOnlyLayers = { 1 };
    o.hiddenSize = 64;
    o.numHeads = 4;
    o.numKvHeads = 2;
    o.headDim = 16;
    o.numExperts = 8;
    o.topK = 2;
    o.moeIntermediate = 32;
    o.denseIntermediate = 96;
    o.vocabSize = 128;
    o.initStd = 0.2;
    o.seed = 11;
    return o;
}

EvalTokens sampleTokens(int64_t vocab)
{
    EvalTokens t;
    t.domains = { "code", "prose" };
    t.seqOffsets = { 0, 16, 32, 41 };
    t.seqDomain = { 0, 1, 0 };
    std::mt19937 rng(5);
    for (int i = 0; i < 41; ++i)
        t.tokens.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
    t.source = "test";
    return t;
}

// The first MoE layer's router logits (no routing decision comes before them, so every rule sees
// these same logits there).
class FirstRouter : public ExecutionObserver {
public:
    explicit FirstRouter(int64_t tokens)
        : m_tokens(tokens)
    {
    }
    void onRouterBlock(const RouterBlock& b) override
    {
        if (b.layer != 0)
            return;
        logits.resize(static_cast<std::size_t>(m_tokens * b.numExperts));
        std::copy_n(b.logits, b.numTokens * b.numExperts, logits.begin() + b.tokenBegin * b.numExperts);
    }
    std::vector<float> logits;

private:
    int64_t m_tokens;
};

std::size_t indexOf(const EvalTable& t, const std::string& name)
{
    for (std::size_t v = 0; v < t.variants.size(); ++v)
        if (t.variants[v].name == name)
            return v;
    throw std::runtime_error("no variant " + name);
}

} // namespace

class TstEvalRouting : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    std::unique_ptr<Checkpoint> m_ckpt;
    ModelSpec m_spec;
    EvalTokens m_tokens;

    RoutingRule rule(const std::string& text) const
    {
        return parseRoutingRule(text, m_spec.router.numExperts, m_spec.router.topK);
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        const fs::path model(m_dir.filePath(QStringLiteral("model")).toStdString());
        writeRandomModel(modelOptions(), model, false);
        m_ckpt = std::make_unique<Checkpoint>(model);
        m_spec = parseModelSpec(m_ckpt->config(), "config.json");
        m_tokens = sampleTokens(m_spec.vocabSize);
    }

    void ladderAndNames()
    {
        const std::vector<EvalVariant> v
            = withRoutingRules({ fullVariant(m_spec) }, { rule("probmoe:1:3"), rule("top-k:1") }, m_spec);
        std::vector<std::string> names;
        for (const EvalVariant& x : v)
            names.push_back(x.name);
        // The user's top-k:1 is not added twice; the ladder adds top-k:3 (top-k:2 is the model).
        QCOMPARE(names, (std::vector<std::string> { "full", "full+probmoe:1:3", "full+top-k:1", "full+top-k:3" }));
        QCOMPARE(v[1].base, std::string("full"));
        QCOMPARE(v[1].routing, std::string("probmoe:1:3"));
        QVERIFY(v[1].mask.routing == rule("probmoe:1:3"));
        QCOMPARE(v[0].routing, std::string("model"));
        // Fixed rules alone get no ladder.
        QCOMPARE(withRoutingRules({ fullVariant(m_spec) }, { rule("top-k:1") }, m_spec).size(), std::size_t { 2 });
    }

    // probmoe and top-p give each token of the first MoE layer the k that ruleTokenK computes from the
    // logits the capture path records; the model's own k as a rule is the model, bit for bit.
    void perTokenKMatchesTheRule()
    {
        ExecutorOptions o;
        Executor run(*m_ckpt, m_spec, o);
        FirstRouter router(static_cast<int64_t>(m_tokens.tokens.size()));
        run.run(m_tokens.tokens, m_tokens.seqOffsets, router);

        std::vector<ExpertMask> masks(4);
        masks[0].name = "model";
        masks[1].name = "top-k:2";
        masks[1].routing = rule("top-k:2");
        masks[2].name = "probmoe";
        masks[2].routing = rule("probmoe:1:5");
        masks[3].name = "top-p";
        masks[3].routing = rule("top-p:0.5:1:6");
        Executor ex(*m_ckpt, m_spec, o);
        const EvaluationResult r = ex.evaluate(m_tokens.tokens, m_tokens.seqOffsets, masks, true);
        QCOMPARE(r.variants[1].logits, r.variants[0].logits);
        QCOMPARE(r.variants[1].expertsUsed, r.variants[0].expertsUsed);

        const int E = m_spec.router.numExperts;
        const std::size_t T = m_tokens.tokens.size();
        int compared = 0;
        std::set<int> seen;
        for (std::size_t t = 0; t < T; ++t) {
            const float* row = router.logits.data() + t * static_cast<std::size_t>(E);
            // fp64 softmax, sorted: a second computation of the routing probabilities.
            const double top = *std::max_element(row, row + E);
            std::vector<double> p(row, row + E);
            double sum = 0;
            for (double& x : p)
                sum += (x = std::exp(x - top));
            for (double& x : p)
                x /= sum;
            std::sort(p.begin(), p.end(), std::greater<>());
            std::vector<float> sorted(p.begin(), p.end());
            const int positive = static_cast<int>(std::count_if(row, row + E, [](float x) { return x > 0; }));
            QCOMPARE(static_cast<int>(r.variants[0].expertsUsed[t]), 2);
            QCOMPARE(static_cast<int>(r.variants[2].expertsUsed[t]),
                ruleTokenK(masks[2].routing, 2, sorted.data(), positive, 0.0));
            // top-p: skip tokens whose mass is within float rounding of P after some slot.
            double mass = 0, margin = 1;
            for (int j = 0; j < 6; ++j)
                margin = std::min(margin, std::fabs((mass += p[static_cast<std::size_t>(j)]) - 0.5));
            if (margin < 1e-5)
                continue;
            ++compared;
            const int k = ruleTokenK(masks[3].routing, 2, sorted.data(), positive, 0.0);
            seen.insert(k);
            QCOMPARE(static_cast<int>(r.variants[3].expertsUsed[t]), k);
        }
        QVERIFY(compared >= static_cast<int>(T) - 2);
        QVERIFY2(seen.size() >= 2, "top-p gave every token the same k: the check would not see a wrong k");
    }

    // Active parameters: the inventory's count for the model's k, one routed expert per MoE layer less
    // for each expert fewer; FLOPs twice the matrix parameters; histogram and mean agree.
    void routingCostsByHand()
    {
        const std::vector<EvalVariant> variants
            = withRoutingRules({ fullVariant(m_spec) }, { rule("top-k:1"), rule("probmoe:1:3") }, m_spec);
        const EvalTable t = evaluateVariants(*m_ckpt, m_spec, {}, m_tokens, variants);
        const Inventory inv = takeInventory(*m_ckpt, m_spec);
        double perToken = 0; // one routed expert in every MoE layer
        for (const int l : m_spec.moeLayerIndices())
            perToken += static_cast<double>(inv.routedExpertsPerLayer[static_cast<std::size_t>(l)].params)
                / m_spec.router.numExperts;
        const std::size_t full = indexOf(t, "full"), one = indexOf(t, "full+top-k:1"),
                          dyn = indexOf(t, "full+probmoe:1:3");
        for (std::size_t d = 0; d < t.domains.size(); ++d) {
            QVERIFY(std::fabs(t.activeParams[full][d] - static_cast<double>(inv.activeParamsPerToken)) <= 1.0);
            QVERIFY(std::fabs(t.activeParams[full][d] - t.activeParams[one][d] - perToken) <= 1e-6);
            QCOMPARE(t.meanExperts[full][d], 2.0);
            QCOMPARE(t.meanExperts[one][d], 1.0);
            QCOMPARE(t.flopsPerToken[full][d],
                2.0 * (t.activeParams[full][d] - static_cast<double>(inv[Component::Norms].params)));
            // The histogram's mean is the mean; a dynamic rule's active parameters follow its mean.
            const auto& h = t.expertsHistogram[dyn][d];
            double mean = 0, total = 0;
            for (std::size_t k = 0; k < h.size(); ++k) {
                mean += static_cast<double>(k) * h[k];
                total += h[k];
            }
            QVERIFY(std::fabs(total - 1.0) <= 1e-12);
            QVERIFY(std::fabs(mean - t.meanExperts[dyn][d]) <= 1e-12);
            QCOMPARE(h.size(), std::size_t { 4 }); // k = 0..3, the most any variant routes to
            QCOMPARE(h[0], 0.0);
            const double expected = t.activeParams[full][d] + (t.meanExperts[dyn][d] - 2.0) * perToken; // equal layers
            QVERIFY(std::fabs(t.activeParams[dyn][d] - expected) <= 1e-6 * expected);
            // Equal cost: the ladder (1, 2, 3 experts) interpolated at the rule's mean.
            const double x = t.meanExperts[dyn][d];
            const std::size_t three = indexOf(t, "full+top-k:3");
            const double want = x <= 2.0 ? t.nll[one][d] + (t.nll[full][d] - t.nll[one][d]) * (x - 1.0)
                                         : t.nll[full][d] + (t.nll[three][d] - t.nll[full][d]) * (x - 2.0);
            QVERIFY(std::fabs(t.equalCostNll[dyn][d] - want) <= 1e-12);
            QVERIFY(std::isnan(t.equalCostNll[one][d]) && std::isnan(t.equalCostNll[full][d]));
        }
    }

    void tableRoundTripAndCsv()
    {
        const std::vector<EvalVariant> variants
            = withRoutingRules({ fullVariant(m_spec) }, { rule("top-p:0.6:1:3") }, m_spec);
        const EvalTable t = evaluateVariants(*m_ckpt, m_spec, {}, m_tokens, variants);
        const EvalTable back = evalTableFromResults(evalTableResults(t), "test");
        QCOMPARE(back.variants.size(), t.variants.size());
        for (std::size_t v = 0; v < t.variants.size(); ++v) {
            QCOMPARE(back.variants[v].routing, t.variants[v].routing);
            QCOMPARE(back.variants[v].base, t.variants[v].base);
        }
        QCOMPARE(back.meanExperts, t.meanExperts);
        QCOMPARE(back.activeParams, t.activeParams);
        QCOMPARE(back.expertsHistogram, t.expertsHistogram);
        QCOMPARE(back.equalCostNll.size(), t.equalCostNll.size());

        std::istringstream csv(evalTableCsv(t));
        std::string header, row;
        std::getline(csv, header);
        QVERIFY(header.find(",routing,mean_experts,active_params,flops_per_token,equal_cost_topk_nll,"
                            "delta_vs_equal_cost,experts_histogram")
            != std::string::npos);
        const std::size_t dyn = indexOf(t, "full+top-p:0.6:1:3");
        for (std::size_t line = 0; line <= dyn * t.domains.size(); ++line)
            std::getline(csv, row);
        QVERIFY2(row.rfind("full+top-p:0.6:1:3,full,", 0) == 0, row.c_str());
        QVERIFY2(row.find(",top-p:0.6:1:3,") != std::string::npos, row.c_str());
    }

    void badRulesAreRefused()
    {
        // A plan keeping fewer experts than the rule can route to.
        ExpertMask m;
        m.name = "small";
        m.keep[0] = { 0, 1, 2 };
        m.routing = rule("probmoe:1:4");
        Executor ex(*m_ckpt, m_spec, {});
        try {
            const std::vector<ExpertMask> masks { m };
            ex.evaluate(m_tokens.tokens, m_tokens.seqOffsets, masks);
            QFAIL("accepted");
        } catch (const InputError& e) {
            QVERIFY2(
                QString::fromStdString(e.what()).contains(QStringLiteral("fewer than the routing's largest k (4)")),
                e.what());
        }
        // A threshold rule that was never calibrated.
        try {
            withRoutingRules({ fullVariant(m_spec) }, { rule("threshold:1.5") }, m_spec);
            QFAIL("accepted");
        } catch (const RequestError& e) {
            QCOMPARE(e.field(), std::string("routing"));
            QVERIFY2(QString::fromStdString(e.what()).contains(QStringLiteral("no calibrated thresholds")), e.what());
        }
    }
};

QTEST_GUILESS_MAIN(TstEvalRouting)
#include "tst_eval_routing.moc"
