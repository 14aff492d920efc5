#!/usr/bin/env bash
# CPU inference: espresso against ONNX Runtime (onnxruntime-node 1.20.1) and PyTorch (Debian python3-torch)
# on the four ONNX models of ../shared/data/onnx and Caffe LeNet, batch 1 and 16, all with the same thread
# count; and int8 rows: espresso's calibrated package (`espresso quantize` on the shared photos) against ORT
# on the QDQ model of the same network and ranges (bench/int8/ort_qdq_check.py), SqueezeNet 1.1 and ResNet-18.
# Usage: bench/run_cpu_onnx_bench.sh [THREADS] [--rounds N] [--out FILE]   (THREADS: default all cores)
# --rounds N repeats the whole sweep N times and reports each framework's fastest round per row: on a host
# whose speed drifts by tens of percent within minutes, one round can catch one framework in a slow spell.
# Builds nothing: uses build/bin/espresso or $ESPRESSO_CLI. Installs ORT with npm into bench/ort/node_modules
# on first use (--ignore-scripts: the package ships its native library; the install script only fetches
# GPU providers). The three frameworks run in turn per model and batch size, so machine load hits all alike.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=$(nproc)
out=""
rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) threads=$1; shift ;;
  esac
done
espresso=${ESPRESSO_CLI:-build/bin/espresso}
shared=${ESPRESSO_DATA:-../shared/data}
data=$shared/onnx
python=/usr/bin/python3  # Debian's python3-torch and python3-onnx live there
models=(nin_cifar10 squeezenet1_1 resnet18 mobilenet_v2)

[ -x "$espresso" ] || { echo "no $espresso: build espresso first (or set ESPRESSO_CLI)" >&2; exit 2; }
"$python" -c 'import torch, onnx' 2>/dev/null ||
  { echo "$python cannot import torch and onnx: apt-get install python3-torch python3-onnx" >&2; exit 2; }
if [ ! -d bench/ort/node_modules/onnxruntime-node ]; then
  (cd bench/ort && npm install --ignore-scripts --no-audit --no-fund >&2)
fi

# Timed runs per model and batch size: about 3 s of them (10 to 300), from a short espresso probe, so fast
# models get enough runs for a stable median on a shared machine (the int8 rows take their fp32 model's count);
# the whole run, preparation included, takes ~4 minutes on 2 cores.
# iterations_for BATCH MODEL [MODEL OPTIONS...]
iterations_for() {
  local batch=$1
  shift
  "$espresso" bench "$@" --batch "$batch" --iterations 3 --warmup 1 --threads "$threads" --json |
    "$python" -c 'import json, sys; print(min(300, max(10, int(3000 / json.load(sys.stdin)["median_ms"]))))'
}

jsonl=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$jsonl" "$work"' EXIT

# Caffe LeNet: espresso runs the .prototxt and .caffemodel; ORT and PyTorch its ONNX conversion (`espresso
# convert`, the batch made a free axis), checked against ORT's output for the first MNIST test image.
lenet=$shared/caffe/lenet
mkdir -p "$work/lenet/test_data_set_0"
"$espresso" convert "$lenet/lenet.prototxt" -w "$lenet/lenet_iter_10000.caffemodel" -o "$work/lenet/model.onnx" >&2
"$python" - "$work/lenet" "$shared/mnist/t10k-images-idx3-ubyte.gz" <<'PY'
import gzip, sys
import numpy as np, onnx
from onnx import numpy_helper
folder, images = sys.argv[1:]
model = onnx.load(f"{folder}/model.onnx")
for value in list(model.graph.input) + list(model.graph.output):
    value.type.tensor_type.shape.dim[0].dim_param = "N"
onnx.save(model, f"{folder}/model.onnx")
with gzip.open(images) as f:
    pixels = np.frombuffer(f.read()[16:16 + 784], dtype=np.uint8)
x = (pixels.astype(np.float32) * 0.00390625).reshape(1, 1, 28, 28)
x.tofile(f"{folder}/input.bin")
with open(f"{folder}/test_data_set_0/input_0.pb", "wb") as f:
    f.write(numpy_helper.from_array(x, model.graph.input[0].name).SerializeToString())
PY
node bench/ort/run_model.mjs "$work/lenet/model.onnx" "$work/lenet/input.bin" 1,1,28,28 "$work/lenet/output.bin" >&2
"$python" -c 'import sys, numpy as np, onnx
from onnx import numpy_helper
y = np.fromfile(sys.argv[1] + "/output.bin", dtype=np.float32).reshape(1, -1)
name = onnx.load(sys.argv[1] + "/model.onnx").graph.output[0].name
open(sys.argv[1] + "/test_data_set_0/output_0.pb", "wb").write(numpy_helper.from_array(y, name).SerializeToString())' "$work/lenet"

# int8: calibrated on the shared photos; the QDQ model from the same ranges.
int8_models=(squeezenet1_1 resnet18)
photos=("$shared"/images/*.jpg)
for model in "${int8_models[@]}"; do
  "$espresso" quantize "$data/$model/model.onnx" --calibrate "${photos[@]}" --rgb --mean 123.675,116.28,103.53 \
    --scale 0.017123 -o "$work/$model-int8.esp" --ranges "$work/$model-ranges.json" >/dev/null
  "$python" bench/int8/ort_qdq_check.py "$data/$model/model.onnx" "$work/$model-ranges.json" "$work/$model-qdq" \
    "$shared/cifar10/test_batch_first1000.bin" 1 >&2
done
load_before=$(uptime)
for round in $(seq "$rounds"); do
  for model in "${models[@]}"; do
    onnx=$data/$model/model.onnx
    image_shape=$("$python" -c 'import sys, onnx
t = onnx.load_tensor(sys.argv[1])
print(",".join(str(d) for d in t.dims[1:]))' "$data/$model/test_data_set_0/input_0.pb")
    for batch in 1 16; do
      n=$(iterations_for "$batch" "$onnx")
      load=$(cut -d' ' -f1 /proc/loadavg)
      echo "round $round: $model batch $batch ($n timed runs each), load $load" >&2
      printf '{"framework": "machine", "mode": "load", "model": "%s", "batch": %d, "load_1min": %s, "runs": %d}\n' \
        "$onnx" "$batch" "$load" "$n"
      "$espresso" bench "$onnx" --batch "$batch" --iterations "$n" --warmup 3 --threads "$threads" --json
      node bench/ort/bench.mjs "$onnx" --shape "$image_shape" --batch "$batch" --iterations "$n" --warmup 3 \
        --threads "$threads"
      # libgomp's threads spin while they wait: on a busy machine that made PyTorch up to 25x slower. Passive
      # waiting matches espresso's pool, which sleeps on a condition variable.
      OMP_WAIT_POLICY=PASSIVE "$python" bench/onnx_torch.py "$data/$model" --batch "$batch" --iterations "$n" \
        --warmup 3 --threads "$threads" --trace
      if [[ " ${int8_models[*]} " == *" $model "* ]]; then
        "$espresso" bench "$work/$model-int8.esp" --batch "$batch" --iterations "$n" --warmup 3 --threads "$threads" --json
        node bench/ort/bench.mjs "$work/$model-qdq/model.onnx" --shape "$image_shape" --batch "$batch" \
          --iterations "$n" --warmup 3 --threads "$threads"
      fi
    done
  done
  for batch in 1 16; do
    n=$(iterations_for "$batch" "$lenet/lenet.prototxt" -w "$lenet/lenet_iter_10000.caffemodel")
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "round $round: lenet batch $batch ($n timed runs each), load $load" >&2
    printf '{"framework": "machine", "mode": "load", "model": "%s", "batch": %d, "load_1min": %s, "runs": %d}\n' \
      "$lenet/lenet.prototxt" "$batch" "$load" "$n"
    "$espresso" bench "$lenet/lenet.prototxt" -w "$lenet/lenet_iter_10000.caffemodel" --batch "$batch" --iterations "$n" \
      --warmup 3 --threads "$threads" --json
    node bench/ort/bench.mjs "$work/lenet/model.onnx" --shape 1,28,28 --batch "$batch" --iterations "$n" --warmup 3 \
      --threads "$threads"
    OMP_WAIT_POLICY=PASSIVE "$python" bench/onnx_torch.py "$work/lenet" --batch "$batch" --iterations "$n" \
      --warmup 3 --threads "$threads" --trace
  done
done >"$jsonl"
load_after=$(uptime)

report() {
  echo "$(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p') (family $(lscpu | sed -n 's/^CPU family: *//p')," \
    "model $(lscpu | sed -n 's/^Model: *//p')), $(nproc) CPUs, $threads threads each;" \
    "onnxruntime-node $(node -p 'require("./bench/ort/node_modules/onnxruntime-node/package.json").version'),"\
    "PyTorch $("$python" -c 'import torch; print(torch.__version__)') (Debian python3-torch)."
  echo
  echo "Load: before \`${load_before# }\`; after \`${load_after# }\`."
  echo
  "$python" bench/compare_cpu.py "$jsonl"
  echo
  [ "$rounds" -gt 1 ] && echo "Each framework's fastest of $rounds rounds of the whole sweep per row (rounds interleave the" \
    "frameworks, so drifts of the host's speed reach all of them; the load column is the first round's)." && echo
  echo "Median wall time of one forward pass on random inputs, after 3 warm-up passes, over about 3 s of timed" \
    "passes (10 to 300: the runs column). espresso: \`espresso bench\`;" \
    "ORT: \`session.run\` (CPU provider, all graph optimisations, 1 inter-op thread, default spinning);" \
    "PyTorch: bench/onnx_torch.py under \`inference_mode\` with \`OMP_WAIT_POLICY=PASSIVE\` (eager; traced =" \
    "\`torch.jit.freeze(torch.jit.trace(...))\`), checked against each model's output_0.pb first. Load: the" \
    "1-minute load average as each row started; the benchmark itself adds about $threads, the rest is other work on" \
    "this shared machine."
  echo
  echo "Raw results:"
  echo
  sed 's/^/    /' "$jsonl"
}
if [ -n "$out" ]; then report | tee "$out"; else report; fi
