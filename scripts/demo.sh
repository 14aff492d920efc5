#!/usr/bin/env bash
# The espresso demo: LeNet trained on Fashion-MNIST, then a short tour of the CLI on the shared Caffe
# LeNet and MNIST.
# Usage: ./scripts/demo.sh   (after ./scripts/setup.sh or a build into build/)
set -euo pipefail
cd "$(dirname "$0")/.."

cli=build/bin/espresso
data="${ESPRESSO_DATA:-../shared/data}"
if [ ! -x "$cli" ]; then
  echo "demo: $cli is missing; build first (./scripts/setup.sh --no-demo)" >&2
  exit 1
fi
# The main job: train LeNet on Fashion-MNIST, test, save (.caffemodel, .esp) and classify.
fashion="${ESPRESSO_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
if [ -d "$fashion" ]; then
  echo "== espresso demo: train LeNet on Fashion-MNIST"
  "$cli" demo --data "$fashion" --output build/demo
  echo
else
  echo "demo: no Fashion-MNIST at $fashion (apt-get install dataset-fashion-mnist); skipping training"
fi

if [ ! -d "$data" ]; then
  echo "demo: no shared data at $data (set ESPRESSO_DATA); skipping"
  exit 0
fi

lenet="$data/caffe/lenet"
echo "== espresso info: Caffe LeNet"
"$cli" info "$lenet/lenet.prototxt" --weights "$lenet/lenet_iter_10000.caffemodel"
echo
echo "== espresso eval: LeNet on MNIST t10k (reference accuracy 0.9905)"
"$cli" eval "$lenet/lenet.prototxt" --weights "$lenet/lenet_iter_10000.caffemodel" \
  --dataset mnist --data "$data/mnist" --scale 0.00390625
