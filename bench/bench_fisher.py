#!/usr/bin/env python3
"""Fisher pass throughput: `moeatlas fisher` vs transformers + torch.autograd computing the same scores.

    .venv/bin/python bench/bench_fisher.py [--build build] [--threads 2] [--repeats 3] [--quick]

1. Under <build>/bench-cache/fisher/ (reused when present): a random qwen3_moe checkpoint made by
   `moeatlas generate` (default 4 layers, hidden 512, 8 query / 4 KV heads of 64, 32 experts top-4 of
   width 256, vocab 32000, fp32; --quick: a small model), two calibration domains of random ids (`generate
   --calibration`, different seeds, --docs documents of exactly --seq-len ids each, so each document is one
   packed sequence; default 16 x 512 per domain) and an atlas captured from them (`moeatlas capture`), whose
   /tokens the Fisher pass reads.
2. Ours (a copy of <build>/app/moeatlas taken at the start, since others may relink it meanwhile):
   `moeatlas fisher ATLAS --ablate none --no-baselines --forms mask,weight,grad_abs --threads T
   --mode resident`, and the same with `--mode streaming`, each on its own copy of the atlas. Timed as the
   whole command (process start to exit: checkpoint check, memory plan, every layer loaded, the pass, /fisher
   written and the atlas renamed into place); the pass alone is the `seconds` of the /fisher params.
3. transformers (this script with --hf-worker, in a subprocess): AutoModelForCausalLM.from_pretrained of the same
   checkpoint (float32, transformers' default attention), every parameter frozen except the routed experts'
   gate_up_proj / down_proj, torch.set_num_threads(T); for each sequence of the atlas (read with h5py: /tokens/ids
   and /tokens/seq_offsets), batch of one, labels = input ids: forward, loss.backward(), then the three forms of
   every MoE layer from the per-sample expert gradients (reduced in float32, accumulated in float64; mask form
   through dL/dm_j = sum_h W_down[h,j] G_down[h,j], as tests/reference/fisher_reference.py). One short untimed warm-up
   sample first; loading is not timed. Once with transformers' default experts implementation (grouped_mm in
   transformers 5) and once with its eager loop over experts.
4. Agreement: the pooled row (last) of /fisher/<form>/units of our atlas against the transformers scores, per
   layer max |ours - ref| / max |ref| (worst layer reported); the mask form must be within --tol (1e-3).
   Both of our modes and both experts implementations are checked.

Steps 2 and 3 run in R rounds (--repeats), each round measuring every configuration once, back to back; each
configuration keeps its best round. Before each measurement the script waits (up to --quiet-wait s) for other
processes to leave the CPUs idle and records how busy they were. Prints a table, tokens/s of each side and the
ratio ours / transformers; writes everything to <build>/bench-cache/fisher/results/fisher-<key>-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from run_capture_bench import loadavg, log, machine_info, model_key, run, thread_env, wait_quiet  # noqa: E402

FULL = dict(arch="qwen3_moe", layers=4, hidden=512, heads=8, kv_heads=4, head_dim=64, experts=32, top_k=4,
            expert_width=256, vocab=32000, seed=0)
QUICK = dict(arch="qwen3_moe", layers=2, hidden=256, heads=4, kv_heads=2, head_dim=64, experts=16, top_k=4,
             expert_width=128, vocab=4096, seed=0)
FORMS = ("mask", "weight", "grad_abs")


# ---------------------------------------------------------------------------------------------------------------
# transformers side (runs in a subprocess: --hf-worker)

def hf_worker(args) -> int:
    import h5py
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    with h5py.File(args.atlas, "r") as f:
        ids = torch.from_numpy(f["tokens/ids"][:].astype(np.int64))
        offsets = f["tokens/seq_offsets"][:].astype(np.int64)
    seqs = [ids[offsets[n]:offsets[n + 1]] for n in range(len(offsets) - 1)]

    t0 = time.perf_counter()
    kwargs = {} if args.experts == "default" else {"experts_implementation": args.experts}
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, **kwargs)
    model.eval()
    load_s = time.perf_counter() - t0
    for p in model.parameters():
        p.requires_grad_(False)
    layers = []
    for i, layer in enumerate(model.model.layers):
        ex = getattr(layer.mlp, "experts", None)
        if ex is not None and hasattr(ex, "gate_up_proj"):
            ex.gate_up_proj.requires_grad_(True)
            ex.down_proj.requires_grad_(True)
            layers.append((i, ex))
    E, H, inter = layers[0][1].down_proj.shape
    acc = {form: {i: torch.zeros(E, inter, dtype=torch.float64) for i, _ in layers} for form in FORMS}

    def sample(seq, accumulate: bool) -> float:
        model.zero_grad(set_to_none=True)
        out = model(input_ids=seq[None], labels=seq[None], use_cache=False)
        out.loss.backward()
        if accumulate:
            with torch.no_grad():
                for i, ex in layers:
                    g_gu, g_d = ex.gate_up_proj.grad, ex.down_proj.grad  # [E, 2I, H], [E, H, I]
                    g_gate, g_up = g_gu[:, :inter], g_gu[:, inter:]
                    acc["mask"][i] += (ex.down_proj * g_d).sum(1).double().square()
                    acc["weight"][i] += (g_gate.square().sum(-1) + g_up.square().sum(-1) + g_d.square().sum(1)).double()
                    acc["grad_abs"][i] += ((g_gate.abs().sum(-1) + g_up.abs().sum(-1) + g_d.abs().sum(1)).double()
                                           / (3 * H))
        return out

    # Warm-up (not timed): a short prefix of the first sequence; also checks that the loss transformers
    # differentiates is the plain mean next-token cross-entropy (no router auxiliary loss).
    warm = seqs[0][:min(64, len(seqs[0]))]
    out = sample(warm, accumulate=False)
    plain = torch.nn.functional.cross_entropy(out.logits[0, :-1].detach().float(), warm[1:])
    assert torch.allclose(out.loss.detach(), plain, rtol=1e-5, atol=0), (float(out.loss), float(plain))
    del out

    t0 = time.perf_counter()
    losses = []
    for seq in seqs:
        losses.append(float(sample(seq, accumulate=True).loss.detach()))
    seconds = time.perf_counter() - t0

    n = len(seqs)
    arrays = {f"{form}.{i}": (a / n).numpy() for form, per in acc.items() for i, a in per.items()}
    np.savez(args.hf_out, losses=np.array(losses), **arrays)
    tokens = int(offsets[-1])
    print(json.dumps({"experts": args.experts, "experts_impl": model.config._experts_implementation,
                      "attn": model.config._attn_implementation, "samples": n, "tokens": tokens,
                      "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
                      "load_seconds": round(load_s, 2), "layers": [i for i, _ in layers],
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "transformers": transformers.__version__}))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# driver

def cpu_snapshot() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of our finished children) so far."""
    import resource
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (sum(v) - v[3] - v[4]) / tick, ru.ru_utime + ru.ru_stime


def others_busy(before: tuple[float, float], after: tuple[float, float], wall: float) -> float:
    """Fraction of the CPUs that other processes kept busy while one measured child ran."""
    machine, ours = after[0] - before[0], after[1] - before[1]
    return round(max(0.0, machine - ours) / (wall * (os.cpu_count() or 1)), 3)


def ensure_model(cli: Path, cache: Path, p: dict) -> Path:
    d = cache / "models" / model_key(p)
    if (d / "config.json").exists():
        log(f"model: reusing {d}")
        return d
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"model: generating {d}")
    run([str(cli), "generate", "-o", str(tmp), "--arch", p["arch"], "--layers", str(p["layers"]),
         "--hidden", str(p["hidden"]), "--heads", str(p["heads"]), "--kv-heads", str(p["kv_heads"]),
         "--head-dim", str(p["head_dim"]), "--experts", str(p["experts"]), "--top-k", str(p["top_k"]),
         "--expert-width", str(p["expert_width"]), "--vocab", str(p["vocab"]), "--seed", str(p["seed"]), "--force"])
    tmp.rename(d)
    return d


def ensure_atlas(cli: Path, cache: Path, model: Path, p: dict, docs: int, seq_len: int, threads: int) -> Path:
    """Two domains of `docs` random documents of exactly seq_len ids each, captured into an atlas."""
    key = f"{model_key(p)}-n{docs}-t{seq_len}"
    atlas = cache / "atlases" / f"{key}.atlas.h5"
    if atlas.exists():
        log(f"atlas: reusing {atlas}")
        return atlas
    calib = cache / "calibration"
    calib.mkdir(parents=True, exist_ok=True)
    domains = []
    for name, seed in (("a", 101), ("b", 202)):
        f = calib / f"{name}-V{p['vocab']}-n{docs}-t{seq_len}-s{seed}.jsonl"
        if not f.exists():
            tmp = f.with_name(f.name + ".tmp")
            run([str(cli), "generate", "--calibration", str(tmp), "--vocab", str(p["vocab"]), "--calibration-docs",
                 str(docs), "--calibration-doc-tokens", str(seq_len), "--seed", str(seed)])
            lens = [len(json.loads(line)["input_ids"]) for line in tmp.read_text().splitlines() if line.strip()]
            if len(lens) != docs or any(n != seq_len for n in lens):
                raise SystemExit(f"{tmp}: expected {docs} documents of {seq_len} ids, got {lens[:4]}...")
            tmp.rename(f)
        domains += ["-d", f"{name}={f}"]
    atlas.parent.mkdir(parents=True, exist_ok=True)
    tmp = atlas.with_name("capturing-" + atlas.name)
    log(f"atlas: capturing {atlas}")
    run([str(cli), "capture", str(model), *domains, "-o", str(tmp), "--seq-len", str(seq_len), "--threads",
         str(threads), "--force", "--no-resume-state"], env=thread_env(threads))
    tmp.rename(atlas)
    return atlas


def read_fisher(atlas: Path) -> tuple[dict, dict]:
    """(params of /fisher, {form: pooled units [L, E, I]})."""
    import h5py
    with h5py.File(atlas, "r") as f:
        g = f["fisher"]
        raw = g.attrs["params"]
        params = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        pooled = {form: f[f"fisher/{form}/units"][-1] for form in FORMS if f"fisher/{form}" in f}
    return params, pooled


def run_ours(args, cli: Path, base_atlas: Path, work: Path, mode: str, supports_mode: bool) -> tuple[dict, dict]:
    atlas = work / f"ours-{mode}.atlas.h5"
    for q in work.glob(atlas.name + "*"):
        q.unlink()
    shutil.copyfile(base_atlas, atlas)
    cmd = [str(cli), "fisher", str(atlas), "--ablate", "none", "--no-baselines", "--forms", ",".join(FORMS),
           "--threads", str(args.threads)]
    if supports_mode:
        cmd += ["--mode", mode]
    busy = wait_quiet(args.quiet_wait)
    la = loadavg()
    c0 = cpu_snapshot()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=thread_env(args.threads), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    during = others_busy(c0, cpu_snapshot(), wall)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"moeatlas fisher failed ({r.returncode}): {' '.join(cmd)}")
    params, pooled = read_fisher(atlas)
    summary = [line.strip() for line in r.stderr.replace("\r", "\n").splitlines() if line.startswith("fisher:")]
    tokens = int(params["tokens"])
    res = {"mode": params.get("mode", mode), "command": " ".join(["moeatlas", *cmd[1:]]), "tokens": tokens,
           "samples": int(params["samples"]), "seconds": round(wall, 3), "pass_seconds": round(params["seconds"], 3),
           "tokens_per_s": round(tokens / wall, 2), "pass_tokens_per_s": round(tokens / params["seconds"], 2),
           "summary": summary, "others_busy_before": busy, "others_busy_during": during, "loadavg_before": la,
           "atlas": str(atlas)}
    log(f"  ours --mode {mode}: {res['tokens_per_s']} tok/s whole command ({wall:.1f} s), "
        f"{res['pass_tokens_per_s']} tok/s pass ({params['seconds']:.1f} s); {' | '.join(summary)} "
        f"(others busy {busy:.0%} before, {during:.0%} during)")
    return res, pooled


def run_hf(args, model: Path, atlas: Path, work: Path, experts: str) -> tuple[dict, dict]:
    out = work / f"hf-{experts}.npz"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--hf-worker", "--model", str(model), "--atlas", str(atlas),
           "--experts", experts, "--threads", str(args.threads), "--hf-out", str(out)]
    busy = wait_quiet(args.quiet_wait)
    la = loadavg()
    c0 = cpu_snapshot()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=thread_env(args.threads), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    during = others_busy(c0, cpu_snapshot(), wall)  # over the whole worker, loading included
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"transformers worker failed ({r.returncode}): {' '.join(cmd)}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(wall_s_incl_load=round(wall, 1), others_busy_before=busy, others_busy_during=during, loadavg_before=la)
    import numpy as np
    z = np.load(out)
    scores = {form: np.stack([z[f"{form}.{i}"] for i in res["layers"]]) for form in FORMS}
    log(f"  transformers experts={experts} ({res['experts_impl']}, attn {res['attn']}): {res['tokens_per_s']} tok/s "
        f"({res['seconds']:.1f} s, load {res['load_seconds']} s not counted) (others busy {busy:.0%} before, "
        f"{during:.0%} during)")
    return res, scores


def agreement(ours: dict, ref: dict) -> dict:
    """Per form: worst layer's max |ours - ref| / max |ref|, and relative Frobenius error over all units."""
    import numpy as np
    out = {}
    for form in FORMS:
        a, b = np.asarray(ours[form], dtype=np.float64), np.asarray(ref[form], dtype=np.float64)
        if a.shape != b.shape:
            raise SystemExit(f"{form}: ours {a.shape} vs transformers {b.shape}")
        per_layer = [float(np.abs(a[l] - b[l]).max() / max(np.abs(b[l]).max(), 1e-300)) for l in range(a.shape[0])]
        out[form] = {"max_rel": max(per_layer), "per_layer": per_layer,
                     "frob_rel": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))}
    return out


def best_of(runs: list[dict]) -> dict:
    best = dict(max(runs, key=lambda r: r["tokens_per_s"]))
    best["all_tokens_per_s"] = [r["tokens_per_s"] for r in runs]
    best["all_others_busy_during"] = [r["others_busy_during"] for r in runs]
    if "pass_tokens_per_s" in best:
        best["pass_tokens_per_s"] = max(r["pass_tokens_per_s"] for r in runs)
        best["pass_seconds"] = min(r["pass_seconds"] for r in runs)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="CMake build directory holding app/moeatlas")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each configuration keeps its best")
    ap.add_argument("--docs", type=int, default=None, help="sequences per domain (default 16; --quick 2)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 512; --quick 64)")
    ap.add_argument("--modes", default="resident,streaming", help="our --mode values")
    ap.add_argument("--experts", default="default,eager", help="transformers experts implementations")
    ap.add_argument("--tol", type=float, default=1e-3, help="bar of the mask-form agreement")
    ap.add_argument("--quick", action="store_true", help="small model and few tokens: a sanity run")
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="wait up to this many seconds before each measurement for other processes to go quiet")
    ap.add_argument("--out", help="JSON result file")
    # worker mode
    ap.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--atlas", help=argparse.SUPPRESS)
    ap.add_argument("--hf-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.hf_worker:
        args.experts = args.experts or "default"
        return hf_worker(args)

    p = QUICK if args.quick else FULL
    docs = args.docs or (2 if args.quick else 16)
    seq_len = args.seq_len or (64 if args.quick else 512)
    if args.quick:
        args.quiet_wait = min(args.quiet_wait, 5.0)
    build = (REPO / args.build).resolve()
    cache = build / "bench-cache" / "fisher"
    work = cache / "runs"
    work.mkdir(parents=True, exist_ok=True)
    # Others may relink build/app/moeatlas while this runs: wait until it works, then measure a copy of it.
    built = build / "app" / "moeatlas"
    cli = work / "moeatlas"
    deadline = time.time() + 600
    while True:
        try:
            if built.exists() and subprocess.run([str(built), "fisher", "--help"], capture_output=True).returncode == 0:
                shutil.copy2(built, cli)
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"{built} missing or not working: build it (cmake --build {args.build} --target moeatlas)")
        time.sleep(10)
    help_text = run([str(cli), "fisher", "--help"]).stdout
    supports_mode = "--mode" in help_text
    modes = args.modes.split(",") if supports_mode else ["auto"]
    if not supports_mode:
        log("this moeatlas fisher has no --mode: measuring its default only")
    experts = args.experts.split(",")

    info = {"machine": machine_info(), "model": p, "model_key": model_key(p), "docs_per_domain": docs,
            "seq_len": seq_len, "threads": args.threads, "repeats": args.repeats,
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "build": str(build),
            "binary_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cli.stat().st_mtime)),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    log(f"machine: {info['machine']}")
    model = ensure_model(cli, cache, p)
    atlas = ensure_atlas(cli, cache, model, p, docs, seq_len, args.threads)

    ours_runs: dict[str, list] = {}
    hf_runs: dict[str, list] = {}
    ours_scores: dict[str, dict] = {}
    hf_scores: dict[str, dict] = {}
    for rnd in range(args.repeats):
        log(f"round {rnd + 1}/{args.repeats}")
        for m in modes:
            res, pooled = run_ours(args, cli, atlas, work, m, supports_mode)
            ours_runs.setdefault(m, []).append(res)
            ours_scores[m] = pooled
        for e in experts:
            res, scores = run_hf(args, model, atlas, work, e)
            hf_runs.setdefault(e, []).append(res)
            hf_scores[e] = scores
    info["machine"]["loadavg_end"] = loadavg()

    ours = {m: best_of(v) for m, v in ours_runs.items()}
    hf = {e: best_of(v) for e, v in hf_runs.items()}
    checks = {f"{m} vs {e}": agreement(ours_scores[m], hf_scores[e]) for m in ours_scores for e in hf_scores}
    worst_mask = max(c["mask"]["max_rel"] for c in checks.values())
    ok = worst_mask <= args.tol

    first = next(iter(ours.values()))
    print(f"\nmodel {model_key(p)}, 2 domains x {docs} sequences x {seq_len} tokens = {first['tokens']} tokens "
          f"({first['samples']} samples, batch of one); forms mask, weight, grad_abs; {args.threads} threads; best of "
          f"{args.repeats} round(s); machine {info['machine']['cpu']} x{info['machine']['nproc']}, load average "
          f"{info['machine']['loadavg_start']} -> {info['machine']['loadavg_end']}\n")
    def rounds(r):
        return ", ".join(f"{x:.1f} ({b:.0%})" for x, b in zip(r["all_tokens_per_s"], r["all_others_busy_during"]))

    print("| engine | configuration | tokens/s (best) | per round (others' CPU share during it) | seconds (best) "
          "| pass only: tokens/s (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m, r in ours.items():
        print(f"| moeatlas fisher | --mode {r['mode']} (whole command) | {r['tokens_per_s']:.1f} | {rounds(r)} | "
              f"{r['seconds']:.1f} | {r['pass_tokens_per_s']:.1f} ({r['pass_seconds']:.1f}) |")
    for e, r in hf.items():
        print(f"| transformers {r['transformers']} + torch {r['torch']} autograd | experts={e} ({r['experts_impl']}), "
              f"attn {r['attn']} (loading not timed) | {r['tokens_per_s']:.1f} | {rounds(r)} | {r['seconds']:.1f} | |")
    print()
    ratios = {}
    for m, r in ours.items():
        for e, h in hf.items():
            ratios[f"{m} / {e}"] = {"whole_command": round(r["tokens_per_s"] / h["tokens_per_s"], 3),
                                    "pass_only": round(r["pass_tokens_per_s"] / h["tokens_per_s"], 3)}
            print(f"ratio ours --mode {r['mode']} / transformers experts={e}: "
                  f"{ratios[f'{m} / {e}']['whole_command']:.2f}x whole command, "
                  f"{ratios[f'{m} / {e}']['pass_only']:.2f}x pass only")
    print("\nagreement (pooled scores, worst layer's max |ours - ref| / max |ref|; relative Frobenius error):")
    for name, c in checks.items():
        print(f"  {name}: " + ", ".join(f"{f} {c[f]['max_rel']:.2e} ({c[f]['frob_rel']:.2e})" for f in FORMS))
    print(f"mask form within {args.tol:g}: {'yes' if ok else 'NO'} (worst {worst_mask:.2e})")

    result = dict(info, ours=ours, transformers=hf, ratios=ratios, agreement=checks, mask_ok=ok,
                  finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    out = Path(args.out) if args.out else cache / "results" / f"fisher-{model_key(p)}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nresults: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
