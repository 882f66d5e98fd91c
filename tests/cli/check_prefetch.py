"""Recomputes `moeatlas prefetch` hit rates with numpy from the atlas alone (h5py) and compares them with
the CLI's CSV and the stored /prefetch_hit_rates group (docs/methods.md, "Expert prefetching").

usage: check_prefetch.py ATLAS CSV
Split: /prefetch/train_sequences (the test writes /prefetch with tests/prefetch/write_prefetch.py first).
Prints a JSON summary; exits 1 on any mismatch."""
import csv
import json
import math
import sys

import h5py
import numpy as np

atlas_path, csv_path = sys.argv[1], sys.argv[2]
with h5py.File(atlas_path, "r") as f:
    layers = [int(x) for x in np.asarray(f["model/moe_layers"])]
    E = int(f["model"].attrs["num_experts"])
    k = int(f["model"].attrs["top_k"])
    offsets = np.asarray(f["tokens/seq_offsets"], dtype=np.int64)
    dom = np.asarray(f["tokens/domain"], dtype=np.int64)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(f["calibration/domain_names"])] \
        if "calibration/domain_names" in f else None
    routed = [np.asarray(f[f"layers/{l}/topk_ids"], dtype=np.int64) for l in layers]
    train_seq = np.asarray(f["prefetch/train_sequences"], dtype=np.int64)
    recorded = {}
    for p in ("next-router", "quasi-hidden", "linear", "mlp"):
        if f"prefetch/{p}" in f:
            recorded[p] = {key: np.asarray(f[f"prefetch/{p}/{key}"], dtype=np.int64)
                           for key in (f"{l}/d{d}" for l in layers for d in (1, 2, 3)) if f"prefetch/{p}/{key}" in f}
    stored = {name: np.asarray(f[f"prefetch_hit_rates/{name}"]) for name in ("hit_rate", "recall")}
    params = json.loads(f["prefetch_hit_rates"].attrs["params"])

T = dom.shape[0]
S = offsets.shape[0] - 1
first = np.zeros(T, dtype=bool)
train = np.zeros(T, dtype=bool)
for s in range(S):
    first[offsets[s]] = offsets[s + 1] > offsets[s]
    train[offsets[s]:offsets[s + 1]] = train_seq[s] == 1


def frequency_order(target):
    counts = np.bincount(routed[target][train].reshape(-1), minlength=E)
    return list(np.lexsort((np.arange(E), -counts)))


def fill(head, order, B):
    row = []
    for e in list(head) + list(order):
        if e not in row and len(row) < B:
            row.append(int(e))
    return row


def predict(p, i, d, B):
    target = i + d
    order = frequency_order(target)
    r = routed[target]
    if p == "frequency":
        return [order[:B]] * T
    if p == "previous":
        return [fill([] if first[t] else r[t - 1], order, B) for t in range(T)]
    if p == "oracle":
        return [fill(r[t], order, B) for t in range(T)]
    return recorded[p][f"{layers[i]}/d{d}"][:, :B].tolist()


rows = list(csv.DictReader(open(csv_path)))
domain_names = params["domains"]  # D names then "pooled"
preds, lookaheads = params["predictors"], params["lookaheads"]
mismatches = []
cache = {}
for row in rows:
    p, layer, d, B = row["predictor"], int(row["layer"]), int(row["lookahead"]), int(row["budget"])
    i = layers.index(layer)
    assert int(row["target_layer"]) == layers[i + d], row
    key = (p, i, d)
    if key not in cache:
        pr = predict(p, i, d, B)
        target = routed[i + d]
        hits = np.array([len(set(pr[t][:k]) & set(target[t].tolist())) for t in range(T)])
        rec = np.array([len(set(pr[t][:B]) & set(target[t].tolist())) for t in range(T)])
        cache[key] = (hits, rec)
    hits, rec = cache[key]
    di = domain_names.index(row["domain"])
    mask = np.ones(T, dtype=bool) if di == len(domain_names) - 1 else dom == di
    if row["split"] == "heldout":
        mask &= ~train
    n = int(mask.sum())
    want_hit = hits[mask].sum() / (k * n) if n else math.nan
    want_rec = rec[mask].sum() / (k * n) if n else math.nan
    got_hit = float(row["hit_rate"]) if row["hit_rate"] else math.nan
    got_rec = float(row["recall"]) if row["recall"] else math.nan
    s = 0 if row["split"] == "heldout" else 1
    a = lookaheads.index(d)
    st_hit = float(stored["hit_rate"][preds.index(p), s, di, i, a])
    st_rec = float(stored["recall"][preds.index(p), s, di, i, a])
    same = lambda x, y: (math.isnan(x) and math.isnan(y)) or x == y
    if int(row["tokens"]) != n or not all(same(x, want_hit) for x in (got_hit, st_hit)) \
            or not all(same(x, want_rec) for x in (got_rec, st_rec)):
        mismatches.append({"row": row, "numpy": [n, want_hit, want_rec], "stored": [st_hit, st_rec]})
oracle_ok = all(float(r["hit_rate"]) == 1.0 for r in rows if r["predictor"] == "oracle" and r["hit_rate"])
print(json.dumps({"rows": len(rows), "mismatches": mismatches[:5], "mismatch_count": len(mismatches),
                  "predictors": sorted({r["predictor"] for r in rows}), "oracle_exact": oracle_ok}))
sys.exit(1 if mismatches or not rows else 0)
