#include "runtime/fisher.h"

#include "model/blocks.h"
#include "model/layer_weights.h"
#include "util/error.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>

namespace moeatlas {

namespace {

// One MoE layer's leaves (what gradients are taken of) and its running sums over samples (float64).
struct LayerState {
    int layer = 0;
    at::Tensor mask; // [E, I] ones, requires_grad (mask form), else undefined
    at::Tensor maskSum, weightSum, absSum; // [E, I] float64, undefined when not computed
};

void checkInput(const ModelSpec& spec, std::span<const int32_t> tokens, std::span<const int64_t> offsets)
{
    const auto T = static_cast<int64_t>(tokens.size());
    if (offsets.size() < 2 || offsets.front() != 0 || offsets.back() != T)
        throw InputError("sequence offsets must start at 0 and end at the token count");
    for (std::size_t i = 0; i + 1 < offsets.size(); ++i)
        if (offsets[i + 1] - offsets[i] < 2)
            throw InputError("sequence " + std::to_string(i)
                + " has fewer than 2 tokens: a causal-LM loss needs at least one predicted token");
    for (std::size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] < 0 || tokens[i] >= spec.vocabSize)
            throw InputError("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i)
                + " is outside the vocabulary [0, " + std::to_string(spec.vocabSize) + ")");
}

std::vector<double> toVector(const at::Tensor& sum, int64_t samples)
{
    if (!sum.defined())
        return {};
    const at::Tensor mean = (sum / static_cast<double>(samples)).contiguous();
    return { mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel() };
}

void clearGrad(const at::Tensor& t)
{
    if (t.defined())
        t.mutable_grad().reset();
}

} // namespace

FisherResult computeFisher(const Checkpoint& checkpoint, const ModelSpec& spec, std::span<const int32_t> tokens,
    std::span<const int64_t> seqOffsets, const FisherOptions& options, const ProgressFn& progress,
    const StopToken* stop)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (!options.maskForm && !options.weightForm && !options.gradAbs)
        throw InputError("fisher: no score asked for (mask form, weight form or grad-abs)");
    checkInput(spec, tokens, seqOffsets);
    if (options.threads > 0)
        at::set_num_threads(options.threads);
    const bool weightGrads = options.weightForm || options.gradAbs;
    const int64_t E = spec.router.numExperts, I = spec.moeIntermediate, H = spec.hiddenSize;
    const auto f64 = at::TensorOptions().dtype(at::kDouble);

    // Resident mode: every layer loaded once, fp32, on the CPU (no page release: the mapping is
    // read once per tensor anyway). Loaded without recording so the weights are plain leaves.
    const WeightLoader loader(checkpoint, spec, WeightLoadOptions { c10::Device(c10::kCPU), at::kFloat, false });
    std::vector<LayerWeights> weights;
    std::vector<LayerState> states;
    at::Tensor norm, head;
    {
        const at::NoGradGuard noGrad;
        for (int l = 0; l < spec.numLayers; ++l)
            weights.push_back(loader.loadLayer(l));
        norm = loader.finalNorm();
        head = loader.lmHead();
    }
    for (LayerWeights& w : weights) {
        if (!w.moe)
            continue;
        LayerState s;
        s.layer = w.layer;
        if (options.maskForm) {
            s.mask = at::ones({ E, I }, at::kFloat).requires_grad_(true);
            s.maskSum = at::zeros({ E, I }, f64);
        }
        if (weightGrads) {
            w.gateUp.requires_grad_(true);
            w.down.requires_grad_(true);
        }
        if (options.weightForm)
            s.weightSum = at::zeros({ E, I }, f64);
        if (options.gradAbs)
            s.absSum = at::zeros({ E, I }, f64);
        states.push_back(std::move(s));
    }

    FisherResult result;
    result.samples = static_cast<int64_t>(seqOffsets.size()) - 1;
    result.tokens = static_cast<int64_t>(tokens.size());
    result.tokenNll.assign(tokens.size(), std::numeric_limits<float>::quiet_NaN());
    std::map<int64_t, RotaryCache> rotary;
    const at::AutoGradMode gradMode(true);
    for (int64_t n = 0; n < result.samples; ++n) {
        if (stop && stop->stopRequested())
            throw Cancelled();
        const int64_t begin = seqOffsets[static_cast<std::size_t>(n)];
        const int64_t S = seqOffsets[static_cast<std::size_t>(n) + 1] - begin;
        const std::vector<int32_t> ids(tokens.begin() + begin, tokens.begin() + begin + S);
        auto rope = rotary.find(S);
        if (rope == rotary.end())
            rope = rotary.emplace(S, buildRotaryCache(spec, S, at::TensorOptions().dtype(at::kFloat))).first;

        // The executor's decoder layer (runtime/executor.cpp) on one sequence, recording for autograd.
        at::Tensor x = loader.embed(ids);
        std::size_t moeIndex = 0;
        for (const LayerWeights& w : weights) {
            const bool sliding = spec.layers[static_cast<std::size_t>(w.layer)].slidingWindow;
            at::Tensor h = x + attention(spec, w, rmsNorm(x, w.inputNorm, spec.rmsNormEps), 1, rope->second, sliding);
            const at::Tensor hn = rmsNorm(h, w.postAttentionNorm, spec.rmsNormEps);
            if (w.moe) {
                MoeOptions moe;
                moe.unitMask = states[moeIndex++].mask;
                x = h + moeForward(spec, w, hn, moe, nullptr);
            } else {
                x = h + denseMlp(w, hn);
            }
        }
        const at::Tensor logits = at::linear(rmsNorm(x, norm, spec.rmsNormEps), head).narrow(0, 0, S - 1);
        std::vector<int64_t> next(ids.begin() + 1, ids.end());
        const at::Tensor target = at::tensor(at::ArrayRef<int64_t>(next), at::kLong);
        const at::Tensor nll = at::cross_entropy_loss(logits.to(at::kFloat), target, {}, at::Reduction::None);
        const at::Tensor loss = nll.mean();
        loss.backward();
        result.sampleLoss.push_back(loss.item<double>());
        const at::Tensor nllValues = nll.detach().contiguous();
        std::copy_n(nllValues.data_ptr<float>(), S - 1, result.tokenNll.begin() + begin);

        for (std::size_t i = 0; i < states.size(); ++i) {
            LayerState& s = states[i];
            const LayerWeights& w = weights[static_cast<std::size_t>(s.layer)];
            if (s.mask.defined() && s.mask.grad().defined())
                s.maskSum.add_(s.mask.grad().to(at::kDouble).square());
            if (weightGrads && w.gateUp.grad().defined() && w.down.grad().defined()) {
                const at::Tensor gu = w.gateUp.grad().to(at::kDouble); // [E, 2I, H], gate rows first
                const at::Tensor gd = w.down.grad().to(at::kDouble); // [E, H, I]
                const at::Tensor gate = gu.narrow(1, 0, I), up = gu.narrow(1, I, I);
                if (s.weightSum.defined())
                    s.weightSum.add_(gate.square().sum(-1) + up.square().sum(-1) + gd.square().sum(1));
                if (s.absSum.defined())
                    s.absSum.add_(
                        (gate.abs().sum(-1) + up.abs().sum(-1) + gd.abs().sum(1)) / static_cast<double>(3 * H));
            }
            clearGrad(s.mask);
            clearGrad(w.gateUp);
            clearGrad(w.down);
        }
        if (progress) {
            Progress p;
            p.stage = "sample " + std::to_string(n + 1) + "/" + std::to_string(result.samples);
            p.done = n + 1;
            p.total = result.samples;
            if (!progress(p))
                throw Cancelled();
        }
    }

    for (const LayerState& s : states) {
        FisherLayer out;
        out.layer = s.layer;
        out.numExperts = E;
        out.intermediate = I;
        out.mask = toVector(s.maskSum, result.samples);
        out.weight = toVector(s.weightSum, result.samples);
        out.gradAbs = toVector(s.absSum, result.samples);
        result.layers.push_back(std::move(out));
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
}

} // namespace moeatlas
