#!/usr/bin/env python3
"""Dequantizes an FP8 block-scaled checkpoint (quantization_config quant_method "fp8", DeepSeek-V3's form) into
a plain float32 one that stock transformers loads, for the engine's FP8 parity test (tests/runtime/tst_fp8.cpp).

Written from the format's definition, independently of the engine: torch's own float8_e4m3fn decodes the bytes,
numpy repeats every float32 `<name>_scale_inv` entry over its block of weight_block_size [br, bc] (partial blocks
at the right and bottom edges cut off) and multiplies.

Usage: fp8_dequantize.py --model FP8_DIR --out PLAIN_DIR
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file


def dequantize(weight: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> np.ndarray:
    values = weight.to(torch.float32).numpy()
    rows, cols = values.shape[-2:]
    s = scale.numpy()
    expected = (-(-rows // block[0]), -(-cols // block[1]))
    if s.shape[-2:] != expected:
        raise SystemExit(f"scale grid {s.shape} does not match {values.shape} at blocks {block}")
    full = np.repeat(np.repeat(s, block[0], axis=-2), block[1], axis=-1)[..., :rows, :cols]
    return (values.astype(np.float64) * full.astype(np.float64)).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    src, out = pathlib.Path(args.model), pathlib.Path(args.out)
    config = json.loads((src / "config.json").read_text())
    qc = config.pop("quantization_config")
    assert qc["quant_method"] == "fp8" and qc.get("fmt", "e4m3") == "e4m3", qc
    block = tuple(qc["weight_block_size"])
    config["torch_dtype"] = "float32"
    files = sorted(src.glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                tensors[k] = h.get_tensor(k)
    plain: dict[str, torch.Tensor] = {}
    quantized = 0
    for name, t in tensors.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            plain[name] = torch.from_numpy(dequantize(t, tensors[name + "_scale_inv"], block))
            quantized += 1
        else:
            plain[name] = t.to(torch.float32).contiguous()
    if quantized == 0:
        raise SystemExit(f"{src}: no F8_E4M3 tensor")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(plain, str(out / "model.safetensors"), metadata={"format": "pt"})
    print(f"{quantized} FP8 tensors dequantized")
    return 0


if __name__ == "__main__":
    sys.exit(main())
