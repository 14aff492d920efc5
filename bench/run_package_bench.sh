#!/usr/bin/env bash
# The .esp runtime benchmark on a GPU machine, in one go: the GPU model-pool tests, espresso_bench_load
# (cold load, warm switch, concurrent throughput) and bench/pytorch_load.py on the same packages, then
# one side-by-side table.
#
#   bench/run_package_bench.sh DIR
#
# DIR holds gpu-bundle/ (scripts/gpu_check.sh pack, which bundles espresso_bench_load) and the models
# as NAME.esp (`espresso convert model.onnx -o NAME.esp`). Results go to $OUT (default ./bench-out):
# espresso.jsonl, pytorch.jsonl, tests.log and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: $0 DIR (with gpu-bundle/ and NAME.esp files)}
out=${OUT:-$PWD/bench-out}
mkdir -p "$out"
source scripts/gpu_check.sh

bundle=${BUNDLE:-$dir/gpu-bundle}
libs=$(mktemp -d)
tar -C "$libs" -xJf "$bundle/lib.tar.xz"
export LD_LIBRARY_PATH="$libs/lib:$(cuda_library_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)

models=()
for esp in "$dir"/*.esp; do models+=("$(basename "$esp" .esp)=$esp"); done
[ ${#models[@]} -gt 0 ] || { echo "no .esp files in $dir" >&2; exit 2; }

if [ -x "$bundle/bin/espresso_tests" ]; then
  # A failing test is reported but does not stop the benchmark.
  "$bundle/bin/espresso_tests" --gtest_filter='ModelPool*:Package*' >"$out/tests.log" 2>&1 ||
    echo "GPU tests FAILED (exit status $?): see tests.log"
  tail -4 "$out/tests.log"
fi
"$bundle/bin/espresso_bench_load" --device cuda:0 --repeats "${REPEATS:-5}" --iterations "${ITERATIONS:-50}" \
  "${models[@]}" | tee "$out/espresso.jsonl"
PYTHONUNBUFFERED=1 python3 bench/pytorch_load.py --repeats "${REPEATS:-5}" "${models[@]}" | tee "$out/pytorch.jsonl"

python3 - "$out" "$gpu" <<'PY' | tee "$out/table.md"
import json, sys, datetime
out, gpu = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for f in ("espresso.jsonl", "pytorch.jsonl") for l in open(f"{out}/{f}") if l.startswith("{")]
cold = {(r["model"], r["page_cache"]): r for r in rows if r["bench"] == "cold"}
torch = {(r["model"], r["page_cache"]): r for r in rows if r["bench"] == "pytorch_load"}
print(f"## .esp runtime on {gpu}, {datetime.date.today()}\n")
print("Cold load: espresso = open .esp, verify checksums, weights on the GPU, first inference done; "
      "PyTorch = torch.load(.pt) + .to('cuda') + sync of the same weights (no inference). Medians.\n")
print("| model | weights MB | page cache | espresso cold ms | (read+verify / upload / context+1st inference) "
      "| PyTorch load ms | espresso / PyTorch |")
print("|---|---:|---|---:|---|---:|---:|")
for key in sorted(cold):
    e, t = cold[key], torch.get(key)
    ratio = f"{e['median_ms'] / t['median_ms']:.2f}x" if t else "-"
    print(f"| {key[0]} | {e['weight_bytes'] / 1e6:.1f} | {key[1]} | {e['median_ms']:.1f} | "
          f"{e['read_verify_ms']:.1f} / {e['upload_ms']:.1f} / {e['first_inference_ms']:.1f} | "
          f"{t['median_ms']:.1f} | {ratio} |" if t else "| - | - |")
for r in rows:
    if r["bench"] == "switch":
        print(f"\nWarm switch among {r['models']} resident models ({r['switches']} switches): acquire() median "
              f"{r['acquire_median_ms'] * 1000:.1f} us, p99 {r['acquire_p99_ms'] * 1000:.1f} us; acquire + inference "
              f"median {r['switch_and_run_median_ms']:.3f} ms; loads during switching: {r['loads_during_switching']}, "
              f"new contexts: {r['contexts_created']}.")
held = [r for r in rows if r["bench"] == "held"]
if held:
    print("Inference on a held context: " + ", ".join(f"{r['model']} {r['median_ms']:.3f} ms" for r in held) + ".")
for r in rows:
    if r["bench"] == "concurrent":
        print(f"\nConcurrent: {r['models']} models on {r['models']} threads, {r['inferences']:.0f} inferences: "
              f"{r['concurrent_per_s']:.0f}/s vs {r['sequential_per_s']:.0f}/s one model after another "
              f"({r['sequential_ms'] / r['concurrent_ms']:.2f}x).")
PY
