#!/usr/bin/python3
"""PyTorch CPU inference timings for an ONNX model, in the JSON lines of `espresso bench --json`.

PyTorch cannot read ONNX, so this builds the graph into torch.nn.functional calls (the operators of the
CNNs in ../shared/data/onnx; anything else is an error naming the operators). Before timing, the model's
test_data_set_0 output is reproduced to 1e-4 relative error, so the timings are of the same computation.

Usage: bench/onnx_torch.py MODEL_DIR --batch 1,16 --iterations N [--warmup W] [--threads T] [--trace]
Debian's python3-torch and python3-onnx: run it with /usr/bin/python3.
"""
import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def attributes(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def symmetric_padding(node, attrs):
    """ONNX pads are (begin..., end...); torch pads both sides alike."""
    pads = attrs.get("pads", [0, 0, 0, 0])
    half = len(pads) // 2
    if pads[:half] != pads[half:] or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b""):
        raise NotImplementedError(f"{node.name} ({node.op_type}): asymmetric pads or auto_pad")
    return pads[:half]


def conv(node, attrs, x, w, b=None):
    return F.conv2d(x, w, b, stride=attrs.get("strides", 1), padding=symmetric_padding(node, attrs),
                    dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))


def max_pool(node, attrs, x):
    return F.max_pool2d(x, attrs["kernel_shape"], attrs.get("strides", 1), symmetric_padding(node, attrs),
                        attrs.get("dilations", 1), bool(attrs.get("ceil_mode", 0)))


def average_pool(node, attrs, x):
    return F.avg_pool2d(x, attrs["kernel_shape"], attrs.get("strides", 1), symmetric_padding(node, attrs),
                        bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0)))


def pad(node, attrs, x, pads, value=None):
    if attrs.get("mode", b"constant") != b"constant":
        raise NotImplementedError(f"{node.name} (Pad): mode {attrs['mode']}")
    pads = [int(p) for p in pads]
    half = len(pads) // 2
    torch_pads = []  # last axis first, (begin, end) per axis
    for axis in reversed(range(half)):
        torch_pads += [pads[axis], pads[axis + half]]
    return F.pad(x, torch_pads, value=0.0 if value is None else float(value))


def gemm(node, attrs, a, b, c=None):
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = attrs.get("alpha", 1.0) * (a @ b)
    return y if c is None else y + attrs.get("beta", 1.0) * c


def batch_norm(node, attrs, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


def reshape(node, attrs, x, shape):
    shape = [int(s) for s in shape]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def flatten(node, attrs, x):
    axis = attrs.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def gather(node, attrs, x, indices):
    axis = attrs.get("axis", 0) % x.dim()
    picked = torch.index_select(x, axis, (indices % x.shape[axis]).reshape(-1))
    return picked.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1:])


def clip(node, attrs, x, low=None, high=None):
    """Bounds are attributes before opset 11, constant inputs after: plain floats for the fast kernel."""
    low = attrs.get("min", None if low is None else float(low))
    high = attrs.get("max", None if high is None else float(high))
    return torch.clamp(x, low, high)


def unsqueeze(node, attrs, x, axes=None):
    for axis in sorted(int(a) for a in (attrs["axes"] if axes is None else axes)):
        x = x.unsqueeze(axis)
    return x


OPERATORS = {
    "Add": lambda n, a, x, y: x + y,
    "AveragePool": average_pool,
    "BatchNormalization": batch_norm,
    "Clip": clip,
    "Concat": lambda n, a, *xs: torch.cat(xs, a["axis"]),
    "Conv": conv,
    "Dropout": lambda n, a, x, *rest: x,
    "Flatten": flatten,
    "Gather": gather,
    "Gemm": gemm,
    "GlobalAveragePool": lambda n, a, x: x.mean((2, 3), keepdim=True),
    "Identity": lambda n, a, x: x,
    "MaxPool": max_pool,
    "Mul": lambda n, a, x, y: x * y,
    "Pad": pad,
    "Relu": lambda n, a, x: F.relu(x),
    "Reshape": reshape,
    "Shape": lambda n, a, x: torch.tensor(x.shape, dtype=torch.int64),
    "Softmax": lambda n, a, x: F.softmax(x, a.get("axis", -1)),
    "Unsqueeze": unsqueeze,
}


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph node by node; the initializers and Constant nodes are tensors captured once."""

    def __init__(self, model):
        super().__init__()
        graph = model.graph
        self.constants = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
        self.nodes = []
        unsupported = set()
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = torch.from_numpy(
                    numpy_helper.to_array(attributes(node)["value"]).copy())
            elif node.op_type in OPERATORS:
                self.nodes.append((node, attributes(node), OPERATORS[node.op_type]))
            else:
                unsupported.add(node.op_type)
        if unsupported:
            raise NotImplementedError(f"unsupported ONNX operators: {', '.join(sorted(unsupported))}")
        self.input_name = next(i.name for i in graph.input if i.name not in self.constants)
        self.output_name = graph.output[0].name

    def forward(self, x):
        values = dict(self.constants)
        values[self.input_name] = x
        for node, attrs, operator in self.nodes:
            # An empty input name is an omitted optional input.
            args = [values[name] if name else None for name in node.input]
            while args and args[-1] is None:
                args.pop()
            values[node.output[0]] = operator(node, attrs, *args)
        return values[self.output_name]


def read_tensor(path):
    tensor = onnx.TensorProto()
    tensor.ParseFromString(Path(path).read_bytes())
    return torch.from_numpy(numpy_helper.to_array(tensor).copy())


def check_test_data(module, model_dir):
    """Fails loudly unless the module reproduces the model's reference output."""
    data = Path(model_dir) / "test_data_set_0"
    with torch.inference_mode():
        got = module(read_tensor(data / "input_0.pb"))
    want = read_tensor(data / "output_0.pb")
    error = ((got - want).abs().max() / want.abs().max()).item()
    if got.shape != want.shape or not error <= 1e-4:
        sys.exit(f"{model_dir}: PyTorch output differs from output_0.pb (shape {tuple(got.shape)} vs "
                 f"{tuple(want.shape)}, max relative error {error:.3g}, limit 1e-4)")
    return error


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", help="folder with model.onnx and test_data_set_0/")
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trace", action="store_true", help="also time a torch.jit.trace of the model")
    args = parser.parse_args()
    # Tracing bakes the constant pads, bounds and shapes in, as intended: no warnings about it.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model_path = Path(args.model_dir) / "model.onnx"
    module = OnnxModule(onnx.load(model_path)).eval()
    error = check_test_data(module, args.model_dir)
    image_shape = list(read_tensor(Path(args.model_dir) / "test_data_set_0" / "input_0.pb").shape[1:])
    generator = torch.Generator().manual_seed(1)
    for batch in (int(b) for b in args.batch.split(",")):
        x = torch.rand([batch] + image_shape, generator=generator) * 2 - 1
        runs = {"eager": module}
        if args.trace:
            with torch.no_grad():
                runs["traced"] = torch.jit.freeze(torch.jit.trace(module, x).eval())
        for mode, run in runs.items():
            ms = []
            with torch.inference_mode():
                for i in range(args.warmup + args.iterations):
                    start = time.perf_counter()
                    run(x)
                    if i >= args.warmup:
                        ms.append((time.perf_counter() - start) * 1000)
            median = statistics.median_low(ms)
            print(json.dumps({
                "framework": "pytorch", "mode": mode, "model": str(model_path), "device": "cpu",
                "threads": args.threads, "batch": batch, "median_ms": round(median, 4),
                "p90_ms": round(sorted(ms)[min(len(ms) - 1, len(ms) * 9 // 10)], 4),
                "images_per_s": round(batch * 1000 / median, 1), "max_rel_error_vs_output_0": error,
                "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
