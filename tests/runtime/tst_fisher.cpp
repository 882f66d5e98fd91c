// Per-unit Fisher importance of routed-expert FFN dimensions (runtime/fisher.h).
// reference: per-sample gradients against transformers + torch.autograd (tests/reference/fisher_reference.py)
//   on the first tiny random variant of every architecture, all three score forms.
// unit (the demo model, no Python): the differentiated forward, mask all ones, gives the inference
//   path's per-token losses; the blocks' thread-split paths (out= ops) are not taken under autograd;
//   cancellation; input errors.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/safetensors.h"
#include "runtime/executor.h"
#include "runtime/fisher.h"
#include "runtime/runtime_policy.h"
#include "test_io.h"
#include "test_support.h"
#include "test_tensors.h"

#include <QDir>
#include <QSet>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

using namespace moeatlas;

namespace {

std::vector<float> floats(const SafetensorsFile& f, const std::string& name)
{
    return test::tensorValues<float>(f, name);
}

std::vector<int64_t> int64s(const SafetensorsFile& f, const std::string& name)
{
    return test::tensorValues<int64_t>(f, name);
}

// Largest |ours - ref| relative to the largest |ref| (infinity on a size mismatch).
double relativeError(const std::vector<double>& ours, const std::vector<float>& ref)
{
    if (ours.size() != ref.size() || ref.empty())
        return std::numeric_limits<double>::infinity();
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        err = std::max(err, std::fabs(ours[i] - static_cast<double>(ref[i])));
        scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
    }
    return scale > 0 ? err / scale : err;
}

std::vector<std::size_t> topUnits(const std::vector<double>& v, std::size_t n)
{
    std::vector<std::size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    n = std::min(n, idx.size());
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n), idx.end(),
        [&](std::size_t a, std::size_t b) { return v[a] > v[b]; });
    idx.resize(n);
    return idx;
}

// The executor on the CPU-split path (2 ATen threads, single-threaded OpenBLAS) for the same tokens:
// per-token losses and logits.
VariantOutput inference(const Checkpoint& ckpt, const ModelSpec& spec, const std::vector<int32_t>& tokens,
    const std::vector<int64_t>& offsets)
{
    ExecutorOptions o;
    o.threads = 2;
    Executor executor(ckpt, spec, o);
    const std::vector<ExpertMask> full { ExpertMask { "full", {}, {}, {}, {} } };
    return executor.evaluate(tokens, offsets, full, true).variants.at(0);
}

struct DemoInput {
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets;
};

// Three sequences of different lengths with ids spread over the demo vocabulary.
DemoInput demoInput(const ModelSpec& spec)
{
    DemoInput in;
    in.offsets.push_back(0);
    uint64_t state = 12345;
    for (const int len : { 40, 23, 31 }) {
        for (int i = 0; i < len; ++i) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            in.tokens.push_back(static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(spec.vocabSize)));
        }
        in.offsets.push_back(static_cast<int64_t>(in.tokens.size()));
    }
    return in;
}

// Every number of two Fisher results, compared exactly. Used for streaming vs resident: per sample both
// modes run the same ATen operations on the same shapes with the same thread count, in one process (one
// OpenBLAS kernel set), and add the terms in the same order (runtime/fisher.cpp), so they agree bit for
// bit on any CPU.
QString firstDifference(const FisherResult& a, const FisherResult& b)
{
    if (a.sampleLoss != b.sampleLoss)
        return QStringLiteral("sample losses differ");
    if (std::memcmp(a.tokenNll.data(), b.tokenNll.data(), a.tokenNll.size() * sizeof(float)) != 0
        || a.tokenNll.size() != b.tokenNll.size())
        return QStringLiteral("per-token losses differ");
    if (a.groupSamples != b.groupSamples || a.groupTokens != b.groupTokens || a.layers.size() != b.layers.size())
        return QStringLiteral("counts differ");
    for (std::size_t l = 0; l < a.layers.size(); ++l) {
        const FisherLayer& x = a.layers[l];
        const FisherLayer& y = b.layers[l];
        if (x.layer != y.layer || x.expertTokens != y.expertTokens)
            return QStringLiteral("layer %1: routing counts differ").arg(x.layer);
        const std::pair<const char*, std::vector<double> FisherLayer::*> fields[] = { { "mask", &FisherLayer::mask },
            { "weight", &FisherLayer::weight }, { "grad-abs", &FisherLayer::gradAbs },
            { "activation", &FisherLayer::activation }, { "magnitude", &FisherLayer::magnitude } };
        for (const auto& [name, field] : fields) {
            const std::vector<double>& u = x.*field;
            const std::vector<double>& v = y.*field;
            if (u.size() != v.size())
                return QStringLiteral("layer %1, %2: %3 vs %4 values")
                    .arg(x.layer)
                    .arg(QLatin1String(name))
                    .arg(u.size())
                    .arg(v.size());
            for (std::size_t i = 0; i < u.size(); ++i)
                if (std::memcmp(&u[i], &v[i], sizeof(double)) != 0)
                    return QStringLiteral("layer %1, %2, unit %3: %4 vs %5")
                        .arg(x.layer)
                        .arg(QLatin1String(name))
                        .arg(i)
                        .arg(u[i], 0, 'g', 17)
                        .arg(v[i], 0, 'g', 17);
        }
    }
    return {};
}

FisherOptions streamingOptions(int64_t chunkTokens = 0, uint64_t budget = 0)
{
    FisherOptions o;
    o.mode = FisherMode::Streaming;
    o.chunkTokens = chunkTokens;
    o.memoryBudgetBytes = budget;
    return o;
}

} // namespace

class TestFisher : public QObject {
    Q_OBJECT

public:
    TestFisher()
        : m_demoDir(test::sourcePath(QStringLiteral("resources/demo/model")).toStdString())
    {
    }

private Q_SLOTS:
    // --- reference (transformers + torch.autograd) ---------------------------------------------------

    void reference_data()
    {
        QVERIFY2(!test::pythonExecutable().isEmpty(),
            "MOEATLAS_PYTHON is unset: the reference tests need the project venv (packaging/setup.sh test)");
        QTest::addColumn<QString>("arch");
        QTest::addColumn<QString>("variant");
        const auto list = test::runPython(
            QStringLiteral("tests/reference/make_reference.py"), { QStringLiteral("--list-variants") });
        QVERIFY2(list.exitCode == 0, qPrintable(list.stdErr));
        QSet<QString> done;
        for (const QString& line : list.stdOut.split(QLatin1Char('\n'), Qt::SkipEmptyParts)) {
            const QStringList parts = line.split(QLatin1Char(' '));
            if (done.contains(parts.value(0)))
                continue;
            done.insert(parts.value(0));
            QTest::addRow("%s/%s", qPrintable(parts.value(0)), qPrintable(parts.value(1)))
                << parts.value(0) << parts.value(1);
        }
        QVERIFY(done.contains(QStringLiteral("gpt_oss"))); // every architecture of make_reference.py
        QVERIFY(done.contains(QStringLiteral("qwen3_5_moe")));
        QVERIFY(done.contains(QStringLiteral("glm4_moe")));
        QVERIFY(done.contains(QStringLiteral("deepseek_v3")));
        QCOMPARE(done.size(), 8);
    }

    void reference()
    {
        QFETCH(QString, arch);
        QFETCH(QString, variant);
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const QString modelPath = dir.filePath(QStringLiteral("model"));
        const auto made = test::runPython(QStringLiteral("tests/reference/fisher_reference.py"),
            { QStringLiteral("--arch"), arch, QStringLiteral("--variant"), variant, QStringLiteral("--out"),
                modelPath });
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr));

        const std::string modelDir = modelPath.toStdString();
        const Checkpoint ckpt(modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), modelDir + "/config.json");
        const SafetensorsFile ref(modelDir + "/fisher.safetensors");
        const std::vector<int64_t> ids64 = int64s(ref, "tokens");
        const std::vector<int32_t> tokens(ids64.begin(), ids64.end());
        const std::vector<int64_t> offsets = int64s(ref, "offsets");

        const FisherResult got = computeFisher(ckpt, spec, tokens, offsets);
        QCOMPARE(got.plan.mode, FisherMode::Resident);
        QCOMPARE(got.samples, static_cast<int64_t>(offsets.size()) - 1);
        // Streaming (layer by layer, backward in reverse from the saved layer inputs; here with dense
        // layers below the first MoE layer for qwen2_moe) gives the same numbers bit for bit (the same
        // operations, shapes and threads in this process: see firstDifference).
        const FisherResult streamed = computeFisher(ckpt, spec, tokens, offsets, {}, streamingOptions(30));
        QCOMPARE(streamed.plan.mode, FisherMode::Streaming);
        QVERIFY(streamed.plan.chunks > 1);
        const QString diff = firstDifference(got, streamed);
        QVERIFY2(diff.isEmpty(), qPrintable(diff));
        QCOMPARE(got.tokens, static_cast<int64_t>(tokens.size()));
        QCOMPARE(got.layers.size(), spec.moeLayerIndices().size());

        // The loss that was differentiated is transformers' loss. Two fp32 implementations summing in
        // other orders: the mean next-token loss of these random models (around ln V = 5.5) is of the
        // order of their largest |logit| (~7), so 1e-5 of it is ~kReorderRtol / 3 of the logits' scale,
        // far above the reordering error of either side on any CPU.
        const std::vector<float> refLoss = floats(ref, "loss");
        QCOMPARE(got.sampleLoss.size(), refLoss.size());
        for (std::size_t n = 0; n < refLoss.size(); ++n)
            QVERIFY2(std::fabs(got.sampleLoss[n] - refLoss[n]) <= 1e-5 * std::fabs(refLoss[n]),
                qPrintable(QStringLiteral("sample %1 loss %2 vs %3").arg(n).arg(got.sampleLoss[n]).arg(refLoss[n])));

        struct Form {
            const char* key;
            std::vector<double> FisherLayer::*field;
        };
        // Scores relative to the layer's largest reference score: fp32 gradients of two implementations
        // (transformers + autograd vs ours) summed in other orders, squared and summed in float64;
        // measured <= 3.8e-6 (docs/fisher.md), so 1e-4 holds whatever kernels either side picks.
        for (const Form form : { Form { "mask", &FisherLayer::mask }, Form { "weight", &FisherLayer::weight },
                 Form { "gradabs", &FisherLayer::gradAbs } }) {
            std::vector<double> oursAll;
            std::vector<double> refAll;
            double worst = 0;
            for (const FisherLayer& layer : got.layers) {
                const std::vector<float> r = floats(ref, std::string(form.key) + "." + std::to_string(layer.layer));
                const std::vector<double>& ours = layer.*form.field;
                const double err = relativeError(ours, r);
                worst = std::max(worst, err);
                QVERIFY2(err <= 1e-4,
                    qPrintable(QStringLiteral("%1 form, layer %2: relative error %3")
                                   .arg(QLatin1String(form.key))
                                   .arg(layer.layer)
                                   .arg(err)));
                oursAll.insert(oursAll.end(), ours.begin(), ours.end());
                refAll.insert(refAll.end(), r.begin(), r.end());
            }
            // Top-20 units over the whole model: the same set, allowing swaps only between units whose
            // reference scores are tied within the tolerance.
            const double scale = *std::max_element(refAll.begin(), refAll.end());
            const double tol = 1e-4 * scale;
            const auto oursTop = topUnits(oursAll, 20), refTop = topUnits(refAll, 20);
            const double refTwentieth = refAll[refTop.back()];
            for (const std::size_t u : oursTop)
                QVERIFY2(refAll[u] >= refTwentieth - tol,
                    qPrintable(QStringLiteral("%1 form: unit %2 in our top-20 is not in the reference's")
                                   .arg(QLatin1String(form.key))
                                   .arg(u)));
            const bool sameOrder = oursTop == refTop;
            qInfo("  %s form: max relative error %.3g over %zu layers; top-20 %s", form.key, worst, got.layers.size(),
                sameOrder ? "identical, same order" : "same set within ties");
        }
    }

    // --- unit (demo model, no Python) ----------------------------------------------------------------

    // With the mask path on (all ones, requiring gradients) and autograd recording, the forward gives
    // the inference path's per-token losses: the mask is a no-op in value and the plain block paths
    // compute what the thread-split ones do, up to the order of fp32 sums (single-threaded ATen with
    // threaded OpenBLAS vs ATen's threads splitting experts, heads and row blocks over single-threaded
    // OpenBLAS: other thread counts, possibly other GEMM shapes), so within kReorderRtol of the largest
    // |logit| (test_io.h).
    void maskedForwardMatchesInference()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const DemoInput in = demoInput(spec);
        const VariantOutput inferred = inference(ckpt, spec, in.tokens, in.offsets);
        const std::vector<float>& expected = inferred.tokenNll;
        FisherOptions o;
        o.weightForm = false;
        o.gradAbs = false;
        const FisherResult got = computeFisher(ckpt, spec, in.tokens, in.offsets, {}, o);
        const double scale = test::maxAbs(inferred.logits);
        const double err = test::relDiff(got.tokenNll, expected, scale);
        qInfo("  per-token loss, differentiated forward vs inference: max error %.3g of max |logit| %.3g", err, scale);
        QVERIFY2(err <= test::kReorderRtol, qPrintable(QStringLiteral("per-token loss error %1").arg(err)));
        for (std::size_t s = 0; s + 1 < in.offsets.size(); ++s) {
            double sum = 0;
            for (int64_t t = in.offsets[s]; t + 1 < in.offsets[s + 1]; ++t)
                sum += expected[static_cast<std::size_t>(t)];
            const double mean = sum / static_cast<double>(in.offsets[s + 1] - in.offsets[s] - 1);
            QVERIFY(std::fabs(got.sampleLoss[s] - mean) <= test::kReorderRtol * scale);
        }
        // Only the asked-for forms are computed; every unit of every MoE layer gets a finite score and
        // the routed experts get some signal.
        QCOMPARE(got.layers.size(), spec.moeLayerIndices().size());
        for (const FisherLayer& layer : got.layers) {
            QVERIFY(layer.weight.empty() && layer.gradAbs.empty());
            QCOMPARE(static_cast<int64_t>(layer.mask.size()), layer.numExperts * layer.intermediate);
            QVERIFY(std::all_of(layer.mask.begin(), layer.mask.end(), [](double v) { return std::isfinite(v); }));
            QVERIFY(*std::max_element(layer.mask.begin(), layer.mask.end()) > 0);
        }
    }

    // The conditions under which the blocks split their products across threads with out= ops (several
    // ATen threads, single-threaded OpenBLAS), set by the caller: the pass must still succeed (autograd
    // refuses out= ops on tensors that require gradients; computeFisher runs ATen single-threaded and
    // threads OpenBLAS instead) and give the one-thread scores -- up to the order of fp32 sums, since
    // OpenBLAS on 2 threads may partition (and so sum) a GEMM differently: within kReorderRtol of the
    // largest score of each form and layer.
    void splitPathNotTakenUnderGradMode()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const DemoInput in = demoInput(spec);
        FisherOptions one;
        one.threads = 1;
        const FisherResult serial = computeFisher(ckpt, spec, in.tokens, in.offsets, {}, one);
        FisherOptions two;
        two.threads = 2;
        FisherResult split;
        QString error;
        try {
            const ThreadScope blasOneThread(0, 1);
            const RuntimeInfo before = runtimeInfo();
            split = computeFisher(ckpt, spec, in.tokens, in.offsets, {}, two);
            // The pass ran ATen on one thread and the BLAS on two; both are as they were.
            QCOMPARE(runtimeInfo().atenThreads, before.atenThreads);
            QCOMPARE(runtimeInfo().blasThreads, before.blasThreads);
        } catch (const std::exception& e) {
            error = QString::fromUtf8(e.what());
        }
        QVERIFY2(error.isEmpty(), qPrintable(error));
        QCOMPARE(split.layers.size(), serial.layers.size());
        for (std::size_t l = 0; l < serial.layers.size(); ++l) {
            const auto& a = serial.layers[l];
            const auto& b = split.layers[l];
            for (const auto field : { &FisherLayer::mask, &FisherLayer::weight, &FisherLayer::gradAbs }) {
                const std::vector<double>& x = a.*field;
                const std::vector<double>& y = b.*field;
                QCOMPARE(x.size(), y.size());
                double scale = 0, err = 0;
                for (std::size_t i = 0; i < x.size(); ++i) {
                    scale = std::max(scale, std::fabs(x[i]));
                    err = std::max(err, std::fabs(x[i] - y[i]));
                }
                QVERIFY2(err <= test::kReorderRtol * scale,
                    qPrintable(QStringLiteral("threads 1 vs 2: %1").arg(err / scale)));
            }
        }
    }

    // Streaming equals resident exactly: in RAM in one pass, in several passes (chunks), and with the
    // saved layer inputs spilled to a scratch file; sample groups and every score form and baseline.
    // Exact on any CPU: both modes run in this process with the same thread count and the same
    // operations on the same per-sample shapes (see firstDifference).
    void streamingEqualsResident()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const DemoInput in = demoInput(spec);
        const std::vector<int> groups { 0, 1, 0 };
        FisherOptions resident;
        resident.mode = FisherMode::Resident;
        const FisherResult expected = computeFisher(ckpt, spec, in.tokens, in.offsets, groups, resident);
        QCOMPARE(expected.plan.mode, FisherMode::Resident);
        QCOMPARE(expected.groups, 2);

        const FisherResult oneChunk = computeFisher(ckpt, spec, in.tokens, in.offsets, groups, streamingOptions());
        QCOMPARE(oneChunk.plan.mode, FisherMode::Streaming);
        QCOMPARE(oneChunk.plan.chunks, 1);
        QVERIFY(!oneChunk.plan.spill);
        QCOMPARE(oneChunk.bytesSpilled, uint64_t { 0 });
        QString diff = firstDifference(expected, oneChunk);
        QVERIFY2(diff.isEmpty(), qPrintable(QStringLiteral("one chunk: ") + diff));

        // Sequences of 40, 23, 31 tokens in passes of at most 64 tokens: [40, 23], [31].
        const FisherResult chunked = computeFisher(ckpt, spec, in.tokens, in.offsets, groups, streamingOptions(64));
        QCOMPARE(chunked.plan.chunks, 2);
        diff = firstDifference(expected, chunked);
        QVERIFY2(diff.isEmpty(), qPrintable(QStringLiteral("two chunks: ") + diff));

        // A budget just below the in-memory plan: the saved layer inputs go to the scratch file.
        QTemporaryDir scratch;
        QVERIFY(scratch.isValid());
        const FisherPlan inMemory = planFisher(ckpt, spec, in.offsets, groups, streamingOptions());
        FisherOptions spill = streamingOptions(0, inMemory.peakBytes - 1);
        spill.scratchDir = scratch.path().toStdString();
        const FisherResult spilled = computeFisher(ckpt, spec, in.tokens, in.offsets, groups, spill);
        QVERIFY(spilled.plan.spill);
        QCOMPARE(spilled.plan.chunks, 1);
        QVERIFY(spilled.plan.peakBytes < inMemory.peakBytes);
        // Every MoE layer's input (the demo model's 4 layers are all MoE) of every token, once.
        const uint64_t savedBytes = static_cast<uint64_t>(spec.numLayers) * in.tokens.size()
            * static_cast<uint64_t>(spec.hiddenSize) * sizeof(float);
        QCOMPARE(spilled.bytesSpilled, savedBytes);
        QCOMPARE(spilled.plan.spillBytes, savedBytes);
        QVERIFY2(QDir(scratch.path()).isEmpty(), "the scratch file was left behind");
        diff = firstDifference(expected, spilled);
        QVERIFY2(diff.isEmpty(), qPrintable(QStringLiteral("spilled: ") + diff));
        qInfo("  streaming == resident bit for bit: 1 chunk, 2 chunks, spilled (%llu bytes)",
            static_cast<unsigned long long>(spilled.bytesSpilled));
    }

    // The memory plan: auto picks resident when it fits and streaming when it does not; a budget that
    // not even streaming fits is refused before any work, naming the bytes; progress and cancellation
    // of the streaming mode (a cancelled spilled run leaves no scratch file).
    void streamingPlanProgressAndCancel()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const DemoInput in = demoInput(spec);
        FisherOptions autoMode;
        const FisherPlan roomy = planFisher(ckpt, spec, in.offsets, {}, autoMode);
        QCOMPARE(roomy.mode, FisherMode::Resident);
        autoMode.memoryBudgetBytes = roomy.residentBytes - 1;
        const FisherPlan tight = planFisher(ckpt, spec, in.offsets, {}, autoMode);
        QCOMPARE(tight.mode, FisherMode::Streaming);
        QVERIFY(tight.peakBytes <= autoMode.memoryBudgetBytes);
        QVERIFY(tight.peakBytes < roomy.residentBytes);

        FisherOptions residentOnly;
        residentOnly.mode = FisherMode::Resident;
        residentOnly.memoryBudgetBytes = roomy.residentBytes - 1;
        const test::CaughtRequestError resident
            = test::requestErrorOf([&] { computeFisher(ckpt, spec, in.tokens, in.offsets, {}, residentOnly); });
        QCOMPARE(resident.field, std::string("mode"));
        QVERIFY2(resident.message.contains(QLatin1String("use the streaming mode"))
                && !resident.message.contains(QLatin1String("--")),
            qPrintable(resident.message));
        const QString refused = test::inputErrorOf(
            [&] { computeFisher(ckpt, spec, in.tokens, in.offsets, {}, streamingOptions(0, 1 << 20)); });
        QVERIFY2(refused.contains(QLatin1String("memory plan")) && refused.contains(QLatin1String("MiB")),
            qPrintable(refused));

        // Progress units: per sample, L forward steps, the loss and one backward step per MoE-side layer.
        std::vector<int64_t> done;
        int64_t total = 0;
        FisherOptions maskOnly = streamingOptions(64);
        maskOnly.weightForm = maskOnly.gradAbs = false;
        (void)computeFisher(ckpt, spec, in.tokens, in.offsets, {}, maskOnly, [&](const Progress& p) {
            done.push_back(p.done);
            total = p.total;
            return true;
        });
        const int64_t perSample = 2 * spec.numLayers + 1; // every demo layer is a MoE layer
        QCOMPARE(total, 3 * perSample);
        QCOMPARE(static_cast<int64_t>(done.size()), total);
        QCOMPARE(done.back(), total);

        // Cancelled in the backward walk of a spilled run: Cancelled, and no scratch file remains.
        QTemporaryDir scratch;
        FisherOptions spill
            = streamingOptions(0, planFisher(ckpt, spec, in.offsets, {}, streamingOptions()).peakBytes - 1);
        spill.scratchDir = scratch.path().toStdString();
        QVERIFY_THROWS_EXCEPTION(Cancelled,
            computeFisher(
                ckpt, spec, in.tokens, in.offsets, {}, spill, [&](const Progress& p) { return p.done < total - 2; }));
        QVERIFY(QDir(scratch.path()).isEmpty());
        // A scratch directory that does not exist, when the inputs must spill.
        spill.scratchDir = scratch.filePath(QStringLiteral("missing")).toStdString();
        QVERIFY(test::inputErrorOf([&] {
            computeFisher(ckpt, spec, in.tokens, in.offsets, {}, spill);
        }).contains(QLatin1String("not a directory")));
    }

    void cancellation()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const DemoInput in = demoInput(spec);
        // The progress callback stops after the first sample.
        int calls = 0;
        const ProgressFn stopAfterOne = [&](const Progress& p) {
            ++calls;
            return p.done < 1;
        };
        QVERIFY_THROWS_EXCEPTION(Cancelled, computeFisher(ckpt, spec, in.tokens, in.offsets, {}, {}, stopAfterOne));
        QCOMPARE(calls, 1);
        // A stop requested before the start: no sample runs.
        StopToken stop;
        stop.requestStop();
        calls = 0;
        const ProgressFn count = [&](const Progress&) {
            ++calls;
            return true;
        };
        QVERIFY_THROWS_EXCEPTION(Cancelled, computeFisher(ckpt, spec, in.tokens, in.offsets, {}, {}, count, &stop));
        QCOMPARE(calls, 0);
        // Progress counts samples.
        std::vector<int64_t> done;
        const ProgressFn record = [&](const Progress& p) {
            done.push_back(p.done);
            return p.total == 3;
        };
        FisherOptions maskOnly;
        maskOnly.weightForm = maskOnly.gradAbs = false;
        (void)computeFisher(ckpt, spec, in.tokens, in.offsets, {}, maskOnly, record);
        QCOMPARE(done, (std::vector<int64_t> { 1, 2, 3 }));
    }

    void rejectsBadInput()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const std::vector<int32_t> tokens { 5, 6, 7 };
        QVERIFY(test::inputErrorOf([&] {
            computeFisher(ckpt, spec, tokens, std::vector<int64_t> { 0, 2, 3 });
        }).contains(QLatin1String("fewer than 2 tokens")));
        QVERIFY(test::inputErrorOf([&] {
            computeFisher(ckpt, spec, tokens, std::vector<int64_t> { 0, 2 });
        }).contains(QLatin1String("offsets")));
        const std::vector<int32_t> outside { 5, static_cast<int32_t>(spec.vocabSize) };
        QVERIFY(test::inputErrorOf([&] {
            computeFisher(ckpt, spec, outside, std::vector<int64_t> { 0, 2 });
        }).contains(QLatin1String("outside the vocabulary")));
        FisherOptions none;
        none.maskForm = none.weightForm = none.gradAbs = false;
        QVERIFY(test::inputErrorOf([&] {
            computeFisher(ckpt, spec, tokens, std::vector<int64_t> { 0, 3 }, {}, none);
        }).contains(QLatin1String("no score")));
    }

private:
    std::string m_demoDir;
};

QTEST_GUILESS_MAIN(TestFisher)
#include "tst_fisher.moc"
