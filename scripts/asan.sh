#!/usr/bin/env bash
# Builds a separate tree with AddressSanitizer and UBSan (CPU only) and runs the package and model
# pool tests there (corrupt and truncated packages must be rejected without a single bad read), then the
# C API's test program.
#
#   scripts/asan.sh                       # the default filter below
#   scripts/asan.sh --gtest_filter='Net*' # any other tests
set -euo pipefail
cd "$(dirname "$0")/.."
# Warnings stay warnings here: with the sanitizers GCC 12 reports false "maybe-uninitialized" in std::regex.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESPRESSO_SANITIZE=ON -DESPRESSO_CUDA=OFF \
  -DESPRESSO_WERROR=OFF
cmake --build build-asan -j"${ESPRESSO_JOBS:-2}" --target espresso_tests
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ $# -eq 0 ]; then set -- --gtest_filter='Package*:ModelPool*:DeepCompression*:CompressedSqueezeNet*:WeightCodec*:CompressedPackage*'; fi
build-asan/tests/espresso_tests "$@"
# The C API from C, every error path included (hostile values from a C caller among them).
cmake --build build-asan -j"${ESPRESSO_JOBS:-2}" --target espresso_c_api_test
build-asan/tests/espresso_c_api_test "${ESPRESSO_DATA:-../shared/data}"
