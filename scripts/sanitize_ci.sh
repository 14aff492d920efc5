#!/usr/bin/env bash
# The sanitizer CI job (called by .ci/run after the normal tests). A clang AddressSanitizer +
# UndefinedBehaviorSanitizer build (build-fuzz/, shared with scripts/fuzz.sh: scripts/configure_fuzz.sh)
# of only what parses untrusted input: the libraries core, graph, layers, data, esp and import (no
# backends, runtime, train, CLI or Python), the fuzz targets, and espresso_parser_tests, which runs
#   - HostileModels.*, HostileImages.*, HostileData.*, Limits.* (tests/test_hostile.cpp), and
#   - FuzzRegressions.* (tests/test_fuzz_regressions.cpp): every file in tests/fuzz/seeds/<target>/ and
#     tests/fuzz/regressions/<target>/ through the same entry points the fuzzers use.
# and then the C API's test program (tests/c_api_test.c, every error path: NULL handles and pointers,
# unknown enum values, wrong shapes, short buffers and dims, strict precision), its C API compiled with the
# libraries it calls (backends and runtime on top of those above).
# Any sanitizer report fails the job (halt_on_error, -fno-sanitize-recover). The whole test suite under
# the sanitizers is scripts/asan.sh (about 25 minutes cold on 2 cores, too long for CI).
#
#   scripts/sanitize_ci.sh            # build-fuzz/, then the tests
#   ESPRESSO_JOBS=4 scripts/sanitize_ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"
start=$(date +%s)
scripts/configure_fuzz.sh
cmake --build build-fuzz -j"${ESPRESSO_JOBS:-$(nproc)}" --target espresso_parser_tests
built=$(date +%s)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
build-fuzz/tests/espresso_parser_tests --gtest_brief=1
tested=$(date +%s)
cmake --build build-fuzz -j"${ESPRESSO_JOBS:-$(nproc)}" --target espresso_c_api_sanitized_test
capi_built=$(date +%s)
# Exit 77: the shared data is missing (the test says so); anything else but 0 fails.
status=0
build-fuzz/tests/espresso_c_api_sanitized_test "${ESPRESSO_DATA:-../shared/data}" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 77 ]; then exit "$status"; fi
echo "sanitizer job: build $((built - start)) s, tests $((tested - built)) s;" \
  "C API: build $((capi_built - tested)) s, test $(($(date +%s) - capi_built)) s"
