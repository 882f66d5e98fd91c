#!/usr/bin/env bash
# The demo pipeline: demo-pipeline.sh [MOEATLAS [DEMO_DIR [OUT_DIR]]]
#
# Runs every step of the README's first command with the CLI MOEATLAS (default: moeatlas on PATH) on
# the demo model and data in DEMO_DIR and writes the atlas, tables, plans and pruned checkpoints into
# OUT_DIR (default: ./moeatlas-demo). DEMO_DIR defaults to the directory holding this script when it
# has the model (the installed copy, /usr/share/moeatlas/demo/run-demo.sh), else resources/demo of the
# checkout. packaging/setup.sh demo and the package test (package-test.sh) both call it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
default_demo="$here/../resources/demo"
[[ -d "$here/model" ]] && default_demo="$here"
cli="${1:-moeatlas}"
demo="${2:-$default_demo}"
out="${3:-$PWD/moeatlas-demo}"
mkdir -p "$out"
log() { printf '\n== %s\n' "$*"; }

domains() { # $1 = calibration | heldout
  for d in arith code json prose; do printf ' -d %s=%s/%s/%s.txt:32' "$d" "$demo" "$1" "$d"; done
}
log "moeatlas inspect (the demo MoE: 4 layers x 16 experts, top-2, trained on arith/code/json/prose)"
"$cli" inspect "$demo/model"
log "moeatlas capture: routing of every calibration token into $out/demo.atlas.h5, and each MoE layer's predictions of the next layers' experts"
# shellcheck disable=SC2046
"$cli" capture "$demo/model" $(domains calibration) --seq-len 128 --add-bos --seed 1 --force \
  --prefetch next-router,quasi-hidden,linear,mlp -o "$out/demo.atlas.h5"
log "moeatlas score: PEU, frequency, ... and routing statistics"
"$cli" score "$out/demo.atlas.h5" --top 2
log "moeatlas eval: held-out loss of PEU/frequency specialists, generalist and random plans per budget"
# shellcheck disable=SC2046
"$cli" eval --atlas "$out/demo.atlas.h5" --sparsity 0.25,0.5,0.75 --criteria peu,frequency --random-plans 2 \
  $(domains heldout) --seq-len 128 --add-bos --csv "$out/tradeoff.csv"
log "moeatlas eval --routing: dynamic k (ProbMoE, top-p, a calibrated threshold) against fixed top-k at the same mean experts per token"
# shellcheck disable=SC2046
"$cli" eval --atlas "$out/demo.atlas.h5" --routing probmoe:1:4 --routing top-p:0.7 --routing top-p:0.9:1:4 \
  --routing threshold:1.5 $(domains heldout) --seq-len 128 --add-bos --label routing --csv "$out/routing.csv"
log "moeatlas prefetch: how well each predictor names the next MoE layers' experts (hit rates per layer, lookahead, domain)"
"$cli" prefetch "$out/demo.atlas.h5" --csv "$out/prefetch.csv"
log "moeatlas simulate: time per output token with experts offloaded (A6000 + PCIe 4, 8 of 16 experts per layer cached), on demand vs prefetched vs speculated"
for policy in on-demand prefetch speculative; do
  "$cli" simulate "$out/demo.atlas.h5" --preset a6000-pcie4 --cache-slots 8 --policy "$policy" \
    --predictor quasi-hidden --store --csv "$out/simulate-$policy.csv"
done
log "moeatlas eval --speculative: the loss of running the experts predicted one or two MoE layers earlier"
# shellcheck disable=SC2046
"$cli" eval --atlas "$out/demo.atlas.h5" --speculative next-router --speculative quasi-hidden \
  --speculative linear --speculative mlp --speculative previous --speculative frequency --speculative oracle \
  --speculative next-router:2 --speculative quasi-hidden:2 $(domains heldout) --seq-len 128 --add-bos \
  --label speculative --csv "$out/speculative.csv"
log "moeatlas fisher: Fisher importance of every expert unit per domain, its concentration, and the loss of removing the top units (held-out text)"
# shellcheck disable=SC2046
"$cli" fisher "$out/demo.atlas.h5" --max-samples 16 --seq-len 128 --add-bos --ablate 0,16,128 \
  $(domains heldout | sed 's/ -d / --ablation-domain /g; s/:32/:16/g')
log "moeatlas plan + export: the code specialist at 50% sparsity, as a checkpoint transformers loads"
"$cli" plan --atlas "$out/demo.atlas.h5" --criterion peu --domain code --keep-fraction 0.5 -o "$out/code-50.plan.json"
"$cli" export "$demo/model" --plan "$out/code-50.plan.json" -o "$out/code-50" --force
log "moeatlas plan + export with dimension pruning: the code specialist's experts also drop half their units by Fisher (IntDim-E: a stock checkpoint with a smaller moe width)"
"$cli" plan --atlas "$out/demo.atlas.h5" --criterion peu --domain code --keep-fraction 0.5 --dims IntDim-E \
  --dim-sparsity 0.5 -o "$out/code-50-dims-50.plan.json"
"$cli" export "$demo/model" --plan "$out/code-50-dims-50.plan.json" -o "$out/code-50-dims-50" --force
# shellcheck disable=SC2046
"$cli" eval --atlas "$out/demo.atlas.h5" --plan "$out/code-50.plan.json" --plan "$out/code-50-dims-50.plan.json" \
  $(domains heldout) --seq-len 128 --add-bos --label dims
log "done: atlas $out/demo.atlas.h5, trade-off table $out/tradeoff.csv, routing rules $out/routing.csv, prefetch hit rates $out/prefetch.csv, speculative execution $out/speculative.csv, plans $out/*.plan.json, pruned checkpoints $out/code-50 and $out/code-50-dims-50"
