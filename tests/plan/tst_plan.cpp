// Plan compilation: budgets (uniform, global, bytes/params), per-layer minimum, specialist,
// generalist and union plans, deterministic ties, group-limited refusal, JSON round trip;
// dimension plans (IntDim-E/L/G, ties, zero-width experts, predictions, the "dims" JSON object).
// Every expected keep set and unit list below is worked out by hand from the small tables in
// makeScores() and makeUnitScores().
#include "plan/dim_plan.h"
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

using Units = std::vector<std::vector<std::vector<int>>>;

// MoE layers 0 and 2, 3 experts of 4 units. Ties: L0e1 units 1/2, L0e2 units 0/1, L2e1 all four,
// L2e2 units 1..3, and 0.6 shared by L0e2j3 and L2e1.
UnitScoreTable makeUnitScores()
{
    UnitScoreTable t;
    t.criterion = "fisher_mask";
    t.domain = "math";
    t.layers = { 0, 2 };
    t.numExperts = 3;
    t.intermediate = 4;
    t.values = {
        0.9, 0.1, 0.5, 0.3, /**/ 0.2, 0.8, 0.8, 0.05, /**/ 0.4, 0.4, 0.0, 0.6, // layer 0
        0.01, 0.02, 0.03, 0.04, /**/ 0.6, 0.6, 0.6, 0.6, /**/ 0.95, 0.0, 0.0, 0.0, // layer 2
    };
    return t;
}

// Two MoE layers; one expert = a router row (8 B, 2 params) + 4 units of 10 B / 5 params.
PlanContext makeDimContext()
{
    PlanContext ctx;
    ctx.topK = 1;
    ctx.numLayers = 3;
    ctx.intermediate = 4;
    ctx.costs.fixedBytes = 1000;
    ctx.costs.fixedParams = 500;
    ctx.costs.expertBytes = { 48, 48 };
    ctx.costs.expertParams = { 22, 22 };
    ctx.costs.unitBytes = { 10, 10 };
    ctx.costs.unitParams = { 5, 5 };
    ctx.costs.activeParamsBefore = 800;
    ctx.costs.routerRowParams = 2;
    return ctx;
}

// Experts {0, 2} of layer 0 and {1, 2} of layer 2.
Plan makeExpertPlan()
{
    Plan p;
    p.method = "specialist";
    p.criterion = "peu";
    p.numExperts = 3;
    p.topK = 1;
    p.layers = { 0, 2 };
    p.keep = { { 0, 2 }, { 1, 2 } };
    return p;
}

Plan dimPlan(DimScope scope, double sparsity, const Plan& experts = {})
{
    return compileDimPlan(experts, makeUnitScores(), DimBudget { scope, sparsity }, makeDimContext());
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
    // Fields of the wrong type or range are InputError naming the field, not a JSON library exception
    // (found by fuzz_scores: tests/fuzz/corpus/scores/bad-count.json).
    void scoresFileBadFields()
    {
        const nlohmann::json doc = { { "criterion", "peu" }, { "layers", { 1, 3 } },
            { "domains", { { "math", { { 1, 2, 3 }, { 3, 2, 1 } } } } }, { "token_counts", { { "math", 10 } } } };
        const auto refused = [&](const char* field, const nlohmann::json& value) {
            nlohmann::json bad = doc;
            bad[field] = value;
            return inputErrorOf([&] { parseScores(bad, "s.json"); });
        };
        QVERIFY(refused("token_counts", { { "math", "x" } }).contains(QStringLiteral("token_counts.math")));
        QVERIFY(refused("token_counts", { { "math", -1 } }).contains(QStringLiteral("token_counts.math")));
        QVERIFY(refused("token_counts", 7).contains(QStringLiteral("token_counts")));
        QVERIFY(refused("criterion", 3).contains(QStringLiteral("criterion")));
        QVERIFY(refused("layers", { 1, "3" }).contains(QStringLiteral("layers")));
        QVERIFY(refused("layers", { 1, 1e20 }).contains(QStringLiteral("layers")));
        QVERIFY(refused("layers", { -1, 3 }).contains(QStringLiteral("layers")));
        QVERIFY(refused("layers", { 3, 3 }).contains(QStringLiteral("layers")));
        QVERIFY(refused("layers", "0,1").contains(QStringLiteral("layers")));
        QCOMPARE(parseScores(doc, "s.json").front().tokenCount, 10.0);
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
    void dimsPerExpert()
    {
        // 4 - int(0.5 * 4) = 2 units per expert, each its own best (ties to the lower unit).
        const Plan p = dimPlan(DimScope::Expert, 0.5);
        QCOMPARE(p.keep, (Keep { { 0, 1, 2 }, { 0, 1, 2 } }));
        QCOMPARE(p.units, (Units { { { 0, 2 }, { 1, 2 }, { 0, 3 } }, { { 2, 3 }, { 0, 1 }, { 0, 1 } } }));
        QCOMPARE(p.dims.scope, std::string("IntDim-E"));
        QCOMPARE(p.dims.intermediate, int64_t { 4 });
        QCOMPARE(p.method, std::string("dims"));
        // Dropped counts truncate like the paper's int(I r): 0.75 and 0.9 both drop 3 (never all 4),
        // 0.2 drops int(0.8) = 0 and keeps every unit.
        const Units one { { { 0 }, { 1 }, { 3 } }, { { 3 }, { 0 }, { 0 } } };
        QCOMPARE(dimPlan(DimScope::Expert, 0.75).units, one);
        QCOMPARE(dimPlan(DimScope::Expert, 0.9).units, one);
        const Units all(2, std::vector<std::vector<int>>(3, { 0, 1, 2, 3 }));
        QCOMPARE(dimPlan(DimScope::Expert, 0.2).units, all);
    }
    void dimsPerLayer()
    {
        // Layer 0 keeps 6 of 12: .9 .8 .8 .6 .5 .4 (L0e2j0 before the tied L0e2j1).
        // Layer 2 keeps 6 of 12: .95, the four .6 of e1, .04.
        const Plan p = dimPlan(DimScope::Layer, 0.5);
        QCOMPARE(p.units, (Units { { { 0, 2 }, { 1, 2 }, { 0, 3 } }, { { 3 }, { 0, 1, 2, 3 }, { 0 } } }));
        QCOMPARE(dimWidths(p, 1), (std::vector<int> { 1, 4, 1 }));
        // 0.3 drops int(3.6) = 3 of 12 per layer (rounding the kept count would keep 8, not 9):
        // layer 0 loses .0, .05, .1; layer 2 the three zeros of e2.
        QCOMPARE(dimPlan(DimScope::Layer, 0.3).units,
            (Units { { { 0, 2, 3 }, { 0, 1, 2 }, { 0, 1, 3 } }, { { 0, 1, 2, 3 }, { 0, 1, 2, 3 }, { 0 } } }));
    }
    void dimsGlobalTiesAndZeroWidth()
    {
        // 12 of 24: .95 .9 .8 .8, five tied .6 (layer 0 first), .5 .4 .4 -> L2e0 keeps nothing.
        const Plan half = dimPlan(DimScope::Global, 0.5);
        QCOMPARE(half.units, (Units { { { 0, 2 }, { 1, 2 }, { 0, 1, 3 } }, { {}, { 0, 1, 2, 3 }, { 0 } } }));
        // 6 of 24: .95 .9 .8 .8, then of the tied .6: L0e2j3 (lower layer), L2e1j0 (lower unit).
        const Plan quarter = dimPlan(DimScope::Global, 0.75);
        QCOMPARE(quarter.units, (Units { { { 0 }, { 1, 2 }, { 3 } }, { {}, { 0 }, { 0 } } }));
        // A zero-width expert round-trips through JSON and stays a kept expert.
        const Plan back = planFromJson(planToJson(quarter), "plan.json");
        QCOMPARE(back.units, quarter.units);
        QCOMPARE(back.keep, quarter.keep);
    }
    void dimsOnExpertPlanAndPrediction()
    {
        // Kept experts only: layer 0 ranks e0 and e2 (8 units, keeps 4), layer 2 e1 and e2.
        const Plan p = dimPlan(DimScope::Layer, 0.5, makeExpertPlan());
        QCOMPARE(p.keep, (Keep { { 0, 2 }, { 1, 2 } }));
        QCOMPARE(p.units, (Units { { { 0, 2 }, { 0, 3 } }, { { 0, 1, 2 }, { 0 } } }));
        QCOMPARE(p.method, std::string("specialist"));
        QCOMPARE(p.dims.criterion, std::string("fisher_mask"));
        QCOMPARE(p.dims.domain, std::string("math"));
        // Before: 1000 + 2 layers x 3 experts x 48 B. After: per layer 2 router rows (8 B) + 4 units (10 B).
        QCOMPARE(p.bytesBefore, uint64_t { 1288 });
        QCOMPARE(p.bytesAfter, uint64_t { 1000 + 2 * (2 * 8 + 4 * 10) });
        QCOMPARE(p.paramsBefore, int64_t { 500 + 2 * 3 * 22 });
        QCOMPARE(p.paramsAfter, int64_t { 500 + 2 * (2 * 2 + 4 * 5) });
        // Per token: one router row of 2 params per layer, and top-1 x (4 - mean width 2) x 5 params per layer.
        QCOMPARE(p.activeParamsAfter, int64_t { 800 - 2 * 2 - 2 * 10 });
    }
    void dimsValidation()
    {
        for (const double s : { -0.1, 1.0, std::nan("") })
            QVERIFY(inputErrorOf([&] { dimPlan(DimScope::Layer, s); }).contains(QStringLiteral("[0, 1)")));
        UnitScoreTable t = makeUnitScores();
        t.values.pop_back();
        QVERIFY(inputErrorOf([&] {
            compileDimPlan({}, t, { DimScope::Global, 0.5 }, makeDimContext());
        }).contains(QStringLiteral("23 values, expected layers x experts x units = 2 x 3 x 4 = 24")));
        PlanContext wide = makeDimContext();
        wide.intermediate = 8;
        QVERIFY(inputErrorOf([&] {
            compileDimPlan({}, makeUnitScores(), { DimScope::Global, 0.5 }, wide);
        }).contains(QStringLiteral("intermediate size 4")));
        Plan other = makeExpertPlan();
        other.numExperts = 4;
        QVERIFY(inputErrorOf([&] {
            compileDimPlan(other, makeUnitScores(), { DimScope::Global, 0.5 }, makeDimContext());
        }).contains(QStringLiteral("3 experts per layer")));
        other = makeExpertPlan();
        other.layers = { 0, 1 };
        QVERIFY(inputErrorOf([&] {
            compileDimPlan(other, makeUnitScores(), { DimScope::Global, 0.5 }, makeDimContext());
        }).contains(QStringLiteral("no scores for MoE layer 1")));
        t = makeUnitScores();
        t.values[5] = std::numeric_limits<double>::infinity();
        QVERIFY(inputErrorOf([&] {
            compileDimPlan({}, t, { DimScope::Global, 0.5 }, makeDimContext());
        }).contains(QStringLiteral("finite")));
        Plan bad = dimPlan(DimScope::Layer, 0.5);
        bad.units[1][0] = { 3, 1 };
        QVERIFY(inputErrorOf([&] {
            checkDims(bad, "p.json");
        }).contains(QStringLiteral("p.json: dims, layer 2, expert 0")));
        bad.units[1][0] = { 4 };
        QVERIFY(inputErrorOf([&] { checkDims(bad, "p.json"); }).contains(QStringLiteral("outside [0, 4)")));
    }
    void dimsJson()
    {
        const Plan p = dimPlan(DimScope::Layer, 0.5, makeExpertPlan());
        const nlohmann::json j = planToJson(p);
        const nlohmann::json& d = j["dims"];
        QCOMPARE(d["scope"].get<std::string>(), std::string("IntDim-L"));
        QCOMPARE(d["sparsity"].get<double>(), 0.5);
        QCOMPARE(d["intermediate_size"].get<int>(), 4);
        QCOMPARE(d["layers"][1]["widths"].get<std::vector<int>>(), (std::vector<int> { 3, 1 }));
        // Layer 0: bits 0, 2 (k 0) and 4, 7 (k 1) = 0x95; layer 2: bits 0, 1, 2 and 4 = 0x17.
        QCOMPARE(d["layers"][0]["units_b64"].get<std::string>(), std::string("lQ=="));
        QCOMPARE(d["layers"][1]["units_b64"].get<std::string>(), std::string("Fw=="));
        const Plan q = planFromJson(j, "plan.json");
        QCOMPARE(q.units, p.units);
        QCOMPARE(q.dims.scope, p.dims.scope);
        QCOMPARE(q.dims.criterion, p.dims.criterion);
        QCOMPARE(q.dims.domain, p.dims.domain);
        QCOMPARE(q.dims.intermediate, int64_t { 4 });
        QCOMPARE(q.bytesAfter, p.bytesAfter);

        // An expert-only plan (files written before dimension plans) has no "dims".
        nlohmann::json old = j;
        old.erase("dims");
        QVERIFY(!planFromJson(old, "old.json").hasDims());
        QVERIFY(!planToJson(planFromJson(old, "old.json")).contains("dims"));

        // With dims, the units follow the keep order: an unsorted keep list is refused, not re-sorted.
        nlohmann::json unsorted = j;
        auto& keep = unsorted["layers"][0]["keep"];
        std::reverse(keep.begin(), keep.end());
        QVERIFY(inputErrorOf([&] {
            planFromJson(unsorted, "plan.json");
        }).contains(QStringLiteral("keep must be sorted in a plan with dims")));
        unsorted.erase("dims");
        QCOMPARE(planFromJson(unsorted, "plan.json").keep, planFromJson(old, "plan.json").keep);

        const auto errorOf = [&](const std::function<void(nlohmann::json&)>& edit) {
            nlohmann::json bad = j;
            edit(bad["dims"]);
            return inputErrorOf([&] { planFromJson(bad, "plan.json"); });
        };
        QVERIFY(errorOf([](nlohmann::json& b) { b["layers"][1]["widths"][0] = 2; })
                    .contains(QStringLiteral(
                        "plan.json: dims.layers[1].widths[0] is 2 but units_b64 keeps 3 units of expert 1")));
        QVERIFY(errorOf([](nlohmann::json& b) {
            b["layers"][0]["widths"][1] = 5;
        }).contains(QStringLiteral("dims.layers[0].widths[1] must be an integer in [0, 4]")));
        QVERIFY(errorOf([](nlohmann::json& b) {
            b["layers"][0]["widths"] = { 2 };
        }).contains(QStringLiteral("dims.layers[0].widths must hold one width per kept expert (2)")));
        QVERIFY(errorOf([](nlohmann::json& b) {
            b["layers"][0]["units_b64"] = "l*==";
        }).contains(QStringLiteral("plan.json: dims.layers[0].units_b64: not base64")));
        QVERIFY(errorOf([](nlohmann::json& b) {
            b["layers"][0]["units_b64"] = "lQA=";
        }).contains(QStringLiteral("2 bytes, expected 1")));
        QVERIFY(errorOf([](nlohmann::json& b) {
            std::swap(b["layers"][0], b["layers"][1]);
        }).contains(QStringLiteral("dims.layers[0].layer must be 0")));
        QVERIFY(errorOf([](nlohmann::json& b) { b["scope"] = "IntDim-X"; }).contains(QStringLiteral("dims.scope")));
        QVERIFY(errorOf([](nlohmann::json& b) { b["sparsity"] = 1.5; }).contains(QStringLiteral("dims.sparsity")));
        QVERIFY(errorOf([](nlohmann::json& b) {
            b["intermediate_size"] = 0;
        }).contains(QStringLiteral("dims.intermediate_size")));
    }
};

QTEST_GUILESS_MAIN(TestPlan)
#include "tst_plan.moc"
