"""Reference checks of our safetensors reader/writer against the python `safetensors` package.

  write-reference <outdir>   python writes torch.safetensors and numpy.safetensors plus, per tensor,
                             <file>.<tensor>.bin with its raw bytes and manifest.json
                             {file: {tensor: {"dtype", "shape"}}}, for the C++ reader to compare.
  check-file <file> <manifest.json>
                             loads a file written by our SafetensorsWriter and compares every value
                             with expected_values() (manifest: {tensor: {"dtype", "shape"}},
                             "__metadata__": {...}).
  check-dir <dir> <manifest.json>
                             loads a checkpoint directory written by our CheckpointWriter the way
                             transformers does (index + shards) and compares values.

Exits non-zero, printing what differs, on any mismatch.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file, save_file

TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}

errors = []


def expected_values(dtype, shape):
    """The values tests/checkpoint/tst_safetensors_interop.cpp writes, element i of the flat tensor:
    floats (i % 16) * 0.5 - 4 (exact in every float type, F8 included), signed ints
    (i * 7) % 100 - 50, U8 (i * 7) % 256, BOOL i % 3 == 0."""
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=torch.int64)
    if dtype in FLOATS:
        v = (i % 16).to(torch.float64) * 0.5 - 4
    elif dtype == "U8":
        v = (i * 7) % 256
    elif dtype == "BOOL":
        v = i % 3 == 0
    else:
        v = (i * 7) % 100 - 50
    return v.to(TORCH_DTYPES[dtype]).reshape(shape)


def compare(where, got, dtype, shape):
    want = expected_values(dtype, shape)
    if got.dtype != want.dtype:
        errors.append(f"{where}: dtype {got.dtype}, expected {want.dtype} ({dtype})")
    elif list(got.shape) != list(shape):
        errors.append(f"{where}: shape {list(got.shape)}, expected {shape}")
    # float8 has no comparison kernels on CPU; compare in float64 (every value is exact there).
    elif not torch.equal(got.to(torch.float64), want.to(torch.float64)):
        errors.append(f"{where}: values differ: got {got.flatten()[:8].tolist()}, "
                      f"expected {want.flatten()[:8].tolist()}")


def check_header_layout(path):
    """Header JSON starts with '{' and the data region is 8-byte aligned, as the reference writer
    produces (the Rust loader rejects a header not starting with '{')."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = f.read(n)
    if not head.startswith(b"{"):
        errors.append(f"{path}: header does not start with '{{'")
    if n % 8 != 0:
        errors.append(f"{path}: header length {n} is not a multiple of 8")


def write_reference(outdir):
    os.makedirs(outdir, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    tensors = {
        "model.embed_tokens.weight": torch.randn(7, 5, generator=gen, dtype=torch.float32),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 6, generator=gen).to(torch.float16),
        "model.layers.0.mlp.experts.0.w1.weight": torch.randn(3, 9, generator=gen).to(torch.bfloat16),
        "model.layers.0.mlp.gate.weight": torch.randn(2, 8, generator=gen).to(torch.float8_e4m3fn),
        "model.layers.0.mlp.gate.scale": torch.randn(5, generator=gen).to(torch.float8_e5m2),
        "position_ids": torch.arange(-5, 6, dtype=torch.int64).reshape(1, 11),
        "quant.codes": torch.randint(0, 256, (13,), generator=gen, dtype=torch.int64).to(torch.uint8),
        "mask": torch.rand(3, 3, generator=gen) > 0.5,
        "scalar.f64": torch.tensor(3.25, dtype=torch.float64),
        "ids.i32": torch.tensor([[1, -2, 3]], dtype=torch.int32),
        "ids.i16": torch.tensor([-300, 300], dtype=torch.int16),
        "ids.i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
    }
    rng = np.random.default_rng(7)
    arrays = {
        "np.f32": rng.standard_normal((4, 3)).astype(np.float32),
        "np.f16": rng.standard_normal((5,)).astype(np.float16),
        "np.i64": np.arange(-3, 9, dtype=np.int64).reshape(3, 4),
        "np.u8": np.arange(250, 256, dtype=np.uint8),
        "np.bool": np.array([[True, False], [False, True]]),
        "np.f64": rng.standard_normal((2, 2)),
    }
    manifest = {}
    save_file(tensors, os.path.join(outdir, "torch.safetensors"), metadata={"format": "pt"})
    manifest["torch.safetensors"] = {}
    for name, t in tensors.items():
        dtype = next(k for k, v in TORCH_DTYPES.items() if v == t.dtype)
        manifest["torch.safetensors"][name] = {"dtype": dtype, "shape": list(t.shape)}
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        with open(os.path.join(outdir, f"torch.safetensors.{name}.bin"), "wb") as f:
            f.write(raw)
    np_save_file(arrays, os.path.join(outdir, "numpy.safetensors"), metadata={"source": "numpy"})
    np_names = {np.float32: "F32", np.float16: "F16", np.int64: "I64", np.uint8: "U8",
                np.bool_: "BOOL", np.float64: "F64"}
    manifest["numpy.safetensors"] = {}
    for name, a in arrays.items():
        manifest["numpy.safetensors"][name] = {"dtype": np_names[a.dtype.type], "shape": list(a.shape)}
        with open(os.path.join(outdir, f"numpy.safetensors.{name}.bin"), "wb") as f:
            f.write(np.ascontiguousarray(a).tobytes())
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def check_file(path, manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    want_meta = manifest.pop("__metadata__", None)
    check_header_layout(path)
    loaded = load_file(path)
    if set(loaded) != set(manifest):
        errors.append(f"{path}: tensors {sorted(loaded)}, expected {sorted(manifest)}")
    for name, spec in manifest.items():
        if name in loaded:
            compare(f"{path}: {name}", loaded[name], spec["dtype"], spec["shape"])
    with safe_open(path, framework="pt") as f:
        if f.metadata() != want_meta:
            errors.append(f"{path}: metadata {f.metadata()}, expected {want_meta}")
        for name, spec in manifest.items():
            if name in loaded:
                compare(f"{path}: safe_open {name}", f.get_tensor(name), spec["dtype"], spec["shape"])


def check_dir(directory, manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    with open(os.path.join(directory, "config.json")) as f:
        json.load(f)
    with open(os.path.join(directory, "model.safetensors.index.json")) as f:
        index = json.load(f)
    weight_map = index["weight_map"]
    if set(weight_map) != set(manifest):
        errors.append(f"{directory}: weight_map lists {sorted(weight_map)}, expected {sorted(manifest)}")
    shards = sorted(set(weight_map.values()))
    total = 0
    n = len(shards)
    expected_names = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    if shards != expected_names:
        errors.append(f"{directory}: shards {shards}, expected transformers' names {expected_names}")
    seen = set()
    for shard in shards:
        path = os.path.join(directory, shard)
        check_header_layout(path)
        tensors = load_file(path)
        for name, t in tensors.items():
            if weight_map.get(name) != shard:
                errors.append(f"{path}: holds '{name}' but the index maps it to {weight_map.get(name)}")
            seen.add(name)
            total += t.numel() * t.element_size()
            spec = manifest.get(name)
            if spec:
                compare(f"{path}: {name}", t, spec["dtype"], spec["shape"])
    if seen != set(manifest):
        errors.append(f"{directory}: shards hold {sorted(seen)}, expected {sorted(manifest)}")
    if index["metadata"]["total_size"] != total:
        errors.append(f"{directory}: total_size {index['metadata']['total_size']}, tensors hold {total}")


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = sys.argv[1]
    if cmd == "write-reference":
        write_reference(sys.argv[2])
    elif cmd == "check-file":
        check_file(sys.argv[2], sys.argv[3])
    elif cmd == "check-dir":
        check_dir(sys.argv[2], sys.argv[3])
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
