"""``moeatlas.read(path)``: an atlas file (docs/atlas-format.md) as numpy arrays and DataFrames.

Small arrays (tokens, scores, statistics, tables) are read into numpy when their property is first
used and kept; the per-token routing records and prefetch predictions, which grow with the
calibration set, are handed out as ``h5py.Dataset`` objects: nothing is read until they are sliced
(``layer.router_logits[0:1024]``, ``[:]`` for all). Every object is checked against the schema when
it is opened; a mismatch raises :class:`AtlasSchemaError` naming the file, the object and what was
expected.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

import h5py
import numpy as np

from . import schema

PathLike = Union[str, "os.PathLike[str]"]


class AtlasSchemaError(ValueError):
    """The file is not an atlas, or an object of it is not as docs/atlas-format.md describes."""


def _pandas() -> Any:
    try:
        import pandas  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("DataFrame views need pandas: pip install 'moeatlas[pandas]' (or pandas)") from e
    return pandas


class _File:
    """The open h5py file, with schema checks and a record of every object opened (``seen``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: Set[str] = set()
        try:
            self.h5 = h5py.File(path, "r")
        except FileNotFoundError:
            raise
        except OSError as e:
            if "lock" in str(e).lower():
                raise AtlasSchemaError(f"{path}: locked by another process (a capture still writing it?): "
                                       f"read it after that process stopped ({e})") from e
            raise AtlasSchemaError(f"{path}: not an HDF5 file, so not an atlas ({e})") from e

    def error(self, obj: str, what: str) -> AtlasSchemaError:
        return AtlasSchemaError(f"{self.path}: {obj}: {what}")

    def has(self, path: str) -> bool:
        return path.strip("/") in self.h5

    def group(self, path: str) -> h5py.Group:
        rel = path.strip("/")
        if rel not in self.h5:
            raise self.error("/" + rel, "group missing (docs/atlas-format.md)")
        g = self.h5[rel]
        if not isinstance(g, h5py.Group):
            raise self.error("/" + rel, "expected a group, found a dataset")
        self.seen.add(rel)
        return g

    def dataset(self, path: str, kinds: str = "", ndim: Optional[int] = None,
                shape: Optional[Sequence[Optional[int]]] = None) -> h5py.Dataset:
        """The dataset at ``path``, checked: dtype kind in ``kinds`` (numpy kind letters, "" = any;
        "S" = variable-length string), ``ndim`` and ``shape`` (None entries are free)."""
        rel = path.strip("/")
        name = "/" + rel
        if rel not in self.h5:
            raise self.error(name, "dataset missing (docs/atlas-format.md)")
        d = self.h5[rel]
        if not isinstance(d, h5py.Dataset):
            raise self.error(name, "expected a dataset, found a group")
        if kinds:
            if kinds == "S":
                if h5py.check_string_dtype(d.dtype) is None:
                    raise self.error(name, f"expected variable-length UTF-8 strings, found dtype {d.dtype}")
            elif d.dtype.kind not in kinds:
                raise self.error(name, f"expected a dtype of kind {_kind_names(kinds)}, found {d.dtype}")
        if ndim is not None and d.ndim != ndim:
            raise self.error(name, f"expected {ndim} dimension(s), found shape {d.shape}")
        if shape is not None:
            for i, (got, want) in enumerate(zip(d.shape, shape)):
                if want is not None and got != want:
                    raise self.error(name, f"expected shape {_shape_str(shape)}, found {d.shape} (axis {i})")
        self.seen.add(rel)
        return d

    def attr(self, obj: h5py.HLObject, name: str, kinds: str = "") -> Any:
        where = obj.name
        if name not in obj.attrs:
            raise self.error(where, f"attribute '{name}' missing (docs/atlas-format.md)")
        value = obj.attrs[name]
        if kinds == "S":
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if not isinstance(value, str):
                raise self.error(where, f"attribute '{name}': expected a string, found {type(value).__name__}")
            return value
        if kinds:
            arr = np.asarray(value)
            if arr.dtype.kind not in kinds or arr.ndim != 0:
                raise self.error(where, f"attribute '{name}': expected a scalar of kind {_kind_names(kinds)}, "
                                        f"found {arr.dtype} shape {arr.shape}")
            return arr[()].item()
        return value

    def json_attr(self, obj: h5py.HLObject, name: str) -> Any:
        text = self.attr(obj, name, "S")
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise self.error(obj.name, f"attribute '{name}': expected JSON ({e})") from e

    def close(self) -> None:
        self.h5.close()


def _kind_names(kinds: str) -> str:
    names = {"i": "signed integer", "u": "unsigned integer", "f": "float", "S": "string"}
    return " or ".join(names.get(k, k) for k in kinds)


def _shape_str(shape: Sequence[Optional[int]]) -> str:
    return "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"


def _strings(d: h5py.Dataset) -> List[str]:
    return [s for s in d.asstr()[:]]


# ---- results: every result group is arrays + params -------------------------------------------


class Results(Mapping[str, np.ndarray]):
    """A result group (``/scores/<criterion>``, ``/statistics``, ``/evaluation/<label>``, ...):
    a read-only mapping of array name -> numpy array (float64 unless the schema says otherwise),
    plus ``params`` (the parsed JSON attribute, {} when absent) and ``inputs_hash``."""

    def __init__(self, f: _File, path: str, names: Sequence[str], required: Sequence[str] = ()) -> None:
        self._f = f
        self.path = "/" + path.strip("/")
        self.group = f.group(path)
        self.name = self.path.rsplit("/", 1)[-1]
        self.params: Dict[str, Any] = f.json_attr(self.group, "params") if "params" in self.group.attrs else {}
        self.inputs_hash: Optional[str] = (f.attr(self.group, "inputs_hash", "S")
                                           if "inputs_hash" in self.group.attrs else None)
        for r in required:
            if r not in self.group:
                raise f.error(f"{self.path}/{r}", "dataset missing (docs/atlas-format.md)")
        self._names = [n for n in names if n in self.group and isinstance(self.group[n], h5py.Dataset)]
        self._cache: Dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(f"{self._f.path}: {self.path} has no array '{name}' (it has {', '.join(self._names)})")
        if name not in self._cache:
            self._cache[name] = self._f.dataset(f"{self.path}/{name}", "fiu")[()]
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(str(e)) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}: {', '.join(self._names)}>"


def _long_frame(values: Mapping[str, np.ndarray], axes: Sequence[Tuple[str, Sequence[Any]]]) -> Any:
    """A long DataFrame: one row per index of ``axes`` (cartesian, C order), one column per array."""
    pd = _pandas()
    index = pd.MultiIndex.from_product([list(labels) for _, labels in axes], names=[n for n, _ in axes])
    shape = tuple(len(labels) for _, labels in axes)
    cols = {}
    for k, v in values.items():
        if v.shape != shape:
            raise ValueError(f"array {k} has shape {v.shape}, the axes {shape}")
        cols[k] = v.reshape(-1)
    return pd.DataFrame(cols, index=index).reset_index()


class ScoreTable(Results):
    """``/scores/<criterion>``: ``value [D+1, L_moe, E]`` (domains then pooled), ``sums``/``counts``."""

    def frame(self) -> Any:
        """Long DataFrame: domain, layer (decoder index), expert, value."""
        return _long_frame({"value": self["value"]}, [("domain", self._atlas_domains + ["pooled"]),
                                                      ("layer", self._atlas_layers),
                                                      ("expert", range(self["value"].shape[2]))])

    _atlas_domains: List[str] = []
    _atlas_layers: List[int] = []


class EvaluationTable(Results):
    """``/evaluation/<label>``: rows = variants (``params['variants']``), columns = domains."""

    @property
    def variants(self) -> List[str]:
        return [v["name"] for v in self.params.get("variants", [])]

    @property
    def domains(self) -> List[str]:
        return list(self.params.get("domains", []))

    def frame(self) -> Any:
        """One row per (variant, domain), as ``eval --csv``: nll, perplexity, tokens, sparsity,
        kept_experts and the version-2 columns the table has."""
        pd = _pandas()
        v, d = self.variants, self.domains
        per_vd = {k: self[k] for k in ("nll", "mean_experts", "active_params", "flops_per_token",
                                       "equal_cost_topk_nll") if k in self}
        frame = _long_frame(per_vd, [("variant", v), ("domain", d)])
        frame.insert(3, "perplexity", np.exp(frame["nll"]))
        frame["tokens"] = np.tile(self["tokens"], len(v))
        frame["sparsity"] = np.repeat(self["sparsity"], len(d))
        frame["kept_experts"] = np.repeat(self["kept_experts"], len(d))
        return pd.DataFrame(frame)


class HitRateTable(Results):
    """``/prefetch_hit_rates``: ``hit_rate``/``recall`` ``[P, 2, D+1, S, A]``, axes in ``params``."""

    def axes(self) -> List[Tuple[str, Sequence[Any]]]:
        p = self.params
        return [("predictor", p["predictors"]), ("split", p["splits"]), ("domain", p["domains"]),
                ("layer", p["layers"]), ("lookahead", p["lookaheads"])]

    def frame(self) -> Any:
        """One row per (predictor, split, domain, layer, lookahead): hit_rate, recall."""
        return _long_frame({"hit_rate": self["hit_rate"], "recall": self["recall"]}, self.axes())


class SimulationRun(Results):
    """``/simulation/<run>``: one float64 ``[P]`` array per column, ``P`` sweep points."""

    def frame(self) -> Any:
        """One row per sweep point, one column per stored array."""
        pd = _pandas()
        return pd.DataFrame({k: self[k] for k in self})


# ---- the atlas proper ------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    checkpoint_path: str
    config_sha256: str
    model_type: str
    num_layers: int
    num_experts: int
    top_k: int
    hidden_size: int
    moe_layers: np.ndarray  # int32 [L_moe], decoder-layer indices
    config_json: str

    @property
    def config(self) -> Dict[str, Any]:
        return dict(json.loads(self.config_json))


@dataclass(frozen=True)
class Domain:
    id: int
    name: str
    source: str
    format: str
    num_samples: int
    num_tokens: int


@dataclass(frozen=True)
class Calibration:
    seq_len: int
    seed: int
    packing: str
    device: str
    compute_dtype: str
    domains: Tuple[Domain, ...]

    def frame(self) -> Any:
        pd = _pandas()
        return pd.DataFrame([d.__dict__ for d in self.domains])


class Tokens:
    """``/tokens``: ``ids [T]`` int32, ``domain [T]`` int16, ``seq_offsets [S+1]`` int64 (numpy, read on use)."""

    def __init__(self, f: _File) -> None:
        self._f = f
        f.group("tokens")
        self._ids: Optional[np.ndarray] = None
        self._domain: Optional[np.ndarray] = None
        self._offsets: Optional[np.ndarray] = None

    def _ds(self, name: str, kinds: str) -> h5py.Dataset:
        return self._f.dataset(f"tokens/{name}", kinds, 1)

    @property
    def count(self) -> int:
        return int(self._ds("ids", "iu").shape[0])

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = self._ds("ids", "iu")[()]
        return self._ids

    @property
    def domain(self) -> np.ndarray:
        if self._domain is None:
            d = self._ds("domain", "iu")
            if d.shape[0] != self.count:
                raise self._f.error("/tokens/domain", f"expected {self.count} entries (as /tokens/ids), found {d.shape[0]}")
            self._domain = d[()]
        return self._domain

    @property
    def seq_offsets(self) -> np.ndarray:
        if self._offsets is None:
            o = self._ds("seq_offsets", "iu")[()]
            if o.size == 0 or o[0] != 0 or o[-1] != self.count or np.any(np.diff(o) < 0):
                raise self._f.error("/tokens/seq_offsets", f"expected non-decreasing offsets from 0 to {self.count}")
            self._offsets = o
        return self._offsets

    def sequences(self) -> List[np.ndarray]:
        """The token ids of each packed sequence."""
        o = self.seq_offsets
        return [self.ids[o[s]:o[s + 1]] for s in range(len(o) - 1)]


class Layer:
    """Routing records of one MoE layer (``/layers/<index>``). The per-token datasets are lazy
    ``h5py.Dataset`` objects: slice them (``[t0:t1]``, ``[:]``) to read numpy arrays."""

    def __init__(self, f: _File, index: int, num_tokens: int, num_experts: int, top_k: int,
                 ids_only: bool = False) -> None:
        self._f = f
        self.index = index
        self.ids_only = ids_only
        self._path = f"layers/{index}"
        g = f.group(self._path)
        self.complete = bool(f.attr(g, "complete", "iu"))
        self._shapes = {"router_logits": (num_tokens, num_experts), "topk_ids": (num_tokens, top_k),
                        "topk_weights": (num_tokens, top_k), "expert_norms": (num_tokens, top_k)}
        self._group = g

    def _ds(self, name: str, kinds: str) -> h5py.Dataset:
        return self._f.dataset(f"{self._path}/{name}", kinds, 2, self._shapes[name])

    @property
    def router_logits(self) -> Optional[h5py.Dataset]:
        """``[T, E]`` float16 or float32 raw router logits (``.astype(np.float32)`` after slicing);
        None in an ids-only atlas (ingested expert ids, docs/atlas-format.md)."""
        return None if self.ids_only else self._ds("router_logits", "f")

    @property
    def topk_ids(self) -> h5py.Dataset:
        """``[T, k]`` int16/int32 routed expert ids, in the model's slot order."""
        return self._ds("topk_ids", "iu")

    @property
    def topk_weights(self) -> Optional[h5py.Dataset]:
        """``[T, k]`` float32 routing weights; None in an ids-only atlas."""
        return None if self.ids_only else self._ds("topk_weights", "f")

    @property
    def expert_norms(self) -> Optional[h5py.Dataset]:
        """``[T, k]`` float32 L2 norms of routed experts' outputs; None unless the capture stored them."""
        return self._ds("expert_norms", "f") if "expert_norms" in self._group else None

    @property
    def hidden_samples(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(token_index [n] int64, values [n, H] float32), or None without samples."""
        if "hidden_samples" not in self._group:
            return None
        base = f"{self._path}/hidden_samples"
        self._f.group(base)
        idx = self._f.dataset(f"{base}/token_index", "iu", 1)[()]
        values = self._f.dataset(f"{base}/values", "f", 2, (idx.shape[0], None))[()]
        return idx, values

    def __repr__(self) -> str:
        return f"<Layer {self.index}{'' if self.complete else ' (incomplete)'}>"


class Fisher:
    """``/fisher``: ``layers``, ``samples``, ``tokens``, ``expert_tokens`` and per form
    (``mask``, ``weight``, ``grad_abs``, ``activation``, ``magnitude``) ``units``/``experts``."""

    def __init__(self, f: _File) -> None:
        self.tables = Results(f, "fisher", schema.FISHER_ARRAYS, ("layers", "samples", "tokens"))
        self.params = self.tables.params
        g = f.group("fisher")
        self.forms: Dict[str, Results] = {
            form: Results(f, f"fisher/{form}", ("units", "experts"), ("units", "experts"))
            for form in schema.FISHER_FORMS if form in g}
        self.concentration: Optional[Results] = (
            Results(f, "fisher/concentration", schema.FISHER_FORMS) if "concentration" in g else None)
        self.ablation: Optional[Results] = (
            Results(f, "fisher/ablation", schema.FISHER_ABLATION_ARRAYS, ("nll", "tokens", "removed"))
            if "ablation" in g else None)

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name in ("tables",):
            raise AttributeError(name)
        return getattr(self.tables, name)


class Prefetch:
    """``/prefetch`` (``capture --prefetch``): attributes, ``train_sequences``, default vectors,
    recorded predictions (lazy datasets) and learned estimators' parameters."""

    def __init__(self, f: _File) -> None:
        self._f = f
        g = f.group("prefetch")
        self.predictors: List[str] = [p for p in f.attr(g, "predictors", "S").split(",") if p]
        self.max_lookahead = int(f.attr(g, "max_lookahead", "iu"))
        self.budget = int(f.attr(g, "budget", "iu"))
        self.train_fraction = float(f.attr(g, "train_fraction", "f"))
        self.split_seed = int(f.attr(g, "split_seed", "iu"))
        self._g = g

    @property
    def train_sequences(self) -> np.ndarray:
        return self._f.dataset("prefetch/train_sequences", "iu", 1)[()]

    def _per_layer(self, group: str, kinds: str, ndim: int) -> Dict[int, np.ndarray]:
        if group not in self._g:
            return {}
        g = self._f.group(f"prefetch/{group}")
        return {int(k): self._f.dataset(f"prefetch/{group}/{k}", kinds, ndim)[()] for k in sorted(g, key=int)}

    @property
    def default_vectors(self) -> Dict[int, np.ndarray]:
        """MoE layer -> ``[E, H]`` float32 mean expert outputs (quasi-hidden)."""
        return self._per_layer("default_vectors", "f", 2)

    @property
    def default_vector_counts(self) -> Dict[int, np.ndarray]:
        return self._per_layer("default_vector_counts", "iu", 1)

    def predictions(self, predictor: str, layer: int, lookahead: int) -> h5py.Dataset:
        """``[T, B]`` experts of MoE layer ``layer + lookahead`` (MoE layers) predicted at ``layer``, best first."""
        self._f.group(f"prefetch/{predictor}")
        self._f.group(f"prefetch/{predictor}/{layer}")
        return self._f.dataset(f"prefetch/{predictor}/{layer}/d{lookahead}", "iu", 2, (None, self.budget))

    def recorded(self) -> List[Tuple[str, int, int]]:
        """(predictor, layer, lookahead) of every stored prediction dataset."""
        out = []
        for p in self.predictors:
            if p not in self._g:
                continue
            for layer in sorted(self._g[p], key=int):
                for d in sorted(self._g[p][layer]):
                    out.append((p, int(layer), int(d[1:])))
        return out

    def learned(self) -> Dict[Tuple[str, int, int], Results]:
        """(estimator, layer, lookahead) -> its parameters (float32 arrays) and attributes."""
        out: Dict[Tuple[str, int, int], Results] = {}
        if "learned" not in self._g:
            return out
        lg = self._f.group("prefetch/learned")
        for kind in lg:
            self._f.group(f"prefetch/learned/{kind}")
            for layer in lg[kind]:
                self._f.group(f"prefetch/learned/{kind}/{layer}")
                for d in lg[kind][layer]:
                    r = Results(self._f, f"prefetch/learned/{kind}/{layer}/{d}", schema.LEARNED_PARAMETERS)
                    r.params = {k: (r.group.attrs[k] if k != "options" else json.loads(r.group.attrs[k]))
                                for k in r.group.attrs}
                    out[(kind, int(layer), int(d[1:]))] = r
        return out


class Atlas:
    """An open atlas. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        self._f = _File(self.path)
        try:
            self._check_root()
            self._read_model()
        except BaseException:
            self._f.close()
            raise
        self._tokens: Optional[Tokens] = None

    # -- root, model, calibration --------------------------------------------------------------

    def _check_root(self) -> None:
        f = self._f
        root = f.h5
        fmt = root.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        if fmt != schema.FORMAT:
            raise f.error("/", f"not an atlas: root attribute 'format' is {fmt!r}, expected 'moeatlas'")
        version = f.attr(root, "schema_version", "iu")
        if version > schema.SCHEMA_VERSION or version < 1:
            raise f.error("/", f"schema_version {version}: this reader knows version 1 to {schema.SCHEMA_VERSION} "
                               "(a newer moeatlas wrote it: upgrade the Python package)")
        self.schema_version = int(version)
        self.complete = bool(f.attr(root, "complete", "iu"))
        self.created: str = f.attr(root, "created", "S")
        self.producer: str = f.attr(root, "producer", "S")

    def _read_model(self) -> None:
        f = self._f
        g = f.group("model")
        moe = f.dataset("model/moe_layers", "iu", 1)[()]
        cfg = f.dataset("model/config_json", "S", 0).asstr()[()]
        self.model = Model(
            checkpoint_path=f.attr(g, "checkpoint_path", "S"), config_sha256=f.attr(g, "config_sha256", "S"),
            model_type=f.attr(g, "model_type", "S"), num_layers=int(f.attr(g, "num_layers", "iu")),
            num_experts=int(f.attr(g, "num_experts", "iu")), top_k=int(f.attr(g, "top_k", "iu")),
            hidden_size=int(f.attr(g, "hidden_size", "iu")), moe_layers=moe, config_json=cfg)
        if np.any(np.diff(moe) <= 0):
            raise f.error("/model/moe_layers", f"expected strictly increasing layer indices, found {moe.tolist()}")
        g = f.group("calibration")
        dg = f.group("calibration/domains")
        cols = {}
        for name, kinds in (("name", "S"), ("source", "S"), ("format", "S"), ("num_samples", "iu"),
                            ("num_tokens", "iu")):
            d = f.dataset(f"calibration/domains/{name}", kinds, 1)
            cols[name] = _strings(d) if kinds == "S" else d[()].tolist()
        n = len(cols["name"])
        for name, values in cols.items():
            if len(values) != n:
                raise f.error(f"/calibration/domains/{name}", f"expected {n} entries (as domains/name)")
        del dg
        self.calibration = Calibration(
            seq_len=int(f.attr(g, "seq_len", "iu")), seed=int(f.attr(g, "seed", "iu")),
            packing=f.attr(g, "packing", "S"), device=f.attr(g, "device", "S"),
            compute_dtype=f.attr(g, "compute_dtype", "S"),
            domains=tuple(Domain(i, cols["name"][i], cols["source"][i], cols["format"][i],
                                 int(cols["num_samples"][i]), int(cols["num_tokens"][i])) for i in range(n)))

    @property
    def domain_names(self) -> List[str]:
        return [d.name for d in self.calibration.domains]

    @property
    def moe_layers(self) -> List[int]:
        return [int(x) for x in self.model.moe_layers]

    # -- tokens and routing --------------------------------------------------------------------

    @property
    def tokens(self) -> Tokens:
        if self._tokens is None:
            self._tokens = Tokens(self._f)
        return self._tokens

    @property
    def layer_options(self) -> Dict[str, Any]:
        """The attributes of ``/layers``: logit_storage, store_expert_norms, hidden_sample_count, compression_level."""
        f = self._f
        g = f.group("layers")
        return {"logit_storage": f.attr(g, "logit_storage", "S"),
                "store_expert_norms": bool(f.attr(g, "store_expert_norms", "iu")),
                "hidden_sample_count": int(f.attr(g, "hidden_sample_count", "iu")),
                "compression_level": int(f.attr(g, "compression_level", "iu")),
                "ids_only": bool(f.attr(g, "ids_only", "iu")) if "ids_only" in g.attrs else False}

    @property
    def ids_only(self) -> bool:
        """True for an atlas of routed expert ids only (``/layers`` attribute ``ids_only`` = 1: ingested
        from vLLM/SGLang routed-experts output): no router logits, no weights."""
        return bool(self.layer_options["ids_only"])

    @property
    def layers(self) -> Dict[int, Layer]:
        """Decoder-layer index -> :class:`Layer`, for every MoE layer (model order)."""
        self._f.group("layers")
        t = self.tokens.count
        ids_only = self.ids_only
        return {i: Layer(self._f, i, t, self.model.num_experts, self.model.top_k, ids_only) for i in self.moe_layers}

    @property
    def layers_complete(self) -> np.ndarray:
        """``/progress/layers_complete`` [L_moe] int32, parallel to ``model.moe_layers``."""
        self._f.group("progress")
        return self._f.dataset("progress/layers_complete", "iu", 1, (len(self.moe_layers),))[()]

    # -- results -------------------------------------------------------------------------------

    def _named_groups(self, group: str) -> List[str]:
        if not self._f.has(group):
            return []
        g = self._f.group(group)
        return [k for k in g if isinstance(g[k], h5py.Group)]

    @property
    def scores(self) -> Dict[str, ScoreTable]:
        """Criterion -> :class:`ScoreTable` (``moeatlas score``); {} when not scored."""
        out = {}
        for name in self._named_groups("scores"):
            t = ScoreTable(self._f, f"scores/{name}", schema.SCORE_ARRAYS, ("value",))
            t._atlas_domains, t._atlas_layers = self.domain_names, self.moe_layers
            out[name] = t
        return out

    @property
    def statistics(self) -> Optional[Results]:
        return Results(self._f, "statistics", schema.STATISTICS_ARRAYS) if self._f.has("statistics") else None

    @property
    def probmoe(self) -> Optional[Results]:
        return Results(self._f, "probmoe", schema.PROBMOE_ARRAYS) if self._f.has("probmoe") else None

    @property
    def evaluation(self) -> Dict[str, EvaluationTable]:
        """Label -> :class:`EvaluationTable` (``moeatlas eval --atlas``)."""
        return {n: EvaluationTable(self._f, f"evaluation/{n}", schema.EVALUATION_ARRAYS,
                                   ("nll", "tokens", "sparsity", "kept_experts"))
                for n in self._named_groups("evaluation")}

    @property
    def fisher(self) -> Optional[Fisher]:
        return Fisher(self._f) if self._f.has("fisher") else None

    @property
    def prefetch(self) -> Optional[Prefetch]:
        return Prefetch(self._f) if self._f.has("prefetch") else None

    @property
    def prefetch_hit_rates(self) -> Optional[HitRateTable]:
        return (HitRateTable(self._f, "prefetch_hit_rates", schema.HIT_RATE_ARRAYS, ("hit_rate", "recall"))
                if self._f.has("prefetch_hit_rates") else None)

    @property
    def simulation(self) -> Dict[str, SimulationRun]:
        """Run name -> :class:`SimulationRun` (``moeatlas simulate --store``)."""
        return {n: SimulationRun(self._f, f"simulation/{n}", schema.SIMULATION_ARRAYS, ("tpot_mean",))
                for n in self._named_groups("simulation")}

    # -- housekeeping --------------------------------------------------------------------------

    @property
    def h5(self) -> h5py.File:
        """The underlying read-only h5py file."""
        return self._f.h5

    @property
    def objects_read(self) -> Set[str]:
        """Paths (no leading slash) of every group and dataset this reader has opened so far."""
        return set(self._f.seen)

    def unknown_objects(self) -> List[str]:
        """Objects of the file docs/atlas-format.md does not describe (ignored by this reader)."""
        return schema.unknown_objects(self._f.h5)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Atlas":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<moeatlas.Atlas {self.path}: {self.model.model_type}, {len(self.moe_layers)} MoE layers x "
                f"{self.model.num_experts} experts, top-{self.model.top_k}, domains {self.domain_names}"
                f"{'' if self.complete else ', partial'}>")


def read(path: PathLike) -> Atlas:
    """Opens an atlas (``*.atlas.h5``, or a ``.partial`` one) read-only and checks its root,
    ``/model`` and ``/calibration``; everything else is read and checked on access."""
    return Atlas(path)
