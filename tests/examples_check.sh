#!/usr/bin/env bash
# The C and Python examples classify a real MNIST test digit (written here as a PNG) with the shared
# LeNet and must print what `espresso classify --top 10` prints: the same classes, in the same order,
# with the same probabilities. Both run against the *installed* package (cmake --install into a temporary
# prefix), as an application would: the C program built with pkg-config (espresso-c) and with CMake's
# find_package(espresso COMPONENTS shared), the Python script with the prefix's site-packages folder.
# Usage: tests/examples_check.sh BUILD_DIR DATA_DIR   (exit 77: skipped, the shared data is missing)
set -euo pipefail
build=$1
data=$2
source_dir="$(cd "$(dirname "$0")/.." && pwd)"
lenet=("$data/caffe/lenet/v2_format/lenet.prototxt" "$data/caffe/lenet/lenet_iter_10000.caffemodel")
images="$data/mnist/t10k-images-idx3-ubyte.gz"
if [ ! -f "${lenet[1]}" ] || [ ! -f "$images" ]; then
  echo "SKIPPED: shared data missing in $data"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Test digits 0 and 1 as 8-bit gray PNGs, written with NumPy and zlib (independent of espresso).
/usr/bin/python3 - "$images" "$work" <<'PY'
import gzip, struct, sys, zlib
import numpy as np
with gzip.open(sys.argv[1]) as f:
    digits = np.frombuffer(f.read(), dtype=np.uint8, offset=16)[: 2 * 784].reshape(2, 28, 28)
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
for k, digit in enumerate(digits):
    rows = b"".join(b"\x00" + row.tobytes() for row in digit)
    with open(f"{sys.argv[2]}/digit{k}.png", "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
                  + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY

prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046  # pkg-config prints several words on purpose
cc -std=c11 -O1 "$source_dir/examples/c/classify.c" $(pkg-config --cflags --libs espresso-c) -o "$work/classify_pc"
cmake -S "$source_dir/examples/c" -B "$work/c-build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/c-build" >/dev/null
module=$(find "$prefix" -name 'espresso.cpython-*.so' | head -1)
if [ -z "$module" ]; then
  echo "the install has no Python module" >&2
  exit 1
fi
case "$module" in "$build"/*) echo "the Python module should come from the prefix" >&2; exit 1 ;; esac
for digit in "$work"/digit0.png "$work"/digit1.png; do
  "$build/bin/espresso" classify "${lenet[0]}" -w "${lenet[1]}" "$digit" --scale 0.00390625 --top 10 >"$work/cli.txt"
  LD_LIBRARY_PATH="$prefix/lib" "$work/classify_pc" "${lenet[@]}" "$digit" >"$work/c_pc.txt"
  LD_LIBRARY_PATH="$prefix/lib" "$work/c-build/classify" "${lenet[@]}" "$digit" >"$work/c_cmake.txt"
  imported=$(PYTHONPATH="$(dirname "$module")" /usr/bin/python3 -c 'import espresso; print(espresso.__file__)')
  case "$imported" in "$prefix"/*) ;; *) echo "python imported espresso from $imported, outside the prefix" >&2; exit 1 ;; esac
  PYTHONPATH="$(dirname "$module")" /usr/bin/python3 "$source_dir/examples/python/classify.py" "${lenet[@]}" "$digit" \
    >"$work/python.txt"
  diff -u "$work/cli.txt" "$work/c_pc.txt"
  diff -u "$work/cli.txt" "$work/c_cmake.txt"
  diff -u "$work/cli.txt" "$work/python.txt"
  echo "$(basename "$digit"): C (pkg-config, find_package) and Python, installed, print what the CLI prints: $(sed -n 2p "$work/cli.txt")"
done
# The installed C program resolves libespresso from the prefix, not from the build tree.
LD_LIBRARY_PATH="$prefix/lib" ldd "$work/classify_pc" >"$work/ldd.txt"
grep -q "$prefix/lib/libespresso.so" "$work/ldd.txt" ||
  { echo "classify_pc does not use the installed libespresso" >&2; exit 1; }
