"""The transformers recorder (moeatlas.record) against `moeatlas capture` on tiny generated models of every
architecture the CLI generates: identical tokens and top-k ids, router logits within 1e-5 (fp32). The C++
side reads and scores the recorded atlas; torchrun shards merged with `moeatlas merge` equal one process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import h5py
import numpy as np
import pytest

import moeatlas
from moeatlas.writer import ModelInfo, TokenSet, write_atlas

from conftest import make_calibration, make_model, run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]  # `moeatlas generate --arch`


@pytest.fixture(scope="session")
def captured(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Dict[str, Path]]:
    d = tmp_path_factory.mktemp("record")
    cal = make_calibration(cli, d)
    out = {}
    for arch in ARCHS:
        model = make_model(cli, d / f"{arch}-model", arch)
        atlas = d / f"{arch}.atlas.h5"
        run_cli(cli, "capture", model, "-d", f"math={cal['math']}", "-d", f"code={cal['code']}", "--seq-len", "40",
                "--logits-dtype", "float32", "-o", atlas, cwd=d)
        out[arch] = {"model": model, "atlas": atlas, "dir": d}
    return out


def record_in_process(model_dir: Path, tokens_from: Path, out: Path) -> Path:
    from moeatlas.record import record
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    tokens = TokenSet.from_atlas(tokens_from)
    layers, E, k = record(model, tokens, batch_size=4)
    info = ModelInfo.from_checkpoint(str(model_dir), list(layers), E, k)
    return write_atlas(out, info, tokens, layers, device="cpu", compute_dtype="float32")


def assert_same_routing(cpp: moeatlas.Atlas, py: moeatlas.Atlas) -> None:
    np.testing.assert_array_equal(py.tokens.ids, cpp.tokens.ids)
    np.testing.assert_array_equal(py.tokens.domain, cpp.tokens.domain)
    np.testing.assert_array_equal(py.tokens.seq_offsets, cpp.tokens.seq_offsets)
    assert py.calibration == cpp.calibration
    for field in ("config_sha256", "model_type", "num_layers", "num_experts", "top_k", "hidden_size", "config_json"):
        assert getattr(py.model, field) == getattr(cpp.model, field), field
    assert py.moe_layers == cpp.moe_layers
    # Our engine vs transformers: fp32 sums in different orders (docs/testing.md, "Error model", kind 3),
    # so the 1e-5 is relative to the layer's largest |logit| (kReorderRtol is 2e-5); the weights
    # are probabilities (scale 1).
    for i in cpp.moe_layers:
        a, b = cpp.layers[i], py.layers[i]
        np.testing.assert_array_equal(b.topk_ids[:], a.topk_ids[:], err_msg=f"layer {i} top-k ids")
        ref = a.router_logits[:]
        np.testing.assert_allclose(b.router_logits[:], ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())),
                                   err_msg=f"layer {i} router logits")
        np.testing.assert_allclose(b.topk_weights[:], a.topk_weights[:], rtol=0, atol=1e-5,
                                   err_msg=f"layer {i} top-k weights")


@pytest.mark.parametrize("arch", ARCHS)
def test_record_equals_capture(arch: str, captured: Dict[str, Dict[str, Path]]) -> None:
    c = captured[arch]
    out = record_in_process(c["model"], c["atlas"], c["dir"] / f"{arch}.py.atlas.h5")
    with moeatlas.read(c["atlas"]) as cpp, moeatlas.read(out) as py:
        assert py.unknown_objects() == []
        assert len(cpp.moe_layers) >= 1
        assert_same_routing(cpp, py)


def test_record_equals_capture_on_reference_variants(cli: Path, repo: Path, tmp_path: Path) -> None:
    """Every variant of tests/reference/make_reference.py (each supported architecture with its config
    features: dense layers, shared experts, sparse steps, norms ...; docs/architecture.md, step 6), built
    by transformers: the recorder equals `moeatlas capture` on it."""
    script = repo / "tests" / "reference" / "make_reference.py"
    listed = subprocess.run([sys.executable, str(script), "--list-variants"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    variants = [tuple(line.split()) for line in listed.stdout.splitlines() if line.strip()]
    assert {arch for arch, _ in variants} >= set(ARCHS), variants
    cal = make_calibration(cli, tmp_path)
    for arch, variant in variants:
        d = tmp_path / f"{arch}-{variant}"
        made = subprocess.run([sys.executable, str(script), "--arch", arch, "--variant", variant, "--dtype", "float32",
                               "--out", str(d)], capture_output=True, text=True)
        assert made.returncode == 0, f"{arch} {variant}: {made.stderr}"
        cap = tmp_path / f"{arch}-{variant}.atlas.h5"
        run_cli(cli, "capture", d, "-d", f"math={cal['math']}", "-d", f"code={cal['code']}", "--seq-len", "32",
                "--max-samples", "4", "--logits-dtype", "float32", "-o", cap, cwd=tmp_path)
        out = record_in_process(d, cap, tmp_path / f"{arch}-{variant}.py.atlas.h5")
        run_cli(cli, "score", cap, "--criteria", "peu", cwd=tmp_path)
        with moeatlas.read(cap) as cpp, moeatlas.read(out) as py:
            try:
                assert_same_routing(cpp, py)
                assert_peu(cpp)
            except AssertionError as e:
                raise AssertionError(f"{arch} {variant}: {e}") from None


def assert_peu(atlas: moeatlas.Atlas) -> None:
    """`moeatlas score`'s PEU per domain and MoE layer against METHODS.md section 1 computed here in float64
    from the stored fp32 logits: top-k pool, local softmax, the domain's threshold r_l = mean top-1 pool
    probability, f(s) = max(s, sigmoid(s)) where p >= r_l, mean over all the domain's tokens."""
    k = atlas.model.top_k
    table = atlas.scores["peu"].value
    domain_of = np.asarray(atlas.tokens.domain)
    for li, layer in enumerate(atlas.moe_layers):
        s_all = np.asarray(atlas.layers[layer].router_logits[:], dtype=np.float64)
        for d in range(len(atlas.calibration.domains)):
            s = s_all[domain_of == d]
            pool = np.argsort(-s, axis=1, kind="stable")[:, :k]
            ps = np.take_along_axis(s, pool, axis=1)
            p = np.exp(ps - ps.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            r = p.max(axis=1).mean()
            kept = np.where(p >= r, np.maximum(ps, 1.0 / (1.0 + np.exp(-ps))), 0.0)
            peu = np.zeros(s.shape[1])
            np.add.at(peu, pool.ravel(), kept.ravel())
            peu /= s.shape[0]
            np.testing.assert_allclose(table[d, li], peu, rtol=0, atol=1e-6 * max(1.0, float(np.abs(peu).max())),
                                       err_msg=f"layer {layer} domain {d} PEU")


def test_record_with_accelerate_disk_offload(captured: Dict[str, Dict[str, Path]], tmp_path: Path) -> None:
    """device_map="auto" with a CPU budget too small for the decoder layers: accelerate offloads them to
    disk and runs them through its hooks; the routers' records are unchanged."""
    pytest.importorskip("accelerate")
    from moeatlas.record import record
    c = captured["mixtral"]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        c["model"], dtype=torch.float32, attn_implementation="eager", device_map="auto",
        max_memory={"cpu": "400KB"}, offload_folder=str(tmp_path / "offload")).eval()
    placement = set(getattr(model, "hf_device_map", {}).values())
    assert "disk" in placement, placement
    layers, _, _ = record(model, TokenSet.from_atlas(c["atlas"]), batch_size=4)
    with moeatlas.read(c["atlas"]) as cpp:
        assert list(layers) == cpp.moe_layers
        for i in cpp.moe_layers:
            np.testing.assert_array_equal(layers[i].topk_ids, cpp.layers[i].topk_ids[:])
            np.testing.assert_allclose(layers[i].router_logits, cpp.layers[i].router_logits[:], rtol=0, atol=1e-5)


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    src = str(Path(moeatlas.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _scores(path: Path) -> Dict[str, np.ndarray]:
    out = {}
    with moeatlas.read(path) as a:
        for name, t in a.scores.items():
            for k in t:
                out[f"scores/{name}/{k}"] = t[k]
        for k in a.statistics:
            out[f"statistics/{k}"] = a.statistics[k]
        for k in a.probmoe:
            out[f"probmoe/{k}"] = a.probmoe[k]
    return out


def test_cli_record_scored_by_cpp_and_torchrun_merge(cli: Path, captured: Dict[str, Dict[str, Path]]) -> None:
    """`python -m moeatlas.record` once and under `torchrun --nproc-per-node 2` (CPU, gloo): the
    single-process atlas equals the capture's routing; `moeatlas score` reads it; the merged shards,
    scored, equal it (1e-12)."""
    c = captured["qwen3_moe"]
    d = c["dir"] / "cli"
    d.mkdir()
    single = d / "single.atlas.h5"
    cmd = [sys.executable, "-m", "moeatlas.record", str(c["model"]), "--tokens-from", str(c["atlas"]),
           "-o", str(single), "--batch-size", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=d)
    assert proc.returncode == 0, proc.stderr
    with moeatlas.read(c["atlas"]) as cpp, moeatlas.read(single) as py:
        assert_same_routing(cpp, py)
    # refuses to overwrite without --force, leaves the file alone
    before = single.read_bytes()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=d)
    assert proc.returncode == 1 and "exists (use --force" in proc.stderr
    assert single.read_bytes() == before

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found next to the venv's python"
    sharded = d / "sharded.atlas.h5"
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "moeatlas.record",
                           str(c["model"]), "--tokens-from", str(c["atlas"]), "-o", str(sharded), "--batch-size", "3"],
                          capture_output=True, text=True, env=_env(), cwd=d)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shards = [d / "sharded.rank0-of2.atlas.h5", d / "sharded.rank1-of2.atlas.h5"]
    with moeatlas.read(shards[0]) as s0, moeatlas.read(shards[1]) as s1, moeatlas.read(single) as one:
        S = len(one.tokens.seq_offsets) - 1
        assert len(s0.tokens.seq_offsets) - 1 == (S + 1) // 2 and len(s1.tokens.seq_offsets) - 1 == S // 2
    merged = d / "merged.atlas.h5"
    run_cli(cli, "merge", *shards, "-o", merged, cwd=d)
    with moeatlas.read(single) as one, moeatlas.read(merged) as m:
        assert_same_routing(one, m)
    run_cli(cli, "score", single, cwd=d)
    run_cli(cli, "score", merged, cwd=d)
    want, got = _scores(single), _scores(merged)
    assert set(got) == set(want) and len(want) > 20
    # The shards ran other batches than the single process (other GEMM shapes, so other fp32 rounding of
    # the logits on some CPUs: scores 2.5e-9 relative apart on an AVX-512 EPYC, 0 elsewhere): counts exactly,
    # logit-based scores within fp32 noise (a dropped, repeated or misordered sequence fails
    # assert_same_routing above, which compares every token's ids).
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-9, err_msg=k)
    np.testing.assert_array_equal(got["scores/frequency/value"], want["scores/frequency/value"])
    np.testing.assert_array_equal(got["statistics/load_counts"], want["statistics/load_counts"])
    # ... and the capture's own scores: frequency exactly (same ids), logit-based ones within fp32 noise
    cap = d / "capture.atlas.h5"
    shutil.copyfile(c["atlas"], cap)
    run_cli(cli, "score", cap, cwd=d)
    ref = _scores(cap)
    np.testing.assert_array_equal(want["scores/frequency/value"], ref["scores/frequency/value"])
    np.testing.assert_array_equal(want["statistics/load_counts"], ref["statistics/load_counts"])
    np.testing.assert_allclose(want["scores/soft_mass/value"], ref["scores/soft_mass/value"], rtol=0, atol=1e-5)
