#!/usr/bin/python3
"""Writes a QDQ int8 version of an fp32 ONNX model, the way ONNX Runtime's static quantizer lays it out
(QuantizeLinear/DequantizeLinear around every Conv's input and output, int8 per-channel weights, int32 bias),
from the ranges `espresso quantize --ranges` calibrated; runs it in ONNX Runtime (bench/ort/run_model.mjs)
on real photos; and writes ONNX backend-test folders (model.onnx + test_data_set_K/{input,output}_0.pb)
that `espresso onnx-test` compares with espresso's own run of the same model.

Usage: bench/int8/ort_qdq_check.py MODEL.onnx RANGES.json OUT_DIR CIFAR_BATCH.bin [COUNT]   (Debian python3-onnx,
numpy.) The photos are the first COUNT (8) records of a CIFAR-10 binary batch (real 32x32 photos; no image
decoder is needed), scaled up by pixel repetition to the model's input, RGB, (x - mean) / 58.4.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32).reshape(3, 1, 1)


def qparams(lo, hi):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zero = int(np.clip(np.round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zero)


def make_qdq(model, ranges):
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    # PyTorch's exporter shares equal initializers through Identity nodes.
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    new_nodes, new_inits = [], []
    renamed = {}  # conv output -> dequantized name

    def qdq(name, tag):
        scale, zero = qparams(*ranges[name])
        s, z = f"{tag}_scale", f"{tag}_zero"
        new_inits.extend([numpy_helper.from_array(np.array(scale, dtype=np.float32), s),
                          numpy_helper.from_array(np.array(zero, dtype=np.uint8), z)])
        q, dq = f"{tag}_q", f"{tag}_dq"
        return [helper.make_node("QuantizeLinear", [name, s, z], [q], name=f"{tag}/Q"),
                helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{tag}/DQ")], dq, float(scale)

    quantized = 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        if node.op_type != "Conv" or node.input[0] not in ranges or node.output[0] not in ranges:
            new_nodes.append(node)
            continue
        quantized += 1
        tag = node.name or node.output[0]
        nodes, x_dq, x_scale = qdq(node.input[0], tag + "_x")
        new_nodes.extend(nodes)
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        top = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        w_scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
        w_q = np.clip(np.round(w / w_scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        new_inits.extend([numpy_helper.from_array(w_q, tag + "_w_q"),
                          numpy_helper.from_array(w_scale, tag + "_w_scale"),
                          numpy_helper.from_array(np.zeros(w.shape[0], np.int8), tag + "_w_zero")])
        new_nodes.append(helper.make_node("DequantizeLinear", [tag + "_w_q", tag + "_w_scale", tag + "_w_zero"],
                                          [tag + "_w_dq"], name=tag + "_w/DQ", axis=0))
        inputs = [x_dq, tag + "_w_dq"]
        if len(node.input) > 2 and node.input[2]:
            b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            b_scale = (x_scale * w_scale.astype(np.float64)).astype(np.float32)
            b_q = np.round(b / b_scale).astype(np.int32)
            new_inits.extend([numpy_helper.from_array(b_q, tag + "_b_q"),
                              numpy_helper.from_array(b_scale, tag + "_b_scale"),
                              numpy_helper.from_array(np.zeros(w.shape[0], np.int32), tag + "_b_zero")])
            new_nodes.append(helper.make_node("DequantizeLinear", [tag + "_b_q", tag + "_b_scale", tag + "_b_zero"],
                                              [tag + "_b_dq"], name=tag + "_b/DQ", axis=0))
            inputs.append(tag + "_b_dq")
        del node.input[:]
        node.input.extend(inputs)
        new_nodes.append(node)
        nodes, y_dq, _ = qdq(node.output[0], tag + "_y")
        new_nodes.extend(nodes)
        renamed[node.output[0]] = y_dq
    for out in graph.output:
        if out.name in renamed:
            raise SystemExit(f"graph output {out.name} is a quantized conv output: not handled")
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    return quantized


def cifar_photos(path, count, height, width):
    records = np.fromfile(path, np.uint8).reshape(-1, 3073)[:count, 1:].reshape(-1, 3, 32, 32)
    for rgb in records:
        big = rgb.repeat(-(-height // 32), axis=1).repeat(-(-width // 32), axis=2)[:, :height, :width]
        yield ((big.astype(np.float32) - MEAN) / 58.4)[None]


def main():
    if len(sys.argv) < 5 or len(sys.argv) > 6:
        raise SystemExit(__doc__)
    model_path, ranges_path, out_dir, cifar = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    model = onnx.load(model_path)
    ranges = json.load(open(ranges_path))
    convs = make_qdq(model, ranges)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    os.makedirs(out_dir, exist_ok=True)
    qdq_path = os.path.join(out_dir, "model.onnx")
    onnx.save(model, qdq_path)
    here = os.path.dirname(os.path.abspath(__file__))
    runner = os.path.join(here, "..", "ort", "run_model.mjs")
    photos = np.concatenate(list(cifar_photos(cifar, count, dims[2], dims[3])))
    with tempfile.TemporaryDirectory() as tmp:
        for k, first in enumerate(range(0, count, 50)):  # one test set (one ORT run) per 50 photos
            x = photos[first:first + 50]
            x.tofile(os.path.join(tmp, "in.bin"))
            subprocess.run(["node", runner, qdq_path, os.path.join(tmp, "in.bin"), ",".join(map(str, x.shape)),
                            os.path.join(tmp, "out.bin")], check=True, capture_output=True)
            y = np.fromfile(os.path.join(tmp, "out.bin"), np.float32).reshape(x.shape[0], -1)
            folder = os.path.join(out_dir, f"test_data_set_{k}")
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, "input_0.pb"), "wb").write(numpy_helper.from_array(x).SerializeToString())
            open(os.path.join(folder, "output_0.pb"), "wb").write(numpy_helper.from_array(y).SerializeToString())
    print(f"{qdq_path}: {convs} quantized convolutions; ORT outputs for {count} photos")


if __name__ == "__main__":
    main()
