#!/usr/bin/env bash
# Configures build-fuzz/, the clang build that scripts/fuzz.sh and scripts/sanitize_ci.sh share:
# -fsanitize=fuzzer-no-link,address,undefined on every library (ESPRESSO_FUZZ=ON), -O1 (ASan's advice;
# far quicker to compile than -O3) with line tables for the reports. Each script then builds only the
# targets it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_FLAGS="-O1 -gline-tables-only" -DCMAKE_CXX_FLAGS="-O1 -gline-tables-only" \
  -DESPRESSO_FUZZ=ON -DESPRESSO_CUDA=OFF -DESPRESSO_WERROR=OFF >/dev/null
