"""moeatlas.read refuses what is not a schema-1 atlas, naming the file, the object and what it expected."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import moeatlas


@pytest.fixture()
def demo_copy(repo: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.atlas.h5"
    shutil.copyfile(repo / "resources" / "demo" / "demo.atlas.h5", dst)
    return dst


def test_not_hdf5(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(moeatlas.AtlasSchemaError, match=r"notes\.txt: not an HDF5 file"):
        moeatlas.read(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        moeatlas.read(tmp_path / "absent.atlas.h5")


def test_hdf5_but_not_an_atlas(tmp_path: Path) -> None:
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(moeatlas.AtlasSchemaError, match=r"other\.h5: /: not an atlas: root attribute 'format' is None"):
        moeatlas.read(p)


def test_newer_schema_version(demo_copy: Path) -> None:
    with h5py.File(demo_copy, "r+") as f:
        f.attrs["schema_version"] = np.int64(2)
    with pytest.raises(moeatlas.AtlasSchemaError, match=r"copy\.atlas\.h5: /: schema_version 2: this reader knows version 1"):
        moeatlas.read(demo_copy)


def test_missing_group(demo_copy: Path) -> None:
    with h5py.File(demo_copy, "r+") as f:
        del f["calibration"]
    with pytest.raises(moeatlas.AtlasSchemaError, match=r"copy\.atlas\.h5: /calibration: group missing"):
        moeatlas.read(demo_copy)


def test_wrong_dtype_named_on_access(demo_copy: Path) -> None:
    with h5py.File(demo_copy, "r+") as f:
        del f["layers/2/topk_ids"]
        f["layers/2/topk_ids"] = np.zeros((16384, 2), dtype=np.float32)
    with moeatlas.read(demo_copy) as a:
        a.layers[0].topk_ids[:]  # the others still read
        with pytest.raises(moeatlas.AtlasSchemaError,
                           match=r"copy\.atlas\.h5: /layers/2/topk_ids: expected a dtype of kind signed integer or "
                                 r"unsigned integer, found float32"):
            a.layers[2].topk_ids


def test_wrong_shape_named(demo_copy: Path) -> None:
    with h5py.File(demo_copy, "r+") as f:
        del f["layers/1/router_logits"]
        f["layers/1/router_logits"] = np.zeros((16384, 15), dtype=np.float16)
    with moeatlas.read(demo_copy) as a, pytest.raises(
            moeatlas.AtlasSchemaError, match=r"/layers/1/router_logits: expected shape \[16384, 16\], found \(16384, 15\)"):
        a.layers[1].router_logits


def test_result_missing_required_array(demo_copy: Path) -> None:
    with h5py.File(demo_copy, "r+") as f:
        del f["scores/peu/value"]
    with moeatlas.read(demo_copy) as a, pytest.raises(moeatlas.AtlasSchemaError, match=r"/scores/peu/value: dataset missing"):
        a.scores


def test_unknown_member_listed_not_fatal(demo_copy: Path) -> None:
    with h5py.File(demo_copy, "r+") as f:
        f["statistics/new_thing"] = np.zeros(3)
    with moeatlas.read(demo_copy) as a:
        assert a.unknown_objects() == ["/statistics/new_thing (dataset)"]
        assert "new_thing" not in a.statistics


def test_locked_by_a_writer(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5 file locking is switched off in this environment")
    p = tmp_path / "busy.atlas.h5.partial"
    with h5py.File(p, "w") as f:  # held open for writing, as a running capture holds its .partial
        f.attrs["format"] = "moeatlas"
        f.flush()
        r = subprocess.run([sys.executable, "-c", f"import moeatlas; moeatlas.read({str(p)!r})"],
                           capture_output=True, text=True)
    assert r.returncode != 0 and "busy.atlas.h5.partial: locked by another process" in r.stderr, r.stderr
