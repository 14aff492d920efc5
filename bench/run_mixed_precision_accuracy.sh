#!/usr/bin/env bash
# Mixed precision training accuracy (issue #22): Caffe's LeNet solver (10,000 iterations on MNIST) and a
# CIFAR-10-size net (bench/models/cifar10_quick_train_test.prototxt, 2,000 iterations of 100 images on
# the 4,000 CIFAR-10 training images ../shared/data holds, tested on its 1,000 test images) trained with
# `espresso train --precision fp32|fp16|bf16` on the GPU, each with two seeds so that the spread between
# seeds shows the noise. Prints final test accuracy and wall time per run; writes accuracy.md to $OUT.
#   ESPRESSO_DATA=<shared data subset> bench/run_mixed_precision_accuracy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lenet_data.sh
"$espresso" convert-data --format cifar10 "$data/cifar10" "$work/cifar_train_lmdb" --split train >/dev/null
"$espresso" convert-data --format cifar10 "$data/cifar10" "$work/cifar_test_lmdb" --split test >/dev/null
sed -e "s|TRAIN_LMDB|$work/cifar_train_lmdb|" -e "s|TEST_LMDB|$work/cifar_test_lmdb|" \
  bench/models/cifar10_quick_train_test.prototxt >"$work/cifar10_quick_train_test.prototxt"
rows="$out/accuracy.jsonl"
: >"$rows"
for seed in 1 2; do
  cat >"$work/cifar_solver.prototxt" <<SOLVER
net: "$work/cifar10_quick_train_test.prototxt"
test_iter: 10
test_interval: 2000
base_lr: 0.001
momentum: 0.9
weight_decay: 0.004
lr_policy: "fixed"
max_iter: 2000
display: 500
random_seed: $seed
snapshot_after_train: false
snapshot_prefix: "$work/cifar"
SOLVER
  sed -i "/random_seed/d" "$work/examples/mnist/lenet_solver.prototxt"
  echo "random_seed: $seed" >>"$work/examples/mnist/lenet_solver.prototxt"
  for precision in fp32 fp16 bf16; do
    for net in lenet cifar; do
      solver=$([ $net = lenet ] && echo examples/mnist/lenet_solver.prototxt || echo "$work/cifar_solver.prototxt")
      log="$out/${net}_${precision}_$seed.log"
      start=$(date +%s.%N)
      (cd "$work" && "$espresso" train "$solver" --device cuda --precision "$precision") >"$log" 2>&1 ||
        echo "$net $precision seed $seed failed: $(tail -2 "$log")" >&2
      end=$(date +%s.%N)
      python3 - "$net" "$precision" "$seed" "$start" "$end" "$log" <<'PY' | tee -a "$rows"
import json, re, sys
net, precision, seed, start, end, log = sys.argv[1:]
text = open(log).read()
accuracy = re.findall(r"accuracy = ([0-9.]+)", text)
skipped = len(re.findall(r"update skipped", text))
print(json.dumps({"net": net, "precision": precision, "seed": int(seed), "seconds": round(float(end) - float(start), 2),
                  "accuracy": float(accuracy[-1]) if accuracy else None, "skipped_updates": skipped}))
PY
    done
  done
done
python3 - "$rows" <<'PY' | tee "$out/accuracy.md"
import json, subprocess, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
print(f"# Mixed precision training accuracy, {gpu}\n")
print("| net | precision | seed 1 accuracy | seed 2 accuracy | seconds (seed 1) | fp16 updates skipped |")
print("|---|---|---:|---:|---:|---:|")
for net in ("lenet", "cifar"):
    for precision in ("fp32", "fp16", "bf16"):
        runs = {r["seed"]: r for r in rows if r["net"] == net and r["precision"] == precision}
        acc = lambda s: f"{runs[s]['accuracy']:.4f}" if s in runs and runs[s]["accuracy"] is not None else "–"
        secs = f"{runs[1]['seconds']:.2f}" if 1 in runs else "–"
        skipped = sum(r["skipped_updates"] for r in runs.values())
        print(f"| {net} | {precision} | {acc(1)} | {acc(2)} | {secs} | {skipped} |")
PY
