// Masked evaluation (core/eval + Executor::evaluate) on random checkpoints written by the project's
// generator: per-token loss against a second computation from the logits, a mask that keeps every
// expert against the unmasked model, a masked source against the exported (pruned) checkpoint,
// several variants in one pass against each alone, memory-driven grouping, domain means, random
// plans, table outputs, bad masks and cancellation; the executor's and calibration's input errors
// name the request field at fault and no CLI flag.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/random_model.h"
#include "eval/eval.h"
#include "export/exporter.h"
#include "runtime/capture.h"
#include "runtime/executor.h"
#include "test_io.h"
#include "util/error.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

using namespace moeatlas;
namespace fs = std::filesystem;

using moeatlas::test::kReorderRtol;
using moeatlas::test::maxAbs;
using moeatlas::test::maxAbsDiff;
using moeatlas::test::relDiff;

namespace {

// Qwen3-MoE with a dense layer (1) between two MoE layers (0, 2).
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
    o.initStd = 0.2; // large enough that pruning visibly changes the logits
    o.seed = 7;
    return o;
}

// Three sequences of lengths 12, 12 and 7, in domains 0, 1, 0.
EvalTokens sampleTokens(int64_t vocab)
{
    EvalTokens t;
    t.domains = { "code", "prose" };
    t.seqOffsets = { 0, 12, 24, 31 };
    t.seqDomain = { 0, 1, 0 };
    std::mt19937 rng(3);
    for (int i = 0; i < 31; ++i)
        t.tokens.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
    t.source = "test";
    return t;
}

ExpertMask maskOf(const std::string& name, const std::vector<std::vector<int>>& keepPerMoeLayer)
{
    ExpertMask m;
    m.name = name;
    m.keep[0] = keepPerMoeLayer.at(0);
    m.keep[2] = keepPerMoeLayer.at(1);
    return m;
}

} // namespace

class TstEval : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    fs::path m_model;
    std::unique_ptr<Checkpoint> m_ckpt;
    ModelSpec m_spec;
    EvalTokens m_tokens;

    std::vector<VariantOutput> evaluate(const std::vector<ExpertMask>& masks, bool keepLogits = false)
    {
        Executor ex(*m_ckpt, m_spec, {});
        return ex.evaluate(m_tokens.tokens, m_tokens.seqOffsets, masks, keepLogits).variants;
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_model = fs::path(m_dir.filePath(QStringLiteral("model")).toStdString());
        writeRandomModel(modelOptions(), m_model, false);
        m_ckpt = std::make_unique<Checkpoint>(m_model);
        m_spec = parseModelSpec(m_ckpt->config(), "config.json");
        m_tokens = sampleTokens(m_spec.vocabSize);
    }

    // Per-token loss = logsumexp(logits) - logits[next token], recomputed in double from the logits
    // of Executor::run (the capture path), NaN at each sequence's last token.
    void tokenLossMatchesLogits()
    {
        ExecutorOptions o;
        o.computeLogits = true;
        Executor ex(*m_ckpt, m_spec, o);
        ExecutionObserver none;
        const ExecutionResult run = ex.run(m_tokens.tokens, m_tokens.seqOffsets, none);
        const auto out = evaluate({ ExpertMask {} }, true);
        QCOMPARE(out.size(), std::size_t { 1 });
        // run() and evaluate() are two code paths (each chunks the output head its own way): the logits
        // agree up to the order of fp32 sums, within kReorderRtol of the largest |logit|.
        QVERIFY(relDiff(out[0].logits, run.logits, maxAbs(run.logits)) <= kReorderRtol);
        const int64_t V = m_spec.vocabSize;
        std::set<int64_t> last = { 11, 23, 30 };
        for (int64_t t = 0; t < 31; ++t) {
            const float got = out[0].tokenNll[static_cast<std::size_t>(t)];
            if (last.count(t)) {
                QVERIFY2(std::isnan(got), qPrintable(QStringLiteral("token %1").arg(t)));
                continue;
            }
            const float* row = run.logits.data() + t * V;
            double mx = -INFINITY;
            for (int64_t v = 0; v < V; ++v)
                mx = std::max(mx, static_cast<double>(row[v]));
            double sum = 0;
            for (int64_t v = 0; v < V; ++v)
                sum += std::exp(row[v] - mx);
            const double expected = mx + std::log(sum) - row[m_tokens.tokens[static_cast<std::size_t>(t + 1)]];
            // fp32 logsumexp (ATen's, vectorised with the CPU's width) vs double, on the same logits: the
            // fp32 sum of V = 128 exponentials carries <= ~V u = 7.6e-6 of relative error, which the log
            // turns into an absolute one, plus rounding of values of the order of the logits (u = 2^-24).
            // So within kReorderRtol of max(1, largest |logit| of the row).
            double rowScale = 1;
            for (int64_t v = 0; v < V; ++v)
                rowScale = std::max(rowScale, std::abs(static_cast<double>(row[v])));
            QVERIFY2(std::abs(got - expected) <= kReorderRtol * rowScale,
                qPrintable(QStringLiteral("token %1: %2 vs %3").arg(t).arg(got).arg(expected)));
        }
    }

    // Exact on any CPU: a router mask that keeps every expert fills nothing, so both variants run the same
    // operations on the same shapes with the same thread count (each variant alone through the same
    // micro-batches, Executor::evaluate).
    // ExecutorOptions::threads holds for the executor's lifetime only: library code leaves ATen's
    // intra-op thread count as it found it (during the run too, and after a refused construction).
    void executorRestoresThreads()
    {
        const int before = at::get_num_threads();
        const int other = before == 1 ? 2 : 1;
        {
            ExecutorOptions o;
            o.threads = other;
            const Executor ex(*m_ckpt, m_spec, o);
            QCOMPARE(at::get_num_threads(), other);
        }
        QCOMPARE(at::get_num_threads(), before);
        ExecutorOptions bad;
        bad.threads = other;
        bad.batchTokens = 0;
        QVERIFY(!test::inputErrorOf([&] { const Executor ex(*m_ckpt, m_spec, bad); }).isEmpty());
        QCOMPARE(at::get_num_threads(), before);
    }

    // Errors about a request field are RequestErrors naming the field as ExecutorOptions,
    // CalibrationInput and SweepOptions spell it, in words a workbench user can read: no CLI flag.
    void requestErrorsNameTheirField()
    {
        const auto check = [](const test::CaughtRequestError& e, const char* field, const char* fragment) {
            QCOMPARE(e.field, std::string(field));
            QVERIFY2(e.message.contains(QLatin1String(fragment)), qPrintable(e.message));
            QVERIFY2(!e.message.contains(QLatin1String("--")), qPrintable(e.message));
        };
        const auto executorError = [&](const std::function<void(ExecutorOptions&)>& edit) {
            ExecutorOptions o;
            edit(o);
            return test::requestErrorOf([&] { const Executor ex(*m_ckpt, m_spec, o); });
        };
        check(executorError([](ExecutorOptions& o) { o.batchTokens = 0; }), "batchTokens",
            "0 tokens per micro-batch (expected a count > 0)");
        check(executorError([](ExecutorOptions& o) { o.device = "tpu"; }), "device",
            "'tpu' is not a device (expected cpu, cuda or cuda:N)");
        check(executorError([](ExecutorOptions& o) { o.computeDtype = "int8"; }), "computeDtype",
            "'int8' is not a compute dtype");
        ExecutorOptions tiny;
        tiny.memoryBudgetBytes = 1024;
        check(test::requestErrorOf([&] { evaluateVariants(*m_ckpt, m_spec, tiny, m_tokens, { fullVariant(m_spec) }); }),
            "memoryBudgetBytes", "memory plan");

        // A text domain needs a tokenizer: the checkpoint has none, and the one named does not exist.
        const fs::path text = m_dir.filePath(QStringLiteral("prose.txt")).toStdString();
        test::writeText(text, "one document\n\nanother one\n");
        CalibrationInput input;
        input.domains = { { "prose", text.string(), std::nullopt } };
        check(test::requestErrorOf([&] { loadCalibration(input, m_model, m_spec.vocabSize); }), "tokenizer",
            "domain prose (");
        input.tokenizer = m_model / "no-such-tokenizer.json";
        check(test::requestErrorOf([&] { loadCalibration(input, m_model, m_spec.vocabSize); }), "tokenizer",
            "no-such-tokenizer.json: no such file");
        input.tokenizer.clear();
        input.domains.clear();
        input.addBos = true;
        check(test::requestErrorOf([&] { loadCalibration(input, m_model, m_spec.vocabSize); }), "addBos",
            "the BOS token to add comes from the tokenizer");

        SweepOptions sweep;
        sweep.sparsities = { 1.5 };
        check(test::requestErrorOf([&] { sweepVariants("unused.atlas.h5", *m_ckpt, m_spec, sweep); }), "sparsities",
            "sparsity 1.5: expected a fraction");
        sweep.sparsities = { 0.5, 0.501 };
        check(test::requestErrorOf([&] { sweepVariants("unused.atlas.h5", *m_ckpt, m_spec, sweep); }), "sparsities",
            "differ in the first two decimals");
    }

    void maskKeepingEveryExpertIsTheFullModel()
    {
        const std::vector<int> all = { 0, 1, 2, 3, 4, 5, 6, 7 };
        const auto out = evaluate({ ExpertMask {}, maskOf("all", { all, all }) });
        QCOMPARE(maxAbsDiff(out[0].tokenNll, out[1].tokenNll), 0.0);
    }

    // The masked source must behave as the pruned checkpoint the exporter writes (router rows
    // sliced, experts renumbered): same logits, same loss -- up to the order of fp32 sums (a router GEMM
    // of 4 rows instead of 8, other expert batches), so within kReorderRtol of the largest |logit|.
    void maskedSourceEqualsExportedCheckpoint()
    {
        const std::vector<std::vector<int>> keep = { { 1, 2, 5, 6 }, { 0, 3, 4, 7 } };
        Plan plan;
        plan.method = "specialist";
        plan.criterion = "test";
        plan.modelType = m_spec.modelType;
        plan.numExperts = 8;
        plan.topK = 2;
        plan.numLayers = 3;
        plan.layers = { 0, 2 };
        plan.keep = keep;
        const fs::path out = fs::path(m_dir.filePath(QStringLiteral("pruned")).toStdString());
        exportCheckpoint(m_model, plan, out, {});
        const Checkpoint pruned(out);
        const ModelSpec prunedSpec = parseModelSpec(pruned.config(), "pruned/config.json");
        QCOMPARE(prunedSpec.router.numExperts, 4);
        Executor ex(pruned, prunedSpec, {});
        const auto exported = ex.evaluate(m_tokens.tokens, m_tokens.seqOffsets, std::vector<ExpertMask> { {} }, true);
        const auto masked = evaluate({ ExpertMask {}, maskOf("masked", keep) }, true);
        const double scale = maxAbs(exported.variants[0].logits);
        const double logitDiff = relDiff(masked[1].logits, exported.variants[0].logits, scale);
        const double effect = relDiff(masked[0].logits, exported.variants[0].logits, scale);
        qInfo("masked source vs exported checkpoint, relative to max |logit| %.3g: %.3g, vs unpruned %.3g", scale,
            logitDiff, effect);
        QVERIFY(logitDiff <= kReorderRtol);
        QVERIFY(relDiff(masked[1].tokenNll, exported.variants[0].tokenNll, scale) <= kReorderRtol);
        QVERIFY2(effect > 1e-3, "pruning had no effect: vacuous");
    }

    // Exact on any CPU: Executor::evaluate runs each variant alone through the same micro-batches with
    // the same thread count, whichever variants share the call.
    void variantsTogetherEqualEachAlone()
    {
        const std::vector<ExpertMask> masks = { ExpertMask {}, maskOf("a", { { 0, 1, 2 }, { 5, 6 } }),
            maskOf("b", { { 3, 4, 5, 6, 7 }, { 0, 1, 2, 3 } }) };
        const auto together = evaluate(masks);
        for (std::size_t i = 0; i < masks.size(); ++i) {
            const auto alone = evaluate({ masks[i] });
            QCOMPARE(maxAbsDiff(together[i].tokenNll, alone[0].tokenNll), 0.0);
        }
        QVERIFY(maxAbsDiff(together[0].tokenNll, together[1].tokenNll) > 1e-3);
    }

    // Domain means over the positions that have a next token; variants split into groups when
    // the memory budget holds only two residual streams give the same table.
    void tableMeansAndGrouping()
    {
        std::vector<EvalVariant> variants
            = { fullVariant(m_spec), randomVariant(m_spec, 0.5, 1, "r1"), randomVariant(m_spec, 0.25, 2, "r2") };
        const EvalTable table = evaluateVariants(*m_ckpt, m_spec, {}, m_tokens, variants);
        QCOMPARE(table.predictedTokens, (std::vector<int64_t> { 11 + 6, 11 }));
        std::vector<ExpertMask> masks;
        for (const EvalVariant& v : variants)
            masks.push_back(v.mask);
        const auto out = evaluate(masks);
        for (std::size_t v = 0; v < variants.size(); ++v) {
            const auto& nll = out[v].tokenNll;
            const double code = (std::accumulate(nll.begin(), nll.begin() + 11, 0.0)
                                    + std::accumulate(nll.begin() + 24, nll.begin() + 30, 0.0))
                / 17.0;
            const double prose = std::accumulate(nll.begin() + 12, nll.begin() + 23, 0.0) / 11.0;
            // The same fp32 token losses (same path, same threads), averaged in double: rounding alone.
            QVERIFY(std::abs(table.nll[v][0] - code) <= 1e-9);
            QVERIFY(std::abs(table.nll[v][1] - prose) <= 1e-9);
        }

        ExecutorOptions tight;
        tight.memoryBudgetBytes = Executor(*m_ckpt, m_spec, {}).plannedEvaluationBytes(31, 12, 2);
        QCOMPARE(Executor(*m_ckpt, m_spec, tight).variantsThatFit(31, 12), 2);
        int calls = 0;
        bool monotonic = true;
        int64_t lastDone = 0, total = 0;
        const EvalTable grouped = evaluateVariants(*m_ckpt, m_spec, tight, m_tokens, variants, [&](const Progress& p) {
            ++calls;
            monotonic = monotonic && p.done >= lastDone;
            lastDone = p.done;
            total = p.total;
            return true;
        });
        QCOMPARE(grouped.nll, table.nll); // exact: each variant runs alone either way (see above)
        QVERIFY(calls > 0 && monotonic);
        QCOMPARE(total, int64_t { 3 * 31 * 3 });
        QCOMPARE(lastDone, total);
    }

    void randomPlansAreSeededAndSized()
    {
        const EvalVariant a = randomVariant(m_spec, 0.5, 42, "a"), b = randomVariant(m_spec, 0.5, 42, "b");
        const EvalVariant c = randomVariant(m_spec, 0.5, 43, "c");
        QCOMPARE(a.mask.keep, b.mask.keep);
        QVERIFY(a.mask.keep != c.mask.keep);
        QCOMPARE(a.mask.keep.size(), std::size_t { 2 });
        for (const auto& [layer, keep] : a.mask.keep) {
            QVERIFY(layer == 0 || layer == 2);
            QCOMPARE(keep.size(), std::size_t { 4 });
            QVERIFY(std::is_sorted(keep.begin(), keep.end()));
            QCOMPARE(std::set<int>(keep.begin(), keep.end()).size(), keep.size());
        }
        QCOMPARE(a.keptExperts, int64_t { 8 });
        QCOMPARE(a.sparsity, 0.5);
        // 95% sparsity still keeps top-k experts per layer.
        QCOMPARE(randomVariant(m_spec, 0.95, 1, "d").keptExperts, int64_t { 4 });
        QCOMPARE(fullVariant(m_spec).keptExperts, int64_t { 16 });
    }

    void tableOutputs()
    {
        const EvalTable table = evaluateVariants(
            *m_ckpt, m_spec, {}, m_tokens, { fullVariant(m_spec), randomVariant(m_spec, 0.5, 1, "r") });
        const std::string csv = evalTableCsv(table);
        std::istringstream in(csv);
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);)
            lines.push_back(line);
        QCOMPARE(lines.size(), std::size_t { 5 });
        QCOMPARE(lines[0],
            std::string("variant,method,criterion,target_domain,sparsity,kept_experts,domain,tokens,nll,perplexity,"
                        "delta_nll,routing,mean_experts,active_params,flops_per_token,equal_cost_topk_nll,"
                        "delta_vs_equal_cost,experts_histogram,speculative,delta_vs_base"));
        QVERIFY(lines[1].rfind("full,full,,,0,16,code,17,", 0) == 0);
        // delta_nll 0, the model's routing with two experts for every token and layer, no equal-cost cells.
        QVERIFY2(lines[1].find(",0,model,2,") != std::string::npos, lines[1].c_str());
        // ... and no speculative execution, no base.
        QVERIFY2(lines[1].size() > 8 && lines[1].substr(lines[1].size() - 8) == ",,,2:1,,", lines[1].c_str());
        QVERIFY(lines[3].rfind("r,random,,,0.5,8,code,17,", 0) == 0);

        const AtlasResults r = evalTableResults(table);
        QCOMPARE(r.find("nll")->dims, (std::vector<uint64_t> { 2, 2 }));
        QCOMPARE(r.find("nll")->values[2], table.nll[1][0]);
        QCOMPARE(r.find("tokens")->values, (std::vector<double> { 17, 11 }));
        const auto params = nlohmann::json::parse(r.paramsJson);
        QCOMPARE(params["variants"][1]["keep"]["2"].size(), std::size_t { 4 });
        QCOMPARE(params["domains"][1].get<std::string>(), std::string("prose"));
    }

    void badMasksAreRefused_data()
    {
        QTest::addColumn<int>("layer");
        QTest::addColumn<std::vector<int>>("keep");
        QTest::addColumn<QString>("message");
        QTest::newRow("dense layer") << 1 << std::vector<int> { 0, 1 } << QStringLiteral("not a MoE layer");
        QTest::newRow("no such layer") << 9 << std::vector<int> { 0, 1 } << QStringLiteral("not a MoE layer");
        QTest::newRow("expert out of range") << 0 << std::vector<int> { 0, 8 } << QStringLiteral("out of range [0, 8)");
        QTest::newRow("fewer than top-k")
            << 2 << std::vector<int> { 3 } << QStringLiteral("fewer than the router's top-k");
    }
    void badMasksAreRefused()
    {
        QFETCH(int, layer);
        QFETCH(std::vector<int>, keep);
        QFETCH(QString, message);
        ExpertMask m;
        m.name = "bad";
        m.keep[layer] = keep;
        const QString error = test::inputErrorOf([&] { evaluate({ m }); });
        QVERIFY2(error.contains(message) && error.contains(QStringLiteral("variant 'bad'")), qPrintable(error));
    }

    // Unit lists keeping every unit leave the numbers bitwise unchanged (on any CPU: the sliced experts
    // hold every unit, so their GEMMs have the full experts' shapes and values, with the same thread
    // count); dropping units changes them, and malformed lists are refused with the variant, layer and
    // expert named.
    void unitMasks()
    {
        std::vector<int> allUnits(32);
        std::iota(allUnits.begin(), allUnits.end(), 0);
        ExpertMask full;
        full.name = "all units";
        full.units[0] = std::vector<std::vector<int>>(8, allUnits);
        ExpertMask half = full;
        half.name = "half";
        half.units[2] = std::vector<std::vector<int>>(8, std::vector<int>(allUnits.begin(), allUnits.begin() + 16));
        half.units[2][3].clear(); // a zero-width expert
        const auto out = evaluate({ ExpertMask {}, full, half });
        QCOMPARE(maxAbsDiff(out[0].tokenNll, out[1].tokenNll), 0.0);
        QVERIFY(maxAbsDiff(out[0].tokenNll, out[2].tokenNll) > 1e-3);

        const auto refused = [&](int layer, std::vector<std::vector<int>> lists, const QString& message) {
            ExpertMask m;
            m.name = "bad";
            m.units[layer] = std::move(lists);
            const QString error = test::inputErrorOf([&] { evaluate({ m }); });
            QVERIFY2(error.contains(message) && error.contains(QStringLiteral("variant 'bad'")), qPrintable(error));
        };
        refused(1, std::vector<std::vector<int>>(8, allUnits), QStringLiteral("not a MoE layer"));
        refused(0, std::vector<std::vector<int>>(7, allUnits), QStringLiteral("expected 8"));
        refused(0, { { 0 }, { 0 }, { 0 }, { 0 }, { 0 }, { 0 }, { 0 }, { 2, 1 } },
            QStringLiteral("expert 7: unit 1 is out of order"));
        refused(0, { { 0 }, { 0 }, { 32 }, { 0 }, { 0 }, { 0 }, { 0 }, { 0 } }, QStringLiteral("range [0, 32)"));
    }

    void memoryPlanAndCancellation()
    {
        ExecutorOptions tiny;
        tiny.memoryBudgetBytes = 1024;
        const QString error
            = test::inputErrorOf([&] { evaluateVariants(*m_ckpt, m_spec, tiny, m_tokens, { fullVariant(m_spec) }); });
        QVERIFY2(error.contains(QStringLiteral("memory plan")), qPrintable(error));

        StopToken stop;
        stop.requestStop();
        QVERIFY_THROWS_EXCEPTION(
            Cancelled, evaluateVariants(*m_ckpt, m_spec, {}, m_tokens, { fullVariant(m_spec) }, {}, &stop));
        QVERIFY_THROWS_EXCEPTION(Cancelled,
            evaluateVariants(
                *m_ckpt, m_spec, {}, m_tokens, { fullVariant(m_spec) }, [](const Progress&) { return false; }));
    }
};

QTEST_GUILESS_MAIN(TstEval)
#include "tst_eval.moc"
