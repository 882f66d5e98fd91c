#!/usr/bin/env python3
"""Speculative execution in stock transformers: the independent reference of the engine's speculative
evaluation (runtime/speculative.h; docs/methods.md "Speculative execution, evaluated").

Usage:
  speculative_reference.py --arch A --variant V --out DIR [--speculative PRED[:D] ...]

Builds the tiny reference model of make_reference.py (float32, saved layout, eager experts) in DIR, then runs it
once per speculative option with the routers of transformers patched: every MoE layer j with a source MoE layer
l = j - D runs the experts predicted at l instead of its own top-k. Written from the definitions:
  h_l          the input of layer l's post_attention_layernorm (a forward pre-hook), i.e. the residual stream
               after attention;
  next-router  top-k of softmax(router_j(norm2_j(h_l))), its weights renormalised where the model renormalises;
  quasi-hidden the same on q_l = h_l + sum over l's own routed slots of w * DV_l[e], DV_l[e] the mean output of
               expert e (before its routing weight) over the training tokens routed to it in the unmodified model;
  linear, mlp  the first k of a stable descending sort of an estimator's scores of layer l's MoE input
               (norm2_l(h_l)); random parameters, stored for the engine;
  frequency    the first k of the experts of j ranked by their training-token counts in the unmodified model
               (ties: lower id);
  previous     the previous token's own top-k at j (the first token of a sequence keeps its own);
  oracle       the token's own top-k at j;
id-only predictors are weighted by layer j's own softmax probabilities of the ids, renormalised where the model
renormalises. The training split: sequences TRAIN (the first two of three).

DIR/speculative.safetensors: for option n: spec_logits.<n> [B,S,V] f32, spec_ids.<n>.<j> [B*S,k] i64 per
speculated layer j; dv.<l> [E,H] f32; est.<kind>.<l>.<param>; frequency.<j> [E] i64.
DIR/speculative.json: options, their smallest decision margin, train sequences, moe layers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import make_reference

TRAIN = [1, 1, 0]  # per sequence of the reference batch


def moe_layers(model):
    return [i for i, _ in make_reference.router_modules(model)]


def expert_output(experts, e: int, x: torch.Tensor) -> torch.Tensor:
    """E_e(x) of the fused v5 experts: down(act(gate x) * up x); gpt_oss: its own x @ W + b with the clamped
    SwiGLU of its modeling file (_apply_gate)."""
    if hasattr(experts, "gate_up_proj_bias"):
        gu = x @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
        return experts._apply_gate(gu) @ experts.down_proj[e] + experts.down_proj_bias[e]
    gate_up = experts.gate_up_proj[e]
    inter = gate_up.shape[0] // 2
    gu = F.linear(x, gate_up)
    return F.linear(experts.act_fn(gu[:, :inter]) * gu[:, inter:], experts.down_proj[e])


@torch.inference_mode()
def plain_routing(model, input_ids):
    """The unmodified model: per MoE layer its own ids [T,k] and its MoE input [T,H]."""
    ids, inputs, handles = {}, {}, []
    for i, gate in make_reference.router_modules(model):
        def hook(_m, args, out, i=i):
            inputs[i] = args[0].reshape(-1, args[0].shape[-1]).clone()
            ids[i] = out[2].to(torch.int64).clone()
        handles.append(gate.register_forward_hook(hook))
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return ids, inputs


def make_estimator(kind, h, e, gen):
    p = OrderedDict()
    p["feature_mean"] = 0.1 * torch.randn(h, generator=gen)
    p["feature_std"] = 0.5 + torch.rand(h, generator=gen)
    if kind == "linear":
        p["weight"] = 0.3 * torch.randn(e, h, generator=gen)
        p["bias"] = 0.3 * torch.randn(e, generator=gen)
    else:
        u = min(2 * e, 256)
        p["hidden_weight"] = 0.3 * torch.randn(u, h, generator=gen)
        p["hidden_bias"] = 0.3 * torch.randn(u, generator=gen)
        p["output_weight"] = 0.3 * torch.randn(e, u, generator=gen)
        p["output_bias"] = 0.3 * torch.randn(e, generator=gen)
    return p


def estimator_scores(kind, p, x):
    z = (x.float() - p["feature_mean"]) / p["feature_std"]
    if kind == "linear":
        return F.linear(z, p["weight"], p["bias"])
    return F.linear(torch.relu(F.linear(z, p["hidden_weight"], p["hidden_bias"])), p["output_weight"],
                    p["output_bias"])


def top_margin(values: torch.Tensor, k: int) -> float:
    top = torch.topk(values.float(), k + 1, dim=-1).values
    return float((top[:, k - 1] - top[:, k]).min())


@torch.inference_mode()
def speculate(model, arch, input_ids, predictor, d, data):
    cfg = model.config
    k = cfg.num_experts_per_tok
    norm = make_reference.renormalises(arch, cfg)
    layers = moe_layers(model)
    B, S = input_ids.shape
    h_state, own, feats, seen = {}, {}, {}, {"ids": {}, "margin": float("inf")}
    handles, patched = [], []

    for i in layers:
        def pre(_m, args, i=i):
            h_state[i] = args[0].reshape(-1, args[0].shape[-1])
        handles.append(model.model.layers[i].post_attention_layernorm.register_forward_pre_hook(pre))

    for pos, (j, gate) in enumerate(make_reference.router_modules(model)):
        def forward(hidden_states, gate=gate, j=j, pos=pos):
            x = hidden_states.reshape(-1, gate.hidden_dim)
            logits = F.linear(x, gate.weight, getattr(gate, "bias", None))
            probs = F.softmax(logits.float(), dim=-1)
            w_own, ids_own = torch.topk(probs, k, dim=-1)
            if norm:
                w_own = w_own / w_own.sum(-1, keepdim=True)
            own[j] = (ids_own, w_own)
            feats[j] = x
            if pos < d:
                seen["margin"] = min(seen["margin"], top_margin(probs, k))
                return logits, w_own.to(logits.dtype) if arch != "mixtral" else w_own, ids_own
            l = layers[pos - d]
            norm2 = model.model.layers[j].post_attention_layernorm
            if predictor in ("next-router", "quasi-hidden"):
                state = h_state[l]
                if predictor == "quasi-hidden":
                    ids_l, w_l = own[l]
                    dv = data["dv"][l]
                    state = (state.float() + (w_l.unsqueeze(-1) * dv[ids_l]).sum(1)).to(state.dtype)
                # .forward: calling the module would fire the pre-hook that records layer j's own h_j.
                pred = F.linear(norm2.forward(state), gate.weight, getattr(gate, "bias", None))
                pred_probs = F.softmax(pred.float(), dim=-1)
                weights, ids = torch.topk(pred_probs, k, dim=-1)
                seen["margin"] = min(seen["margin"], top_margin(pred_probs, k))
                if norm:
                    weights = weights / weights.sum(-1, keepdim=True)
            else:
                if predictor in ("linear", "mlp"):
                    scores = estimator_scores(predictor, data["est"][predictor][l], feats[l])
                    ids = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]
                    seen["margin"] = min(seen["margin"], top_margin(scores, k))
                elif predictor == "frequency":
                    ids = data["frequency"][j][:k].unsqueeze(0).expand(x.shape[0], k)
                elif predictor == "previous":
                    o = ids_own.view(B, S, k)
                    ids = torch.cat([o[:, :1], o[:, :-1]], dim=1).reshape(-1, k)
                    seen["margin"] = min(seen["margin"], top_margin(probs, k))
                elif predictor == "oracle":
                    ids = ids_own
                    seen["margin"] = min(seen["margin"], top_margin(probs, k))
                else:
                    raise ValueError(predictor)
                weights = probs.gather(1, ids)
                if norm:
                    weights = weights / weights.sum(-1, keepdim=True)
            seen["ids"][j] = ids.clone()
            return logits, weights.to(logits.dtype) if arch != "mixtral" else weights, ids

        gate.forward = forward
        patched.append(gate)
    try:
        out = model(input_ids=input_ids, use_cache=False).logits.float().contiguous()
    finally:
        for h in handles:
            h.remove()
        for gate in patched:
            del gate.forward
    return out, seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, choices=make_reference.ARCHS)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--speculative", action="append", default=[])
    args = ap.parse_args(argv)
    out_dir = os.path.abspath(args.out)
    rc = make_reference.main(["--arch", args.arch, "--variant", args.variant, "--dtype", "float32", "--out", out_dir,
                              "--experts-impl", "eager", "--skip-layout-check"])
    assert rc == 0
    with safe_open(os.path.join(out_dir, "reference.safetensors"), "pt") as f:
        input_ids = f.get_tensor("input_ids")
    model = make_reference.load(out_dir, torch.float32, "eager")
    cfg = model.config
    layers = moe_layers(model)
    E, H = cfg.num_experts, cfg.hidden_size
    B, S = input_ids.shape
    train_tok = torch.tensor(TRAIN, dtype=torch.bool).repeat_interleave(S)

    # Default vectors and frequency orders from the unmodified model over the training split.
    ids, inputs = plain_routing(model, input_ids)
    out = OrderedDict()
    data = {"dv": {}, "frequency": {}, "est": {"linear": {}, "mlp": {}}}
    with torch.inference_mode():
        for i in layers:
            experts = model.model.layers[i].mlp.experts
            dv = torch.zeros(E, H)
            for e in range(E):
                rows = (ids[i] == e).any(-1) & train_tok
                n = int(((ids[i] == e) & train_tok.unsqueeze(1)).sum())
                if n:
                    # every (token, slot) pair counts; a token holds an expert in at most one slot
                    dv[e] = expert_output(experts, e, inputs[i][rows]).float().sum(0) / n
            data["dv"][i] = dv
            out[f"dv.{i}"] = dv.contiguous()
            counts = torch.bincount(ids[i][train_tok].reshape(-1), minlength=E)
            order = torch.sort(-counts, stable=True).indices
            data["frequency"][i] = order
            out[f"frequency.{i}"] = order.to(torch.int64).contiguous()
    gen = torch.Generator().manual_seed(7)
    for kind in ("linear", "mlp"):
        for i in layers:
            p = make_estimator(kind, H, E, gen)
            data["est"][kind][i] = p
            for name, t in p.items():
                out[f"est.{kind}.{i}.{name}"] = t.contiguous()

    options = []
    for n, text in enumerate(args.speculative):
        predictor, _, d = text.partition(":")
        d = int(d) if d else 1
        if d >= len(layers):
            continue
        logits, seen = speculate(model, args.arch, input_ids, predictor, d, data)
        out[f"spec_logits.{n}"] = logits
        for j, t in seen["ids"].items():
            out[f"spec_ids.{n}.{j}"] = t.to(torch.int64).contiguous()
        options.append(dict(index=n, option=text, predictor=predictor, lookahead=d, margin=seen["margin"],
                            layers=sorted(seen["ids"])))
    save_file(out, os.path.join(out_dir, "speculative.safetensors"))
    with open(os.path.join(out_dir, "speculative.json"), "w") as f:
        json.dump(dict(options=options, train_sequences=TRAIN, moe_layers=layers, batch=B, seq_len=S), f, indent=2)
    print(json.dumps([(o["option"], o["margin"]) for o in options]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
