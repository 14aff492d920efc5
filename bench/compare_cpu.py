#!/usr/bin/env python3
"""Reads the JSON lines of `espresso bench --json`, bench/ort/bench.mjs, bench/onnx_torch.py and the load lines
of bench/run_cpu_onnx_bench.sh (one file or stdin) and prints a Markdown table of espresso against ONNX Runtime
and PyTorch per model and batch size. A model and batch size measured in several rounds shows each
framework's fastest round."""
import json
import sys
from pathlib import Path


def model_name(path):
    """../shared/data/onnx/resnet18/model.onnx -> resnet18; the int8 versions of a model (our calibrated
    WORK/resnet18-int8.esp, ORT's WORK/resnet18-qdq/model.onnx) -> "resnet18 int8"."""
    path = Path(path)
    name = path.parent.name if path.name == "model.onnx" else path.stem
    for suffix in ("-int8", "-qdq"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + " int8"
    return name


def main():
    rows = {}
    for line in (open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        cell = rows.setdefault((model_name(r["model"]), r["batch"]), {})
        key = (r["framework"], r["mode"])
        # Several rounds (run_cpu_onnx_bench.sh --rounds): each framework's best round; the first load line.
        if key not in cell or ("median_ms" in r and r["median_ms"] < cell[key]["median_ms"]):
            cell[key] = r
    espresso, ort = ("espresso", "eager"), ("onnxruntime", "eager")
    torch_eager, torch_traced = ("pytorch", "eager"), ("pytorch", "traced")
    load = ("machine", "load")
    print("| model | batch | espresso ms | ORT ms | PyTorch eager ms | PyTorch traced ms | espresso / ORT "
          "| espresso / PyTorch eager | espresso img/s | ORT img/s | PyTorch eager img/s | runs | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, batch), r in sorted(rows.items()):
        def ms(key):
            return f"{r[key]['median_ms']:.2f}" if key in r else "–"

        def ratio(a, b):
            return f"**{r[a]['median_ms'] / r[b]['median_ms']:.2f}×**" if a in r and b in r else "–"

        def machine(field):
            return r[load][field] if load in r else "–"

        def rate(key):
            return f"{r[key]['images_per_s']:,.1f}" if key in r else "–"

        if model.endswith(" int8"):
            continue
        print(f"| {model} | {batch} | {ms(espresso)} | {ms(ort)} | {ms(torch_eager)} | {ms(torch_traced)} "
              f"| {ratio(espresso, ort)} | {ratio(espresso, torch_eager)} | {rate(espresso)} | {rate(ort)} "
              f"| {rate(torch_eager)} | {machine('runs')} | {machine('load_1min')} |")
    int8 = sorted((key, r) for key, r in rows.items() if key[0].endswith(" int8"))
    if not int8:
        return
    print()
    # Both ratios of times: int8 / ORT int8 below 1 means ours is faster; fp32 / int8 is int8's speed-up.
    print("| model | batch | espresso fp32 ms | espresso int8 ms | ORT int8 ms | espresso int8 / ORT int8 "
          "| int8 speed-up over espresso fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def median(result):
        return f"{result['median_ms']:.2f}" if result else "–"

    def quotient(a, b):
        return f"**{a['median_ms'] / b['median_ms']:.2f}×**" if a and b else "–"

    for (model, batch), r in int8:
        fp32 = rows.get((model[: -len(" int8")], batch), {}).get(espresso)
        ours, theirs = r.get(espresso), r.get(ort)
        print(f"| {model} | {batch} | {median(fp32)} | {median(ours)} | {median(theirs)} | {quotient(ours, theirs)} "
              f"| {quotient(fp32, ours)} |")


if __name__ == "__main__":
    main()
