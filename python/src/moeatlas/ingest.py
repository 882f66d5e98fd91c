"""``python -m moeatlas.ingest``: an ids-only atlas from an inference engine's routed-experts output.

vLLM's routed-experts output is an integer array ``[tokens, moe_layers, top_k]`` of expert ids: no router
logits, no weights. SGLang's expert-distribution recorder in ``per_token`` mode writes a torch file per rank
(``expert_distribution_recorder_<time>_<rank>.pt``: ``records``, one per forward pass, each with the pass's
``input_ids`` and ``topk_ids_of_layer [layers, tokens, 8]`` of *physical* expert ids padded with -1, and
``last_physical_to_logical_map [layers, physical]``); :func:`read_sglang_dump` turns it into the same array
(logical ids, passes in order, the pass's input ids checked against the token source). The ingest writes it as an
atlas whose ``/layers`` carries ``ids_only = 1`` and whose layers hold ``topk_ids`` only, on the tokens
of ``--tokens-from`` (row ``t`` of the dump is token ``t`` of that atlas's token stream), and stores the
scores that need nothing but ids: ``/scores/frequency`` and the id-based part of ``/statistics``
(:func:`id_scores`, the definitions of docs/atlas-format.md, "Scores and statistics"). Criteria that need
logits (PEU, soft mass, ...) cannot be computed from it; ``moeatlas score`` refuses such an atlas.

    python -m moeatlas.ingest vllm routed.npy --tokens-from run.atlas.h5 --model-from run.atlas.h5 -o ids.atlas.h5
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .atlas import Atlas
from .writer import LayerRecords, ModelInfo, TokenSet, write_atlas

ID_STATISTICS = ("token_counts", "load_counts", "coactivation_counts", "load_share", "load_cv", "load_max_vio",
                 "load_entropy", "distinct_patterns", "pattern_entropy", "specialisation", "coactivation")


def read_routed_experts(path: "os.PathLike[str] | str") -> np.ndarray:
    """An integer ``[tokens, moe_layers, top_k]`` array from ``.npy``, ``.npz`` (key ``routed_experts``
    or its only array) or a torch ``.pt`` file."""
    p = Path(path)
    if p.suffix == ".npz":
        with np.load(p) as z:
            key = "routed_experts" if "routed_experts" in z.files else (z.files[0] if len(z.files) == 1 else None)
            if key is None:
                raise ValueError(f"{p}: expected an array 'routed_experts' (or a single array), found {z.files}")
            arr = z[key]
    elif p.suffix == ".pt":
        import torch
        arr = torch.load(p, map_location="cpu", weights_only=True).numpy()
    else:
        arr = np.load(p, allow_pickle=False)
    if arr.ndim != 3 or arr.dtype.kind not in "iu":
        raise ValueError(f"{p}: expected integer expert ids [tokens, moe_layers, top_k], found {arr.dtype} {arr.shape}")
    return arr


def read_sglang_dump(path: "os.PathLike[str] | str", token_ids: np.ndarray, moe_layers: Sequence[int],
                     num_layers: int, top_k: int) -> np.ndarray:
    """``[tokens, moe_layers, top_k]`` logical expert ids from SGLang's per-token recorder dump (sglang 0.5:
    srt/eplb/expert_distribution.py, ``_DetailAccumulator.dump``). Forward passes are taken in
    ``forward_pass_id`` order and their ``input_ids`` must spell ``token_ids`` (the atlas's token stream,
    sent as prompts); the dump's layer axis is either every decoder layer or the MoE layers alone."""
    import torch
    p = Path(path)
    data = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "records" not in data or "last_physical_to_logical_map" not in data:
        raise ValueError(f"{p}: not an SGLang per_token dump (expected a dict with 'records' and "
                         "'last_physical_to_logical_map')")
    phys_to_log = np.asarray(data["last_physical_to_logical_map"], dtype=np.int64)
    records = sorted(data["records"], key=lambda r: r.get("forward_pass_id", 0))
    if not records:
        raise ValueError(f"{p}: 'records' is empty")
    parts, ids = [], []
    for r in records:
        where = f"{p}: record forward_pass_id={r.get('forward_pass_id')}"
        if "topk_ids_of_layer" not in r or "input_ids" not in r:
            raise ValueError(f"{where}: expected 'topk_ids_of_layer' and 'input_ids'")
        t = np.asarray(r["topk_ids_of_layer"], dtype=np.int64)
        if t.ndim != 3 or t.shape[1] != len(r["input_ids"]) or t.shape[2] < top_k:
            raise ValueError(f"{where}: topk_ids_of_layer has shape {t.shape}, expected [layers, "
                             f"{len(r['input_ids'])} tokens, >= {top_k}]")
        parts.append(t[:, :, :top_k])
        ids.extend(r["input_ids"])
    phys = np.concatenate(parts, axis=1)  # [layers, tokens, k]
    if phys.shape[0] == num_layers:
        rows = list(moe_layers)
    elif phys.shape[0] == len(moe_layers):
        rows = list(range(len(moe_layers)))
    else:
        raise ValueError(f"{p}: {phys.shape[0]} layers, expected {num_layers} (decoder) or {len(moe_layers)} (MoE)")
    if phys_to_log.ndim != 2 or phys_to_log.shape[0] != phys.shape[0]:
        raise ValueError(f"{p}: last_physical_to_logical_map has shape {phys_to_log.shape}, expected "
                         f"[{phys.shape[0]}, physical experts]")
    if not np.array_equal(np.asarray(ids, dtype=np.int64), np.asarray(token_ids, dtype=np.int64)):
        raise ValueError(f"{p}: the records' input_ids ({len(ids)} tokens) are not the token source's "
                         f"{len(token_ids)} tokens in order: send the atlas's sequences as the prompts")
    out = np.empty((phys.shape[1], len(rows), top_k), dtype=np.int64)
    for j, row in enumerate(rows):
        layer = phys[row]
        if layer.size and (layer.min() < 0 or layer.max() >= phys_to_log.shape[1]):
            raise ValueError(f"{p}: layer {row}: physical expert ids outside [0, {phys_to_log.shape[1]}) "
                             "(-1: the layer recorded no expert for a token)")
        out[:, j, :] = phys_to_log[row][layer]
    return out


def ingest(routed: np.ndarray, tokens: TokenSet, model: ModelInfo, out: "os.PathLike[str] | str",
           source: str = "vllm") -> Path:
    """Writes the ids-only atlas (with its frequency scores and id-based statistics)."""
    T, L, k = routed.shape
    where = f"routed experts ({source})"
    if T != tokens.ids.shape[0]:
        raise ValueError(f"{where}: {T} token rows, but the token source has {tokens.ids.shape[0]} tokens")
    if L != len(model.moe_layers):
        raise ValueError(f"{where}: {L} MoE layers, the model has {len(model.moe_layers)} ({model.moe_layers})")
    if k != model.top_k:
        raise ValueError(f"{where}: top_k {k}, the model routes to {model.top_k}")
    if routed.size and (routed.min() < 0 or routed.max() >= model.num_experts):
        raise ValueError(f"{where}: expert ids outside [0, {model.num_experts})")
    layers = {layer: LayerRecords(topk_ids=np.ascontiguousarray(routed[:, i, :])) for i, layer in
              enumerate(model.moe_layers)}
    path = write_atlas(out, model, tokens, layers, device=source, compute_dtype="unknown", ids_only=True)
    with Atlas(path) as a:
        groups = id_scores(a)
    import h5py
    params = json.dumps({"source": f"ids-only atlas ({source}); moeatlas.ingest.id_scores", "pooled":
                         "sums over domains / counts over domains"})
    with h5py.File(path, "r+") as f:
        for group, arrays in groups.items():
            g = f.create_group(group)
            g.attrs["params"] = params
            g.attrs["inputs_hash"] = ""
            for name, arr in arrays.items():
                g.create_dataset(name, data=arr.astype(np.float64))
    return path


def _share_stats(load: np.ndarray) -> Dict[str, np.ndarray]:
    """load [..., E] -> load_share, load_cv, load_max_vio, load_entropy (over the last axis)."""
    E = load.shape[-1]
    total = load.sum(axis=-1, keepdims=True)
    share = np.divide(load, total, out=np.zeros_like(load), where=total > 0)
    mean = share.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(mean > 0, share.std(axis=-1) / mean, 0.0)
        vio = np.where(mean > 0, (share.max(axis=-1) - mean) / mean, 0.0)
        plogp = np.where(share > 0, share * np.log(np.where(share > 0, share, 1.0)), 0.0)
    ent = -plogp.sum(axis=-1) / (np.log(E) if E > 1 else 1.0)
    return {"load_share": share, "load_cv": cv, "load_max_vio": vio, "load_entropy": ent}


def id_scores(a: Atlas) -> Dict[str, Dict[str, np.ndarray]]:
    """``scores/frequency`` (value, sums, counts) and the id-based ``statistics`` arrays of an atlas,
    from ``topk_ids`` and the token domains alone (works on full and ids-only atlases alike)."""
    D, E = len(a.domain_names), a.model.num_experts
    L = len(a.moe_layers)
    dom = a.tokens.domain.astype(np.int64)
    tokens = np.zeros((D, L))
    hits = np.zeros((D, L, E))
    co = np.zeros((D, L, E, E))
    distinct = np.zeros((D + 1, L))
    pent = np.zeros((D + 1, L))
    for li, layer in enumerate(a.layers.values()):
        ids = layer.topk_ids[:].astype(np.int64)
        onehot = np.zeros((ids.shape[0], E))
        np.put_along_axis(onehot, ids, 1.0, axis=1)  # a token routed to j (in any slot) counts once
        patterns = np.sort(ids, axis=1)
        for d in range(D + 1):
            sel = dom == d if d < D else np.ones_like(dom, bool)
            if d < D:
                tokens[d, li] = sel.sum()
                hits[d, li] = onehot[sel].sum(axis=0)
                co[d, li] = onehot[sel].T @ onehot[sel]
            if sel.any():
                _, seen = np.unique(patterns[sel], axis=0, return_counts=True)
                p = seen / seen.sum()
                distinct[d, li] = len(seen)
                pent[d, li] = -(p * np.log(p)).sum()
    counts = np.broadcast_to(tokens[:, :, None], hits.shape).copy()
    value = np.concatenate([hits / np.where(counts > 0, counts, 1), (hits.sum(0) / np.maximum(counts.sum(0), 1))[None]])
    stats: Dict[str, np.ndarray] = {"token_counts": tokens, "load_counts": hits, "coactivation_counts": co}
    share = _share_stats(np.concatenate([hits, hits.sum(0)[None]]))
    stats.update(share)
    load_total = hits.sum(0)
    tok_share = tokens / np.maximum(tokens.sum(0), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dom_share = np.where(load_total[None] > 0, hits / np.where(load_total[None] > 0, load_total[None], 1), 0.0)
        stats["specialisation"] = np.where(tok_share[:, :, None] > 0, dom_share / np.where(
            tok_share[:, :, None] > 0, tok_share[:, :, None], 1), 0.0)
        pooled_co = co.sum(0)
        diag = np.diagonal(pooled_co, axis1=1, axis2=2)[:, :, None]
        stats["coactivation"] = np.where(diag > 0, pooled_co / np.where(diag > 0, diag, 1), 0.0)
    stats["distinct_patterns"] = distinct
    stats["pattern_entropy"] = pent
    return {"scores/frequency": {"value": value, "sums": hits, "counts": counts},
            "statistics": {k: stats[k] for k in ID_STATISTICS}}


def _model_from_checkpoint(path: str, moe_layers: Optional[List[int]], num_experts: Optional[int], L: int,
                           k: int) -> ModelInfo:
    cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    text = cfg.get("text_config", cfg)
    if moe_layers is None:
        if L != int(text["num_hidden_layers"]):
            raise ValueError(f"the dump has {L} MoE layers of {text['num_hidden_layers']} decoder layers: "
                             "give --moe-layers")
        moe_layers = list(range(L))
    E = num_experts or next((int(text[key]) for key in ("num_local_experts", "num_experts", "n_routed_experts")
                             if key in text), 0)
    if not E:
        raise ValueError(f"{path}/config.json names no expert count: give --num-experts")
    return ModelInfo.from_checkpoint(os.path.abspath(path), moe_layers, E, k)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moeatlas.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", choices=["vllm", "sglang"], help="engine that wrote the ids")
    ap.add_argument("dump", help="vllm: .npy/.npz/.pt integer array [tokens, moe_layers, top_k]; sglang: the "
                                 "per_token recorder's .pt file of one rank")
    ap.add_argument("--tokens-from", required=True, metavar="ATLAS", help="atlas whose token stream the dump's rows are")
    model = ap.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-from", metavar="ATLAS", help="copy the model identity from this atlas")
    model.add_argument("--checkpoint", help="checkpoint directory (its config.json)")
    ap.add_argument("--moe-layers", help="decoder indices of the dump's MoE layers, comma-separated (with --checkpoint)")
    ap.add_argument("--num-experts", type=int, help="routed experts per layer (with --checkpoint; default from config)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--force", action="store_true", help="replace an existing output")
    args = ap.parse_args(argv)
    try:
        if os.path.exists(args.output) and not args.force:
            raise ValueError(f"{args.output} exists (use --force to replace it)")
        tokens = TokenSet.from_atlas(args.tokens_from)
        if args.source == "sglang":
            if not args.model_from:
                raise ValueError("sglang dumps need --model-from (the layer axis and top-k come from the model)")
            with Atlas(args.model_from) as a:
                m = a.model
                routed = read_sglang_dump(args.dump, tokens.ids, a.moe_layers, m.num_layers, m.top_k)
        else:
            routed = read_routed_experts(args.dump)
        if args.model_from:
            with Atlas(args.model_from) as a:
                m = a.model
                info = ModelInfo(m.checkpoint_path, m.config_json, m.model_type, m.num_layers, m.num_experts,
                                 m.top_k, m.hidden_size, a.moe_layers, m.config_sha256)
        else:
            layers = [int(x) for x in args.moe_layers.split(",")] if args.moe_layers else None
            info = _model_from_checkpoint(args.checkpoint, layers, args.num_experts, routed.shape[1], routed.shape[2])
        out = ingest(routed, tokens, info, args.output, args.source)
    except (ValueError, OSError) as e:
        print(f"moeatlas.ingest: error: {e}", file=sys.stderr)
        return 1
    print(f"ingest: {routed.shape[0]} tokens x {routed.shape[1]} MoE layers (ids only) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
