#!/usr/bin/env python3
"""Generate a tiny Qwen3-MoE checkpoint in which a HANDFUL of expert units carry each domain.

Usage:
  make_planted_units.py --out DIR [--seed 0] [--seqs-per-domain 12] [--seq-len 64]

Writes
  DIR/model/                 Qwen3MoeForCausalLM.save_pretrained(..., safe_serialization=True), float32
  DIR/calib/<domain>.jsonl   one {"input_ids": [...]} per line (the Fisher set)
  DIR/heldout/<domain>.jsonl the same from a different RNG stream (the ablation set)
  DIR/planted.json           the layout: domains, planted units [layer, expert, unit] per domain, decoy pairs,
                             triggers and successors, constants
and prints one JSON line with transformers' losses (reloaded from DIR/model, eager, fp32): per domain the
per-sequence calibration losses and the held-out mean NLL of the full model and with that domain's planted
units removed (their gate/up rows and down column zeroed), and the largest |logit| of the full model on all of
those tokens ("max_abs_logit", the scale of the losses' float32 rounding).

It is the Fisher-MoE (METHODS.md section 4) planted test: per domain, 4 planted units (2 in layer 0, 2 in
layer 1) are the only thing that predicts the domain's predictable tokens, yet they have small activations
and below-typical weight norms, while "decoy" units have the largest activations and weight norms of the
model and contribute exactly nothing. Construction and why each baseline fails: README.planted_units.md.

Hidden layout (H = 128): dim 0 BIAS (constant in every embedding), dims 1..79 TOKEN (token identity, what
attention, routers and ordinary units read and write), dims 80..95 PRED (one per trigger successor, read only
by lm_head), dims 96..127 JUNK (written only by decoy pairs, which cancel; read by nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

DOMAINS = ["alpha", "beta", "gamma", "delta"]
VOCAB = 128
HIDDEN = 128
NUM_LAYERS = 2
NUM_EXPERTS = 8
TOP_K = 2
INTERMEDIATE = 32
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 32
TOKENS_PER_DOMAIN = VOCAB // len(DOMAINS)  # domain d owns tokens [32d, 32d + 32)
TRIGGERS = 4  # per domain, local ids 0..3; one planted unit each
DECOY_PAIRS = 4  # per expert and layer
RMS_EPS = 1e-6

BIAS = 0
TOKEN = slice(1, 80)
PRED = 80  # PRED + k: prediction dim of trigger k (global trigger index d * TRIGGERS + i)
JUNK = slice(96, 128)

B0 = 0.6  # embedding: B0 * e_BIAS + S_TOK * (unit token direction); norm 1
S_TOK = 0.8
ALPHA = 0.03  # planted gate and up rows: ALPHA * token direction of the trigger
GAMMA = 0.2  # planted down column: GAMMA * e_{PRED + k}
KAPPA = 0.3  # host router row += KAPPA * token direction of each trigger it hosts
BETA = 60.0  # lm_head[succ(trigger k), PRED + k]
DELTA = (0.2, 0.4)  # decoy gate/up rows: random init + delta * e_BIAS, delta uniform in this range
ETA = (0.3, 0.6)  # decoy down column: +- eta * (unit vector in JUNK)
ATTN_OUT = 0.5  # o_proj: random init (rows in TOKEN only) times this


def host_expert(domain: int, layer: int) -> int:
    """Layer 0 hosts domain d's triggers 0,1 in expert 2d, layer 1 its triggers 2,3 in expert 2d + 1."""
    return 2 * domain + layer


def planted_unit(trigger: int, layer: int) -> int:
    """Unit index of the planted unit inside its host expert (spread out, away from the decoys at 0..7)."""
    return 11 + 7 * (trigger % 2) + layer


def make_config():
    from transformers import Qwen3MoeConfig
    return Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=NUM_LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, intermediate_size=64,
        moe_intermediate_size=INTERMEDIATE, num_experts=NUM_EXPERTS, num_experts_per_tok=TOP_K,
        norm_topk_prob=True, mlp_only_layers=[], decoder_sparse_step=1, max_position_embeddings=256,
        rms_norm_eps=RMS_EPS, tie_word_embeddings=False)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def plant(sd: dict, seed: int):
    """Weight surgery on the random-init state dict (numpy float64 copies). Returns (weights, layout)."""
    rng = np.random.default_rng([seed, 7])
    w = {k: v.double().numpy().copy() for k, v in sd.items()}
    zero_cols = np.r_[PRED:HIDDEN]  # PRED and JUNK: never read except PRED by lm_head

    # Embedding: a constant BIAS coordinate plus the token's random-init direction in TOKEN.
    emb = w["model.embed_tokens.weight"]
    tok = np.stack([unit(emb[v, TOKEN]) for v in range(VOCAB)])
    emb[:] = 0.0
    emb[:, BIAS] = B0
    emb[:, TOKEN] = S_TOK * tok

    triggers, succ = {}, {}
    for d in range(len(DOMAINS)):
        base = TOKENS_PER_DOMAIN * d
        triggers[d] = [base + i for i in range(TRIGGERS)]
        targets = rng.choice(np.arange(base + TRIGGERS, base + TOKENS_PER_DOMAIN), size=TRIGGERS, replace=False)
        for t, s in zip(triggers[d], targets):
            succ[t] = int(s)

    planted = {name: [] for name in DOMAINS}
    decoys = []
    for layer in range(NUM_LAYERS):
        p = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj"):
            w[p + f"self_attn.{name}.weight"][:, zero_cols] = 0.0
        o = w[p + "self_attn.o_proj.weight"]
        o *= ATTN_OUT
        o[BIAS] = 0.0
        o[PRED:] = 0.0
        router = w[p + "mlp.gate.weight"]
        router[:, zero_cols] = 0.0
        gate_up = w[p + "mlp.experts.gate_up_proj"]  # [E, 2I, H], gate rows first
        down = w[p + "mlp.experts.down_proj"]  # [E, H, I]
        # Ordinary units (random init): read BIAS + TOKEN, write TOKEN only.
        gate_up[:, :, PRED:] = 0.0
        down[:, BIAS, :] = 0.0
        down[:, PRED:, :] = 0.0
        # Decoy pairs: units 2k, 2k + 1 of every expert share their gate and up rows (random init plus a
        # large BIAS weight, so they fire strongly on every token) and write +-eta c into JUNK: exact
        # cancellation, and nothing reads JUNK.
        for e in range(NUM_EXPERTS):
            for k in range(DECOY_PAIRS):
                j = 2 * k
                delta, eta = rng.uniform(*DELTA), rng.uniform(*ETA)
                gate_up[e, j, BIAS] += delta
                gate_up[e, INTERMEDIATE + j, BIAS] += delta
                gate_up[e, j + 1] = gate_up[e, j]
                gate_up[e, INTERMEDIATE + j + 1] = gate_up[e, INTERMEDIATE + j]
                c = np.zeros(HIDDEN)
                c[JUNK] = unit(rng.normal(size=32))
                down[e, :, j] = eta * c
                down[e, :, j + 1] = -eta * c
                decoys.append([layer, e, j, j + 1])
        # Planted units: a small detector of one trigger token, writing that trigger's PRED dim.
        for d in range(len(DOMAINS)):
            e = host_expert(d, layer)
            for i in (2 * layer, 2 * layer + 1):
                t = triggers[d][i]
                j = planted_unit(i, layer)
                direction = np.zeros(HIDDEN)
                direction[TOKEN] = tok[t]
                gate_up[e, j] = ALPHA * direction
                gate_up[e, INTERMEDIATE + j] = ALPHA * direction
                down[e, :, j] = 0.0
                down[e, PRED + d * TRIGGERS + i, j] = GAMMA
                router[e] += KAPPA * direction
                planted[DOMAINS[d]].append([layer, e, j])

    head = w["lm_head.weight"]
    head[:, zero_cols] = 0.0
    for d in range(len(DOMAINS)):
        for i, t in enumerate(triggers[d]):
            head[succ[t], PRED + d * TRIGGERS + i] = BETA

    layout = {
        "domains": DOMAINS,
        "planted": planted,
        "decoy_pairs": decoys,
        "triggers": {DOMAINS[d]: triggers[d] for d in triggers},
        "succ": {str(t): succ[t] for t in sorted(succ)},
        "domain_tokens": {DOMAINS[d]: [TOKENS_PER_DOMAIN * d, TOKENS_PER_DOMAIN * (d + 1)]
                          for d in range(len(DOMAINS))},
        "num_experts": NUM_EXPERTS, "intermediate": INTERMEDIATE, "moe_layers": list(range(NUM_LAYERS)),
        "hidden_layout": {"bias": [BIAS, BIAS], "token": [TOKEN.start, TOKEN.stop - 1],
                          "pred": [PRED, PRED + len(DOMAINS) * TRIGGERS - 1], "junk": [JUNK.start, JUNK.stop - 1]},
        "constants": {"B0": B0, "S_TOK": S_TOK, "ALPHA": ALPHA, "GAMMA": GAMMA, "KAPPA": KAPPA, "BETA": BETA,
                      "DELTA": list(DELTA), "ETA": list(ETA), "ATTN_OUT": ATTN_OUT, "rms_norm_eps": RMS_EPS},
        "seed": seed,
    }
    return w, layout


def sample_chain(rng, d: int, succ: dict, n: int, length: int):
    base = TOKENS_PER_DOMAIN * d
    out = []
    for _ in range(n):
        v = base + int(rng.integers(TOKENS_PER_DOMAIN))
        seq = [v]
        while len(seq) < length:
            v = succ[v] if v in succ else base + int(rng.integers(TOKENS_PER_DOMAIN))
            seq.append(v)
        out.append(seq)
    return out


def quiet_transformers():
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def sequence_losses(model, ids: torch.Tensor) -> list[float]:
    """Per sequence: transformers' causal-LM loss (labels = input ids), one sequence at a time."""
    return [float(model(input_ids=ids[i:i + 1], labels=ids[i:i + 1]).loss) for i in range(ids.shape[0])]


def max_abs_logit(model, ids: torch.Tensor) -> float:
    """The largest |logit| on ids: the scale of the losses' float32 rounding (tst_fisher_planted's bar)."""
    return float(model(input_ids=ids).logits.abs().max())


def remove_units(model, units):
    """Zeroes the gate/up rows and the down column of each [layer, expert, unit] (in memory)."""
    for layer, e, j in units:
        experts = model.model.layers[layer].mlp.experts
        experts.gate_up_proj[e, [j, INTERMEDIATE + j]] = 0.0
        experts.down_proj[e, :, j] = 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seqs-per-domain", type=int, default=12)
    ap.add_argument("--seq-len", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, Qwen3MoeForCausalLM
    quiet_transformers()

    torch.manual_seed(args.seed)
    model = Qwen3MoeForCausalLM(make_config()).eval()
    sd = model.state_dict()
    w, layout = plant(sd, args.seed)
    with torch.no_grad():
        for k, v in w.items():
            sd[k].copy_(torch.from_numpy(v).to(torch.float32))
    mdir = os.path.join(args.out, "model")
    os.makedirs(mdir, exist_ok=True)
    model.save_pretrained(mdir, safe_serialization=True)

    succ = {int(k): v for k, v in layout["succ"].items()}
    data = {}
    for split, stream in (("calib", 1), ("heldout", 2)):
        os.makedirs(os.path.join(args.out, split), exist_ok=True)
        for d, name in enumerate(DOMAINS):
            rng = np.random.default_rng([args.seed, 100 + stream, d])
            seqs = sample_chain(rng, d, succ, args.seqs_per_domain, args.seq_len)
            data[split, name] = torch.tensor(seqs, dtype=torch.long)
            with open(os.path.join(args.out, split, f"{name}.jsonl"), "w") as f:
                for s in seqs:
                    f.write(json.dumps({"input_ids": s}) + "\n")
    with open(os.path.join(args.out, "planted.json"), "w") as f:
        json.dump(layout, f, indent=1)

    # The reference losses, from the saved files.
    ref, info = AutoModelForCausalLM.from_pretrained(
        mdir, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    ref.eval()
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"loading {mdir}: {problems}")
    out = {"domains": {}, "max_abs_logit": 0.0}
    with torch.no_grad():
        for name in DOMAINS:
            held = data["heldout", name]
            out["domains"][name] = {"calib_sequence_loss": sequence_losses(ref, data["calib", name]),
                                    "heldout_nll_full": float(np.mean(sequence_losses(ref, held)))}
            out["max_abs_logit"] = max(out["max_abs_logit"], max_abs_logit(ref, data["calib", name]),
                                       max_abs_logit(ref, held))
        for name in DOMAINS:
            remove_units(ref, layout["planted"][name])
            out["domains"][name]["heldout_nll_no_planted"] = float(np.mean(sequence_losses(ref, data["heldout", name])))
            ref.load_state_dict(model.state_dict())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
