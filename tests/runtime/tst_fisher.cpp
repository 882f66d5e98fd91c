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
#include "test_io.h"
#include "test_support.h"
#include "test_tensors.h"

#include <QSet>
#include <QTemporaryDir>
#include <QTest>

#include <dlfcn.h>

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

// The executor on the CPU-split path (2 ATen threads, single-threaded OpenBLAS) for the same tokens.
std::vector<float> inferenceTokenNll(const Checkpoint& ckpt, const ModelSpec& spec, const std::vector<int32_t>& tokens,
    const std::vector<int64_t>& offsets)
{
    ExecutorOptions o;
    o.threads = 2;
    Executor executor(ckpt, spec, o);
    const std::vector<ExpertMask> full { ExpertMask { "full", {}, {} } };
    return executor.evaluate(tokens, offsets, full).variants.at(0).tokenNll;
}

// Sets OpenBLAS' thread count in this process (the executor sets it to 1 while it runs) and returns
// the previous one; 0 and no change when OpenBLAS is not the BLAS here.
int setOpenblasThreads(int n)
{
    const auto get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    const auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (!get || !set)
        return 0;
    const int previous = get();
    set(n);
    return previous;
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
        QCOMPARE(done.size(), 4);
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
        QCOMPARE(got.samples, static_cast<int64_t>(offsets.size()) - 1);
        QCOMPARE(got.tokens, static_cast<int64_t>(tokens.size()));
        QCOMPARE(got.layers.size(), spec.moeLayerIndices().size());

        // The loss that was differentiated is transformers' loss.
        const std::vector<float> refLoss = floats(ref, "loss");
        QCOMPARE(got.sampleLoss.size(), refLoss.size());
        for (std::size_t n = 0; n < refLoss.size(); ++n)
            QVERIFY2(std::fabs(got.sampleLoss[n] - refLoss[n]) <= 1e-5 * std::fabs(refLoss[n]),
                qPrintable(QStringLiteral("sample %1 loss %2 vs %3").arg(n).arg(got.sampleLoss[n]).arg(refLoss[n])));

        struct Form {
            const char* key;
            std::vector<double> FisherLayer::*field;
        };
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
    // compute what the thread-split ones do.
    void maskedForwardMatchesInference()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const DemoInput in = demoInput(spec);
        const std::vector<float> expected = inferenceTokenNll(ckpt, spec, in.tokens, in.offsets);
        FisherOptions o;
        o.weightForm = false;
        o.gradAbs = false;
        const FisherResult got = computeFisher(ckpt, spec, in.tokens, in.offsets, {}, o);
        const double err = test::maxAbsDiff(got.tokenNll, expected);
        qInfo("  per-token loss, differentiated forward vs inference: max abs error %.3g", err);
        QVERIFY2(err <= 1e-5, qPrintable(QStringLiteral("per-token loss error %1").arg(err)));
        for (std::size_t s = 0; s + 1 < in.offsets.size(); ++s) {
            double sum = 0;
            for (int64_t t = in.offsets[s]; t + 1 < in.offsets[s + 1]; ++t)
                sum += expected[static_cast<std::size_t>(t)];
            const double mean = sum / static_cast<double>(in.offsets[s + 1] - in.offsets[s] - 1);
            QVERIFY(std::fabs(got.sampleLoss[s] - mean) <= 1e-5);
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
    // ATen threads, single-threaded OpenBLAS): a gradient pass must take the plain paths instead
    // (autograd refuses out= ops on tensors that require gradients) and give the same scores.
    void splitPathNotTakenUnderGradMode()
    {
        const Checkpoint ckpt(m_demoDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), m_demoDir + "/config.json");
        const DemoInput in = demoInput(spec);
        FisherOptions one;
        one.threads = 1;
        const FisherResult serial = computeFisher(ckpt, spec, in.tokens, in.offsets, {}, one);
        const int blasThreads = setOpenblasThreads(1);
        FisherOptions two;
        two.threads = 2;
        FisherResult split;
        QString error;
        try {
            split = computeFisher(ckpt, spec, in.tokens, in.offsets, {}, two);
        } catch (const std::exception& e) {
            error = QString::fromUtf8(e.what());
        }
        if (blasThreads > 0)
            setOpenblasThreads(blasThreads);
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
                QVERIFY2(err <= 1e-5 * scale, qPrintable(QStringLiteral("threads 1 vs 2: %1").arg(err / scale)));
            }
        }
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
