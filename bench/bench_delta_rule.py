#!/usr/bin/env python3
"""transformers' torch_chunk_gated_delta_rule (Qwen3.5-MoE, no FLA kernels) on bench_delta_rule's shapes and
inputs of the same distribution: seconds and microseconds per token, best of --repeats, for docs/performance.md.

Usage: bench_delta_rule.py [--threads 2] [--lengths 512,2048,8192] [--repeats 3]
"""
import argparse
import time

import torch
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe as m

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--lengths", default="512,2048,8192")
ap.add_argument("--repeats", type=int, default=3)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
NK, NV, D = 16, 32, 128
print(f"transformers torch_chunk_gated_delta_rule: {NK} q/k heads x {D}, {NV} value heads x {D}, "
      f"{args.threads} threads")
print(f"{'tokens':>8} {'seconds':>10} {'us/token':>12}")
with torch.inference_mode():
    for s in (int(x) for x in args.lengths.split(",")):
        q, k = torch.randn(1, s, NK, D), torch.randn(1, s, NK, D)
        v = torch.randn(1, s, NV, D)
        g, beta = -0.05 * torch.rand(1, s, NV), torch.sigmoid(torch.randn(1, s, NV))
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            m.torch_chunk_gated_delta_rule(q, k, v, g=g, beta=beta, chunk_size=64, use_qk_l2norm_in_kernel=True)
            best = min(best, time.perf_counter() - t0)
        print(f"{s:8d} {best:10.3f} {1e6 * best / s:12.1f}", flush=True)
