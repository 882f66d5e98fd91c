#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

    tests/fuzz/make_corpus.py MOEATLAS_CLI [OUT_DIR]     (default OUT_DIR: tests/fuzz/corpus)

Valid seeds come from the project's own writers (`moeatlas generate`, `capture`, `score`, `plan`)
on a tiny model, or are written here by hand with the format's own rules; broken seeds (named
bad-*) are small edits of them that each reader must refuse with InputError. Needs only the
standard library (and the CLI). Rerun it after a format change and commit the result.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

cli = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, header_pad=True):
    """tensors: [(name, dtype, shape, bytes)] -> a .safetensors file."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    if header_pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def run(*args):
    subprocess.run([cli, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


for target in ["safetensors", "safetensors_index", "config", "tokenizer", "calibration", "plan", "scores", "atlas"]:
    shutil.rmtree(os.path.join(out, target), ignore_errors=True)

work = tempfile.mkdtemp(prefix="moeatlas-corpus-")
try:
    # --- a tiny model of every architecture (config.json), one tiny capture, scores and a plan ----------
    small = ["--layers", "2", "--hidden", "16", "--heads", "2", "--kv-heads", "1", "--head-dim", "8", "--experts", "4",
             "--top-k", "2", "--expert-width", "8", "--dense-width", "16", "--vocab", "64", "--linear-key-head-dim", "8",
             "--linear-value-head-dim", "8", "--full-attention-interval", "2"]
    for arch in ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "qwen3_5_moe", "deepseek_v3"]:
        d = os.path.join(work, arch)
        run("generate", "-o", d, "--arch", arch, *small, "--force")
        put("config", arch + ".json", open(os.path.join(d, "config.json"), "rb").read())
    put("config", "demo.json", open(os.path.join(root, "resources/demo/model/config.json"), "rb").read())
    cfg = json.load(open(os.path.join(work, "qwen3_moe", "config.json")))
    put("config", "bad-no-model-type.json", json.dumps({k: v for k, v in cfg.items() if k != "model_type"}))
    put("config", "bad-negative-experts.json", json.dumps({**cfg, "num_experts": -4}))
    put("config", "bad-topk-string.json", json.dumps({**cfg, "num_experts_per_tok": "2"}))
    put("config", "bad-rope-scaling.json", json.dumps({**cfg, "rope_scaling": {"rope_type": "yarn", "factor": "x"}}))

    one = os.path.join(work, "one")
    run("generate", "-o", one, "--arch", "mixtral", "--layers", "1", "--hidden", "8", "--heads", "1", "--kv-heads", "1",
        "--head-dim", "8", "--experts", "2", "--top-k", "1", "--expert-width", "4", "--vocab", "16", "--force",
        "--calibration", os.path.join(one, "c.jsonl"), "--calibration-docs", "2", "--calibration-doc-tokens", "16")
    shard = open(os.path.join(one, "model.safetensors"), "rb").read()
    put("safetensors", "generated-mixtral.safetensors", shard)
    atlas = os.path.join(work, "one.atlas.h5")
    run("capture", one, "-d", "a=" + os.path.join(one, "c.jsonl") + ":1", "-d", "b=" + os.path.join(one, "c.jsonl") + ":1",
        "--seq-len", "8", "-o", atlas, "--force")
    put("atlas", "captured.atlas.h5", open(atlas, "rb").read())
    put("atlas", "bad-truncated.atlas.h5", open(atlas, "rb").read()[:4096])
    put("atlas", "bad-not-hdf5.atlas.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 56)
    run("score", atlas)
    run("plan", "--atlas", atlas, "--criterion", "peu", "--domain", "a", "--keep", "1", "-o", os.path.join(work, "a.plan.json"))
    plan = json.load(open(os.path.join(work, "a.plan.json")))
    put("plan", "specialist.plan.json", json.dumps(plan, indent=1))
    put("plan", "bad-expert-out-of-range.plan.json", json.dumps({**plan, "layers": [{"layer": 0, "keep": [0, 7]}]}))
    put("plan", "bad-no-layers.plan.json", json.dumps({k: v for k, v in plan.items() if k != "layers"}))
    put("plan", "bad-format.plan.json", json.dumps({**plan, "format": "other"}))
    with_dims = json.loads(json.dumps(plan))
    with_dims["dims"] = {"scope": "IntDim-E", "criterion": "fisher_mask", "domain": "a", "sparsity": 0.5,
                         "intermediate": 4, "layers": [{"layer": 0, "units": [[0, 3]]}]}
    put("plan", "dims.plan.json", json.dumps(with_dims, indent=1))

    # --- safetensors by hand: dtypes, an empty tensor, metadata; broken variants ------------------------------
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    put("safetensors", "dtypes.safetensors", safetensors([
        ("a.f32", "F32", [2, 2], f32), ("b.bf16", "BF16", [2], b"\x80\x3f\x00\x40"), ("c.f16", "F16", [1], b"\x00\x3c"),
        ("d.i64", "I64", [1], struct.pack("<q", -7)), ("e.u8", "U8", [3], b"\x01\x02\x03"), ("f.empty", "F32", [0, 4], b""),
        ("g.bool", "BOOL", [1], b"\x01")], metadata={"format": "pt"}))
    put("safetensors", "scalar.safetensors", safetensors([("s", "F64", [], struct.pack("<d", 2.5))]))
    good = safetensors([("w", "F32", [2, 2], f32)])
    put("safetensors", "bad-header-too-long.safetensors", struct.pack("<Q", 1 << 40) + good[8:])
    put("safetensors", "bad-short.safetensors", good[:6])
    put("safetensors", "bad-overlap.safetensors", safetensors([("x", "F32", [2], f32[:8]), ("y", "F32", [2], f32[8:])])
        .replace(b"[8, 16]", b"[4, 12]"))
    put("safetensors", "bad-shape-size.safetensors", safetensors([("w", "F32", [3, 2], f32)]))
    put("safetensors", "bad-dtype.safetensors", safetensors([("w", "F33", [2, 2], f32)]))
    put("safetensors", "bad-data-past-end.safetensors", good[:-4])

    # --- the shard index beside fuzz_safetensors_index's two shards (a.weight, b.weight) ---------------------
    idx = {"metadata": {"total_size": 16},
           "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}
    put("safetensors_index", "two-shards.json", json.dumps(idx, indent=2))
    put("safetensors_index", "one-shard.json", json.dumps({"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}))
    put("safetensors_index", "bad-missing-shard.json", json.dumps({"weight_map": {"a.weight": "model-00009.safetensors"}}))
    put("safetensors_index", "bad-escape.json", json.dumps({"weight_map": {"a.weight": "../model-00001-of-00002.safetensors"}}))
    put("safetensors_index", "bad-wrong-shard.json", json.dumps({"weight_map": {"b.weight": "model-00001-of-00002.safetensors"}}))
    put("safetensors_index", "bad-metadata.json", json.dumps({**idx, "metadata": 3}))
    put("safetensors_index", "bad-not-object.json", "[1, 2]")

    # --- tokenizer (first byte: 0 = tokenizer.json, 1 = text for the byte-level one, 2 = text for the SPM one) -
    tok = open(os.path.join(root, "resources/demo/model/tokenizer.json"), "rb").read()
    put("tokenizer", "demo-tokenizer.bin", b"\x00" + tok)
    put("tokenizer", "bad-tokenizer.bin", b"\x00" + b'{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}')
    put("tokenizer", "text-bytelevel.bin", b"\x01Hello w\xc3\xb6rld 123 abcd <|end|>  \t\n the")
    put("tokenizer", "text-spm.bin", b"\x02ab \xc3\xa9 a  b <s>")

    # --- calibration (first byte: the reader, see fuzz_calibration.cpp) ---------------------------------------
    ids = open(os.path.join(one, "c.jsonl"), "rb").read()
    put("calibration", "text.bin", b"\x00" + b'{"text": "first doc"}\n\n{"text": "second\\ndoc", "id": 2}\n')
    put("calibration", "messages.bin", b"\x01" + json.dumps({"messages": [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}).encode() + b"\n")
    put("calibration", "input-ids.bin", b"\x02" + ids)
    put("calibration", "input-ids-unbounded.bin", b"\x03" + ids)
    put("calibration", "plain.bin", b"\x04" + "\ufeffone\r\ntwo\r\n\r\nthree\n  \nfour".encode())
    put("calibration", "whole-file.bin", b"\x05one\n\ntwo\n")
    put("calibration", "detect.bin", b"\x06" + b'{"input_ids": [1, 2, 3]}\n')
    put("calibration", "bad-id-range.bin", b"\x02" + b'{"input_ids": [1, 2000]}\n')
    put("calibration", "bad-json-line.bin", b"\x00" + b'{"text": "ok"}\n{"text": \n')
    put("calibration", "bad-messages.bin", b"\x01" + b'{"messages": [{"role": 1}]}\n')

    # --- scores (docs/plans.md) -------------------------------------------------------------------------------
    scores = {"criterion": "peu", "layers": [0, 1],
              "domains": {"math": [[0.9, 0.1, 0.4, 0.2], [0.3, 0.3, 0.5, 0.1]],
                          "code": [[0.2, 0.8, 0.1, 0.6], [0.7, 0.1, 0.2, 0.4]]},
              "token_counts": {"math": 120, "code": 80}}
    put("scores", "two-domains.json", json.dumps(scores, indent=1))
    put("scores", "no-layers.json", json.dumps({"criterion": "frequency", "domains": {"a": [[1, 2]]}}))
    put("scores", "bad-ragged.json", json.dumps({**scores, "domains": {"a": [[1, 2], [3]]}}))
    put("scores", "bad-layers-mismatch.json", json.dumps({**scores, "layers": [0]}))
    put("scores", "bad-count.json", json.dumps({**scores, "token_counts": {"math": -1, "code": "x"}}))
    put("scores", "bad-empty.json", json.dumps({"criterion": "peu", "domains": {}}))

finally:
    shutil.rmtree(work, ignore_errors=True)
