#!/usr/bin/env python3
"""Where a training step's GPU time goes, espresso against PyTorch, by kind of kernel.

Reads espresso's kernels as Nsight Compute lists them and PyTorch's from bench/torch_train.py --profile, and
prints a Markdown table of microseconds per step by kind (convolutions, cuDNN's layout conversions, FFT
convolutions, BatchNorm, pooling, ...). bench/run_train_kernels.sh does it all on the GPU machine; by hand:

  ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \\
      espresso bench MODEL --device cuda --train --batch B --precision P --iterations 1 --warmup 1 \\
      --no-cuda-graphs > espresso.csv      # two steps: warm-up and one timed
  bench/torch_train.py --model NAME --batch B --precision P --profile torch.txt   # three steps
  bench/kernel_times.py espresso.csv torch.txt [--espresso-steps 2] [--torch-steps 3]
"""
import argparse
import collections
import csv
import re

# First match wins: (substring of the lower-cased kernel name, kind).
KINDS = [
    ("nchwtonhwc", "layout conversions"), ("nhwctonchw", "layout conversions"),
    ("fft", "FFT convolutions"), ("cf32cf32", "FFT convolutions"), ("flip_filter", "FFT convolutions"),
    ("wgrad_alg0", "non-tensor-core filter gradients"),
    ("bn_", "BatchNorm"), ("sumpair<double>", "BatchNorm"), ("normalize_scale", "BatchNorm"),
    ("batch_input_grad", "BatchNorm"),
    ("pool", "pooling"), ("window_maxima", "pooling"),
    ("xmma", "convolutions"), ("implicit", "convolutions"), ("cutlass", "convolutions"),
    ("winograd", "convolutions"), ("convolve", "convolutions"),
    ("nvjet", "GEMMs"), ("gemm", "GEMMs"), ("gemv", "GEMMs"),
    ("relu", "ReLU"), ("update", "solver and overflow checks"), ("multi_tensor", "solver and overflow checks"),
    ("non_finite", "solver and overflow checks"), ("convert", "conversions and copies"),
    ("copy", "conversions and copies"), ("channel_run_sums", "bias gradients"),
]


def kind(name):
    lowered = name.lower()
    return next((k for pattern, k in KINDS if pattern in lowered), "other element-wise")


def espresso_times(path, steps):
    lines = [line for line in open(path) if line.startswith('"')]
    rows = list(csv.reader(lines))
    header = rows[0]
    name, time = header.index("Kernel Name"), header.index("gpu__time_duration.sum")
    totals = collections.defaultdict(float)
    for row in rows[2:]:  # the second row holds the units (ns)
        totals[kind(row[name])] += float(row[time].replace(",", "")) / 1000.0 / steps
    return totals


def torch_times(path, steps):
    lines = open(path).read().splitlines()
    columns = re.split(r"\s{2,}", lines[1].strip())
    self_cuda = columns.index("Self CUDA")
    units = {"us": 1.0, "ms": 1000.0, "s": 1e6}
    totals = collections.defaultdict(float)
    for line in lines[3:]:
        fields = re.split(r"\s{2,}", line.strip())
        if len(fields) != len(columns):
            continue
        value = re.fullmatch(r"([\d.]+)(us|ms|s)", fields[self_cuda])
        if value:
            totals[kind(fields[0])] += float(value.group(1)) * units[value.group(2)] / steps
    return totals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("espresso_csv")
    parser.add_argument("torch_profile")
    parser.add_argument("--espresso-steps", type=int, default=2)
    parser.add_argument("--torch-steps", type=int, default=3)
    args = parser.parse_args()
    ours = espresso_times(args.espresso_csv, args.espresso_steps)
    theirs = torch_times(args.torch_profile, args.torch_steps)
    kinds = sorted(set(ours) | set(theirs), key=lambda k: -(ours.get(k, 0) + theirs.get(k, 0)))
    print("| kernels | espresso µs/step | PyTorch µs/step |\n|---|---:|---:|")
    for k in kinds:
        print(f"| {k} | {ours.get(k, 0):,.0f} | {theirs.get(k, 0):,.0f} |")
    print(f"| **all** | **{sum(ours.values()):,.0f}** | **{sum(theirs.values()):,.0f}** |")


if __name__ == "__main__":
    main()
