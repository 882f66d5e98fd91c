#!/usr/bin/env python3
"""Export throughput vs a plain copy of the same bytes (target: >= 0.8x).

Usage: bench/bench_export.py [--cli build/app/moeatlas] [--gb 1.0] [--keep 0.5] [--layout per-expert|fused]
                             [--repeats 3] [--workdir DIR]

Generates a random bf16 qwen3_moe checkpoint of about --gb GB (`moeatlas generate`), writes a uniform
plan keeping --keep of the experts, then times, with a warm page cache, (a) `moeatlas export` and
(b) copying the export's own output files (shutil.copyfile: same bytes, same file count, no slicing).
Reports the best of --repeats for each, in MB/s of tensor bytes written, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time


def run(cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def reported_seconds(stdout: str) -> float:
    """The export's own duration as the CLI prints it ("... MB in 0.41 s ..."): process start-up
    (loading LibTorch for other subcommands, ~0.5 s) is not export work."""
    m = re.search(r" in ([0-9.]+) s ", stdout)
    return float(m.group(1))


def tree_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> int:
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--cli", default=os.path.join(here, "..", "build", "app", "moeatlas"))
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--layout", choices=("per-expert", "fused"), default="per-expert")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bench_export_", dir=args.workdir)
    try:
        # hidden 1024, 64 experts of width 512, bf16: one MoE layer ~ 64*3*1024*512*2 B = 201 MB.
        layers = max(1, round(args.gb * 1e9 / (64 * 3 * 1024 * 512 * 2)))
        src = os.path.join(work, "src")
        gen = [args.cli, "generate", "-o", src, "--arch", "qwen3_moe", "--dtype", "bfloat16", "--layers", str(layers),
               "--hidden", "1024", "--heads", "8", "--kv-heads", "2", "--head-dim", "128", "--experts", "64",
               "--top-k", "4", "--expert-width", "512", "--vocab", "8192", "--shard-mib", "1024"]
        if args.layout == "fused":
            gen.append("--fused")
        run(gen)
        keep = max(4, round(64 * args.keep))
        plan = {"format": "moeatlas-plan", "version": 1, "source": {"num_experts": 64, "top_k": 4},
                "derivation": {"method": "bench"},
                "layers": [{"layer": l, "keep": list(range(0, 64, 64 // keep))[:keep]} for l in range(layers)]}
        plan_path = os.path.join(work, "plan.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)

        out, copy = os.path.join(work, "out"), os.path.join(work, "copy")
        # Warm the page cache for both contenders.
        for d, _, fs in os.walk(src):
            for f in fs:
                with open(os.path.join(d, f), "rb") as fh:
                    while fh.read(1 << 24):
                        pass
        export_s, process_s, copy_s = [], [], []
        for _ in range(args.repeats):
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            stdout = run([args.cli, "export", src, "--plan", plan_path, "-o", out, "--max-shard-mib", "1024"])
            process_s.append(time.perf_counter() - t)
            export_s.append(reported_seconds(stdout))
            shutil.rmtree(copy, ignore_errors=True)
            os.makedirs(copy)
            t = time.perf_counter()
            for name in os.listdir(out):
                shutil.copyfile(os.path.join(out, name), os.path.join(copy, name))
            copy_s.append(time.perf_counter() - t)
        written = tree_bytes(out)
        e, c = min(export_s), min(copy_s)
        result = {"source_bytes": tree_bytes(src), "written_bytes": written, "layout": args.layout,
                  "kept_fraction": keep / 64, "export_s": round(e, 3), "export_process_s": round(min(process_s), 3), "copy_s": round(c, 3),
                  "export_MBps": round(written / e / 1e6, 1), "copy_MBps": round(written / c / 1e6, 1),
                  "ratio": round(c / e, 3)}
        print(json.dumps(result))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
