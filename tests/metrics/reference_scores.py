#!/usr/bin/env python3
"""Independent numpy + h5py implementation of the atlas scores, routing statistics and ProbMoE tables.

Written from the published definitions (PreMoE arXiv 2505.17639 v3 for PEU and its
Act-/All-Logits ablations; REAP; OLMoE co-activation; ProbMoE arXiv 2606.01509 for m99,
dynamic-k and the exact-k distribution), not from the C++ code. The exact-k quantities are
computed by enumerating every subset of each needed size (when there are at most
ENUMERATE_LIMIT of them; otherwise by a float64 log-space forward-backward DP), where the C++
code runs a scaled linear-space DP. Two uses:

  reference_scores.py ATLAS --check [params]   compare with /scores, /statistics and /probmoe in
                                                ATLAS (relative tolerance 1e-9); exit 1 on mismatch
  reference_scores.py ATLAS --time [params]    compute everything, print seconds (benchmark)
"""
import argparse
import itertools
import math
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


ENUMERATE_LIMIT = 20000


def logsumexp(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def log_esp(s, sizes):
    """{c: log e_c(exp s)} per token (e_c = elementary symmetric polynomial of the odds exp(s)),
    and the marginals of size k: mu_i = P(z_i = 1 | |S| = k) for p_i = sigmoid(s_i)."""
    T, E = s.shape
    k = sizes[-1]
    if sum(math.comb(E, c) for c in sizes) <= ENUMERATE_LIMIT:
        out, mu = {}, None
        for c in sizes:
            subsets = np.array(list(itertools.combinations(range(E), c)), dtype=np.int64).reshape(-1, c)
            lw = s[:, subsets].sum(axis=2)  # [T, S]: log prod_{i in S} exp(s_i)
            out[c] = logsumexp(lw, axis=1)
            if c == k:
                onehot = np.zeros((len(subsets), E))
                np.put_along_axis(onehot, subsets, 1.0, axis=1)
                mu = np.exp(lw - out[c][:, None]) @ onehot
        return out, mu
    # Log-space DP (METHODS.md section 5, less log Q), forward and backward, in token chunks.
    n = max(sizes) + 1
    out = {c: np.empty(T) for c in sizes}
    mu = np.empty((T, E))
    for t0 in range(0, T, 2048):
        x = s[t0:t0 + 2048]
        fw = np.full((E + 1, len(x), n), -np.inf)
        fw[0, :, 0] = 0.0
        for i in range(E):
            fw[i + 1] = fw[i]
            fw[i + 1, :, 1:] = np.logaddexp(fw[i, :, 1:], fw[i, :, :-1] + x[:, i:i + 1])
        bw = np.full((len(x), n), -np.inf)  # polynomials of the experts after i
        bw[:, 0] = 0.0
        for i in range(E - 1, -1, -1):
            # e_{k-1} of all experts but i = sum_j fw[i][j] * bw[k-1-j]
            terms = fw[i, :, :k] + bw[:, k - 1::-1][:, :k]
            mu[t0:t0 + len(x), i] = np.exp(x[:, i] + logsumexp(terms, axis=1) - fw[E, :, k])
            nb = bw.copy()
            nb[:, 1:] = np.logaddexp(bw[:, 1:], bw[:, :-1] + x[:, i:i + 1])
            bw = nb
        for c in sizes:
            out[c][t0:t0 + len(x)] = fw[E, :, c]
    return out, mu


def exact_k(s, ids, k, bmin, bmax):
    """Per token: exact-k marginals [T, E], log P(recorded top-k | |S| = k), the cardinality
    distribution over the band [T, B] and its entropy (nats)."""
    sizes = sorted(set(range(bmin, bmax + 1)) - {k}) + [k]
    le, mu = log_esp(s, sizes)
    lp = np.take_along_axis(s, ids, axis=1).sum(axis=1) - le[k]
    band = np.stack([le[c] for c in range(bmin, bmax + 1)], axis=1)
    logp = band - logsumexp(band, axis=1)[:, None]
    card = np.exp(logp)
    ent = -(card * logp).sum(axis=1)
    return mu, lp, card, ent


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
    B = bmax - bmin + 1
    pm = {n: z3() for n in ["ksum", "lpsum", "psum", "entsum"]}
    pm.update(marg=z3(E), card=z3(B))
    no_fallback = True
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
        mu, set_lp, card, cent = exact_k(s, ids, k, bmin, bmax)
        # e_c(exp(s - max)) >= exp(-(c - 1) * spread) for c >= 1: no token can need the C++ code's
        # log-space path (below 1e-200) while this stays under 460; then log_space_tokens must be 0.
        spread = s.max(axis=1) - s.min(axis=1)
        no_fallback = no_fallback and bool((spread * (max(bmax, k) - 1) < 460).all())
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
            pm["marg"][d, li] = mu[m].sum(axis=0)
            pm["card"][d, li] = card[m].sum(axis=0)
            pm["entsum"][d, li] = cent[m].sum()
            pm["ksum"][d, li] = kstar[m].sum()
            pm["lpsum"][d, li] = set_lp[m].sum()
            pm["psum"][d, li] = np.exp(set_lp[m]).sum()
            np.add.at(acc["freq"][d, li], ids[m], 1.0)
            if has_norms:
                np.add.at(acc["norm"][d, li], ids[m], nrm[m])
                np.add.at(acc["gnorm"][d, li], ids[m], w[m] * nrm[m])
            acc["coact"][d, li] = onehot[m].T @ onehot[m]
            _, counts = np.unique(np.sort(ids[m], axis=1), axis=0, return_counts=True)
            patterns[d][li] = (np.unique(np.sort(ids[m], axis=1), axis=0), counts)
    scores, stats = derive(acc, patterns, D, L, E, k, bmin, seed, has_norms)
    tok = acc["tokens"]
    scores["scores/probmoe_marginal"] = ratio(pm["marg"], np.repeat(tok[..., None], E, axis=2))
    probmoe = {"token_counts": tok, "marginal_sums": pm["marg"], "cardinality_sums": pm["card"],
               "cardinality_entropy_sums": pm["entsum"], "kstar_sums": pm["ksum"],
               "topk_log_prob_sums": pm["lpsum"], "topk_prob_sums": pm["psum"],
               "marginal_mean": scores["scores/probmoe_marginal"],
               "cardinality": ratio(pm["card"], np.repeat(tok[..., None], B, axis=2)),
               "cardinality_entropy": ratio(pm["entsum"], tok), "kstar_mean": ratio(pm["ksum"], tok),
               "topk_log_prob": ratio(pm["lpsum"], tok), "topk_prob": ratio(pm["psum"], tok)}
    if no_fallback:
        probmoe["log_space_tokens"] = np.zeros((D, L))
    return scores, stats, probmoe


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
        scores, stats, probmoe = compute(f, args.pool_k, args.transform, band, args.seed)
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
        for group, arrays in (("statistics", stats), ("probmoe", probmoe)):
            if group not in f:
                failures.append(f"{group}: missing in atlas")
                continue
            for name, ref in arrays.items():
                ok, why = close(f[group][name][:], ref)
                checked += 1
                if not ok:
                    failures.append(f"{group}/{name}: {why}")
        for line in failures:
            print(line, file=sys.stderr)
        print(f"checked {checked} arrays, {len(failures)} mismatches")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
