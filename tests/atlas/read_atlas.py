#!/usr/bin/env python3
"""Reads atlases written by tst_atlas_h5py strictly as docs/atlas-format.md describes them and
checks every path, dtype, shape, attribute and value. Exits non-zero on the first mismatch.

The expected values are the formulas of tests/atlas/atlas_test_data.h, recomputed here with
numpy float32 arithmetic (identical IEEE operations, so fp32 values compare bit for bit and
fp16 values against numpy's own float32 -> float16 rounding). That holds on any CPU as long as the
C++ side evaluates each multiply and add separately: no BLAS or vector library is involved, and the
x86-64 baseline the project builds for has no fused multiply-add for the compiler to contract
`m * 0.0137f - 6.9f` into (a build with -march=native/-mfma would need -ffp-contract=off).

usage: read_atlas.py --full ATLAS --half ATLAS --partial ATLAS.partial
"""
import argparse
import datetime
import sys

import h5py
import numpy as np

T, SEQ_LEN, NUM_SEQ, E, K, H = 2500, 500, 5, 8, 2, 16
MOE_LAYERS = [1, 3]
DOMAIN0 = (NUM_SEQ * 3 + 4) // 5
CONFIG_JSON = '{"model_type": "mixtral", "num_local_experts": 8, "name": "tiny \\u00e9"}'


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def check_eq(got, want, what):
    if isinstance(want, np.ndarray):
        ok = isinstance(got, np.ndarray) and got.shape == want.shape and np.array_equal(got, want)
    else:
        ok = got == want and type(got) is type(want)
    check(ok, f"{what}: got {got!r} ({type(got).__name__}), want {want!r} ({type(want).__name__})")


def check_str_attr(obj, name, want):
    check(name in obj.attrs, f"{obj.name}: attribute {name} missing")
    info = h5py.check_string_dtype(obj.attrs.get_id(name).dtype)
    check(info is not None and info.length is None and info.encoding == "utf-8",
          f"{obj.name}@{name}: not a variable-length UTF-8 string ({info})")
    check_eq(obj.attrs[name], want, f"{obj.name}@{name}")


def check_int_attr(obj, name, want, dtype=np.int64):
    check(name in obj.attrs, f"{obj.name}: attribute {name} missing")
    check_eq(obj.attrs.get_id(name).dtype, np.dtype(dtype), f"{obj.name}@{name} dtype")
    check(obj.attrs.get_id(name).shape == (), f"{obj.name}@{name}: not scalar")
    check_eq(obj.attrs[name], dtype(want), f"{obj.name}@{name}")


def dataset(f, path, dtype, shape):
    check(path in f, f"{path}: missing")
    d = f[path]
    check(isinstance(d, h5py.Dataset), f"{path}: not a dataset")
    check_eq(d.dtype, np.dtype(dtype), f"{path} dtype")
    check_eq(d.shape, shape, f"{path} shape")
    return d


def check_vlen_str_dataset(d):
    info = h5py.check_string_dtype(d.dtype)
    check(info is not None and info.length is None and info.encoding == "utf-8",
          f"{d.name}: not variable-length UTF-8 strings")


def check_filters(d, chunks, gzip):
    check_eq(d.chunks, chunks, f"{d.name} chunks")
    check_eq(d.fletcher32, True, f"{d.name} fletcher32")
    if gzip > 0:
        check_eq(d.compression, "gzip", f"{d.name} compression")
        check_eq(d.compression_opts, gzip, f"{d.name} gzip level")
        check_eq(d.shuffle, True, f"{d.name} shuffle")
    else:
        check_eq(d.compression, None, f"{d.name} compression")


# ---- expected values (mirror of atlas_test_data.h) ---------------------------------------

def f32(x):
    return np.asarray(x, dtype=np.float32)


def expected_logits(layer):
    t = np.arange(T, dtype=np.int64)[:, None]
    e = np.arange(E, dtype=np.int64)[None, :]
    m = ((t * 31 + e * 17 + layer * 13) % 1000).astype(np.float32)
    logits = m * np.float32(0.0137) - np.float32(6.9)
    if layer == 1:
        logits[0, :8] = f32([65504.0, 70000.0, 1e-8, -0.0, np.inf, -np.inf, np.nan, 3e-5])
    return logits


def expected_ids(layer):
    t = np.arange(T, dtype=np.int64)[:, None]
    j = np.arange(K, dtype=np.int64)[None, :]
    return ((t + j * (layer + 1)) % E).astype(np.int16)


def expected_weights():
    t = np.arange(T, dtype=np.int64)[:, None]
    j = np.arange(K, dtype=np.int64)[None, :]
    return (t % 10 + j + 1).astype(np.float32) * np.float32(0.125)


def expected_norms(layer):
    t = np.arange(T, dtype=np.int64)[:, None]
    j = np.arange(K, dtype=np.int64)[None, :]
    return (t % 7).astype(np.float32) * np.float32(0.5) + (j + layer).astype(np.float32)


def expected_hidden(layer):
    i = np.arange(4, dtype=np.int64)[:, None]
    h = np.arange(H, dtype=np.int64)[None, :]
    return (i * 100).astype(np.float32) + h.astype(np.float32) * np.float32(0.25) - np.float32(layer)


def same_bits(got, want):
    """Bitwise equality, except that any NaN matches any NaN."""
    nan = np.isnan(want)
    if not np.array_equal(np.isnan(got), nan):
        return False
    itype = np.uint16 if got.dtype == np.float16 else np.uint32
    return np.array_equal(got[~nan].view(itype), want[~nan].view(itype))


# ---- the checks ----------------------------------------------------------------------------

def check_root(f, complete):
    check_str_attr(f, "format", "moeatlas")
    check_int_attr(f, "schema_version", 1)
    check_int_attr(f, "complete", complete)
    check_str_attr(f, "producer", "moeatlas 0.1.0")
    created = f.attrs["created"]
    stamp = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    age = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - stamp
    check(abs(age.total_seconds()) < 3600, f"created {created} is not the current UTC time")
    for name in ("model", "calibration", "tokens", "layers", "progress"):
        check(isinstance(f.get(name), h5py.Group), f"/{name}: missing group")


def check_model(f):
    g = f["model"]
    check_str_attr(g, "checkpoint_path", "/models/tiny-moe")
    check_str_attr(g, "config_sha256",
                   "3f2a9c0e5b7d41e6a8c1f0d2b3e4a5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2")
    check_str_attr(g, "model_type", "mixtral")
    check_int_attr(g, "num_layers", 4)
    check_int_attr(g, "num_experts", E)
    check_int_attr(g, "top_k", K)
    check_int_attr(g, "hidden_size", H)
    check_eq(dataset(f, "/model/moe_layers", np.int32, (2,))[:], np.array(MOE_LAYERS, np.int32),
             "/model/moe_layers")
    cj = dataset(f, "/model/config_json", h5py.string_dtype("utf-8"), ())
    check_vlen_str_dataset(cj)
    check_eq(cj.asstr()[()], CONFIG_JSON, "/model/config_json")


def check_calibration(f):
    g = f["calibration"]
    check_int_attr(g, "seq_len", SEQ_LEN)
    check_int_attr(g, "seed", 9223372036854775813, np.uint64)
    check_str_attr(g, "packing", "concat documents, seq_len 500, drop remainder")
    check_str_attr(g, "device", "cpu")
    check_str_attr(g, "compute_dtype", "float32")
    names = ["code", "prose \u00e9"]
    strings = {"name": names, "source": ["/data/code.jsonl", "/data/prose.txt"],
               "format": ["input_ids-jsonl", "text"]}
    for key, want in strings.items():
        d = dataset(f, f"/calibration/domains/{key}", h5py.string_dtype("utf-8"), (2,))
        check_vlen_str_dataset(d)
        check_eq(list(d.asstr()[:]), want, d.name)
    samples = np.array([DOMAIN0, NUM_SEQ - DOMAIN0], np.int64)
    check_eq(dataset(f, "/calibration/domains/num_samples", np.int64, (2,))[:], samples,
             "num_samples")
    check_eq(dataset(f, "/calibration/domains/num_tokens", np.int64, (2,))[:], samples * SEQ_LEN,
             "num_tokens")


def check_tokens(f, gzip):
    t = np.arange(T, dtype=np.int64)
    ids = dataset(f, "/tokens/ids", np.int32, (T,))
    check_filters(ids, (T,), gzip)
    check_eq(ids[:], ((t * 7919) % 32000).astype(np.int32), "/tokens/ids")
    domain = dataset(f, "/tokens/domain", np.int16, (T,))
    check_eq(domain[:], np.where(t // SEQ_LEN < DOMAIN0, 0, 1).astype(np.int16), "/tokens/domain")
    offsets = dataset(f, "/tokens/seq_offsets", np.int64, (NUM_SEQ + 1,))
    check_eq(offsets[:], np.arange(NUM_SEQ + 1, dtype=np.int64) * SEQ_LEN, "/tokens/seq_offsets")


def check_layer(f, layer, half, norms, hidden, gzip):
    g = f[f"layers/{layer}"]
    check_int_attr(g, "complete", 1)
    logits = dataset(f, f"/layers/{layer}/router_logits", np.float16 if half else np.float32,
                     (T, E))
    check_filters(logits, (1024, E), gzip)
    want = expected_logits(layer)
    if half:
        want = want.astype(np.float16)    # numpy rounds to nearest even, like the writer
    got = logits[:]
    check(same_bits(got, want), f"{logits.name}: values differ "
          f"(first: {got.ravel()[:8]} vs {want.ravel()[:8]})")
    if half and layer == 1:
        first = got[0].astype(np.float32)
        check(first[0] == 65504 and np.isposinf(first[1]) and first[2] == 0
              and not np.signbit(first[2]) and first[3] == 0 and np.signbit(first[3])
              and np.isposinf(first[4]) and np.isneginf(first[5]) and np.isnan(first[6])
              and first[7] == np.float32(503 * 2.0 ** -24),
              f"{logits.name}: special values stored as {first}")
    ids = dataset(f, f"/layers/{layer}/topk_ids", np.int16, (T, K))
    check_filters(ids, (1024, K), gzip)
    check_eq(ids[:], expected_ids(layer), ids.name)
    weights = dataset(f, f"/layers/{layer}/topk_weights", np.float32, (T, K))
    check_eq(weights[:], expected_weights(), weights.name)
    if norms:
        d = dataset(f, f"/layers/{layer}/expert_norms", np.float32, (T, K))
        check_eq(d[:], expected_norms(layer), d.name)
    else:
        check("expert_norms" not in g, f"{g.name}/expert_norms present without store_expert_norms")
    if hidden:
        idx = dataset(f, f"/layers/{layer}/hidden_samples/token_index", np.int64, (4,))
        check_eq(idx[:], np.array([0, 17, T // 2, T - 1], np.int64), idx.name)
        vals = dataset(f, f"/layers/{layer}/hidden_samples/values", np.float32, (4, H))
        check_eq(vals[:], expected_hidden(layer), vals.name)
    else:
        check("hidden_samples" not in g, f"{g.name}/hidden_samples present")


def check_layers_group(f, half, norms, hidden_count, gzip):
    g = f["layers"]
    check_str_attr(g, "logit_storage", "float16" if half else "float32")
    check_int_attr(g, "store_expert_norms", int(norms))
    check_int_attr(g, "hidden_sample_count", hidden_count)
    check_int_attr(g, "compression_level", gzip)
    check_eq(sorted(g.keys(), key=int), [str(x) for x in MOE_LAYERS], "/layers members")


def check_float_attr(obj, name, want):
    check(name in obj.attrs, f"{obj.name}: attribute {name} missing")
    check_eq(obj.attrs.get_id(name).dtype, np.dtype(np.float64), f"{obj.name}@{name} dtype")
    check_eq(obj.attrs[name], np.float64(want), f"{obj.name}@{name}")


def check_prefetch(f, gzip):
    """/prefetch as tst_atlas_h5py writes it into the full atlas (writeTestPrefetch)."""
    g = f["prefetch"]
    check_str_attr(g, "predictors", "next-router,quasi-hidden")
    check_int_attr(g, "max_lookahead", 1)
    check_int_attr(g, "budget", 4)
    check_float_attr(g, "train_fraction", 0.5)
    check_int_attr(g, "split_seed", 9223372036854775813, np.uint64)
    check_eq(dataset(f, "/prefetch/train_sequences", np.int8, (NUM_SEQ,))[:], np.array([1, 0, 1, 0, 1], np.int8),
             "/prefetch/train_sequences")
    t = np.arange(T, dtype=np.int64)[:, None]
    i = np.arange(4, dtype=np.int64)[None, :]
    for p, name in enumerate(["next-router", "quasi-hidden"]):
        # Only MoE layer 1 has a MoE layer after it.
        check_eq(sorted(g[name].keys()), ["1"], f"/prefetch/{name} members")
        check_eq(sorted(g[name]["1"].keys()), ["d1"], f"/prefetch/{name}/1 members")
        d = dataset(f, f"/prefetch/{name}/1/d1", np.int16, (T, 4))
        check_filters(d, (1024, 4), gzip)
        check_eq(d[:], ((t + 3 * i + p) % 8).astype(np.int16), d.name)
    e = np.arange(E, dtype=np.int64)[:, None]
    h = np.arange(H, dtype=np.int64)[None, :]
    for layer in MOE_LAYERS:
        v = dataset(f, f"/prefetch/default_vectors/{layer}", np.float32, (E, H))
        check_eq(v[:], (e * H + h).astype(np.float32) * np.float32(0.5) - np.float32(layer), v.name)
        c = dataset(f, f"/prefetch/default_vector_counts/{layer}", np.int64, (E,))
        check_eq(c[:], np.arange(E, dtype=np.int64) * 10 + layer, c.name)
    est = f["prefetch/learned/linear/1/d1"]
    w = dataset(f, "/prefetch/learned/linear/1/d1/weight", np.float32, (E, H))
    check_eq(w[:], (np.arange(E * H, dtype=np.float64) * 0.25 - 3.0).astype(np.float32).reshape(E, H), w.name)
    b = dataset(f, "/prefetch/learned/linear/1/d1/bias", np.float32, (E,))
    check_eq(b[:], np.arange(1, E + 1, dtype=np.float32), b.name)
    check_float_attr(est, "train_loss", 0.5)
    check_float_attr(est, "heldout_loss", 0.75)
    check_int_attr(est, "epochs", 3)
    check_int_attr(est, "train_tokens", 1000)
    check_str_attr(est, "options", '{"epochs":3,"kind":"linear"}')


def check_atlas(path, half, norms, hidden, gzip, prefetch=False):
    with h5py.File(path, "r") as f:
        check_root(f, 1)
        check_model(f)
        check_calibration(f)
        check_tokens(f, gzip)
        check_layers_group(f, half, norms, 4 if hidden else 0, gzip)
        for layer in MOE_LAYERS:
            check_layer(f, layer, half, norms, hidden, gzip)
        progress = dataset(f, "/progress/layers_complete", np.int32, (2,))
        check_eq(progress[:], np.array([1, 1], np.int32), progress.name)
        if prefetch:
            check_prefetch(f, gzip)
        else:
            check("prefetch" not in f, "/prefetch present without capture --prefetch")


def check_partial(path):
    check(path.endswith(".partial"), f"{path}: a partial atlas is named <final>.partial")
    with h5py.File(path, "r") as f:
        check_root(f, 0)
        check_model(f)
        check_tokens(f, 4)
        progress = dataset(f, "/progress/layers_complete", np.int32, (2,))
        check_eq(progress[:], np.array([1, 0], np.int32), progress.name)
        check_layer(f, 1, False, False, False, 4)
        check_int_attr(f["layers/3"], "complete", 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", required=True, help="fp32, expert norms, hidden samples, /prefetch, gzip 4")
    parser.add_argument("--half", required=True, help="fp16, no norms, no samples, uncompressed")
    parser.add_argument("--partial", required=True, help="fp32, gzip 4, only layer 1 complete")
    args = parser.parse_args()
    try:
        check_atlas(args.full, half=False, norms=True, hidden=True, gzip=4, prefetch=True)
        check_atlas(args.half, half=True, norms=False, hidden=False, gzip=0)
        check_partial(args.partial)
    except Mismatch as e:
        print(f"read_atlas.py: MISMATCH: {e}", file=sys.stderr)
        return 1
    print("read_atlas.py: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
