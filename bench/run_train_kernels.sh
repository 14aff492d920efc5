#!/usr/bin/env bash
# Where a GPU training step's time goes, kernel by kernel, espresso against PyTorch (issue #22), on the GPU
# machine from the repo root with a bundle made by `scripts/gpu_check.sh pack`: for each MODEL:PRECISION, Nsight
# Compute lists espresso's kernels over two unrecorded steps (`--no-cuda-graphs`; a first run fills the tactic
# cache, so the listed steps use the chosen cuDNN algorithms), torch.profiler PyTorch's over three
# (bench/torch_train.py --profile), and bench/kernel_times.py sorts both into kinds (convolutions, cuDNN's layout
# conversions, BatchNorm, pooling, ...). Writes the raw lists and kernel_times_MODEL_PRECISION.md to $OUT.
#   bench/run_train_kernels.sh [nin:bf16 resnet18:fp16 ...]     (default: resnet18:fp16 nin:bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
eval "$(scripts/gpu_check.sh env)"
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for spec in "${@:-resnet18:fp16 nin:bf16}"; do
  for run in $spec; do
    name=${run%%:*} precision=${run##*:}
    case $name in
      nin) model=bench/models/nin_cifar10.prototxt batch=128 ;;
      resnet18) model=bench/models/resnet18.prototxt batch=64 ;;
      *) echo "unknown model '$name' (nin, resnet18)" >&2; exit 2 ;;
    esac
    train=("$model" --device cuda --train --batch "$batch" --precision "$precision")
    "$ESPRESSO_CLI" bench "${train[@]}" --iterations 5 --warmup 2 >/dev/null
    "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
      "$ESPRESSO_CLI" bench "${train[@]}" --iterations 1 --warmup 1 --no-cuda-graphs \
      >"$out/ncu_${name}_$precision.csv" 2>"$out/ncu_${name}_$precision.err"
    python3 bench/torch_train.py --model "$name" --batch "$batch" --precision "$precision" --iterations 10 \
      --warmup 10 --profile "$out/torch_${name}_$precision.txt" >/dev/null
    python3 bench/kernel_times.py "$out/ncu_${name}_$precision.csv" "$out/torch_${name}_$precision.txt" |
      tee "$out/kernel_times_${name}_$precision.md"
  done
done
