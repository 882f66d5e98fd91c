#!/usr/bin/env python3
"""Independent numpy + h5py implementation of the atlas scores and routing statistics.

Written from the published definitions (PreMoE arXiv 2505.17639 v3 for PEU and its
Act-/All-Logits ablations; REAP; OLMoE co-activation; ProbMoE arXiv 2606.01509 for m99 and
dynamic-k), not from the C++ code. Two uses:

  reference_scores.py ATLAS --check [params]   compare with /scores and /statistics in ATLAS
                                                (relative tolerance 1e-9); exit 1 on mismatch
  reference_scores.py ATLAS --time [params]    compute everything, print seconds (benchmark)
"""
import argparse
import sys
import time

import h5py
import numpy as np

MASK64 = (1 << 64) - 1


def transform(name, s):
    sig = 1.0 / (1.0 + np.exp(-s))
    return {"max-sigmoid": np.maximum(s, sig), "sigmoid": sig, "exp": np.exp(s),
            "identity": s}[name]


def random_scores(seed, n):
    out = np.empty(n)
    for i in range(n):
        z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        out[i] = (z >> 11) * 2.0 ** -53
    return out


def compute(f, pool_k=0, tf="max-sigmoid", band=None, seed=0):
    model = f["model"]
    E, k = int(model.attrs["num_experts"]), int(model.attrs["top_k"])
    layers = model["moe_layers"][:]
    L = len(layers)
    K = pool_k or k
    bmin, bmax = band if band else (max(1, k - 2), k)
    dom = f["tokens/domain"][:].astype(np.int64)
    D = len(f["calibration/domains/name"])
    has_norms = "expert_norms" in f[f"layers/{layers[0]}"]
    z3 = lambda *s: np.zeros((D, L) + s)
    acc = {n: z3(E) for n in ["peu", "freq", "act", "all", "soft", "norm", "gnorm", "m99"]}
    acc.update(tokens=z3(), top=z3(), ent=z3(), coact=z3(E, E), dynk=z3(bmax - bmin + 1))
    patterns = [[None] * L for _ in range(D)]
    for li, layer in enumerate(layers):
        g = f[f"layers/{layer}"]
        s = g["router_logits"][:].astype(np.float64)
        ids = g["topk_ids"][:].astype(np.int64)
        w = g["topk_weights"][:].astype(np.float64)
        nrm = g["expert_norms"][:].astype(np.float64) if has_norms else None
        # Full softmax: soft mass, entropy / log E, m99.
        ex = np.exp(s - s.max(axis=1, keepdims=True))
        p = ex / ex.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) / (np.log(E) if E > 1 else 1)
        cs = np.cumsum(-np.sort(-p, axis=1), axis=1)
        reach = cs >= 0.99
        m99 = np.where(reach.any(axis=1), reach.argmax(axis=1) + 1, E)
        # Top-K_a pool, ties to the lower expert id, local softmax.
        order = np.argsort(-s, axis=1, kind="stable")[:, :K]
        ps = np.take_along_axis(s, order, axis=1)
        local = np.exp(ps - ps[:, :1])
        lz = local.sum(axis=1)
        lp = local / lz[:, None]
        kstar = np.clip((s > 0).sum(axis=1), bmin, bmax)
        onehot = np.zeros((len(s), E))
        np.put_along_axis(onehot, ids, 1.0, axis=1)
        for d in range(D):
            m = dom == d
            n = m.sum()
            acc["tokens"][d, li] = n
            acc["top"][d, li] = (1.0 / lz[m]).sum()
            r = acc["top"][d, li] / n if n else 0.0
            keep = lp[m] >= r
            np.add.at(acc["peu"][d, li], order[m], transform(tf, ps[m]) * keep)
            np.add.at(acc["act"][d, li], order[m], ps[m])
            acc["all"][d, li] = s[m].sum(axis=0)
            acc["soft"][d, li] = p[m].sum(axis=0)
            acc["ent"][d, li] = ent[m].sum()
            np.add.at(acc["m99"][d, li], m99[m] - 1, 1.0)
            np.add.at(acc["dynk"][d, li], kstar[m] - bmin, 1.0)
            np.add.at(acc["freq"][d, li], ids[m], 1.0)
            if has_norms:
                np.add.at(acc["norm"][d, li], ids[m], nrm[m])
                np.add.at(acc["gnorm"][d, li], ids[m], w[m] * nrm[m])
            acc["coact"][d, li] = onehot[m].T @ onehot[m]
            _, counts = np.unique(np.sort(ids[m], axis=1), axis=0, return_counts=True)
            patterns[d][li] = (np.unique(np.sort(ids[m], axis=1), axis=0), counts)
    return derive(acc, patterns, D, L, E, k, bmin, seed, has_norms)


def ratio(sums, counts):
    with np.errstate(divide="ignore", invalid="ignore"):
        dom = np.where(counts > 0, sums / counts, 0.0)
        tot_c = counts.sum(axis=0)
        pooled = np.where(tot_c > 0, sums.sum(axis=0) / tot_c, 0.0)
    return np.concatenate([dom, pooled[None]], axis=0)


def derive(a, patterns, D, L, E, k, bmin, seed, has_norms):
    tok = np.repeat(a["tokens"][..., None], E, axis=2)
    out = {"scores/peu": ratio(a["peu"], tok), "scores/frequency": ratio(a["freq"], tok),
           "scores/act_logits": ratio(a["act"], tok), "scores/all_logits": ratio(a["all"], tok),
           "scores/soft_mass": ratio(a["soft"], tok),
           "scores/random": np.broadcast_to(random_scores(seed, L * E).reshape(1, L, E),
                                            (D + 1, L, E))}
    if has_norms:
        out["scores/reap"] = ratio(a["gnorm"], a["freq"])
        out["scores/ean"] = ratio(a["norm"], tok)
    pool = lambda x: np.concatenate([x, x.sum(axis=0)[None]], axis=0)
    tokens, load = pool(a["tokens"]), pool(a["freq"])
    st = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(load.sum(-1, keepdims=True) > 0, load / load.sum(-1, keepdims=True), 0)
        mean = 1.0 / E
        st["load_share"] = share
        st["load_cv"] = np.sqrt(((share - mean) ** 2).mean(-1)) / mean
        st["load_max_vio"] = (share.max(-1) - mean) / mean
        st["load_entropy"] = -np.where(share > 0, share * np.log(share), 0).sum(-1) / np.log(E)
        st["token_entropy"] = pool(a["ent"]) / tokens
        st["m99_mean"] = (pool(a["m99"]) * np.arange(1, E + 1)).sum(-1) / tokens
        st["dynamic_k_mean"] = (pool(a["dynk"]) * (bmin + np.arange(a["dynk"].shape[-1]))).sum(-1) / tokens
        st["dynamic_k_fraction"] = st["dynamic_k_mean"] / k
        dom_share = a["tokens"] / a["tokens"].sum(axis=0)
        st["specialisation"] = np.where(load[D] > 0, a["freq"] / load[D] / dom_share[..., None], 0)
        co = a["coact"].sum(axis=0)
        diag = np.diagonal(co, axis1=1, axis2=2)
        st["coactivation"] = np.where(diag[..., None] > 0, co / diag[..., None], 0)
    distinct, pent = np.zeros((D + 1, L)), np.zeros((D + 1, L))
    for li in range(L):
        rows = [patterns[d][li] for d in range(D)]
        allp = np.concatenate([r[0] for r in rows]) if D else np.zeros((0, k))
        allc = np.concatenate([r[1] for r in rows])
        uniq, inv = np.unique(allp, axis=0, return_inverse=True)
        pooled = np.bincount(inv.ravel(), weights=allc, minlength=len(uniq))
        for d, c in enumerate([r[1] for r in rows] + [pooled]):
            q = c / c.sum()
            distinct[d, li] = len(c)
            pent[d, li] = -(q * np.log(q)).sum()
    st["distinct_patterns"], st["pattern_entropy"] = distinct, pent
    st["token_counts"], st["load_counts"] = a["tokens"], a["freq"]
    st["m99_hist"], st["dynamic_k_hist"] = a["m99"], a["dynk"]
    st["coactivation_counts"], st["token_entropy_sums"] = a["coact"], a["ent"]
    return out, st


def close(ours, ref, rtol=1e-9, atol=1e-12):
    """Float64 on both sides from the same stored logits, in other summation orders and with numpy's own
    (possibly SIMD) exp/log: rounding differences of a few ulp times the terms summed, far below 1e-9
    relative on any CPU; atol covers values that cancel to ~0."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return False, f"shape {ours.shape} vs {ref.shape}"
    err = np.abs(ours - ref) - rtol * np.maximum(np.abs(ours), np.abs(ref))
    worst = np.unravel_index(np.argmax(err), err.shape) if err.size else None
    ok = err.size == 0 or err.max() <= atol
    return ok, "" if ok else f"at {worst}: ours {ours[worst]!r} reference {ref[worst]!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("atlas")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--pool-k", type=int, default=0)
    ap.add_argument("--transform", default="max-sigmoid")
    ap.add_argument("--band", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    band = tuple(int(x) for x in args.band.split(":")) if args.band else None
    with h5py.File(args.atlas, "r") as f:
        t0 = time.perf_counter()
        scores, stats = compute(f, args.pool_k, args.transform, band, args.seed)
        elapsed = time.perf_counter() - t0
        if args.time:
            print(f"{elapsed:.6f}")
            return 0
        failures, checked = [], 0
        for group, ref in scores.items():
            if group not in f:
                failures.append(f"{group}: missing in atlas")
                continue
            ok, why = close(f[group]["value"][:], ref)
            checked += 1
            if not ok:
                failures.append(f"{group}/value: {why}")
        for name, ref in stats.items():
            ok, why = close(f["statistics"][name][:], ref)
            checked += 1
            if not ok:
                failures.append(f"statistics/{name}: {why}")
        for line in failures:
            print(line, file=sys.stderr)
        print(f"checked {checked} arrays, {len(failures)} mismatches")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
