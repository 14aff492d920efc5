#!/usr/bin/env bash
# Batched vs unbatched throughput of `espresso serve` (issue #15's acceptance: batched >= 3x unbatched for
# LeNet and ResNet-18 on the GPU). For each model the server runs twice on the same device, once with
# --max-batch 1 (every request alone) and once with dynamic batching (--max-batch B, --max-queue-delay-us
# Q); wrk drives C concurrent keep-alive clients for S seconds, each request one image sent with the
# binary tensor data extension (so JSON parsing does not hide the model's cost). Both runs use one
# worker per model. Prints a Markdown table (requests/s, p50/p99 latency, mean batch from /metrics).
#
# Usage: bench/serve_bench.sh [DEVICE] [SECONDS] [CONNECTIONS]    (defaults: cpu 20 64)
#   env: BUILD (default build), DATA (default ../shared/data), MAX_BATCH (64), QUEUE_DELAY_US (2000),
#        MODELS ("lenet resnet18"; "gap224" is the request-path proxy),
#        PAD (--pad-batches: gpu, on, off; "on" makes a CPU run take the GPU's path of padded batches),
#        WORKERS (1: batches of one model run one at a time; more overlap copying and compute),
#        WRK_THREADS (2: wrk's threads; on a 16-core machine 4 keep up with ResNet-18's 602 KB bodies)
# The server gets one HTTP thread per connection (--http-threads), so no keep-alive client waits for one.
# On the H200: ESPRESSO_CMAKE_ARGS=-DESPRESSO_CUDA=ON build, then bench/serve_bench.sh cuda 20 128
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
device=${1:-cpu}
seconds=${2:-20}
connections=${3:-64}
build=${BUILD:-$here/build}
data=${DATA:-$here/../shared/data}
max_batch=${MAX_BATCH:-64}
models=${MODELS:-lenet resnet18}
delay=${QUEUE_DELAY_US:-2000}
workers=${WORKERS:-1}
pad=${PAD:-gpu}
wrk_threads=${WRK_THREADS:-2}
http_threads=$((connections > 128 ? connections : 128))
cli=$build/bin/espresso
command -v wrk > /dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# gap224: ResNet-18's request (1x3x224x224 FP32, 602 KB) into a model whose compute is negligible (global
# average pooling and a 3->10 InnerProduct with filler weights), so its throughput is the request path's.
cat > "$work/gap224.prototxt" << 'PROTO'
name: "gap224"
layer { name: "input" type: "Input" top: "input" input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } } }
layer { name: "pool" type: "Pooling" bottom: "input" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
PROTO

# One binary-extension request body per model: JSON header, then the image's FP32 bytes.
python3 - "$work" << 'PY'
import json, random, struct, sys
random.seed(15)
for model, name, shape in [("lenet", "data", [1, 1, 28, 28]), ("resnet18", "input", [1, 3, 224, 224]),
                           ("gap224", "input", [1, 3, 224, 224])]:
    count = 1
    for d in shape:
        count *= d
    raw = struct.pack(f"<{count}f", *[random.random() for _ in range(count)])
    header = json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}})
    open(f"{sys.argv[1]}/{model}.header", "w").write(str(len(header.encode())))
    open(f"{sys.argv[1]}/{model}.body", "wb").write(header.encode() + raw)
PY

run() {  # model spec max_batch
  local model=$1 spec=$2 batch=$3
  "$cli" serve --listen 127.0.0.1:0 --device "$device" --memory-budget 2G --max-batch "$batch" \
    --max-queue-delay-us "$delay" --workers "$workers" --pad-batches "$pad" --http-threads "$http_threads" --max-concurrency 4096 --models "$model=$spec" > "$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do
    grep -q '^listening on' "$work/serve.log" 2> /dev/null && break
    sleep 0.1
  done
  local port
  port=$(sed -nE '1s/^listening on [^:]+:([0-9]+) .*/\1/p' "$work/serve.log")
  [ -n "$port" ] || { cat "$work/serve.log" >&2; exit 1; }
  local url=http://127.0.0.1:$port
  local length
  length=$(cat "$work/$model.header")
  curl -sf -X POST -H "Inference-Header-Content-Length: $length" --data-binary "@$work/$model.body" \
    "$url/v2/models/$model/infer" > /dev/null || { echo "warm-up of $model failed" >&2; cat "$work/serve.log" >&2; exit 1; }
  cat > "$work/bench.lua" << LUA
wrk.method = "POST"
local f = io.open("$work/$model.body", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Inference-Header-Content-Length"] = "$length"
wrk.headers["Content-Type"] = "application/octet-stream"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.2f %.2f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
  # A short warm-up at full concurrency (plans for the batch sizes, CUDA graphs), then the measurement.
  wrk -t"$wrk_threads" -c"$connections" -d3s --timeout 60s -s "$work/bench.lua" "$url/v2/models/$model/infer" > /dev/null
  # Requests of the warm-up's closed connections still run: wait until none is in flight.
  for _ in $(seq 600); do
    [ "$(curl -s "$url/metrics" | sed -nE 's/^espresso_requests_in_flight ([0-9]+)$/\1/p')" = 0 ] && break
    sleep 0.5
  done
  local before after
  before=$(curl -s "$url/metrics" | awk -v m="$model" '$1 ~ "espresso_batch_size_(sum|count)\\{model=\""m"\"\\}" {printf "%s ", $2}')
  read -r rps p50 p99 errors < <(wrk -t"$wrk_threads" -c"$connections" -d"${seconds}s" --timeout 60s -s "$work/bench.lua" \
    "$url/v2/models/$model/infer" | sed -nE 's/^RESULT //p')
  after=$(curl -s "$url/metrics" | awk -v m="$model" '$1 ~ "espresso_batch_size_(sum|count)\\{model=\""m"\"\\}" {printf "%s ", $2}')
  local mean_batch
  mean_batch=$(python3 -c "b='$before'.split(); a='$after'.split(); print('%.1f' % ((float(a[0])-float(b[0]))/max(1.0, float(a[1])-float(b[1])))) ")
  kill -TERM "$server"
  wait "$server" || true
  server=""
  echo "$rps $p50 $p99 $errors $mean_batch"
}

echo "| model | device | clients | max batch | requests/s | p50 ms | p99 ms | mean batch | errors | batched / unbatched |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for entry in "lenet|$data/caffe/lenet/lenet.prototxt,$data/caffe/lenet/lenet_iter_10000.caffemodel" \
             "resnet18|$data/onnx/resnet18/model.onnx" "gap224|$work/gap224.prototxt"; do
  IFS='|' read -r model spec <<< "$entry"
  [[ " $models " == *" $model "* ]] || continue
  read -r rps1 p50_1 p99_1 err1 mb1 < <(run "$model" "$spec" 1)
  read -r rpsb p50_b p99_b errb mbb < <(run "$model" "$spec" "$max_batch")
  ratio=$(python3 -c "print('%.2f' % ($rpsb / max($rps1, 1e-9)))")
  echo "| $model | $device | $connections | 1 | $rps1 | $p50_1 | $p99_1 | $mb1 | $err1 | |"
  echo "| $model | $device | $connections | $max_batch | $rpsb | $p50_b | $p99_b | $mbb | $errb | **${ratio}x** |"
done
