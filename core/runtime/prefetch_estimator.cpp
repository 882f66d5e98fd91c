#include "runtime/prefetch_estimator.h"

#include "atlas/atlas_file.h"
#include "runtime/runtime_policy.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/splitmix64.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/Reduction.h>
#include <ATen/core/grad_mode.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace moeatlas {

namespace {

constexpr int64_t kChunkRows = 8192; // rows per chunk when evaluating (bounds the standardised copy)
constexpr double kAdamBeta1 = 0.9;
constexpr double kAdamBeta2 = 0.999;
constexpr double kAdamEps = 1e-8;
// Default learning rate 0.1 / sqrt(H): a step of Adam moves every weight by about lr, so a logit moves by
// up to lr * sum_i |z_i|, which grows with H (docs/decisions.md, "learned estimators").
constexpr double kDefaultLrScale = 0.1;

std::string shapeText(const at::Tensor& t)
{
    std::string s = "[";
    for (int64_t i = 0; i < t.dim(); ++i)
        s += (i ? ", " : "") + std::to_string(t.size(i));
    return s + "]";
}

void checkFeatures(const at::Tensor& features)
{
    if (!features.defined() || features.dim() != 2 || !at::isFloatingType(features.scalar_type()))
        throw RequestError("features",
            "features must be a floating-point [N, H] tensor, got "
                + (features.defined() ? shapeText(features) + " " + std::string(c10::toString(features.scalar_type()))
                                      : std::string("none")));
    if (features.size(1) < 1)
        throw RequestError("features", "features must have at least one column (H >= 1)");
}

void checkTargets(const at::Tensor& targets, int64_t rows, int numExperts)
{
    if (!targets.defined() || targets.dim() != 2 || !at::isIntegralType(targets.scalar_type(), false))
        throw RequestError("targets",
            "targets must be an integer [N, k] tensor of routed expert ids, got "
                + (targets.defined() ? shapeText(targets) : std::string("none")));
    if (targets.size(0) != rows)
        throw RequestError(
            "targets", "targets have " + std::to_string(targets.size(0)) + " rows, features " + std::to_string(rows));
    if (targets.size(1) < 1 || targets.size(1) > numExperts)
        throw RequestError("targets",
            "targets must hold 1..numExperts (" + std::to_string(numExperts) + ") ids per token, got "
                + std::to_string(targets.size(1)));
    if (targets.numel() == 0)
        return;
    const int64_t lo = targets.min().item<int64_t>();
    const int64_t hi = targets.max().item<int64_t>();
    if (lo < 0 || hi >= numExperts)
        throw RequestError("targets",
            "expert id " + std::to_string(lo < 0 ? lo : hi) + " is out of range [0, " + std::to_string(numExperts)
                + ")");
}

// Row indices (ascending) where mask is true / false.
std::pair<std::vector<int64_t>, std::vector<int64_t>> splitRows(const at::Tensor& mask)
{
    const at::Tensor m = mask.to(at::kCPU).contiguous();
    const bool* p = m.data_ptr<bool>();
    std::pair<std::vector<int64_t>, std::vector<int64_t>> rows;
    for (int64_t i = 0; i < m.numel(); ++i)
        (p[i] ? rows.first : rows.second).push_back(i);
    return rows;
}

at::Tensor indexTensor(const int64_t* begin, int64_t count, const at::Device& device)
{
    // from_blob does not own the memory: clone before moving (to() may return the same storage on the CPU).
    return at::from_blob(const_cast<int64_t*>(begin), { count }, at::kLong).clone().to(device);
}

at::Tensor standardise(const TrainedEstimator& m, const at::Tensor& rows)
{
    return (rows.to(m.featureMean.device(), at::kFloat) - m.featureMean) / m.featureStd;
}

at::Tensor forward(const TrainedEstimator& m, const at::Tensor& z)
{
    if (m.kind == EstimatorKind::Linear)
        return at::addmm(m.bias, z, m.weight.t());
    return at::addmm(m.outBias, at::relu(at::addmm(m.bias, z, m.weight.t())), m.outWeight.t());
}

at::Tensor multiHot(const at::Tensor& ids, int64_t numExperts, const at::Device& device)
{
    const at::Tensor idx = ids.to(device, at::kLong);
    return at::zeros({ idx.size(0), numExperts }, at::TensorOptions().dtype(at::kFloat).device(device))
        .scatter_(1, idx, 1.0);
}

// Sum over rows and experts of softplus(z) - y z.
at::Tensor bceSum(const at::Tensor& logits, const at::Tensor& y)
{
    return at::binary_cross_entropy_with_logits(logits, y, {}, {}, at::Reduction::Sum);
}

std::vector<at::Tensor*> trainable(TrainedEstimator& m)
{
    if (m.kind == EstimatorKind::Linear)
        return { &m.weight, &m.bias };
    return { &m.weight, &m.bias, &m.outWeight, &m.outBias };
}

std::vector<std::string> parameterNames(EstimatorKind kind)
{
    if (kind == EstimatorKind::Linear)
        return { "feature_mean", "feature_std", "weight", "bias" };
    return { "feature_mean", "feature_std", "hidden_weight", "hidden_bias", "output_weight", "output_bias" };
}

at::Tensor uniformTensor(SplitMix64& rng, std::initializer_list<int64_t> shape, double bound)
{
    int64_t n = 1;
    for (int64_t s : shape)
        n *= s;
    std::vector<float> values(static_cast<std::size_t>(n));
    for (float& v : values)
        v = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
    return at::from_blob(values.data(), at::IntArrayRef(shape.begin(), shape.size()), at::kFloat).clone();
}

// Training-token mean and population std of every column, two passes in float64.
void fitStandardisation(TrainedEstimator& m, const at::Tensor& x, const std::vector<int64_t>& rows)
{
    const at::Device device = x.device();
    const auto n = static_cast<int64_t>(rows.size());
    at::Tensor sum = at::zeros({ x.size(1) }, at::TensorOptions().dtype(at::kDouble).device(device));
    for (int64_t s = 0; s < n; s += kChunkRows)
        sum += x.index_select(0, indexTensor(rows.data() + s, std::min(kChunkRows, n - s), device))
                   .to(at::kDouble)
                   .sum(0);
    const at::Tensor mean = sum / static_cast<double>(n);
    at::Tensor sq = at::zeros_like(sum);
    for (int64_t s = 0; s < n; s += kChunkRows)
        sq += (x.index_select(0, indexTensor(rows.data() + s, std::min(kChunkRows, n - s), device)).to(at::kDouble)
            - mean)
                  .square()
                  .sum(0);
    m.featureMean = mean.to(at::kFloat);
    m.featureStd = (sq / static_cast<double>(n)).sqrt().clamp_min(kMinFeatureStd).to(at::kFloat);
}

// Zero weights (hidden layer: He-uniform) and the output bias at the log-odds of each expert's share of the
// training tokens, so that training starts from the frequency baseline's ranking.
void initialise(TrainedEstimator& m, const at::Tensor& targets, const std::vector<int64_t>& rows, int64_t numExperts,
    int hiddenUnits, uint64_t seed)
{
    const at::Device device = m.featureMean.device();
    const int64_t h = m.featureMean.size(0);
    const auto n = static_cast<double>(rows.size());
    at::Tensor counts = at::zeros({ numExperts }, at::kDouble);
    const at::Tensor t = targets.to(at::kCPU, at::kLong).contiguous();
    const int64_t k = t.size(1);
    const int64_t* ids = t.data_ptr<int64_t>();
    std::vector<double> c(static_cast<std::size_t>(numExperts), 0.0);
    for (int64_t r : rows) {
        std::vector<bool> seen(static_cast<std::size_t>(numExperts), false); // duplicate ids count once (multi-hot)
        for (int64_t j = 0; j < k; ++j) {
            const auto e = static_cast<std::size_t>(ids[r * k + j]);
            if (!seen[e])
                c[e] += 1.0;
            seen[e] = true;
        }
    }
    std::vector<float> b(c.size());
    for (std::size_t e = 0; e < c.size(); ++e) {
        const double p = std::clamp(c[e] / n, 0.5 / n, 1.0 - 0.5 / n);
        b[e] = static_cast<float>(std::log(p / (1.0 - p)));
    }
    const at::Tensor outBias = at::from_blob(b.data(), { numExperts }, at::kFloat).clone().to(device);
    const auto f = at::TensorOptions().dtype(at::kFloat).device(device);
    if (m.kind == EstimatorKind::Linear) {
        m.weight = at::zeros({ numExperts, h }, f);
        m.bias = outBias;
        return;
    }
    SplitMix64 rng(seed ^ 0x6e7874657870ull);
    m.weight = uniformTensor(rng, { hiddenUnits, h }, std::sqrt(6.0 / static_cast<double>(h))).to(device);
    m.bias = at::zeros({ hiddenUnits }, f);
    m.outWeight = at::zeros({ numExperts, hiddenUnits }, f);
    m.outBias = outBias;
}

// GEMMs threaded by the BLAS, ATen single-threaded (runtime/thread_pools.h): on the CPU only.
ThreadScope gemmThreads(const at::Device& device, int threads)
{
    const bool cpu = device.is_cpu();
    return { cpu ? 1 : 0, cpu ? (threads > 0 ? threads : at::get_num_threads()) : 0 };
}

void checkOptions(const EstimatorOptions& o)
{
    if (o.epochs < 1)
        throw RequestError("options.epochs", "epochs must be >= 1, got " + std::to_string(o.epochs));
    if (!(o.learningRate >= 0.0) || !std::isfinite(o.learningRate))
        throw RequestError("options.learningRate", "the learning rate must be a positive number (0 = default)");
    if (o.batchSize < 1)
        throw RequestError("options.batchSize", "the batch size must be >= 1, got " + std::to_string(o.batchSize));
    if (!(o.weightDecay >= 0.0) || !std::isfinite(o.weightDecay))
        throw RequestError("options.weightDecay", "the weight decay must be >= 0");
    if (o.maxTrainTokens < 0)
        throw RequestError("options.maxTrainTokens", "maxTrainTokens must be >= 0 (0 = all)");
    if (o.hiddenUnits < 0)
        throw RequestError("options.hiddenUnits", "hiddenUnits must be >= 0 (0 = default)");
    if (o.threads < 0)
        throw RequestError("options.threads", "threads must be >= 0 (0 = ATen's count)");
}

void checkModel(const TrainedEstimator& m)
{
    if (!m.featureMean.defined() || !m.weight.defined() || !m.bias.defined()
        || (m.kind == EstimatorKind::Mlp && (!m.outWeight.defined() || !m.outBias.defined())))
        throw RequestError("model", "the estimator has no parameters (not trained or loaded)");
}

void checkFeatureWidth(const TrainedEstimator& m, const at::Tensor& features)
{
    checkFeatures(features);
    if (features.size(1) != m.inputSize())
        throw RequestError("features",
            "features have " + std::to_string(features.size(1)) + " columns, the estimator was trained on "
                + std::to_string(m.inputSize()));
}

// Mean loss per token over `rows` (NaN when empty), in chunks, no gradient.
double meanLoss(const TrainedEstimator& model, const at::Tensor& features, const at::Tensor& targets,
    const std::vector<int64_t>& rows)
{
    if (rows.empty())
        return std::numeric_limits<double>::quiet_NaN();
    const at::NoGradGuard noGrad;
    const at::Device device = model.featureMean.device();
    const auto n = static_cast<int64_t>(rows.size());
    double sum = 0.0;
    for (int64_t s = 0; s < n; s += kChunkRows) {
        const int64_t b = std::min(kChunkRows, n - s);
        const at::Tensor idx = indexTensor(rows.data() + s, b, features.device());
        const at::Tensor logits = forward(model, standardise(model, features.index_select(0, idx)));
        sum += bceSum(logits, multiHot(targets.index_select(0, idx.to(targets.device())), model.numExperts(), device))
                   .item<double>();
    }
    return sum / static_cast<double>(n);
}

} // namespace

std::string estimatorKindName(EstimatorKind kind)
{
    return kind == EstimatorKind::Linear ? "linear" : "mlp";
}

int64_t TrainedEstimator::inputSize() const
{
    return featureMean.defined() ? featureMean.size(0) : 0;
}

int64_t TrainedEstimator::numExperts() const
{
    const at::Tensor& out = kind == EstimatorKind::Linear ? bias : outBias;
    return out.defined() ? out.size(0) : 0;
}

std::vector<std::pair<std::string, at::Tensor>> TrainedEstimator::namedParameters() const
{
    const std::vector<std::string> names = parameterNames(kind);
    std::vector<at::Tensor> values { featureMean, featureStd, weight, bias };
    if (kind == EstimatorKind::Mlp) {
        values.push_back(outWeight);
        values.push_back(outBias);
    }
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (std::size_t i = 0; i < names.size(); ++i)
        out.emplace_back(names[i], values[i]);
    return out;
}

TrainedEstimator trainEstimator(const at::Tensor& features, const at::Tensor& targets, int numExperts,
    const at::Tensor& trainMask, const EstimatorOptions& options, const StopToken* stop)
{
    if (numExperts < 1)
        throw RequestError("numExperts", "numExperts must be >= 1, got " + std::to_string(numExperts));
    checkOptions(options);
    checkFeatures(features);
    const int64_t n = features.size(0);
    checkTargets(targets, n, numExperts);
    if (!trainMask.defined() || trainMask.dim() != 1 || trainMask.scalar_type() != at::kBool || trainMask.size(0) != n)
        throw RequestError("trainMask",
            "trainMask must be a bool [N] tensor with N = " + std::to_string(n) + " rows, got "
                + (trainMask.defined() ? shapeText(trainMask) : std::string("none")));
    auto [trainRows, heldoutRows] = splitRows(trainMask);
    if (trainRows.empty())
        throw RequestError("trainMask", "the training split is empty: no token is marked for training");
    if (!at::isfinite(features).all().item<bool>())
        throw RequestError("features", "features hold a non-finite value (NaN or infinity)");

    const at::Device device = features.device();
    const ThreadScope threads = gemmThreads(device, options.threads);
    const at::AutoGradMode enableGrad(true);
    const at::Tensor x = features.scalar_type() == at::kFloat ? features : features.to(at::kFloat);
    const at::Tensor ids = targets.to(device, at::kLong);

    // Seeded sub-sample of the training rows (partial Fisher-Yates), kept in ascending order.
    SplitMix64 rng(options.seed * SplitMix64::kGolden + 0x65737469ull);
    if (options.maxTrainTokens > 0 && static_cast<int64_t>(trainRows.size()) > options.maxTrainTokens) {
        const auto keep = static_cast<std::size_t>(options.maxTrainTokens);
        for (std::size_t i = 0; i < keep; ++i)
            std::swap(trainRows[i], trainRows[i + rng.below(trainRows.size() - i)]);
        trainRows.resize(keep);
        std::sort(trainRows.begin(), trainRows.end());
    }

    TrainedEstimator m;
    m.kind = options.kind;
    const int hiddenUnits = options.hiddenUnits > 0 ? options.hiddenUnits : std::min(2 * numExperts, 256);
    fitStandardisation(m, x, trainRows);
    initialise(m, ids, trainRows, numExperts, hiddenUnits, options.seed);

    std::vector<at::Tensor*> params = trainable(m);
    std::vector<at::Tensor> adamM, adamV;
    for (at::Tensor* p : params) {
        p->set_requires_grad(true);
        adamM.push_back(at::zeros_like(*p));
        adamV.push_back(at::zeros_like(*p));
    }
    const std::vector<bool> decays = m.kind == EstimatorKind::Linear ? std::vector<bool> { true, false }
                                                                     : std::vector<bool> { true, false, true, false };

    const double lr = options.learningRate > 0.0 ? options.learningRate
                                                 : kDefaultLrScale / std::sqrt(static_cast<double>(x.size(1)));
    std::vector<int64_t> order = trainRows;
    const auto rows = static_cast<int64_t>(order.size());
    int64_t step = 0;
    for (int epoch = 0; epoch < options.epochs; ++epoch) {
        for (std::size_t i = order.size(); i > 1; --i) // Fisher-Yates, a fresh order per epoch
            std::swap(order[i - 1], order[rng.below(i)]);
        for (int64_t s = 0; s < rows; s += options.batchSize) {
            if (stop && stop->stopRequested())
                throw Cancelled();
            const int64_t b = std::min<int64_t>(options.batchSize, rows - s);
            const at::Tensor idx = indexTensor(order.data() + s, b, device);
            const at::Tensor z = standardise(m, x.index_select(0, idx));
            const at::Tensor y = multiHot(ids.index_select(0, idx), numExperts, device);
            const at::Tensor loss = bceSum(forward(m, z), y) / static_cast<double>(b);
            loss.backward();
            ++step;
            const at::NoGradGuard noGrad;
            const double c1 = 1.0 - std::pow(kAdamBeta1, static_cast<double>(step));
            const double c2 = 1.0 - std::pow(kAdamBeta2, static_cast<double>(step));
            for (std::size_t p = 0; p < params.size(); ++p) {
                at::Tensor& value = *params[p];
                at::Tensor g = value.mutable_grad();
                adamM[p].mul_(kAdamBeta1).add_(g, 1.0 - kAdamBeta1);
                adamV[p].mul_(kAdamBeta2).addcmul_(g, g, 1.0 - kAdamBeta2);
                if (decays[p] && options.weightDecay > 0.0)
                    value.mul_(1.0 - lr * options.weightDecay);
                value.addcdiv_(adamM[p], (adamV[p] / c2).sqrt_().add_(kAdamEps), -lr / c1);
                g.zero_();
            }
        }
    }
    for (at::Tensor* p : params)
        *p = p->detach().set_requires_grad(false);

    m.options = options;
    m.options.kind = m.kind;
    m.options.hiddenUnits = m.kind == EstimatorKind::Mlp ? hiddenUnits : 0;
    m.options.learningRate = lr;
    m.epochs = options.epochs;
    m.trainTokens = rows;
    m.heldoutTokens = static_cast<int64_t>(heldoutRows.size());
    m.trainLoss = meanLoss(m, x, ids, trainRows);
    m.heldoutLoss = meanLoss(m, x, ids, heldoutRows);
    return m;
}

at::Tensor estimatorLogits(const TrainedEstimator& model, const at::Tensor& features)
{
    checkModel(model);
    checkFeatureWidth(model, features);
    const at::NoGradGuard noGrad;
    const ThreadScope threads = gemmThreads(model.featureMean.device(), 0);
    const int64_t n = features.size(0);
    std::vector<at::Tensor> parts;
    for (int64_t s = 0; s < n; s += kChunkRows)
        parts.push_back(forward(model, standardise(model, features.slice(0, s, std::min(n, s + kChunkRows)))));
    if (parts.empty())
        return at::zeros({ 0, model.numExperts() }, model.featureMean.options());
    return at::cat(parts, 0);
}

at::Tensor predictTopB(const TrainedEstimator& model, const at::Tensor& features, int budget)
{
    checkModel(model);
    if (budget < 1 || budget > model.numExperts())
        throw RequestError("budget",
            "the budget must be in [1, " + std::to_string(model.numExperts()) + "], got " + std::to_string(budget));
    const at::Tensor logits = estimatorLogits(model, features);
    // Stable descending sort: equal logits keep ascending expert order.
    const at::Tensor order = std::get<1>(logits.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
    return order.slice(1, 0, budget).to(at::kCPU, at::kInt).contiguous();
}

EstimatorLossGradient estimatorLossAndGradient(
    const TrainedEstimator& model, const at::Tensor& features, const at::Tensor& targets)
{
    checkModel(model);
    checkFeatureWidth(model, features);
    checkTargets(targets, features.size(0), static_cast<int>(model.numExperts()));
    if (features.size(0) == 0)
        throw RequestError("features", "the loss needs at least one token");
    const at::AutoGradMode enableGrad(true);
    TrainedEstimator m = model;
    std::vector<at::Tensor*> params = trainable(m);
    for (at::Tensor* p : params)
        *p = p->detach().clone().set_requires_grad(true);
    const at::Device device = m.featureMean.device();
    const at::Tensor loss = bceSum(forward(m, standardise(m, features)), multiHot(targets, m.numExperts(), device))
        / static_cast<double>(features.size(0));
    loss.backward();
    EstimatorLossGradient out;
    out.loss = loss.item<double>();
    const std::vector<std::string> names = parameterNames(m.kind);
    for (std::size_t i = 0; i < params.size(); ++i)
        out.gradients.emplace_back(names[i + 2], params[i]->grad().detach().clone());
    return out;
}

double estimatorLoss(
    const TrainedEstimator& model, const at::Tensor& features, const at::Tensor& targets, const at::Tensor& mask)
{
    checkModel(model);
    checkFeatureWidth(model, features);
    checkTargets(targets, features.size(0), static_cast<int>(model.numExperts()));
    std::vector<int64_t> rows;
    if (mask.defined()) {
        if (mask.dim() != 1 || mask.scalar_type() != at::kBool || mask.size(0) != features.size(0))
            throw RequestError("mask", "the mask must be a bool [N] tensor, got " + shapeText(mask));
        rows = splitRows(mask).first;
    } else {
        rows.resize(static_cast<std::size_t>(features.size(0)));
        for (std::size_t i = 0; i < rows.size(); ++i)
            rows[i] = static_cast<int64_t>(i);
    }
    const ThreadScope threads = gemmThreads(model.featureMean.device(), 0);
    return meanLoss(model, features, targets, rows);
}

AtlasLearnedEstimator toAtlas(const TrainedEstimator& model)
{
    checkModel(model);
    AtlasLearnedEstimator out;
    for (const auto& [name, value] : model.namedParameters()) {
        const at::Tensor v = value.detach().to(at::kCPU, at::kDouble).contiguous();
        AtlasArray a;
        a.name = name;
        for (int64_t s : v.sizes())
            a.dims.push_back(static_cast<uint64_t>(s));
        a.values.assign(v.data_ptr<double>(), v.data_ptr<double>() + v.numel());
        out.parameters.push_back(std::move(a));
    }
    out.trainLoss = model.trainLoss;
    out.heldoutLoss = model.heldoutLoss;
    out.epochs = model.epochs;
    out.trainTokens = model.trainTokens;
    const EstimatorOptions& o = model.options;
    out.optionsJson = nlohmann::json {
        { "kind", model.kind == EstimatorKind::Mlp ? "mlp" : "linear" }, { "hidden_units", o.hiddenUnits },
        { "epochs", o.epochs }, { "learning_rate", o.learningRate }, { "batch_size", o.batchSize },
        { "weight_decay", o.weightDecay }, { "seed", o.seed }, { "max_train_tokens", o.maxTrainTokens },
        { "optimizer", "adam" }, { "loss", "binary cross-entropy" }
    }.dump();
    return out;
}

TrainedEstimator fromAtlas(const AtlasLearnedEstimator& stored, EstimatorKind kind, const std::string& where)
{
    const std::vector<std::string> names = parameterNames(kind);
    auto find = [&](const std::string& name) -> const AtlasArray& {
        for (const AtlasArray& a : stored.parameters)
            if (a.name == name)
                return a;
        throw InputError(where + ": the " + estimatorKindName(kind) + " estimator has no parameter '" + name + "'");
    };
    // Sizes: H from feature_mean, E from the last bias, U (mlp) from the hidden bias.
    const AtlasArray& mean = find("feature_mean");
    const AtlasArray& outBias = find(names.back());
    const AtlasArray& hiddenBias = find(names[3]);
    if (mean.dims.size() != 1 || outBias.dims.size() != 1 || hiddenBias.dims.size() != 1 || mean.dims[0] == 0
        || outBias.dims[0] == 0 || hiddenBias.dims[0] == 0)
        throw InputError(where + ": feature_mean and the biases must be non-empty vectors");
    const uint64_t h = mean.dims[0], e = outBias.dims[0], u = hiddenBias.dims[0];
    std::vector<std::vector<uint64_t>> shapes = { { h }, { h } };
    if (kind == EstimatorKind::Linear)
        shapes.insert(shapes.end(), { { e, h }, { e } });
    else
        shapes.insert(shapes.end(), { { u, h }, { u }, { e, u }, { e } });
    std::vector<at::Tensor> values;
    for (std::size_t i = 0; i < names.size(); ++i) {
        const AtlasArray& a = find(names[i]);
        uint64_t count = 1;
        for (uint64_t d : a.dims)
            count *= d;
        if (a.dims != shapes[i] || a.values.size() != count) {
            std::string expected;
            for (uint64_t d : shapes[i])
                expected += (expected.empty() ? "" : ", ") + std::to_string(d);
            throw InputError(
                where + ": parameter '" + names[i] + "' has the wrong shape (expected [" + expected + "])");
        }
        for (double v : a.values)
            if (!std::isfinite(v) || (i == 1 && !(v > 0.0)))
                throw InputError(where + ": parameter '" + names[i] + "' holds a non-finite"
                    + (i == 1 ? " or non-positive" : "") + " value");
        std::vector<int64_t> dims(a.dims.begin(), a.dims.end());
        values.push_back(at::from_blob(const_cast<double*>(a.values.data()), dims, at::kDouble).to(at::kFloat));
    }
    TrainedEstimator m;
    m.kind = kind;
    m.featureMean = values[0];
    m.featureStd = values[1];
    m.weight = values[2];
    m.bias = values[3];
    if (kind == EstimatorKind::Mlp) {
        m.outWeight = values[4];
        m.outBias = values[5];
    }
    m.trainLoss = stored.trainLoss;
    m.heldoutLoss = stored.heldoutLoss;
    m.epochs = stored.epochs;
    m.trainTokens = stored.trainTokens;
    return m;
}

} // namespace moeatlas
