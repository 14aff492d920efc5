#!/usr/bin/env bash
# GPU training throughput and peak device memory, espresso vs PyTorch eager (issue #22), in one run on
# the GPU machine, from the repo root, with a bundle made by `scripts/gpu_check.sh pack`:
#   NIN-CIFAR10 (bench/models/nin_cifar10.prototxt, batch 128, 32x32) and ResNet-18
#   (bench/models/resnet18.prototxt = torchvision's resnet18, batch 64, 224x224), each trained with
#   `espresso bench --train` and bench/torch_train.py: random data, softmax cross-entropy, SGD with
#   momentum 0.9, fp32 with TF32 off (cuDNN autotuning on for PyTorch), median wall time per step
#   (device synchronised) over ITERATIONS steps after WARMUP, peak device memory of each framework's
#   allocator. espresso runs twice: as it is (any cuDNN algorithm, as PyTorch without
#   torch.use_deterministic_algorithms) and with ESPRESSO_CONV_DETERMINISTIC=1 (deterministic ones first).
#   Writes JSON lines and the Markdown table (train_throughput.md) to $OUT.
#   bench/run_train_throughput.sh [ITERATIONS] [WARMUP]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-100}
warmup=${2:-20}
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
eval "$(scripts/gpu_check.sh env)"
espresso=$ESPRESSO_CLI
rows="$out/train_throughput.jsonl"
: >"$rows"
for spec in "nin bench/models/nin_cifar10.prototxt 128" "resnet18 bench/models/resnet18.prototxt 64"; do
  read -r name model batch <<<"$spec"
  # Each run in its own process: neither's caches or allocations weigh on the other.
  for deterministic in 0 1; do
    ESPRESSO_CONV_DETERMINISTIC=$deterministic "$espresso" bench "$model" --device cuda --train --batch "$batch" \
      --iterations "$iterations" --warmup "$warmup" --json 2>"$out/espresso_${name}_$deterministic.err" |
      sed "s|\"model\": \"[^\"]*\"|\"model\": \"$name\", \"deterministic\": $deterministic|" | tee -a "$rows" ||
      echo "espresso $name failed: $(tail -3 "$out/espresso_${name}_$deterministic.err")" >&2
  done
  python3 bench/torch_train.py --model "$name" --batch "$batch" --iterations "$iterations" --warmup "$warmup" \
    2>"$out/torch_$name.err" | tee -a "$rows" || echo "pytorch $name failed: $(tail -3 "$out/torch_$name.err")" >&2
done
python3 - "$rows" <<'PY' | tee "$out/train_throughput.md"
import json, subprocess, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except OSError:
    gpu = "? (no nvidia-smi)"
torch = next((r["torch"] for r in rows if "torch" in r), "?")
print(f"# Training throughput, fp32 (TF32 off), SGD momentum 0.9, random data\n")
print(f"GPU: {gpu}; PyTorch {torch} eager, cuDNN benchmark on\n")
print("| model | batch | espresso cuDNN algorithms | espresso ms/step | PyTorch ms/step | espresso img/s | PyTorch img/s | speed vs PyTorch "
      "| espresso peak MiB | PyTorch peak MiB | memory vs PyTorch |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
variants = [(r["model"], r.get("deterministic", 0)) for r in rows if r["framework"] == "espresso"]
# A model espresso could not train still gets its PyTorch row.
variants += [(r["model"], None) for r in rows if r["framework"] == "pytorch" and r["model"] not in dict(variants)]
for model, deterministic in dict.fromkeys(variants):
    ours = next((r for r in rows if r["model"] == model and r["framework"] == "espresso"
                 and r.get("deterministic", 0) == deterministic), None)
    theirs = next((r for r in rows if r["model"] == model and r["framework"] == "pytorch"), None)
    get = lambda r, k, f: f.format(r[k]) if r and r.get(k) is not None else "–"
    speed = f"{ours['images_per_s'] / theirs['images_per_s']:.2f}x" if ours and theirs else "–"
    memory = (f"{ours['peak_device_mib'] / theirs['peak_device_mib']:.2f}x"
              if ours and theirs and ours.get("peak_device_mib") else "–")
    batch = (ours or theirs)["batch"]
    setting = {0: "any (default)", 1: "deterministic first (ESPRESSO_CONV_DETERMINISTIC=1)", None: "failed"}[deterministic]
    print(f"| {model} | {batch} | {setting} | {get(ours, 'median_ms', '{:.2f}')} | {get(theirs, 'median_ms', '{:.2f}')} "
          f"| {get(ours, 'images_per_s', '{:,.0f}')} | {get(theirs, 'images_per_s', '{:,.0f}')} | {speed} "
          f"| {get(ours, 'peak_device_mib', '{:,.0f}')} | {get(theirs, 'peak_device_mib', '{:,.0f}')} | {memory} |")
PY
