#!/usr/bin/env python3
"""Build a tiny gpt_oss checkpoint whose experts are stored as MXFP4, as gpt-oss hub checkpoints store them,
and the transformers logits of the same model on the weights dequantized here.

Usage: make_mxfp4.py --out DIR [--seed N] [--malformed {blocks,scales}]

The packing is written from the format's definition (OCP microscaling, E2M1 elements, E8M0 scales), with
numpy, not taken from any library: per row of an expert's [out, in] matrix, blocks of 32 values share one
scale byte s (the block's values are code * 2^(s - 127)); a block's 16 bytes hold two 4-bit codes each, the
even element in the low nibble. A code is sign (bit 3) and one of 0, 0.5, 1, 1.5, 2, 3, 4, 6.
  <name>_blocks [E, out, in/32, 16] uint8, <name>_scales [E, out, in/32] uint8
for gate_up_proj (out = 2I, rows interleaved: even = gate, odd = up) and down_proj (out = H, in = I).

DIR receives config.json (with a quantization_config naming mxfp4), model.safetensors and
  reference.safetensors: input_ids [B,S] int64; logits [B,S,V] f32 from GptOssForCausalLM (eager attention and
  experts) whose expert weights are the dequantized MXFP4 values; dequant.<l>.gate_up [E,2I,H] and
  dequant.<l>.down [E,H,I] f32 (the values this script decoded).
--malformed writes a layer-1 blocks (or scales) tensor of the wrong shape (one 32-group short) for error tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, GptOssConfig
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float64)


def quantize(w: np.ndarray):
    """w [E, rows, cols] float -> (blocks [E, rows, cols/32, 16] uint8, scales [E, rows, cols/32] uint8)."""
    E, rows, cols = w.shape
    g = w.reshape(E, rows, cols // 32, 32).astype(np.float64)
    amax = np.abs(g).max(axis=-1)
    # the smallest power of two that maps the block's largest magnitude into [0, 6]
    exp = np.where(amax > 0, np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0)), 0).astype(np.int64)
    scaled = g / np.exp2(exp)[..., None]
    mag = np.abs(scaled)
    code = np.abs(mag[..., None] - E2M1).argmin(axis=-1)  # nearest magnitude
    code = code | np.where(scaled < 0, 8, 0)
    code = code.astype(np.uint8)
    blocks = (code[..., 0::2] | (code[..., 1::2] << 4)).astype(np.uint8)
    scales = (exp + 127).astype(np.uint8)
    return blocks, scales


def dequantize(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    lo, hi = blocks & 0x0F, blocks >> 4
    codes = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)
    mag = E2M1[codes & 7]
    val = np.where(codes & 8, -mag, mag) * np.exp2(scales.astype(np.int64) - 127)[..., None]
    E, rows, groups = scales.shape
    return val.reshape(E, rows, groups * 32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--malformed", choices=("blocks", "scales"))
    args = ap.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    config = GptOssConfig(
        vocab_size=256, hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=8, num_experts_per_tok=2, sliding_window=8,
        swiglu_limit=3.0, tie_word_embeddings=False, pad_token_id=None, bos_token_id=1, eos_token_id=2,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager",
                                             experts_implementation="eager")
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if name.endswith("norm.weight") else 0.2 * noise)
    model.eval()

    tensors, ref = {}, {}
    for name, p in model.state_dict().items():
        if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            continue
        tensors[name] = p.detach().clone().contiguous()
    with torch.no_grad():
        for layer_idx, layer in enumerate(model.model.layers):
            ex = layer.mlp.experts
            prefix = f"model.layers.{layer_idx}.mlp.experts."
            # [E, H, 2I] (x @ W) -> the output-major [E, 2I, H] MXFP4 stores; [E, I, H] -> [E, H, I].
            for proj, w in (("gate_up_proj", ex.gate_up_proj), ("down_proj", ex.down_proj)):
                out_major = w.detach().transpose(1, 2).contiguous().numpy()
                blocks, scales = quantize(out_major)
                deq = dequantize(blocks, scales)
                assert np.abs(deq - out_major).max() <= np.abs(out_major).max() / 4  # sanity: a real quantizer
                # a second decoder: transformers' own (its [E, in, out] result transposed back)
                theirs = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                                    dtype=torch.float32)
                assert torch.equal(theirs.transpose(1, 2), torch.from_numpy(deq).to(torch.float32)), proj
                if args.malformed and layer_idx == 1 and proj == "gate_up_proj":
                    if args.malformed == "blocks":
                        blocks = blocks[:, :, :-1, :]
                    else:
                        scales = scales[:, :, :-1]
                tensors[prefix + proj + "_blocks"] = torch.from_numpy(np.ascontiguousarray(blocks))
                tensors[prefix + proj + "_scales"] = torch.from_numpy(np.ascontiguousarray(scales))
                w.copy_(torch.from_numpy(deq).to(torch.float32).transpose(1, 2))
                key = "gate_up" if proj == "gate_up_proj" else "down"
                ref[f"dequant.{layer_idx}.{key}"] = torch.from_numpy(deq).to(torch.float32).contiguous()

    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    cfg = json.loads(config.to_json_string())
    cfg["dtype"] = "float32"
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(args.seed + 1))
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits.float()
    ref["input_ids"] = ids.to(torch.int64).contiguous()
    ref["logits"] = logits.contiguous()
    save_file(ref, os.path.join(out_dir, "reference.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
