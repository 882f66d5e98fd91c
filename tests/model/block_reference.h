// Literal fp64 references of the decoder blocks for tst_blocks (test-only header): loops over sequences,
// heads, query positions and experts, softmax and SiLU written out, visibility as key ranges, top-k by
// repeated selection, every expert dense, RoPE tables from transformers' modeling_rope_utils formulas.
// Each takes a Fault that makes it deliberately wrong in one named way, for the suite's negative checks.
#pragma once

#include "model/blocks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace moeatlas::blockref {

// fp64 copy (the same tensor when already fp64, so that gradients reach a reference's fp64 leaves).
inline at::Tensor dbl(const at::Tensor& t)
{
    return t.defined() ? t.to(at::kDouble) : t;
}

inline at::Tensor rnd(std::vector<int64_t> shape, double stddev)
{
    return at::randn(shape, at::kFloat) * stddev;
}

// --- RMSNorm -----------------------------------------------------------------------------------

// Each row (last dimension): y = x / sqrt(sum(x^2) / n + eps) * w. `centered` subtracts the row mean
// first (a LayerNorm without bias: the wrong reference).
inline at::Tensor referenceRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps, bool centered = false)
{
    const auto n = static_cast<double>(x.size(-1));
    at::Tensor v = dbl(x);
    if (centered)
        v = v - v.sum(-1, true) / n;
    const at::Tensor meanSquare = (v * v).sum(-1, true) / n;
    return v / at::sqrt(meanSquare + eps) * dbl(weight);
}

// --- RoPE tables ---------------------------------------------------------------------------------

// transformers' modeling_rope_utils, evaluated in double.
struct ReferenceRope {
    std::vector<double> invFreq;
    double scaling = 1.0;
};

inline ReferenceRope referenceRopeTables(const ModelSpec& s, int64_t seqLen)
{
    const RopeSpec& r = s.rope;
    const auto dim = static_cast<int64_t>(static_cast<double>(s.headDim) * r.partialRotaryFactor);
    double base = r.theta;
    if (r.type == "dynamic") {
        const double len = static_cast<double>(std::max(seqLen, s.maxPositionEmbeddings));
        base *= std::pow(r.factor * len / static_cast<double>(s.maxPositionEmbeddings) - (r.factor - 1.0),
            static_cast<double>(dim) / static_cast<double>(dim - 2));
    }
    ReferenceRope t;
    for (int64_t i = 0; i < dim / 2; ++i)
        t.invFreq.push_back(1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim)));
    if (r.type == "linear") {
        for (double& f : t.invFreq)
            f /= r.factor;
    } else if (r.type == "yarn") {
        const double factor = r.factor;
        const auto mscale = [](double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
        if (r.attentionFactor)
            t.scaling = *r.attentionFactor;
        else if (r.mscale != 0.0 && r.mscaleAllDim != 0.0)
            t.scaling = mscale(factor, r.mscale) / mscale(factor, r.mscaleAllDim);
        else
            t.scaling = mscale(factor, 1.0);
        const double orig = static_cast<double>(r.originalMaxPositionEmbeddings);
        const auto correction = [&](double rotations) {
            return static_cast<double>(dim) * std::log(orig / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
        };
        double low = correction(r.betaFast), high = correction(r.betaSlow);
        if (r.truncate) {
            low = std::floor(low);
            high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, static_cast<double>(dim - 1));
        if (low == high)
            high += 0.001;
        for (int64_t i = 0; i < dim / 2; ++i) {
            const double extrapolation = t.invFreq[static_cast<std::size_t>(i)];
            const double interpolation = extrapolation / factor;
            const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
            const double keep = 1.0 - ramp; // the share of extrapolation
            t.invFreq[static_cast<std::size_t>(i)] = interpolation * (1.0 - keep) + extrapolation * keep;
        }
    } else if (r.type == "llama3") {
        const double orig = static_cast<double>(r.originalMaxPositionEmbeddings);
        for (double& f : t.invFreq) {
            const double wavelen = 2.0 * M_PI / f;
            if (wavelen > orig / r.lowFreqFactor) {
                f /= r.factor;
            } else if (wavelen >= orig / r.highFreqFactor) {
                const double smooth = (orig / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
                f = (1.0 - smooth) * f / r.factor + smooth * f;
            }
        }
    }
    return t;
}

// Element-wise relative difference: the inverse frequencies span several decades, so each entry is held
// to the bar relative to its own magnitude (a stricter form of the same bar).
inline double relPerElement(const std::vector<float>& got, const std::vector<double>& ref)
{
    if (got.size() != ref.size())
        return INFINITY;
    double m = 0;
    for (std::size_t i = 0; i < ref.size(); ++i)
        m = std::max(m, std::abs(static_cast<double>(got[i]) - ref[i]) / std::abs(ref[i]));
    return m;
}

inline ModelSpec ropeSpec(const std::string& type, int64_t headDim, double theta)
{
    ModelSpec s;
    s.headDim = headDim;
    s.maxPositionEmbeddings = 256;
    s.rope.type = type;
    s.rope.theta = theta;
    return s;
}

struct RopeCase {
    const char* name;
    ModelSpec spec;
    int64_t seqLen;
    ModelSpec wrong; // a plausible misreading of the same configuration
};

inline std::vector<RopeCase> ropeCases()
{
    std::vector<RopeCase> c;
    const auto add
        = [&](const char* name, const ModelSpec& s, int64_t seqLen, const std::function<void(ModelSpec&)>& misread) {
              ModelSpec wrong = s;
              misread(wrong);
              c.push_back({ name, s, seqLen, wrong });
          };
    add("default, d 16", ropeSpec("default", 16, 10000.0), 32, [](ModelSpec& s) { s.rope.theta = 20000.0; });
    add("default, d 64, theta 1e6", ropeSpec("default", 64, 1e6), 32, [](ModelSpec& s) { s.rope.theta = 1e5; });
    ModelSpec partial = ropeSpec("default", 64, 10000.0);
    partial.rope.partialRotaryFactor = 0.5;
    add("partial rotary 0.5", partial, 32, [](ModelSpec& s) { s.rope.partialRotaryFactor = 1.0; });
    ModelSpec linear = ropeSpec("linear", 32, 10000.0);
    linear.rope.factor = 4.0;
    add("linear x4", linear, 32, [](ModelSpec& s) { s.rope.type = "default"; });
    ModelSpec dynamic = ropeSpec("dynamic", 32, 10000.0);
    dynamic.rope.factor = 2.0;
    add("dynamic, within max positions", dynamic, 200, [](ModelSpec& s) { s.rope.type = "linear"; });
    add("dynamic, beyond max positions", dynamic, 1000, [](ModelSpec& s) { s.rope.type = "default"; });
    ModelSpec yarn = ropeSpec("yarn", 64, 10000.0);
    yarn.rope.factor = 4.0;
    yarn.rope.originalMaxPositionEmbeddings = 64;
    add("yarn x4", yarn, 32, [](ModelSpec& s) { s.rope.type = "linear"; });
    ModelSpec yarnUntruncated = yarn;
    yarnUntruncated.rope.truncate = false;
    yarnUntruncated.rope.betaFast = 16.0;
    yarnUntruncated.rope.betaSlow = 2.0;
    add("yarn, betas 16/2, not truncated", yarnUntruncated, 32, [](ModelSpec& s) {
        s.rope.truncate = true;
        s.rope.betaFast = 32.0;
        s.rope.betaSlow = 1.0;
    });
    ModelSpec yarnMscale = yarn;
    yarnMscale.rope.mscale = 0.707;
    yarnMscale.rope.mscaleAllDim = 1.0;
    add("yarn, mscale / mscale_all_dim", yarnMscale, 32, [](ModelSpec& s) { s.rope.mscale = 0.0; });
    ModelSpec yarnFactor = yarn;
    yarnFactor.rope.attentionFactor = 1.25;
    add("yarn, attention_factor", yarnFactor, 32, [](ModelSpec& s) { s.rope.attentionFactor.reset(); });
    ModelSpec llama3 = ropeSpec("llama3", 64, 10000.0);
    llama3.rope.factor = 8.0;
    llama3.rope.originalMaxPositionEmbeddings = 64; // wavelengths below 16, between 16 and 64, above 64
    add("llama3 x8", llama3, 32, [](ModelSpec& s) { s.rope.type = "linear"; });
    return c;
}

// Wrong-reference distance of a table: max over entries of |got - wrong| / |wrong|, scaling included.
inline double tableDistance(const RopeTables& t, const ReferenceRope& r)
{
    if (t.invFreq.size() != r.invFreq.size())
        return INFINITY;
    return std::max(
        relPerElement(t.invFreq, r.invFreq), std::abs(static_cast<double>(t.attentionScaling) - r.scaling) / r.scaling);
}

// --- Attention -----------------------------------------------------------------------------------

enum class AttnFault { None, NoCausalMask, WrongGrouping, NoWindow, InterleavedRope, NoQkNorm, NoBias, OneSequence };

inline ModelSpec attentionSpec()
{
    ModelSpec s;
    s.arch = Architecture::Qwen3Moe;
    s.hiddenSize = 48;
    s.numHeads = 4;
    s.numKvHeads = 2;
    s.headDim = 16;
    s.maxPositionEmbeddings = 4096;
    s.rmsNormEps = 1e-6;
    s.rope.theta = 10000.0;
    return s;
}

inline LayerWeights randomAttentionWeights(const ModelSpec& s, uint64_t seed)
{
    at::manual_seed(seed);
    const int64_t H = s.hiddenSize, hd = s.headDim, q = s.numHeads * hd, kv = s.numKvHeads * hd;
    LayerWeights w;
    w.q = { rnd({ q, H }, 0.3), s.qkvBias ? rnd({ q }, 0.5) : at::Tensor() };
    w.k = { rnd({ kv, H }, 0.3), s.qkvBias ? rnd({ kv }, 0.5) : at::Tensor() };
    w.v = { rnd({ kv, H }, 0.3), s.qkvBias ? rnd({ kv }, 0.5) : at::Tensor() };
    w.o = { rnd({ H, q }, 0.2), s.oBias ? rnd({ H }, 0.5) : at::Tensor() };
    if (s.qkNorm == QkNorm::PerHead) {
        w.qNorm = 1.0 + rnd({ hd }, 0.5);
        w.kNorm = 1.0 + rnd({ hd }, 0.5);
    } else if (s.qkNorm == QkNorm::Full) {
        w.qNorm = 1.0 + rnd({ q }, 0.5);
        w.kNorm = 1.0 + rnd({ kv }, 0.5);
    }
    return w;
}

// Rotates each head of the rows [T, n * hd] by its position p = t mod seqLen: the pair (j, j + hd/2) by
// the angle p / theta^(2j / hd) (transformers' rotate_half form), or the adjacent pair (2j, 2j + 1) (the
// GPT-J form: the wrong reference).
inline at::Tensor referenceRope(
    const at::Tensor& rows, int64_t heads, int64_t hd, int64_t seqLen, double theta, bool interleaved)
{
    const int64_t T = rows.size(0), half = hd / 2;
    at::Tensor angle = at::empty({ T, 1, half }, at::kDouble);
    auto a = angle.accessor<double, 3>();
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < half; ++j)
            a[t][0][j] = static_cast<double>(t % seqLen)
                / std::pow(theta, static_cast<double>(2 * j) / static_cast<double>(hd));
    const at::Tensor cos = angle.cos(), sin = angle.sin();
    // x1, x2: the two members of every pair, [T, heads, half].
    const at::Tensor h = rows.reshape({ T, heads, interleaved ? half : 2, interleaved ? 2 : half });
    const at::Tensor x1 = interleaved ? h.select(3, 0) : h.select(2, 0);
    const at::Tensor x2 = interleaved ? h.select(3, 1) : h.select(2, 1);
    const at::Tensor y1 = x1 * cos - x2 * sin, y2 = x2 * cos + x1 * sin;
    return at::stack({ y1, y2 }, interleaved ? 3 : 2).reshape({ T, heads * hd });
}

inline at::Tensor referenceAttention(const ModelSpec& s, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs,
    bool sliding, AttnFault fault = AttnFault::None)
{
    const int64_t T = x.size(0), hd = s.headDim, nh = s.numHeads, nkv = s.numKvHeads;
    const int64_t S = fault == AttnFault::OneSequence ? T : T / numSeqs;
    const at::Tensor xd = dbl(x);
    const auto project = [&](const Linear& l) {
        at::Tensor y = at::matmul(xd, dbl(l.weight).t());
        return l.bias.defined() && fault != AttnFault::NoBias ? y + dbl(l.bias) : y;
    };
    at::Tensor q = project(w.q), k = project(w.k), v = project(w.v);
    if (fault != AttnFault::NoQkNorm && s.qkNorm == QkNorm::Full) {
        q = referenceRmsNorm(q, w.qNorm, s.rmsNormEps);
        k = referenceRmsNorm(k, w.kNorm, s.rmsNormEps);
    }
    if (s.clipQkv) {
        q = q.clamp(-*s.clipQkv, *s.clipQkv);
        k = k.clamp(-*s.clipQkv, *s.clipQkv);
        v = v.clamp(-*s.clipQkv, *s.clipQkv);
    }
    if (fault != AttnFault::NoQkNorm && s.qkNorm == QkNorm::PerHead) {
        q = referenceRmsNorm(q.view({ T, nh, hd }), w.qNorm, s.rmsNormEps).view({ T, nh * hd });
        k = referenceRmsNorm(k.view({ T, nkv, hd }), w.kNorm, s.rmsNormEps).view({ T, nkv * hd });
    }
    const bool interleaved = fault == AttnFault::InterleavedRope;
    q = referenceRope(q, nh, hd, S, s.rope.theta, interleaved);
    k = referenceRope(k, nkv, hd, S, s.rope.theta, interleaved);
    const int64_t window = sliding && fault != AttnFault::NoWindow ? s.slidingWindow.value_or(0) : 0; // 0: none
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    std::vector<at::Tensor> sequences;
    for (int64_t b = 0; b < T / S; ++b) {
        std::vector<at::Tensor> heads;
        for (int64_t h = 0; h < nh; ++h) {
            // Query heads h of one group share kv head h / (nh / nkv) (transformers' repeat_kv).
            const int64_t g = fault == AttnFault::WrongGrouping ? h % nkv : h / (nh / nkv);
            std::vector<at::Tensor> rows;
            for (int64_t i = 0; i < S; ++i) {
                // Visible keys: j <= i, and within the window j > i - window.
                const int64_t last = fault == AttnFault::NoCausalMask ? S - 1 : i;
                const int64_t first = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
                const at::Tensor keys = k.narrow(0, b * S + first, last - first + 1).narrow(1, g * hd, hd);
                const at::Tensor values = v.narrow(0, b * S + first, last - first + 1).narrow(1, g * hd, hd);
                const at::Tensor query = q[b * S + i].narrow(0, h * hd, hd);
                const at::Tensor scores = at::mv(keys, query) * scale;
                const at::Tensor e = at::exp(scores - scores.max());
                const at::Tensor probs = e / e.sum();
                rows.push_back(at::mv(values.t(), probs));
            }
            heads.push_back(at::stack(rows));
        }
        sequences.push_back(at::cat(heads, 1));
    }
    const at::Tensor context = at::cat(sequences);
    at::Tensor out = at::matmul(context, dbl(w.o.weight).t());
    return w.o.bias.defined() && fault != AttnFault::NoBias ? out + dbl(w.o.bias) : out;
}

// --- MoE block -----------------------------------------------------------------------------------

enum class MoeFault { None, WrongExpert, FlipRenorm, SoftmaxOverTopK, IgnoreKept, UngatedShared, NoUnitMask };

struct MoeReference {
    at::Tensor out; // [N, H]
    at::Tensor logits; // [N, E]
    at::Tensor ids; // [N, K] long, by decreasing probability
    at::Tensor weights; // [N, K]
    at::Tensor norms; // [N, K] |expert output| before weighting
    at::Tensor unitSums; // [E, I] sum of |a| over the tokens routed to each expert
    double smallestGap = INFINITY; // between consecutive probabilities of the top k + 1 (near ties)
};

// Every expert on every token (fp64), its output weighted by the token's routing weight for it (zero
// where it is not among the token's top k). `unitMask` [E, I] (0/1 for sliced experts) or undefined;
// `kept` [E] bool or undefined. Differentiable in the weights and the mask.
inline MoeReference referenceMoe(const ModelSpec& s, const LayerWeights& w, const at::Tensor& x, const at::Tensor& kept,
    const at::Tensor& unitMask, MoeFault fault = MoeFault::None)
{
    const int64_t N = x.size(0), E = s.router.numExperts, K = s.router.topK, I = w.down.size(2);
    const at::Tensor xd = x.to(at::kDouble);
    MoeReference r;
    r.logits = at::matmul(xd, w.router.to(at::kDouble).t());
    at::Tensor logits = r.logits;
    if (kept.defined() && fault != MoeFault::IgnoreKept)
        logits = logits.masked_fill(kept.logical_not(), -INFINITY);
    // softmax(l)_e = exp(l_e - max l) / sum_j exp(l_j - max l)
    const at::Tensor shifted = at::exp(logits - std::get<0>(logits.max(-1, true)));
    const at::Tensor probs = shifted / shifted.sum(-1, true);
    // Top k by repeated selection of the largest remaining probability.
    r.ids = at::empty({ N, K }, at::kLong);
    const at::Tensor pc = probs.detach().contiguous();
    const auto p = pc.accessor<double, 2>();
    auto ids = r.ids.accessor<int64_t, 2>();
    for (int64_t t = 0; t < N; ++t) {
        std::vector<bool> taken(static_cast<std::size_t>(E), false);
        std::vector<double> chosen;
        for (int64_t k = 0; k <= K && k < E; ++k) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; ++e)
                if (!taken[static_cast<std::size_t>(e)] && (best < 0 || p[t][e] > p[t][best]))
                    best = e;
            taken[static_cast<std::size_t>(best)] = true;
            chosen.push_back(p[t][best]);
            if (k < K)
                ids[t][k] = fault == MoeFault::WrongExpert ? (best + 1) % E : best;
        }
        for (std::size_t k = 1; k < chosen.size(); ++k)
            r.smallestGap = std::min(r.smallestGap, chosen[k - 1] - chosen[k]);
    }
    at::Tensor weights = probs.gather(1, r.ids);
    if (fault == MoeFault::SoftmaxOverTopK) {
        // Mixtral's form: top-k of the logits, softmax over those k (= renormalised probabilities).
        const at::Tensor top = r.logits.gather(1, r.ids);
        const at::Tensor e = at::exp(top - std::get<0>(top.max(-1, true)));
        weights = e / e.sum(-1, true);
    } else if (s.router.normTopkProb != (fault == MoeFault::FlipRenorm)) {
        weights = weights / weights.sum(-1, true);
    }
    r.weights = weights;
    r.out = at::zeros({ N, x.size(1) }, at::kDouble);
    r.norms = at::zeros({ N, K }, at::kDouble);
    r.unitSums = at::zeros({ E, I }, at::kDouble);
    for (int64_t e = 0; e < E; ++e) {
        const at::Tensor gate = at::matmul(xd, w.gateUp[e].narrow(0, 0, I).to(at::kDouble).t());
        const at::Tensor up = at::matmul(xd, w.gateUp[e].narrow(0, I, I).to(at::kDouble).t());
        at::Tensor a = gate / (1.0 + at::exp(-gate)) * up; // silu(g) = g * sigmoid(g)
        const at::Tensor routed = (r.ids == e).to(at::kDouble); // [N, K] one-hot of expert e
        r.unitSums[e] = (routed.sum(1, true) * a.detach().abs()).sum(0);
        if (unitMask.defined() && fault != MoeFault::NoUnitMask)
            a = a * unitMask[e].to(at::kDouble);
        const at::Tensor y = at::matmul(a, w.down[e].to(at::kDouble).t());
        r.norms = r.norms + routed * y.detach().norm(2, { 1 }, true);
        r.out = r.out + (weights * routed).sum(1, true) * y;
    }
    if (w.sharedExpertGate.defined()) {
        const at::Tensor g = at::matmul(xd, w.mlpGate.weight.to(at::kDouble).t());
        const at::Tensor u = at::matmul(xd, w.mlpUp.weight.to(at::kDouble).t());
        const at::Tensor shared = at::matmul(g / (1.0 + at::exp(-g)) * u, w.mlpDown.weight.to(at::kDouble).t());
        const at::Tensor z = at::matmul(xd, w.sharedExpertGate.to(at::kDouble).t()); // [N, 1]
        r.out = r.out + (fault == MoeFault::UngatedShared ? shared : 1.0 / (1.0 + at::exp(-z)) * shared);
    }
    return r;
}

inline ModelSpec moeSpec(Architecture arch, bool normTopk, bool shared)
{
    ModelSpec s;
    s.arch = arch;
    s.hiddenSize = 32;
    s.router = RouterSpec { 8, 2, normTopk };
    s.moeIntermediate = 24;
    s.sharedIntermediate = shared ? 40 : 0;
    s.sharedExpertGate = shared;
    return s;
}

inline LayerWeights randomMoeWeights(const ModelSpec& s, uint64_t seed)
{
    at::manual_seed(seed);
    const int64_t E = s.router.numExperts, H = s.hiddenSize, I = s.moeIntermediate;
    LayerWeights w;
    w.moe = true;
    w.router = rnd({ E, H }, 0.5);
    w.gateUp = rnd({ E, 2 * I, H }, 0.3);
    w.down = rnd({ E, H, I }, 0.3);
    if (s.sharedIntermediate > 0) {
        const int64_t J = s.sharedIntermediate;
        w.mlpGate = { rnd({ J, H }, 0.3), {} };
        w.mlpUp = { rnd({ J, H }, 0.3), {} };
        w.mlpDown = { rnd({ H, J }, 0.3), {} };
        w.sharedExpertGate = rnd({ 1, H }, 0.3);
    }
    return w;
}

// The dense SwiGLU MLP, fp64: down(silu(gate x) * up x).
inline at::Tensor referenceMlp(const LayerWeights& w, const at::Tensor& x)
{
    const at::Tensor xd = x.to(at::kDouble);
    const at::Tensor g = at::matmul(xd, w.mlpGate.weight.to(at::kDouble).t());
    const at::Tensor u = at::matmul(xd, w.mlpUp.weight.to(at::kDouble).t());
    return at::matmul(g / (1.0 + at::exp(-g)) * u, w.mlpDown.weight.to(at::kDouble).t());
}

} // namespace moeatlas::blockref
