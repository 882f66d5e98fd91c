#!/usr/bin/env python3
"""Transformers baseline for MoE Atlas capture throughput.

Bench mode:
  bench_capture_hf.py --model DIR [--seq-len 512] [--num-seqs N] [--input-jsonl FILE] [--threads T]
                      [--batch B[,B...]] [--attn {eager,sdpa,both}]
                      [--experts {default,grouped_mm,eager,batched_mm}[,...]] [--repeats R] [--seed S]
  Loads DIR with AutoModelForCausalLM.from_pretrained (float32), runs the BASE model (model.model(...), no
  lm_head) under torch.inference_mode() with output_router_logits=True over N sequences in batches of
  B (one extra warm-up batch, not timed), for each requested experts implementation x attention
  implementation x batch size, and prints one JSON line for the fastest one:
    {"tokens_per_s", "seconds", "attn", "batch", "threads", "seq_len", "num_seqs", "experts", "results": [...]}
  ("results" holds every combination measured). The sequences are random ids (--seed), or the first N
  documents of --input-jsonl ({"input_ids": [...]} per line, each cut to --seq-len tokens), so that another
  engine can be fed exactly the same ids. "default" is transformers' own choice (experts_implementation
  not given; grouped_mm in transformers 5).

Make-model mode:
  bench_capture_hf.py --make-model DIR [--seed S]
  Creates the benchmark checkpoint with transformers: qwen3_moe, 8 layers, hidden 1024, 16 heads, 4 kv heads,
  head_dim 64, 64 experts, top-8, moe_intermediate_size 512, vocab 32000, N(0, 0.02) init, float32, saved
  sharded (max_shard_size "1GB"). About 0.89 B parameters, 3.6 GB on disk.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, Qwen3MoeConfig

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


def bench_config() -> Qwen3MoeConfig:
    return Qwen3MoeConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=3072,  # dense MLP size; unused since every layer is MoE (mlp_only_layers=[])
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=64,
        num_experts=64,
        num_experts_per_tok=8,
        moe_intermediate_size=512,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )


def make_model(out_dir: str, seed: int) -> None:
    torch.manual_seed(seed)
    # One fp32 copy in RAM (~3.6 GB); transformers' own _init_weights draws N(0, initializer_range=0.02)
    # for linears/embeddings/experts/router and ones for the RMSNorm weights.
    model = AutoModelForCausalLM.from_config(bench_config(), dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="1GB")
    del model
    gc.collect()
    shards = sorted(n for n in os.listdir(out_dir) if n.endswith(".safetensors"))
    print(json.dumps({"model": out_dir, "parameters": n_params, "shards": shards}))


def run_batches(base, batches):
    for ids in batches:
        out = base(input_ids=ids, output_router_logits=True, use_cache=False)
        assert out.router_logits is not None and out.router_logits[0].shape[0] == ids.numel()
    return out


def load_ids(args, vocab):
    gen = torch.Generator().manual_seed(args.seed)
    if not args.input_jsonl:
        ids = torch.randint(0, vocab, (args.num_seqs, args.seq_len), generator=gen, dtype=torch.int64)
    else:
        rows = []
        with open(args.input_jsonl, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    doc = json.loads(line)["input_ids"]
                    if len(doc) >= args.seq_len:
                        rows.append(doc[:args.seq_len])
                if len(rows) == args.num_seqs:
                    break
        if len(rows) < args.num_seqs:
            sys.exit(f"{args.input_jsonl}: only {len(rows)} documents of >= {args.seq_len} tokens, "
                     f"{args.num_seqs} wanted")
        ids = torch.tensor(rows, dtype=torch.int64)
    warmup = torch.randint(0, vocab, (1, args.seq_len), generator=gen, dtype=torch.int64)
    return ids, warmup


def bench(args) -> None:
    torch.set_num_threads(args.threads)
    experts_list = args.experts.split(",")
    batches_list = [int(b) for b in str(args.batch).split(",")]
    first = experts_list[0]
    kwargs = {} if first == "default" else {"experts_implementation": first}
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager", **kwargs)
    model.eval()
    default_experts = model.config._experts_implementation if first == "default" else None
    base = model.model  # the base model: no lm_head
    vocab = model.config.vocab_size
    ids, warmup1 = load_ids(args, vocab)

    attns = ["eager", "sdpa"] if args.attn == "both" else [args.attn]
    results = []
    tokens = args.num_seqs * args.seq_len
    with torch.inference_mode():
        for experts in experts_list:
            impl = default_experts if experts == "default" else experts
            if impl is None:  # "default" asked after another implementation was loaded
                impl = model.get_correct_experts_implementation(None)
            model.set_experts_implementation(impl)
            for attn in attns:
                model.set_attn_implementation(attn)
                for batch in batches_list:
                    batches = [ids[i:i + batch] for i in range(0, args.num_seqs, batch)]
                    run_batches(base, [warmup1.expand(min(batch, args.num_seqs), -1).contiguous()])
                    seconds = float("inf")
                    for _ in range(args.repeats):  # best of R: the machine may be shared
                        t0 = time.perf_counter()
                        run_batches(base, batches)
                        seconds = min(seconds, time.perf_counter() - t0)
                    results.append({"experts": experts if experts != "default" else f"default ({impl})",
                                    "experts_impl": model.config._experts_implementation, "attn": attn,
                                    "batch": batch, "seconds": round(seconds, 3),
                                    "tokens_per_s": round(tokens / seconds, 2)})
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    best = max(results, key=lambda r: r["tokens_per_s"])
    print(json.dumps({
        "tokens_per_s": best["tokens_per_s"],
        "seconds": best["seconds"],
        "attn": best["attn"],
        "batch": best["batch"],
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "seq_len": args.seq_len,
        "num_seqs": args.num_seqs,
        "repeats": args.repeats,
        "experts": best["experts"],
        "dtype": "float32",
        "input": args.input_jsonl or f"random ids, seed {args.seed}",
        "results": results,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="transformers baseline for MoE capture throughput")
    ap.add_argument("--model", help="checkpoint directory to benchmark")
    ap.add_argument("--make-model", metavar="DIR", help="create the benchmark checkpoint in DIR and exit")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--num-seqs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", default="1", help="batch size in sequences; a comma list measures each")
    ap.add_argument("--input-jsonl", help="take the sequences from this JSONL file (input_ids per line)")
    ap.add_argument("--attn", choices=("eager", "sdpa", "both"), default="both")
    ap.add_argument("--experts", default="default",
                    help="comma list of transformers experts implementations: default (transformers' choice, "
                         "grouped_mm in v5), grouped_mm, eager (loop over experts), batched_mm")
    ap.add_argument("--repeats", type=int, default=1, help="time R passes over the N sequences, keep the best")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.make_model:
        make_model(args.make_model, args.seed)
        return 0
    if not args.model:
        ap.error("--model or --make-model is required")
    try:
        batch_sizes = [int(b) for b in args.batch.split(",")]
    except ValueError:
        ap.error("--batch: a comma list of integers")
    for e in args.experts.split(","):
        if e not in ("default", "grouped_mm", "eager", "batched_mm"):
            ap.error(f"--experts: unknown implementation {e!r}")
    if min(min(batch_sizes), args.num_seqs, args.seq_len, args.threads, args.repeats) < 1:
        ap.error("--batch, --num-seqs, --seq-len, --threads and --repeats must be positive")
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
