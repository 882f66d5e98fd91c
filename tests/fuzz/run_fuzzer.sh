#!/usr/bin/env bash
# One bounded libFuzzer run (the fuzz CTest tests call this): run_fuzzer.sh FUZZER SEEDS WORKDIR [fuzz|replay]
# replay (fuzz_atlas): only run the seeds, unless MOEATLAS_FUZZ_ALL=1.
# Fuzzes for ${MOEATLAS_FUZZ_SECONDS:-20} s from the committed seeds; new inputs go to WORKDIR/corpus
# (kept between runs, never into the source tree), a finding to WORKDIR/crash-* etc. Exit != 0 on a
# finding: a crash, a sanitizer report, an escaped exception, an input running over 10 s or 2 GiB.
set -euo pipefail
fuzzer="$1" seeds="$2" work="$3" mode="${4:-fuzz}"
mkdir -p "$work/corpus"
# allocator_may_return_null: a C library (libhdf5 on a damaged size field) gets NULL for an absurd malloc,
# as it would without ASan, and reports its error; C++ new still throws, so our own code's are findings.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
# Targets write each input to a scratch file (fuzz_support.h): in memory where there is a tmpfs.
[[ -z "${TMPDIR:-}" && -d /dev/shm && -w /dev/shm ]] && export TMPDIR=/dev/shm
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if [[ "$mode" == replay && "${MOEATLAS_FUZZ_ALL:-0}" != 1 ]]; then
  exec "$fuzzer" -runs=0 -timeout=10 -rss_limit_mb=2048 "$seeds"
fi
# The largest seed sets the largest input libFuzzer makes (4096 bytes at least).
exec "$fuzzer" -max_total_time="${MOEATLAS_FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "$seeds"
