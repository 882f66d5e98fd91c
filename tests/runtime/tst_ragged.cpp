// Ragged execution of dimension plans (ExpertMask::units): every routed expert runs with only its
// kept units. Checked against independent computations: the 0/1 unit mask at full width
// (ExecutorOptions::maskedUnits, the evaluation checked against transformers by tst_fisher_planted),
// and for uniform widths (IntDim-E) the stock checkpoint the exporter writes, run as an ordinary
// model. Ragged exports (config moeatlas_expert_widths) load and run as stored. Models: the committed
// demo model (Mixtral, 16 experts x 128 units, top-2) and a generated qwen2_moe (shared expert, a
// dense layer). Plans: uniform widths, ragged widths, zero-width experts (a whole layer of them too),
// with dropped experts; the blocks' plain path against their thread-split path.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/random_model.h"
#include "export/exporter.h"
#include "runtime/executor.h"
#include "runtime/runtime_policy.h"
#include "test_io.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>

using namespace moeatlas;
namespace fs = std::filesystem;

using moeatlas::test::kReorderRtol;
using moeatlas::test::maxAbs;
using moeatlas::test::maxAbsDiff;
using moeatlas::test::relDiff;

namespace {

// Qwen2-MoE with a shared expert and a dense layer (1) between two MoE layers.
RandomModelOptions qwen2Options()
{
    RandomModelOptions o;
    o.arch = Architecture::Qwen2Moe;
    o.numLayers = 3;
    o.mlpOnlyLayers = { 1 };
    o.hiddenSize = 64;
    o.numHeads = 4;
    o.numKvHeads = 2;
    o.headDim = 16;
    o.numExperts = 8;
    o.topK = 2;
    o.moeIntermediate = 32;
    o.sharedIntermediate = 48;
    o.denseIntermediate = 96;
    o.vocabSize = 128;
    o.initStd = 0.2; // large enough that pruning units visibly changes the logits
    o.seed = 11;
    return o;
}

struct Tokens {
    std::vector<int32_t> ids;
    std::vector<int64_t> offsets;
};

// Three sequences of different lengths (three micro-batches) with ids spread over the vocabulary.
Tokens sampleTokens(int64_t vocab)
{
    Tokens t;
    t.offsets.push_back(0);
    std::mt19937 rng(5);
    for (const int len : { 37, 21, 30 }) {
        for (int i = 0; i < len; ++i)
            t.ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
        t.offsets.push_back(static_cast<int64_t>(t.ids.size()));
    }
    return t;
}

// `width` of the units [0, I), drawn at random, sorted.
std::vector<int> randomUnits(std::mt19937& rng, int I, int width)
{
    std::vector<int> all(static_cast<std::size_t>(I));
    std::iota(all.begin(), all.end(), 0);
    for (int i = 0; i < width; ++i)
        std::swap(all[static_cast<std::size_t>(i)], all[static_cast<std::size_t>(i + rng() % (I - i))]);
    all.resize(static_cast<std::size_t>(width));
    std::sort(all.begin(), all.end());
    return all;
}

enum class Widths { Uniform, Ragged, ZeroWidth };

// Unit lists of every MoE layer: half the units of every expert (IntDim-E), a random width per
// expert (IntDim-L/G), or random widths with every third expert at width 0 and the last MoE layer
// zero-width throughout. `dropHalf` also drops every other expert in each MoE layer.
ExpertMask dimensionPlan(const ModelSpec& spec, Widths widths, bool dropHalf, uint32_t seed, const std::string& name)
{
    std::mt19937 rng(seed);
    const int E = spec.router.numExperts, I = static_cast<int>(spec.moeIntermediate);
    const std::vector<int> layers = spec.moeLayerIndices();
    ExpertMask m;
    m.name = name;
    for (const int layer : layers) {
        auto& lists = m.units[layer];
        for (int e = 0; e < E; ++e) {
            int width = I / 2;
            if (widths != Widths::Uniform)
                width = 1 + static_cast<int>(rng() % static_cast<uint32_t>(I - 1));
            if (widths == Widths::ZeroWidth && (e % 3 == 0 || layer == layers.back()))
                width = 0;
            lists.push_back(randomUnits(rng, I, width));
        }
        if (dropHalf)
            for (int e = layer % 2; e < E; e += 2)
                m.keep[layer].push_back(e);
    }
    return m;
}

std::vector<ExpertMask> planSet(const ModelSpec& spec)
{
    return { ExpertMask { "full", {}, {}, {}, {} }, dimensionPlan(spec, Widths::Uniform, false, 1, "uniform"),
        dimensionPlan(spec, Widths::Ragged, false, 2, "ragged"),
        dimensionPlan(spec, Widths::ZeroWidth, false, 3, "zero-width"),
        dimensionPlan(spec, Widths::Ragged, true, 4, "ragged, dropped experts"),
        dimensionPlan(spec, Widths::ZeroWidth, true, 5, "zero-width, dropped experts") };
}

std::vector<VariantOutput> evaluate(const Checkpoint& ckpt, const ModelSpec& spec, const Tokens& t,
    const std::vector<ExpertMask>& variants, bool masked, int threads)
{
    ExecutorOptions o;
    o.maskedUnits = masked;
    o.threads = threads;
    Executor ex(ckpt, spec, o);
    return ex.evaluate(t.ids, t.offsets, variants, /*keepLogits=*/true).variants;
}

// The exporter's plan for a variant: its kept experts (all where it keeps all) and their unit lists.
Plan planOf(const ModelSpec& spec, const ExpertMask& variant)
{
    Plan plan;
    plan.method = "specialist";
    plan.criterion = "test";
    plan.modelType = spec.modelType;
    plan.numExperts = spec.router.numExperts;
    plan.topK = spec.router.topK;
    plan.numLayers = spec.numLayers;
    plan.layers = spec.moeLayerIndices();
    plan.dims.scope = "IntDim-L";
    plan.dims.criterion = "test";
    plan.dims.sparsity = 0.5;
    plan.dims.intermediate = spec.moeIntermediate;
    for (const int layer : plan.layers) {
        std::vector<int> keep(static_cast<std::size_t>(spec.router.numExperts));
        std::iota(keep.begin(), keep.end(), 0);
        if (const auto it = variant.keep.find(layer); it != variant.keep.end())
            keep = it->second;
        plan.keep.push_back(keep);
        plan.units.emplace_back();
        for (const int e : keep)
            plan.units.back().push_back(variant.units.at(layer)[static_cast<std::size_t>(e)]);
    }
    return plan;
}

} // namespace

class TstRagged : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    fs::path m_qwen2;

    // Ragged vs masked on one model, on the plain path (one thread) or the thread-split path. The two
    // differ in GEMM shapes (sliced vs full-width experts), hence in the order of fp32 sums only: the
    // logits and token losses agree within kReorderRtol of the largest |logit| (test_io.h).
    void compareWithMask(const fs::path& model, int threads)
    {
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), model.string() + "/config.json");
        const Tokens t = sampleTokens(spec.vocabSize);
        const std::vector<ExpertMask> plans = planSet(spec);
        const auto masked = evaluate(ckpt, spec, t, plans, true, threads);
        const auto ragged = evaluate(ckpt, spec, t, plans, false, threads);
        for (std::size_t v = 0; v < plans.size(); ++v) {
            const double scale = maxAbs(masked[v].logits);
            const double logits = relDiff(ragged[v].logits, masked[v].logits, scale);
            const double nll = relDiff(ragged[v].tokenNll, masked[v].tokenNll, scale);
            const double effect = relDiff(masked[v].logits, masked[0].logits, scale);
            qInfo("  %s, %d thread(s), %-28s ragged vs masked, relative to max |logit| %.3g: logits %.3g, nll %.3g "
                  "(vs full %.3g)",
                qPrintable(QString::fromStdString(model.filename().string())), threads, plans[v].name.c_str(), scale,
                logits, nll, effect);
            QVERIFY2(logits <= kReorderRtol && nll <= kReorderRtol,
                qPrintable(QStringLiteral("%1: logits %2, nll %3 of max |logit|")
                               .arg(QString::fromStdString(plans[v].name))
                               .arg(logits)
                               .arg(nll)));
            if (v > 0)
                QVERIFY2(effect > 1e-3, qPrintable(QStringLiteral("%1 changes nothing: vacuous").arg(v)));
        }
        // The full model has no unit lists: both executors run the same operations on the same shapes
        // with the same thread count, so the numbers are equal on any CPU.
        QCOMPARE(maxAbsDiff(ragged[0].logits, masked[0].logits), 0.0);
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_qwen2 = fs::path(m_dir.filePath(QStringLiteral("qwen2_moe")).toStdString());
        writeRandomModel(qwen2Options(), m_qwen2, false);
    }

    // The thread-split path needs LibTorch's OpenMP runtime and a BLAS that runs each call on one
    // thread while the executor runs: OpenBLAS set so (and restored afterwards), or a BLAS without a
    // thread control. MOEATLAS_EXPECT_BLAS, set by the ctest entries that run this suite on another
    // BLAS (tests/runtime/CMakeLists.txt), names the library the process must have loaded, so that
    // those runs cannot silently test OpenBLAS again.
    void runtimeCanSplit()
    {
        const RuntimeInfo before = runtimeInfo();
        qInfo("runtime: %s", describeRuntime(before).c_str());
        QVERIFY2(before.openmp, "no OpenMP runtime found (GOMP_parallel): the split path cannot run");
        {
            const ThreadScope asTheExecutor(2, 1);
            QCOMPARE(runtimeInfo().atenThreads, 2);
            QCOMPARE(runtimeInfo().blasThreads, 1);
            {
                const ThreadScope asFisher(1, 2);
                QCOMPARE(runtimeInfo().atenThreads, 1);
                QCOMPARE(runtimeInfo().blasThreads, before.blasIsOpenblas ? 2 : 1);
            }
            QCOMPARE(runtimeInfo().atenThreads, 2);
            QCOMPARE(runtimeInfo().blasThreads, 1);
        }
        QCOMPARE(runtimeInfo().atenThreads, before.atenThreads);
        QCOMPARE(runtimeInfo().blasThreads, before.blasThreads);
        const QByteArray expected = qgetenv("MOEATLAS_EXPECT_BLAS");
        if (!expected.isEmpty())
            QVERIFY2(before.blas.find(expected.toStdString()) != std::string::npos,
                qPrintable(QStringLiteral("expected the BLAS %1, found %2")
                               .arg(QString::fromUtf8(expected), QString::fromStdString(before.blas))));
    }

    // The policy a main applies: ATen at the requested threads (0: OMP_NUM_THREADS, which ctest sets to
    // 2, else the CPUs of the process), the BLAS single-threaded (OpenBLAS; a BLAS without a thread
    // control reports one thread anyway).
    void policyOwnsThreads()
    {
        QCOMPARE(defaultThreads(), qEnvironmentVariableIntValue("OMP_NUM_THREADS"));
        applyRuntimePolicy(RuntimePolicy { 3, true });
        QCOMPARE(runtimeInfo().atenThreads, 3);
        QCOMPARE(runtimeInfo().blasThreads, 1);
        applyRuntimePolicy(RuntimePolicy {});
        QCOMPARE(runtimeInfo().atenThreads, defaultThreads());
        QCOMPARE(runtimeInfo().blasThreads, 1);
        // The rest of the suite runs under the policy, as the CLI's jobs do.
    }

    void raggedEqualsMask_data()
    {
        QTest::addColumn<QString>("model");
        QTest::addColumn<int>("threads");
        const QString demo = test::sourcePath(QStringLiteral("resources/demo/model"));
        const QString qwen2 = QString::fromStdString(m_qwen2.string());
        QTest::newRow("demo mixtral, plain") << demo << 1;
        QTest::newRow("demo mixtral, split") << demo << 2;
        QTest::newRow("qwen2_moe, plain") << qwen2 << 1;
        QTest::newRow("qwen2_moe, split") << qwen2 << 2;
    }
    void raggedEqualsMask()
    {
        QFETCH(QString, model);
        QFETCH(int, threads);
        compareWithMask(fs::path(model.toStdString()), threads);
    }

    // The thread-split path (2 ATen threads, the BLAS single-threaded) computes the same numbers as the
    // plain path up to the order of fp32 sums: its projections multiply row blocks, and the BLAS may
    // block a GEMM of fewer rows differently (it does under its Haswell/Zen kernels), ragged experts
    // included.
    void splitPathMatchesPlainPath_data()
    {
        QTest::addColumn<QString>("model");
        QTest::newRow("demo mixtral") << test::sourcePath(QStringLiteral("resources/demo/model"));
        QTest::newRow("qwen2_moe") << QString::fromStdString(m_qwen2.string());
    }
    void splitPathMatchesPlainPath()
    {
        QFETCH(QString, model);
        const fs::path dir(model.toStdString());
        const Checkpoint ckpt(dir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), dir.string() + "/config.json");
        const Tokens t = sampleTokens(spec.vocabSize);
        const std::vector<ExpertMask> plans = planSet(spec);
        const auto plain = evaluate(ckpt, spec, t, plans, false, 1);
        const auto split = evaluate(ckpt, spec, t, plans, false, 2);
        for (std::size_t v = 0; v < plans.size(); ++v) {
            const double scale = maxAbs(plain[v].logits);
            const double logits = relDiff(split[v].logits, plain[v].logits, scale);
            const double nll = relDiff(split[v].tokenNll, plain[v].tokenNll, scale);
            qInfo("  %-28s split vs plain, relative to max |logit| %.3g: logits %.3g, nll %.3g", plans[v].name.c_str(),
                scale, logits, nll);
            QVERIFY2(logits <= kReorderRtol && nll <= kReorderRtol, plans[v].name.c_str());
        }
    }

    // Uniform widths (IntDim-E) on the source = the stock checkpoint the exporter writes for them (a
    // smaller moe_intermediate_size), run by the executor as an ordinary model; with dropped experts.
    void uniformWidthsEqualStockExport()
    {
        const Checkpoint source(m_qwen2);
        const ModelSpec spec = parseModelSpec(source.config(), m_qwen2.string() + "/config.json");
        const ExpertMask variant = dimensionPlan(spec, Widths::Uniform, true, 7, "uniform, dropped experts");
        const fs::path out = fs::path(m_dir.filePath(QStringLiteral("stock-dims")).toStdString());
        const ExportResult exported = exportCheckpoint(m_qwen2, planOf(spec, variant), out);
        QVERIFY(!exported.ragged && exported.uniform);
        const Checkpoint pruned(out);
        const ModelSpec prunedSpec = parseModelSpec(pruned.config(), out.string() + "/config.json");
        QCOMPARE(prunedSpec.moeIntermediate, spec.moeIntermediate / 2);
        QCOMPARE(prunedSpec.router.numExperts, spec.router.numExperts / 2);

        const Tokens t = sampleTokens(spec.vocabSize);
        const auto stock = evaluate(pruned, prunedSpec, t, { ExpertMask { "stock", {}, {}, {}, {} } }, false, 1);
        const auto ragged = evaluate(source, spec, t, { ExpertMask { "full", {}, {}, {}, {} }, variant }, false, 1);
        // Sliced at run time vs sliced on disk: the same shapes, the same operations, but the stock model
        // runs its experts as ordinary full-width experts (another code path): reordering tolerance.
        const double scale = maxAbs(stock[0].logits);
        const double diff = relDiff(ragged[1].logits, stock[0].logits, scale);
        qInfo("  ragged source vs stock export, relative to max |logit| %.3g: %.3g (vs full %.3g)", scale, diff,
            relDiff(ragged[0].logits, stock[0].logits, scale));
        QVERIFY(diff <= kReorderRtol);
        QVERIFY(relDiff(ragged[1].tokenNll, stock[0].tokenNll, scale) <= kReorderRtol);
        QVERIFY(relDiff(ragged[0].logits, stock[0].logits, scale) > 1e-3);
    }

    // A ragged export (per-expert widths, zero-width experts, dropped experts) runs in the engine as it
    // is stored: its logits equal the masked evaluation of the source, in evaluate() and in run() (the
    // capture path), on the plain and the split path.
    void raggedExportRunsDirectly_data()
    {
        QTest::addColumn<QString>("model");
        QTest::addColumn<int>("threads");
        const QString demo = test::sourcePath(QStringLiteral("resources/demo/model"));
        const QString qwen2 = QString::fromStdString(m_qwen2.string());
        QTest::newRow("demo mixtral, plain") << demo << 1;
        QTest::newRow("demo mixtral, split") << demo << 2;
        QTest::newRow("qwen2_moe, plain") << qwen2 << 1;
        QTest::newRow("qwen2_moe, split") << qwen2 << 2;
    }
    void raggedExportRunsDirectly()
    {
        QFETCH(QString, model);
        QFETCH(int, threads);
        const fs::path dir(model.toStdString());
        const Checkpoint source(dir);
        const ModelSpec spec = parseModelSpec(source.config(), dir.string() + "/config.json");
        const ExpertMask variant = dimensionPlan(spec, Widths::ZeroWidth, true, 8, "zero-width, dropped experts");
        const Plan plan = planOf(spec, variant);
        QTemporaryDir outDir;
        QVERIFY(outDir.isValid());
        const fs::path out = fs::path(outDir.filePath(QStringLiteral("ragged")).toStdString());
        QVERIFY(exportCheckpoint(dir, plan, out).ragged);

        const Checkpoint exported(out);
        const ModelSpec exportedSpec = parseModelSpec(exported.config(), out.string() + "/config.json");
        QVERIFY(exportedSpec.ragged());
        QCOMPARE(exportedSpec.router.numExperts, spec.router.numExperts / 2);
        for (std::size_t i = 0; i < plan.layers.size(); ++i) {
            const auto& widths = exportedSpec.layers[static_cast<std::size_t>(plan.layers[i])].expertWidths;
            QCOMPARE(widths.size(), plan.units[i].size());
            for (std::size_t k = 0; k < widths.size(); ++k)
                QCOMPARE(widths[k], static_cast<int64_t>(plan.units[i][k].size()));
        }

        const Tokens t = sampleTokens(spec.vocabSize);
        const auto masked = evaluate(source, spec, t, { ExpertMask { "full", {}, {}, {}, {} }, variant }, true, threads);
        const auto direct = evaluate(exported, exportedSpec, t, { ExpertMask { "export", {}, {}, {}, {} } }, false, threads);
        ExecutorOptions o;
        o.computeLogits = true;
        o.threads = threads;
        ExecutionObserver none;
        const ExecutionResult run = Executor(exported, exportedSpec, o).run(t.ids, t.offsets, none);
        // Masked full width vs stored slices, and run() vs evaluate() (micro-batches of their own): the
        // order of fp32 sums differs, so the reordering tolerance relative to the largest |logit|.
        const double scale = maxAbs(masked[1].logits);
        const double diff = relDiff(direct[0].logits, masked[1].logits, scale);
        const double runDiff = relDiff(run.logits, direct[0].logits, scale);
        qInfo("  %s: relative to max |logit| %.3g: ragged export vs masked source %.3g (vs full %.3g), run() vs "
              "evaluate() %.3g",
            qPrintable(model), scale, diff, relDiff(masked[0].logits, masked[1].logits, scale), runDiff);
        QVERIFY(diff <= kReorderRtol);
        QVERIFY(relDiff(direct[0].tokenNll, masked[1].tokenNll, scale) <= kReorderRtol);
        QVERIFY(runDiff <= kReorderRtol);
        QVERIFY(relDiff(masked[0].logits, masked[1].logits, scale) > 1e-3);

        // Unit lists refer to full-width experts: refused on a checkpoint whose experts have their own widths.
        ExpertMask units;
        units.name = "units";
        units.units[plan.layers.front()] = std::vector<std::vector<int>>(
            static_cast<std::size_t>(exportedSpec.router.numExperts), std::vector<int> { 0 });
        const QString error = test::inputErrorOf([&] { evaluate(exported, exportedSpec, t, { units }, false, 1); });
        QVERIFY2(error.contains(QStringLiteral("already have their own widths")), qPrintable(error));
    }

    // The ragged config keys are checked against the model: one entry per decoder layer, null exactly
    // for dense layers, one width >= 0 per routed expert, no per-layer expert counts the engine cannot
    // run; and the tensors against the widths.
    void raggedConfigIsChecked_data()
    {
        QTest::addColumn<QString>("key");
        QTest::addColumn<QString>("value");
        QTest::addColumn<QString>("message");
        QTest::newRow("too few layers") << QStringLiteral("moeatlas_expert_widths") << QStringLiteral("[null]")
                                        << QStringLiteral("list of num_hidden_layers (3) entries");
        QTest::newRow("dense layer with widths")
            << QStringLiteral("moeatlas_expert_widths") << QStringLiteral("[[1,1,1,1], [1], [1,1,1,1]]")
            << QStringLiteral("entry 1 must be null (layer 1 is dense)");
        QTest::newRow("moe layer without widths")
            << QStringLiteral("moeatlas_expert_widths") << QStringLiteral("[null, null, [1,1,1,1]]")
            << QStringLiteral("entry 0 must list the widths of the layer's 4 routed experts");
        QTest::newRow("negative width") << QStringLiteral("moeatlas_expert_widths")
                                        << QStringLiteral("[[1,-1,1,1], null, [1,1,1,1]]")
                                        << QStringLiteral("entry 0 holds -1");
        QTest::newRow("per-layer expert counts")
            << QStringLiteral("num_experts_per_layer") << QStringLiteral("[4, 0, 3]")
            << QStringLiteral("gives layer 2 3 routed experts, expected 4");
        QTest::newRow("tensor of another width")
            << QStringLiteral("moeatlas_expert_widths") << QStringLiteral("[[9,9,9,9], null, [9,9,9,9]]")
            << QStringLiteral("expected [9, 64] from config.json");
    }
    void raggedConfigIsChecked()
    {
        QFETCH(QString, key);
        QFETCH(QString, value);
        QFETCH(QString, message);
        const Checkpoint source(m_qwen2);
        const ModelSpec spec = parseModelSpec(source.config(), "qwen2_moe/config.json");
        const fs::path out = fs::path(m_dir.filePath(QStringLiteral("ragged-config")).toStdString());
        if (!fs::exists(out))
            exportCheckpoint(m_qwen2, planOf(spec, dimensionPlan(spec, Widths::Ragged, true, 9, "ragged")), out);
        const Checkpoint exported(out);
        nlohmann::json config = exported.config();
        config[key.toStdString()] = nlohmann::json::parse(value.toStdString());
        const QString error = test::inputErrorOf([&] {
            const ModelSpec bad = parseModelSpec(config, "ragged/config.json");
            const Executor executor(exported, bad, {});
        });
        QVERIFY2(error.contains(message), qPrintable(error));
    }

    // The memory plan counts one layer's sliced experts (at most their full size) when a variant has
    // unit lists, and not on the masked path, which holds no copy.
    void memoryPlanCountsTheSlices()
    {
        const Checkpoint ckpt(m_qwen2);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_qwen2.string() + "/config.json");
        const uint64_t expertBytes = static_cast<uint64_t>(spec.router.numExperts) * 3
            * static_cast<uint64_t>(spec.moeIntermediate * spec.hiddenSize) * 4;
        const Executor ragged(ckpt, spec, {});
        QCOMPARE(ragged.plannedEvaluationBytes(88, 37, 2, false, true) - ragged.plannedEvaluationBytes(88, 37, 2),
            expertBytes);
        ExecutorOptions o;
        o.maskedUnits = true;
        const Executor masked(ckpt, spec, o);
        QCOMPARE(masked.plannedEvaluationBytes(88, 37, 2, false, true), masked.plannedEvaluationBytes(88, 37, 2));
    }
};

QTEST_GUILESS_MAIN(TstRagged)
#include "tst_ragged.moc"
