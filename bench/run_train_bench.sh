#!/usr/bin/env bash
# On the GPU machine, from the repo root, with a bundle made by `scripts/gpu_check.sh pack` and carried
# data holding mnist/ and caffe/lenet/: trains Caffe's own LeNet solver and net (10,000 iterations,
# data from LMDBs that `espresso convert-data` builds from the MNIST IDX files) with espresso on the GPU
# and on the CPU, and the same net, solver and batch size with PyTorch (eager) on the GPU, in one run;
# then `espresso bench --compare cpu,cuda` on LeNet. Writes the table to $OUT/train.md.
#   bench/run_train_bench.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-10000}
source bench/lenet_data.sh
sed -i "s/^max_iter: .*/max_iter: $iterations/" "$work/examples/mnist/lenet_solver.prototxt"

# Wall time of `espresso train` (start-up and the tests every 500 iterations included, as for PyTorch).
train() {
  local device=$1
  local start end
  start=$(date +%s.%N)
  (cd "$work" && "$espresso" train examples/mnist/lenet_solver.prototxt --device "$device") >"$out/train_$device.log" 2>&1
  end=$(date +%s.%N)
  local accuracy
  accuracy=$(grep -o 'accuracy = [0-9.]*' "$out/train_$device.log" | tail -1 | cut -d' ' -f3)
  python3 -c "import json; s=$end-$start; print(json.dumps({'framework': 'espresso', 'device': '$device', \
'iterations': $iterations, 'seconds': round(s, 3), 'iterations_per_s': round($iterations/s, 1), \
'test_accuracy': float('$accuracy')}))"
}
{
  train cuda
  python3 bench/pytorch_train_lenet.py --data "$data/mnist" --iterations "$iterations" --device cuda
  train cpu
} | tee "$out/train.jsonl"
"$espresso" bench "$data/caffe/lenet/v2_format/lenet.prototxt" --compare cpu,cuda --batch 64 --iterations 200 \
  | tee "$out/compare.txt"
python3 - "$out/train.jsonl" "$iterations" <<'PY' | tee "$out/train.md"
import json, subprocess, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
print(f"# Caffe LeNet, lenet_solver.prototxt, {sys.argv[2]} iterations (batch 64)\n")
print(f"GPU: {gpu}; PyTorch {next((r['torch'] for r in rows if 'torch' in r), '?')}\n")
print("| framework | device | wall s | iterations/s | test accuracy | vs PyTorch (GPU) |")
print("|---|---|---:|---:|---:|---:|")
base = next((r["seconds"] for r in rows if r["framework"] == "pytorch"), None)
for r in rows:
    ratio = f"{r['seconds'] / base:.2f}x" if base else "n/a"
    print(f"| {r['framework']} | {r['device']} | {r['seconds']:.1f} | {r['iterations_per_s']:.0f} | "
          f"{r['test_accuracy']:.4f} | {ratio} |")
PY
