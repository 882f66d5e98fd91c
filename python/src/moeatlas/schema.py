"""The atlas layout of docs/atlas-format.md as path patterns, and the checks built on them.

Every group and dataset a schema-1 atlas may hold is one entry of ``OBJECTS``: a path relative to
the root whose components are literal names or placeholders:

* ``{layer}``: a decoder-layer index in decimal (``/layers/13``),
* ``d{d}``: a lookahead (``d1``),
* ``{name}``: a user- or run-chosen name (a criterion, an evaluation label, a simulation run).

``unknown_objects(file)`` lists what a file holds that no entry matches; the reader ignores such
members (docs/atlas-format.md, "Compatibility"), the tests fail on them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import h5py

FORMAT = "moeatlas"
SCHEMA_VERSION = 1

SCORE_ARRAYS = ("value", "sums", "counts", "threshold", "threshold_sums", "threshold_counts")
STATISTICS_ARRAYS = (
    "token_counts", "load_counts", "token_entropy_sums", "m99_hist", "coactivation_counts", "dynamic_k_hist",
    "load_share", "load_cv", "load_max_vio", "load_entropy", "token_entropy", "m99_mean", "distinct_patterns",
    "pattern_entropy", "dynamic_k_mean", "dynamic_k_fraction", "specialisation", "coactivation",
)
PROBMOE_ARRAYS = (
    "marginal_mean", "topk_prob", "topk_log_prob", "cardinality", "cardinality_entropy", "kstar_mean",
    "token_counts", "log_space_tokens", "marginal_sums", "topk_prob_sums", "topk_log_prob_sums",
    "cardinality_entropy_sums", "kstar_sums", "cardinality_sums",
)
EVALUATION_ARRAYS = (
    "nll", "tokens", "sparsity", "kept_experts", "mean_experts", "experts_histogram", "active_params",
    "flops_per_token", "equal_cost_topk_nll",
)
FISHER_ARRAYS = ("layers", "samples", "tokens", "expert_tokens")
FISHER_FORMS = ("mask", "weight", "grad_abs", "activation", "magnitude")
FISHER_ABLATION_ARRAYS = ("nll", "tokens", "removed", "removed_units")
PREFETCH_PREDICTORS = ("next-router", "quasi-hidden", "linear", "mlp")
LEARNED_ESTIMATORS = ("linear", "mlp")
LEARNED_PARAMETERS = (
    "feature_mean", "feature_std", "weight", "bias", "hidden_weight", "hidden_bias", "output_weight", "output_bias",
)
HIT_RATE_ARRAYS = ("hit_rate", "recall", "hit_sums", "recall_sums", "token_counts")
SIMULATION_ARRAYS = (
    "cache_slots", "cache_bytes", "link_bandwidth", "tpot_mean", "tpot_p50", "tpot_p90", "tpot_p99", "tpot_max",
    "compute_per_token", "stall_per_token", "bytes_per_token", "tokens_per_second", "hits", "misses",
    "prefetch_hits", "wasted_prefetches", "replaced",
)


@dataclass(frozen=True)
class Entry:
    pattern: str  # e.g. "layers/{layer}/router_logits"
    kind: str  # "group" or "dataset"


def _entries() -> List[Entry]:
    g, d = "group", "dataset"
    out = [
        Entry("model", g), Entry("model/moe_layers", d), Entry("model/config_json", d),
        Entry("calibration", g), Entry("calibration/domains", g),
        *(Entry(f"calibration/domains/{n}", d) for n in ("name", "source", "format", "num_samples", "num_tokens")),
        Entry("tokens", g), *(Entry(f"tokens/{n}", d) for n in ("ids", "domain", "seq_offsets")),
        Entry("layers", g), Entry("layers/{layer}", g),
        *(Entry(f"layers/{{layer}}/{n}", d) for n in ("router_logits", "topk_ids", "topk_weights", "expert_norms")),
        Entry("layers/{layer}/hidden_samples", g),
        Entry("layers/{layer}/hidden_samples/token_index", d), Entry("layers/{layer}/hidden_samples/values", d),
        Entry("progress", g), Entry("progress/layers_complete", d),
        Entry("scores", g), Entry("scores/{name}", g), *(Entry(f"scores/{{name}}/{n}", d) for n in SCORE_ARRAYS),
        Entry("statistics", g), *(Entry(f"statistics/{n}", d) for n in STATISTICS_ARRAYS),
        Entry("probmoe", g), *(Entry(f"probmoe/{n}", d) for n in PROBMOE_ARRAYS),
        Entry("evaluation", g), Entry("evaluation/{name}", g),
        *(Entry(f"evaluation/{{name}}/{n}", d) for n in EVALUATION_ARRAYS),
        Entry("fisher", g), *(Entry(f"fisher/{n}", d) for n in FISHER_ARRAYS),
        Entry("fisher/concentration", g), *(Entry(f"fisher/concentration/{f}", d) for f in FISHER_FORMS),
        Entry("fisher/ablation", g), *(Entry(f"fisher/ablation/{n}", d) for n in FISHER_ABLATION_ARRAYS),
        Entry("prefetch", g), Entry("prefetch/train_sequences", d),
        Entry("prefetch/default_vectors", g), Entry("prefetch/default_vectors/{layer}", d),
        Entry("prefetch/default_vector_counts", g), Entry("prefetch/default_vector_counts/{layer}", d),
        Entry("prefetch/learned", g),
        Entry("prefetch_hit_rates", g), *(Entry(f"prefetch_hit_rates/{n}", d) for n in HIT_RATE_ARRAYS),
        Entry("simulation", g), Entry("simulation/{name}", g),
        *(Entry(f"simulation/{{name}}/{n}", d) for n in SIMULATION_ARRAYS),
    ]
    for form in FISHER_FORMS:
        out += [Entry(f"fisher/{form}", g), Entry(f"fisher/{form}/units", d), Entry(f"fisher/{form}/experts", d)]
    for p in PREFETCH_PREDICTORS:
        out += [Entry(f"prefetch/{p}", g), Entry(f"prefetch/{p}/{{layer}}", g), Entry(f"prefetch/{p}/{{layer}}/d{{d}}", d)]
    for p in LEARNED_ESTIMATORS:
        base = f"prefetch/learned/{p}"
        out += [Entry(base, g), Entry(base + "/{layer}", g), Entry(base + "/{layer}/d{d}", g)]
        out += [Entry(f"{base}/{{layer}}/d{{d}}/{n}", d) for n in LEARNED_PARAMETERS]
    return out


OBJECTS: Tuple[Entry, ...] = tuple(_entries())

_PLACEHOLDER = {"{layer}": r"(0|[1-9][0-9]*)", "d{d}": r"d[1-9][0-9]*", "{name}": r"[^/]+"}


def _regex(pattern: str) -> "re.Pattern[str]":
    parts = []
    for comp in pattern.split("/"):
        parts.append(_PLACEHOLDER.get(comp, re.escape(comp)))
    return re.compile("/".join(parts) + r"\Z")


# Literal names win over {name}: "scores/{name}" must not swallow a documented sibling, so a path
# matches the entry with the most literal components.
_COMPILED = [(e, _regex(e.pattern), sum(c not in _PLACEHOLDER for c in e.pattern.split("/"))) for e in OBJECTS]


def match(path: str, kind: Optional[str] = None) -> Optional[Entry]:
    """The schema entry of an object path ("/layers/3/topk_ids" or "layers/3/topk_ids"), or None."""
    rel = path.strip("/")
    best: Optional[Tuple[Entry, int]] = None
    for entry, rx, literal in _COMPILED:
        if (kind is None or entry.kind == kind) and rx.match(rel):
            if best is None or literal > best[1]:
                best = (entry, literal)
    return best[0] if best else None


def walk(f: h5py.File) -> List[Tuple[str, str]]:
    """Every (path, kind) below the root of an open file, paths without the leading slash."""
    out: List[Tuple[str, str]] = []

    def visit(name: str, obj: object) -> None:
        out.append((name, "dataset" if isinstance(obj, h5py.Dataset) else "group"))

    f.visititems(visit)
    return out


def unknown_objects(f: h5py.File) -> List[str]:
    """Paths (with their kind) the file holds that docs/atlas-format.md's layout does not describe."""
    return [f"/{p} ({k})" for p, k in walk(f) if match(p, k) is None]


def literal_names(entries: Iterable[Entry] = OBJECTS) -> Sequence[str]:
    """The literal path components of the schema (what docs/atlas-format.md must mention)."""
    names = set()
    for e in entries:
        for comp in e.pattern.split("/"):
            if comp not in _PLACEHOLDER:
                names.add(comp)
    return sorted(names)
