#!/usr/bin/env python3
"""Logits of a checkpoint loaded by stock transformers (float32, eager attention and experts), for engines
to compare against. Fails when loading reports missing, unexpected or mismatched keys.

Usage: stock_logits.py --model DIR --ids "1,2,3;4,5,6" --out FILE   (FILE: [B, S, V] float32, little endian)
"""

from __future__ import annotations

import argparse
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True, help="sequences separated by ';', ids by ','")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model, info = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"loading {args.model}: {problems}")
    ids = torch.tensor([[int(t) for t in seq.split(",")] for seq in args.ids.split(";")], dtype=torch.int64)
    with torch.inference_mode():
        logits = model.eval()(input_ids=ids, use_cache=False).logits.float().contiguous()
    logits.numpy().astype("<f4").tofile(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
