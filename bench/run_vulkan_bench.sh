#!/usr/bin/env bash
# On the GPU machine, from the repo root, with a bundle made by `scripts/gpu_check.sh pack` (built where
# libvulkan-dev and glslang-tools are installed, so the Vulkan backend is in it) and the Vulkan loader
# carried in .gl/ (docs/vulkan.md): lists the Vulkan devices, runs the Vulkan tests and the layer harness
# on the NVIDIA driver's Vulkan, then times Vulkan against our CUDA backend and PyTorch (fp32, TF32 off, CUDA
# graph replay: bench/torch_precision.py) on LeNet, NIN, SqueezeNet 1.1, ResNet-18 and MobileNetV2 at batch 1
# and 64, and Vulkan with fp16 activations. Models not carried in $ESPRESSO_DATA are exported from torchvision
# there (random weights: the same work). Writes $OUT/vulkan_bench.md (the table) and the logs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/vulkan-bench-out}
mkdir -p "$out"
if [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
# NVIDIA's ICD lies in one of these on the GPU machines (an H200 had the second); it loads only with the glvnd
# libraries carried beside the loader (libglvnd0 and friends in .gl/, docs/vulkan.md).
for nvidia_icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ]; then export VK_DRIVER_FILES=$nvidia_icd; fi
done
eval "$(scripts/gpu_check.sh env)"
espresso=$ESPRESSO_CLI
tests=$(dirname "$ESPRESSO_CLI")/espresso_tests
"$espresso" devices | tee "$out/devices.txt"
"$tests" --gtest_filter='*Vulkan*:Layers.*' >"$out/vulkan_tests.log" 2>&1
tests_status=$?
tail -3 "$out/vulkan_tests.log"
data=${ESPRESSO_DATA:?carry the shared data with caffe/lenet and onnx/}
# The models carried (all five are ~70 MB, over one run's 64 MiB), the torchvision ones exported if not.
exported=$(mktemp -d)
mkdir -p "$exported/onnx" && cp -r "$data/onnx/nin_cifar10" "$exported/onnx/"
python3 bench/torch_precision.py export "$exported" 2>&1 | tail -1
models=()
[ -f "$data/caffe/lenet/lenet_iter_10000.caffemodel" ] &&
  models+=("$data/caffe/lenet/lenet.prototxt -w $data/caffe/lenet/lenet_iter_10000.caffemodel")
for m in nin_cifar10 squeezenet1_1 resnet18 mobilenet_v2; do
  if [ -f "$data/onnx/$m/model.onnx" ]; then models+=("$data/onnx/$m/model.onnx"); else models+=("$exported/onnx/$m/model.onnx"); fi
done
{
  for device in vulkan cuda; do
    for model in "${models[@]}"; do
      # shellcheck disable=SC2086
      "$espresso" bench $model --device $device --batch 1,64 --iterations 100 --json
    done
  done
  for model in "${models[@]}"; do
    # shellcheck disable=SC2086
    "$espresso" bench $model --device vulkan --precision fp16 --batch 1,64 --iterations 100 --json
  done
  python3 bench/torch_precision.py time "$exported" --batch 1,64 --iterations 100
} 2>&1 | tee "$out/vulkan_bench.jsonl"
python3 - "$out/vulkan_bench.jsonl" <<'PY' | tee "$out/vulkan_bench.md"
import json, sys
rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    precision = r.get("precision", "fp32")
    parts = r["model"].split("/")
    model = parts[-2] if parts[-1] == "model.onnx" else parts[-1].replace(".prototxt", "")
    who = "pytorch" if r["framework"] == "pytorch" else r["device"].split(":")[0]
    if precision == "fp16" and who == "vulkan":
        who = "vulkan fp16"
    elif precision != "fp32":
        continue
    rows.setdefault((model, r["batch"]), {})[who] = r
print("| model | batch | Vulkan ms | CUDA ms | PyTorch ms | Vulkan / CUDA | Vulkan / PyTorch | Vulkan fp16 ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for (model, batch), r in sorted(rows.items()):
    v, c, t, h = r.get("vulkan"), r.get("cuda"), r.get("pytorch"), r.get("vulkan fp16")
    ms = lambda x: f"{x['median_ms']:.4f}" if x else "–"
    ratio = lambda a, b: f"{a['median_ms'] / b['median_ms']:.2f}" if a and b else "–"
    print(f"| {model} | {batch} | {ms(v)} | {ms(c)} | {ms(t)} | {ratio(v, c)} | {ratio(v, t)} | {ms(h)} |")
PY
echo "Vulkan tests exit status: $tests_status" | tee -a "$out/vulkan_bench.md"
exit "$tests_status"
