#!/usr/bin/env bash
# Installs every Debian package espresso needs, builds it, and runs the main job.
# Usage: ./scripts/setup.sh [--no-demo]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libprotobuf-dev protobuf-compiler libopenblas-dev zlib1g-dev
  libgtest-dev libcli11-dev libstb-dev nlohmann-json3-dev libxxhash-dev liblmdb-dev
  dataset-fashion-mnist libonnx-testdata python3-onnx python3-torch
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${ESPRESSO_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"

if [ "${1:-}" != "--no-demo" ]; then
  ./scripts/demo.sh
fi
