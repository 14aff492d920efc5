#!/usr/bin/env bash
# GPU training throughput and peak device memory, espresso vs PyTorch eager (issue #22), in one run on
# the GPU machine, from the repo root, with a bundle made by `scripts/gpu_check.sh pack`:
#   NIN-CIFAR10 (bench/models/nin_cifar10.prototxt, batch 128, 32x32) and ResNet-18
#   (bench/models/resnet18.prototxt = torchvision's resnet18, batch 64, 224x224), each trained with
#   `espresso bench --train` and bench/torch_train.py: random data, softmax cross-entropy, SGD with
#   momentum 0.9, in fp32 with TF32 off (cuDNN autotuning on for PyTorch) and in each mixed precision of
#   PRECISIONS (default "fp16 bf16": `--precision` for espresso, AMP with autocast and GradScaler for PyTorch),
#   median wall time per step (device synchronised) over ITERATIONS steps after WARMUP, peak device memory of
#   each framework's allocator. In fp32 espresso runs twice: as it is (any cuDNN algorithm, as PyTorch without
#   torch.use_deterministic_algorithms) and with ESPRESSO_CONV_DETERMINISTIC=1 (deterministic ones first).
#   With REPEATS=N every run is repeated N times and each side's fastest counts (PyTorch's cuDNN autotuning
#   picks differently from one process to the next: NIN fp16 took 3.1 to 5.9 ms a step on one H100).
#   Writes JSON lines and the Markdown table (train_throughput.md) to $OUT.
#   [PRECISIONS="fp16 bf16"] [REPEATS=1] bench/run_train_throughput.sh [ITERATIONS] [WARMUP]
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
for repeat in $(seq "${REPEATS:-1}"); do
for spec in "nin bench/models/nin_cifar10.prototxt 128" "resnet18 bench/models/resnet18.prototxt 64"; do
  read -r name model batch <<<"$spec"
  # Each run in its own process: neither's caches or allocations weigh on the other.
  for run in fp32:0 fp32:1 $(for p in ${PRECISIONS-fp16 bf16}; do echo "$p:0"; done); do
    read -r precision deterministic <<<"${run/:/ }"
    log="$out/espresso_${name}_${precision}_$deterministic.err"
    ESPRESSO_CONV_DETERMINISTIC=$deterministic "$espresso" bench "$model" --device cuda --train --batch "$batch" \
      --precision "$precision" --iterations "$iterations" --warmup "$warmup" --json 2>"$log" |
      sed "s|\"model\": \"[^\"]*\"|\"model\": \"$name\", \"deterministic\": $deterministic|" | tee -a "$rows" ||
      echo "espresso $name $precision failed: $(tail -3 "$log")" >&2
  done
  for precision in fp32 ${PRECISIONS-fp16 bf16}; do
    python3 bench/torch_train.py --model "$name" --batch "$batch" --iterations "$iterations" --warmup "$warmup" \
      --precision "$precision" 2>"$out/torch_${name}_$precision.err" | tee -a "$rows" ||
      echo "pytorch $name $precision failed: $(tail -3 "$out/torch_${name}_$precision.err")" >&2
  done
done
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
print(f"# Training throughput, SGD momentum 0.9, random data; fp32 with TF32 off, mixed precision vs PyTorch AMP\n")
print(f"GPU: {gpu}; PyTorch {torch} eager, cuDNN benchmark on\n")
print("| model | batch | precision | espresso cuDNN algorithms | espresso ms/step | PyTorch ms/step | espresso img/s "
      "| PyTorch img/s | speed vs PyTorch | espresso peak MiB | PyTorch peak MiB | memory vs PyTorch |")
print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
key = lambda r: (r["model"], r.get("precision", "fp32"))
variants = [key(r) + (r.get("deterministic", 0),) for r in rows if r["framework"] == "espresso"]
# A configuration espresso could not train still gets its PyTorch row.
ran = {v[:2] for v in variants}
variants += [key(r) + (None,) for r in rows if r["framework"] == "pytorch" and key(r) not in ran]
for model, precision, deterministic in dict.fromkeys(variants):
    fastest = lambda runs: max(runs, key=lambda r: r["images_per_s"], default=None)
    ours = fastest([r for r in rows if key(r) == (model, precision) and r["framework"] == "espresso"
                    and r.get("deterministic", 0) == deterministic])
    theirs = fastest([r for r in rows if key(r) == (model, precision) and r["framework"] == "pytorch"])
    get = lambda r, k, f: f.format(r[k]) if r and r.get(k) is not None else "–"
    speed = f"{ours['images_per_s'] / theirs['images_per_s']:.2f}x" if ours and theirs else "–"
    memory = (f"{ours['peak_device_mib'] / theirs['peak_device_mib']:.2f}x"
              if ours and theirs and ours.get("peak_device_mib") else "–")
    batch = (ours or theirs)["batch"]
    setting = {0: "any (default)", 1: "deterministic first (ESPRESSO_CONV_DETERMINISTIC=1)", None: "failed"}[deterministic]
    amp = "" if precision == "fp32" else " (AMP)"
    print(f"| {model} | {batch} | {precision}{amp} | {setting} | {get(ours, 'median_ms', '{:.2f}')} "
          f"| {get(theirs, 'median_ms', '{:.2f}')} | {get(ours, 'images_per_s', '{:,.0f}')} "
          f"| {get(theirs, 'images_per_s', '{:,.0f}')} | {speed} "
          f"| {get(ours, 'peak_device_mib', '{:,.0f}')} | {get(theirs, 'peak_device_mib', '{:,.0f}')} | {memory} |")
PY
