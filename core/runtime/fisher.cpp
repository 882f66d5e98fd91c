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
    // [G, E, I] float64 sums over samples, undefined when not computed.
    at::Tensor maskSum, weightSum, absSum, activationSum;
    at::Tensor sampleActivation; // [E, I] float64: one sample's sum of |a| (reset per sample)
    at::Tensor expertTokens; // [G, E] int64
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

std::vector<double> values(const at::Tensor& t)
{
    if (!t.defined())
        return {};
    const at::Tensor c = t.to(at::kDouble).contiguous();
    return { c.data_ptr<double>(), c.data_ptr<double>() + c.numel() };
}

// [G, E, I] sums over samples -> per-group means (divided by each group's sample count).
std::vector<double> groupMeans(const at::Tensor& sum, const at::Tensor& groupSamples)
{
    if (!sum.defined())
        return {};
    return values(sum / groupSamples.to(at::kDouble).view({ -1, 1, 1 }));
}

// Validates sampleGroup; returns the group of every sample and G.
std::vector<int> sampleGroups(std::span<const int> sampleGroup, int64_t samples, int& groups)
{
    if (sampleGroup.empty()) {
        groups = 1;
        return std::vector<int>(static_cast<std::size_t>(samples), 0);
    }
    if (static_cast<int64_t>(sampleGroup.size()) != samples)
        throw InputError("sample groups: " + std::to_string(sampleGroup.size()) + " entries for "
            + std::to_string(samples) + " sequences");
    groups = 0;
    for (const int g : sampleGroup) {
        if (g < 0)
            throw InputError("sample groups: negative group id " + std::to_string(g));
        groups = std::max(groups, g + 1);
    }
    std::vector<int64_t> count(static_cast<std::size_t>(groups), 0);
    for (const int g : sampleGroup)
        ++count[static_cast<std::size_t>(g)];
    for (int g = 0; g < groups; ++g)
        if (count[static_cast<std::size_t>(g)] == 0)
            throw InputError("sample groups: group " + std::to_string(g) + " has no sequence");
    return { sampleGroup.begin(), sampleGroup.end() };
}

void clearGrad(const at::Tensor& t)
{
    if (t.defined())
        t.mutable_grad().reset();
}

} // namespace

FisherResult computeFisher(const Checkpoint& checkpoint, const ModelSpec& spec, std::span<const int32_t> tokens,
    std::span<const int64_t> seqOffsets, std::span<const int> sampleGroup, const FisherOptions& options,
    const ProgressFn& progress, const StopToken* stop)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (!options.maskForm && !options.weightForm && !options.gradAbs)
        throw InputError("fisher: no score asked for (mask form, weight form or grad-abs)");
    checkInput(spec, tokens, seqOffsets);
    const int64_t samples = static_cast<int64_t>(seqOffsets.size()) - 1;
    int G = 1;
    const std::vector<int> group = sampleGroups(sampleGroup, samples, G);
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
            s.maskSum = at::zeros({ G, E, I }, f64);
        }
        if (weightGrads) {
            w.gateUp.requires_grad_(true);
            w.down.requires_grad_(true);
        }
        if (options.weightForm)
            s.weightSum = at::zeros({ G, E, I }, f64);
        if (options.gradAbs)
            s.absSum = at::zeros({ G, E, I }, f64);
        if (options.activation) {
            s.activationSum = at::zeros({ G, E, I }, f64);
            s.sampleActivation = at::zeros({ E, I }, f64);
        }
        s.expertTokens = at::zeros({ G, E }, at::kLong);
        states.push_back(std::move(s));
    }

    FisherResult result;
    result.samples = samples;
    result.groups = G;
    result.groupSamples.assign(static_cast<std::size_t>(G), 0);
    result.groupTokens.assign(static_cast<std::size_t>(G), 0);
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
        const int g = group[static_cast<std::size_t>(n)];
        ++result.groupSamples[static_cast<std::size_t>(g)];
        result.groupTokens[static_cast<std::size_t>(g)] += S;
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
                LayerState& state = states[moeIndex++];
                MoeOptions moe;
                moe.unitMask = state.mask;
                moe.unitActivationSum = state.sampleActivation;
                RoutingRecord routing;
                x = h + moeForward(spec, w, hn, moe, &routing);
                state.expertTokens[g].add_(
                    at::bincount(routing.topkIds.reshape({ -1 }).to(at::kLong), {}, E).to(at::kLong));
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
                s.maskSum[g].add_(s.mask.grad().to(at::kDouble).square());
            if (s.activationSum.defined()) {
                s.activationSum[g].add_(s.sampleActivation);
                s.sampleActivation.zero_();
            }
            if (weightGrads && w.gateUp.grad().defined() && w.down.grad().defined()) {
                const at::Tensor gu = w.gateUp.grad().to(at::kDouble); // [E, 2I, H], gate rows first
                const at::Tensor gd = w.down.grad().to(at::kDouble); // [E, H, I]
                const at::Tensor gate = gu.narrow(1, 0, I), up = gu.narrow(1, I, I);
                if (s.weightSum.defined())
                    s.weightSum[g].add_(gate.square().sum(-1) + up.square().sum(-1) + gd.square().sum(1));
                if (s.absSum.defined())
                    s.absSum[g].add_(
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

    const at::Tensor perGroup = at::tensor(at::ArrayRef<int64_t>(result.groupSamples), at::kLong);
    for (const LayerState& s : states) {
        const LayerWeights& w = weights[static_cast<std::size_t>(s.layer)];
        FisherLayer out;
        out.layer = s.layer;
        out.numExperts = E;
        out.intermediate = I;
        out.mask = groupMeans(s.maskSum, perGroup);
        out.weight = groupMeans(s.weightSum, perGroup);
        out.gradAbs = groupMeans(s.absSum, perGroup);
        if (s.activationSum.defined())
            out.activation = values(s.activationSum / s.expertTokens.clamp_min(1).to(at::kDouble).unsqueeze(-1));
        const at::Tensor counts = s.expertTokens.contiguous();
        out.expertTokens.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
        if (options.magnitude) {
            const at::NoGradGuard noGrad;
            const at::Tensor gu = w.gateUp.detach().to(at::kDouble);
            out.magnitude = values(gu.narrow(1, 0, I).square().sum(-1) + gu.narrow(1, I, I).square().sum(-1)
                + w.down.detach().to(at::kDouble).square().sum(1));
        }
        result.layers.push_back(std::move(out));
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
}

} // namespace moeatlas
