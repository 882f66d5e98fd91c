"""Adds a /prefetch group to an existing atlas with h5py, as docs/atlas-format.md ("/prefetch") describes
it: an independent writer for the C++ read side (tests/prefetch/tst_prefetch_atlas.cpp) and for the CLI
tests (tests/cli/tst_cli_prefetch.cpp). Predictions are random (seeded) distinct expert ids per token.

usage: write_prefetch.py ATLAS [--json OUT] [--predictors a,b] [--max-lookahead D] [--budget B]
                         [--int32] [--seed N] [--omit PATH ...]
--json writes what was stored (train_sequences, ids per "<predictor>/<layer>/d<d>", default vectors,
learned estimators) for the test to compare with; --omit deletes /prefetch/PATH afterwards."""
import argparse
import json

import h5py
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("atlas")
ap.add_argument("--json")
ap.add_argument("--predictors", default="next-router,quasi-hidden,linear")
ap.add_argument("--max-lookahead", type=int, default=2)
ap.add_argument("--budget", type=int, default=0)
ap.add_argument("--int32", action="store_true")
ap.add_argument("--seed", type=int, default=5)
ap.add_argument("--omit", action="append", default=[])
a = ap.parse_args()

rng = np.random.default_rng(a.seed)
out = {"ids": {}, "default_vectors": {}, "default_vector_counts": {}, "learned": {}}
with h5py.File(a.atlas, "r+") as f:
    model = f["model"]
    layers = [int(x) for x in np.asarray(model["moe_layers"])]
    E = int(model.attrs["num_experts"])
    k = int(model.attrs["top_k"])
    H = int(model.attrs["hidden_size"])
    T = f["tokens/ids"].shape[0]
    S = f["tokens/seq_offsets"].shape[0] - 1
    B = a.budget or min(E, k + 2)
    predictors = [p for p in a.predictors.split(",") if p]
    g = f.create_group("prefetch")
    g.attrs["predictors"] = ",".join(predictors)
    g.attrs["max_lookahead"] = np.int64(a.max_lookahead)
    g.attrs["budget"] = np.int64(B)
    g.attrs["train_fraction"] = np.float64(0.5)
    g.attrs["split_seed"] = np.int64(1234)
    train = np.zeros(S, dtype=np.int8)
    train[rng.permutation(S)[: max(1, S // 2)]] = 1
    g.create_dataset("train_sequences", data=train)
    out["train_sequences"] = train.tolist()
    dtype = np.int32 if a.int32 or E > 32767 else np.int16
    for p in predictors:
        for i, layer in enumerate(layers):
            for d in range(1, a.max_lookahead + 1):
                if i + d >= len(layers):
                    continue
                ids = np.stack([rng.permutation(E)[:B] for _ in range(T)]).astype(dtype)
                g.create_dataset(f"{p}/{layer}/d{d}", data=ids, chunks=(min(1024, T), B), shuffle=True,
                                 compression="gzip")
                out["ids"][f"{p}/{layer}/d{d}"] = ids.reshape(-1).tolist()
    if "quasi-hidden" in predictors:
        for layer in layers:
            dv = rng.standard_normal((E, H)).astype(np.float32)
            counts = rng.integers(0, 100, E).astype(np.int64)
            g.create_dataset(f"default_vectors/{layer}", data=dv)
            g.create_dataset(f"default_vector_counts/{layer}", data=counts)
            out["default_vectors"][str(layer)] = dv.reshape(-1).tolist()
            out["default_vector_counts"][str(layer)] = counts.tolist()
    for p in ("linear", "mlp"):
        if p not in predictors:
            continue
        for i, layer in enumerate(layers):
            for d in range(1, a.max_lookahead + 1):
                if i + d >= len(layers):
                    continue
                e = g.create_group(f"learned/{p}/{layer}/d{d}")
                w = rng.standard_normal((E, H)).astype(np.float32)
                b = rng.standard_normal(E).astype(np.float32)
                e.create_dataset("weight", data=w)
                e.create_dataset("bias", data=b)
                e.attrs["train_loss"] = np.float64(0.25 + i)
                e.attrs["heldout_loss"] = np.float64(0.5 + d)
                e.attrs["epochs"] = np.int64(7)
                e.attrs["train_tokens"] = np.int64(int(T))
                out["learned"][f"{p}/{layer}/d{d}"] = {
                    "weight": {"dims": [E, H], "values": w.reshape(-1).tolist()},
                    "bias": {"dims": [E], "values": b.tolist()},
                    "train_loss": 0.25 + i, "heldout_loss": 0.5 + d, "epochs": 7, "train_tokens": int(T)}
    for path in a.omit:
        del g[path]
out.update({"budget": B, "max_lookahead": a.max_lookahead, "predictors": predictors,
            "dtype": np.dtype(dtype).name})
if a.json:
    with open(a.json, "w") as fh:
        json.dump(out, fh)
