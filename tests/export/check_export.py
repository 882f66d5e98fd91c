#!/usr/bin/env python3
"""Check a MoE Atlas export against its source checkpoint with stock transformers.

Usage: check_export.py --source DIR --export DIR --plan plan.json [--trust-remote-code] [--tol 1e-4]
                       [--ids ids.json --ours logits.f32]

1. AutoModelForCausalLM.from_pretrained(export) loads with no missing, unexpected or mismatched keys
   (trust_remote_code only when asked: a uniform export must load without it).
2. The source model, with the router logits of dropped experts set to -inf before the softmax (so the
   softmax runs over the kept experts only, as in the pruned model), gives the same logits as the
   export on random token ids: max |diff| <= tol.
3. With --ids/--ours: the export's logits on those ids ([[...], ...], B sequences of S tokens) equal
   MoE Atlas's masked evaluation of the plan on the source (raw little-endian float32 [B, S, V]).
Prints one JSON line {"max_abs_diff", "num_experts_per_layer", ...}; exits 1 on failure.
"""

from __future__ import annotations

import argparse
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


def mask_dropped_experts(model, plan) -> None:
    """Adds 0 / -inf to each router's logits: every router of these architectures computes its
    logits with F.linear(hidden, self.weight), so that call is wrapped while the router runs."""
    num_experts = plan["source"]["num_experts"]
    for entry in plan["layers"]:
        router = model.model.layers[entry["layer"]].mlp.gate
        mask = torch.full((num_experts,), float("-inf"))
        mask[entry["keep"]] = 0.0
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-4)
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
        gate = getattr(layer.mlp, "gate", None)
        counts.append(int(gate.weight.shape[0]) if gate is not None and hasattr(gate, "top_k") else 0)
    expected = [0] * len(counts)
    for entry in plan["layers"]:
        expected[entry["layer"]] = len(entry["keep"])
    if counts != expected:
        raise SystemExit(f"experts per layer {counts}, plan says {expected}")

    if args.ids:
        with open(args.ids) as f:
            ids = torch.tensor(json.load(f), dtype=torch.long)
    else:
        g = torch.Generator().manual_seed(args.seed)
        ids = torch.randint(0, source.config.vocab_size, (3, 24), generator=g)
    with torch.inference_mode():
        unmasked = source(input_ids=ids).logits
        mask_dropped_experts(source, plan)
        a = pruned(input_ids=ids).logits
        b = source(input_ids=ids).logits
    diff = float((a - b).abs().max())
    # Guards against a vacuous pass: dropping experts must change the unmasked model's output.
    effect = float((a - unmasked).abs().max())
    report = {"max_abs_diff": diff, "diff_vs_unpruned": effect, "num_experts_per_layer": counts,
              "model_class": type(pruned).__name__}
    ours_diff = None
    if args.ours:
        ours = torch.from_numpy(np.fromfile(args.ours, dtype="<f4")).reshape(a.shape)
        ours_diff = float((a - ours).abs().max())
        report["max_abs_diff_ours"] = ours_diff
    print(json.dumps(report))
    if not diff <= args.tol:
        print(f"logits differ: max |diff| = {diff} > {args.tol}", file=sys.stderr)
        return 1
    if ours_diff is not None and not ours_diff <= args.tol:
        print(f"export vs our masked evaluation: max |diff| = {ours_diff} > {args.tol}", file=sys.stderr)
        return 1
    if not effect > 10 * args.tol:
        print(f"pruning had no visible effect (max |diff| vs unpruned = {effect}): check is vacuous", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
