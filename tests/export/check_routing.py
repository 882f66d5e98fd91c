#!/usr/bin/env python3
"""Check an export written with `moeatlas export --routing RULE` against its ORIGINAL checkpoint.

Usage: check_routing.py --source DIR --export DIR --plan plan.json --routing RULE --ids ids.json
                        [--thresholds '{"<layer>": t}'] [--atol 1e-4] [--ours logits.f32 [--rtol 2e-5]]

The rule is read here from its text, independently of the exporter (checkpoint/routing_rule.h):
top-k:K, probmoe:KMIN:KMAX, top-p:P[:KMIN:KMAX], threshold:M[:KMIN:KMAX] (default band [1, model k];
thresholds from --thresholds, the values the test gave the exporter).

1. Files: top-k:K must be a stock checkpoint: no modeling_moeatlas.py and no auto_map unless the plan
   is non-uniform, and config.json differs from the source only in the expert-count key and
   num_experts_per_tok = K. A dynamic rule must ship modeling_moeatlas.py, auto_map,
   num_experts_per_tok = KMAX and moeatlas_routing with the rule's fields.
2. AutoModelForCausalLM.from_pretrained(export) loads with no missing/unexpected keys, with
   trust_remote_code only for a dynamic rule or a non-uniform plan.
3. Reference, run on the original checkpoint with every router's logits of dropped experts at -inf:
   top-k:K: the stock router with its top_k set to K; a dynamic rule: each router replaced by a
   by-hand loop over tokens (sort the float32 softmax, count the token's k in Python floats, keep the
   first k of the top-KMAX slots, renormalise as the model does: Mixtral always, the others per
   norm_topk_prob). The export's float32 logits on --ids must equal the reference's within --atol.
4. With --ours: the export's logits equal MoE Atlas's evaluation of the plan with the same rule on the
   source (Executor::evaluate, ExpertMask::routing; raw little-endian float32 [B, S, V]) within
   rtol x max |logit|: another implementation, so sums run in another order (check_export.py's bar).
5. Not vacuous: the logits must move (> 1e-3 of max |logit|) from the same plan routed with the
   model's own top-k, and a dynamic rule must give tokens at least two different k.
Prints one JSON line {"max_abs_diff", "scale", "diff_vs_model_k", "k_histogram", ...}; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_export import load  # noqa: E402

COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def parse_rule(text: str, model_k: int) -> dict:
    f = text.split(":")
    if f[0] == "top-k" and len(f) == 2:
        return {"kind": "top-k", "k": int(f[1]), "k_min": int(f[1]), "k_max": int(f[1])}
    if f[0] == "probmoe" and len(f) == 3:
        return {"kind": "probmoe", "k_min": int(f[1]), "k_max": int(f[2])}
    if f[0] in ("top-p", "threshold") and len(f) in (2, 4):
        k_min, k_max = (int(f[2]), int(f[3])) if len(f) == 4 else (1, model_k)
        rule = {"kind": f[0], "k_min": k_min, "k_max": k_max}
        rule["p" if f[0] == "top-p" else "mean_k"] = float(f[1])
        return rule
    raise SystemExit(f"check_routing.py: cannot read rule {text!r}")


def number(x: float) -> str:
    """The shortest %g text that reads back as x (how the rule's name writes P and M)."""
    for digits in range(1, 18):
        text = f"{x:.{digits}g}"
        if float(text) == x:
            return text
    return repr(x)


def canonical(rule: dict) -> str:
    band = f":{rule['k_min']}:{rule['k_max']}"
    if rule["kind"] == "top-p":
        return "top-p:" + number(rule["p"]) + band
    if rule["kind"] == "threshold":
        return "threshold:" + number(rule["mean_k"]) + band
    return rule["kind"] + band


def token_k(rule: dict, sorted_probs: list, positive: int, threshold) -> int:
    kind = rule["kind"]
    if kind == "top-k":
        k = rule["k"]
    elif kind == "probmoe":
        k = positive
    elif kind == "top-p":
        mass, k = 0.0, 0
        for q in sorted_probs:
            if mass >= rule["p"]:
                break
            mass += q
            k += 1
    else:
        k = sum(1 for q in sorted_probs if q >= threshold)
    return min(max(k, rule["k_min"]), rule["k_max"])


def install_reference(model, plan, rule, thresholds, renorm, cast, ks):
    """Replaces the forward of every planned layer's router by the by-hand rule (see the docstring)."""
    num_experts = plan["source"]["num_experts"]
    k_max = rule["k_max"]
    for entry in plan["layers"]:
        router = model.model.layers[entry["layer"]].mlp.gate
        keep = list(entry["keep"])
        mask = torch.full((num_experts,), float("-inf"))
        mask[keep] = 0.0
        threshold = thresholds.get(str(entry["layer"]))

        def forward(hidden, _router=router, _mask=mask, _keep=keep, _threshold=threshold):
            hidden = hidden.reshape(-1, _router.weight.shape[1])
            logits = F.linear(hidden, _router.weight) + _mask.to(hidden.dtype)
            probs = torch.softmax(logits.float(), dim=-1)
            index = torch.zeros(probs.shape[0], k_max, dtype=torch.long)
            weights = torch.zeros(probs.shape[0], k_max, dtype=torch.float32)
            for t in range(probs.shape[0]):
                p = probs[t].tolist()
                order = sorted(range(num_experts), key=lambda e: -p[e])
                positive = sum(1 for e in _keep if float(logits[t, e]) > 0.0)
                k = token_k(rule, [p[e] for e in order], positive, _threshold)
                ks.append(k)
                chosen = order[:k_max]
                w = probs[t, chosen].clone()
                w[k:] = 0.0
                if renorm:
                    w = w / w.sum()
                index[t] = torch.tensor(chosen)
                weights[t] = w
            return logits, weights.to(logits.dtype) if cast else weights, index

        router.forward = forward


def check_files(args, rule, source_config, config, uniform_plan, dynamic):
    has_modeling = os.path.exists(os.path.join(args.export, "modeling_moeatlas.py"))
    if dynamic:
        expected = {"rule": canonical(rule), "kind": rule["kind"], "k_min": rule["k_min"],
                    "k_max": rule["k_max"]}
        got = config.get("moeatlas_routing")
        if got is None or any(got.get(k) != v for k, v in expected.items()):
            raise SystemExit(f"config moeatlas_routing {got}, expected {expected}")
        if rule["kind"] == "top-p" and got.get("p") != rule["p"]:
            raise SystemExit(f"moeatlas_routing.p {got.get('p')} != {rule['p']}")
        if rule["kind"] == "threshold" and got.get("thresholds") != json.loads(args.thresholds):
            raise SystemExit(f"moeatlas_routing.thresholds {got.get('thresholds')} != {args.thresholds}")
        if not has_modeling or "auto_map" not in config:
            raise SystemExit("a dynamic rule needs modeling_moeatlas.py and auto_map")
    else:
        if "moeatlas_routing" in config:
            raise SystemExit("top-k export has moeatlas_routing")
        if uniform_plan and (has_modeling or "auto_map" in config):
            raise SystemExit("top-k export of a uniform plan is not a stock checkpoint")
    if config.get("num_experts_per_tok") != rule["k_max"]:
        raise SystemExit(f"num_experts_per_tok {config.get('num_experts_per_tok')}, expected {rule['k_max']}")
    allowed = set(COUNT_KEYS) | {"num_experts_per_tok"}
    if dynamic:
        allowed |= {"moeatlas_routing", "auto_map"}
    if not uniform_plan:
        allowed |= {"num_experts_per_layer", "auto_map"}
    changed = {k for k in set(config) | set(source_config) if config.get(k) != source_config.get(k)}
    if not changed <= allowed:
        raise SystemExit(f"config keys changed beyond the routing and expert count: {sorted(changed - allowed)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--routing", required=True)
    ap.add_argument("--thresholds", default="{}")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--ours", help="float32 logits of our evaluation of the plan with the rule on --ids")
    ap.add_argument("--rtol", type=float, default=2e-5, help="bar on max |export - ours| / max |logit|")
    args = ap.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    with open(os.path.join(args.source, "config.json")) as f:
        source_config = json.load(f)
    with open(os.path.join(args.export, "config.json")) as f:
        config = json.load(f)
    model_k = int(source_config["num_experts_per_tok"])
    rule = parse_rule(args.routing, model_k)
    dynamic = rule["kind"] != "top-k"
    uniform_plan = len({len(e["keep"]) for e in plan["layers"]}) == 1
    check_files(args, rule, source_config, config, uniform_plan, dynamic)

    pruned = load(args.export, dynamic or not uniform_plan)
    source = load(args.source, False)
    renorm = source_config["model_type"] == "mixtral" or bool(source_config.get("norm_topk_prob", False))
    cast = source_config["model_type"] != "mixtral"
    with open(args.ids) as f:
        ids = torch.tensor(json.load(f), dtype=torch.long)
    thresholds = json.loads(args.thresholds)
    ks: list = []
    with torch.inference_mode():
        a = pruned(input_ids=ids).logits
        if dynamic:
            install_reference(source, plan, rule, thresholds, renorm, cast, ks)
        else:  # the stock router with top_k = K, its dropped experts' logits at -inf
            from check_export import mask_dropped_experts
            mask_dropped_experts(source, plan)
            for entry in plan["layers"]:
                source.model.layers[entry["layer"]].mlp.gate.top_k = rule["k"]
        b = source(input_ids=ids).logits
        # The same plan routed with the model's own top-k, for the vacuity check.
        install_reference(source, plan, {"kind": "top-k", "k": model_k, "k_min": model_k, "k_max": model_k}, {},
                          renorm, cast, [])
        b_model = source(input_ids=ids).logits
    scale = float(b.abs().max())
    diff = float((a - b).abs().max())
    effect = float((a - b_model).abs().max())
    routers = sorted({type(layer.mlp.gate).__name__ for layer in pruned.model.layers if hasattr(layer.mlp, "gate")})
    report = {"max_abs_diff": diff, "scale": scale, "diff_vs_model_k": effect,
              "k_histogram": {str(k): n for k, n in sorted(Counter(ks).items())}, "routers": routers,
              "model_class": type(pruned).__name__}
    ours_diff = None
    if args.ours:
        ours = torch.from_numpy(np.fromfile(args.ours, dtype="<f4")).reshape(a.shape)
        ours_diff = float((a - ours).abs().max())
        report["max_abs_diff_ours"] = ours_diff
    print(json.dumps(report))
    if ours_diff is not None and not ours_diff <= args.rtol * scale:
        print(f"export vs our evaluation with the rule: max |diff| = {ours_diff} > {args.rtol} x max |logit| {scale}",
              file=sys.stderr)
        return 1
    if dynamic and not all(r.startswith("MoeAtlasRule") for r in routers):
        print(f"the export's routers {routers} are not the rule's", file=sys.stderr)
        return 1
    if not diff <= args.atol:
        print(f"logits differ from the reference: max |diff| = {diff} > {args.atol}", file=sys.stderr)
        return 1
    if not effect > 1e-3 * scale:
        print(f"the rule had no visible effect (max |diff| vs the model's top-k = {effect}, max |logit| {scale})",
              file=sys.stderr)
        return 1
    if dynamic and len(set(ks)) < 2:
        print(f"every token got the same k {sorted(set(ks))}: the dynamic rule is not exercised", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
