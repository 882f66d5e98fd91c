#include "model/gated_delta.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <stdexcept>

namespace moeatlas {

namespace {

// x / sqrt(sum x^2 + eps) over the last dimension, as the FLA kernels (and transformers' l2norm) do.
at::Tensor l2Normalise(const at::Tensor& x)
{
    return x * at::rsqrt((x * x).sum(-1, /*keepdim=*/true) + 1e-6);
}

// [B, S, heads, d] -> [B, heads, S, d] fp32, contiguous; q and k repeated to the value heads first.
struct RuleInputs {
    at::Tensor q, k, v, g, beta; // [B, nv, S, d] and [B, nv, S]
};

RuleInputs prepare(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta)
{
    if (q.dim() != 4 || k.sizes() != q.sizes() || v.dim() != 4 || g.dim() != 3 || beta.sizes() != g.sizes())
        throw std::invalid_argument("gated delta rule: expected q, k [B, S, nk, dk], v [B, S, nv, dv], g and beta "
                                    "[B, S, nv]");
    const int64_t nk = k.size(2), nv = v.size(2);
    if (nv % nk != 0 || g.size(2) != nv)
        throw std::invalid_argument("gated delta rule: value heads must be a multiple of key heads");
    RuleInputs in;
    const auto toHeads = [](const at::Tensor& t) { return t.transpose(1, 2).to(at::kFloat).contiguous(); };
    in.q = toHeads(nv == nk ? q : q.repeat_interleave(nv / nk, 2));
    in.k = toHeads(nv == nk ? k : k.repeat_interleave(nv / nk, 2));
    in.v = toHeads(v);
    in.g = toHeads(g);
    in.beta = toHeads(beta);
    in.q = l2Normalise(in.q);
    in.k = l2Normalise(in.k);
    in.q = in.q * (1.0 / std::sqrt(static_cast<double>(in.q.size(-1))));
    return in;
}

} // namespace

at::Tensor chunkGatedDeltaRule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    const at::Tensor& beta, int64_t chunk)
{
    RuleInputs in = prepare(q, k, v, g, beta);
    const int64_t B = in.v.size(0), nv = in.v.size(1), S = in.v.size(2), dk = in.k.size(-1), dv = in.v.size(-1);
    const int64_t C = chunk, pad = (C - S % C) % C, n = (S + pad) / C;
    // Zero padding at the end: padded positions have beta = 0 and g = 0, so they change nothing before them.
    const auto padRows = [&](const at::Tensor& t) { return at::constant_pad_nd(t, { 0, 0, 0, pad }); };
    const auto padSteps = [&](const at::Tensor& t) { return at::constant_pad_nd(t, { 0, pad }); };
    at::Tensor qc = padRows(in.q), kc = padRows(in.k), vc = padRows(in.v);
    const at::Tensor bc = padSteps(in.beta), gc = padSteps(in.g);
    at::Tensor kBeta = kc * bc.unsqueeze(-1), vBeta = vc * bc.unsqueeze(-1);
    const auto chunks = [&](const at::Tensor& t) { return t.reshape({ B, nv, n, C, t.size(-1) }); };
    qc = chunks(qc);
    kc = chunks(kc);
    kBeta = chunks(kBeta);
    vBeta = chunks(vBeta);
    // Log decay accumulated from the chunk start to each position; pair(i, j) = exp(cum_i - cum_j) for
    // j <= i (the decay between positions j and i), 0 above the diagonal.
    const at::Tensor cum = gc.reshape({ B, nv, n, C }).cumsum(3);
    const at::Tensor above = at::ones({ C, C }, at::TensorOptions().dtype(at::kBool).device(qc.device())).triu(1);
    const at::Tensor pair
        = (cum.unsqueeze(4) - cum.unsqueeze(3)).masked_fill(above, -std::numeric_limits<float>::infinity()).exp();
    // Within a chunk the delta-rule updates form a unit lower-triangular system (I + A) U = beta * V (UT
    // transform); its solutions give the corrected values and the decayed keys that read the old state.
    const at::Tensor system = at::matmul(kBeta, kc.transpose(-1, -2)) * pair;
    const at::Tensor intra = at::matmul(qc, kc.transpose(-1, -2)) * pair;
    const at::Tensor decayedKBeta = kBeta * cum.exp().unsqueeze(-1);
    const at::Tensor values = at::linalg_solve_triangular(system, vBeta, /*upper=*/false, /*left=*/true,
        /*unitriangular=*/true);
    const at::Tensor keysFromState = at::linalg_solve_triangular(system, decayedKBeta, false, true, true);
    const at::Tensor qDecayed = qc * cum.exp().unsqueeze(-1);
    const at::Tensor kToEnd = kc * (cum.narrow(3, C - 1, 1) - cum).exp().unsqueeze(-1);
    const at::Tensor chunkDecay = cum.select(3, C - 1).exp().unsqueeze(-1).unsqueeze(-1); // [B, nv, n, 1, 1]

    at::Tensor state = at::zeros({ B, nv, dk, dv }, values.options());
    at::Tensor out = at::empty_like(values);
    for (int64_t i = 0; i < n; ++i) {
        const at::Tensor vNew = values.select(2, i) - at::matmul(keysFromState.select(2, i), state);
        out.select(2, i).copy_(at::matmul(qDecayed.select(2, i), state) + at::matmul(intra.select(2, i), vNew));
        state = state * chunkDecay.select(2, i) + at::matmul(kToEnd.select(2, i).transpose(-1, -2), vNew);
    }
    return out.reshape({ B, nv, n * C, dv }).narrow(2, 0, S).transpose(1, 2).contiguous().to(q.scalar_type());
}

at::Tensor recurrentGatedDeltaRule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta)
{
    RuleInputs in = prepare(q, k, v, g, beta);
    const int64_t B = in.v.size(0), nv = in.v.size(1), S = in.v.size(2), dk = in.k.size(-1), dv = in.v.size(-1);
    at::Tensor state = at::zeros({ B, nv, dk, dv }, in.v.options());
    at::Tensor out = at::empty_like(in.v);
    for (int64_t t = 0; t < S; ++t) {
        // S <- exp(g_t) S;  S <- S + k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T q_t
        const at::Tensor kt = in.k.select(2, t), qt = in.q.select(2, t), vt = in.v.select(2, t);
        state = state * in.g.select(2, t).exp().unsqueeze(-1).unsqueeze(-1);
        const at::Tensor predicted = (state * kt.unsqueeze(-1)).sum(-2);
        const at::Tensor delta = (vt - predicted) * in.beta.select(2, t).unsqueeze(-1);
        state = state + kt.unsqueeze(-1) * delta.unsqueeze(-2);
        out.select(2, t).copy_((state * qt.unsqueeze(-1)).sum(-2));
    }
    return out.transpose(1, 2).contiguous().to(q.scalar_type());
}

at::Tensor gatedDeltaNet(const ModelSpec& spec, const DeltaNetWeights& w, const at::Tensor& x, int64_t numSeqs)
{
    const LinearAttentionSpec& la = spec.linearAttention;
    const int64_t tokens = x.size(0), S = tokens / numSeqs, nv = la.numValueHeads, dv = la.valueHeadDim;
    const at::Tensor mixed = at::linear(x, w.inProjQkv.weight).view({ numSeqs, S, la.convDim() });
    const at::Tensor z = at::linear(x, w.inProjZ.weight);
    const at::Tensor b = at::linear(x, w.inProjB.weight).view({ numSeqs, S, nv });
    const at::Tensor a = at::linear(x, w.inProjA.weight).view({ numSeqs, S, nv });
    // Causal depthwise convolution over time (left padding kernel - 1, keep the first S outputs), then SiLU.
    // Summed in fp32 and rounded once to the compute dtype, as torch's CPU kernels do for bf16 (LibTorch
    // 1.13's depthwise bf16 convolution would round along the way).
    const int64_t K = la.convKernel;
    at::Tensor conv = at::conv1d(mixed.transpose(1, 2).to(at::kFloat), w.conv.to(at::kFloat).unsqueeze(1), {},
        /*stride=*/1, /*padding=*/K - 1, /*dilation=*/1, /*groups=*/la.convDim());
    conv = at::silu(conv.narrow(2, 0, S).to(x.scalar_type()).to(at::kFloat)).to(x.scalar_type()).transpose(1, 2);
    const at::Tensor q = conv.narrow(2, 0, la.keyDim()).reshape({ numSeqs, S, la.numKeyHeads, la.keyHeadDim });
    const at::Tensor k
        = conv.narrow(2, la.keyDim(), la.keyDim()).reshape({ numSeqs, S, la.numKeyHeads, la.keyHeadDim });
    const at::Tensor v = conv.narrow(2, 2 * la.keyDim(), la.valueDim()).reshape({ numSeqs, S, nv, dv });
    // beta = sigmoid(b); log decay g = -exp(A_log) * softplus(a + dt_bias), in fp32.
    const at::Tensor beta = at::sigmoid(b.to(at::kFloat)).to(x.scalar_type());
    const at::Tensor g = -w.aLog.to(at::kFloat).exp() * at::softplus(a.to(at::kFloat) + w.dtBias);
    const at::Tensor core = chunkGatedDeltaRule(q, k, v, g, beta).reshape({ -1, dv });
    // Gated RMSNorm per value head: w * norm(o) in the compute dtype, times SiLU(z) in fp32, rounded once.
    at::Tensor h = core.to(at::kFloat);
    h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + spec.rmsNormEps);
    h = (w.norm * h.to(x.scalar_type())) * at::silu(z.reshape({ -1, dv }).to(at::kFloat));
    return at::linear(h.to(x.scalar_type()).view({ tokens, la.valueDim() }), w.outProj.weight);
}

} // namespace moeatlas
