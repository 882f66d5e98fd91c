"""HF tokenizers vs our ids on the BPE trainer's tokenizer.json (tests/train/tst_bpe_trainer).

usage: bpe_parity.py TOKENIZER_DIR CASES_JSON
CASES_JSON: [{"text": str, "ids": [int]}] with the ids our Tokenizer gives (no special-token template).
Fails unless every case has identical ids and decodes back to its text; prints the counts.
"""
import json
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

tok_dir, cases_path = sys.argv[1], sys.argv[2]
tok = Tokenizer.from_file(f"{tok_dir}/tokenizer.json")
auto = AutoTokenizer.from_pretrained(tok_dir)
cases = json.load(open(cases_path))
bad = 0
tokens = 0
for i, case in enumerate(cases):
    ids = tok.encode(case["text"], add_special_tokens=False).ids
    tokens += len(ids)
    if ids != case["ids"]:
        bad += 1
        if bad <= 3:
            print(f"case {i}: ids differ\n ours {case['ids'][:40]}\n hf   {ids[:40]}", file=sys.stderr)
    if tok.decode(ids, skip_special_tokens=False) != case["text"]:
        bad += 1
        print(f"case {i}: decode does not round-trip", file=sys.stderr)
    if auto(case["text"], add_special_tokens=False)["input_ids"] != ids:
        bad += 1
        print(f"case {i}: AutoTokenizer differs from tokenizers", file=sys.stderr)
assert auto.bos_token == "<|bos|>" and auto.eos_token == "<|eos|>", (auto.bos_token, auto.eos_token)
print(f"{len(cases)} documents, {tokens} tokens: {len(cases) * 3 - bad}/{len(cases) * 3} checks identical")
sys.exit(1 if bad else 0)
