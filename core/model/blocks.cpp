#include "model/blocks.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace moeatlas {

namespace {

at::Tensor linear(const at::Tensor& x, const Linear& l)
{
    return l.bias.defined() ? at::linear(x, l.weight, l.bias) : at::linear(x, l.weight);
}

at::Tensor rotateHalf(const at::Tensor& x)
{
    const int64_t half = x.size(-1) / 2;
    return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// Additive mask [S, S]: 0 where key j is visible from query i, the dtype's lowest value elsewhere
// (transformers uses finfo.min rather than -inf, so fully masked rows cannot produce NaN).
at::Tensor causalMask(int64_t seqLen, std::optional<int64_t> window, const at::TensorOptions& options)
{
    at::Tensor i = at::arange(seqLen, options.dtype(at::kLong)).unsqueeze(1);
    at::Tensor j = at::arange(seqLen, options.dtype(at::kLong)).unsqueeze(0);
    at::Tensor visible = j <= i;
    if (window)
        visible = visible & (j > i - *window);
    const double lowest = options.dtype() == at::kFloat ? std::numeric_limits<float>::lowest()
                          : options.dtype() == at::kBFloat16 ? -3.3895313892515355e38
                                                             : -65504.0;
    return at::zeros({seqLen, seqLen}, options).masked_fill(visible.logical_not(), lowest);
}

} // namespace

RotaryCache buildRotaryCache(const ModelSpec& spec, int64_t seqLen, const at::TensorOptions& options)
{
    const RopeTables t = computeRopeTables(spec, seqLen);
    at::Tensor invFreq = at::from_blob(const_cast<float*>(t.invFreq.data()),
                                       {static_cast<int64_t>(t.invFreq.size())}, at::kFloat)
                             .to(options.device(), at::kFloat, false, true);
    at::Tensor pos = at::arange(seqLen, at::TensorOptions().dtype(at::kFloat).device(options.device()));
    at::Tensor freqs = pos.unsqueeze(1) * invFreq.unsqueeze(0);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    RotaryCache c;
    c.cos = (emb.cos() * t.attentionScaling).to(options.dtype());
    c.sin = (emb.sin() * t.attentionScaling).to(options.dtype());
    c.seqLen = seqLen;
    return c;
}

at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps)
{
    at::Tensor h = x.to(at::kFloat);
    at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
    h = h * at::rsqrt(variance + eps);
    return weight * h.to(x.scalar_type());
}

at::Tensor attention(const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs,
                     const RotaryCache& rope, bool slidingWindow)
{
    const int64_t tokens = x.size(0), S = tokens / numSeqs, hd = spec.headDim;
    const int64_t nh = spec.numHeads, nkv = spec.numKvHeads;
    at::Tensor q = linear(x, w.q), k = linear(x, w.k), v = linear(x, w.v);
    if (spec.qkNorm == QkNorm::Full) {
        q = rmsNorm(q, w.qNorm, spec.rmsNormEps);
        k = rmsNorm(k, w.kNorm, spec.rmsNormEps);
    }
    if (spec.clipQkv) {
        q = q.clamp(-*spec.clipQkv, *spec.clipQkv);
        k = k.clamp(-*spec.clipQkv, *spec.clipQkv);
        v = v.clamp(-*spec.clipQkv, *spec.clipQkv);
    }
    q = q.view({numSeqs, S, nh, hd});
    k = k.view({numSeqs, S, nkv, hd});
    v = v.view({numSeqs, S, nkv, hd});
    if (spec.qkNorm == QkNorm::PerHead) {
        q = rmsNorm(q, w.qNorm, spec.rmsNormEps);
        k = rmsNorm(k, w.kNorm, spec.rmsNormEps);
    }
    q = q.transpose(1, 2);   // [B, nh, S, hd]
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    const at::Tensor cos = rope.cos.narrow(0, 0, S), sin = rope.sin.narrow(0, 0, S);
    q = q * cos + rotateHalf(q) * sin;
    k = k * cos + rotateHalf(k) * sin;
    const int64_t groups = nh / nkv;
    if (groups > 1) {
        k = k.unsqueeze(2).expand({numSeqs, nkv, groups, S, hd}).reshape({numSeqs, nh, S, hd});
        v = v.unsqueeze(2).expand({numSeqs, nkv, groups, S, hd}).reshape({numSeqs, nh, S, hd});
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const at::Tensor mask = causalMask(S, slidingWindow ? spec.slidingWindow : std::nullopt, q.options());
    // One sequence at a time bounds the score matrix to [nh, S, S].
    at::Tensor out = at::empty({numSeqs, S, nh * hd}, x.options());
    for (int64_t b = 0; b < numSeqs; ++b) {
        at::Tensor scores = at::matmul(q[b], k[b].transpose(1, 2)) * scale + mask;
        at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
        out[b].copy_(at::matmul(probs, v[b]).transpose(0, 1).reshape({S, nh * hd}));
    }
    return linear(out.view({tokens, nh * hd}), w.o);
}

at::Tensor denseMlp(const LayerWeights& w, const at::Tensor& x)
{
    return linear(at::silu(linear(x, w.mlpGate)) * linear(x, w.mlpUp), w.mlpDown);
}

at::Tensor moeForward(const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x,
                      const MoeOptions& options, RoutingRecord* record)
{
    const int64_t N = x.size(0), E = spec.router.numExperts, K = spec.router.topK;
    const int64_t I = w.down.size(2);
    const bool fp32 = x.scalar_type() == at::kFloat;
    // transformers computes the router in the hidden dtype; observers get an fp32 computation.
    at::Tensor logits = at::linear(x, w.router);
    at::Tensor logits32 = fp32 ? logits : at::linear(x.to(at::kFloat), w.router.to(at::kFloat));
    at::Tensor routingLogits = logits;
    if (options.keptExperts.defined())
        routingLogits = routingLogits.masked_fill(options.keptExperts.logical_not(), -INFINITY);
    at::Tensor probs = at::softmax(routingLogits, -1, at::kFloat);
    auto [topVal, topIdx] = at::topk(probs, K, -1);
    if (spec.router.normTopkProb)
        topVal = topVal / topVal.sum(-1, /*keepdim=*/true);
    // Mixtral multiplies expert outputs by fp32 weights; the others cast the weights to the
    // hidden dtype first. Both then accumulate in the hidden dtype.
    at::Tensor mixWeights = spec.arch == Architecture::Mixtral ? topVal : topVal.to(x.scalar_type());

    at::Tensor flatIds = topIdx.reshape({-1});
    at::Tensor order = at::argsort(flatIds);
    at::Tensor tokenOf = at::div(order, K, "floor");
    at::Tensor sortedWeights = mixWeights.reshape({-1}).index_select(0, order);
    at::Tensor counts = at::bincount(flatIds, {}, E).to(at::kCPU);
    const int64_t* countPtr = counts.data_ptr<int64_t>();

    at::Tensor out = at::zeros_like(x);
    at::Tensor sortedNorms;
    if (options.recordExpertNorms)
        sortedNorms = at::empty({N * K}, x.options().dtype(at::kFloat));
    int64_t offset = 0;
    for (int64_t e = 0; e < E; ++e) {
        const int64_t c = countPtr[e];
        if (c == 0)
            continue;
        at::Tensor idx = tokenOf.narrow(0, offset, c);
        at::Tensor xe = x.index_select(0, idx);
        at::Tensor gu = at::linear(xe, w.gateUp[e]);
        at::Tensor h = at::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I);
        at::Tensor y = at::linear(h, w.down[e]);
        if (options.recordExpertNorms)
            sortedNorms.narrow(0, offset, c).copy_(y.to(at::kFloat).norm(2, {1}));
        y = y * sortedWeights.narrow(0, offset, c).unsqueeze(1);
        out.index_add_(0, idx, y.to(x.scalar_type()));
        offset += c;
    }
    if (w.sharedExpertGate.defined())
        out = out + at::sigmoid(at::linear(x, w.sharedExpertGate)) * denseMlp(w, x);

    if (record) {
        record->logits = logits32.to(at::kCPU).contiguous();
        record->topkIds = topIdx.to(at::kCPU, at::kInt).contiguous();
        record->topkWeights = topVal.to(at::kCPU, at::kFloat).contiguous();
        if (options.recordExpertNorms) {
            at::Tensor norms = at::empty({N * K}, sortedNorms.options());
            norms.index_copy_(0, order, sortedNorms);
            record->expertNorms = norms.view({N, K}).to(at::kCPU).contiguous();
        }
    }
    return out;
}

} // namespace moeatlas
