#!/usr/bin/env bash
# Caffe's LeNet solver on the CPU (issue #22): espresso and BVLC Caffe (`caffe`, e.g. Debian's caffe-cpu
# where the release has it) train Caffe's own lenet_solver.prototxt and lenet_train_test.prototxt on the
# same MNIST LMDBs, one after the other, ITERATIONS iterations (default 10,000, the solver's own). For
# each: wall time, peak resident memory (/usr/bin/time -v, "Maximum resident set size") and the final
# test accuracy. Prints a markdown table; the logs stay in $OUT (default a temporary folder).
#   bench/run_train_memory_bench.sh [ITERATIONS]
# Environment: ESPRESSO (default build/bin/espresso), CAFFE (default: `caffe` on the PATH; skipped when
# absent), ESPRESSO_DATA (default ../shared/data), THREADS (default: all cores, for both).
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-10000}
espresso=$(realpath "${ESPRESSO:-build/bin/espresso}")
caffe=${CAFFE:-$(command -v caffe || true)}
data=$(realpath "${ESPRESSO_DATA:-../shared/data}")
threads=${THREADS:-$(nproc)}
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian package time)" >&2; exit 1; }
work=$(mktemp -d)
out=${OUT:-$work/logs}
mkdir -p "$out" "$work/examples/mnist"
trap 'rm -rf "$work/examples"' EXIT
cp "$data/caffe/lenet/v2_format/lenet_solver.prototxt" "$data/caffe/lenet/v2_format/lenet_train_test.prototxt" \
  "$work/examples/mnist/"
# Caffe built without CUDA refuses solver_mode GPU; espresso ignores it (--device picks).
sed -i -e "s/^max_iter: .*/max_iter: $iterations/" -e "s/^solver_mode: .*/solver_mode: CPU/" \
  -e "s/^snapshot: .*/snapshot: 0/" "$work/examples/mnist/lenet_solver.prototxt"
"$espresso" convert-data --format idx "$data/mnist" "$work/examples/mnist/mnist_train_lmdb" --split train >/dev/null
"$espresso" convert-data --format idx "$data/mnist" "$work/examples/mnist/mnist_test_lmdb" --split test >/dev/null

# One run: NAME COMMAND...; prints a JSON line.
measure() {
  local name=$1
  shift
  local log="$out/$name.log"
  local start end
  start=$(date +%s.%N)
  (cd "$work" && OPENBLAS_NUM_THREADS=$threads ESPRESSO_NUM_THREADS=$threads /usr/bin/time -v "$@") >"$log" 2>&1
  end=$(date +%s.%N)
  local rss accuracy
  rss=$(grep 'Maximum resident set size' "$log" | grep -o '[0-9]*$')
  accuracy=$(grep -o 'Test net output #[0-9]*: accuracy = [0-9.]*' "$log" | tail -1 | grep -o '[0-9.]*$')
  python3 -c "import json; print(json.dumps({'framework': '$name', 'seconds': round($end - $start, 1), \
'peak_rss_mb': round($rss / 1024, 1), 'test_accuracy': float('${accuracy:-nan}')}))"
}
{
  measure espresso "$espresso" train examples/mnist/lenet_solver.prototxt --device cpu --threads "$threads" \
    --report-memory
  if [ -n "$caffe" ]; then
    measure caffe "$caffe" train --solver=examples/mnist/lenet_solver.prototxt
  else
    echo "BVLC Caffe: no \`caffe\` on the PATH (set CAFFE=...); skipped" >&2
  fi
} | tee "$out/train_memory.jsonl"
python3 - "$out/train_memory.jsonl" "$iterations" "$threads" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print(f"\n# Caffe LeNet solver on the CPU, {sys.argv[2]} iterations (batch 64), {sys.argv[3]} threads\n")
print("| framework | wall s | peak RSS MB | final test accuracy |")
print("|---|---:|---:|---:|")
for r in rows:
    print(f"| {r['framework']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.1f} | {r['test_accuracy']:.4f} |")
PY
echo "logs: $out"
