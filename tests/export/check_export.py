#!/usr/bin/env python3
"""Check a MoE Atlas export against its source checkpoint with stock transformers.

Usage: check_export.py --source DIR --export DIR --plan plan.json [--trust-remote-code] [--rtol 2e-5]
                       [--ids ids.json --ours logits.f32]

1. AutoModelForCausalLM.from_pretrained(export) loads with no missing, unexpected or mismatched keys
   (trust_remote_code only when asked: a uniform export must load without it).
2. The source model, with the router logits of dropped experts set to -inf before the softmax (so the
   softmax runs over the kept experts only, as in the pruned model), gives the same logits as the
   export on random token ids: max |diff| <= rtol * max |logit of the masked source|.
3. With --ids/--ours: the export's logits on those ids ([[...], ...], B sequences of S tokens) equal
   MoE Atlas's masked evaluation of the plan on the source (raw little-endian float32 [B, S, V]), to the
   same relative bar.
Error model: the two sides compute the same function in float32 with other shapes (fewer router rows
and experts, narrower experts vs zeroed columns) or in another implementation (our engine), so their
sums run in other orders and may round differently, by an amount that scales with the magnitudes and
depends on the CPU's kernels (GEMM blocking, vector width). The bar is relative to the largest |logit|:
the default 2e-5 is the C++ suites' kReorderRtol (tests/support/test_io.h); at the ~7 of these models'
logits it is ~1.4e-4 absolute. Pruning must move the logits by > 1e-3 of that scale (not vacuous).
Dimension plans (a "dims" object, docs/plans.md): the loaded experts must have the plan's widths, and
in the source every dropped unit of a kept expert gets a zero column of down_proj (so it adds exactly 0,
as in the export, where it does not exist; a width-0 expert still takes part in routing). The report
then also counts the top-k slots that went to width-0 experts ("zero_width_hits"), so a test can tell
that they were routed to.
Prints one JSON line {"max_abs_diff", "scale", "num_experts_per_layer", ...}; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


def load(path: str, trust: bool):
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        trust_remote_code=trust, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"loading {path}: {problems}")
    return model.eval()


def router_of(layer):
    """The layer's TopKRouter: mlp.gate, or mlp.router (gpt_oss); None for a dense layer."""
    return getattr(layer.mlp, "gate", None) or getattr(layer.mlp, "router", None)


def gpt_oss(model) -> bool:
    """gpt_oss stores experts as x @ W: down_proj [E, I, H] (units are rows), gate_up_proj [E, H, 2I]."""
    return model.config.model_type == "gpt_oss"


def mask_dropped_experts(model, plan) -> None:
    """Adds 0 / -inf to each router's logits: every router of these architectures computes its
    logits with F.linear(hidden, self.weight), so that call is wrapped while the router runs (and, for a
    sigmoid router, to its e_score_correction_bias)."""
    num_experts = plan["source"]["num_experts"]
    for entry in plan["layers"]:
        router = router_of(model.model.layers[entry["layer"]])
        mask = torch.full((num_experts,), float("-inf"))
        mask[entry["keep"]] = 0.0
        bias = getattr(router, "e_score_correction_bias", None)
        if bias is not None:
            # A sigmoid router (glm4_moe): sigmoid(-inf) = 0 would still be chosen by its bias; a dropped expert's
            # choice score sigmoid(z) + bias must be -inf, so its bias is too (the weights use sigmoid(z) only).
            with torch.no_grad():
                bias.add_(mask.to(bias.dtype))
        original_forward = router.forward

        def forward(hidden, _orig=original_forward, _mask=mask):
            real_linear = torch.nn.functional.linear

            def masked_linear(x, w, b=None):
                return real_linear(x, w, b) + _mask.to(x.dtype)

            torch.nn.functional.linear = masked_linear
            try:
                return _orig(hidden)
            finally:
                torch.nn.functional.linear = real_linear

        router.forward = forward


def plan_units(plan):
    """{layer: [kept unit ids of each kept expert]} decoded from the plan's "dims" (bit k*I + j of
    units_b64, least significant bit first, is unit j of the layer's k-th kept expert)."""
    dims = plan["dims"]
    size = dims["intermediate_size"]
    keep = {entry["layer"]: entry["keep"] for entry in plan["layers"]}
    out = {}
    for entry in dims["layers"]:
        bits = base64.b64decode(entry["units_b64"], validate=True)
        experts = len(keep[entry["layer"]])
        units = [[j for j in range(size) if bits[(k * size + j) // 8] >> ((k * size + j) % 8) & 1]
                 for k in range(experts)]
        if [len(u) for u in units] != entry["widths"]:
            raise SystemExit(f"layer {entry['layer']}: units_b64 does not match widths {entry['widths']}")
        out[entry["layer"]] = units
    return out


def zero_dropped_units(model, plan, units) -> None:
    """Zeroes the down_proj columns of every unit the plan drops from a kept expert (v5 keeps the
    experts fused in memory: down_proj [E, H, I])."""
    size = plan["dims"]["intermediate_size"]
    with torch.no_grad():
        for entry in plan["layers"]:
            down = model.model.layers[entry["layer"]].mlp.experts.down_proj
            for expert, kept in zip(entry["keep"], units[entry["layer"]]):
                dropped = sorted(set(range(size)) - set(kept))
                if gpt_oss(model):
                    down[expert][dropped, :] = 0.0
                else:
                    down[expert][:, dropped] = 0.0


def loaded_widths(model, layer: int):
    experts = model.model.layers[layer].mlp.experts
    if hasattr(experts, "down_proj") and gpt_oss(model):  # [E, I, H]
        return [int(experts.down_proj.shape[1])] * int(experts.down_proj.shape[0])
    if hasattr(experts, "down_proj"):  # stock fused module: one width for every expert
        return [int(experts.down_proj.shape[-1])] * int(experts.down_proj.shape[0])
    return [int(e.down_proj.weight.shape[1]) for e in experts]


def count_zero_width_hits(model, zero_width) -> list:
    """Forward hooks on the routers of layers with width-0 experts; returns a list that fills with
    the number of top-k slots given to those experts per call."""
    hits = []
    for layer, experts in zero_width.items():
        def hook(_module, _inputs, output, _experts=torch.tensor(experts)):
            hits.append(int(torch.isin(output[2], _experts).sum()))
        router_of(model.model.layers[layer]).register_forward_hook(hook)
    return hits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument("--rtol", type=float, default=2e-5, help="bar on max |diff| / max |logit| (see above)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ids", help="JSON token ids [[...], ...] to evaluate (default: random)")
    ap.add_argument("--ours", help="float32 logits of our masked evaluation on --ids")
    args = ap.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)

    pruned = load(args.export, args.trust_remote_code)
    source = load(args.source, False)

    counts = []
    for layer in pruned.model.layers:
        gate = router_of(layer)
        counts.append(int(gate.weight.shape[0]) if gate is not None and hasattr(gate, "top_k") else 0)
    expected = [0] * len(counts)
    for entry in plan["layers"]:
        expected[entry["layer"]] = len(entry["keep"])
    if counts != expected:
        raise SystemExit(f"experts per layer {counts}, plan says {expected}")
    units = plan_units(plan) if "dims" in plan else None
    zero_width = {}
    if units is not None:
        for layer, kept in units.items():
            widths = [len(u) for u in kept]
            loaded = loaded_widths(pruned, layer)
            if loaded != widths:
                raise SystemExit(f"layer {layer}: loaded expert widths {loaded}, plan says {widths}")
            if 0 in widths:
                zero_width[layer] = [k for k, w in enumerate(widths) if w == 0]
    hits = count_zero_width_hits(pruned, zero_width)

    if args.ids:
        with open(args.ids) as f:
            ids = torch.tensor(json.load(f), dtype=torch.long)
    else:
        g = torch.Generator().manual_seed(args.seed)
        ids = torch.randint(0, source.config.vocab_size, (3, 24), generator=g)
    with torch.inference_mode():
        unmasked = source(input_ids=ids).logits
        if units is not None:
            zero_dropped_units(source, plan, units)
        mask_dropped_experts(source, plan)
        a = pruned(input_ids=ids).logits
        b = source(input_ids=ids).logits
    scale = float(b.abs().max())
    diff = float((a - b).abs().max())
    # Guards against a vacuous pass: dropping experts must change the unmasked model's output.
    effect = float((a - unmasked).abs().max())
    report = {"max_abs_diff": diff, "scale": scale, "diff_vs_unpruned": effect, "num_experts_per_layer": counts,
              "model_class": type(pruned).__name__}
    if units is not None:
        report["kept_units_per_layer"] = {str(layer): sum(map(len, kept)) for layer, kept in units.items()}
        report["zero_width_experts"] = sum(len(v) for v in zero_width.values())
        report["zero_width_hits"] = sum(hits)
    ours_diff = None
    if args.ours:
        ours = torch.from_numpy(np.fromfile(args.ours, dtype="<f4")).reshape(a.shape)
        ours_diff = float((a - ours).abs().max())
        report["max_abs_diff_ours"] = ours_diff
    print(json.dumps(report))
    tol = args.rtol * scale
    if not diff <= tol:
        print(f"logits differ: max |diff| = {diff} > {args.rtol} x max |logit| {scale}", file=sys.stderr)
        return 1
    if ours_diff is not None and not ours_diff <= tol:
        print(f"export vs our masked evaluation: max |diff| = {ours_diff} > {args.rtol} x max |logit| {scale}",
              file=sys.stderr)
        return 1
    if not effect > 1e-3 * scale:
        print(f"pruning had no visible effect (max |diff| vs unpruned = {effect}, max |logit| {scale}): "
              "check is vacuous", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
