#!/usr/bin/env bash
# Runs the whole test suite, CUDA tests included, on a machine with a GPU.
#
# The GPU machines have nvcc, cuBLAS and cuDNN but not our Debian -dev packages (protobuf, OpenBLAS,
# CLI11, stb, gtest), and nothing can be fetched there. So the build happens on a development
# machine with CUDA and the packages, and the GPU machine only runs it:
#
#   scripts/gpu_check.sh pack   # here: builds with CUDA into build-cuda/ and bundles the test binary,
#                               # the CLI and their non-CUDA shared libraries into gpu-bundle/
#   scripts/gpu_check.sh        # there, from the repo root: runs the bundle against the machine's
#                               # CUDA libraries and writes gpu_check.log and tests.xml to $OUT
#
# The bundle is about 10 MiB (OpenBLAS compressed); CUDA, cuBLAS and cuDNN come from the GPU
# machine, which must have CUDA 13 and cuDNN 9 like the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=gpu-bundle

pack() {
  # ESPRESSO_GPU_BUILD reuses a build folder that already has CUDA on (build/ where nvcc was found).
  local build=${ESPRESSO_GPU_BUILD:-build-cuda}
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DESPRESSO_CUDA=ON -DESPRESSO_WERROR=ON
  cmake --build "$build" -j"$(nproc)"
  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib"
  cp "$build"/tests/espresso_tests "$build"/bin/espresso "$build"/bin/espresso_bench_load "$bundle/bin/"
  # Everything the binaries need beyond glibc, libstdc++ and CUDA itself, which the GPU machine has.
  ldd "$bundle"/bin/* | awk '/=> \// {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+)\.so|libcu(da|dart|blas|blasLt|dnn)' |
    while read -r lib; do cp -L "$lib" "$bundle/lib/"; done
  tar -C "$bundle" -cJf "$bundle/lib.tar.xz" lib && rm -rf "$bundle/lib"
  du -sh "$bundle"
}

# Folders holding CUDA's libraries on the GPU machine: the toolkit, else PyTorch's pip wheels.
cuda_library_path() {
  local dirs=()
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && dirs+=("$d")
  done
  for lib in libcudnn.so.9 libcublas.so.13; do
    if ! ldconfig -p | grep -q "$lib" && ! ls "${dirs[@]/%//$lib}" >/dev/null 2>&1; then
      local found
      found=$(find / -xdev -name "$lib" -not -path '/proc/*' 2>/dev/null | head -1 || true)
      [ -n "$found" ] && dirs+=("$(dirname "$found")")
    fi
  done
  local IFS=:
  echo "${dirs[*]}"
}

# Unpacks the bundle's libraries and prints the exports that let its binaries run here.
environment() {
  [ -x "$bundle/bin/espresso_tests" ] || { echo "no $bundle/: run 'scripts/gpu_check.sh pack' on the build machine" >&2; exit 2; }
  local work=/tmp/espresso-gpu-libs
  mkdir -p "$work"
  tar -C "$work" -xJf "$bundle/lib.tar.xz"
  echo "export LD_LIBRARY_PATH=$work/lib:$(cuda_library_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "export ESPRESSO_CLI=$PWD/$bundle/bin/espresso"
  # A carried subset of ../shared/data, if any, for the tests that read real models and datasets.
  if [ -f gpu-data/MANIFEST.md ]; then echo "export ESPRESSO_DATA=$PWD/gpu-data"; fi
}

check() {
  local out=${OUT:-$PWD/gpu-check-out}
  mkdir -p "$out"
  eval "$(environment)"
  {
    echo "== $(date -u +%FT%TZ) $(uname -m) $(. /etc/os-release && echo "$PRETTY_NAME")"
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv || true
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$bundle/bin/espresso_tests" | grep -E 'not found|cu(dart|blas|dnn)' || true
    set +e
    "$bundle/bin/espresso_tests" --gtest_output="xml:$out/tests.xml"
    echo "== espresso_tests exit status $?"
  } 2>&1 | tee "$out/gpu_check.log"
  grep -q '^== espresso_tests exit status 0$' "$out/gpu_check.log"
}

# Sourced by other scripts (bench/run_package_bench.sh) for its functions alone.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-check}" in
    pack) pack ;;
    check) check ;;
    env) environment ;;
    *) echo "usage: $0 [pack|check|env]" >&2; exit 2 ;;
  esac
fi
