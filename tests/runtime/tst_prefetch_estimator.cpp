// Learned next-layer expert estimators (runtime/prefetch_estimator.h).
// reference: the loss and its gradient of fixed tiny linear and MLP models equal an independent numpy
//   computation with hand-derived gradients (estimator_reference.py).
// unit: on synthetic data the linear estimator beats the frequency baseline on held-out tokens when the
//   labels are a linear rule, and the MLP beats the linear one on a rule even in x; determinism; the
//   atlas round trip; reported losses; input errors.
#include "atlas/atlas_file.h"
#include "runtime/prefetch_estimator.h"
#include "test_support.h"
#include "util/error.h"
#include "util/splitmix64.h"

#include <ATen/ATen.h>

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

using namespace moeatlas;

namespace {

at::Tensor normal(SplitMix64& rng, std::vector<int64_t> shape, double std = 1.0)
{
    int64_t n = 1;
    for (int64_t s : shape)
        n *= s;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) {
        const double u1 = (static_cast<double>(rng.next() >> 11) + 0.5) * 0x1.0p-53;
        x = static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * rng.uniform()));
    }
    return at::from_blob(v.data(), shape, at::kFloat).clone();
}

// Ids of the k largest entries per row (ties towards the lower id), [N, k] int64.
at::Tensor topK(const at::Tensor& scores, int k)
{
    return std::get<1>(scores.sort(true, 1, true)).slice(1, 0, k).contiguous();
}

// Mean over the rows of `mask` of |predicted[:, :k] ∩ truth| / k.
double hitRate(const at::Tensor& predicted, const at::Tensor& truth, const at::Tensor& mask)
{
    const at::Tensor p = predicted.to(at::kLong).contiguous(), t = truth.to(at::kLong).contiguous();
    const int64_t k = t.size(1);
    double sum = 0.0;
    int64_t rows = 0;
    for (int64_t i = 0; i < t.size(0); ++i) {
        if (!mask[i].item<bool>())
            continue;
        int hits = 0;
        for (int64_t a = 0; a < k; ++a)
            for (int64_t b = 0; b < k; ++b)
                hits += p[i][a].item<int64_t>() == t[i][b].item<int64_t>() ? 1 : 0;
        sum += static_cast<double>(hits) / static_cast<double>(k);
        ++rows;
    }
    return sum / static_cast<double>(rows);
}

// The frequency baseline: the k experts most often routed to on the training rows, for every token.
at::Tensor frequencyPrediction(const at::Tensor& truth, const at::Tensor& trainMask, int numExperts)
{
    const int64_t k = truth.size(1);
    std::vector<int64_t> counts(static_cast<std::size_t>(numExperts), 0);
    for (int64_t i = 0; i < truth.size(0); ++i)
        if (trainMask[i].item<bool>())
            for (int64_t a = 0; a < k; ++a)
                ++counts[static_cast<std::size_t>(truth[i][a].item<int64_t>())];
    std::vector<int64_t> order(counts.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return counts[static_cast<std::size_t>(a)] > counts[static_cast<std::size_t>(b)];
    });
    const at::Tensor row = at::tensor(std::vector<int64_t>(order.begin(), order.begin() + k), at::kLong);
    return row.unsqueeze(0).expand({ truth.size(0), k }).contiguous();
}

struct Synthetic {
    at::Tensor features, targets, trainMask;
};

// x ~ N(0, I) shown to the estimator with per-column scales and offsets; labels top-k of rule(x) + noise.
Synthetic makeData(
    uint64_t seed, int64_t n, int64_t h, int k, const std::function<at::Tensor(const at::Tensor&)>& rule, double noise)
{
    SplitMix64 rng(seed);
    const at::Tensor x = normal(rng, { n, h });
    const at::Tensor scores = rule(x) + normal(rng, { n, rule(x.slice(0, 0, 1)).size(1) }, noise);
    const at::Tensor scale = at::linspace(0.5, 20.0, h), shift = at::linspace(-3.0, 5.0, h);
    Synthetic d;
    d.features = x * scale + shift;
    d.targets = topK(scores, k);
    d.trainMask = at::arange(n) < (n * 2 / 3);
    return d;
}

void checkThrows(const std::function<void()>& call, const QString& field, const QString& fragment)
{
    try {
        call();
    } catch (const RequestError& e) {
        QCOMPARE(QString::fromStdString(e.field()), field);
        QVERIFY2(QString::fromUtf8(e.what()).contains(fragment), e.what());
        return;
    }
    QFAIL(qPrintable(QStringLiteral("no RequestError(%1)").arg(field)));
}

nlohmann::json toJson(const at::Tensor& t)
{
    const at::Tensor d = t.to(at::kDouble).contiguous();
    if (d.dim() == 1)
        return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t i = 0; i < d.size(0); ++i)
        rows.push_back(toJson(d[i]));
    return rows;
}

at::Tensor fromJson(const nlohmann::json& j)
{
    if (!j.is_array() || j.empty() || !j[0].is_array())
        return at::tensor(j.get<std::vector<double>>(), at::kDouble);
    std::vector<at::Tensor> rows;
    for (const auto& r : j)
        rows.push_back(fromJson(r));
    return at::stack(rows);
}

TrainedEstimator tinyModel(EstimatorKind kind, int64_t h, int64_t e, int64_t u, uint64_t seed)
{
    SplitMix64 rng(seed);
    TrainedEstimator m;
    m.kind = kind;
    m.featureMean = normal(rng, { h });
    m.featureStd = normal(rng, { h }).abs() + 0.5;
    if (kind == EstimatorKind::Linear) {
        m.weight = normal(rng, { e, h }, 0.7);
        m.bias = normal(rng, { e });
    } else {
        m.weight = normal(rng, { u, h }, 0.7);
        m.bias = normal(rng, { u }, 0.5);
        m.outWeight = normal(rng, { e, u }, 0.7);
        m.outBias = normal(rng, { e });
    }
    return m;
}

} // namespace

class TestPrefetchEstimator : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void lossAndGradientMatchNumpy_data()
    {
        QTest::addColumn<int>("kind");
        QTest::addRow("linear") << static_cast<int>(EstimatorKind::Linear);
        QTest::addRow("mlp") << static_cast<int>(EstimatorKind::Mlp);
    }

    void lossAndGradientMatchNumpy()
    {
        QFETCH(int, kind);
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: this test needs the project venv");
        const auto k = static_cast<EstimatorKind>(kind);
        const int64_t n = 9, h = 5, e = 6, u = 7;
        const TrainedEstimator m = tinyModel(k, h, e, u, 11);
        SplitMix64 rng(5);
        const at::Tensor features = normal(rng, { n, h }, 2.0) + 0.3;
        // Two ids per token; row 3 repeats an id (counts once in the multi-hot target).
        at::Tensor targets = at::randint(0, e, { n, 2 }, at::TensorOptions().dtype(at::kLong));
        for (int64_t i = 0; i < n; ++i) {
            targets[i][0] = (i * 5 + 1) % e;
            targets[i][1] = (i * 3 + 2) % e;
        }
        targets[3][1] = targets[3][0].item<int64_t>();

        nlohmann::json in;
        in["kind"] = estimatorKindName(k);
        in["features"] = toJson(features);
        in["targets"] = toJson(targets);
        in["num_experts"] = e;
        for (const auto& [name, value] : m.namedParameters())
            in["params"][name] = toJson(value);
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const QString path = dir.filePath(QStringLiteral("in.json"));
        QFile f(path);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(QByteArray::fromStdString(in.dump()));
        f.close();
        const auto ref = test::runPython(QStringLiteral("tests/runtime/estimator_reference.py"), { path });
        QVERIFY2(ref.exitCode == 0, qPrintable(ref.stdErr));
        const nlohmann::json out = nlohmann::json::parse(ref.stdOut.toStdString());

        const EstimatorLossGradient got = estimatorLossAndGradient(m, features, targets);
        const double refLoss = out["loss"].get<double>();
        qInfo(
            "%s: loss %.8f (numpy %.8f)", qPrintable(QString::fromStdString(estimatorKindName(k))), got.loss, refLoss);
        QVERIFY(std::abs(got.loss - refLoss) <= 1e-5 * std::max(1.0, std::abs(refLoss)));
        QCOMPARE(got.gradients.size(), out["gradients"].size());
        for (const auto& [name, grad] : got.gradients) {
            QVERIFY2(out["gradients"].contains(name), name.c_str());
            const at::Tensor r = fromJson(out["gradients"][name]);
            QCOMPARE(grad.sizes().vec(), r.sizes().vec());
            const double scale = std::max(1e-3, r.abs().max().item<double>());
            const double diff = (grad.to(at::kDouble) - r).abs().max().item<double>();
            qInfo("  d/d%s: max |diff| %.3g (max |grad| %.3g)", name.c_str(), diff, scale);
            QVERIFY2(diff <= 1e-5 * scale, name.c_str());
        }
        // The same loss through the chunked evaluation path.
        QVERIFY(std::abs(estimatorLoss(m, features, targets, {}) - refLoss) <= 1e-5 * std::max(1.0, std::abs(refLoss)));
    }

    void linearBeatsFrequencyOnLinearRule()
    {
        const int64_t h = 16;
        const int e = 16, k = 2;
        SplitMix64 rng(3);
        const at::Tensor w = normal(rng, { e, h });
        const Synthetic d = makeData(
            21, 6000, h, k, [&](const at::Tensor& x) { return x.matmul(w.t()); }, 0.5);
        EstimatorOptions o;
        o.kind = EstimatorKind::Linear; // default epochs, learning rate, batch size
        o.maxTrainTokens = 0;
        const TrainedEstimator m = trainEstimator(d.features, d.targets, e, d.trainMask, o);
        const at::Tensor held = d.trainMask.logical_not();
        const double linear = hitRate(predictTopB(m, d.features, k), d.targets, held);
        const double frequency = hitRate(frequencyPrediction(d.targets, d.trainMask, e), d.targets, held);
        qInfo("held-out hit rate: linear %.4f, frequency %.4f (loss train %.4f held-out %.4f)", linear, frequency,
            m.trainLoss, m.heldoutLoss);
        QVERIFY(linear > frequency + 0.3);
        QCOMPARE(m.trainTokens, d.trainMask.sum().item<int64_t>());
        QCOMPARE(m.heldoutTokens, held.sum().item<int64_t>());
        QCOMPARE(m.epochs, int64_t(o.epochs));
    }

    void mlpBeatsLinearOnEvenRule()
    {
        // Scores depend on x*x: even in x, so no linear function of x ranks them better than by chance.
        const int64_t h = 6;
        const int e = 8, k = 2;
        SplitMix64 rng(4);
        const at::Tensor w = normal(rng, { e, h });
        const Synthetic d = makeData(
            22, 6000, h, k, [&](const at::Tensor& x) { return (x * x).matmul(w.t()); }, 0.3);
        EstimatorOptions o;
        o.epochs = 30;
        o.maxTrainTokens = 0;
        o.batchSize = 128;
        o.kind = EstimatorKind::Linear;
        const TrainedEstimator lin = trainEstimator(d.features, d.targets, e, d.trainMask, o);
        o.kind = EstimatorKind::Mlp;
        o.hiddenUnits = 64;
        const TrainedEstimator mlp = trainEstimator(d.features, d.targets, e, d.trainMask, o);
        const at::Tensor held = d.trainMask.logical_not();
        const double linear = hitRate(predictTopB(lin, d.features, k), d.targets, held);
        const double nonlinear = hitRate(predictTopB(mlp, d.features, k), d.targets, held);
        const double frequency = hitRate(frequencyPrediction(d.targets, d.trainMask, e), d.targets, held);
        qInfo("held-out hit rate: mlp %.4f, linear %.4f, frequency %.4f; held-out loss mlp %.4f, linear %.4f",
            nonlinear, linear, frequency, mlp.heldoutLoss, lin.heldoutLoss);
        QVERIFY(nonlinear > linear + 0.2);
        QVERIFY(mlp.heldoutLoss < lin.heldoutLoss);
        QCOMPARE(mlp.weight.size(0), int64_t(64));
    }

    void sameSeedSameParameters_data()
    {
        QTest::addColumn<int>("kind");
        QTest::addRow("linear") << static_cast<int>(EstimatorKind::Linear);
        QTest::addRow("mlp") << static_cast<int>(EstimatorKind::Mlp);
    }

    void sameSeedSameParameters()
    {
        QFETCH(int, kind);
        SplitMix64 rng(8);
        const at::Tensor w = normal(rng, { 8, 12 });
        const Synthetic d = makeData(
            23, 1500, 12, 2, [&](const at::Tensor& x) { return x.matmul(w.t()); }, 0.5);
        EstimatorOptions o;
        o.kind = static_cast<EstimatorKind>(kind);
        o.epochs = 3;
        o.maxTrainTokens = 600; // a sub-sample of the 1000 training tokens
        o.batchSize = 64;
        o.seed = 7;
        const TrainedEstimator a = trainEstimator(d.features, d.targets, 8, d.trainMask, o);
        const TrainedEstimator b = trainEstimator(d.features, d.targets, 8, d.trainMask, o);
        o.seed = 8;
        const TrainedEstimator c = trainEstimator(d.features, d.targets, 8, d.trainMask, o);
        QCOMPARE(a.trainTokens, int64_t(600));
        bool anyDifferent = false;
        const auto pa = a.namedParameters(), pb = b.namedParameters(), pc = c.namedParameters();
        QCOMPARE(pa.size(), pb.size());
        for (std::size_t i = 0; i < pa.size(); ++i) {
            QVERIFY2(at::equal(pa[i].second, pb[i].second), pa[i].first.c_str());
            anyDifferent = anyDifferent || !at::equal(pa[i].second, pc[i].second);
        }
        QCOMPARE(a.trainLoss, b.trainLoss);
        QCOMPARE(a.heldoutLoss, b.heldoutLoss);
        QVERIFY2(anyDifferent, "another seed gave the same parameters");
    }

    void atlasRoundTripGivesIdenticalPredictions_data() { sameSeedSameParameters_data(); }

    void atlasRoundTripGivesIdenticalPredictions()
    {
        QFETCH(int, kind);
        const auto k = static_cast<EstimatorKind>(kind);
        SplitMix64 rng(9);
        const at::Tensor w = normal(rng, { 10, 7 });
        const Synthetic d = makeData(
            24, 900, 7, 3, [&](const at::Tensor& x) { return x.matmul(w.t()); }, 0.5);
        EstimatorOptions o;
        o.kind = k;
        o.epochs = 2;
        const TrainedEstimator m = trainEstimator(d.features, d.targets, 10, d.trainMask, o);
        AtlasLearnedEstimator stored = toAtlas(m);
        // The atlas keeps float32 datasets: every value must survive a float round trip unchanged.
        for (AtlasArray& a : stored.parameters)
            for (double& v : a.values) {
                QCOMPARE(static_cast<double>(static_cast<float>(v)), v);
                v = static_cast<float>(v);
            }
        QCOMPARE(stored.parameters.size(), m.namedParameters().size());
        QCOMPARE(stored.trainTokens, m.trainTokens);
        QCOMPARE(stored.epochs, m.epochs);
        // How it was trained: the resolved options (learning rate 0.1/sqrt(H), MLP width min(2E, 256)).
        const nlohmann::json options = nlohmann::json::parse(stored.optionsJson);
        QCOMPARE(options.at("epochs").get<int>(), 2);
        QCOMPARE(options.at("learning_rate").get<double>(), 0.1 / std::sqrt(7.0));
        QCOMPARE(options.at("hidden_units").get<int>(), k == EstimatorKind::Mlp ? 20 : 0);
        QCOMPARE(options.at("kind").get<std::string>(), std::string(k == EstimatorKind::Mlp ? "mlp" : "linear"));
        const TrainedEstimator back = fromAtlas(stored, k, "/prefetch/learned/x/0/d1");
        QCOMPARE(back.trainLoss, m.trainLoss);
        QCOMPARE(back.heldoutLoss, m.heldoutLoss);
        QVERIFY(at::equal(estimatorLogits(back, d.features), estimatorLogits(m, d.features)));
        QVERIFY(at::equal(predictTopB(back, d.features, 10), predictTopB(m, d.features, 10)));
        const at::Tensor top = predictTopB(m, d.features, 4);
        QCOMPARE(top.scalar_type(), at::kInt);
        QCOMPARE(top.sizes().vec(), (std::vector<int64_t> { 900, 4 }));
        // Best first: logits of each row are non-increasing along the prediction.
        const at::Tensor logits = estimatorLogits(m, d.features).gather(1, top.to(at::kLong));
        QVERIFY((logits.slice(1, 0, 3) >= logits.slice(1, 1, 4)).all().item<bool>());

        // Stored data of the wrong kind or shape is refused, naming the group.
        try {
            (void)fromAtlas(stored, k == EstimatorKind::Linear ? EstimatorKind::Mlp : EstimatorKind::Linear, "G");
            QFAIL("loaded as the wrong kind");
        } catch (const InputError& e) {
            QVERIFY2(QString::fromUtf8(e.what()).startsWith(QStringLiteral("G: ")), e.what());
        }
        stored.parameters[2].dims[0] += 1;
        QVERIFY_THROWS_EXCEPTION(InputError, (void)fromAtlas(stored, k, "G"));
    }

    void lossesAreReported()
    {
        SplitMix64 rng(10);
        const at::Tensor w = normal(rng, { 6, 5 });
        Synthetic d = makeData(
            25, 700, 5, 2, [&](const at::Tensor& x) { return x.matmul(w.t()); }, 0.5);
        EstimatorOptions o;
        o.epochs = 2;
        const TrainedEstimator m = trainEstimator(d.features, d.targets, 6, d.trainMask, o);
        // The full-batch loss of the gradient path on the held-out rows equals the reported held-out loss.
        const at::Tensor held = d.trainMask.logical_not().nonzero().squeeze(1);
        const double direct
            = estimatorLossAndGradient(m, d.features.index_select(0, held), d.targets.index_select(0, held)).loss;
        QVERIFY(std::abs(direct - m.heldoutLoss) <= 1e-5 * direct);
        // Training starts from the frequency prior and lowers the training loss.
        QVERIFY(m.trainLoss < m.heldoutLoss * 2.0);
        // No held-out tokens: NaN held-out loss.
        const TrainedEstimator all = trainEstimator(d.features, d.targets, 6, at::ones({ 700 }, at::kBool), o);
        QVERIFY(std::isnan(all.heldoutLoss));
        QCOMPARE(all.heldoutTokens, int64_t(0));
    }

    void rejectsBadInput()
    {
        SplitMix64 rng(12);
        const at::Tensor x = normal(rng, { 20, 4 });
        const at::Tensor t = at::zeros({ 20, 2 }, at::kLong);
        const at::Tensor mask = at::ones({ 20 }, at::kBool);
        const EstimatorOptions o;
        checkThrows([&] { (void)trainEstimator(x.slice(0, 0, 19), t, 4, mask, o); }, QStringLiteral("targets"),
            QStringLiteral("19"));
        checkThrows([&] { (void)trainEstimator(x, t, 4, mask.slice(0, 0, 10), o); }, QStringLiteral("trainMask"),
            QStringLiteral("[10]"));
        checkThrows(
            [&] { (void)trainEstimator(x[0], t, 4, mask, o); }, QStringLiteral("features"), QStringLiteral("[N, H]"));
        checkThrows([&] { (void)trainEstimator(x, t.to(at::kFloat), 4, mask, o); }, QStringLiteral("targets"),
            QStringLiteral("integer"));
        checkThrows(
            [&] {
                (void)trainEstimator(x, at::zeros({ 20, 2 }, at::kBool), 4, mask, o);
            },
            QStringLiteral("targets"), QStringLiteral("integer"));
        checkThrows([&] { (void)trainEstimator(x, t, 4, at::zeros({ 20 }, at::kBool), o); },
            QStringLiteral("trainMask"), QStringLiteral("training split is empty"));
        at::Tensor bad = t.clone();
        bad[7][1] = 4;
        checkThrows([&] { (void)trainEstimator(x, bad, 4, mask, o); }, QStringLiteral("targets"),
            QStringLiteral("expert id 4 is out of range [0, 4)"));
        bad[7][1] = -1;
        checkThrows([&] { (void)trainEstimator(x, bad, 4, mask, o); }, QStringLiteral("targets"),
            QStringLiteral("expert id -1"));
        checkThrows(
            [&] { (void)trainEstimator(x, t, 0, mask, o); }, QStringLiteral("numExperts"), QStringLiteral(">= 1"));
        at::Tensor nan = x.clone();
        nan[3][2] = std::numeric_limits<float>::quiet_NaN();
        checkThrows([&] { (void)trainEstimator(nan, t, 4, mask, o); }, QStringLiteral("features"),
            QStringLiteral("non-finite"));
        EstimatorOptions zeroEpochs;
        zeroEpochs.epochs = 0;
        checkThrows([&] { (void)trainEstimator(x, t, 4, mask, zeroEpochs); }, QStringLiteral("options.epochs"),
            QStringLiteral(">= 1"));

        EstimatorOptions one;
        one.epochs = 1;
        const TrainedEstimator m = trainEstimator(x, t, 4, mask, one);
        checkThrows([&] { (void)predictTopB(m, x, 5); }, QStringLiteral("budget"), QStringLiteral("[1, 4]"));
        checkThrows([&] { (void)predictTopB(m, x, 0); }, QStringLiteral("budget"), QStringLiteral("[1, 4]"));
        checkThrows([&] { (void)predictTopB(m, x.slice(1, 0, 3), 2); }, QStringLiteral("features"),
            QStringLiteral("trained on 4"));
        checkThrows([&] { (void)predictTopB(TrainedEstimator {}, x, 2); }, QStringLiteral("model"),
            QStringLiteral("no parameters"));
    }
};

QTEST_GUILESS_MAIN(TestPrefetchEstimator)
#include "tst_prefetch_estimator.moc"
