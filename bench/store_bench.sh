#!/usr/bin/env bash
# The model store on loopback: pull MB/s of a large package into an empty cache, and search latency
# over 10,000 model cards (docs/store.md). Writes bench/results/DATE-store-loopback.md.
# Usage: bench/store_bench.sh [PACKAGE_MB=200] [CARDS=10000] [QUERIES=1000]   (after a build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build --target espresso_bench_store >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="bench/results/$(date -u +%Y-%m-%d)-store-loopback.md"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
result=$(build/bin/espresso_bench_store "$work/bench" "${1:-200}" "${2:-10000}" "${3:-1000}")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "# Model store on loopback ($(date -u +%Y-%m-%d))"
  echo
  echo "\`bench/store_bench.sh ${1:-200} ${2:-10000} ${3:-1000}\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "server and client in one process (\`store::Server\` on 127.0.0.1, \`store::Client\`), files on $(df -T "$work" | awk 'NR==2 {print $2}');"
  echo "load average before / after: $load_before / $load_after."
  echo
  echo '```'
  echo "$result"
  echo '```'
} > "$out"
cat "$out"
