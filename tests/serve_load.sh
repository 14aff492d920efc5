#!/usr/bin/env bash
# Load test of `espresso serve` (ctest Serve.Load64ClientsFor60s, label "load"): Debian's wrk drives 64
# concurrent keep-alive clients for 60 s against 4 models resident on the CPU (LeNet from Caffe's V1 and
# current prototxt forms, LeNet as an .esp package, ONNX mnist-1), each request a real MNIST digit.
# Passes with 0 errors (connect, read, write, timeout, non-2xx); prints requests/s and the latency
# percentiles (p50, p90, p99). Usage: tests/serve_load.sh BUILD_DIR DATA_DIR [SECONDS] [CONNECTIONS]
# Exit 77 (skip) when wrk, python3 or the data are missing.
set -euo pipefail
build=$1
data=${ESPRESSO_DATA:-$2}
seconds=${3:-60}
connections=${4:-64}
cli=$build/bin/espresso
command -v wrk > /dev/null || { echo "SKIP: wrk is not installed (apt-get install wrk)"; exit 77; }
command -v python3 > /dev/null || { echo "SKIP: python3 is missing"; exit 77; }
lenet=$data/caffe/lenet
[ -f "$lenet/lenet_iter_10000.caffemodel" ] && [ -f "$data/onnx/mnist-1/model.onnx" ] && [ -f "$data/mnist/t10k-images-idx3-ubyte.gz" ] ||
  { echo "SKIP: the shared data (LeNet, mnist-1, MNIST) is missing under $data"; exit 77; }

work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$cli" convert "$lenet/lenet.prototxt" -w "$lenet/lenet_iter_10000.caffemodel" -o "$work/lenet.esp" --name lenet \
  --scale 0.00390625 > /dev/null
# One request body per model: the first test digit scaled to [0, 1).
python3 - "$data/mnist/t10k-images-idx3-ubyte.gz" "$work" << 'PY'
import gzip, json, sys
pixels = gzip.open(sys.argv[1]).read()[16:16 + 784]
values = [p / 256.0 for p in pixels]
for model, name in [("caffe_v1", "data"), ("caffe_v2", "data"), ("esp", "data"), ("onnx", "Input3")]:
    body = {"inputs": [{"name": name, "shape": [1, 1, 28, 28], "datatype": "FP32", "data": values}]}
    open(f"{sys.argv[2]}/{model}.json", "w").write(json.dumps(body))
PY

"$cli" serve --listen 127.0.0.1:0 --memory-budget 256M --max-batch 32 --max-queue-delay-us 1000 \
  --models "caffe_v1=$lenet/lenet.prototxt,$lenet/lenet_iter_10000.caffemodel" \
  --models "caffe_v2=$lenet/v2_format/lenet.prototxt,$lenet/lenet_iter_10000.caffemodel" \
  --models "esp=$work/lenet.esp" --models "onnx=$data/onnx/mnist-1/model.onnx" > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  grep -q '^listening on' "$work/serve.log" 2> /dev/null && break
  sleep 0.1
done
port=$(sed -nE '1s/^listening on [^:]+:([0-9]+) .*/\1/p' "$work/serve.log")
[ -n "$port" ] || { echo "the server did not start:"; cat "$work/serve.log"; exit 1; }
url=http://127.0.0.1:$port
for model in caffe_v1 caffe_v2 esp onnx; do
  curl -sf -X POST --data-binary "@$work/$model.json" "$url/v2/models/$model/infer" > /dev/null ||
    { echo "warm-up request to $model failed"; exit 1; }
done

cat > "$work/load.lua" << LUA
local models = {"caffe_v1", "caffe_v2", "esp", "onnx"}
local bodies = {}
for i, m in ipairs(models) do
  local f = io.open("$work/" .. m .. ".json", "rb")
  bodies[i] = f:read("*a")
  f:close()
end
local n = 0
request = function()
  n = n + 1
  local i = (n % #models) + 1
  return wrk.format("POST", "/v2/models/" .. models[i] .. "/infer", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.1f rps=%.1f errors=%d connect=%d read=%d write=%d status=%d timeout=%d p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    e.connect + e.read + e.write + e.status + e.timeout, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
LUA

wrk -t2 -c"$connections" -d"${seconds}s" --timeout 20s --latency -s "$work/load.lua" "$url" | tee "$work/wrk.out"
result=$(grep '^RESULT' "$work/wrk.out")
resident=$(curl -s "$url/metrics" | sed -nE 's/^espresso_resident_models ([0-9]+)$/\1/p')
echo "resident models: $resident"
kill -TERM "$server"
wait "$server" && stopped=0 || stopped=$?
server=""
errors=$(sed -nE 's/.* errors=([0-9]+) .*/\1/p' <<< "$result")
if [ "$errors" != 0 ] || [ "$resident" != 4 ] || [ "$stopped" != 0 ]; then
  echo "FAIL: $errors errors, $resident resident models, server exit $stopped"
  exit 1
fi
echo "PASS: 0 errors with $connections clients for ${seconds} s against 4 resident models ($result)"
