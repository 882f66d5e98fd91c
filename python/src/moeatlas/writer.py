"""Writes atlases (docs/atlas-format.md, schema 1) from Python: the recorder's and the ingest's output.

Mirrors core/atlas's layout: root attributes, ``/model``, ``/calibration`` (copied from the atlas the
tokens come from), ``/tokens``, ``/layers/<i>`` (chunks of ``min(1024, T)`` rows, shuffle + gzip when
``compression_level > 0``), ``/progress``. The file is written as ``<out>.partial`` and renamed over
``<out>`` when complete, so a failed run leaves nothing under the final name.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import h5py
import numpy as np

from . import schema
from .atlas import Atlas

_STR = h5py.string_dtype("utf-8")
PRODUCER = "moeatlas-python 0.1.0"


@dataclass
class TokenSet:
    """Calibration tokens and their provenance, as ``/tokens`` and ``/calibration`` hold them."""
    ids: np.ndarray  # int32 [T]
    domain: np.ndarray  # int16 [T]
    seq_offsets: np.ndarray  # int64 [S+1]
    domain_names: List[str]
    domain_sources: List[str]
    domain_formats: List[str]
    seq_len: int
    seed: int
    packing: str

    @staticmethod
    def from_atlas(path: "os.PathLike[str] | str") -> "TokenSet":
        with Atlas(path) as a:
            d = a.calibration.domains
            return TokenSet(ids=a.tokens.ids.astype(np.int32), domain=a.tokens.domain.astype(np.int16),
                            seq_offsets=a.tokens.seq_offsets.astype(np.int64), domain_names=[x.name for x in d],
                            domain_sources=[x.source for x in d], domain_formats=[x.format for x in d],
                            seq_len=a.calibration.seq_len, seed=a.calibration.seed, packing=a.calibration.packing)

    @property
    def num_sequences(self) -> int:
        return len(self.seq_offsets) - 1

    def sequence(self, s: int) -> np.ndarray:
        return self.ids[self.seq_offsets[s]:self.seq_offsets[s + 1]]

    def subset(self, sequences: Sequence[int]) -> "TokenSet":
        """The tokens of the given sequences (in that order), same domains."""
        parts = [np.arange(self.seq_offsets[s], self.seq_offsets[s + 1]) for s in sequences]
        idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        lengths = [self.seq_offsets[s + 1] - self.seq_offsets[s] for s in sequences]
        return TokenSet(ids=self.ids[idx], domain=self.domain[idx],
                        seq_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                        domain_names=list(self.domain_names), domain_sources=list(self.domain_sources),
                        domain_formats=list(self.domain_formats), seq_len=self.seq_len, seed=self.seed,
                        packing=self.packing)


@dataclass
class ModelInfo:
    checkpoint_path: str
    config_json: str
    model_type: str
    num_layers: int
    num_experts: int
    top_k: int
    hidden_size: int
    moe_layers: List[int]
    config_sha256: str = ""

    @staticmethod
    def from_checkpoint(path: str, moe_layers: List[int], num_experts: int, top_k: int) -> "ModelInfo":
        raw = (Path(path) / "config.json").read_bytes()
        cfg = json.loads(raw)
        text = cfg.get("text_config", cfg)
        return ModelInfo(checkpoint_path=path, config_json=raw.decode("utf-8"), model_type=cfg.get("model_type", ""),
                         num_layers=int(text["num_hidden_layers"]), num_experts=num_experts, top_k=top_k,
                         hidden_size=int(text["hidden_size"]), moe_layers=moe_layers,
                         config_sha256=hashlib.sha256(raw).hexdigest())


@dataclass
class LayerRecords:
    topk_ids: np.ndarray  # [T, k]
    router_logits: Optional[np.ndarray] = None  # [T, E] float32 (None: an ids-only atlas)
    topk_weights: Optional[np.ndarray] = None  # [T, k] float32
    extra: Dict[str, np.ndarray] = field(default_factory=dict)


def _chunked(g: h5py.Group, name: str, data: np.ndarray, level: int) -> None:
    rows = max(1, min(1024, data.shape[0]))
    kw: Dict[str, Any] = {"chunks": (rows,) + data.shape[1:]} if data.shape[0] > 0 else {}
    if level > 0 and data.shape[0] > 0:
        kw.update(compression="gzip", compression_opts=level, shuffle=True)
    g.create_dataset(name, data=data, **kw)


def write_atlas(out: "os.PathLike[str] | str", model: ModelInfo, tokens: TokenSet, layers: Dict[int, LayerRecords],
                *, device: str, compute_dtype: str, logit_storage: str = "float32", compression_level: int = 4,
                ids_only: bool = False) -> Path:
    """Writes a complete atlas to ``out`` (through ``out.partial``). ``ids_only``: the layers hold
    ``topk_ids`` only and ``/layers`` carries ``ids_only = 1`` (docs/atlas-format.md)."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        partial.unlink()
    T = int(tokens.ids.shape[0])
    try:
        with h5py.File(partial, "w", libver="earliest") as f:
            f.attrs["format"] = schema.FORMAT
            f.attrs["schema_version"] = np.int64(schema.SCHEMA_VERSION)
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.attrs["complete"] = np.int64(0)
            f.attrs["producer"] = PRODUCER
            m = f.create_group("model")
            for k in ("checkpoint_path", "config_sha256", "model_type"):
                m.attrs[k] = getattr(model, k)
            for k in ("num_layers", "num_experts", "top_k", "hidden_size"):
                m.attrs[k] = np.int64(getattr(model, k))
            m.create_dataset("moe_layers", data=np.asarray(model.moe_layers, np.int32))
            m.create_dataset("config_json", data=model.config_json, dtype=_STR)
            c = f.create_group("calibration")
            c.attrs["seq_len"] = np.int64(tokens.seq_len)
            c.attrs["seed"] = np.uint64(tokens.seed)
            c.attrs["packing"] = tokens.packing
            c.attrs["device"] = device
            c.attrs["compute_dtype"] = compute_dtype
            dg = c.create_group("domains")
            D = len(tokens.domain_names)
            lengths = np.diff(tokens.seq_offsets)
            seq_domain = tokens.domain[tokens.seq_offsets[:-1]] if len(lengths) else np.zeros(0, np.int16)
            dg.create_dataset("name", data=tokens.domain_names, dtype=_STR)
            dg.create_dataset("source", data=tokens.domain_sources, dtype=_STR)
            dg.create_dataset("format", data=tokens.domain_formats, dtype=_STR)
            dg.create_dataset("num_samples", data=np.array([np.sum(seq_domain == d) for d in range(D)], np.int64))
            dg.create_dataset("num_tokens", data=np.array([np.sum(tokens.domain == d) for d in range(D)], np.int64))
            t = f.create_group("tokens")
            _chunked(t, "ids", tokens.ids.astype(np.int32), compression_level)
            _chunked(t, "domain", tokens.domain.astype(np.int16), compression_level)
            t.create_dataset("seq_offsets", data=tokens.seq_offsets.astype(np.int64))
            lg = f.create_group("layers")
            lg.attrs["logit_storage"] = logit_storage
            lg.attrs["store_expert_norms"] = np.int64(0)
            lg.attrs["hidden_sample_count"] = np.int64(0)
            lg.attrs["compression_level"] = np.int64(compression_level)
            if ids_only:
                lg.attrs["ids_only"] = np.int64(1)
            id_dtype = np.int16 if model.num_experts <= 32767 else np.int32
            for i in model.moe_layers:
                rec = layers[i]
                g = lg.create_group(str(i))
                if rec.topk_ids.shape != (T, model.top_k):
                    raise ValueError(f"layer {i}: topk_ids shape {rec.topk_ids.shape}, expected {(T, model.top_k)}")
                if not ids_only:
                    if rec.router_logits is None or rec.topk_weights is None:
                        raise ValueError(f"layer {i}: no router logits or weights (pass ids_only=True for ids alone)")
                    dt = np.float16 if logit_storage == "float16" else np.float32
                    _chunked(g, "router_logits", rec.router_logits.astype(np.float32).astype(dt), compression_level)
                _chunked(g, "topk_ids", rec.topk_ids.astype(id_dtype), compression_level)
                if rec.topk_weights is not None and not ids_only:
                    _chunked(g, "topk_weights", rec.topk_weights.astype(np.float32), compression_level)
                g.attrs["complete"] = np.int64(1)
            p = f.create_group("progress")
            p.create_dataset("layers_complete", data=np.ones(len(model.moe_layers), np.int32))
            f.attrs["complete"] = np.int64(1)
        os.replace(partial, out)
    except BaseException:
        if partial.exists():
            partial.unlink()
        raise
    return out
