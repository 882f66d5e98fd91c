#!/usr/bin/env python3
"""Reads /fisher of an atlas written by `moeatlas fisher` strictly as docs/atlas-format.md
("Fisher tables") describes it, and recomputes with numpy what follows from the stored numbers:
the pooled counts and pooled rows from the domain rows, the expert sums, every concentration share,
and which units each ablation variant removed (the top-n of the stored scores, ties to the lower
index). Exits non-zero on the first mismatch.

usage: check_fisher_h5py.py ATLAS
"""
import hashlib
import json
import math
import sys

import h5py
import numpy as np

GRADIENT_FORMS = ("mask", "weight", "grad_abs")
DOMAIN_FORMS = GRADIENT_FORMS + ("activation",)


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def string_attr(obj, name):
    check(name in obj.attrs, f"{obj.name}: attribute {name} missing")
    info = h5py.check_string_dtype(obj.attrs.get_id(name).dtype)
    check(info is not None and info.length is None, f"{obj.name}@{name}: not a variable-length string")
    value = obj.attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def dataset(f, path, shape):
    check(path in f, f"{path}: missing")
    d = f[path]
    check(isinstance(d, h5py.Dataset), f"{path}: not a dataset")
    check(d.dtype == np.float64, f"{path}: dtype {d.dtype}, want float64")
    check(d.shape == tuple(shape), f"{path}: shape {d.shape}, want {tuple(shape)}")
    return d[()]


def close(got, want, what, rtol=1e-12):
    """float64 recomputations from the stored float64 arrays (sums, weighted means, shares) in numpy's order
    instead of ours: rounding alone, so 1e-12 of the largest |want| on any CPU."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    check(got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}")
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-300)
    err = float(np.abs(got - want).max(initial=0.0)) / scale
    check(err <= rtol, f"{what}: relative error {err:.3g} > {rtol}")


def shares(scores, fractions):
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())[::-1]
    total = s.sum()
    out = []
    for f in fractions:
        count = min(len(s), max(1, math.ceil(f * len(s) - 1e-9)))  # 0.07 * 100 is 7.000000000000001
        out.append(s[:count].sum() / total if total > 0 else 0.0)
    return np.array(out)


def main(path):
    f = h5py.File(path, "r")
    check("fisher" in f, "/fisher: missing")
    g = f["fisher"]
    params = string_attr(g, "params")
    check(string_attr(g, "inputs_hash") == hashlib.sha256(params.encode()).hexdigest(),
          "/fisher@inputs_hash is not the SHA-256 of params")
    p = json.loads(params)
    check(p["format"] == "moeatlas-fisher" and p["version"] == 1, "/fisher params: format/version")
    domains = p["domains"]
    check(domains and domains[-1] == "pooled", "/fisher params: domains must end with pooled")
    D, L, E, I = len(domains) - 1, len(p["layers"]), p["num_experts"], p["intermediate_size"]
    R = D + 1

    check(list(dataset(f, "fisher/layers", [L])) == p["layers"], "/fisher/layers != params layers")
    samples = dataset(f, "fisher/samples", [R])
    tokens = dataset(f, "fisher/tokens", [R])
    routed = dataset(f, "fisher/expert_tokens", [R, L, E])
    check(samples[D] == samples[:D].sum() and samples[D] == p["samples"], "/fisher/samples: pooled is not the sum")
    check(tokens[D] == tokens[:D].sum() and tokens[D] == p["tokens"], "/fisher/tokens: pooled is not the sum")
    check(np.array_equal(routed[D], routed[:D].sum(axis=0)), "/fisher/expert_tokens: pooled is not the sum")
    check(np.all(samples[:D] > 0), "/fisher/samples: a domain without samples")

    conc = f["fisher/concentration"]
    fractions = json.loads(string_attr(conc, "params"))["fractions"]
    check(fractions == p["concentration_fractions"] == [1e-05, 0.0001, 0.001, 0.01],
          "/fisher/concentration params: fractions")
    forms = p["forms"]
    check(set(forms) <= set(DOMAIN_FORMS) | {"magnitude"} and len(set(forms)) == len(forms), f"forms {forms}")
    check(sorted(k for k in g.keys() if isinstance(g[k], h5py.Group) and k not in ("concentration", "ablation"))
          == sorted(forms), f"/fisher groups {sorted(g.keys())} != forms {forms}")
    units_of = {}
    for form in forms:
        grp = f["fisher/" + form]
        check(json.loads(string_attr(grp, "params")) == {"form": form}, f"/fisher/{form}@params")
        rows = 1 if form == "magnitude" else R
        lead = [] if form == "magnitude" else [R]
        units = dataset(f, f"fisher/{form}/units", lead + [L, E, I])
        experts = dataset(f, f"fisher/{form}/experts", lead + [L, E])
        check(np.all(np.isfinite(units)) and np.all(units >= 0), f"/fisher/{form}/units: negative or non-finite")
        close(experts, units.sum(axis=-1), f"/fisher/{form}/experts vs the sum of its units")
        if form in GRADIENT_FORMS:
            pooled = (units[:D] * samples[:D, None, None, None]).sum(axis=0) / samples[D]
            close(units[D], pooled, f"/fisher/{form}/units pooled row vs the sample-weighted domains")
        elif form == "activation":
            n = routed[D][:, :, None]
            weighted = (units[:D] * routed[:D, :, :, None]).sum(axis=0)
            pooled = np.where(n > 0, weighted / np.maximum(n, 1), 0.0)
            close(units[D], pooled, "/fisher/activation/units pooled row vs the routed-token-weighted domains")
        stored = dataset(f, f"fisher/concentration/{form}", [rows, L + 1, len(fractions)])
        u = units.reshape(rows, L, E * I)
        for r in range(rows):
            for l in range(L + 1):
                want = shares(u[r] if l == L else u[r, l], fractions)
                close(stored[r, l], want, f"/fisher/concentration/{form}[{r}, {l}]", rtol=1e-12)
        units_of[form] = units

    if "ablation" in g:
        a = g["ablation"]
        ap = json.loads(string_attr(a, "params"))
        check(ap["format"] == "moeatlas-fisher-ablation" and ap["version"] == 1, "/fisher/ablation params: format")
        check(ap["form"] in units_of and ap["form"] != "magnitude", f"/fisher/ablation ranks by {ap['form']}")
        variants, cols = ap["variants"], ap["domains"]
        V = len(variants)
        nll = dataset(f, "fisher/ablation/nll", [V, len(cols)])
        check(np.all(np.isfinite(nll)) and np.all(nll > 0), "/fisher/ablation/nll: not positive and finite")
        check(np.all(dataset(f, "fisher/ablation/tokens", [len(cols)]) > 0), "/fisher/ablation/tokens")
        removed = dataset(f, "fisher/ablation/removed", [V])
        M = int(removed.max(initial=0))
        ru = dataset(f, "fisher/ablation/removed_units", [V, M, 3])
        check(variants[0]["name"] == "full" and variants[0]["removed"] == 0, "the full model comes first")
        scores = units_of[ap["form"]].reshape(R, L * E * I)
        layer_index = {layer: i for i, layer in enumerate(p["layers"])}
        for v, var in enumerate(variants):
            n = var["removed"]
            check(removed[v] == n, f"variant {v}: removed {removed[v]} != params {n}")
            check(np.all(ru[v, n:] == -1), f"variant {v}: padding is not -1")
            rows = ru[v, :n].astype(np.int64)
            check(np.all(rows >= 0) and np.all(rows[:, 1] < E) and np.all(rows[:, 2] < I), f"variant {v}: unit range")
            flat = np.array([(layer_index[int(la)] * E + e) * I + j for la, e, j in rows], dtype=np.int64)
            check(len(set(flat.tolist())) == n, f"variant {v}: removed units are not distinct")
            ranking = var["ranking"]
            if ranking == "full":
                check(var["name"] == "full" and n == 0, f"variant {v}: full")
            elif ranking == "random":
                check(var["name"] == f"random-{n}" and np.all(np.diff(flat) > 0), f"variant {v}: random, ascending")
            else:
                check(var["name"] == f"top-{n}:{ranking}" and ranking in domains, f"variant {v}: name {var['name']}")
                order = np.argsort(-scores[domains.index(ranking)], kind="stable")[:n]
                check(np.array_equal(flat, order), f"variant {v} ({var['name']}): not the top-{n} of the stored scores")
    print("check_fisher_h5py.py: all checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1])
    except Mismatch as e:
        print(f"check_fisher_h5py.py: MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
