#!/usr/bin/env python3
"""Reads the JSON lines of `espresso bench --json` and bench/pytorch_reference.py (one file or stdin) and prints
a Markdown table of espresso against PyTorch per model and batch size, with latency ratios."""
import json
import sys


def main():
    rows = {}
    for line in (open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        model = r["model"].split("/")[-1].replace(".prototxt", "").replace("nin_cifar10", "nin")
        rows.setdefault((model, r["batch"]), {})[(r["framework"], r.get("mode", ""))] = r
    print("| model | batch | espresso graph ms | espresso eager ms | PyTorch eager ms | PyTorch graph ms "
          "| graph / PyTorch eager | graph / PyTorch graph | espresso img/s | PyTorch graph img/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, batch), r in sorted(rows.items()):
        def ms(key):
            return r[key]["median_ms"] if key in r else None
        ours, ours_eager = ms(("espresso", "cuda_graph")), ms(("espresso", "eager"))
        torch_eager, torch_graph = ms(("pytorch", "eager")), ms(("pytorch", "cuda_graph"))
        fmt = lambda v: f"{v:.4f}" if v is not None else "–"
        ratio = lambda a, b: f"{a / b:.2f}" if a is not None and b else "–"
        rate = lambda key: f"{r[key]['images_per_s']:,.0f}" if key in r else "–"
        print(f"| {model} | {batch} | {fmt(ours)} | {fmt(ours_eager)} | {fmt(torch_eager)} | {fmt(torch_graph)} "
              f"| {ratio(ours, torch_eager)} | {ratio(ours, torch_graph)} | {rate(('espresso', 'cuda_graph'))} "
              f"| {rate(('pytorch', 'cuda_graph'))} |")


if __name__ == "__main__":
    main()
