"""moeatlas.read against real atlases: the demo atlas under resources/ and one built with the CLI
holding every group. Fails on any object docs/atlas-format.md does not describe or the reader does
not read, and checks values against the CLI's own CSVs and against numpy recomputations."""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Dict, List

import h5py
import numpy as np
import pytest

import moeatlas
from moeatlas import schema


def read_everything(a: moeatlas.Atlas) -> None:
    """Touches every public accessor, reading every array (the reader records what it opened)."""
    assert a.model.config["model_type"] == a.model.model_type
    assert len(a.calibration.domains) == len(a.domain_names)
    a.tokens.ids, a.tokens.domain, a.tokens.seq_offsets
    a.layer_options, a.layers_complete
    for layer in a.layers.values():
        layer.topk_ids[:]
        if not layer.ids_only:
            layer.router_logits[:], layer.topk_weights[:]
        if layer.expert_norms is not None:
            layer.expert_norms[:]
        layer.hidden_samples
    for table in [*a.scores.values(), a.statistics, a.probmoe, *a.evaluation.values(), a.prefetch_hit_rates,
                  *a.simulation.values()]:
        if table is not None:
            for name in table:
                table[name]
    if a.fisher is not None:
        fisher = a.fisher
        for table in [fisher.tables, *fisher.forms.values(), fisher.concentration, fisher.ablation]:
            if table is not None:
                for name in table:
                    table[name]
    if a.prefetch is not None:
        p = a.prefetch
        p.train_sequences, p.default_vectors, p.default_vector_counts
        for key in p.recorded():
            p.predictions(*key)[:]
        for table in p.learned().values():
            for name in table:
                table[name]


def check_documented_and_read(path: Path) -> moeatlas.Atlas:
    a = moeatlas.read(path)
    assert a.unknown_objects() == [], f"{path}: objects docs/atlas-format.md does not describe"
    read_everything(a)
    present = {p for p, _ in schema.walk(a.h5)}
    unread = sorted(present - a.objects_read)
    assert unread == [], f"{path}: objects moeatlas.read does not read: {unread}"
    return a


def test_docs_name_every_schema_member(repo: Path) -> None:
    text = (repo / "docs" / "atlas-format.md").read_text(encoding="utf-8")
    missing = [n for n in schema.literal_names() if not re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", text)]
    assert missing == [], f"names moeatlas.schema knows that docs/atlas-format.md never mentions: {missing}"


def test_schema_matches_most_specific_entry() -> None:
    assert schema.match("/scores/peu/threshold").pattern == "scores/{name}/threshold"
    assert schema.match("prefetch/learned/mlp/3/d2/output_bias").pattern.endswith("/output_bias")
    assert schema.match("prefetch/learned", "group").pattern == "prefetch/learned"
    assert schema.match("layers/x1", "group") is None
    assert schema.match("scores/peu/nonsense") is None


def test_demo_atlas(repo: Path) -> None:
    path = repo / "resources" / "demo" / "demo.atlas.h5"
    with check_documented_and_read(path) as a:
        check_tokens_and_scores(a)


def test_full_atlas_every_group(full_atlas: Dict[str, Path]) -> None:
    with check_documented_and_read(full_atlas["atlas"]) as a:
        groups = set(a.h5.keys())
        want = {"model", "calibration", "tokens", "layers", "progress", "scores", "statistics", "probmoe",
                "evaluation", "fisher", "prefetch", "prefetch_hit_rates", "simulation"}
        assert want <= groups, f"the fixture misses {want - groups}"
        layer = next(iter(a.layers.values()))
        assert layer.expert_norms is not None and layer.hidden_samples is not None
        assert a.layer_options["logit_storage"] == "float32"
        assert set(a.fisher.forms) == {"mask", "weight", "grad_abs", "activation", "magnitude"}
        assert {k[0] for k in a.prefetch.learned()} == {"linear", "mlp"}
        check_tokens_and_scores(a)


def check_tokens_and_scores(a: moeatlas.Atlas) -> None:
    """Token bookkeeping against /calibration, frequency and statistics against numpy on the raw ids."""
    D, E, k = len(a.domain_names), a.model.num_experts, a.model.top_k
    dom = a.tokens.domain
    assert [int(np.sum(dom == d)) for d in range(D)] == [x.num_tokens for x in a.calibration.domains]
    assert len(a.tokens.sequences()) == sum(x.num_samples for x in a.calibration.domains)
    assert np.all(a.layers_complete == 1) and all(l.complete for l in a.layers.values())
    freq = np.zeros((D + 1, len(a.moe_layers), E))
    for i, layer in enumerate(a.layers.values()):
        ids = layer.topk_ids[:].astype(np.int64)
        assert ids.shape == (a.tokens.count, k)
        for d in range(D):
            freq[d, i] = np.bincount(ids[dom == d].ravel(), minlength=E) / np.sum(dom == d)
        freq[D, i] = np.bincount(ids.ravel(), minlength=E) / len(dom)
    np.testing.assert_allclose(a.scores["frequency"].value, freq, rtol=0, atol=1e-12)
    stats = a.statistics
    np.testing.assert_array_equal(stats.load_counts, np.round(freq[:D] * np.array(
        [np.sum(dom == d) for d in range(D)])[:, None, None]))
    assert a.scores["frequency"].params == a.scores["frequency"].params  # parsed JSON
    np.testing.assert_allclose(a.probmoe.marginal_mean.sum(axis=2), k, rtol=1e-9)


def _csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(s: str) -> float:
    return math.nan if s == "" else float(s)


def test_evaluation_equals_eval_csv(full_atlas: Dict[str, Path]) -> None:
    rows = _csv(full_atlas["eval_csv"])
    with moeatlas.read(full_atlas["atlas"]) as a:
        t = a.evaluation["default"]
        assert len(rows) == len(t.variants) * len(t.domains)
        for r in rows:
            v, d = t.variants.index(r["variant"]), t.domains.index(r["domain"])
            for col in ("nll", "mean_experts", "active_params", "flops_per_token"):
                assert t[col][v, d] == pytest.approx(_num(r[col]), rel=1e-7), (r["variant"], r["domain"], col)
            assert t.tokens[d] == _num(r["tokens"])
            assert t.sparsity[v] == pytest.approx(_num(r["sparsity"]), rel=1e-7, abs=1e-12)
            assert t.kept_experts[v] == _num(r["kept_experts"])
            hist = dict(map(float, kv.split(":")) for kv in r["experts_histogram"].split()) if r["experts_histogram"] else {}
            for kk, share in enumerate(t.experts_histogram[v, d]):
                assert share == pytest.approx(hist.get(float(kk), 0.0), rel=1e-7, abs=1e-12)


def test_hit_rates_equal_prefetch_csv(full_atlas: Dict[str, Path]) -> None:
    rows = _csv(full_atlas["prefetch_csv"])
    with moeatlas.read(full_atlas["atlas"]) as a:
        t = a.prefetch_hit_rates
        axes = dict(t.axes())
        checked = 0
        for r in rows:
            idx = (axes["predictor"].index(r["predictor"]), axes["split"].index(r["split"]),
                   axes["domain"].index(r["domain"]), axes["layer"].index(int(r["layer"])),
                   axes["lookahead"].index(int(r["lookahead"])))
            for col in ("hit_rate", "recall"):
                want = _num(r[col])
                got = t[col][idx]
                assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12), (r, col)
            checked += 1
        assert checked == len(rows) > 0


def test_simulation_equals_simulate_csv(full_atlas: Dict[str, Path]) -> None:
    rows = _csv(full_atlas["simulate_csv"])
    cols = {"cache_slots": "cache_slots", "link_bandwidth": "link_bytes_per_s", "tpot_mean": "tpot_mean_s",
            "tpot_p50": "tpot_p50_s", "tpot_p90": "tpot_p90_s", "tpot_p99": "tpot_p99_s", "tpot_max": "tpot_max_s",
            "compute_per_token": "compute_per_token_s", "stall_per_token": "stall_per_token_s",
            "bytes_per_token": "bytes_per_token", "tokens_per_second": "tokens_per_s", "hits": "hits",
            "misses": "misses", "prefetch_hits": "prefetch_hits", "wasted_prefetches": "wasted_prefetches",
            "replaced": "replaced"}
    with moeatlas.read(full_atlas["atlas"]) as a:
        (run,) = a.simulation.values()
        assert run.name.startswith("prefetch-lru-next-router")
        assert len(run["tpot_mean"]) == len(rows) == 2
        for p, r in enumerate(rows):
            for ours, theirs in cols.items():
                assert run[ours][p] == pytest.approx(_num(r[theirs]), rel=1e-8), (p, ours)  # CSV: 9 digits
            assert math.isnan(run.cache_bytes[p])


def test_fisher_and_prefetch_shapes(full_atlas: Dict[str, Path]) -> None:
    with moeatlas.read(full_atlas["atlas"]) as a:
        L, E = len(a.moe_layers), a.model.num_experts
        f = a.fisher
        assert list(f.layers) == a.moe_layers
        D1 = len(f.params["domains"])
        assert f.forms["mask"].experts.shape == (D1, L, E)
        np.testing.assert_allclose(f.forms["mask"].experts, f.forms["mask"].units.sum(axis=-1), rtol=1e-12)
        p = a.prefetch
        assert p.train_sequences.shape == (len(a.tokens.sequences()),)
        # next-router at layer l predicts layer l+d's experts; its first k entries are rankings of E experts.
        ids = p.predictions("next-router", a.moe_layers[0], 1)[:]
        assert ids.shape == (a.tokens.count, p.budget) and ids.min() >= 0 and ids.max() < E


def test_frames(full_atlas: Dict[str, Path]) -> None:
    pd = pytest.importorskip("pandas")
    with moeatlas.read(full_atlas["atlas"]) as a:
        fr = a.scores["frequency"].frame()
        assert len(fr) == (len(a.domain_names) + 1) * len(a.moe_layers) * a.model.num_experts
        pooled = fr[(fr.domain == "pooled") & (fr.layer == a.moe_layers[-1])]["value"].to_numpy()
        np.testing.assert_array_equal(pooled, a.scores["frequency"].value[-1, -1])
        ev = a.evaluation["default"].frame()
        assert isinstance(ev, pd.DataFrame) and list(ev.columns[:3]) == ["variant", "domain", "nll"]
        np.testing.assert_allclose(ev["perplexity"], np.exp(ev["nll"]))
        hr = a.prefetch_hit_rates.frame()
        assert len(hr) == a.prefetch_hit_rates.hit_rate.size
        assert len(next(iter(a.simulation.values())).frame()) == 2
        assert list(a.calibration.frame()["name"]) == a.domain_names
