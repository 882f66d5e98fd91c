"""transformers on the committed demo model (tests/train/tst_demo_model).

usage: check_demo_model.py MODEL_DIR HELDOUT_DIR OUT.safetensors
Loads MODEL_DIR with MixtralForCausalLM (float32, eager attention and experts), fails on any missing,
unexpected or mismatched key, packs the first held-out documents of each domain as capture does
without shuffling (BOS before each document, 4 x 128 tokens per domain), and saves input_ids [B, S]
and logits [B, S, V] (float32) plus the mean next-token loss per domain (printed as JSON).
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, heldout_dir, out = sys.argv[1:4]
model, info = AutoModelForCausalLM.from_pretrained(
    model_dir, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
    output_loading_info=True)
problems = {k: v for k, v in info.items() if v}
assert not problems, f"loading {model_dir}: {problems}"
assert type(model).__name__ == "MixtralForCausalLM", type(model).__name__
model.eval()
tok = AutoTokenizer.from_pretrained(model_dir)
S, per_domain = 128, 4
rows, losses = [], {}
for domain in ("arith", "code", "json", "prose"):
    text = open(f"{heldout_dir}/{domain}.txt", encoding="utf-8").read()
    docs = [d for d in text.split("\n\n") if d.strip()]
    stream = []
    for d in docs:
        stream += [tok.bos_token_id] + tok(d.strip("\n"), add_special_tokens=False)["input_ids"]
        if len(stream) >= S * per_domain:
            break
    ids = torch.tensor(stream[: S * per_domain]).view(per_domain, S)
    with torch.inference_mode():
        res = model(ids, labels=ids)
    losses[domain] = float(res.loss)
    rows.append(ids)
ids = torch.cat(rows)
with torch.inference_mode():
    logits = model(ids).logits.float()
save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()}, out)
print(json.dumps({"loss": losses, "params": sum(p.numel() for p in model.parameters())}))
