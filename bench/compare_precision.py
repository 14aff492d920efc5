#!/usr/bin/env python3
"""Reads the JSON lines of bench/run_precision_bench.sh (espresso bench --json --precision P and
bench/torch_precision.py) and prints a Markdown table per model and batch: median ms of a CUDA-graph replay for
espresso fp32/tf32/fp16/bf16/int8 and PyTorch fp32/tf32/fp16, with espresso's speed against PyTorch in the same
precision (PyTorch ms / espresso ms: above 1 means espresso is faster), and espresso's int8 against its own fp16
(fp16 ms / int8 ms)."""
import json
import sys


def main():
    rows = {}
    for line in (open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        model = r["model"].split("/")[-2] if r["model"].endswith(".onnx") else r["model"]
        rows.setdefault((model, r["batch"]), {})[(r["framework"], r.get("precision", "fp32"))] = r["median_ms"]
    ours = ["fp32", "tf32", "fp16", "bf16", "int8"]
    theirs = ["fp32", "tf32", "fp16"]
    print("| model | batch | " + " | ".join(f"espresso {p} ms" for p in ours) + " | " +
          " | ".join(f"PyTorch {p} ms" for p in theirs) + " | " +
          " | ".join(f"speed-up {p}" for p in theirs) + " | int8 / our fp16 |")
    print("|---|---:|" + "---:|" * (len(ours) + 2 * len(theirs) + 1))
    for (model, batch), r in sorted(rows.items()):
        fmt = lambda v: f"{v:.4f}" if v is not None else "–"
        cells = [fmt(r.get(("espresso", p))) for p in ours] + [fmt(r.get(("pytorch", p))) for p in theirs]
        for p in theirs:
            a, b = r.get(("espresso", p)), r.get(("pytorch", p))
            cells.append(f"{b / a:.2f}" if a and b else "–")
        fp16, int8 = r.get(("espresso", "fp16")), r.get(("espresso", "int8"))
        cells.append(f"{fp16 / int8:.2f}" if fp16 and int8 else "–")
        print(f"| {model} | {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
