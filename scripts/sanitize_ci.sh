#!/usr/bin/env bash
# The sanitizer CI job (called by .ci/run after the normal tests). A clang AddressSanitizer +
# UndefinedBehaviorSanitizer build (build-fuzz/, shared with scripts/fuzz.sh: scripts/configure_fuzz.sh)
# of the libraries that read untrusted input (the loaders, the store's and the server's request parsing)
# and what they stand on, then, in order:
#   - espresso_parser_tests: HostileModels.*, HostileImages.*, HostileData.*, Limits.*
#     (tests/test_hostile.cpp) and FuzzRegressions.* (tests/test_fuzz_regressions.cpp: every file in
#     tests/fuzz/seeds/<target>/ and tests/fuzz/regressions/<target>/ through the fuzzers' entry points);
#   - the C API's test program (tests/c_api_test.c, every error path: NULL handles and pointers, unknown
#     enum values, wrong shapes, short buffers and dims, strict precision);
#   - every libFuzzer target for 30 s on its corpus (scripts/fuzz.sh; ESPRESSO_FUZZ_SECONDS=0 skips this),
#     with the fixed seed ESPRESSO_FUZZ_SEED (default 1) so that a clean clone repeats a local run;
#     a new crash, leak, timeout or out-of-memory input fails the job and is stored under
#     tests/fuzz/regressions/ with the target's log in build-fuzz/<target>.log.
# Any sanitizer report fails the job (halt_on_error, -fno-sanitize-recover). The whole test suite under
# the sanitizers is scripts/asan.sh (about 25 minutes cold on 2 cores, too long for CI).
#
#   scripts/sanitize_ci.sh            # build-fuzz/, then the tests
#   ESPRESSO_JOBS=4 scripts/sanitize_ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"
jobs="${ESPRESSO_JOBS:-$(nproc)}"
start=$(date +%s)
scripts/configure_fuzz.sh
cmake --build build-fuzz -j"$jobs" --target espresso_parser_tests espresso_c_api_sanitized_test
built=$(date +%s)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
build-fuzz/tests/espresso_parser_tests --gtest_brief=1
# Exit 77: the shared data is missing (the test says so); anything else but 0 fails.
status=0
build-fuzz/tests/espresso_c_api_sanitized_test "${ESPRESSO_DATA:-../shared/data}" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 77 ]; then exit "$status"; fi
tested=$(date +%s)
seconds="${ESPRESSO_FUZZ_SECONDS:-30}"
[ "$seconds" -gt 0 ] && ESPRESSO_JOBS="$jobs" ESPRESSO_FUZZ_SEED="${ESPRESSO_FUZZ_SEED:-1}" scripts/fuzz.sh all "$seconds"
echo "sanitizer job: build $((built - start)) s, tests $((tested - built)) s, fuzzing $(($(date +%s) - tested)) s"
