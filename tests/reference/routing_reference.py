"""Dynamic-k routing applied to a stock transformers model: the independent reference of the engine's
routing rules (core/checkpoint/routing_rule.h).

Rules: "top-k:K", "probmoe:KMIN:KMAX", "top-p:P[:KMIN:KMAX]", "threshold:M[:KMIN:KMAX]" (with one
probability threshold per layer given by the caller). Written from the definitions, not from the C++:
ProbMoE's k* is the argmax over the band of the prefix sums of the sorted logits (not a count of
positive logits), top-p searches the float64 cumulative mass, and the weights are the stock router's
(softmax over all experts in fp32, top-kmax, slots past k zeroed, renormalised where the model
renormalises).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def parse(rule: str, top_k: int) -> dict:
    head, *rest = rule.split(":")
    if head == "top-k":
        return dict(kind=head, k_min=int(rest[0]), k_max=int(rest[0]))
    if head == "probmoe":
        return dict(kind=head, k_min=int(rest[0]), k_max=int(rest[1]))
    if head in ("top-p", "threshold"):
        band = (int(rest[1]), int(rest[2])) if len(rest) == 3 else (1, top_k)
        return dict(kind=head, value=float(rest[0]), k_min=band[0], k_max=band[1])
    raise ValueError(f"unknown rule {rule!r}")


def token_k(r: dict, logits: torch.Tensor, threshold: float | None = None):
    """Per-token k [T] int64 and the smallest distance of any token to a decision boundary (a margin:
    tokens this close to a tie may legitimately get another k under another summation order)."""
    k_min, k_max = r["k_min"], r["k_max"]
    probs = F.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, min(k_max + 1, probs.shape[-1]), dim=-1).values.double()
    if r["kind"] == "top-k":
        k = torch.full((logits.shape[0],), k_max, dtype=torch.int64)
        margin = float((top[:, k_max - 1] - top[:, k_max]).min()) if top.shape[1] > k_max else float("inf")
    elif r["kind"] == "probmoe":
        ordered = torch.sort(logits.double(), dim=-1, descending=True).values
        prefix = torch.cumsum(ordered, dim=-1)[:, k_min - 1:k_max]
        k = k_min + torch.argmax(prefix, dim=-1)  # first maximum
        margin = float(ordered[:, k_min - 1:k_max].abs().min())
    elif r["kind"] == "top-p":
        cum = torch.cumsum(top[:, :k_max], dim=-1)
        reached = cum >= r["value"]
        first = torch.where(reached.any(-1), reached.int().argmax(-1) + 1, torch.full_like(reached[:, 0], k_max,
                                                                                           dtype=torch.int64))
        k = first.clamp(k_min, k_max)
        margin = float((cum[:, :k_max - 1] - r["value"]).abs().min()) if k_max > 1 else float("inf")
    elif r["kind"] == "threshold":
        assert threshold is not None
        k = (top[:, :k_max] >= threshold).sum(-1).clamp(k_min, k_max)
        margin = float((top - threshold).abs().min())
    else:
        raise ValueError(r["kind"])
    return k.to(torch.int64), margin


def routed(arch: str, r: dict, logits: torch.Tensor, norm_topk_prob: bool, threshold: float | None):
    """(scores [T, kmax], ids [T, kmax], k [T], margin) as the stock router would give them under rule r."""
    k, margin = token_k(r, logits, threshold)
    if arch == "gpt_oss":
        # top-kmax of the logits; the softmax over the kept slots' logits only, in the logits' dtype.
        top, ids = torch.topk(logits, r["k_max"], dim=-1)
        keep = torch.arange(r["k_max"]).unsqueeze(0) < k.unsqueeze(1)
        top = top.masked_fill(~keep, float("-inf"))
        return F.softmax(top, dim=-1, dtype=top.dtype), ids, k, margin
    probs = F.softmax(logits.float(), dim=-1)
    weights, ids = torch.topk(probs, r["k_max"], dim=-1)
    keep = torch.arange(r["k_max"]).unsqueeze(0) < k.unsqueeze(1)
    weights = weights * keep
    if arch == "mixtral" or norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if arch != "mixtral":
        weights = weights.to(logits.dtype)
    return weights, ids, k, margin


# Routers that always renormalise their top-k weights (no norm_topk_prob in the config).
ALWAYS_RENORMALISE = ("mixtral", "gpt_oss", "qwen3_5_moe")


def renormalises(arch: str, cfg) -> bool:
    """Whether the arch's router renormalises its top-k weights (the one rule every reference script uses)."""
    return True if arch in ALWAYS_RENORMALISE else bool(cfg.norm_topk_prob)


@contextlib.contextmanager
def apply_rule(model, arch: str, rule: str, thresholds: dict[int, float] | None = None):
    """Within the block, every TopKRouter of `model` routes with `rule`. Yields a dict that collects,
    per decoder layer, the tokens' k ("k") and the smallest decision margin seen ("margin")."""
    cfg = model.config
    r = parse(rule, cfg.num_experts_per_tok)
    norm = renormalises(arch, cfg)
    seen: dict = {"k": {}, "margin": float("inf")}
    patched = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None) or getattr(layer.mlp, "router", None)  # gpt_oss: mlp.router
        if gate is None or not type(gate).__name__.endswith("TopKRouter"):
            continue

        def forward(hidden_states, gate=gate, i=i):
            hidden_states = hidden_states.reshape(-1, gate.hidden_dim)
            logits = F.linear(hidden_states, gate.weight, getattr(gate, "bias", None))
            weights, ids, k, margin = routed(arch, r, logits, norm, (thresholds or {}).get(i))
            seen["k"][i] = k
            seen["margin"] = min(seen["margin"], margin)
            return logits, weights, ids

        gate.forward = forward
        patched.append(gate)
    try:
        yield seen
    finally:
        for gate in patched:
            del gate.forward
