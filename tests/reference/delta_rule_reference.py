#!/usr/bin/env python3
"""Reference outputs of transformers' gated delta rule (Qwen3.5-MoE's Gated DeltaNet core) for tst_gated_delta.

Usage: delta_rule_reference.py --out FILE [--seed N]

FILE (safetensors, float32) holds, for every case <c> in CASES (sequence lengths around the 64-token chunk):
  <c>.q, <c>.k [B,S,nk,dk]; <c>.v [B,S,nv,dv]; <c>.g (log decay <= 0), <c>.beta [B,S,nv]  (inputs)
  <c>.chunk      torch_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=64, use_qk_l2norm_in_kernel=True)
  <c>.recurrent  torch_recurrent_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)
Both from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe (their torch fallbacks, no FLA kernels).
"""

import argparse

import torch
from safetensors.torch import save_file
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe as m

B, NK, NV, DK, DV = 2, 2, 4, 16, 8
CASES = {"s150": 150, "s40": 40, "s128": 128}  # > one chunk and not a multiple; < one chunk; a multiple


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    out = {}
    for name, s in CASES.items():
        q = torch.randn(B, s, NK, DK, generator=gen)
        k = torch.randn(B, s, NK, DK, generator=gen)
        v = torch.randn(B, s, NV, DV, generator=gen)
        a = torch.randn(B, s, NV, generator=gen)
        g = -torch.exp(0.5 * torch.randn(NV, generator=gen)) * torch.nn.functional.softplus(a)
        beta = torch.sigmoid(torch.randn(B, s, NV, generator=gen))
        with torch.no_grad():
            chunk, _ = m.torch_chunk_gated_delta_rule(q, k, v, g=g, beta=beta, chunk_size=64,
                                                      use_qk_l2norm_in_kernel=True)
            rec, _ = m.torch_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, use_qk_l2norm_in_kernel=True)
        for key, t in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta), ("chunk", chunk), ("recurrent", rec)):
            out[f"{name}.{key}"] = t.float().contiguous()
    save_file(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
