#!/usr/bin/env python3
"""Capture throughput: `moeatlas capture` vs transformers eager, on the same random model and the same ids.

    .venv/bin/python bench/run_capture_bench.py [--quick] [--build-dir build] [--threads 2] [--repeats 3]

1. Generates the benchmark model with `moeatlas generate` (qwen3_moe, 8 layers, hidden 1024, 16/4 heads of 64,
   64 experts top-8 of width 512, vocab 32000; --quick: a small model) under build/bench-cache/, keyed by its
   parameters, and reuses it when present. Generates the calibration JSONL there too: N documents of exactly
   --seq-len random ids, so that `capture` packs each document into one sequence (it only shuffles their order)
   and transformers gets the same N sequences from the same file.
2. transformers (bench/bench_capture_hf.py, torch from PyPI, torch.set_num_threads(T)): base model,
   output_router_logits=True, inference_mode; every attention implementation (eager, sdpa) x batch size
   (1, 4, 8 sequences) with transformers' default experts implementation; then the eager experts loop at the
   best attention/batch of the default. Model loading is not timed.
3. ours: `moeatlas capture MODEL --domain bench=CALIB -o X.atlas.h5 --seq-len S --threads T --batch-tokens B`
   for each B in --batch-tokens, streaming and --resident. Timed two ways: the whole command (process start
   to exit: checkpoint validation, calibration read, atlas create, all layers including weight loading,
   atlas finalize) and the executor's own time from the summary line. The headline ratio uses the whole
   command.
   Steps 2 and 3 run in R rounds (--repeats, default 3), each round measuring every configuration of both
   engines once, and every configuration keeps its best round: both engines see the same moments of a
   shared machine. Before each measurement the script waits (up to --quiet-wait s) for the CPUs to be
   idle and records how busy other processes kept them.
4. bench_moe_block (if built): sgemm peak and MoE-block GFLOP/s on the model's layer shape.

Prints a table and the ratio ours/HF-best, and writes everything to a JSON file (--out, default
build/bench-cache/results/capture-<model key>-<time>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FULL = dict(arch="qwen3_moe", layers=8, hidden=1024, heads=16, kv_heads=4, head_dim=64, experts=64, top_k=8,
            expert_width=512, vocab=32000, seed=0)
# --preset qwen3_5_moe: a Qwen3.5-MoE-shaped model (Qwen3.5-35B-A3B's layer pattern and head shapes, fewer and
# narrower layers): 3 Gated DeltaNet layers + 1 gated full-attention layer, 16/2 heads of 128 (partial RoPE),
# DeltaNet 8 q/k heads and 16 value heads of 64, 64 experts top-8 of width 256 plus a shared expert of 256.
QWEN35 = dict(arch="qwen3_5_moe", layers=4, hidden=1024, heads=16, kv_heads=2, head_dim=128, experts=64, top_k=8,
              expert_width=256, vocab=32000, seed=0,
              extra=dict(full_attention_interval=4, linear_key_heads=8, linear_value_heads=16,
                         linear_key_head_dim=64, linear_value_head_dim=64, shared_width=256))
QUICK = dict(arch="qwen3_moe", layers=2, hidden=256, heads=4, kv_heads=2, head_dim=64, experts=16, top_k=4,
             expert_width=128, vocab=4096, seed=0)
# --preset gpt-oss-20b: gpt-oss-20b's layer shape (hidden 2880, 64 q / 8 kv heads of 64, 32 experts top-4 of width
# 2880, sinks, alternating sliding-window 128 / full layers, YaRN) with 2 of its 24 layers; vocabulary 32000
# instead of 201088 (only the embedding gather sees it: neither engine runs the lm_head here).
GPT_OSS_20B = dict(arch="gpt_oss", layers=2, hidden=2880, heads=64, kv_heads=8, head_dim=64, experts=32, top_k=4,
                   expert_width=2880, vocab=32000, seed=0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds` (other processes: call it while nothing of ours runs)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v), v[3] + v[4]
    t1, i1 = snap()
    time.sleep(seconds)
    t2, i2 = snap()
    return round(1.0 - (i2 - i1) / max(1, t2 - t1), 3)


def wait_quiet(max_wait: float, threshold: float = 0.10) -> float:
    """Waits until other processes keep the CPUs at most `threshold` busy, or `max_wait` s; returns the last
    busy fraction seen."""
    start = time.time()
    busy = cpu_busy()
    while busy > threshold and time.time() - start < max_wait:
        busy = cpu_busy(2.0)
    return busy


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem, "kernel": platform.release(),
            "loadavg_start": loadavg()}


def model_key(p: dict) -> str:
    return (f"{p['arch']}-L{p['layers']}-H{p['hidden']}-h{p['heads']}-kv{p['kv_heads']}-d{p['head_dim']}"
            f"-E{p['experts']}-k{p['top_k']}-I{p['expert_width']}-V{p['vocab']}-s{p['seed']}"
            + "".join(f"-{k}{v}" for k, v in sorted(p.get("extra", {}).items())))


def run(cmd: list[str], env: dict | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if r.returncode != 0:
        sys.stderr.write((r.stdout or "") + (r.stderr or ""))
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}")
    return r


def ensure_model(moeatlas: Path, cache: Path, p: dict) -> Path:
    d = cache / "models" / model_key(p)
    if (d / "config.json").exists():
        log(f"model: reusing {d}")
        return d
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"model: generating {d}")
    run([str(moeatlas), "generate", "-o", str(tmp), "--arch", p["arch"], "--layers", str(p["layers"]),
         "--hidden", str(p["hidden"]), "--heads", str(p["heads"]), "--kv-heads", str(p["kv_heads"]),
         "--head-dim", str(p["head_dim"]), "--experts", str(p["experts"]), "--top-k", str(p["top_k"]),
         "--expert-width", str(p["expert_width"]), "--vocab", str(p["vocab"]), "--seed", str(p["seed"]),
         "--force"] + [a for k, v in p.get("extra", {}).items() for a in ("--" + k.replace("_", "-"), str(v))])
    tmp.rename(d)
    return d


def ensure_calibration(moeatlas: Path, cache: Path, p: dict, num_seqs: int, seq_len: int) -> Path:
    f = cache / "calibration" / f"ids-V{p['vocab']}-n{num_seqs}-t{seq_len}-s{p['seed']}.jsonl"
    if f.exists():
        log(f"calibration: reusing {f}")
        return f
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".tmp")
    run([str(moeatlas), "generate", "--calibration", str(tmp), "--vocab", str(p["vocab"]),
         "--calibration-docs", str(num_seqs), "--calibration-doc-tokens", str(seq_len), "--seed", str(p["seed"])])
    # Every document must be exactly seq_len ids, so both engines see the same sequences.
    lens = [len(json.loads(line)["input_ids"]) for line in tmp.read_text().splitlines() if line.strip()]
    if len(lens) != num_seqs or any(n != seq_len for n in lens):
        raise SystemExit(f"{tmp}: expected {num_seqs} documents of {seq_len} ids, got {lens[:4]}...")
    tmp.rename(f)
    log(f"calibration: wrote {f}")
    return f


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def run_hf(args, model: Path, calib: Path, num_seqs: int, batches: list[int], experts: str, attn: str) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "bench_capture_hf.py"), "--model", str(model),
           "--input-jsonl", str(calib), "--num-seqs", str(num_seqs), "--seq-len", str(args.seq_len),
           "--threads", str(args.threads), "--batch", ",".join(str(b) for b in batches if b <= num_seqs),
           "--attn", attn, "--experts", experts, "--repeats", "1"]
    busy = wait_quiet(args.quiet_wait)
    log("transformers: " + " ".join(cmd[1:]))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=thread_env(args.threads), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in r.stderr.splitlines():
        if line.startswith("{"):
            log("  " + line)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit("bench_capture_hf.py failed")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s_incl_load"] = round(time.perf_counter() - t0, 1)
    out["others_busy_before"] = busy
    out["loadavg_after"] = loadavg()
    return out


SUMMARY = re.compile(r"capture: (\d+) tokens x (\d+) layers in .*?\((\d+) token-layers/s\).*?peak RSS (\d+) MiB")


def run_ours(args, moeatlas: Path, model: Path, calib: Path, out_dir: Path, batch_tokens: int,
             resident: bool) -> dict:
    """One run of `moeatlas capture`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atlas = out_dir / f"bench-b{batch_tokens}{'-resident' if resident else ''}.atlas.h5"
    cmd = [str(moeatlas), "capture", str(model), "--domain", f"bench={calib}", "-o", str(atlas),
           "--seq-len", str(args.seq_len), "--threads", str(args.threads), "--batch-tokens", str(batch_tokens)]
    if resident:
        cmd.append("--resident")
    if args.no_resume_state:
        cmd.append("--no-resume-state")
    for p in out_dir.glob(atlas.name + "*"):
        p.unlink()
    busy = wait_quiet(args.quiet_wait)
    la = loadavg()
    t0 = time.perf_counter()
    r = run(cmd, env=thread_env(args.threads))
    wall = time.perf_counter() - t0
    m = SUMMARY.search(r.stderr)
    if not m:
        sys.stderr.write(r.stderr)
        raise SystemExit("no summary line from moeatlas capture")
    tokens, layers, rate, rss = (int(g) for g in m.groups())
    executor_s = tokens * layers / rate if rate else float("nan")
    for p in out_dir.glob(atlas.name + "*"):
        p.unlink()
    res = {"batch_tokens": batch_tokens, "resident": resident, "command": " ".join(cmd[1:]), "tokens": tokens,
           "seconds": round(wall, 3), "executor_seconds": round(executor_s, 3),
           "tokens_per_s": round(tokens / wall, 2), "executor_tokens_per_s": round(tokens / executor_s, 2),
           "peak_rss_mib": rss, "others_busy_before": busy, "loadavg_before": la}
    log(f"  ours b{batch_tokens}{' resident' if resident else ''}: {res['tokens_per_s']} tok/s whole command, "
        f"{res['executor_tokens_per_s']} tok/s executor, RSS {rss} MiB (others busy {busy:.0%} before)")
    return res


def best_of(runs: list[dict], key: str = "tokens_per_s") -> dict:
    best = dict(max(runs, key=lambda r: r[key]))
    best["all_tokens_per_s"] = [r[key] for r in runs]
    if "executor_tokens_per_s" in best:
        best["executor_tokens_per_s"] = max(r["executor_tokens_per_s"] for r in runs)
    return best


def merge_hf(rounds: list[dict]) -> dict | None:
    """Best of each configuration over the rounds of bench_capture_hf.py."""
    if not rounds:
        return None
    by_cfg: dict = {}
    for rd in rounds:
        for r in rd["results"]:
            by_cfg.setdefault((r["experts"], r["attn"], r["batch"]), []).append(r)
    results = [best_of(v) for v in by_cfg.values()]
    out = dict(rounds[-1])
    best = max(results, key=lambda r: r["tokens_per_s"])
    out.update(results=results, tokens_per_s=best["tokens_per_s"], seconds=best["seconds"], attn=best["attn"],
               batch=best["batch"], experts=best["experts"], repeats=len(rounds),
               others_busy_before=[rd.get("others_busy_before") for rd in rounds])
    return out


def run_block(args, block_bin: Path, p: dict, out_dir: Path, model: Path) -> dict | None:
    if not block_bin.exists():
        log(f"bench_moe_block: {block_bin} not built, skipped")
        return None
    js = out_dir / "bench_moe_block.json"
    cmd = [str(block_bin), "--threads", str(args.threads), "--tokens", str(args.block_tokens),
           "--experts", str(p["experts"]), "--top-k", str(p["top_k"]), "--hidden", str(p["hidden"]),
           "--width", str(p["expert_width"]), "--repeats", str(args.repeats), "--layer",
           "--seq-len", str(args.seq_len), "--checkpoint", str(model), "--json", str(js)]
    if args.quick:
        cmd += ["--sgemm", "1024"]
    busy = wait_quiet(args.quiet_wait)
    log("bench_moe_block: " + " ".join(cmd[1:]))
    r = run(cmd, env=thread_env(args.threads))
    print(r.stdout, file=sys.stderr)
    out = json.loads(js.read_text())
    out["table"] = r.stdout
    out["others_busy_before"] = busy
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model, 4 sequences, 1 repeat: a sanity run")
    ap.add_argument("--preset", choices=("qwen3_moe", "gpt-oss-20b", "qwen3_5_moe"), default="qwen3_moe",
                    help="the benchmark model: qwen3_moe (default; --quick: a smaller one), a 2-layer "
                         "gpt-oss-20b-shaped model (eager attention only: transformers has no sdpa for gpt_oss' "
                         "sinks) or a Qwen3.5-MoE-shaped hybrid model")
    ap.add_argument("--build-dir", default="build", help="CMake build directory holding app/moeatlas")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="runs per configuration, best kept (default 3)")
    ap.add_argument("--num-seqs", type=int, default=None, help="sequences (default 8; --quick 4)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--hf-batches", default="1,4,8")
    ap.add_argument("--batch-tokens", default="2048,4096", help="our --batch-tokens values to try")
    ap.add_argument("--block-tokens", type=int, default=4096)
    ap.add_argument("--no-resume-state", action="store_true", help="pass --no-resume-state to capture")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-eager-experts", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-block", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="wait up to this many seconds before each measurement for other processes to go quiet")
    ap.add_argument("--out", help="JSON result file")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.quick:
        args.quiet_wait = min(args.quiet_wait, 5.0)
    num_seqs = args.num_seqs or (4 if args.quick else 8)
    p = (GPT_OSS_20B if args.preset == "gpt-oss-20b" else QWEN35 if args.preset == "qwen3_5_moe"
         else QUICK if args.quick else FULL)

    build = (REPO / args.build_dir).resolve()
    moeatlas = build / "app" / "moeatlas"
    if not moeatlas.exists():
        raise SystemExit(f"{moeatlas} not found: build it (ninja -C {args.build_dir} moeatlas bench_moe_block)")
    cache = REPO / "build" / "bench-cache"
    info = {"machine": machine_info(), "model": p, "model_key": model_key(p), "num_seqs": num_seqs,
            "seq_len": args.seq_len, "threads": args.threads, "repeats": args.repeats,
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "build_dir": str(build),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    log(f"machine: {info['machine']}")
    model = ensure_model(moeatlas, cache, p)
    calib = ensure_calibration(moeatlas, cache, p, num_seqs, args.seq_len)
    tokens = num_seqs * args.seq_len

    hf_rounds, eager_rounds, our_runs = [], [], {}
    batches = [int(b) for b in args.hf_batches.split(",")]
    configs = [(bt, resident) for resident in (False, True) for bt in (int(b) for b in args.batch_tokens.split(","))]
    for rnd in range(args.repeats):
        log(f"round {rnd + 1}/{args.repeats}")
        if not args.skip_hf:
            hf_rounds.append(run_hf(args, model, calib, num_seqs, batches, "default",
                                    "eager" if p["arch"] == "gpt_oss" else "both"))
            if not args.skip_eager_experts:
                first = max(hf_rounds[0]["results"], key=lambda r: r["tokens_per_s"])
                eager_rounds.append(run_hf(args, model, calib, num_seqs, [first["batch"]], "eager", first["attn"]))
        if not args.skip_ours:
            for bt, resident in configs:
                our_runs.setdefault((bt, resident), []).append(
                    run_ours(args, moeatlas, model, calib, cache / "runs", bt, resident))
    hf, hf_eager = merge_hf(hf_rounds), merge_hf(eager_rounds)
    ours = [best_of(v) for v in our_runs.values()]

    block = None if args.skip_block else run_block(args, build / "bench" / "bench_moe_block", p, cache / "runs", model)
    info["machine"]["loadavg_end"] = loadavg()

    # Report
    rows = []
    for res in (hf, hf_eager):
        if res:
            for r in res["results"]:
                rows.append((f"transformers {res['transformers']} (torch {res['torch']})",
                             f"experts={r['experts']}, attn={r['attn']}, batch={r['batch']}", r["tokens_per_s"],
                             r["all_tokens_per_s"], None, None))
    for r in ours:
        rows.append(("moeatlas capture", f"--batch-tokens {r['batch_tokens']}{' --resident' if r['resident'] else ''}",
                     r["tokens_per_s"], r["all_tokens_per_s"], r["executor_tokens_per_s"], r["peak_rss_mib"]))
    hf_all = (hf["results"] if hf else []) + (hf_eager["results"] if hf_eager else [])
    hf_best = max((r["tokens_per_s"] for r in hf_all), default=None)
    ours_best = max(ours, key=lambda r: r["tokens_per_s"]) if ours else None
    ratio = round(ours_best["tokens_per_s"] / hf_best, 2) if (hf_best and ours_best) else None
    ratio_exec = round(max(r["executor_tokens_per_s"] for r in ours) / hf_best, 2) if (hf_best and ours) else None

    print(f"\nmodel {model_key(p)}, {num_seqs} x {args.seq_len} tokens, {args.threads} threads, best of "
          f"{args.repeats} rounds; machine {info['machine']['cpu']} x{info['machine']['nproc']}, load average "
          f"{info['machine']['loadavg_start']} -> {info['machine']['loadavg_end']}\n")
    print("| engine | configuration | tokens/s (best) | tokens/s per round | tokens/s, executor only | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for eng, cfg, tps, rounds, ex, rss in rows:
        print(f"| {eng} | {cfg} | {tps:.1f} | {', '.join(f'{x:.0f}' for x in rounds)} | "
              f"{'' if ex is None else f'{ex:.1f}'} | {'' if rss is None else rss} |")
    if ratio is not None:
        print(f"\nours best ({ours_best['tokens_per_s']:.1f} tok/s, --batch-tokens {ours_best['batch_tokens']}"
              f"{' --resident' if ours_best['resident'] else ''}, whole command) / transformers best "
              f"({hf_best:.1f} tok/s) = {ratio:.2f}x (executor time only: {ratio_exec:.2f}x); target >= 1.5x")
    if block:
        print(f"\nsgemm peak {block['sgemm_peak_gflops']:.1f} GFLOP/s; MoE block:")
        for r in block["rows"]:
            if r["section"] != "sgemm":
                print(f"  {r['name']}: {r['gflops']:.1f} GFLOP/s ({r['pct_peak']:.0f}% of peak) {r['note']}")

    result = dict(info, tokens=tokens, transformers=hf, transformers_eager_experts=hf_eager, ours=ours,
                  hf_best_tokens_per_s=hf_best, ours_best=ours_best, ratio=ratio, ratio_executor=ratio_exec,
                  moe_block=block, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    out = Path(args.out) if args.out else cache / "results" / f"capture-{model_key(p)}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
