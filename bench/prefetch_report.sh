#!/usr/bin/env bash
# Expert prefetching figures for docs/performance.md: hit rates per predictor and lookahead, and simulated
# time per output token (A6000 + PCIe 4 preset) on demand vs prefetched vs speculated, on
#   1. the demo model (its calibration text; held-out split of the capture's own sequences), and
#   2. a Qwen3-30B-A3B-shaped routing trace: a random-weight qwen3_moe with that model's routing shape
#      (48 MoE layers, 128 experts, top-8) and a small width, captured on random tokens; the simulator
#      takes the real model's shapes from bench/configs/qwen3-30b-a3b.json.
# Usage: bash bench/prefetch_report.sh [OUT_DIR]   (after a build: cmake --build build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${MOEATLAS_CLI:-$root/build/app/moeatlas}
out=${1:-$root/out/prefetch-report}
demo=$root/resources/demo
mkdir -p "$out"
predictors=next-router,quasi-hidden,linear,mlp

simulate() { # $1 = atlas, $2 = cache slots, $3... = extra flags
  local atlas=$1 slots=$2
  shift 2
  for run in on-demand "prefetch next-router" "prefetch quasi-hidden" "prefetch mlp" "speculative quasi-hidden" \
    "speculative mlp"; do
    local policy=${run%% *} predictor=${run#* }
    [[ $predictor == "$run" ]] && predictor=next-router
    "$cli" simulate "$atlas" --preset a6000-pcie4 --cache-slots "$slots" --policy "$policy" \
      --predictor "$predictor" "$@" --csv "$out/sim-$(basename "$atlas" .atlas.h5)-$policy-$predictor.csv" \
      | sed "s/^/[$policy $predictor] /"
  done
}

echo "== demo model: capture with --prefetch $predictors"
domains=()
for d in arith code json prose; do domains+=(-d "$d=$demo/calibration/$d.txt:32"); done
"$cli" capture "$demo/model" "${domains[@]}" --seq-len 128 --add-bos --seed 1 --force \
  --prefetch "$predictors" -o "$out/demo.atlas.h5"
"$cli" prefetch "$out/demo.atlas.h5" --csv "$out/demo-hits.csv"
simulate "$out/demo.atlas.h5" 8

echo "== Qwen3-30B-A3B-shaped trace"
"$cli" generate --arch qwen3_moe --layers 48 --experts 128 --top-k 8 --hidden 256 --heads 4 --kv-heads 2 \
  --head-dim 64 --expert-width 64 --vocab 4096 --seed 7 --force -o "$out/qwen3-shaped" \
  --calibration "$out/qwen3-shaped.jsonl" --calibration-docs 64 --calibration-doc-tokens 256
"$cli" capture "$out/qwen3-shaped" -d random="$out/qwen3-shaped.jsonl" --seq-len 256 --seed 1 --force \
  --prefetch "$predictors" -o "$out/qwen3-shaped.atlas.h5"
"$cli" prefetch "$out/qwen3-shaped.atlas.h5" --csv "$out/qwen3-shaped-hits.csv"
simulate "$out/qwen3-shaped.atlas.h5" 32 --config "$root/bench/configs/qwen3-30b-a3b.json"
