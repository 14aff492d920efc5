#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan + UBSan) in build-fuzz/ and runs one or all of them.
#
#   scripts/fuzz.sh                 every target, 60 s each
#   scripts/fuzz.sh onnx 1800       one target for 30 minutes
#   scripts/fuzz.sh all 120
#
# Corpora: tests/fuzz/seeds/<target> (committed, small), build-fuzz/corpus/<target> (real files from
# ../shared/data and Debian's ONNX node tests, plus what the fuzzer finds; not committed) and
# tests/fuzz/regressions/<target>. Dictionaries: fuzz/dict/<target>.dict where present. A crash, leak,
# timeout or out-of-memory input is minimised and stored as tests/fuzz/regressions/<target>/<kind>-<sha1>,
# which the test suite replays (FuzzRegressions.*). Prints one summary row per target:
# executions, exec/s, coverage (edges) and features, corpus size, new regressions. Exits 1 when any
# target stored a new regression (the sanitizer CI job runs every target for 30 s this way).
# ESPRESSO_FUZZ_SEED fixes libFuzzer's random seed (default: a new one each run). With a fixed seed and the
# same starting corpus a run repeats the same inputs, so CI explores what a local run with that seed did.
# ESPRESSO_FUZZ_NO_BUILD=1 runs the fuzzers build-fuzz already holds (long runs while the tree is being edited).
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
seconds="${2:-60}"
jobs="${ESPRESSO_JOBS:-2}"
export CCACHE_BASEDIR="$PWD"

targets=()
for source in fuzz/targets/*.cpp; do targets+=("$(basename "$source" .cpp)"); done
if [ "$which" != all ]; then
  [ -f "fuzz/targets/$which.cpp" ] || { echo "unknown target '$which' (${targets[*]})" >&2; exit 2; }
  targets=("$which")
fi

if [ -z "${ESPRESSO_FUZZ_NO_BUILD:-}" ]; then
  scripts/configure_fuzz.sh
  cmake --build build-fuzz -j"$jobs" --target "${targets[@]/#/fuzz_}"
fi

if [ ! -d build-fuzz/corpus ]; then
  cli=""
  [ -x build/bin/espresso ] && cli=build/bin/espresso
  python3 scripts/fuzz_seeds.py build-fuzz/corpus "${ESPRESSO_DATA:-../shared/data}" "$cli"
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
found=0
printf '%-16s %12s %8s %8s %9s %7s %s\n' target executions exec/s cov features corpus new-regressions
for target in "${targets[@]}"; do
  corpus="build-fuzz/corpus/$target"
  artifacts="build-fuzz/artifacts/$target/"
  mkdir -p "$corpus" "$artifacts" "tests/fuzz/regressions/$target"
  options=()
  [ -f "fuzz/dict/$target.dict" ] && options+=(-dict="fuzz/dict/$target.dict")
  [ -n "${ESPRESSO_FUZZ_SEED:-}" ] && options+=(-seed="$ESPRESSO_FUZZ_SEED")
  log="build-fuzz/$target.log"
  build-fuzz/fuzz/"fuzz_$target" "$corpus" "tests/fuzz/seeds/$target" "tests/fuzz/regressions/$target" \
    "${options[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 \
    -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1 || true
  new=0
  for artifact in "$artifacts"*; do
    [ -f "$artifact" ] || continue
    kind=$(basename "$artifact" | cut -d- -f1)
    # A slow (not timed-out) input depends on the machine's load; -timeout catches real hangs.
    if [ "$kind" = slow ]; then
      echo "$target: slow input $(basename "$artifact") (not a regression)" >>"$log"
      rm -f "$artifact"
      continue
    fi
    # A timeout that does not repeat when the input runs alone came from the machine's load (or a run
    # paused with SIGSTOP, as while benchmarking): not a regression either.
    if [ "$kind" = timeout ] &&
       timeout 120 build-fuzz/fuzz/"fuzz_$target" -timeout=10 -rss_limit_mb=2048 "$artifact" >>"$log" 2>&1; then
      echo "$target: timeout input $(basename "$artifact") finished when replayed alone (not a regression)" >>"$log"
      rm -f "$artifact"
      continue
    fi
    minimised="build-fuzz/artifacts/$target.min"
    build-fuzz/fuzz/"fuzz_$target" -minimize_crash=1 -runs=20000 -exact_artifact_path="$minimised" \
      "$artifact" >>"$log" 2>&1 || true
    [ -f "$minimised" ] || cp "$artifact" "$minimised"
    cp "$minimised" "tests/fuzz/regressions/$target/$kind-$(sha1sum "$minimised" | cut -c1-12)"
    rm -f "$artifact" "$minimised"
    new=$((new + 1))
  done
  found=$((found + new))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  features=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  printf '%-16s %12s %8s %8s %9s %7s %s\n' "$target" "$runs" "$speed" "$cov" "$features" \
    "$(find "$corpus" -type f | wc -l)" "$new"
done
if [ "$found" -gt 0 ]; then
  echo "fuzz: $found new regression input(s) under tests/fuzz/regressions/ (see build-fuzz/<target>.log)" >&2
  exit 1
fi
