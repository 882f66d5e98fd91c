"""``python -m moeatlas.record CHECKPOINT --tokens-from ATLAS -o OUT``: records an atlas with transformers.

Forward hooks on every MoE router of a model ``AutoModelForCausalLM`` loads (any module whose class
name ends in ``Router``/``TopkRouter`` and returns ``(router_logits, weights, indices)``, as every
transformers 5 MoE router does; the decoder layer is read from the module path ``...layers.<i>...``)
record the raw logits, the top-k expert ids and their weights of every token. The calibration tokens
are those of ``--tokens-from`` (an atlas, e.g. one ``moeatlas capture`` wrote): both sides see the very
same packed sequences, domains and provenance. ``--device-map auto`` (accelerate) spreads the model over
GPUs and CPU/disk; hooks run wherever the router's module lives and results are moved to the CPU.

Data parallel: under ``torchrun --nproc-per-node N`` (``RANK``/``WORLD_SIZE`` set) rank ``r`` records
the ``r``-th contiguous block of sequences into ``OUT`` with ``.rank<r>-of<N>`` before ``.atlas.h5``
(or appended); ``moeatlas merge`` of the shards in rank order gives the single-process atlas.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .writer import LayerRecords, ModelInfo, TokenSet, write_atlas

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def find_routers(model: Any) -> Dict[int, Any]:
    """Decoder-layer index -> router module, for every MoE router of the model."""
    out: Dict[int, Any] = {}
    for name, module in model.named_modules():
        cls = type(module).__name__
        if not (cls.endswith("Router") or cls.endswith("TopkRouter")):
            continue
        m = _LAYER.search(name)
        if m is None:
            continue
        layer = int(m.group(1))
        if layer in out:
            raise RuntimeError(f"two routers in decoder layer {layer} ({name}): not a model this recorder knows")
        out[layer] = module
    return out


class Recorder:
    """Holds hooks on every router; ``take()`` returns and clears what the last forward recorded."""

    def __init__(self, routers: Dict[int, Any]) -> None:
        self._records: Dict[int, List[Tuple[Any, Any, Any]]] = {i: [] for i in routers}
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in routers.items()]

    def _hook(self, layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if not (isinstance(output, tuple) and len(output) >= 3):
                raise RuntimeError(f"router of layer {layer} ({type(module).__name__}) returned "
                                   f"{type(output).__name__}, expected (router_logits, weights, indices)")
            logits, weights, indices = output[0], output[1], output[2]
            bias = getattr(module, "e_score_correction_bias", None)
            if bias is not None:
                # The sigmoid router (Glm4MoeTopkRouter) picks with topk(sorted=False): slots in the order
                # `moeatlas capture` records them, by decreasing choice score sigmoid(logit) + bias.
                choice = (logits.detach().float().sigmoid() + bias.detach().float()).gather(1, indices)
                order = choice.argsort(dim=-1, descending=True, stable=True)
                indices, weights = indices.gather(1, order), weights.gather(1, order)
            self._records[layer].append((logits.detach().float().cpu(), weights.detach().float().cpu(),
                                         indices.detach().cpu()))
        return hook

    def take(self) -> Dict[int, List[Tuple[Any, Any, Any]]]:
        out = self._records
        self._records = {i: [] for i in out}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def input_device(model: Any) -> Any:
    """Where the input ids go: the embedding's device; the CPU when accelerate offloaded it (meta
    parameters: its hooks bring weights and inputs to the execution device)."""
    import torch
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dev = emb.weight.device if emb is not None else next(model.parameters()).device
    return torch.device("cpu") if dev.type == "meta" else dev


def record(model: Any, tokens: TokenSet, *, batch_size: int = 1, progress: bool = False
           ) -> Tuple[Dict[int, LayerRecords], int, int]:
    """Runs every sequence of ``tokens`` through ``model`` (each its own sample, positions from 0)
    and returns the records per MoE layer, ``E`` and ``k``."""
    import torch

    routers = find_routers(model)
    if not routers:
        raise RuntimeError(f"{type(model).__name__}: no MoE router found (modules named *Router under layers.<i>)")
    rec = Recorder(routers)
    device = input_device(model)
    per_layer: Dict[int, List[Tuple[Any, Any, Any]]] = {i: [] for i in routers}
    S = tokens.num_sequences
    try:
        with torch.no_grad():
            s = 0
            while s < S:
                # a batch of equal-length sequences: no padding, so no attention mask is needed
                n = 1
                length = tokens.seq_offsets[s + 1] - tokens.seq_offsets[s]
                while (n < batch_size and s + n < S
                       and tokens.seq_offsets[s + n + 1] - tokens.seq_offsets[s + n] == length):
                    n += 1
                ids = np.stack([tokens.sequence(s + j) for j in range(n)]).astype(np.int64)
                model(input_ids=torch.from_numpy(ids).to(device), use_cache=False)
                for i, parts in rec.take().items():
                    if len(parts) != 1:
                        raise RuntimeError(f"router of layer {i} ran {len(parts)} times in one forward pass")
                    per_layer[i].extend(parts)
                s += n
                if progress:
                    print(f"\rrecord: {s}/{S} sequences", end="", file=sys.stderr, flush=True)
    finally:
        rec.remove()
        if progress:
            print(file=sys.stderr)
    out: Dict[int, LayerRecords] = {}
    E = k = 0
    for i, parts in per_layer.items():
        if not parts:
            continue
        logits = torch.cat([p[0].reshape(-1, p[0].shape[-1]) for p in parts]).numpy()
        weights = torch.cat([p[1].reshape(-1, p[1].shape[-1]) for p in parts]).numpy()
        idx = torch.cat([p[2].reshape(-1, p[2].shape[-1]) for p in parts]).numpy()
        E, k = logits.shape[1], idx.shape[1]
        out[i] = LayerRecords(topk_ids=idx, router_logits=logits, topk_weights=weights)
    if not out:  # a shard without sequences: E and k from the routers
        any_router = next(iter(routers.values()))
        E = int(getattr(any_router, "num_experts", getattr(any_router, "n_routed_experts", 0)))
        k = int(getattr(any_router, "top_k", 0))
        for i in routers:
            out[i] = LayerRecords(topk_ids=np.zeros((0, k), np.int64), router_logits=np.zeros((0, E), np.float32),
                                  topk_weights=np.zeros((0, k), np.float32))
    return dict(sorted(out.items())), E, k


def shard_sequences(num_sequences: int, rank: int, world: int) -> List[int]:
    """Rank ``rank``'s contiguous block of sequences (the first ``S mod N`` ranks get one more)."""
    base, extra = divmod(num_sequences, world)
    begin = rank * base + min(rank, extra)
    return list(range(begin, begin + base + (1 if rank < extra else 0)))


def shard_path(out: str, rank: int, world: int) -> str:
    tag = f".rank{rank}-of{world}"
    return out[: -len(".atlas.h5")] + tag + ".atlas.h5" if out.endswith(".atlas.h5") else out + tag


def _dtype(name: str) -> Any:
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moeatlas.record", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="Hugging Face checkpoint directory (config.json + weights)")
    ap.add_argument("--tokens-from", required=True, metavar="ATLAS",
                    help="atlas whose calibration tokens, sequences and domains are recorded (moeatlas capture's)")
    ap.add_argument("-o", "--output", required=True, help="atlas to write")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="compute dtype of the forward pass (default float32)")
    ap.add_argument("--logits-dtype", default="float32", choices=["float32", "float16"], help="stored router logits")
    ap.add_argument("--device", default="cpu", help="device for the whole model (cpu, cuda:0); ignored with --device-map")
    ap.add_argument("--device-map", default=None, help="accelerate device map, e.g. auto (GPUs, CPU and disk offload)")
    ap.add_argument("--max-memory", default=None, metavar="JSON",
                    help='with --device-map: memory per device, e.g. \'{"0": "70GiB", "cpu": "200GiB"}\'')
    ap.add_argument("--offload-folder", default=None, help="with --device-map: folder for weights offloaded to disk")
    ap.add_argument("--batch-size", type=int, default=1, help="sequences per forward pass")
    ap.add_argument("--compression-level", type=int, default=4, help="gzip level of the chunked datasets (0 = off)")
    ap.add_argument("--force", action="store_true", help="replace an existing output")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and "MASTER_ADDR" in os.environ and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")  # only for the final barrier: shards are independent
    out = args.output if world == 1 else shard_path(args.output, rank, world)
    if os.path.exists(out) and not args.force:
        print(f"moeatlas.record: error: {out} exists (use --force to replace it)", file=sys.stderr)
        return 1
    tokens = TokenSet.from_atlas(args.tokens_from)
    if world > 1:
        tokens = tokens.subset(shard_sequences(tokens.num_sequences, rank, world))
    kwargs: Dict[str, Any] = {"dtype": _dtype(args.dtype), "attn_implementation": "eager"}
    if args.device_map:
        kwargs["device_map"] = args.device_map
        if args.max_memory:
            kwargs["max_memory"] = {(int(k) if k.isdigit() else k): v for k, v in json.loads(args.max_memory).items()}
        if args.offload_folder:
            kwargs["offload_folder"] = args.offload_folder
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, **kwargs)
    model.eval()
    if not args.device_map:
        model.to(args.device)
    layers, E, k = record(model, tokens, batch_size=args.batch_size, progress=sys.stderr.isatty())
    info = ModelInfo.from_checkpoint(os.path.abspath(args.checkpoint), list(layers), E, k)
    device = args.device_map and f"device_map={args.device_map}" or args.device
    write_atlas(out, info, tokens, layers, device=device, compute_dtype=args.dtype, logit_storage=args.logits_dtype,
                compression_level=args.compression_level)
    print(f"record: {tokens.ids.shape[0]} tokens x {len(layers)} MoE layers -> {out}")
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
