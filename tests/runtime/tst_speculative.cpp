// Speculative execution in evaluation (runtime/speculative.h, ExpertMask::speculative): every predictor on the
// tiny reference models of every architecture against transformers with its routers patched the same way
// (tests/reference/speculative_reference.py): identical experts per token and speculated layer, per-token losses
// within 1e-4 nats; the frequency orders against a numpy-free C++ recomputation; the oracle equal to the model
// bit for bit (with and without a plan); bad options refused before any work, naming the field.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/random_model.h"
#include "checkpoint/safetensors.h"
#include "eval/eval.h"
#include "plan/plan.h"
#include "prefetch/prefetch_derived.h"
#include "runtime/executor.h"
#include "test_io.h"
#include "test_support.h"
#include "test_tensors.h"

#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

using namespace moeatlas;
using moeatlas::test::kReorderRtol;
using moeatlas::test::maxAbs;
using moeatlas::test::relDiff;

namespace {

const char* const kOptions[] = { "next-router", "quasi-hidden", "linear", "mlp", "frequency", "previous", "oracle",
    "next-router:2", "quasi-hidden:2" };

AtlasArray arrayOf(const SafetensorsFile& f, const std::string& tensor, const std::string& name)
{
    const std::vector<float> v = test::tensorValues<float>(f, tensor);
    AtlasArray a { name, {}, std::vector<double>(v.begin(), v.end()) };
    for (const int64_t d : f.info(tensor).shape)
        a.dims.push_back(static_cast<uint64_t>(d));
    return a;
}

// The speculative option of one reference entry, with its data from the reference file (default vectors,
// estimators) or computed here (frequency orders from the unmodified routing over the training sequences).
SpeculativeExecution optionFor(const nlohmann::json& o, const SafetensorsFile& ref, const SafetensorsFile& spec,
    const ModelSpec& model, const std::vector<uint8_t>& train, int64_t B, int64_t S)
{
    SpeculativeExecution s;
    s.predictor = parsePredictor(o["predictor"].get<std::string>(), "predictor");
    s.lookahead = o["lookahead"].get<int>();
    const std::vector<int> layers = model.moeLayerIndices();
    RoutingTrace trace;
    trace.numExperts = model.router.numExperts;
    trace.topK = model.router.topK;
    trace.moeLayers = layers;
    for (int64_t b = 0; b <= B; ++b)
        trace.seqOffsets.push_back(b * S);
    trace.domainIds.assign(static_cast<std::size_t>(B * S), 0);
    trace.trainSequences = train;
    for (const int l : layers) {
        const std::vector<int64_t> ids = test::tensorValues<int64_t>(ref, "topk_ids." + std::to_string(l));
        trace.routed.emplace_back(ids.begin(), ids.end());
    }
    for (std::size_t m = 0; m < layers.size(); ++m) {
        const int l = layers[m];
        const std::string key = std::to_string(l);
        std::vector<int32_t> order = frequencyOrder(trace, static_cast<int>(m));
        const std::vector<int64_t> want = test::tensorValues<int64_t>(spec, "frequency." + key);
        if (!std::equal(order.begin(), order.end(), want.begin(), want.end()))
            throw std::runtime_error("frequency order of layer " + key + " differs from the Python one");
        s.frequencyOrder[l] = order;
        s.defaultVectors[l] = test::tensorValues<float>(spec, "dv." + key);
        for (const char* kind : { "linear", "mlp" }) {
            if (predictorName(s.predictor) != kind)
                continue;
            AtlasLearnedEstimator e;
            const std::vector<std::string> names = std::string(kind) == "linear"
                ? std::vector<std::string> { "feature_mean", "feature_std", "weight", "bias" }
                : std::vector<std::string> { "feature_mean", "feature_std", "hidden_weight", "hidden_bias",
                      "output_weight", "output_bias" };
            for (const std::string& n : names)
                e.parameters.push_back(arrayOf(spec, std::string("est.") + kind + "." + key + "." + n, n));
            s.estimators[l] = e;
        }
    }
    return s;
}

} // namespace

class TstSpeculative : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void reference_data()
    {
        QTest::addColumn<QString>("arch");
        QTest::addColumn<QString>("variant");
        if (test::pythonExecutable().isEmpty())
            QSKIP("MOEATLAS_PYTHON is unset: the reference tests need the project venv (packaging/setup.sh test)");
        const auto list = test::runPython(
            QStringLiteral("tests/reference/make_reference.py"), { QStringLiteral("--list-variants") });
        QVERIFY2(list.exitCode == 0, qPrintable(list.stdErr));
        for (const QString& line : list.stdOut.split(QLatin1Char('\n'), Qt::SkipEmptyParts)) {
            const QStringList parts = line.split(QLatin1Char(' '));
            if (parts.value(0) == QLatin1String("glm4_moe") || parts.value(0) == QLatin1String("deepseek_v3"))
                continue; // sigmoid router: speculative execution refuses it (badInputIsRefused)
            QTest::addRow("%s/%s", qPrintable(parts.value(0)), qPrintable(parts.value(1)))
                << parts.value(0) << parts.value(1);
        }
    }

    // Every predictor against transformers with the routing swapped by hand.
    void reference()
    {
        QFETCH(QString, arch);
        QFETCH(QString, variant);
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        QStringList args { QStringLiteral("--arch"), arch, QStringLiteral("--variant"), variant,
            QStringLiteral("--out"), dir.filePath(QStringLiteral("model")) };
        for (const char* o : kOptions)
            args << QStringLiteral("--speculative") << QString::fromLatin1(o);
        const auto made = test::runPython(QStringLiteral("tests/reference/speculative_reference.py"), args);
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr));

        const std::string modelDir = dir.filePath(QStringLiteral("model")).toStdString();
        const Checkpoint ckpt(modelDir);
        const ModelSpec spec = parseModelSpec(ckpt.config(), modelDir + "/config.json");
        const SafetensorsFile ref(modelDir + "/reference.safetensors");
        const SafetensorsFile specRef(modelDir + "/speculative.safetensors");
        std::ifstream metaFile(modelDir + "/speculative.json");
        const nlohmann::json meta = nlohmann::json::parse(metaFile);
        const std::vector<int64_t> ids64 = test::tensorValues<int64_t>(ref, "input_ids");
        const int64_t B = meta["batch"].get<int64_t>(), S = meta["seq_len"].get<int64_t>(), T = B * S;
        const std::vector<int32_t> tokens(ids64.begin(), ids64.end());
        std::vector<int64_t> offsets;
        for (int64_t b = 0; b <= B; ++b)
            offsets.push_back(b * S);
        const std::vector<uint8_t> train = meta["train_sequences"].get<std::vector<uint8_t>>();

        std::vector<ExpertMask> variants(1);
        variants[0].name = "full";
        for (const nlohmann::json& o : meta["options"]) {
            ExpertMask m;
            m.name = o["option"].get<std::string>();
            m.speculative = optionFor(o, ref, specRef, spec, train, B, S);
            variants.push_back(m);
        }
        QVERIFY(variants.size() >= 8); // lookahead 2 needs three MoE layers
        ExecutorOptions options;
        options.batchTokens = 2 * S; // two micro-batches
        Executor executor(ckpt, spec, options);
        const EvaluationResult result = executor.evaluate(tokens, offsets, variants, /*keepLogits=*/true);
        const int64_t V = spec.vocabSize, K = spec.router.topK;
        for (std::size_t n = 1; n < variants.size(); ++n) {
            const nlohmann::json& o = meta["options"][n - 1];
            const std::string key = std::to_string(o["index"].get<int>());
            // The smallest gap between a token's k-th and (k+1)-th choice in transformers: a decision this close
            // to a tie may go the other way under another summation order, which the message then says.
            const double margin = o["margin"].get<double>();
            const VariantOutput& got = result.variants[n];
            // Identical experts in every speculated layer, and only there.
            std::vector<int> layers = o["layers"].get<std::vector<int>>();
            QCOMPARE(got.speculatedIds.size(), layers.size());
            for (const int j : layers) {
                const std::vector<int64_t> want
                    = test::tensorValues<int64_t>(specRef, "spec_ids." + key + "." + std::to_string(j));
                const std::vector<int32_t>& ids = got.speculatedIds.at(j);
                QCOMPARE(static_cast<int64_t>(ids.size()), T * K);
                for (std::size_t i = 0; i < ids.size(); ++i)
                    QVERIFY2(static_cast<int64_t>(ids[i]) == want[i],
                        qPrintable(QStringLiteral("%1, layer %2, token %3 slot %4: expert %5, transformers %6 "
                                                  "(smallest decision margin %7)")
                                       .arg(QString::fromStdString(variants[n].name))
                                       .arg(j)
                                       .arg(i / static_cast<std::size_t>(K))
                                       .arg(i % static_cast<std::size_t>(K))
                                       .arg(ids[i])
                                       .arg(want[i])
                                       .arg(margin)));
            }
            const std::vector<float> refLogits = test::tensorValues<float>(specRef, "spec_logits." + key);
            const double logitErr = relDiff(got.logits, refLogits, maxAbs(refLogits));
            double worstNll = 0, change = 0;
            for (int64_t t = 0; t + 1 < T; ++t) {
                if (std::isnan(got.tokenNll[static_cast<std::size_t>(t)]))
                    continue;
                const float* row = refLogits.data() + t * V;
                const double top = *std::max_element(row, row + V);
                double sum = 0;
                for (int64_t v = 0; v < V; ++v)
                    sum += std::exp(static_cast<double>(row[v]) - top);
                const double nll = top + std::log(sum) - row[tokens[static_cast<std::size_t>(t + 1)]];
                worstNll = std::max(worstNll, std::fabs(nll - got.tokenNll[static_cast<std::size_t>(t)]));
                change = std::max(change,
                    std::fabs(static_cast<double>(got.tokenNll[static_cast<std::size_t>(t)])
                        - result.variants[0].tokenNll[static_cast<std::size_t>(t)]));
            }
            qInfo("  %s: logits max error %.3g, per-token loss max error %.3g nats, largest change vs the model %.3g",
                variants[n].name.c_str(), logitErr, worstNll, change);
            QVERIFY2(logitErr <= kReorderRtol, qPrintable(QString::number(logitErr)));
            QVERIFY2(worstNll <= 1e-4, qPrintable(QString::number(worstNll)));
            // The swap is real: every predictor but the oracle changes some token's loss.
            if (variants[n].speculative->predictor != Predictor::Oracle)
                QVERIFY2(change > 1e-3, variants[n].name.c_str());
        }
    }

    // Oracle speculation is the model: the same losses, bit for bit, with and without a plan.
    void oracleIsTheModel()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        RandomModelOptions o;
        o.arch = Architecture::Qwen2Moe;
        o.numLayers = 4;
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
        o.seed = 5;
        const std::filesystem::path model(dir.filePath(QStringLiteral("model")).toStdString());
        writeRandomModel(o, model, false);
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), "config.json");
        std::mt19937 rng(3);
        std::vector<int32_t> tokens;
        for (int i = 0; i < 4 * 40; ++i)
            tokens.push_back(static_cast<int32_t>(rng() % 128));
        const std::vector<int64_t> offsets { 0, 40, 80, 120, 160 };
        std::vector<ExpertMask> variants(4);
        variants[0].name = "full";
        variants[1].name = "full+spec:oracle";
        variants[1].speculative = SpeculativeExecution {};
        variants[2].name = "plan";
        for (const int l : spec.moeLayerIndices())
            variants[2].keep[l] = { 0, 2, 3, 5, 7 };
        variants[3] = variants[2];
        variants[3].name = "plan+spec:oracle:2";
        variants[3].speculative = SpeculativeExecution {};
        variants[3].speculative->lookahead = 2;
        ExecutorOptions options;
        options.batchTokens = 80;
        Executor executor(ckpt, spec, options);
        const EvaluationResult r = executor.evaluate(tokens, offsets, variants, true);
        for (const auto& [spec_, base] : { std::pair { 1, 0 }, std::pair { 3, 2 } }) {
            const VariantOutput& a = r.variants[static_cast<std::size_t>(spec_)];
            const VariantOutput& b = r.variants[static_cast<std::size_t>(base)];
            QCOMPARE(a.tokenNll.size(), b.tokenNll.size());
            QVERIFY(std::memcmp(a.tokenNll.data(), b.tokenNll.data(), a.tokenNll.size() * sizeof(float)) == 0);
            QVERIFY(a.logits == b.logits);
            QVERIFY(!a.speculatedIds.empty());
        }
        // ... and the plan changes the model (the comparison above is not between identical runs).
        QVERIFY(r.variants[0].logits != r.variants[2].logits);
    }

    // The variants withSpeculative adds, the table's columns and its round trip through the atlas form.
    void variantsAndTable()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        RandomModelOptions o;
        o.arch = Architecture::Mixtral;
        o.numLayers = 3;
        o.hiddenSize = 32;
        o.numHeads = 2;
        o.numKvHeads = 1;
        o.headDim = 16;
        o.numExperts = 4;
        o.topK = 2;
        o.moeIntermediate = 16;
        o.vocabSize = 64;
        o.initStd = 0.3;
        o.seed = 4;
        const std::filesystem::path model(dir.filePath(QStringLiteral("model")).toStdString());
        writeRandomModel(o, model, false);
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), "config.json");
        Plan plan;
        plan.numExperts = 4;
        plan.layers = { 0, 1, 2 };
        plan.keep = { { 0, 1, 3 }, { 0, 1, 2 }, { 1, 2, 3 } };
        std::vector<EvalVariant> base { fullVariant(spec), variantFromPlan(plan, spec, "plan") };
        base = withRoutingRules(base, { parseRoutingRule("top-k:1", 4, 2) }, spec);
        const std::vector<EvalVariant> variants = withSpeculative(
            base, { parseSpeculative("next-router", spec, nullptr), parseSpeculative("oracle:2", spec, nullptr) });
        std::vector<std::string> names;
        for (const EvalVariant& v : variants)
            names.push_back(v.name);
        // Routing-rule variants are not speculated on.
        QCOMPARE(names,
            (std::vector<std::string> { "full", "plan", "full+top-k:1", "plan+top-k:1", "full+spec:next-router",
                "full+spec:oracle:2", "plan+spec:next-router", "plan+spec:oracle:2" }));
        QCOMPARE(variants[6].base, std::string("plan"));
        QCOMPARE(variants[6].speculative, std::string("next-router"));
        QVERIFY(variants[6].mask.keep == variants[1].mask.keep);

        EvalTokens tokens;
        tokens.domains = { "a", "b" };
        tokens.seqOffsets = { 0, 12, 24, 36 };
        tokens.seqDomain = { 0, 1, 1 };
        std::mt19937 rng(9);
        for (int i = 0; i < 36; ++i)
            tokens.tokens.push_back(static_cast<int32_t>(rng() % 64));
        tokens.source = "test";
        const EvalTable t = evaluateVariants(ckpt, spec, {}, tokens, variants);
        for (std::size_t d = 0; d < 2; ++d) {
            QCOMPARE(t.nll[5][d], t.nll[0][d]); // the oracle is the model
            QCOMPARE(t.nll[7][d], t.nll[1][d]);
            QVERIFY(t.nll[4][d] != t.nll[0][d]);
            QCOMPARE(t.meanExperts[4][d], 2.0);
        }
        QCOMPARE(t.baseIndex(6), 1);
        QCOMPARE(t.baseIndex(0), -1);
        const EvalTable back = evalTableFromResults(evalTableResults(t), "test");
        for (std::size_t v = 0; v < t.variants.size(); ++v)
            QCOMPARE(back.variants[v].speculative, t.variants[v].speculative);
        std::istringstream csv(evalTableCsv(t));
        std::vector<std::string> lines;
        for (std::string line; std::getline(csv, line);)
            lines.push_back(line);
        QVERIFY(lines[0].size() > 26 && lines[0].substr(lines[0].size() - 26) == ",speculative,delta_vs_base");
        // full+spec:oracle:2 in domain a: delta_vs_base exactly 0; full+spec:next-router: its nll minus full's.
        QVERIFY2(lines[1 + 5 * 2].rfind("full+spec:oracle:2,", 0) == 0, lines[11].c_str());
        QVERIFY2(lines[1 + 5 * 2].substr(lines[11].size() - 11) == ",oracle:2,0", lines[11].c_str());
        std::ostringstream want;
        want.precision(9);
        want << ",next-router," << t.nll[4][0] - t.nll[0][0];
        QVERIFY2(lines[1 + 4 * 2].substr(lines[9].size() - want.str().size()) == want.str(), lines[9].c_str());
    }

    // Bad options: refused before any work, naming the field.
    void badInputIsRefused()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        RandomModelOptions o;
        o.arch = Architecture::Mixtral;
        o.numLayers = 3;
        o.hiddenSize = 32;
        o.numHeads = 2;
        o.numKvHeads = 1;
        o.headDim = 16;
        o.numExperts = 4;
        o.topK = 2;
        o.moeIntermediate = 16;
        o.vocabSize = 64;
        o.seed = 2;
        const std::filesystem::path model(dir.filePath(QStringLiteral("model")).toStdString());
        writeRandomModel(o, model, false);
        const Checkpoint ckpt(model);
        const ModelSpec spec = parseModelSpec(ckpt.config(), "config.json");
        const std::vector<int32_t> tokens(16, 3);
        const std::vector<int64_t> offsets { 0, 8, 16 };
        Executor executor(ckpt, spec, {});
        const auto evaluateWith = [&](const ExpertMask& m) {
            const std::vector<ExpertMask> v { m };
            executor.evaluate(tokens, offsets, v);
        };
        const auto expect = [](const test::CaughtRequestError& e, const char* field, const char* text) {
            QCOMPARE(e.field, std::string(field));
            QVERIFY2(e.message.contains(QString::fromLatin1(text)), qPrintable(e.message));
        };
        ExpertMask m;
        m.name = "x";
        m.speculative = SpeculativeExecution {};
        m.speculative->lookahead = 3; // three MoE layers
        expect(test::requestErrorOf([&] { evaluateWith(m); }), "speculative", "beyond the last MoE layer");
        m.speculative->lookahead = 0;
        expect(test::requestErrorOf([&] { evaluateWith(m); }), "speculative", "not a positive count");
        m.speculative->lookahead = 1;
        m.speculative->predictor = Predictor::QuasiHidden;
        expect(test::requestErrorOf([&] { evaluateWith(m); }), "speculative", "no default vectors");
        m.speculative->predictor = Predictor::Linear;
        expect(test::requestErrorOf([&] { evaluateWith(m); }), "speculative", "no linear estimator");
        m.speculative->predictor = Predictor::Frequency;
        m.speculative->frequencyOrder = { { 1, { 0, 1, 2, 2 } }, { 2, { 3, 2, 1, 0 } } };
        expect(test::requestErrorOf([&] { evaluateWith(m); }), "speculative", "not an order");
        m.speculative->predictor = Predictor::NextRouter;
        m.routing = parseRoutingRule("top-k:1", 4, 2);
        expect(test::requestErrorOf([&] { evaluateWith(m); }), "speculative", "model's own top-k");

        // A sigmoid router (glm4_moe, DeepSeek) is refused by name, not run with softmax weights.
        ModelSpec sigmoidSpec = spec;
        sigmoidSpec.router.score = RouterScore::Sigmoid;
        expect(test::requestErrorOf([&] { parseSpeculative("next-router", sigmoidSpec, nullptr); }), "speculative",
            "sigmoid router");

        // Parsing the option (the CLI's --speculative).
        expect(test::requestErrorOf([&] { parseSpeculative("psychic", spec, nullptr); }), "speculative",
            "unknown predictor 'psychic'");
        expect(test::requestErrorOf([&] { parseSpeculative("next-router:two", spec, nullptr); }), "speculative",
            "is not a lookahead");
        expect(test::requestErrorOf([&] { parseSpeculative("previous:3", spec, nullptr); }), "speculative",
            "beyond the last MoE layer");
        for (const char* p : { "quasi-hidden", "linear", "mlp", "frequency" })
            expect(test::requestErrorOf([&] { parseSpeculative(p, spec, nullptr); }), "speculative", "give --atlas");
        // An atlas that did not record the predictor (the demo atlas has no /prefetch); frequency comes from
        // its routing.
        const Checkpoint demo(test::sourcePath(QStringLiteral("resources/demo/model")).toStdString());
        const ModelSpec demoSpec = parseModelSpec(demo.config(), "config.json");
        const AtlasFile atlas
            = AtlasFile::openReadOnly(test::sourcePath(QStringLiteral("resources/demo/demo.atlas.h5")).toStdString());
        for (const char* p : { "quasi-hidden", "linear", "mlp:2" })
            expect(
                test::requestErrorOf([&] { parseSpeculative(p, demoSpec, &atlas); }), "speculative", "did not record");
        const SpeculativeExecution frequency = parseSpeculative("frequency:2", demoSpec, &atlas);
        QCOMPARE(frequency.frequencyOrder.size(), demoSpec.moeLayerIndices().size() - 2);
        const SpeculativeExecution two = parseSpeculative("next-router:2", spec, nullptr);
        QCOMPARE(two.lookahead, 2);
        QCOMPARE(two.name(), std::string("next-router:2"));
        QCOMPARE(parseSpeculative("oracle", spec, nullptr).name(), std::string("oracle"));
    }
};

QTEST_GUILESS_MAIN(TstSpeculative)
#include "tst_speculative.moc"
