#!/usr/bin/env bash
# int8 against fp32 on the CPU: espresso fp32, espresso --precision int8 (dynamic ranges), espresso's calibrated
# package (`espresso quantize`), ONNX Runtime fp32 and ONNX Runtime on the QDQ int8 model of the same network
# (bench/int8/ort_qdq_check.py, from the same calibrated ranges), batch 1 and 16, same thread count.
# Usage: bench/int8/run_int8_bench.sh [THREADS] [--out FILE]
# Needs build/bin/espresso (or $ESPRESSO_CLI), ../shared/data ($ESPRESSO_DATA); the ORT rows need node and
# bench/ort/node_modules (npm install there, as bench/run_cpu_onnx_bench.sh does) and Debian's python3-onnx.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=$(nproc)
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    *) threads=$1; shift ;;
  esac
done
espresso=${ESPRESSO_CLI:-build/bin/espresso}
data=${ESPRESSO_DATA:-../shared/data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
have_ort=0
if command -v node >/dev/null && [ -d bench/ort/node_modules/onnxruntime-node ] &&
   /usr/bin/python3 -c 'import onnx, numpy' 2>/dev/null; then have_ort=1; fi
photos=("$data"/images/*.jpg)
iterations=${ITERATIONS:-30}

{
  L=$data/caffe/lenet
  "$espresso" quantize "$L/lenet.prototxt" -w "$L/lenet_iter_10000.caffemodel" --calibrate "$data/mnist" \
    --dataset mnist --limit 500 --scale 0.00390625 -o "$work/lenet-int8.esp" >&2
  for batch in 1 64; do
    for precision in fp32 int8; do
      "$espresso" bench "$L/lenet.prototxt" -w "$L/lenet_iter_10000.caffemodel" --precision $precision \
        --batch $batch --iterations $((iterations * 5)) --warmup 5 --threads "$threads" --json
    done
    "$espresso" bench "$work/lenet-int8.esp" --batch $batch --iterations $((iterations * 5)) --warmup 5 \
      --threads "$threads" --json | sed 's/"precision": "fp32"/"precision": "int8 calibrated"/'
  done
  for model in squeezenet1_1 resnet18; do
    onnx=$data/onnx/$model/model.onnx
    "$espresso" quantize "$onnx" --calibrate "${photos[@]}" --rgb --mean 123.675,116.28,103.53 --scale 0.017123 \
      -o "$work/$model-int8.esp" --ranges "$work/$model-ranges.json" >&2
    if [ $have_ort = 1 ]; then
      /usr/bin/python3 bench/int8/ort_qdq_check.py "$onnx" "$work/$model-ranges.json" "$work/$model-qdq" \
        "$data/cifar10/test_batch_first1000.bin" 1 >&2
    fi
    for batch in 1 16; do
      for precision in fp32 int8; do
        "$espresso" bench "$onnx" --precision $precision --batch $batch --iterations "$iterations" --warmup 3 \
          --threads "$threads" --json
      done
      "$espresso" bench "$work/$model-int8.esp" --batch $batch --iterations "$iterations" --warmup 3 \
        --threads "$threads" --json | sed 's/"precision": "fp32"/"precision": "int8 calibrated"/'
      "$espresso" bench "$work/$model-qdq/model.onnx" --batch $batch --iterations "$iterations" --warmup 3 \
        --threads "$threads" --json 2>/dev/null | sed 's/"precision": "fp32"/"precision": "int8 qdq"/' || true
      if [ $have_ort = 1 ]; then
        node bench/ort/bench.mjs "$onnx" --shape 3,224,224 --batch $batch --iterations "$iterations" --warmup 3 \
          --threads "$threads"
        node bench/ort/bench.mjs "$work/$model-qdq/model.onnx" --shape 3,224,224 --batch $batch \
          --iterations "$iterations" --warmup 3 --threads "$threads" | sed 's/"framework":"onnxruntime"/"framework":"onnxruntime int8 qdq"/'
      fi
    done
  done
  echo "{\"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"threads\": $threads}"
} | tee ${out:+"$out"}
