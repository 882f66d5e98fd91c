#!/usr/bin/env python3
"""Per-unit Fisher importance of routed-expert FFN dimensions, computed by transformers + torch.autograd.

Usage:
  fisher_reference.py --arch ARCH --variant NAME --out DIR [--seed N]

Builds the tiny random checkpoint of make_reference.py (float32, sharded, the layout save_pretrained
writes) in DIR, reloads it from disk with the eager experts implementation and, for a few calibration
sequences of different lengths, computes per-sample gradients of the causal-LM loss
(labels = input ids, batch of one sequence, transformers' own loss = mean next-token cross-entropy)
with only the routed-expert weights requiring gradients. DIR/fisher.safetensors receives:
  tokens   [T] int64        the sequences concatenated
  offsets  [N+1] int64      sequence n is tokens[offsets[n]:offsets[n+1]]
  loss     [N] float32      each sample's loss
  mask.<l>    [E, I] float32  (1/N) sum_n (dL_n/dm_{e,j})^2           (mask form)
  weight.<l>  [E, I] float32  (1/N) sum_n (sum_h Ggate[e,j,h]^2 + Gup[e,j,h]^2 + Gdown[e,h,j]^2)
  gradabs.<l> [E, I] float32  (1/N) sum_n (sum_h |Ggate| + |Gup| + |Gdown|) / (3H)   (authors' code)
for every MoE layer l (G = dL_n/dW of sample n; transformers v5 holds the experts fused:
gate_up_proj [E, 2I, H] with the gate rows first, down_proj [E, H, I]).

Mask form without touching the modeling code: the expert computes y = W_down (m * a) with the unit
mask m = 1, so dL/dm_j = sum_t a_j(t) * sum_h W_down[h, j] dL/dy_h(t) = sum_h W_down[h, j] * G_down[h, j]
(G_down[h, j] = sum_t dL/dy_h(t) a_j(t) at m = 1). The per-sample mask gradient is thus an exact
function of the per-sample down_proj gradient; the engine instead multiplies a real mask tensor, so the
two are computed independently. Sums are taken in float64 from the float32 gradients.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_reference  # noqa: E402

# Prefixes of the reference input ids: a causal model computes the same hidden states for a prefix,
# so these sequences route exactly like make_reference's (whose near-ties it records).
LENGTHS = (24, 17, 24, 9)


def experts_modules(model):
    out = []
    for i, layer in enumerate(model.model.layers):
        experts = getattr(layer.mlp, "experts", None)
        if experts is not None and hasattr(experts, "gate_up_proj"):
            out.append((i, experts))
    return out


def expert_views(gpt_oss: bool):
    """A function giving (gate_up [E, 2I, H] gate rows first, down [E, H, I]) views of a fused experts
    module's tensors (or of their gradients): gpt_oss stores x @ W, gate_up_proj [E, H, 2I] with gate and up interleaved on the last
    dimension (even = gate) and down_proj [E, I, H]."""
    def views(gu, d):
        if not gpt_oss:
            return gu, d
        gu = torch.cat([gu[:, :, 0::2], gu[:, :, 1::2]], dim=2).transpose(1, 2)
        return gu, d.transpose(1, 2)
    return views


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, choices=make_reference.ARCHS)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    out_dir = os.path.abspath(args.out)
    rc = make_reference.main(["--arch", args.arch, "--variant", args.variant, "--dtype", "float32", "--out", out_dir,
                              "--seed", str(args.seed), "--experts-impl", "eager", "--skip-layout-check"])
    if rc:
        return rc

    torch.manual_seed(0)
    model = make_reference.load(out_dir, torch.float32, "eager")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layers = experts_modules(model)
    assert [i for i, _ in layers] == [i for i, _ in make_reference.router_modules(model)]
    for _, ex in layers:
        ex.gate_up_proj.requires_grad_(True)
        ex.down_proj.requires_grad_(True)

    gen = torch.Generator().manual_seed(args.seed + 1)  # the same ids as make_reference's reference
    ids = torch.randint(0, model.config.vocab_size, (make_reference.BATCH, make_reference.SEQ_LEN), generator=gen,
                        dtype=torch.int64)
    seqs = [ids[n % ids.shape[0], :length] for n, length in enumerate(LENGTHS)]

    gpt_oss = args.arch == "gpt_oss"
    view = expert_views(gpt_oss)
    acc = {key: {i: torch.zeros(ex.down_proj.shape[0], view(ex.gate_up_proj, ex.down_proj)[1].shape[2],
                                dtype=torch.float64)
                 for i, ex in layers} for key in ("mask", "weight", "gradabs")}
    losses = []
    for seq in seqs:
        model.zero_grad(set_to_none=True)
        out = model(input_ids=seq[None], labels=seq[None], use_cache=False)
        # The loss transformers returns must be the plain mean next-token cross-entropy (no router aux loss).
        plain = torch.nn.functional.cross_entropy(out.logits[0, :-1].float(), seq[1:])
        # Relative: the same fp32 per-token losses reduced by two torch code paths (transformers' mean over
        # shifted labels with an ignored last position vs a plain mean), which may round differently.
        assert torch.allclose(out.loss, plain, rtol=1e-6, atol=0), (float(out.loss), float(plain))
        out.loss.backward()
        losses.append(float(out.loss.detach()))
        for i, ex in layers:
            g_gu, g_d = view(ex.gate_up_proj.grad.double(), ex.down_proj.grad.double())  # [E, 2I, H], [E, H, I]
            inter = g_d.shape[2]
            hidden = g_d.shape[1]
            g_gate, g_up = g_gu[:, :inter], g_gu[:, inter:]
            down = view(ex.gate_up_proj.detach(), ex.down_proj.detach())[1].double()
            g_mask = (down * g_d).sum(1)  # [E, I]
            acc["mask"][i] += g_mask.square()
            acc["weight"][i] += g_gate.square().sum(-1) + g_up.square().sum(-1) + g_d.square().sum(1)
            acc["gradabs"][i] += (g_gate.abs().sum(-1) + g_up.abs().sum(-1) + g_d.abs().sum(1)) / (3 * hidden)

    n = len(seqs)
    result = {
        "tokens": torch.cat(seqs).contiguous(),
        "offsets": torch.tensor([0] + list(torch.cumsum(torch.tensor(LENGTHS), 0)), dtype=torch.int64),
        "loss": torch.tensor(losses, dtype=torch.float32),
    }
    for key, per_layer in acc.items():
        for i, a in per_layer.items():
            result[f"{key}.{i}"] = (a / n).float().contiguous()
    save_file(result, os.path.join(out_dir, "fisher.safetensors"))
    print(f"fisher reference: {n} samples, MoE layers {[i for i, _ in layers]}, losses {losses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
