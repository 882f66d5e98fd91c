// Plan compilation: budgets (uniform, global, bytes/params), per-layer minimum, specialist,
// generalist and union plans, deterministic ties, group-limited refusal, JSON round trip.
// Every expected keep set below is worked out by hand from the small tables in makeScores().
#include "plan/plan.h"
#include "test_io.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <QTest>

#include <functional>

using namespace moeatlas;
using namespace moeatlas::test;

namespace {

using Keep = std::vector<std::vector<int>>;

// 3 MoE layers x 4 experts. Layer 1 has a tie (experts 1 and 2 at 0.8).
ScoreTable makeScores()
{
    ScoreTable t;
    t.criterion = "peu";
    t.domain = "math";
    t.layers = { 0, 1, 2 };
    t.numExperts = 4;
    t.values = { { 0.9, 0.1, 0.5, 0.3 }, { 0.2, 0.8, 0.8, 0.1 }, { 0.05, 0.04, 0.7, 0.6 } };
    return t;
}

PlanContext makeContext(int topK = 1)
{
    PlanContext ctx;
    ctx.topK = topK;
    ctx.numLayers = 3;
    ctx.costs.fixedBytes = 1000;
    ctx.costs.fixedParams = 500;
    ctx.costs.expertBytes = { 100, 100, 100 };
    ctx.costs.expertParams = { 50, 50, 50 };
    ctx.costs.activeParamsBefore = 800;
    ctx.costs.routerRowParams = 2;
    return ctx;
}

Budget budget(BudgetScope scope, BudgetUnit unit, double amount, int minPerLayer = 0)
{
    return Budget { scope, unit, amount, minPerLayer };
}

// Two domains, one layer: A has 3 tokens, B 1 token.
std::vector<ScoreTable> twoDomains()
{
    ScoreTable a;
    a.criterion = "peu";
    a.domain = "A";
    a.layers = { 0 };
    a.numExperts = 4;
    a.values = { { 1.0, 0.0, 0.0, 0.5 } };
    a.tokenCount = 3;
    ScoreTable b = a;
    b.domain = "B";
    b.values = { { 0.0, 1.0, 0.0, 0.2 } };
    b.tokenCount = 1;
    return { a, b };
}

} // namespace

class TestPlan : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void uniformKeep()
    {
        const Keep k = selectExperts(makeScores(), budget(BudgetScope::Uniform, BudgetUnit::Experts, 2), makeContext());
        QCOMPARE(k, (Keep { { 0, 2 }, { 1, 2 }, { 2, 3 } }));
    }
    void tiesGoToLowerIndex()
    {
        const Keep k = selectExperts(makeScores(), budget(BudgetScope::Uniform, BudgetUnit::Experts, 1), makeContext());
        QCOMPARE(k, (Keep { { 0 }, { 1 }, { 2 } }));
    }
    void uniformFraction()
    {
        const Keep k
            = selectExperts(makeScores(), budget(BudgetScope::Uniform, BudgetUnit::Fraction, 0.5), makeContext());
        QCOMPARE(k, (Keep { { 0, 2 }, { 1, 2 }, { 2, 3 } }));
    }
    void globalKeep()
    {
        // Each layer first keeps its best one; then L1e2 (0.8), L2e3 (0.6) by global rank.
        const Keep k = selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Experts, 5), makeContext());
        QCOMPARE(k, (Keep { { 0 }, { 1, 2 }, { 2, 3 } }));
    }
    void globalMinimumPerLayer()
    {
        // min 2: {0,2},{1,2},{2,3} first, then the best remaining pair, L0e3 (0.3).
        const Keep k
            = selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Experts, 7, 2), makeContext());
        QCOMPARE(k, (Keep { { 0, 2, 3 }, { 1, 2 }, { 2, 3 } }));
        QVERIFY(inputErrorOf([] {
            selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Experts, 5, 2), makeContext());
        }).contains(QStringLiteral("per layer")));
        // The minimum is raised to top-k: with top-2, layer 0 can no longer drop to one expert.
        const Keep k2
            = selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Experts, 6), makeContext(2));
        QCOMPARE(k2, (Keep { { 0, 2 }, { 1, 2 }, { 2, 3 } }));
    }
    void bytesBudget()
    {
        // Uniform: 1000 + 300 m <= 1650 -> m = 2.
        const Keep u
            = selectExperts(makeScores(), budget(BudgetScope::Uniform, BudgetUnit::Bytes, 1650), makeContext());
        QCOMPARE(u, (Keep { { 0, 2 }, { 1, 2 }, { 2, 3 } }));
        // Global: 1300 for the minimum, then +100 per pair in rank order while <= 1550.
        const Keep g = selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Bytes, 1550), makeContext());
        QCOMPARE(g, (Keep { { 0 }, { 1, 2 }, { 2, 3 } }));
        // Params: 500 + 50 per kept expert <= 700 -> 4 experts.
        const Keep p = selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Params, 700), makeContext());
        QCOMPARE(p, (Keep { { 0 }, { 1, 2 }, { 2 } }));
        QVERIFY(inputErrorOf([] {
            selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Bytes, 1200), makeContext());
        }).contains(QStringLiteral("below the smallest plan")));
    }
    void refusesFewerThanTopK()
    {
        QVERIFY(inputErrorOf([] {
            selectExperts(makeScores(), budget(BudgetScope::Uniform, BudgetUnit::Experts, 1), makeContext(2));
        }).contains(QStringLiteral("top-k")));
    }
    void groupLimited()
    {
        PlanContext ctx = makeContext();
        ctx.numGroups = 2;
        // Two per layer = one from each group of two experts.
        const Keep k = selectExperts(makeScores(), budget(BudgetScope::Uniform, BudgetUnit::Experts, 2), ctx);
        QCOMPARE(k, (Keep { { 0, 2 }, { 1, 2 }, { 0, 2 } }));
        QVERIFY(inputErrorOf([&] {
            selectExperts(makeScores(), budget(BudgetScope::Uniform, BudgetUnit::Experts, 3), ctx);
        }).contains(QStringLiteral("same count in every group")));
        QVERIFY(inputErrorOf([&] {
            selectExperts(makeScores(), budget(BudgetScope::Global, BudgetUnit::Experts, 6), ctx);
        }).contains(QStringLiteral("group-limited")));
    }
    void specialistAndPrediction()
    {
        const Plan p = compileSpecialist(
            { makeScores() }, "math", budget(BudgetScope::Uniform, BudgetUnit::Experts, 2), makeContext());
        QCOMPARE(p.method, std::string("specialist"));
        QVERIFY(p.uniform());
        QCOMPARE(p.bytesBefore, uint64_t { 2200 });
        QCOMPARE(p.bytesAfter, uint64_t { 1600 });
        QCOMPARE(p.paramsAfter, int64_t { 800 });
        QCOMPARE(p.activeParamsAfter, int64_t { 800 - 6 * 2 }); // 6 router rows of 2 params dropped
        QVERIFY(inputErrorOf([] {
            compileSpecialist(
                { makeScores() }, "code", budget(BudgetScope::Uniform, BudgetUnit::Experts, 2), makeContext());
        }).contains(QStringLiteral("math")));
    }
    void generalist()
    {
        PlanContext ctx = makeContext();
        ctx.costs = {};
        const Budget b = budget(BudgetScope::Uniform, BudgetUnit::Experts, 2);
        // Token-weighted: 0.75 A + 0.25 B = [0.75, 0.25, 0, 0.425].
        const Plan t = compileGeneralist(twoDomains(), {}, b, ctx);
        QCOMPARE(t.keep, (Keep { { 0, 3 } }));
        QCOMPARE(t.domainWeights.at("A"), 3.0);
        // Equal weights: [0.5, 0.5, 0, 0.35].
        const Plan e = compileGeneralist(twoDomains(), { { "A", 1.0 }, { "B", 1.0 } }, b, ctx);
        QCOMPARE(e.keep, (Keep { { 0, 1 } }));
        // Only B.
        const Plan o = compileGeneralist(twoDomains(), { { "B", 1.0 } }, b, ctx);
        QCOMPARE(o.keep, (Keep { { 1, 3 } }));
    }
    void trivialUnion()
    {
        PlanContext ctx = makeContext();
        ctx.costs = {};
        QCOMPARE(compileUnion(twoDomains(), 1, ctx).keep, (Keep { { 0, 1 } }));
        QCOMPARE(compileUnion(twoDomains(), 2, ctx).keep, (Keep { { 0, 1, 3 } }));
        QCOMPARE(compileUnion(twoDomains(), 2, ctx).method, std::string("union"));
    }
    void scoresFile()
    {
        const nlohmann::json doc = { { "criterion", "peu" }, { "layers", { 1, 3 } },
            { "domains", { { "math", { { 1, 2, 3 }, { 3, 2, 1 } } }, { "code", { { 0, 0, 1 }, { 1, 0, 0 } } } } },
            { "token_counts", { { "math", 10 }, { "code", 30 } } } };
        const auto tables = parseScores(doc, "s.json");
        QCOMPARE(tables.size(), std::size_t { 2 });
        QCOMPARE(tables[0].layers, (std::vector<int> { 1, 3 }));
        QCOMPARE(tables[0].numExperts, 3);
        QCOMPARE(tables[1].tokenCount + tables[0].tokenCount, 40.0);
        nlohmann::json bad = doc;
        bad["domains"]["code"] = { { 0, 1 }, { 1, 0 } };
        QVERIFY(inputErrorOf([&] { parseScores(bad, "s.json"); }).contains(QStringLiteral("s.json")));
    }
    void jsonRoundTrip()
    {
        Plan p = compileSpecialist(
            { makeScores() }, "math", budget(BudgetScope::Global, BudgetUnit::Experts, 5), makeContext());
        p.scoresSource = "scores.json";
        const nlohmann::json j = planToJson(p);
        QCOMPARE(j["uniform"].get<bool>(), false);
        const Plan q = planFromJson(j, "plan.json");
        QCOMPARE(q.keep, p.keep);
        QCOMPARE(q.layers, p.layers);
        QCOMPARE(q.bytesAfter, p.bytesAfter);
        QCOMPARE(q.budget.scope, BudgetScope::Global);
        nlohmann::json bad = j;
        bad["layers"][0]["keep"] = { 0, 0 };
        QVERIFY(inputErrorOf([&] { planFromJson(bad, "plan.json"); }).contains(QStringLiteral("twice")));
    }
};

QTEST_GUILESS_MAIN(TestPlan)
#include "tst_plan.moc"
