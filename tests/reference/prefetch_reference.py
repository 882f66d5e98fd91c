#!/usr/bin/env python3
"""Reference for the expert predictions `moeatlas capture --prefetch` records (docs/methods.md, "Expert
prefetching"), computed with transformers on the checkpoint and compared with the atlas read by h5py.

Usage:
  prefetch_reference.py check --model DIR --atlas ATLAS [--tie-margin 1e-5]
      Runs DIR (a checkpoint made by make_reference.py) in transformers (fp32, eager attention and experts) on
      the atlas's own sequences and recomputes, from forward hooks:
        h_l  = the input of decoder layer l's post_attention_layernorm (the residual stream after attention),
        next-router:  top-B of softmax(gate_j(post_attention_layernorm_j(h_l)))
        quasi-hidden: the same on q_l = h_l + sum_k w_k DV_l[e_k]  (layer l's routed ids and weights from the
                      gate's own output), DV_l[e] = mean over the training tokens routed to e of expert e's
                      output (the experts module run on those tokens with that expert alone and weight 1)
      for every MoE layer l and target j, the d-th MoE layer after l (d <= max_lookahead), with B, the
      predictors and the training split read from /prefetch. Compares:
        ids    identical, best first, on every token whose B+1 largest probabilities are pairwise at least
               --tie-margin apart (closer pairs could be ordered either way by another summation order;
               counted and required to be under 5% of the predictions);
        linear, mlp (when recorded): the stored estimator (/prefetch/learned/...) applied to layer l's normed MoE
               input from the hooks gives the recorded ids (ties: lower id first; scores closer than --tie-margin
               of the largest |score| skipped as above) -- checks the features, the targets' layer and the storage,
               not the training (tests/runtime/tst_prefetch_estimator checks that);
        DV     within 5e-4 of the largest |DV| of the layer (two fp32 implementations), counts identical.
      Exits 1 with the first mismatch, else prints one summary line.
  prefetch_reference.py compare ATLAS_A ATLAS_B
      Exits 1 unless both atlases hold the same /prefetch: members, attributes, dtypes and values.
"""
import argparse
import sys

import h5py
import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


class Mismatch(Exception):
    pass



def router_of(layer):
    """The layer's TopKRouter: mlp.gate, or mlp.router (gpt_oss)."""
    return getattr(layer.mlp, "gate", None) or getattr(layer.mlp, "router", None)

def load_atlas(path):
    with h5py.File(path, "r") as f:
        g = f["prefetch"]
        info = dict(
            predictors=str(g.attrs["predictors"]).split(","),
            max_lookahead=int(g.attrs["max_lookahead"]),
            budget=int(g.attrs["budget"]),
            train_sequences=g["train_sequences"][:].astype(bool),
            tokens=f["tokens/ids"][:].astype(np.int64),
            offsets=f["tokens/seq_offsets"][:],
            moe_layers=[int(x) for x in f["model/moe_layers"][:]],
            ids={}, dv={}, dv_counts={}, learned={},
        )
        for p in info["predictors"]:
            for l in g[p]:
                for d in g[p][l]:
                    info["ids"][(p, int(l), int(d[1:]))] = g[p][l][d][:].astype(np.int64)
        if "learned" in g:
            for p in g["learned"]:
                for l in g["learned"][p]:
                    for d in g["learned"][p][l]:
                        grp = g["learned"][p][l][d]
                        info["learned"][(p, int(l), int(d[1:]))] = {k: torch.from_numpy(grp[k][:]) for k in grp}
        if "default_vectors" in g:
            for l in g["default_vectors"]:
                info["dv"][int(l)] = g["default_vectors"][l][:]
                info["dv_counts"][int(l)] = g["default_vector_counts"][l][:]
    return info


@torch.inference_mode()
def reference(model, info):
    layers = model.model.layers
    offsets = info["offsets"]
    lengths = np.diff(offsets)
    if len(set(lengths.tolist())) != 1:
        raise Mismatch("sequences of unequal length; the reference batches them")
    S, L = len(lengths), int(lengths[0])
    input_ids = torch.tensor(info["tokens"].reshape(S, L))
    post_attn, routed = {}, {}
    handles = []
    for i, layer in enumerate(layers):
        def pre_hook(_mod, args, i=i):
            post_attn[i] = args[0].detach().reshape(-1, args[0].shape[-1]).clone()
        handles.append(layer.post_attention_layernorm.register_forward_pre_hook(pre_hook))
    for i in info["moe_layers"]:
        def gate_hook(_mod, _args, out, i=i):
            routed[i] = tuple(t.detach().clone() for t in out)  # logits, weights, ids
        handles.append(router_of(layers[i]).register_forward_hook(gate_hook))
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()

    train_tok = np.repeat(info["train_sequences"], lengths)
    moe = info["moe_layers"]
    B, D = info["budget"], info["max_lookahead"]
    states = {"next-router": {}, "quasi-hidden": {}}
    dv_ref = {}
    for l in moe:
        h = post_attn[l]
        states["next-router"][l] = h
        _, weights, ids = routed[l]
        x = layers[l].post_attention_layernorm(h)
        E = router_of(layers[l]).weight.shape[0]
        sums = torch.zeros(E, h.shape[1], dtype=torch.float64)
        counts = np.zeros(E, dtype=np.int64)
        for e in range(E):
            tok, slot = torch.where(ids == e)
            keep = torch.tensor(train_tok[tok.numpy()], dtype=torch.bool)
            tok = tok[keep]
            counts[e] = tok.numel()
            if tok.numel() == 0:
                continue
            xe = x[tok]
            one = torch.full((tok.numel(), 1), e, dtype=torch.int64)
            out = layers[l].mlp.experts(xe, one, torch.ones(tok.numel(), 1, dtype=xe.dtype))  # E_e(x), weight 1
            sums[e] = out.double().sum(0)
        dv = (sums / torch.from_numpy(np.maximum(counts, 1)).double().unsqueeze(1)).float()
        dv_ref[l] = (dv.numpy(), counts)
        q = h.float() + (weights.float().unsqueeze(-1) * dv[ids]).sum(1)
        states["quasi-hidden"][l] = q.to(h.dtype)

    preds = {}
    # Learned estimators: the stored parameters applied to layer l's normed MoE input as transformers computes it.
    for (p, l, d), w in info["learned"].items():
        x = layers[l].post_attention_layernorm(post_attn[l]).float()
        z = (x - w["feature_mean"]) / w["feature_std"]
        if p == "linear":
            s = z @ w["weight"].T + w["bias"]
        else:
            s = torch.relu(z @ w["hidden_weight"].T + w["hidden_bias"]) @ w["output_weight"].T + w["output_bias"]
        order = torch.from_numpy(np.argsort(-s.numpy(), axis=1, kind="stable"))  # ties: lower id first
        top = torch.gather(s, 1, order[:, :B + 1])
        gaps = (top[:, :-1] - top[:, 1:]) / s.abs().amax().clamp_min(1e-30)  # relative to the largest |logit|
        preds[(p, l, d)] = (order[:, :B].numpy(), gaps[:, :B].min(dim=1).values.numpy())
    for p in info["predictors"]:
        if p in ("linear", "mlp"):
            continue
        for a, l in enumerate(moe):
            for d in range(1, D + 1):
                if a + d >= len(moe):
                    break
                j = moe[a + d]
                xj = layers[j].post_attention_layernorm(states[p][l])
                logits = router_of(layers[j])(xj)[0]
                probs = torch.softmax(logits, dim=-1, dtype=torch.float)
                E = probs.shape[1]
                top = torch.topk(probs, min(B + 1, E), dim=-1)
                gaps = top.values[:, :-1] - top.values[:, 1:]
                margin = gaps[:, :B].min(dim=1).values if gaps.shape[1] > 0 else torch.full((probs.shape[0],), 1.0)
                preds[(p, l, d)] = (top.indices[:, :B].numpy(), margin.numpy())
    return preds, dv_ref


def check(args):
    info = load_atlas(args.atlas)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    preds, dv_ref = reference(model, info)
    if set(preds) != set(info["ids"]):
        raise Mismatch(f"recorded predictions {sorted(info['ids'])} != expected {sorted(preds)}")
    compared = skipped = 0
    for key, (want, margin) in sorted(preds.items()):
        got = info["ids"][key]
        if got.shape != want.shape:
            raise Mismatch(f"{key}: shape {got.shape} != {want.shape}")
        clear = margin >= args.tie_margin
        bad = np.nonzero(clear & (got != want).any(axis=1))[0]
        if bad.size:
            t = bad[0]
            raise Mismatch(f"{key}: token {t}: got {got[t].tolist()}, want {want[t].tolist()} (margin {margin[t]:.3g})")
        compared += int(clear.sum())
        skipped += int((~clear).sum())
    if skipped > 0.05 * (compared + skipped):
        raise Mismatch(f"{skipped} of {compared + skipped} predictions within {args.tie_margin} of a tie")
    worst = 0.0
    if "quasi-hidden" in info["predictors"]:
        if set(info["dv"]) != set(dv_ref):
            raise Mismatch(f"default vectors of layers {sorted(info['dv'])}, expected {sorted(dv_ref)}")
        for l, (want, counts) in dv_ref.items():
            if not np.array_equal(info["dv_counts"][l], counts):
                raise Mismatch(f"default_vector_counts/{l}: {info['dv_counts'][l]} != {counts}")
            err = float(np.abs(info["dv"][l] - want).max() / max(np.abs(want).max(), 1e-30))
            worst = max(worst, err)
            if err > 5e-4:
                raise Mismatch(f"default_vectors/{l}: relative error {err:.3g}")
    print(f"prefetch_reference.py: {len(preds)} prediction sets, {compared} token predictions identical, "
          f"{skipped} skipped as near-ties; default vectors max rel error {worst:.3g}")


def compare(a_path, b_path):
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        def walk(g, out, prefix=""):
            for k in sorted(g.keys()):
                obj = g[k]
                out.append(prefix + k)
                if isinstance(obj, h5py.Group):
                    walk(obj, out, prefix + k + "/")
        if "prefetch" not in a or "prefetch" not in b:
            raise Mismatch("an atlas has no /prefetch")
        names_a, names_b = [], []
        walk(a["prefetch"], names_a)
        walk(b["prefetch"], names_b)
        if names_a != names_b:
            raise Mismatch(f"members differ: {set(names_a) ^ set(names_b)}")
        for name in ["."] + names_a:
            x, y = a["prefetch"][name], b["prefetch"][name]
            if dict(x.attrs) != dict(y.attrs):
                raise Mismatch(f"{name}: attributes {dict(x.attrs)} != {dict(y.attrs)}")
            if isinstance(x, h5py.Dataset):
                if x.dtype != y.dtype or x.shape != y.shape or x[()].tobytes() != y[()].tobytes():
                    raise Mismatch(f"/prefetch/{name}: contents differ")
        print(f"prefetch_reference.py: /prefetch identical ({len(names_a)} members)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--atlas", required=True)
    c.add_argument("--tie-margin", type=float, default=1e-5)
    m = sub.add_parser("compare")
    m.add_argument("a")
    m.add_argument("b")
    args = ap.parse_args()
    try:
        if args.cmd == "check":
            check(args)
        else:
            compare(args.a, args.b)
    except Mismatch as e:
        print(f"prefetch_reference.py: MISMATCH: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
