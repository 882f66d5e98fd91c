#include "model/blocks.h"

#include "model/attention_core.h"
#include "model/block_threads.h"
#include "model/gated_delta.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace moeatlas {

at::Tensor detail::linear(const at::Tensor& x, const Linear& l)
{
    const int64_t threads = at::get_num_threads();
    constexpr int64_t minRows = 128;
    if (x.dim() != 2 || x.size(0) < 2 * minRows || !splitWork(x))
        return l.bias.defined() ? at::linear(x, l.weight, l.bias) : at::linear(x, l.weight);
    // at::linear on a 2-D input is addmm(bias, x, W^T) or mm(x, W^T): the same calls on row blocks.
    const int64_t rows = x.size(0);
    const int64_t blocks = std::min(rows / minRows, 4 * threads), chunk = (rows + blocks - 1) / blocks;
    at::Tensor out = at::empty({ rows, l.weight.size(0) }, x.options());
    const at::Tensor wt = l.weight.t();
    parallelTasks(
        blocks, [] { return 0; },
        [&](int64_t b, int) {
            const int64_t r0 = b * chunk, n = std::min(chunk, rows - r0);
            if (n <= 0)
                return;
            at::Tensor o = out.narrow(0, r0, n);
            if (l.bias.defined())
                at::addmm_out(o, l.bias, x.narrow(0, r0, n), wt);
            else
                at::mm_out(o, x.narrow(0, r0, n), wt);
        });
    return out;
}

using detail::linear;

at::Tensor detail::rotateHalf(const at::Tensor& x)
{
    const int64_t half = x.size(-1) / 2;
    return at::cat({ -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
}

// transformers uses finfo.min rather than -inf, so fully masked rows cannot produce NaN.
at::Tensor detail::causalMask(int64_t seqLen, std::optional<int64_t> window, const at::TensorOptions& options)
{
    at::Tensor i = at::arange(seqLen, options.dtype(at::kLong)).unsqueeze(1);
    at::Tensor j = at::arange(seqLen, options.dtype(at::kLong)).unsqueeze(0);
    at::Tensor visible = j <= i;
    if (window)
        visible = visible & (j > i - *window);
    const double lowest = options.dtype() == at::kFloat ? static_cast<double>(std::numeric_limits<float>::lowest())
        : options.dtype() == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                           : static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    return at::zeros({ seqLen, seqLen }, options).masked_fill(visible.logical_not(), lowest);
}

using detail::causalMask;
using detail::rotateHalf;

namespace {

// Attention probabilities with learned sinks (gpt_oss): each head's sink logit joins its rows as one more
// column, the row's maximum is subtracted, the softmax runs in the scores' dtype and the sink's column is
// dropped. scores [heads, S, S], sinks [heads].
at::Tensor sinkSoftmax(const at::Tensor& scores, const at::Tensor& sinks)
{
    const int64_t heads = scores.size(0), S = scores.size(1);
    at::Tensor combined
        = at::cat({ scores, sinks.to(scores.scalar_type()).view({ heads, 1, 1 }).expand({ heads, S, 1 }) }, -1);
    combined = combined - std::get<0>(combined.max(-1, /*keepdim=*/true));
    return at::softmax(combined, -1, combined.scalar_type()).narrow(-1, 0, S);
}

} // namespace

RotaryCache buildRotaryCache(const ModelSpec& spec, int64_t seqLen, const at::TensorOptions& options)
{
    const RopeTables t = computeRopeTables(spec, seqLen);
    at::Tensor invFreq
        = at::from_blob(const_cast<float*>(t.invFreq.data()), { static_cast<int64_t>(t.invFreq.size()) }, at::kFloat)
              .to(options.device(), at::kFloat, false, true);
    at::Tensor pos = at::arange(seqLen, at::TensorOptions().dtype(at::kFloat).device(options.device()));
    at::Tensor freqs = pos.unsqueeze(1) * invFreq.unsqueeze(0);
    at::Tensor emb = at::cat({ freqs, freqs }, -1);
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
    // Weights kept in float32 (gpt_oss' norms; a zero-centred norm's 1 + w, layer_weights.cpp): the product
    // is taken in fp32 and rounded once to the input's dtype, as transformers does for both.
    if (weight.scalar_type() != x.scalar_type())
        return (h * weight).to(x.scalar_type());
    return weight * h.to(x.scalar_type());
}

at::Tensor attention(const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs,
    const RotaryCache& rope, bool slidingWindow)
{
    if (w.deltaNet.defined()) // a linear-attention layer of Qwen3.5-MoE
        return gatedDeltaNet(spec, w.deltaNet, x, numSeqs);
    if (w.mla.defined()) // deepseek_v3
        return detail::mlaAttention(spec, w, x, numSeqs, rope);
    const int64_t tokens = x.size(0), S = tokens / numSeqs, hd = spec.headDim;
    const int64_t nh = spec.numHeads, nkv = spec.numKvHeads;
    at::Tensor q = linear(x, w.q), k = linear(x, w.k), v = linear(x, w.v);
    // Gated attention (Qwen3.5-MoE): q_proj gives [query_h; gate_h] per head; the output is
    // multiplied by sigmoid(gate) before o_proj.
    at::Tensor gate;
    if (spec.attnOutputGate) {
        const at::Tensor qg = q.view({ tokens, nh, 2 * hd });
        gate = qg.narrow(2, hd, hd).reshape({ tokens, nh * hd });
        q = qg.narrow(2, 0, hd).reshape({ tokens, nh * hd });
    }
    const auto project = [&](const at::Tensor& context) {
        return linear(gate.defined() ? context * at::sigmoid(gate) : context, w.o);
    };
    if (spec.qkNorm == QkNorm::Full) {
        q = rmsNorm(q, w.qNorm, spec.rmsNormEps);
        k = rmsNorm(k, w.kNorm, spec.rmsNormEps);
    }
    if (spec.clipQkv) {
        q = q.clamp(-*spec.clipQkv, *spec.clipQkv);
        k = k.clamp(-*spec.clipQkv, *spec.clipQkv);
        v = v.clamp(-*spec.clipQkv, *spec.clipQkv);
    }
    q = q.view({ numSeqs, S, nh, hd });
    k = k.view({ numSeqs, S, nkv, hd });
    v = v.view({ numSeqs, S, nkv, hd });
    if (spec.qkNorm == QkNorm::PerHead) {
        q = rmsNorm(q, w.qNorm, spec.rmsNormEps);
        k = rmsNorm(k, w.kNorm, spec.rmsNormEps);
    }
    q = q.transpose(1, 2); // [B, nh, S, hd]
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    const at::Tensor cos = rope.cos.narrow(0, 0, S), sin = rope.sin.narrow(0, 0, S);
    const int64_t rotary = cos.size(-1);
    if (rotary == hd) {
        q = q * cos + rotateHalf(q) * sin;
        k = k * cos + rotateHalf(k) * sin;
    } else { // partial rotary: the first `rotary` dimensions turn, the rest pass through
        const auto turn = [&](const at::Tensor& t) {
            const at::Tensor r = t.narrow(-1, 0, rotary);
            return at::cat({ r * cos + rotateHalf(r) * sin, t.narrow(-1, rotary, hd - rotary) }, -1);
        };
        q = turn(q);
        k = turn(k);
    }
    const int64_t groups = nh / nkv;
    if (groups > 1) {
        k = k.unsqueeze(2).expand({ numSeqs, nkv, groups, S, hd }).reshape({ numSeqs, nh, S, hd });
        v = v.unsqueeze(2).expand({ numSeqs, nkv, groups, S, hd }).reshape({ numSeqs, nh, S, hd });
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const at::Tensor mask = causalMask(S, slidingWindow ? spec.slidingWindow : std::nullopt, q.options());
    return project(detail::attendHeads(q, k, v, scale, mask, w.sinks));
}

at::Tensor detail::attendHeads(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
    const at::Tensor& mask, const at::Tensor& sinks)
{
    const int64_t numSeqs = q.size(0), nh = q.size(1), S = q.size(2), dv = v.size(3);
    // One sequence at a time bounds the score matrix to [nh, S, S].
    at::Tensor out = at::empty({ numSeqs, S, nh * dv }, q.options());
    if (!splitWork(q)) {
        for (int64_t b = 0; b < numSeqs; ++b) {
            at::Tensor scores = at::matmul(q[b], k[b].transpose(1, 2)) * scale + mask;
            at::Tensor probs = sinks.defined() ? sinkSoftmax(scores, sinks).to(q.scalar_type())
                                               : at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
            out[b].copy_(at::matmul(probs, v[b]).transpose(0, 1).reshape({ S, nh * dv }));
        }
        return out.view({ numSeqs * S, nh * dv });
    }
    // Sequences (and, when there are fewer sequences than threads, groups of heads) in parallel;
    // heads are independent, so a group of heads gives the same numbers as all of them at once.
    const int64_t threads = at::get_num_threads();
    const int64_t parts = numSeqs >= threads ? 1 : std::min<int64_t>(nh, (threads + numSeqs - 1) / numSeqs);
    const int64_t headsPerPart = (nh + parts - 1) / parts;
    // Per-thread buffers for the scores, probabilities and context of one task, written with the
    // out= and in-place forms of the same ops (fresh [heads, S, S] temporaries cost page faults).
    const bool fp32 = q.scalar_type() == at::kFloat;
    struct Scratch {
        at::Tensor scores, probs, context;
    };
    auto setup = [&] {
        return Scratch { at::empty({ headsPerPart, S, S }, q.options()),
            fp32 ? at::empty({ headsPerPart, S, S }, q.options()) : at::Tensor(),
            at::empty({ headsPerPart, S, dv }, q.options()) };
    };
    parallelTasks(numSeqs * parts, setup, [&](int64_t item, Scratch& buf) {
        const int64_t b = item / parts, h0 = (item % parts) * headsPerPart;
        const int64_t hn = std::min(headsPerPart, nh - h0);
        if (hn <= 0)
            return;
        at::Tensor qb = q[b].narrow(0, h0, hn), kb = k[b].narrow(0, h0, hn), vb = v[b].narrow(0, h0, hn);
        at::Tensor scores = buf.scores.narrow(0, 0, hn), context = buf.context.narrow(0, 0, hn);
        at::matmul_out(scores, qb, kb.transpose(1, 2));
        scores.mul_(scale).add_(mask);
        at::Tensor probs;
        if (sinks.defined()) {
            probs = sinkSoftmax(scores, sinks.narrow(0, h0, hn)).to(q.scalar_type());
        } else if (fp32) {
            probs = buf.probs.narrow(0, 0, hn);
            at::softmax_out(probs, scores, -1, at::kFloat);
        } else {
            probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
        }
        at::matmul_out(context, probs, vb);
        out[b].view({ S, nh, dv }).narrow(1, h0, hn).copy_(context.transpose(0, 1));
    });
    return out.view({ numSeqs * S, nh * dv });
}

at::Tensor denseMlp(const LayerWeights& w, const at::Tensor& x)
{
    return linear(at::silu(linear(x, w.mlpGate)) * linear(x, w.mlpUp), w.mlpDown);
}

} // namespace moeatlas
