#!/usr/bin/env python3
"""PyTorch's cold load of the weights espresso_bench_load loads: torch.load(path) + .to("cuda") + sync.

    pytorch_load.py [--repeats 7] [--workdir DIR] NAME=MODEL...

MODEL is an .onnx file (its initializers, read with the onnx package) or an .esp package (its tensor
table, read with numpy), so that both frameworks load the same weights. Each becomes a state_dict
saved with torch.save; the timing starts at torch.load and ends when every tensor is on the GPU.
Like espresso_bench_load, each model is timed with the .pt file in the page cache and dropped from it
(posix_fadvise) first, after one untimed load that starts CUDA. Prints one JSON object per line.
"""
import argparse
import json
import os
import statistics
import struct
import tempfile
import time

import numpy as np
import torch

ESP_MAGIC = b"\x89ESP\r\n\x1a\n"
ESP_DTYPES = {"f32": np.float32, "f16": np.float16}


def onnx_state_dict(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    return {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in model.graph.initializer}


def esp_state_dict(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != ESP_MAGIC:
        raise SystemExit(f"{path}: not an .esp package")
    manifest_offset, manifest_bytes, data_offset = struct.unpack_from("<QQQ", data, 16)
    manifest = json.loads(data[manifest_offset:manifest_offset + manifest_bytes])
    state = {}
    for entry in manifest["tensors"]:
        if entry["dtype"] not in ESP_DTYPES:
            raise SystemExit(f"{path}: tensor {entry['name']} has dtype {entry['dtype']}, which this script skips")
        start = data_offset + entry["offset"]
        values = np.frombuffer(data, dtype=ESP_DTYPES[entry["dtype"]], count=int(np.prod(entry["shape"], dtype=np.int64)),
                               offset=start)
        state[entry["name"]] = torch.from_numpy(values.reshape(entry["shape"]).copy())
    return state


def drop_from_page_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load_to_gpu(path):
    start = time.perf_counter()
    state = torch.load(path)
    on_gpu = {name: tensor.to("cuda") for name, tensor in state.items()}
    torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) * 1000.0
    return elapsed, on_gpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="NAME=MODEL")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", default=None, help="where the .pt files go (default: a temporary folder)")
    args = parser.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="pytorch_load_")
    saved = []
    for item in args.models:
        name, _, model = item.partition("=")
        if not model:
            raise SystemExit(f"'{item}' is not NAME=MODEL")
        state = esp_state_dict(model) if model.endswith(".esp") else onnx_state_dict(model)
        pt = os.path.join(workdir, name + ".pt")
        torch.save(state, pt)
        saved.append((name, pt, sum(t.numel() * t.element_size() for t in state.values())))

    torch.cuda.init()
    load_to_gpu(saved[0][1])
    for page_cache in ("cached", "evicted"):
        for name, pt, weight_bytes in saved:
            times = []
            for _ in range(args.repeats):
                if page_cache == "evicted":
                    drop_from_page_cache(pt)
                elapsed, on_gpu = load_to_gpu(pt)
                del on_gpu
                times.append(elapsed)
            print(json.dumps({"bench": "pytorch_load", "model": name, "page_cache": page_cache,
                              "weight_bytes": weight_bytes, "median_ms": round(statistics.median(times), 3),
                              "min_ms": round(min(times), 3), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
