#!/usr/bin/env bash
# CPU inference: espresso against ONNX Runtime (onnxruntime-node 1.20.1) and PyTorch (Debian python3-torch)
# on the four ONNX models of ../shared/data/onnx, batch 1 and 16, all with the same thread count.
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
data=${ESPRESSO_DATA:-../shared/data}/onnx
python=/usr/bin/python3  # Debian's python3-torch and python3-onnx live there
models=(nin_cifar10 squeezenet1_1 resnet18 mobilenet_v2)

[ -x "$espresso" ] || { echo "no $espresso: build espresso first (or set ESPRESSO_CLI)" >&2; exit 2; }
"$python" -c 'import torch, onnx' 2>/dev/null ||
  { echo "$python cannot import torch and onnx: apt-get install python3-torch python3-onnx" >&2; exit 2; }
if [ ! -d bench/ort/node_modules/onnxruntime-node ]; then
  (cd bench/ort && npm install --ignore-scripts --no-audit --no-fund >&2)
fi

# Timed runs per model and batch size: about 3 s of them (10 to 300), from a short espresso probe, so fast
# models get enough runs for a stable median on a shared machine; the whole run takes ~5 minutes on 2 cores.
iterations_for() {
  "$espresso" bench "$1" --batch "$2" --iterations 3 --warmup 1 --threads "$threads" --json |
    "$python" -c 'import json, sys; print(min(300, max(10, int(3000 / json.load(sys.stdin)["median_ms"]))))'
}

jsonl=$(mktemp)
trap 'rm -f "$jsonl"' EXIT
load_before=$(uptime)
for round in $(seq "$rounds"); do
  for model in "${models[@]}"; do
    onnx=$data/$model/model.onnx
    image_shape=$("$python" -c 'import sys, onnx
t = onnx.load_tensor(sys.argv[1])
print(",".join(str(d) for d in t.dims[1:]))' "$data/$model/test_data_set_0/input_0.pb")
    for batch in 1 16; do
      n=$(iterations_for "$onnx" "$batch")
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
    done
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
