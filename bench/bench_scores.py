#!/usr/bin/env python3
"""Scoring throughput: `moeatlas score` vs the numpy/h5py implementation of the same formulas
(tests/metrics/reference_scores.py), on one generated atlas, in the same run.

    .venv/bin/python bench/bench_scores.py --cli build/app/moeatlas [--tokens 65536]
        [--layers 16] [--experts 64] [--top-k 8]

Throughput = tokens x layers x experts / seconds (PEU, all baselines and all statistics).
The atlas is written with h5py following docs/atlas-format.md (float32 logits, no compression,
expert norms recorded).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "metrics"))
import reference_scores  # noqa: E402


def write_atlas(path, T, L, E, k, D=4, seq=512, seed=0):
    rng = np.random.default_rng(seed)
    s_str = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs.update(format="moeatlas", schema_version=np.int64(1), created="2025-01-01T00:00:00Z",
                       complete=np.int64(1), producer="bench_scores.py")
        m = f.create_group("model")
        m.attrs.update(checkpoint_path="/bench", config_sha256="0" * 64, model_type="mixtral",
                       num_layers=np.int64(L), num_experts=np.int64(E), top_k=np.int64(k),
                       hidden_size=np.int64(64))
        m.create_dataset("moe_layers", data=np.arange(L, dtype=np.int32))
        m.create_dataset("config_json", data="{}", dtype=s_str)
        c = f.create_group("calibration")
        c.attrs.update(seq_len=np.int64(seq), seed=np.uint64(0), packing="bench", device="cpu",
                       compute_dtype="float32")
        S = T // seq
        dom = (np.arange(T) // seq % D).astype(np.int16)
        dg = c.create_group("domains")
        dg.create_dataset("name", data=[f"d{i}" for i in range(D)], dtype=s_str)
        dg.create_dataset("source", data=[f"/d{i}" for i in range(D)], dtype=s_str)
        dg.create_dataset("format", data=["text"] * D, dtype=s_str)
        dg.create_dataset("num_samples", data=np.bincount(np.arange(S) % D, minlength=D).astype(np.int64))
        dg.create_dataset("num_tokens", data=np.bincount(dom, minlength=D).astype(np.int64))
        t = f.create_group("tokens")
        t.create_dataset("ids", data=(np.arange(T) % 32000).astype(np.int32), chunks=(min(T, 65536),))
        t.create_dataset("domain", data=dom, chunks=(min(T, 65536),))
        t.create_dataset("seq_offsets", data=np.arange(S + 1, dtype=np.int64) * seq)
        lg = f.create_group("layers")
        lg.attrs.update(logit_storage="float32", store_expert_norms=np.int64(1),
                        hidden_sample_count=np.int64(0), compression_level=np.int64(0))
        for l in range(L):
            g = lg.create_group(str(l))
            g.attrs["complete"] = np.int64(1)
            logits = (rng.standard_normal((T, E), dtype=np.float32) * 1.5
                      + rng.standard_normal(E).astype(np.float32) * 0.5)
            ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(logits, ids, axis=1).astype(np.float64)
            w = np.exp(top - top[:, :1])
            w /= w.sum(axis=1, keepdims=True)
            g.create_dataset("router_logits", data=logits, chunks=(1024, E))
            g.create_dataset("topk_ids", data=ids.astype(np.int16), chunks=(1024, k))
            g.create_dataset("topk_weights", data=w.astype(np.float32), chunks=(1024, k))
            g.create_dataset("expert_norms", data=rng.uniform(0.5, 3, (T, k)).astype(np.float32),
                             chunks=(1024, k))
        p = f.create_group("progress")
        p.create_dataset("layers_complete", data=np.ones(L, dtype=np.int32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    work = a.tokens * a.layers * a.experts
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.atlas.h5")
        write_atlas(path, a.tokens, a.layers, a.experts, a.top_k)
        cli = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            subprocess.run([a.cli, "score", path, "--force", "--top", "1"], check=True,
                           stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t0)
        ref = []
        for _ in range(a.repeats):
            with h5py.File(path, "r") as f:
                t0 = time.perf_counter()
                reference_scores.compute(f)
                ref.append(time.perf_counter() - t0)
        check = subprocess.run([sys.executable, reference_scores.__file__, path, "--check"],
                               capture_output=True, text=True)
    c, r = min(cli), min(ref)
    print(f"atlas: {a.tokens} tokens x {a.layers} layers x {a.experts} experts, top-{a.top_k}, "
          f"cores: {os.cpu_count()}")
    print(f"moeatlas score (whole command, incl. open/copy/write): {c:.3f} s  "
          f"{work / c / 1e6:.1f} M tok*layer*expert/s")
    print(f"numpy/h5py reference (compute incl. reads):            {r:.3f} s  "
          f"{work / r / 1e6:.1f} M tok*layer*expert/s")
    print(f"speed-up: {r / c:.2f}x   results agree: {check.stdout.strip()}")
    return 0 if check.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
