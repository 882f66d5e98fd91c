#!/usr/bin/env python3
"""Recompute a dimension plan's kept units from the atlas with h5py/numpy and compare.

Usage: check_dim_plan.py --atlas ATLAS --plan plan.json

Independent of MoE Atlas's C++: reads /fisher/<form>/units (float64, [D+1, L, E, I], or [L, E, I] for
magnitude) and the row the plan's "dims" names (its domain, the pooled row when the domain is ""),
then applies the rules of docs/plans.md ("Dimension pruning", after METHODS.md section 4) to the
experts the plan keeps:
  IntDim-E  every kept expert drops its int(I * r) lowest units;
  IntDim-L  each layer drops the int(n_l * r) lowest of its kept experts' n_l units;
  IntDim-G  the int(n * r) lowest of all n units of all kept experts go;
ties: the higher score stays, then the lower (layer, expert, unit). The plan's units_b64 (bit k*I + j,
least significant first, = unit j of the layer's k-th kept expert) must hold exactly these units.
Prints one JSON line {"units_kept", "units_total", "zero_width", "layers"}; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

import h5py
import numpy as np

FORMS = {"fisher_mask": "mask", "fisher_weight": "weight", "fisher_grad_abs": "grad_abs",
         "activation": "activation", "magnitude": "magnitude"}


def scores(atlas: str, criterion: str, domain: str):
    """(decoder layers, [L, E, I] float64 scores of the row)."""
    with h5py.File(atlas, "r") as f:
        params = json.loads(f["fisher"].attrs["params"])
        form = FORMS[criterion]
        units = f[f"fisher/{form}/units"][()]
    if form != "magnitude":
        units = units[params["domains"].index(domain or "pooled")]
    return params["layers"], np.asarray(units, dtype=np.float64)


def expected_units(plan, layers, table):
    dims = plan["dims"]
    rate = dims["sparsity"]
    size = dims["intermediate_size"]
    row_of = {layer: i for i, layer in enumerate(layers)}
    entries = sorted(plan["layers"], key=lambda e: e["layer"])
    # Every kept unit as (score, layer, expert, unit).
    pool = []
    for entry in entries:
        for expert in entry["keep"]:
            values = table[row_of[entry["layer"]], expert]
            pool.extend((values[j], entry["layer"], expert, j) for j in range(size))

    def keep_best(items):
        items = sorted(items, key=lambda t: (-t[0], t[1], t[2], t[3]))
        return items[: len(items) - int(len(items) * rate)]

    scope = dims["scope"]
    if scope == "IntDim-G":
        kept = keep_best(pool)
    else:
        groups = {}
        for item in pool:
            groups.setdefault(item[1] if scope == "IntDim-L" else (item[1], item[2]), []).append(item)
        kept = [k for group in groups.values() for k in keep_best(group)]
    out = {entry["layer"]: {expert: [] for expert in entry["keep"]} for entry in entries}
    for _, layer, expert, unit in kept:
        out[layer][expert].append(unit)
    return {layer: [sorted(units[e]) for e in sorted(units)] for layer, units in out.items()}


def plan_units(plan):
    size = plan["dims"]["intermediate_size"]
    keep = {entry["layer"]: entry["keep"] for entry in plan["layers"]}
    out = {}
    for entry in plan["dims"]["layers"]:
        bits = base64.b64decode(entry["units_b64"], validate=True)
        out[entry["layer"]] = [[j for j in range(size) if bits[(k * size + j) // 8] >> ((k * size + j) % 8) & 1]
                               for k in range(len(keep[entry["layer"]]))]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--atlas", required=True)
    ap.add_argument("--plan", required=True)
    args = ap.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    layers, table = scores(args.atlas, plan["dims"]["criterion"], plan["dims"]["domain"])
    want = expected_units(plan, layers, table)
    got = plan_units(plan)
    kept = sum(len(u) for units in want.values() for u in units)
    total = sum(len(e["keep"]) for e in plan["layers"]) * plan["dims"]["intermediate_size"]
    zero = sum(1 for units in want.values() for u in units if not u)
    print(json.dumps({"units_kept": kept, "units_total": total, "zero_width": zero, "layers": sorted(want)}))
    for layer in want:
        if got.get(layer) != want[layer]:
            print(f"layer {layer}: plan keeps {got.get(layer)}, expected {want[layer]}", file=sys.stderr)
            return 1
    if set(got) != set(want):
        print(f"plan has dims for layers {sorted(got)}, expected {sorted(want)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
