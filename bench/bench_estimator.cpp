// bench_estimator: the training cost of one learned expert estimator (runtime/prefetch_estimator.h),
// i.e. one (layer, lookahead) of `capture --prefetch linear,mlp`, on synthetic hidden states of a
// given shape. Labels: top-k of x W^T + noise (a learnable rule), so the held-out hit rate against
// the frequency baseline is printed too. Two thirds of the tokens are the training split.
//
//   bench_estimator [--tokens 65536] [--hidden 2048] [--experts 128] [--top-k 8] [--kind linear|mlp]
//                   [--epochs 8] [--max-train-tokens 16384] [--hidden-units 0] [--batch 512]
//                   [--threads 2] [--noise 1.0] [--seed 1]
#include "runtime/prefetch_estimator.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace moeatlas;

namespace {

double hitRate(const at::Tensor& predicted, const at::Tensor& truth, const at::Tensor& rows)
{
    const at::Tensor p = predicted.to(at::kLong).index_select(0, rows), t = truth.index_select(0, rows);
    // |P ∩ T| per row by comparing every pair.
    const at::Tensor hits = (p.unsqueeze(2) == t.unsqueeze(1)).sum({ 1, 2 }).to(at::kDouble);
    return (hits / static_cast<double>(t.size(1))).mean().item<double>();
}

} // namespace

int main(int argc, char** argv)
{
    int64_t tokens = 65536, hidden = 2048;
    int experts = 128, topK = 8, threads = 2;
    double noise = 1.0;
    EstimatorOptions o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--tokens") tokens = std::stoll(v);
        else if (a == "--hidden") hidden = std::stoll(v);
        else if (a == "--experts") experts = std::stoi(v);
        else if (a == "--top-k") topK = std::stoi(v);
        else if (a == "--kind") o.kind = v == "mlp" ? EstimatorKind::Mlp : EstimatorKind::Linear;
        else if (a == "--epochs") o.epochs = std::stoi(v);
        else if (a == "--max-train-tokens") o.maxTrainTokens = std::stoll(v);
        else if (a == "--hidden-units") o.hiddenUnits = std::stoi(v);
        else if (a == "--batch") o.batchSize = std::stoi(v);
        else if (a == "--wd") o.weightDecay = std::stod(v);
        else if (a == "--lr") o.learningRate = std::stod(v);
        else if (a == "--threads") threads = std::stoi(v);
        else if (a == "--noise") noise = std::stod(v);
        else if (a == "--seed") o.seed = std::stoull(v);
        else {
            std::fprintf(stderr, "unknown option %s\n", a.c_str());
            return 2;
        }
    }
    o.threads = threads;
    at::set_num_threads(threads);
    at::manual_seed(static_cast<uint64_t>(o.seed));
    const at::Tensor x = at::randn({ tokens, hidden });
    const at::Tensor w = at::randn({ experts, hidden }) / std::sqrt(static_cast<double>(hidden));
    const at::Tensor scores = x.matmul(w.t()) + noise * at::randn({ tokens, experts });
    const at::Tensor targets = std::get<1>(scores.topk(topK, 1)).contiguous();
    const at::Tensor mask = at::arange(tokens) < tokens * 2 / 3;

    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    const TrainedEstimator m = trainEstimator(x, targets, experts, mask, o);
    const auto t1 = std::chrono::steady_clock::now();
    const std::clock_t c1 = std::clock();
    const at::Tensor pred = predictTopB(m, x, topK);
    const auto t2 = std::chrono::steady_clock::now();
    const std::clock_t c2 = std::clock();

    const at::Tensor held = mask.logical_not().nonzero().squeeze(1);
    const at::Tensor counts = at::zeros({ experts }, at::kLong).index_add_(
        0, targets.index_select(0, mask.nonzero().squeeze(1)).flatten(), at::ones({ mask.sum().item<int64_t>() * topK }, at::kLong));
    const at::Tensor freq = std::get<1>(counts.to(at::kDouble).sort(true, 0, true)).slice(0, 0, topK);
    const double freqHit = hitRate(freq.unsqueeze(0).expand({ tokens, topK }), targets, held);
    std::printf("%s T=%lld H=%lld E=%d k=%d threads=%d epochs=%d trained on %lld tokens (batch %d): "
                "train %.2f s (CPU %.2f s), predict all %.2f s (CPU %.2f s); loss train %.4f held-out %.4f; held-out hit %.4f "
                "(frequency %.4f)\n",
        estimatorKindName(o.kind).c_str(), static_cast<long long>(tokens), static_cast<long long>(hidden), experts,
        topK, threads, o.epochs, static_cast<long long>(m.trainTokens), o.batchSize,
        std::chrono::duration<double>(t1 - t0).count(), static_cast<double>(c1 - c0) / CLOCKS_PER_SEC,
        std::chrono::duration<double>(t2 - t1).count(), static_cast<double>(c2 - c1) / CLOCKS_PER_SEC, m.trainLoss,
        m.heldoutLoss, hitRate(pred, targets, held), freqHit);
    return 0;
}
