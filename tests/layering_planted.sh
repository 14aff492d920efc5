#!/usr/bin/env bash
# The layering check must fail on a back-edge: plant one in a copy of the tree (core including the
# backend registry) and expect a non-zero exit that names the file and the edge.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r "$root/src" "$root/include" "$root/tools" "$copy/"
sed -i '1i #include "backends/registry.h"' "$copy/src/core/tensor.cpp"
if output=$(bash "$root/scripts/check_layering.sh" "$copy" 2>&1); then
  echo "FAIL: the check passed a tree where core includes backends/registry.h"
  exit 1
fi
grep -q 'src/core/tensor.cpp:1: includes "backends/registry.h"' <<<"$output" || {
  echo "FAIL: the report does not name the planted include:"
  echo "$output"
  exit 1
}
echo "the planted back-edge was reported: $(head -1 <<<"$output")"
