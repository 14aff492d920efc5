#!/usr/bin/env bash
# The C and Python examples classify a real MNIST test digit (written here as a PNG) with the shared
# LeNet and must print what `espresso classify --top 10` prints: the same classes, in the same order,
# with the same probabilities.
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

cc -std=c11 -O1 "$source_dir/examples/c/classify.c" -I"$source_dir/include" -L"$build/src" -lespresso \
  -Wl,-rpath,"$build/src" -o "$work/classify_c"
for digit in "$work"/digit0.png "$work"/digit1.png; do
  "$build/bin/espresso" classify "${lenet[0]}" -w "${lenet[1]}" "$digit" --scale 0.00390625 --top 10 >"$work/cli.txt"
  "$work/classify_c" "${lenet[@]}" "$digit" >"$work/c.txt"
  PYTHONPATH="$build/python" /usr/bin/python3 "$source_dir/examples/python/classify.py" "${lenet[@]}" "$digit" \
    >"$work/python.txt"
  diff -u "$work/cli.txt" "$work/c.txt"
  diff -u "$work/cli.txt" "$work/python.txt"
  echo "$(basename "$digit"): C and Python print what the CLI prints: $(sed -n 2p "$work/cli.txt")"
done
