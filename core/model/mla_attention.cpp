// Multi-head latent attention (deepseek_v3), written to match transformers' DeepseekV3Attention operation by
// operation (eager attention): the queries from q_proj or the q-LoRA path, the keys and values from one
// normalised latent expanded per head by kv_b_proj, RoPE on the rope parts only (interleaved pairs when
// rope_interleave), and the softmax scale 1/sqrt(qk_head_dim) times YaRN's mscale(factor, mscale_all_dim)^2.
#include "model/attention_core.h"
#include "model/block_threads.h"
#include "model/rope.h"

#include <ATen/ATen.h>

#include <cmath>
#include <optional>

namespace moeatlas::detail {

namespace {

// DeepseekV3RMSNorm(q_lora_rank) and (kv_lora_rank) are built without an eps argument: its default.
constexpr double kLatentNormEps = 1e-6;

// Rotary embedding of the rope parts [.., S, d] with cos/sin [S, d] (freqs concatenated twice). Interleaved:
// transformers rotates the pairs (x0, x1), (x2, x3), ... as [even; odd] halves, x_even * cos - x_odd * sin and
// x_odd * cos + x_even * sin, and keeps that order -- the same numbers as rotate_half on the de-interleaved x.
at::Tensor applyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool interleave)
{
    at::Tensor t = x;
    if (interleave) {
        const int64_t d = x.size(-1);
        t = at::cat({ x.slice(-1, 0, d, 2), x.slice(-1, 1, d, 2) }, -1);
    }
    return t * cos + rotateHalf(t) * sin;
}

} // namespace

at::Tensor mlaAttention(
    const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs, const RotaryCache& rope)
{
    const MlaSpec& m = spec.mla;
    const int64_t tokens = x.size(0), S = tokens / numSeqs, nh = spec.numHeads;
    const int64_t dn = m.qkNopeHeadDim, dr = m.qkRopeHeadDim, dv = m.vHeadDim, r = m.kvLoraRank;
    const MlaWeights& a = w.mla;
    // Queries [B, nh, S, dn + dr]: q_proj, or q_b_proj(q_a_layernorm(q_a_proj(x))).
    at::Tensor q = m.qLoraRank > 0 ? linear(rmsNorm(linear(x, a.qA), a.qANorm, kLatentNormEps), a.qB) : linear(x, w.q);
    q = q.view({ numSeqs, S, nh, dn + dr }).transpose(1, 2);
    // The latent [T, r] (normalised) and the rotary key shared by every head [B, 1, S, dr].
    const at::Tensor compressed = linear(x, a.kvA);
    const at::Tensor latent = rmsNorm(compressed.narrow(1, 0, r), a.kvANorm, kLatentNormEps);
    at::Tensor kRot = compressed.narrow(1, r, dr).reshape({ numSeqs, 1, S, dr });

    const at::Tensor cos = rope.cos.narrow(0, 0, S), sin = rope.sin.narrow(0, 0, S);
    const at::Tensor qRot = applyRope(q.narrow(-1, dn, dr), cos, sin, m.ropeInterleave);
    kRot = applyRope(kRot, cos, sin, m.ropeInterleave);
    const at::Tensor query = at::cat({ q.narrow(-1, 0, dn), qRot }, -1);

    // Per head: [key without RoPE (dn); value (dv)] from the latent; the key is [k_nope; the shared k_rot].
    const at::Tensor kv = linear(latent, a.kvB).view({ numSeqs, S, nh, dn + dv }).transpose(1, 2);
    const at::Tensor key = at::cat({ kv.narrow(-1, 0, dn), kRot.expand({ numSeqs, nh, S, dr }) }, -1);
    const at::Tensor value = kv.narrow(-1, dn, dv);

    // qk_head_dim ** -0.5, then times mscale twice (DeepseekV3Attention.scaling: yarn_apply_mscale).
    const double mscale = mlaSoftmaxMscale(spec.rope);
    const double scale = std::pow(static_cast<double>(dn + dr), -0.5) * mscale * mscale;
    const at::Tensor mask = causalMask(S, std::nullopt, query.options());
    return linear(attendHeads(query, key, value, scale, mask, at::Tensor()), w.o);
}

} // namespace moeatlas::detail
