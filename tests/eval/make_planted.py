#!/usr/bin/env python3
"""Generate a tiny Mixtral checkpoint whose experts are PLANTED to serve different domains.

Usage:
  make_planted.py --out DIR [--seed 0] [--seqs-per-domain 24] [--seq-len 64]
                  [--heldout-seqs-per-domain 16] [--check]

Writes
  DIR/model/                 MixtralForCausalLM.save_pretrained(..., safe_serialization=True), float32
  DIR/calib/<domain>.jsonl   one {"input_ids": [...]} per line, --seqs-per-domain sequences of --seq-len
  DIR/heldout/<domain>.jsonl the same from a different RNG stream, --heldout-seqs-per-domain sequences
  DIR/planted.json           the layout (domains, crucial experts, fillers, hard tokens, succ, constants)

The model reproduces the PreMoE (arXiv 2505.17639) picture of why frequency-based pruning fails:
"frequent but weak" FILLER experts sit in the top-k of ~20-25% of every domain's tokens but contribute
nothing, while "rare specialist" CRUCIAL experts are picked for only ~10% of a domain's tokens, always as
the confident top-1, and carry the only useful prediction. See README.planted.md.

Construction (H = 192, V = 64, E = 16, top-2, 2 MoE layers, I = 16 units per expert)
  hidden dims 0..63 = token one-hot e_v, dims 64..127 = "prediction" one-hot e_{pred(u)} = e_{64+u},
  dims 128..191 = "relay" one-hot e_{relay(v)} = e_{128+v} (layer 0 -> layer 1)
  domain d owns tokens 16d..16d+15; local 0..3 are HARD, 4..15 EASY
  chain: after hard v comes succ(v) (a fixed easy token of the domain), after an easy token any of
         the 16 domain tokens (uniform); so P(hard) = 0.2, each hard token 0.05
  embedding(v) = e_v; attention q/k/v random small (4 heads / 2 KV heads, head_dim 32), o_proj = 0;
         every RMSNorm weight = 1
  crucial experts of domain d = [2d, 2d+9] in both layers (alpha 0,9  beta 2,11  gamma 4,13  delta 6,15);
         the first serves hard local 0,1, the second hard local 2,3; for each served hard v one unit,
         and the two layers form a CHAIN:
           layer 0: gate row = A * e_v,          up row = e_v,          down column = C * e_{relay(v)}
           layer 1: gate row = A1 * e_{relay(v)}, up row = e_{relay(v)}, down column = C1 * e_{pred(succ(v))}
         all other units 0. succ(v) is predicted only if v's crucial expert runs in BOTH layers; dropping
         it in either layer gives NLL log 64 after v (a random 50% plan keeps it with p ~0.25)
  fillers = the other 8 experts: random small gate/up, down_proj = 0 (they add exactly nothing)
  router (identical in both layers) reads token dims only: W[j, v] = logit_j(v) / sqrt(H), since the
         router input is RMSNorm(e_v) = sqrt(H) e_v in layer 0
         hard v: own crucial HIGH, one filler MID, rest LOW
         easy v: two fillers MID + GAP/2 and MID - GAP/2, rest LOW
         layer 1 sees e_v + m1 e_relay after a hard token (m1 = p * C * silu(A sqrt(H)) sqrt(H) ~ 0.98),
         so its router logits there are scaled by 1/sqrt(1 + m1^2) (~0.71): HIGH/MID become ~5.7/2.9,
         still a confident top-1 (p ~0.945); easy tokens are the same in both layers (p 0.55)
  layer 1 reads the relay at x = sqrt(H) m1 / sqrt(1 + m1^2) ~ 9.7 and writes m2 = p * C1 * silu(A1 x) x ~ 1.39
  lm_head row u = BETA * e_{pred(u)} (prediction dims only): after a hard token the final logit of
         succ(v) is BETA sqrt(H) m2 / sqrt(1 + m1^2 + m2^2) ~ 19.5 and all other logits are 0
         (NLL ~1e-7); without the crucial expert in either layer every logit is 0 (NLL = log 64)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

_T0 = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402

DOMAINS = ["alpha", "beta", "gamma", "delta"]
VOCAB = 64
HIDDEN = 192
PRED = VOCAB        # dims 64..127: prediction one-hot e_{PRED+u}
RELAY = 2 * VOCAB   # dims 128..191: relay one-hot e_{RELAY+v} (layer 0 -> layer 1)
NUM_EXPERTS = 16
TOP_K = 2
NUM_LAYERS = 2
INTERMEDIATE = 16
TOKENS_PER_DOMAIN = 16
NUM_HARD = 4
RMS_EPS = 1e-6

# Router logits (as seen in layer 0) and expert / head scales.
HIGH = 8.0      # hard token -> its crucial expert (top-1)
MID = 4.0       # hard token -> its filler (2nd); easy token -> centre of its two fillers
GAP = 0.2       # easy token: logit gap between its two fillers (local top-1 p = sigmoid(0.2) = 0.55)
LOW = 0.0       # every other expert
A = 1.0         # layer-0 crucial gate row scale (reads the token dim e_v)
C = 1.0 / 192   # layer-0 crucial down column scale, writes the relay: m1 = p * C * silu(A*sqrt(H)) * sqrt(H) ~ 0.98
A1 = 1.0        # layer-1 crucial gate row scale (reads the relay dim e_{RELAY+v})
C1 = 1.0 / 64   # layer-1 crucial down column scale, writes the prediction: m2 = p * C1 * silu(A1*x) * x ~ 1.39,
                # x = sqrt(H) m1 / sqrt(1 + m1^2) ~ 9.7 is the relay coordinate after layer 1's RMSNorm
BETA = 2.0      # lm_head scale
INIT_STD = 0.02  # random attention q/k/v and filler gate/up


def crucial_layout():
    """domain index -> [expert serving hard local 0,1, expert serving hard local 2,3]."""
    return {d: [2 * d, 2 * d + 9] for d in range(len(DOMAINS))}


def plant(seed: int):
    """Returns (layout dict, numpy weights dict keyed by logical name)."""
    rng = np.random.default_rng([seed, 0])
    crucial = crucial_layout()
    crucial_set = {e for es in crucial.values() for e in es}
    fillers = [e for e in range(NUM_EXPERTS) if e not in crucial_set]
    hard, easy, succ = {}, {}, {}
    for d in range(len(DOMAINS)):
        base = TOKENS_PER_DOMAIN * d
        hard[d] = [base + i for i in range(NUM_HARD)]
        easy[d] = [base + i for i in range(NUM_HARD, TOKENS_PER_DOMAIN)]
        targets = rng.choice(easy[d], size=NUM_HARD, replace=False)
        for v, t in zip(hard[d], targets):
            succ[v] = int(t)

    # Router logits per token (layer-0 view): logits[v, j].
    logits = np.full((VOCAB, NUM_EXPERTS), LOW)
    filler_of_hard, fillers_of_easy = {}, {}
    for d in range(len(DOMAINS)):
        # Stationary mass of each domain token in units of 1/20 (hard 1, easy 1 + #hard predecessors).
        mass = {v: 1 for v in hard[d]}
        mass.update({u: 1 + sum(succ[v] == u for v in hard[d]) for u in easy[d]})
        # Greedy balanced assignment of filler slots (heaviest tokens first); rotate per domain.
        load = {f: 0 for f in fillers}
        rot = fillers[2 * d:] + fillers[:2 * d]
        items = sorted(hard[d] + easy[d], key=lambda v: (-mass[v], v))
        for v in items:
            need = 1 if v in hard[d] else 2
            chosen = sorted(rot, key=lambda f: (load[f], rot.index(f)))[:need]
            for f in chosen:
                load[f] += mass[v]
            if need == 1:
                filler_of_hard[v] = chosen[0]
            else:
                fillers_of_easy[v] = chosen
        for i, v in enumerate(hard[d]):
            logits[v, crucial[d][i // 2]] = HIGH
            logits[v, filler_of_hard[v]] = MID
        for u in easy[d]:
            f1, f2 = fillers_of_easy[u]
            logits[u, f1] = MID + GAP / 2
            logits[u, f2] = MID - GAP / 2

    w = {}
    emb = np.zeros((VOCAB, HIDDEN))
    emb[np.arange(VOCAB), np.arange(VOCAB)] = 1.0
    w["embed"] = emb
    head = np.zeros((VOCAB, HIDDEN))
    head[np.arange(VOCAB), PRED + np.arange(VOCAB)] = BETA
    w["lm_head"] = head
    router = np.zeros((NUM_EXPERTS, HIDDEN))
    router[:, :VOCAB] = logits.T / math.sqrt(HIDDEN)
    w["router"] = router
    # Crucial units form a chain: layer 0 (token dim e_v -> relay e_{RELAY+v}), layer 1 (relay -> prediction).
    chain = [(lambda v: v, A, lambda v: RELAY + v, C), (lambda v: RELAY + v, A1, lambda v: PRED + succ[v], C1)]
    per_layer = []
    for layer in range(NUM_LAYERS):
        gate = np.zeros((NUM_EXPERTS, INTERMEDIATE, HIDDEN))
        up = np.zeros((NUM_EXPERTS, INTERMEDIATE, HIDDEN))
        down = np.zeros((NUM_EXPERTS, HIDDEN, INTERMEDIATE))
        src, a, dst, c = chain[layer]
        for d in range(len(DOMAINS)):
            for i, v in enumerate(hard[d]):
                e, unit = crucial[d][i // 2], i % 2
                gate[e, unit, src(v)] = a
                up[e, unit, src(v)] = 1.0
                down[e, dst(v), unit] = c
        lr = np.random.default_rng([seed, 1, layer])
        g, u = gate, up  # fillers: random gate/up, down stays 0
        for f in fillers:
            g[f] = lr.normal(0, INIT_STD, (INTERMEDIATE, HIDDEN))
            u[f] = lr.normal(0, INIT_STD, (INTERMEDIATE, HIDDEN))
        per_layer.append({
            "q": lr.normal(0, INIT_STD, (4 * 32, HIDDEN)),
            "k": lr.normal(0, INIT_STD, (2 * 32, HIDDEN)),
            "v": lr.normal(0, INIT_STD, (2 * 32, HIDDEN)),
            "o": np.zeros((HIDDEN, 4 * 32)),
            "gate": g, "up": u, "down": down,
        })
    w["layers"] = per_layer

    layout = {
        "domains": DOMAINS,
        "crucial": {DOMAINS[d]: crucial[d] for d in crucial},
        "fillers": fillers,
        "hard_tokens": {DOMAINS[d]: hard[d] for d in hard},
        "succ": {str(v): succ[v] for v in sorted(succ)},
        "num_experts": NUM_EXPERTS,
        "top_k": TOP_K,
        "moe_layers": list(range(NUM_LAYERS)),
        "domain_tokens": {DOMAINS[d]: [TOKENS_PER_DOMAIN * d + i for i in range(TOKENS_PER_DOMAIN)]
                          for d in range(len(DOMAINS))},
        "crucial_serves": {str(crucial[d][i // 2]): [] for d in range(len(DOMAINS)) for i in range(NUM_HARD)},
        "router_logits_layer0": {"hard": {str(v): {"crucial": crucial[d][i // 2], "filler": filler_of_hard[v]}
                                          for d in range(len(DOMAINS)) for i, v in enumerate(hard[d])},
                                 "easy": {str(u): fillers_of_easy[u] for u in sorted(fillers_of_easy)}},
        "hidden_size": HIDDEN,
        "hidden_layout": {"token": [0, VOCAB - 1], "prediction": [PRED, PRED + VOCAB - 1],
                          "relay": [RELAY, RELAY + VOCAB - 1]},
        "relay": "layer 0's crucial unit for hard v reads e_v and writes C * e_{128+v} (relay of v); layer 1's "
                 "unit for v reads e_{128+v} and writes C1 * e_{64+succ(v)}; lm_head reads the prediction dims "
                 "only, so succ(v) is predicted only if v's crucial expert is kept in BOTH layers",
        "constants": {"HIGH": HIGH, "MID": MID, "GAP": GAP, "LOW": LOW, "A": A, "C": C, "A1": A1, "C1": C1,
                      "BETA": BETA, "rms_norm_eps": RMS_EPS, "init_std": INIT_STD},
        "seed": seed,
    }
    for d in range(len(DOMAINS)):
        for i, v in enumerate(hard[d]):
            layout["crucial_serves"][str(crucial[d][i // 2])].append(v)
    return layout, w


def sample_chain(rng, d: int, hard_succ: dict, n: int, length: int):
    base = TOKENS_PER_DOMAIN * d
    out = []
    for _ in range(n):
        v = base + int(rng.integers(TOKENS_PER_DOMAIN))
        seq = [v]
        while len(seq) < length:
            v = hard_succ[v] if v in hard_succ else base + int(rng.integers(TOKENS_PER_DOMAIN))
            seq.append(v)
        out.append(seq)
    return out


def make_config():
    from transformers import MixtralConfig
    return MixtralConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        num_local_experts=NUM_EXPERTS, num_experts_per_tok=TOP_K, max_position_embeddings=512,
        rms_norm_eps=RMS_EPS, tie_word_embeddings=False, router_jitter_noise=0.0,
        hidden_act="silu", sliding_window=None)


def expected_state(w):
    """In-memory (transformers 5.x, fused experts) state dict the planted weights should give."""
    t = lambda a: torch.tensor(a, dtype=torch.float32)
    sd = {"model.embed_tokens.weight": t(w["embed"]), "lm_head.weight": t(w["lm_head"]),
          "model.norm.weight": torch.ones(HIDDEN)}
    for i, lw in enumerate(w["layers"]):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = t(lw["q"])
        sd[p + "self_attn.k_proj.weight"] = t(lw["k"])
        sd[p + "self_attn.v_proj.weight"] = t(lw["v"])
        sd[p + "self_attn.o_proj.weight"] = t(lw["o"])
        sd[p + "mlp.gate.weight"] = t(w["router"])
        sd[p + "mlp.experts.gate_up_proj"] = t(np.concatenate([lw["gate"], lw["up"]], axis=1))
        sd[p + "mlp.experts.down_proj"] = t(lw["down"])
        sd[p + "input_layernorm.weight"] = torch.ones(HIDDEN)
        sd[p + "post_attention_layernorm.weight"] = torch.ones(HIDDEN)
    return sd


def quiet_transformers():
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def write(args):
    from transformers import MixtralForCausalLM
    quiet_transformers()
    layout, w = plant(args.seed)
    torch.manual_seed(args.seed)
    model = MixtralForCausalLM(make_config()).eval()
    want = expected_state(w)
    sd = model.state_dict()
    if set(sd) != set(want):
        raise SystemExit(f"unexpected in-memory parameter names: {sorted(set(sd) ^ set(want))}")
    with torch.no_grad():
        for k, v in want.items():
            if sd[k].shape != v.shape:
                raise SystemExit(f"{k}: shape {tuple(sd[k].shape)} != planted {tuple(v.shape)}")
            sd[k].copy_(v)
    mdir = os.path.join(args.out, "model")
    os.makedirs(mdir, exist_ok=True)
    model.save_pretrained(mdir, safe_serialization=True)
    verify_saved(mdir, w)

    hard_succ = {int(k): v for k, v in layout["succ"].items()}
    for split, n, stream in (("calib", args.seqs_per_domain, 1), ("heldout", args.heldout_seqs_per_domain, 2)):
        os.makedirs(os.path.join(args.out, split), exist_ok=True)
        for d, name in enumerate(DOMAINS):
            rng = np.random.default_rng([args.seed, 100 + stream, d])
            seqs = sample_chain(rng, d, hard_succ, n, args.seq_len)
            with open(os.path.join(args.out, split, f"{name}.jsonl"), "w") as f:
                for s in seqs:
                    f.write(json.dumps({"input_ids": s}) + "\n")
    with open(os.path.join(args.out, "planted.json"), "w") as f:
        json.dump(layout, f, indent=1)
    return layout, w


def verify_saved(mdir, w):
    """The files hold the classic per-expert layout; check the router and the experts are as planted."""
    from safetensors import safe_open
    files = sorted(f for f in os.listdir(mdir) if f.endswith(".safetensors"))
    tensors = {}
    for fn in files:
        with safe_open(os.path.join(mdir, fn), "pt") as f:
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    t = lambda a: torch.tensor(a, dtype=torch.float32)
    for i, lw in enumerate(w["layers"]):
        p = f"model.layers.{i}.block_sparse_moe."
        checks = [(p + "gate.weight", w["router"])]
        for j in range(NUM_EXPERTS):
            checks += [(p + f"experts.{j}.w1.weight", lw["gate"][j]), (p + f"experts.{j}.w3.weight", lw["up"][j]),
                       (p + f"experts.{j}.w2.weight", lw["down"][j])]
        for k, a in checks:
            if k not in tensors:
                raise SystemExit(f"saved checkpoint lacks {k}; has e.g. {sorted(tensors)[:8]}")
            if tensors[k].dtype != torch.float32 or not torch.equal(tensors[k], t(a)):
                raise SystemExit(f"saved {k} differs from the planted tensor")


class RouterMask:
    """Adds 0 / -inf to the router logits (before its softmax) of every layer, or of `layers` only, by wrapping
    the F.linear call the router makes, so the top-k and its renormalisation run over the unmasked experts only."""

    def __init__(self, model, masked, layers=None):
        self.model, self.masked = model, list(masked)
        self.layers = None if layers is None else set(layers)

    def __enter__(self):
        self.saved = []
        mask = torch.zeros(NUM_EXPERTS)
        mask[self.masked] = float("-inf")
        for li, layer in enumerate(self.model.model.layers):
            if self.layers is not None and li not in self.layers:
                continue
            router = layer.mlp.gate
            orig = router.forward

            def forward(hidden, _orig=orig, _mask=mask):
                real = torch.nn.functional.linear

                def masked_linear(x, weight, bias=None):
                    return real(x, weight, bias) + _mask.to(x.dtype)

                torch.nn.functional.linear = masked_linear
                try:
                    return _orig(hidden)
                finally:
                    torch.nn.functional.linear = real

            router.forward = forward
            self.saved.append((router, orig))
        return self

    def __exit__(self, *exc):
        for router, orig in self.saved:
            router.forward = orig
        return False


def read_jsonl(path):
    with open(path) as f:
        return torch.tensor([json.loads(line)["input_ids"] for line in f if line.strip()], dtype=torch.long)


def mean_nll(model, ids):
    logits = model(input_ids=ids).logits[:, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)))


def freq_and_peu(s: np.ndarray, k: int = TOP_K):
    """s: [T, E] raw router logits of one domain's tokens. Frequency = share of tokens whose top-k holds
    the expert; PEU (PreMoE): pool = top-k by raw logit (ties to the lower id), local softmax p,
    r = mean top-1 p, expert gets max(s, sigmoid(s)) where in the pool and p >= r, mean over tokens."""
    T, E = s.shape
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    ps = np.take_along_axis(s, order, axis=1)
    local = np.exp(ps - ps[:, :1])
    p = local / local.sum(axis=1, keepdims=True)
    r = float(p[:, 0].mean())
    f = np.maximum(ps, 1.0 / (1.0 + np.exp(-ps))) * (p >= r)
    peu, freq = np.zeros(E), np.zeros(E)
    np.add.at(peu, order, f)
    np.add.at(freq, order, 1.0)
    return freq / T, peu / T, r


def check(args, layout, w):
    from transformers import AutoModelForCausalLM
    quiet_transformers()
    mdir = os.path.join(args.out, "model")
    model, info = AutoModelForCausalLM.from_pretrained(
        mdir, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    model.eval()
    failures = []
    problems = {k: v for k, v in info.items() if v}
    if problems:
        failures.append(f"loading: {problems}")
    sd = model.state_dict()
    for k, v in expected_state(w).items():
        if k not in sd or not torch.equal(sd[k], v):
            failures.append(f"reloaded {k} differs from the planted tensor")

    fillers = layout["fillers"]
    # The largest |logit| of the full model on the held-out sets: the scale of the losses' float32 rounding,
    # to which tst_eval_planted relates its bar (our engine vs these losses, sums in other orders).
    res = {"domains": {}, "max_abs_logit": 0.0}
    worst = {"min_crucial_drop": math.inf, "min_crucial_drop_l0": math.inf, "min_crucial_drop_l1": math.inf,
             "max_filler_delta": 0.0, "min_freq_margin": math.inf, "min_peu_margin": math.inf}
    with torch.inference_mode():
        for name in DOMAINS:
            crucial = layout["crucial"][name]
            held = read_jsonl(os.path.join(args.out, "heldout", f"{name}.jsonl"))
            full = mean_nll(model, held)
            res["max_abs_logit"] = max(res["max_abs_logit"], float(model(input_ids=held).logits.abs().max()))
            with RouterMask(model, crucial):
                no_crucial = mean_nll(model, held)
            no_crucial_l = []
            for li in range(NUM_LAYERS):
                with RouterMask(model, crucial, layers=[li]):
                    no_crucial_l.append(mean_nll(model, held))
            with RouterMask(model, fillers):
                no_fillers = mean_nll(model, held)
            dr = {"nll_full": full, "nll_no_crucial": no_crucial, "nll_no_crucial_l0": no_crucial_l[0],
                  "nll_no_crucial_l1": no_crucial_l[1], "nll_no_fillers": no_fillers,
                  "crucial_drop": no_crucial - full, "crucial_drop_l0": no_crucial_l[0] - full,
                  "crucial_drop_l1": no_crucial_l[1] - full, "filler_delta": no_fillers - full, "layers": []}
            worst["min_crucial_drop"] = min(worst["min_crucial_drop"], no_crucial - full)
            worst["max_filler_delta"] = max(worst["max_filler_delta"], abs(no_fillers - full))
            if not no_crucial - full >= 0.5:
                failures.append(f"{name}: masking the crucial experts costs only {no_crucial - full:.4f} nats")
            for li in range(NUM_LAYERS):
                drop = no_crucial_l[li] - full
                worst[f"min_crucial_drop_l{li}"] = min(worst[f"min_crucial_drop_l{li}"], drop)
                if not drop >= 0.5:
                    failures.append(f"{name}: masking the crucial experts in layer {li} only costs {drop:.4f} nats")
            if not abs(no_fillers - full) <= 0.01:
                failures.append(f"{name}: masking the fillers changes the loss by {no_fillers - full:.4f} nats")

            calib = read_jsonl(os.path.join(args.out, "calib", f"{name}.jsonl"))
            out = model(input_ids=calib, output_router_logits=True)
            for li, rl in enumerate(out.router_logits):
                s = rl.float().reshape(-1, NUM_EXPERTS).numpy().astype(np.float64)
                freq, peu, r = freq_and_peu(s)
                fm = float(freq[fillers].min() - freq[crucial].max())
                pm = float(peu[crucial].min() - peu[fillers].max())
                worst["min_freq_margin"] = min(worst["min_freq_margin"], fm)
                worst["min_peu_margin"] = min(worst["min_peu_margin"], pm)
                if not fm > 0:
                    failures.append(f"{name} layer {li}: frequency margin fillers - crucial = {fm:.4f}")
                if not pm > 0:
                    failures.append(f"{name} layer {li}: PEU margin crucial - fillers = {pm:.4f}")
                dr["layers"].append({
                    "layer": li, "r": round(r, 4), "freq_margin": round(fm, 4), "peu_margin": round(pm, 4),
                    "freq_crucial": [round(float(freq[e]), 4) for e in crucial],
                    "freq_fillers_min": round(float(freq[fillers].min()), 4),
                    "peu_crucial": [round(float(peu[e]), 4) for e in crucial],
                    "peu_fillers_max": round(float(peu[fillers].max()), 4),
                    "freq": [round(float(x), 4) for x in freq], "peu": [round(float(x), 4) for x in peu]})
            res["domains"][name] = dr
    res.update(worst)
    res["ok"] = not failures
    res["failures"] = failures
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seqs-per-domain", type=int, default=24)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--heldout-seqs-per-domain", type=int, default=16)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    layout, w = write(args)
    if not args.check:
        return 0
    res = check(args, layout, w)
    res["seconds"] = round(time.time() - _T0, 2)  # imports included
    print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
