#!/usr/bin/env bash
# Runs the numerical suites (ctest label `numeric`) once per CPU kernel set this machine can run, so
# that a test whose pass depends on the kernels fails here rather than on someone else's CPU.
#
#   tests/run_core_types.sh [build-dir] [OPENBLAS_CORE:ATEN_CAPABILITY ...]
#
# Default sets: every one of SkylakeX:avx512, Haswell:avx2, Zen:avx2, Sandybridge:default that this
# CPU supports (checked in /proc/cpuinfo). OpenBLAS (LibTorch's BLAS here) picks its GEMM kernels by
# OPENBLAS_CORETYPE, ATen its vectorised kernels by ATEN_CPU_CAPABILITY (default, avx2, avx512).
# Extra ctest arguments: CTEST_ARGS, e.g. CTEST_ARGS="-R tst_ragged".
set -uo pipefail

build="${1:-build}"
shift || true
sets=("$@")
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-) "
has() { [[ "$flags" == *" $1 "* ]]; }
if ((${#sets[@]} == 0)); then
  has avx512f && has avx512bw && has avx512vl && sets+=(SkylakeX:avx512)
  has avx2 && has fma && sets+=(Haswell:avx2 Zen:avx2)
  has avx && sets+=(Sandybridge:default)
fi

status=0
summary=()
for s in "${sets[@]}"; do
  core="${s%%:*}" capability="${s#*:}"
  printf '\n== label numeric under OpenBLAS core %s, ATen CPU capability %s\n' "$core" "$capability"
  start=$SECONDS
  # shellcheck disable=SC2086
  if OPENBLAS_CORETYPE="$core" ATEN_CPU_CAPABILITY="$capability" \
      ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -L numeric ${CTEST_ARGS:-}; then
    summary+=("$core/$capability: passed ($((SECONDS - start)) s)")
  else
    status=1
    summary+=("$core/$capability: FAILED ($((SECONDS - start)) s)")
  fi
done
printf '\n== summary\n'
printf '%s\n' "${summary[@]}"
exit "$status"
