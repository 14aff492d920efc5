#!/usr/bin/env bash
# Data-parallel training on several GPUs of one machine (issue #21), in one call on the GPU machine, from
# the repo root, with a bundle made by `scripts/gpu_check.sh pack` and carried data holding mnist/,
# cifar10/ and caffe/lenet/:
#   1. NIN (bench/models/nin_cifar10.prototxt as a train net) on CIFAR-10 at global batch 512:
#      espresso on 1 GPU (plain, and through the NCCL code path with one rank) and on all GPUS
#      (512/N per GPU), then PyTorch DDP (bench/ddp_nin.py) on 1 and N GPUs: images/s and scaling
#      efficiency = throughput(N) / (N x throughput(1)).
#   2. Caffe's LeNet solver (LENET_ITERS iterations, default 10000; 0 skips): test accuracy on 1 GPU
#      (batch 64) and on N GPUs (64/N each, the same global batch).
# Writes $OUT/dist.md (the table) and the logs.
#   bench/dist_bench.sh [GPUS=0,1] [NIN_ITERATIONS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
gpus=${1:-0,1}
iterations=${2:-200}
lenet_iterations=${LENET_ITERS:-10000}
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
eval "$(scripts/gpu_check.sh env)"
espresso=$ESPRESSO_CLI
data=${ESPRESSO_DATA:?carry the shared data subset}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
n=$(awk -F, '{print NF}' <<<"$gpus")
first=${gpus%%,*}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$espresso" convert-data --format cifar10 "$data/cifar10" "$work/cifar_train_lmdb" --split train >/dev/null
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee "$out/gpus.txt"

# The deploy NIN as a train net: a Data layer of `batch` images and a SoftmaxWithLoss.
nin_solver() {
  local name=$1 batch=$2
  python3 - "$work/$name.prototxt" "$batch" "$work/cifar_train_lmdb" <<'PY'
import re, sys
text = open("bench/models/nin_cifar10.prototxt").read()
text = re.sub(r'layer \{\s*name: "data"\s*type: "Input".*?\n\}\n',
              'layer { name: "data" type: "Data" top: "data" top: "label"\n'
              '  transform_param { scale: 0.00390625 }\n'
              f'  data_param {{ source: "{sys.argv[3]}" batch_size: {sys.argv[2]} backend: LMDB }} }}\n',
              text, count=1, flags=re.S)
text = re.sub(r'type: "Softmax"\s*bottom: "pool3"\s*top: "prob"',
              'type: "SoftmaxWithLoss" bottom: "pool3" bottom: "label" top: "loss"', text)
assert 'SoftmaxWithLoss' in text and 'type: "Data"' in text, "unexpected nin_cifar10.prototxt layout"
open(sys.argv[1], "w").write(text)
PY
  cat >"$work/${name}_solver.prototxt" <<SOLVER
net: "$work/$name.prototxt"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0001
lr_policy: "fixed"
max_iter: $((iterations + 20))
display: 20
random_seed: 7
snapshot_after_train: false
snapshot_prefix: "$work/$name"
SOLVER
  echo "$work/${name}_solver.prototxt"
}

# images/s from the rates the log prints between displays, after the first 40 iterations (warm-up).
nin_row() {
  local label=$1 count=$2 log=$3
  python3 - "$label" "$count" "$log" <<'PY'
import json, re, statistics, sys
label, gpus, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rates = [(int(i), float(r)) for i, r in re.findall(r"Iteration (\d+), loss = \S+ \(([\d.e+]+) iter/s\)", open(log).read())]
rates = [r for i, r in rates if i >= 40]
ips = statistics.median(rates) * 512 if rates else 0.0
print(json.dumps({"framework": "espresso", "mode": label, "gpus": gpus, "global_batch": 512,
                  "images_per_s": round(ips, 1)}))
PY
}

{
  s=$(nin_solver nin1 512)
  "$espresso" train "$s" --device "cuda:$first" >"$out/nin_plain.log" 2>&1
  nin_row "cuda:$first, no communicator" 1 "$out/nin_plain.log"
  "$espresso" train "$s" --gpus "$first" >"$out/nin_1gpu.log" 2>&1
  nin_row "--gpus $first (NCCL, 1 rank)" 1 "$out/nin_1gpu.log"
  s=$(nin_solver nin$n $((512 / n)))
  "$espresso" train "$s" --gpus "$gpus" >"$out/nin_${n}gpu.log" 2>&1
  nin_row "--gpus $gpus (NCCL)" "$n" "$out/nin_${n}gpu.log"
  if python3 -c "import torch" 2>/dev/null; then
    python3 bench/ddp_nin.py --gpus "$first" --iterations "$iterations" --data "$data/cifar10"
    python3 bench/ddp_nin.py --gpus "$gpus" --iterations "$iterations" --data "$data/cifar10"
  fi
} | tee "$out/nin.jsonl"

if [ "$lenet_iterations" -gt 0 ]; then
  "$espresso" convert-data --format idx "$data/mnist" "$work/mnist_train_lmdb" --split train >/dev/null
  "$espresso" convert-data --format idx "$data/mnist" "$work/mnist_test_lmdb" --split test >/dev/null
  for count in 1 "$n"; do
    mkdir -p "$work/lenet$count"
    sed -e "s#examples/mnist/mnist_train_lmdb#$work/mnist_train_lmdb#; s#examples/mnist/mnist_test_lmdb#$work/mnist_test_lmdb#" \
        -e "0,/batch_size: 64/s//batch_size: $((64 / count))/" \
        "$data/caffe/lenet/v2_format/lenet_train_test.prototxt" >"$work/lenet$count/net.prototxt"
    sed -e "s#^net: .*#net: \"$work/lenet$count/net.prototxt\"#; s#^max_iter: .*#max_iter: $lenet_iterations#" \
        -e "s#^snapshot_prefix: .*#snapshot_prefix: \"$work/lenet$count/lenet\"#; s#^solver_mode: .*##" \
        "$data/caffe/lenet/v2_format/lenet_solver.prototxt" >"$work/lenet$count/solver.prototxt"
    if [ "$count" = 1 ]; then list=$first; else list=$gpus; fi
    start=$(date +%s.%N)
    "$espresso" train "$work/lenet$count/solver.prototxt" --gpus "$list" >"$out/lenet_${count}gpu.log" 2>&1
    end=$(date +%s.%N)
    accuracy=$(grep -o 'accuracy = [0-9.]*' "$out/lenet_${count}gpu.log" | tail -1 | cut -d' ' -f3)
    echo "{\"net\": \"lenet\", \"gpus\": $count, \"iterations\": $lenet_iterations, \"seconds\": $(python3 -c "print(round($end - $start, 1))"), \"test_accuracy\": $accuracy}"
  done | tee "$out/lenet.jsonl"
fi

python3 - "$out" "$n" "$iterations" <<'PY' | tee "$out/dist.md"
import json, os, sys
out, n, iterations = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(os.path.join(out, "nin.jsonl")) if l.startswith("{")]
print(f"# Data-parallel NIN on CIFAR-10, global batch 512, {iterations} timed iterations\n")
print("GPUs: " + open(os.path.join(out, "gpus.txt")).read().strip().replace("\n", "; ") + "\n")
print("| framework | run | GPUs | images/s | scaling efficiency |")
print("|---|---|---:|---:|---:|")
for fw in ("espresso", "pytorch-ddp"):
    one = next((r["images_per_s"] for r in rows if r["framework"] == fw and r["gpus"] == 1), None)
    for r in rows:
        if r["framework"] != fw:
            continue
        eff = f"{r['images_per_s'] / (r['gpus'] * one):.3f}" if one and r["gpus"] > 1 else ""
        print(f"| {fw} | {r.get('mode', r.get('torch', ''))} | {r['gpus']} | {r['images_per_s']:.0f} | {eff} |")
path = os.path.join(out, "lenet.jsonl")
if os.path.exists(path):
    print("\n| Caffe LeNet solver | GPUs | iterations | wall s | test accuracy |\n|---|---:|---:|---:|---:|")
    for l in open(path):
        if l.startswith("{"):
            r = json.loads(l)
            print(f"| espresso | {r['gpus']} | {r['iterations']} | {r['seconds']:.1f} | {r['test_accuracy']} |")
PY
