#!/usr/bin/env python3
"""Text calibration fixture for tst_capture_text: a small byte-level BPE tokenizer and four text
domains, one per text format, plus the equivalent input_ids JSONL made by HF `tokenizers`.

usage: make_text_fixture.py --checkpoint DIR --out DIR

Writes
  CHECKPOINT/tokenizer.json, CHECKPOINT/tokenizer_config.json (bos_token "<s>" = id 1, as the tiny
      models' config says), trained on the corpus below with the `tokenizers` BpeTrainer. The alphabet
      is the corpus' own bytes (not all 256) so that the vocabulary fits the models' 256 ids.
  OUT/prose.txt          plain text, paragraphs separated by blank (some whitespace-only) lines
  OUT/code/NN.txt        a directory, one snippet per file (snippets hold blank lines)
  OUT/notes.jsonl        JSONL with the text in field "body" (--text-field body)
  OUT/chat.jsonl         JSONL with "messages"
  OUT/<domain>.ids.jsonl {"input_ids": encode(doc, add_special_tokens=False).ids} per document, in the
                         order moeatlas reads them (docs/calibration.md), i.e. the same calibration
                         as input_ids
  OUT/fixture.json       domains, vocab size, bos id
Every document is rendered here by the rules of docs/calibration.md (blocks, whole files, the field,
"<role>: <content>" lines joined by "\\n"), independently of the C++ readers.
"""

import argparse
import json
import os
import random
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIALS = ["<pad>", "<s>", "</s>"]
MODEL_VOCAB = 256

NOUNS = ["river", "archive", "lantern", "harbour", "garden", "signal", "engine", "meadow", "ledger", "tower",
         "café", "naïve reader", "fjord"]
VERBS = ["carries", "remembers", "follows", "measures", "outlasts", "shelters", "describes", "echoes"]
ADJS = ["quiet", "distant", "patient", "bright", "narrow", "ancient", "restless", "gentle"]
IDENTS = ["count", "total", "items", "index", "value", "buffer", "result", "offset", "limit", "name"]


def prose_paragraphs(rng):
    out = []
    for _ in range(14):
        sentences = []
        for _ in range(rng.randint(3, 6)):
            sentences.append(f"The {rng.choice(ADJS)} {rng.choice(NOUNS)} {rng.choice(VERBS)} "
                             f"the {rng.choice(ADJS)} {rng.choice(NOUNS)} — {rng.randint(2, 99)} times.")
        # Some paragraphs span several lines: a block keeps its inner line breaks.
        lines, line = [], []
        for s in sentences:
            line.append(s)
            if rng.random() < 0.4:
                lines.append(" ".join(line))
                line = []
        if line:
            lines.append(" ".join(line))
        out.append("\n".join(lines))
    return out


def code_snippets(rng):
    out = []
    for i in range(12):
        a, b, c = rng.sample(IDENTS, 3)
        body = [f"def step_{i}({a}, {b}):",
                f"    {c} = {a} + {b} * {rng.randint(2, 9)}",
                "",   # a blank line inside one document: whole files are not split
                f"    for k in range({rng.randint(3, 12)}):",
                f"        {c} = ({c} << 1) ^ k  # mix",
                f"    return {{'{a}': {c}, '{b}': [{a}, {b}]}}",
                ""]
        out.append("\n".join(body))
    return out


def notes(rng):
    return [f"Note {i}: keep the {rng.choice(ADJS)} {rng.choice(NOUNS)} near the {rng.choice(NOUNS)}.\n"
            f"Check {rng.choice(IDENTS)} = {rng.randint(0, 500)} before leaving." for i in range(12)]


def conversations(rng):
    out = []
    for _ in range(10):
        messages = [{"role": "system", "content": "You answer briefly."}]
        for _ in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": f"Where is the {rng.choice(ADJS)} {rng.choice(NOUNS)}?"})
            messages.append({"role": "assistant",
                             "content": f"Beside the {rng.choice(NOUNS)}.\nIt {rng.choice(VERBS)} the {rng.choice(NOUNS)}."})
        out.append(messages)
    return out


def render_messages(messages):
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # The post-processor adds <s>: moeatlas must NOT apply it (BOS comes from --add-bos / --bos).
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    trainer = trainers.BpeTrainer(vocab_size=240, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id("<s>") == 1, tok.token_to_id("<s>")
    assert tok.get_vocab_size() <= MODEL_VOCAB, tok.get_vocab_size()
    return tok


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)

    prose = prose_paragraphs(rng)
    code = code_snippets(rng)
    note_texts = notes(rng)
    chats = conversations(rng)
    chat_texts = [render_messages(m) for m in chats]

    # prose.txt: blocks separated by one or more blank lines, some holding spaces or tabs.
    separators = ["\n\n", "\n\n\n", "\n  \n", "\n\t\n\n"]
    with open(os.path.join(args.out, "prose.txt"), "w", encoding="utf-8") as f:
        f.write("\n" + "".join(p + rng.choice(separators) for p in prose))
    code_dir = os.path.join(args.out, "code")
    os.makedirs(code_dir, exist_ok=True)
    for i, snippet in enumerate(code):
        with open(os.path.join(code_dir, f"{i:02d}.txt"), "w", encoding="utf-8") as f:
            f.write(snippet)
    with open(os.path.join(code_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write("not a .txt file: not read\n")
    write_jsonl(os.path.join(args.out, "notes.jsonl"), [{"id": i, "body": t} for i, t in enumerate(note_texts)])
    write_jsonl(os.path.join(args.out, "chat.jsonl"), [{"messages": m} for m in chats])

    tok = train_tokenizer(prose + code + note_texts + chat_texts)
    tok.save(os.path.join(args.checkpoint, "tokenizer.json"))
    with open(os.path.join(args.checkpoint, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "PreTrainedTokenizerFast"}, f)

    # Reader order: blocks in file order, .txt files in name order, JSONL lines in order.
    domains = {"prose": prose, "code": code, "notes": note_texts, "chat": chat_texts}
    for name, docs in domains.items():
        ids = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        assert all(0 <= i < MODEL_VOCAB and i not in (0, 1, 2) for doc in ids for i in doc), name
        write_jsonl(os.path.join(args.out, f"{name}.ids.jsonl"), [{"input_ids": x} for x in ids])
    with open(os.path.join(args.out, "fixture.json"), "w") as f:
        json.dump({"domains": list(domains), "vocab_size": tok.get_vocab_size(), "bos_id": 1,
                   "documents": {k: len(v) for k, v in domains.items()}}, f, indent=1)
    print(json.dumps({"vocab_size": tok.get_vocab_size(), "documents": {k: len(v) for k, v in domains.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
