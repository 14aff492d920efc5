#!/usr/bin/env python3
"""CPU time (user + system, all threads) of one espresso forward pass, a number less hurt by other work on a
shared machine than wall time: each model runs `espresso bench` twice, with K and K + N timed passes, and the
difference of the two processes' CPU times over N is one pass's (loading and planning cancel out). Best of
--repeats such pairs.

Usage: bench/cpu_time_per_forward.py [--espresso BIN] [--threads T] [--batch B] [--passes N] [--repeats R]
                                     [MODEL_DIR_OR_ONNX ...]   (default: the four models of bench/run_cpu_onnx_bench.sh)
"""
import argparse
import json
import os
import resource
import subprocess
from pathlib import Path


def cpu_seconds(command):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    data = Path(os.environ.get("ESPRESSO_DATA", "../shared/data")) / "onnx"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--espresso", default=os.environ.get("ESPRESSO_CLI", "build/bin/espresso"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    models = args.models or [str(data / m) for m in ("nin_cifar10", "squeezenet1_1", "resnet18", "mobilenet_v2")]
    for model in models:
        onnx = str(Path(model) / "model.onnx") if Path(model).is_dir() else model
        def run(passes):
            return cpu_seconds([args.espresso, "bench", onnx, "--device", "cpu", "--batch", str(args.batch),
                                "--iterations", str(passes), "--warmup", "2", "--threads", str(args.threads)])
        best = min((run(10 + args.passes) - run(10)) / args.passes for _ in range(args.repeats))
        print(json.dumps({"framework": "espresso", "mode": "cpu_time", "model": onnx, "batch": args.batch,
                          "threads": args.threads, "cpu_ms_per_forward": round(best * 1000, 3),
                          "passes": args.passes, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
