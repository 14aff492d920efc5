#!/usr/bin/env bash
# On the GPU machine, from the repo root (or a folder laid out like it: scripts/gpu_check.sh, gpu-bundle/ from
# `scripts/gpu_check.sh pack`, bench/, gpu-data/): exports torchvision's ResNet-18, SqueezeNet 1.1 and
# MobileNetV2 with random weights to ONNX beside the carried data (NIN comes from gpu-data), runs the whole test
# suite against that data (the fp16/bf16/TF32 accuracy test included), then times espresso in fp32, tf32, fp16
# and bf16 against PyTorch fp32 (TF32 off), TF32 and fp16 (half + channels_last) on the same weights, all as
# CUDA graphs, at batch 1, 64 and 256. Writes tests.xml, suite.log, bench.jsonl, bench.err and precision.md to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
iterations=${ITERATIONS:-100}
eval "$(scripts/gpu_check.sh env)"
# The torchvision models (random weights) beside NIN from the carried data, for the accuracy test and the bench.
data=/tmp/espresso-precision-models
rm -rf "$data" && mkdir -p "$data/onnx"
cp -r "${ESPRESSO_DATA:?carry gpu-data (with onnx/nin_cifar10)}/onnx/nin_cifar10" "$data/onnx/"
python3 bench/torch_precision.py export "$data" 2>&1 | tail -3
export ESPRESSO_PRECISION_MODELS=$data
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# The default filter leaves out the tests whose data is not carried (as bench/results/2026-12-04-h200-final.md).
timeout "${SUITE_SECONDS:-330}" gpu-bundle/bin/espresso_tests --gtest_output="xml:$out/tests.xml" \
  --gtest_filter="${GTEST_FILTER:--TrainerRun*:*/2:*/3:DataCifar.*:DataMean.*:OnnxErrors.ExportRoundTripOfRealModels}" \
  >"$out/suite.log" 2>&1
tests_status=$?
echo "== espresso_tests exit status $tests_status"
grep -E "^\[  (FAILED|PASSED) |max \|d\||tests ran|SKIPPED.*not checked" "$out/suite.log" | head -60
{
  for model in resnet18 squeezenet1_1 mobilenet_v2 nin_cifar10; do
    for precision in fp32 tf32 fp16 bf16; do
      "$ESPRESSO_CLI" bench "$data/onnx/$model/model.onnx" --device cuda --precision "$precision" --batch 1,64,256 \
        --iterations "$iterations" --json 2>>"$out/bench.err"
    done
  done
  python3 bench/torch_precision.py time "$data" --batch 1,64,256 --iterations "$iterations"
} 2>&1 | tee "$out/bench.jsonl"
python3 bench/compare_precision.py "$out/bench.jsonl" | tee "$out/precision.md"
exit "$tests_status"
