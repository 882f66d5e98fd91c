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
