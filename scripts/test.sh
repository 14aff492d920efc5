#!/usr/bin/env bash
# Runs the whole test suite (GoogleTest through ctest). Builds first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
# Cache hits across clones and worktrees: ccache sees paths relative to the checkout.
export CCACHE_BASEDIR="$PWD"
[ -d build ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${ESPRESSO_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
