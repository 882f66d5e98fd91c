#!/usr/bin/env bash
# Masked evaluation of N plans: one `moeatlas eval` run holding all N variants (each layer read
# once, applied to N residual streams) vs the baseline of N runs with one variant each (each run
# streams the whole checkpoint), on the same random plans and tokens, in the same session.
#
#   bench/bench_eval.sh [build-dir] [plans] [tokens-per-domain-docs]
#
# Model: a generated qwen3_moe (8 layers, hidden 1024, 64 experts of width 512, ~1.7 GB fp32) under
# <build-dir>/bench-cache/, reused when present. Two domains of random ids, 128-token documents.
# Prints wall seconds of each and the ratio baseline / ours; docs/performance.md has the results.
set -euo pipefail
build=${1:-build}
plans=${2:-4}
docs=${3:-8}
cli="$build/app/moeatlas"
cache="$build/bench-cache/eval"
model="$cache/model-q3-8x1024-e64"
mkdir -p "$cache"
if [[ ! -f "$model/config.json" ]]; then
  "$cli" generate --arch qwen3_moe --layers 8 --hidden 1024 --heads 16 --kv-heads 4 --head-dim 64 \
    --experts 64 --top-k 8 --expert-width 512 --vocab 32000 --seed 3 -o "$model" >/dev/null
fi
for d in a b; do
  "$cli" generate --vocab 32000 --seed "$([[ $d == a ]] && echo 21 || echo 22)" --calibration "$cache/$d.jsonl" \
    --calibration-docs "$docs" --calibration-doc-tokens 128 >/dev/null
done
common=("$model" -d "a=$cache/a.jsonl" -d "b=$cache/b.jsonl" --seq-len 128 --sparsity 0.5 --no-specialists
  --no-generalist --no-full)

now() { date +%s.%N; }
t0=$(now)
"$cli" eval "${common[@]}" --random-plans "$plans" --seed 0 --csv "$cache/together.csv" >/dev/null 2>&1
t1=$(now)
: >"$cache/alone.csv"
for ((i = 0; i < plans; i++)); do
  "$cli" eval "${common[@]}" --random-plans 1 --seed "$i" --csv "$cache/alone-$i.csv" >/dev/null 2>&1
done
t2=$(now)

# The same plans give the same losses either way (random#0 with seed i is random#i with seed 0).
python3 - "$cache" "$plans" <<'EOF'
import csv, sys
cache, n = sys.argv[1], int(sys.argv[2])
together = {(r["variant"], r["domain"]): float(r["nll"]) for r in csv.DictReader(open(f"{cache}/together.csv"))}
worst = 0.0
for i in range(n):
    for r in csv.DictReader(open(f"{cache}/alone-{i}.csv")):
        key = (r["variant"].replace("random#0@", f"random#{i}@"), r["domain"])
        worst = max(worst, abs(together[key] - float(r["nll"])))
print(f"max |nll difference| between the two ways: {worst:.3g}")
EOF
awk -v a="$t0" -v b="$t1" -v c="$t2" -v n="$plans" -v docs="$docs" 'BEGIN {
  ours = b - a; base = c - b;
  printf "plans %d, tokens %d: one run with %d variants %.1f s; %d runs with one variant %.1f s; ratio %.2fx\n",
    n, 2 * docs * 128, n, ours, n, base, base / ours }'
