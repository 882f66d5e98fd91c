"""vLLM routed-experts ingest: a synthetic `[tokens, moe_layers, top_k]` dump made from a full atlas's ids
gives an ids-only atlas whose frequency scores and id-based statistics equal `moeatlas score`'s on the full
atlas; the C++ side opens it and refuses PEU (and every logit-based result) with a message saying why."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import moeatlas
from moeatlas.ingest import ID_STATISTICS, id_scores, main

from test_read import check_documented_and_read


@pytest.fixture(scope="module")
def ids_atlas(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("ingest")
    full = repo / "resources" / "demo" / "demo.atlas.h5"
    with moeatlas.read(full) as a:
        routed = np.stack([layer.topk_ids[:] for layer in a.layers.values()], axis=1).astype(np.int64)
    assert routed.ndim == 3 and routed.shape[1:] == (4, 2)
    dump = d / "routed_experts.npy"
    np.save(dump, routed)
    out = d / "ids.atlas.h5"
    assert main(["vllm", str(dump), "--tokens-from", str(full), "--model-from", str(full), "-o", str(out)]) == 0
    return {"full": full, "ids": out, "dir": d, "dump": dump}


def test_ids_only_atlas_read_and_documented(ids_atlas: Dict[str, Path]) -> None:
    a = check_documented_and_read(ids_atlas["ids"])
    with a, moeatlas.read(ids_atlas["full"]) as full:
        assert a.ids_only and not full.ids_only
        layer = a.layers[a.moe_layers[0]]
        assert layer.router_logits is None and layer.topk_weights is None
        np.testing.assert_array_equal(a.tokens.ids, full.tokens.ids)
        assert a.calibration.domains == full.calibration.domains
        for i in full.moe_layers:
            np.testing.assert_array_equal(a.layers[i].topk_ids[:], full.layers[i].topk_ids[:])


def test_frequency_and_statistics_equal_cpp_scores(ids_atlas: Dict[str, Path]) -> None:
    with moeatlas.read(ids_atlas["ids"]) as a, moeatlas.read(ids_atlas["full"]) as full:
        ours, theirs = a.scores["frequency"], full.scores["frequency"]
        for k in ("value", "sums", "counts"):
            np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
        assert set(a.statistics) == set(ID_STATISTICS)
        for k in ID_STATISTICS:
            np.testing.assert_allclose(a.statistics[k], full.statistics[k], rtol=1e-12, atol=1e-14, err_msg=k)
        # recomputed from the full atlas's own ids: the same
        again = id_scores(full)
        np.testing.assert_array_equal(again["scores/frequency"]["value"], theirs["value"])


def test_cpp_refuses_logit_criteria(cli: Path, ids_atlas: Dict[str, Path]) -> None:
    copy = ids_atlas["dir"] / "score.atlas.h5"
    shutil.copyfile(ids_atlas["ids"], copy)
    before = copy.read_bytes()
    proc = subprocess.run([str(cli), "score", str(copy), "--criteria", "peu"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "routed expert ids only" in proc.stderr and "peu" in proc.stderr, proc.stderr
    assert copy.read_bytes() == before


def test_bad_dumps_refused(ids_atlas: Dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d, full = ids_atlas["dir"], str(ids_atlas["full"])
    routed = np.load(ids_atlas["dump"])
    cases = {"short.npy": (routed[:-1], "16383 token rows, but the token source has 16384"),
             "layers.npy": (routed[:, :3], "3 MoE layers, the model has 4"),
             "range.npy": (routed + 16, "expert ids outside [0, 16)"),
             "float.npy": (routed.astype(np.float32), "expected integer expert ids")}
    for name, (arr, msg) in cases.items():
        np.save(d / name, arr)
        out = d / (name + ".atlas.h5")
        assert main(["vllm", str(d / name), "--tokens-from", full, "--model-from", full, "-o", str(out)]) == 1
        assert msg in capsys.readouterr().err, name
        assert not out.exists() and not Path(str(out) + ".partial").exists()


def _sglang_dump(full: Path, path: Path, shuffle_passes: bool = True) -> None:
    """The demo atlas's ids written as SGLang's per_token recorder writes them (sglang 0.5.23,
    srt/eplb/expert_distribution.py): one record per forward pass with its input_ids and
    topk_ids_of_layer [layers, tokens, 8] of physical ids padded with -1, plus the physical-to-logical map
    (here 16 logical experts on 20 physical slots: four experts replicated, slots permuted)."""
    import torch
    with moeatlas.read(full) as a:
        ids = np.asarray(a.tokens.ids, dtype=np.int64)
        logical = np.stack([layer.topk_ids[:] for layer in a.layers.values()], axis=0).astype(np.int64)  # [L, T, k]
        E = a.model.num_experts
    rng = np.random.default_rng(7)
    phys_of = rng.permutation(E + 4)  # physical slot of each of E + 4 replicas
    replica_of = np.concatenate([np.arange(E), rng.choice(E, 4, replace=False)])  # logical expert of each replica
    p2l = np.empty(E + 4, dtype=np.int64)
    p2l[phys_of] = replica_of
    slots = [np.flatnonzero(p2l == e) for e in range(E)]
    physical = np.vectorize(lambda e: rng.choice(slots[e]))(logical)  # any replica of the routed expert
    cuts = [0, 700, 5000, 5001, ids.shape[0]]
    records = []
    for n, (b, e) in enumerate(zip(cuts[:-1], cuts[1:])):
        t = np.full((logical.shape[0], e - b, 8), -1, dtype=np.int32)
        t[:, :, :logical.shape[2]] = physical[:, b:e]
        records.append(dict(forward_pass_id=n, rank=0, gatherer_key="primary", input_ids=ids[b:e].tolist(),
                            positions=list(range(e - b)), extend_seq_lens=[e - b], forward_mode=1,
                            topk_ids_of_layer=torch.from_numpy(t), misc_objects=[]))
    if shuffle_passes:
        records = records[::-1]
    p2l_layers = torch.from_numpy(np.tile(p2l, (logical.shape[0], 1)))
    torch.save(dict(records=records, last_physical_to_logical_map=p2l_layers), path)


def test_sglang_per_token_dump(ids_atlas: Dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """SGLang's own dump format: logical ids recovered through the physical map, passes in order; the
    ids-only atlas equals the vLLM one (same ids) and so the full atlas's frequency scores."""
    pytest.importorskip("torch")
    import torch
    d, full = ids_atlas["dir"], str(ids_atlas["full"])
    dump = d / "expert_distribution_recorder_0.0_0.pt"
    _sglang_dump(ids_atlas["full"], dump)
    out = d / "sglang.atlas.h5"
    assert main(["sglang", str(dump), "--tokens-from", full, "--model-from", full, "-o", str(out)]) == 0
    with moeatlas.read(out) as a, moeatlas.read(ids_atlas["full"]) as f:
        for i in f.moe_layers:
            np.testing.assert_array_equal(a.layers[i].topk_ids[:], f.layers[i].topk_ids[:])
        for k in ("value", "sums", "counts"):
            np.testing.assert_array_equal(a.scores["frequency"][k], f.scores["frequency"][k], err_msg=k)
    # Wrong prompts (one token changed) and a layer with a -1 the model must have routed: refused, no output.
    data = torch.load(dump, weights_only=True)
    data["records"][0]["input_ids"][0] += 1
    torch.save(data, d / "wrong_ids.pt")
    data = torch.load(dump, weights_only=True)
    data["records"][0]["topk_ids_of_layer"][2, 3, 0] = -1
    torch.save(data, d / "missing.pt")
    for name, msg in (("wrong_ids.pt", "are not the token source's"), ("missing.pt", "-1: the layer recorded no")):
        bad = d / (name + ".atlas.h5")
        assert main(["sglang", str(d / name), "--tokens-from", full, "--model-from", full, "-o", str(bad)]) == 1
        assert msg in capsys.readouterr().err, name
        assert not bad.exists() and not Path(str(bad) + ".partial").exists()
