#!/usr/bin/env python3
"""Exact-k tables: bench_exact_k (C++, metrics/exact_k.h) vs a vectorised torch implementation of the
same DP (float64, log space over log p and log(1 - p) as in METHODS.md section 5; marginals by the
forward-backward DP), on the same logits, in the same run.

    .venv/bin/python bench/bench_exact_k.py --binary build/bench/bench_exact_k [--tokens 65536]
        [--layers 16] [--experts 64] [--k 8] [--band 6:8] [--threads 2] [--repeats 3]

Tables per layer: log Z over the band, marginals for k, the cardinality distribution over the band and
its entropy, per token, then their means per layer. Both sides are timed on the computation only
(logits in memory; the C++ program reports its own time, its process start and file read excluded).
Each repeat runs both, one after the other; the best time of each is kept. The results are compared
(layer 0 per token, every layer's means).
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def logits_for(L, T, E, seed=0):
    # Router-like logits: per token N(0, 1.5^2) around a per-expert bias N(0, 0.5^2), as bench_scores.py.
    rng = np.random.default_rng(seed)
    out = np.empty((L, T, E), dtype=np.float32)
    for l in range(L):
        out[l] = (rng.standard_normal((T, E), dtype=np.float32) * 1.5
                  + rng.standard_normal(E).astype(np.float32) * 0.5)
    return out


def exact_k_torch_log(theta, kmin, kmax, k, chunk=8192):
    """METHODS.md's DP in log space. theta [T, E] float32 -> (logZ [T, B], mu [T, E], card [T, B],
    entropy [T]), float64. Tokens are the innermost dimension, so every op runs on contiguous rows."""
    T, E = theta.shape
    K = max(kmax, k)
    B = kmax - kmin + 1
    logz_out = torch.empty(T, B, dtype=torch.float64)
    mu = torch.empty(E, T, dtype=torch.float64)
    ninf = float("-inf")
    for s in range(0, T, chunk):
        th = theta[s:s + chunk].double().t().contiguous()  # [E, n]
        n = th.shape[1]
        lp = -F.softplus(-th)  # log p
        lq = -F.softplus(th)  # log(1 - p)
        # alpha[i][c] = log P(sum of the first i z = c)
        alpha = torch.full((E + 1, K + 1, n), ninf, dtype=torch.float64)
        alpha[0, 0] = 0.0
        for i in range(E):
            prev, nxt = alpha[i], alpha[i + 1]
            torch.add(prev[0], lq[i], out=nxt[0])
            torch.logaddexp(prev[:-1] + lp[i], prev[1:] + lq[i], out=nxt[1:])
        logz = alpha[E]  # [K + 1, n]
        # Backward rows kept reversed: rb[r] = log P(sum of the z after i = k - 1 - r).
        rb = torch.full((k, n), ninf, dtype=torch.float64)
        rb[k - 1] = 0.0
        for i in range(E - 1, -1, -1):
            t = torch.logsumexp(alpha[i][:k] + rb, dim=0)
            mu[i, s:s + n] = torch.exp(lp[i] + t - logz[k])
            new = torch.empty_like(rb)
            torch.add(rb[k - 1], lq[i], out=new[k - 1])
            if k > 1:
                torch.logaddexp(rb[1:] + lp[i], rb[:-1] + lq[i], out=new[:-1])
            rb = new
        logz_out[s:s + n] = logz[kmin:kmax + 1].t()
    return finish(logz_out, mu.t())


def exact_k_torch_linear(theta, kmin, kmax, k, chunk=8192):
    """The scaled linear-space DP of metrics/exact_k.cpp (odds exp(theta - max)), without its log-space
    fallback (these logits never need it). Same outputs as exact_k_torch_log."""
    T, E = theta.shape
    K = max(kmax, k)
    B = kmax - kmin + 1
    logz_out = torch.empty(T, B, dtype=torch.float64)
    mu = torch.empty(E, T, dtype=torch.float64)
    cs = torch.arange(kmin, kmax + 1, dtype=torch.float64).unsqueeze(1)
    for s in range(0, T, chunk):
        th = theta[s:s + chunk].double().t().contiguous()  # [E, n]
        n = th.shape[1]
        m = th.max(dim=0).values
        w = torch.exp(th - m)
        log_q = -F.softplus(th).sum(dim=0)
        alpha = torch.zeros((E + 1, K + 1, n), dtype=torch.float64)
        alpha[:, 0] = 1.0
        for i in range(E):
            torch.addcmul(alpha[i, 1:], alpha[i, :-1], w[i], out=alpha[i + 1, 1:])
        ek = alpha[E, k]
        b = torch.zeros((k, n), dtype=torch.float64)  # reversed: b[r] = e_{k-1-r} of the experts after i
        b[k - 1] = 1.0
        for i in range(E - 1, -1, -1):
            mu[i, s:s + n] = w[i] * (alpha[i, :k] * b).sum(dim=0) / ek
            if k > 1:
                b[:-1] = torch.addcmul(b[:-1], b[1:], w[i])
        logz_out[s:s + n] = (cs * m + torch.log(alpha[E, kmin:kmax + 1]) + log_q).t()
    return finish(logz_out, mu.t())


def finish(logz, mu):
    lcard = torch.log_softmax(logz, dim=1)
    card = lcard.exp()
    return logz, mu, card, -(card * lcard).sum(dim=1)


def run_torch(fn, logits, kmin, kmax, k):
    L = logits.shape[0]
    means, first = [], None
    t0 = time.perf_counter()
    for l in range(L):
        logz, mu, card, ent = fn(logits[l], kmin, kmax, k)
        means.append((mu.mean(0), card.mean(0), logz.mean(0), ent.mean()))
        if l == 0:
            first = (logz, mu, card, ent)
    secs = time.perf_counter() - t0
    flat = torch.cat([torch.stack([m[0] for m in means]).flatten(), torch.stack([m[1] for m in means]).flatten(),
                      torch.stack([m[2] for m in means]).flatten(), torch.stack([m[3] for m in means])])
    return secs, flat.numpy(), [x.numpy() for x in first]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--band", default="6:8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    kmin, kmax = (int(x) for x in a.band.split(":"))
    torch.set_num_threads(a.threads)
    L, T, E = a.layers, a.tokens, a.experts
    logits_np = logits_for(L, T, E)
    logits = torch.from_numpy(logits_np)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "logits.f32")
        logits_np.tofile(path)
        cmd = [a.binary, "--input", path, "--layers", str(L), "--tokens", str(T), "--experts", str(E), "--k",
               str(a.k), "--band", a.band, "--threads", str(a.threads), "--dump", tmp]
        variants = {"log": exact_k_torch_log, "linear": exact_k_torch_linear}
        ours, theirs, results = [], {v: [] for v in variants}, {}
        for r in range(a.repeats):
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            info = json.loads(res.stdout)
            ours.append(info["seconds"])
            line = f"repeat {r + 1}: ours {ours[-1]:.3f} s"
            for name, fn in variants.items():
                with torch.inference_mode():
                    secs, t_means, t_first = run_torch(fn, logits, kmin, kmax, a.k)
                theirs[name].append(secs)
                results[name] = (t_means, t_first)
                line += f", torch {name} {secs:.3f} s"
            print(line, flush=True)
        B = kmax - kmin + 1
        c_means = np.fromfile(os.path.join(tmp, "means.f64"))
        c_first = [np.fromfile(os.path.join(tmp, n + ".f64")) for n in ("logz0", "mu0", "card0", "ent0")]
    shapes = [(T, B), (T, E), (T, B), (T,)]
    work = L * T * E
    best_ours = min(ours)
    print(f"{T} tokens x {E} experts x {L} layers, k={a.k}, band {kmin}..{kmax}, {a.threads} threads, "
          f"torch {torch.__version__}; best of {a.repeats}")
    print(f"ours (C++ exactKTables):   {best_ours:.3f} s  ({work / best_ours / 1e6:.1f} M tokens*layers*experts/s)"
          f"  log-space tokens: {info['log_space_tokens']}")
    for name in variants:
        t_means, t_first = results[name]
        diffs = {n: float(np.max(np.abs(c.reshape(sh) - t)))
                 for n, c, t, sh in zip(("logZ", "mu", "card", "entropy"), c_first, t_first, shapes)}
        diffs["means"] = float(np.max(np.abs(c_means - t_means)))
        best = min(theirs[name])
        print(f"torch, {name + ' space:':13} {best:.3f} s  ({work / best / 1e6:.1f} M/s)  speed-up {best / best_ours:.2f}x"
              "  max |ours - torch|: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
