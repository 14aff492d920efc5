#!/usr/bin/env bash
# On the GPU machine, from the repo root, with a bundle made by `scripts/gpu_check.sh pack`: runs the whole
# test suite (CUDA tests included), then times espresso against PyTorch (eager and CUDA-graph replay, fp32,
# TF32 off) on LeNet and NIN at batch 1, 64 and 256, in one run, and writes the table to $OUT/bench.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
scripts/gpu_check.sh check
tests_status=$?
eval "$(scripts/gpu_check.sh env)"
espresso=$ESPRESSO_CLI
# LeNet comes from the carried shared data (see scripts/gpu_check.sh).
lenet=("${ESPRESSO_DATA:?carry gpu-data with caffe/lenet}/caffe/lenet/v2_format/lenet.prototxt" -w
       "$ESPRESSO_DATA/caffe/lenet/lenet_iter_10000.caffemodel")
{
  for graphs in "" --no-cuda-graphs; do
    "$espresso" bench "${lenet[@]}" --device cuda --batch 1,64,256 --iterations 300 --json $graphs
    "$espresso" bench bench/models/nin_cifar10.prototxt --device cuda --batch 1,64,256 --iterations 300 --json $graphs
  done
  python3 bench/pytorch_reference.py --models lenet,nin --batch 1,64,256 --iterations 300
} 2>&1 | tee "$out/bench.jsonl"
# The trained Caffe LeNet must score the same on the GPU as on the CPU.
for device in cpu cuda; do
  "$espresso" eval "${lenet[@]}" --device $device --dataset mnist --data "$ESPRESSO_DATA/mnist" \
    --scale 0.00390625 2>/dev/null | sed "s/^/$device: /"
done | tee "$out/lenet_accuracy.txt"
{
  echo "# espresso vs PyTorch, inference, fp32 (TF32 off)"
  echo
  echo "$(date -u +%F), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader), PyTorch $(python3 -c 'import torch; print(torch.__version__)')"
  echo
  python3 bench/compare.py "$out/bench.jsonl"
  echo
  echo "Caffe LeNet on MNIST t10k (\`espresso eval --device D\`):"
  echo
  sed 's/^/    /' "$out/lenet_accuracy.txt"
  echo
  echo "Median of 300 timed forward passes after warm-up. espresso: \`espresso bench --device cuda\` (CUDA events around"
  echo "the work forward() queues); PyTorch: CUDA events, cuDNN autotuning on. Test suite exit status: $tests_status."
} | tee "$out/bench.md"
exit "$tests_status"
