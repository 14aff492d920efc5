#!/usr/bin/env bash
# Installs this build into a temporary prefix and builds examples/cpp against it twice, as an
# application would: with CMake's find_package(espresso) and with pkg-config; then makes the Debian
# package with cpack and builds the example against its unpacked contents. Every program classifies
# MNIST test digits with the shared Caffe LeNet and must reach its accuracy. The inference-only example
# (examples/runtime) must link no protobuf or LMDB.
# Usage: tests/install_check.sh BUILD_DIR DATA_DIR   (exit 77: skipped, the shared data is missing)
set -euo pipefail
build=$1
data=$2
source_dir="$(cd "$(dirname "$0")/.." && pwd)"
lenet=("$data/caffe/lenet/v2_format/lenet.prototxt" "$data/caffe/lenet/lenet_iter_10000.caffemodel" "$data/mnist")
if [ ! -f "${lenet[1]}" ] || [ ! -d "${lenet[2]}" ]; then
  echo "SKIPPED: shared data missing in $data"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/examples/cpp" -B "$work/cmake-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
echo "find_package: $("$work/cmake-build/classify_mnist" "${lenet[@]}" 500)"
mkdir -p "$work/train"
echo "find_package: $("$work/cmake-build/train_lenet" "$data/caffe/lenet/v2_format/lenet_train_test.prototxt" \
  "$data/mnist" "$work/train" 200)"

export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046  # pkg-config prints several words on purpose
c++ -O1 "$source_dir/examples/cpp/classify_mnist.cpp" -o "$work/classify_pc" $(pkg-config --cflags --libs espresso)
echo "pkg-config: $("$work/classify_pc" "${lenet[@]}" 500)"

# An inference-only application (examples/runtime: find_package(espresso COMPONENTS runtime), and
# pkg-config espresso-runtime) runs an .esp LeNet and links no protobuf or LMDB: its ELF dependencies
# (readelf -d, NEEDED) and its symbols (nm: no protobuf or mdb_ code linked in statically) say so.
"$build/bin/espresso" convert "${lenet[0]}" -w "${lenet[1]}" -o "$work/lenet.esp" --name lenet --scale 0.00390625 >/dev/null
gzip -dc "${lenet[2]}/t10k-images-idx3-ubyte.gz" >"$work/images.idx"
gzip -dc "${lenet[2]}/t10k-labels-idx1-ubyte.gz" >"$work/labels.idx"
cmake -S "$source_dir/examples/runtime" -B "$work/runtime-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/runtime-build" >/dev/null
# shellcheck disable=SC2046
c++ -O1 "$source_dir/examples/runtime/classify_esp.cpp" -o "$work/classify_esp_pc" $(pkg-config --cflags --libs espresso-runtime)
for program in "$work/runtime-build/classify_esp" "$work/classify_esp_pc"; do
  echo "runtime ($(basename "$program")): $("$program" "$work/lenet.esp" "$work/images.idx" "$work/labels.idx" 500)"
  needed=$(readelf -d "$program" | grep NEEDED | sed -E 's/.*\[(.*)\]/\1/' | tr '\n' ' ')
  echo "  NEEDED: $needed"
  if grep -qE 'protobuf|lmdb' <<<"$needed"; then
    echo "an inference-only program needs protobuf or LMDB: $needed" >&2
    exit 1
  fi
  nm -C "$program" >"$work/symbols.txt"
  if grep -qE ' (google::protobuf::|mdb_env_open)' "$work/symbols.txt"; then
    echo "protobuf or LMDB code is linked into $(basename "$program")" >&2
    exit 1
  fi
done
# The full package, for contrast, does link protobuf (so the check above can fail).
readelf -d "$work/cmake-build/classify_mnist" >"$work/full.txt"
grep NEEDED "$work/full.txt" | grep -q protobuf || { echo "classify_mnist was expected to need libprotobuf" >&2; exit 1; }

# The Python module, where this build has it, imports from the installed site-packages folder.
module=$(find "$work/prefix" -name 'espresso.cpython-*.so' | head -1)
if [ -n "$module" ]; then
  PYTHONPATH=$(dirname "$module") /usr/bin/python3 -c "import espresso, sys; m = espresso.load(sys.argv[1], sys.argv[2]); print('python:', m.name, m.inputs, m.outputs)" "${lenet[0]}" "${lenet[1]}"
fi

# The Debian package: its files, unpacked, serve an application like an install does.
cpack --config "$build/CPackConfig.cmake" -B "$work/package" >/dev/null
deb=$(find "$work/package" -maxdepth 1 -name 'espresso_*.deb' | head -1)
dpkg-deb --field "$deb" Package Version Depends
dpkg-deb -x "$deb" "$work/root"
cmake -S "$source_dir/examples/cpp" -B "$work/deb-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/root/usr" >/dev/null
cmake --build "$work/deb-build" >/dev/null
echo "deb: $("$work/deb-build/classify_mnist" "${lenet[@]}" 500)"
