#!/bin/sh
# Regenerates the embedded demo (resources/demo) from scratch with the moeatlas CLI:
#   demo-data (corpus + BPE tokenizer) -> train -> capture -> score -> eval.
# Usage: resources/demo/make_demo.sh [path/to/moeatlas]   (default: build/app/moeatlas)
# Takes about 4 minutes on 2 CPU cores; training runs on 1 thread so the weights are reproducible
# bit for bit on the same machine and LibTorch build (docs/demo-model.md).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
moeatlas=${1:-build/app/moeatlas}
seed=${SEED:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
demo=resources/demo

"$moeatlas" demo-data -o "$work/data" --seed "$seed"
"$moeatlas" train --data "$work/data" -o "$work/model" --seed "$seed" --threads 1 --steps 500 \
    --report "$work/train-report.json"

rm -rf "$demo/model" "$demo/calibration" "$demo/heldout"
mkdir -p "$demo/calibration" "$demo/heldout"
cp -r "$work/model" "$demo/model"
cp "$work/train-report.json" "$demo/train-report.json"
for d in arith code json prose; do
    cp "$work/data/calibration/$d.txt" "$demo/calibration/$d.txt"
    cp "$work/data/heldout/$d.txt" "$demo/heldout/$d.txt"
done

domains() { # $1 = calibration | heldout: 32 packed sequences of 128 tokens per domain
    for d in arith code json prose; do printf ' -d %s=%s/%s/%s.txt:32' "$d" "$demo" "$1" "$d"; done
}
# shellcheck disable=SC2046
"$moeatlas" capture "$demo/model" $(domains calibration) --seq-len 128 --add-bos --seed "$seed" \
    --logits-dtype float16 --threads 1 --force -o "$work/demo.atlas.h5"
"$moeatlas" score "$work/demo.atlas.h5"
# shellcheck disable=SC2046
"$moeatlas" eval --atlas "$work/demo.atlas.h5" --sparsity 0.25,0.5,0.75 --criteria peu,frequency \
    --random-plans 4 $(domains heldout) --seq-len 128 --add-bos --threads 1 --csv "$demo/tradeoff.csv"
cp "$work/demo.atlas.h5" "$demo/demo.atlas.h5"
echo "$demo: model/, calibration/, heldout/, demo.atlas.h5, tradeoff.csv, train-report.json"
