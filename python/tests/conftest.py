"""Fixtures: the moeatlas CLI (MOEATLAS_CLI, set by ctest, else build/app/moeatlas) and a real atlas
holding every group the C++ side writes, built once per session with the CLI."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(os.environ.get("MOEATLAS_SOURCE_DIR", Path(__file__).resolve().parents[2]))


def _cli_path() -> Path:
    env = os.environ.get("MOEATLAS_CLI")
    return Path(env).resolve() if env else REPO / "build" / "app" / "moeatlas"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cli() -> Path:
    path = _cli_path()
    if not path.is_file():
        pytest.skip(f"no moeatlas CLI at {path} (build it, or set MOEATLAS_CLI)")
    return path


def run_cli(cli: Path, *args: object, cwd: Path) -> str:
    proc = subprocess.run([str(cli), *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"moeatlas {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def make_model(cli: Path, out: Path, arch: str = "qwen3_moe", extra: List[str] = ()) -> Path:
    """A generated tiny model: 4 decoder layers, layer 1 dense (where the architecture has one)."""
    args = ["generate", "-o", out, "--arch", arch, "--layers", "4", "--hidden", "64", "--head-dim", "16",
            "--experts", "8", "--top-k", "2", "--expert-width", "32", "--vocab", "256", "--seed", "3", *extra]
    run_cli(cli, *args, cwd=out.parent)
    return out


def make_calibration(cli: Path, d: Path) -> Dict[str, Path]:
    files = {}
    for name, seed in (("math", 21), ("code", 22)):
        files[name] = d / f"{name}.jsonl"
        run_cli(cli, "generate", "--vocab", "256", "--seed", seed, "--calibration", files[name],
                "--calibration-docs", "6", "--calibration-doc-tokens", "48", cwd=d)
    return files


@pytest.fixture(scope="session")
def full_atlas(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """An atlas with every documented group: capture (expert norms, hidden samples, float32 logits,
    every recorded prefetch predictor), score, fisher (every form, ablation), eval (a sweep and a
    dynamic-k routing rule), prefetch, simulate --store. Returns the atlas and the CLI's CSVs."""
    d = tmp_path_factory.mktemp("full")
    model = make_model(cli, d / "model", extra=["--mlp-only-layers", "1", "--dense-width", "64"])
    cal = make_calibration(cli, d)
    atlas = d / "run.atlas.h5"
    run_cli(cli, "capture", model, "-d", f"math={cal['math']}", "-d", f"code={cal['code']}", "--seq-len", "48",
            "--expert-norms", "--hidden-samples", "4", "--logits-dtype", "float32",
            "--prefetch", "next-router,quasi-hidden,linear,mlp", "-o", atlas, cwd=d)
    run_cli(cli, "score", atlas, cwd=d)
    run_cli(cli, "fisher", atlas, "--forms", "mask,weight,grad_abs", cwd=d)
    out = {"atlas": atlas, "model": model, "dir": d, **cal}
    out["eval_csv"] = d / "eval.csv"
    run_cli(cli, "eval", "--atlas", atlas, "--sparsity", "0.5", "--criteria", "frequency", "--routing", "top-k:1",
            "--csv", out["eval_csv"], cwd=d)
    out["prefetch_csv"] = d / "prefetch.csv"
    run_cli(cli, "prefetch", atlas, "--csv", out["prefetch_csv"], cwd=d)
    out["simulate_csv"] = d / "simulate.csv"
    run_cli(cli, "simulate", atlas, "--preset", "a6000-pcie4", "--cache-slots", "4", "--sweep-cache", "2,4", "--policy", "prefetch",
            "--predictor", "next-router", "--store", "--csv", out["simulate_csv"], cwd=d)
    return out
