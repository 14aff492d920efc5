#!/usr/bin/env bash
# The Debian package on a clean Debian 12: debootstrap makes a minimal bookworm system (minbase plus the
# compiler, make, CMake and pkg-config an application needs), apt installs the package built by
# `cpack -G DEB` into it (resolving its Depends from Debian), and the C++ example (examples/cpp) is built
# there against /usr with find_package and with pkg-config and run on the shared LeNet and MNIST.
# Needs root and the network apt uses (deb.debian.org), so it is not part of CI; the log of a run is in
# bench/results/. Writes the chroot under ROOT (default /tmp/espresso-bookworm; reused when it exists).
#   scripts/deb_clean_check.sh BUILD_DIR [DATA_DIR] [ROOT]   (as root)
set -euo pipefail
build=$(cd "$1" && pwd)
data=$(cd "${2:-$(dirname "$0")/../../shared/data}" && pwd)
root=${3:-/tmp/espresso-bookworm}
source_dir="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (debootstrap and chroot)" >&2
  exit 2
fi
command -v debootstrap >/dev/null || apt-get install -y debootstrap

start=$(date +%s)
if [ ! -x "$root/usr/bin/g++" ]; then
  echo "== debootstrap bookworm (minbase + g++ make cmake pkg-config) into $root"
  timeout 1200 debootstrap --variant=minbase --include=g++,make,cmake,pkg-config bookworm "$root" \
    http://deb.debian.org/debian >"$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log"; exit 1; }
fi
echo "== the chroot: $(chroot "$root" cat /etc/debian_version), $(chroot "$root" dpkg -l | grep -c '^ii') packages," \
  "espresso installed before: $(chroot "$root" dpkg -l espresso 2>/dev/null | grep -c '^ii' || true)"

echo "== cpack -G DEB"
package_dir=$(mktemp -d)
trap 'rm -rf "$package_dir"' EXIT
cpack --config "$build/CPackConfig.cmake" -B "$package_dir" >/dev/null
deb=$(find "$package_dir" -maxdepth 1 -name 'espresso_*.deb' | head -1)
dpkg-deb --field "$deb" Package Version Architecture Depends
echo "size: $(stat -c %s "$deb") bytes"

# The chroot needs /proc and a resolver for apt; the data and sources come in as copies.
cp /etc/resolv.conf "$root/etc/resolv.conf"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
cleanup() { umount "$root/proc" 2>/dev/null || true; rm -rf "$package_dir"; }
trap cleanup EXIT
mkdir -p "$root/work/data/caffe" "$root/work/data/mnist"
cp "$deb" "$root/work/"
cp -r "$source_dir/examples/cpp" "$root/work/example"
cp -r "$data/caffe/lenet" "$root/work/data/caffe/"
cp "$data"/mnist/t10k-* "$data"/mnist/train-* "$root/work/data/mnist/"

echo "== apt-get install ./$(basename "$deb") in the chroot"
chroot "$root" apt-get update -q >/dev/null
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/work/$(basename "$deb")" \
  >"$root/work/apt.log" 2>&1 || { tail -30 "$root/work/apt.log"; exit 1; }
grep -E '^(Setting up espresso|The following NEW packages)' "$root/work/apt.log" || true
chroot "$root" dpkg -s espresso | grep -E '^(Status|Version)'
chroot "$root" dpkg -L espresso | grep -E 'libespresso\.so|espressoConfig\.cmake$|espresso\.pc$|c_api\.h$'

echo "== the C++ example against /usr: find_package"
chroot "$root" sh -c 'cmake -S /work/example -B /work/build -DCMAKE_BUILD_TYPE=Release >/work/cmake.log 2>&1 &&
  cmake --build /work/build >>/work/cmake.log 2>&1' || { tail -30 "$root/work/cmake.log"; exit 1; }
chroot "$root" /work/build/classify_mnist /work/data/caffe/lenet/v2_format/lenet.prototxt \
  /work/data/caffe/lenet/lenet_iter_10000.caffemodel /work/data/mnist 1000
mkdir -p "$root/work/train"
chroot "$root" /work/build/train_lenet /work/data/caffe/lenet/v2_format/lenet_train_test.prototxt /work/data/mnist \
  /work/train 200

echo "== the C++ example against /usr: pkg-config"
chroot "$root" sh -c 'c++ -O1 /work/example/classify_mnist.cpp -o /work/classify_pc $(pkg-config --cflags --libs espresso)'
chroot "$root" /work/classify_pc /work/data/caffe/lenet/v2_format/lenet.prototxt \
  /work/data/caffe/lenet/lenet_iter_10000.caffemodel /work/data/mnist 1000
echo "== the inference-only example (examples/runtime, find_package(espresso COMPONENTS runtime)) against /usr"
"$build/bin/espresso" convert "$data/caffe/lenet/v2_format/lenet.prototxt" -w "$data/caffe/lenet/lenet_iter_10000.caffemodel" \
  -o "$root/work/lenet.esp" --name lenet --scale 0.00390625 >/dev/null
gzip -dc "$data/mnist/t10k-images-idx3-ubyte.gz" >"$root/work/images.idx"
gzip -dc "$data/mnist/t10k-labels-idx1-ubyte.gz" >"$root/work/labels.idx"
cp -r "$source_dir/examples/runtime" "$root/work/runtime"
chroot "$root" sh -c 'cmake -S /work/runtime -B /work/runtime-build -DCMAKE_BUILD_TYPE=Release >/work/cmake.log 2>&1 &&
  cmake --build /work/runtime-build >>/work/cmake.log 2>&1' || { tail -30 "$root/work/cmake.log"; exit 1; }
chroot "$root" /work/runtime-build/classify_esp /work/lenet.esp /work/images.idx /work/labels.idx 1000
echo "NEEDED: $(readelf -d "$root/work/runtime-build/classify_esp" | grep NEEDED | sed -E 's/.*\[(.*)\]/\1/' | tr '\n' ' ')"

echo "== done in $(($(date +%s) - start)) s"
