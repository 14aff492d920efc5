#!/usr/bin/python3
"""Quantizes an fp32 ONNX model into ONNX Runtime's QOperator format (QLinearConv with its ReLU/ReLU6 folded into
the output range, com.microsoft QLinearAdd, QLinearConcat, QLinearGlobalAveragePool and QGemm, MaxPool and
Flatten on uint8), the way ORT's static quantizer lays it out: per-tensor uint8 activations with min/max ranges
calibrated in ONNX Runtime on real photos, int8 weights per output channel, int32 biases. Then runs the
quantized model in ONNX Runtime (onnxruntime-node, bench/ort) and in espresso (its Python module) on other
photos and prints how far apart they are: the share of photos with the same top-1 class (and with espresso's
top class among ORT's equal-valued top classes: 8-bit logits tie), and the largest difference in steps of the
output's quantization.

Usage: PYTHONPATH=build/python bench/int8/ort_qoperator_check.py MODEL.onnx CIFAR_BATCH.bin OUT.onnx [TEST_COUNT]
(Debian python3-onnx, numpy; the photos are CIFAR-10 binary records scaled up by pixel repetition, RGB,
(x - mean) / 58.4, as in ort_qdq_check.py: the first 16 calibrate, the next TEST_COUNT (100) test.)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_qdq_check import cifar_photos, qparams  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MS = "com.microsoft"


def run_ort(model_path, x, outputs):
    """ONNX Runtime's values of `outputs` (names) for input batch x, as float arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        x.astype(np.float32).tofile(os.path.join(tmp, "in"))
        model = onnx.load(model_path)
        spec = {"model": model_path,
                "inputs": [{"name": model.graph.input[0].name, "type": "float32", "dims": list(x.shape),
                            "file": os.path.join(tmp, "in")}],
                "outputs": [{"name": name, "file": os.path.join(tmp, f"out{i}")} for i, name in enumerate(outputs)]}
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f)
        dims = json.loads(subprocess.run(
            ["node", os.path.join(ROOT, "tests/ort/run_onnx.mjs"), os.path.join(ROOT, "bench/ort/node_modules"),
             os.path.join(tmp, "spec.json")], check=True, capture_output=True, text=True).stdout)
        return {o["name"]: np.fromfile(o["file"], np.float32).reshape(dims[o["name"]]) for o in spec["outputs"]}


def int8_rows(w):
    """w (output channels first) as int8 with a symmetric scale per output channel: (values, scales)."""
    top = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8), scale


def calibrate(model_path, photos):
    """min/max of every node output over the calibration photos."""
    model = onnx.load(model_path)
    names = [out for node in model.graph.node for out in node.output]
    known = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "all.onnx")
        onnx.save(model, path)
        values = run_ort(path, photos, names)
    ranges = {name: (float(v.min()), float(v.max())) for name, v in values.items()}
    ranges[model.graph.input[0].name] = (float(photos.min()), float(photos.max()))
    return ranges


def quantize(model, ranges):
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # PyTorch's exporter shares equal initializers through Identity nodes
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    nodes, new_inits, q = [], [], {}  # q: float name -> (quantized name, scale name, zero name, scale)

    def params(name, lo, hi):
        scale, zero = qparams(lo, hi)
        s, z = name + "_scale", name + "_zero"
        new_inits.extend([numpy_helper.from_array(np.array(scale, np.float32), s),
                          numpy_helper.from_array(np.array(zero, np.uint8), z)])
        return s, z, float(scale)

    def output_of(node):
        """The tensor a node's quantized output stands for: a sole ReLU/Clip(0, x) reader's output is folded in."""
        out = node.output[0]
        after = readers.get(out, [])
        if len(after) == 1 and after[0].op_type in ("Relu", "Clip"):
            return after[0].output[0]
        return out

    x = graph.input[0].name
    s, z, scale = params(x + "_q", *ranges[x])
    nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [x + "_q"]))
    q[x] = (x + "_q", s, z, scale)
    for node in graph.node:
        op, ins = node.op_type, list(node.input)
        if op == "Identity" and ins[0] in inits:
            continue
        if op == "Constant":  # Clip's bounds: its output range stands for them
            continue
        if op in ("Relu", "Clip") and node.output[0] in q:
            continue  # folded into the output range of the node before
        out = output_of(node)
        if op == "Conv":
            w = inits[ins[1]].astype(np.float32)
            w_q, w_scale = int8_rows(w)
            tag = out + "_w"
            new_inits.extend([numpy_helper.from_array(w_q, tag), numpy_helper.from_array(w_scale, tag + "_scale"),
                              numpy_helper.from_array(np.zeros(w.shape[0], np.int8), tag + "_zero")])
            xq, xs, xz, x_scale = q[ins[0]]
            ys, yz, y_scale = params(out + "_q", *ranges[out])
            inputs = [xq, xs, xz, tag, tag + "_scale", tag + "_zero", ys, yz]
            if len(ins) > 2 and ins[2]:
                b = np.round(inits[ins[2]].astype(np.float64) / (x_scale * w_scale.astype(np.float64))).astype(np.int32)
                new_inits.append(numpy_helper.from_array(b, out + "_b"))
                inputs.append(out + "_b")
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            nodes.append(helper.make_node("QLinearConv", inputs, [out + "_q"], **attrs))
            q[out] = (out + "_q", ys, yz, y_scale)
        elif op == "Add":
            (aq, as_, az, _), (bq, bs, bz, _) = q[ins[0]], q[ins[1]]
            ys, yz, y_scale = params(out + "_q", *ranges[out])
            nodes.append(helper.make_node("QLinearAdd", [aq, as_, az, bq, bs, bz, ys, yz], [out + "_q"], domain=MS))
            q[out] = (out + "_q", ys, yz, y_scale)
        elif op == "Concat":
            ys, yz, y_scale = params(out + "_q", *ranges[out])
            inputs = [ys, yz]
            for name in ins:
                inputs.extend(q[name][:3])
            axis = {a.name: helper.get_attribute_value(a) for a in node.attribute}["axis"]
            nodes.append(helper.make_node("QLinearConcat", inputs, [out + "_q"], domain=MS, axis=axis))
            q[out] = (out + "_q", ys, yz, y_scale)
        elif op == "GlobalAveragePool":
            xq, xs, xz, _ = q[ins[0]]
            ys, yz, y_scale = params(out + "_q", *ranges[out])
            nodes.append(helper.make_node("QLinearGlobalAveragePool", [xq, xs, xz, ys, yz], [out + "_q"], domain=MS,
                                          channels_last=0))
            q[out] = (out + "_q", ys, yz, y_scale)
        elif op in ("MaxPool", "Flatten"):  # on the quantized values: the scale carries over
            xq, xs, xz, x_scale = q[ins[0]]
            copy = helper.make_node(op, [xq], [out + "_q"])
            copy.attribute.extend(node.attribute)
            nodes.append(copy)
            q[out] = (out + "_q", xs, xz, x_scale)
        elif op == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transB", 0) != 1 or attrs.get("transA", 0) != 0:
                raise SystemExit(f"{node.name}: only Gemm with transB=1 is handled")
            w = inits[ins[1]].astype(np.float32)
            w_q, w_scale = int8_rows(w)
            alpha = attrs.get("alpha", 1.0)
            xq, xs, xz, x_scale = q[ins[0]]
            tag = out + "_w"
            new_inits.extend([numpy_helper.from_array(w_q, tag), numpy_helper.from_array(w_scale, tag + "_scale"),
                              numpy_helper.from_array(np.zeros(w.shape[0], np.int8), tag + "_zero")])
            b = np.round(inits[ins[2]].astype(np.float64) * attrs.get("beta", 1.0) /
                         (alpha * x_scale * w_scale.astype(np.float64))).astype(np.int32)
            new_inits.append(numpy_helper.from_array(b, out + "_b"))
            ys, yz, y_scale = params(out + "_q", *ranges[out])
            nodes.append(helper.make_node("QGemm", [xq, xs, xz, tag, tag + "_scale", tag + "_zero", out + "_b", ys, yz],
                                          [out + "_q"], domain=MS, transB=1, alpha=alpha))
            q[out] = (out + "_q", ys, yz, y_scale)
        else:
            raise SystemExit(f"{node.name}: {op} is not handled")
    result = graph.output[0].name
    rq, rs, rz, r_scale = q[result]
    nodes.append(helper.make_node("DequantizeLinear", [rq, rs, rz], [result]))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)])
    return r_scale



def main():
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    model_path, cifar, out_path = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    model = onnx.load(model_path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    photos = np.concatenate(list(cifar_photos(cifar, 16 + count, dims[2], dims[3])))
    ranges = calibrate(model_path, photos[:16])
    step = quantize(model, ranges)
    onnx.save(model, out_path)
    import espresso
    ours = espresso.load(out_path)
    output = model.graph.output[0].name
    same, tied, worst = 0, 0, 0.0
    for first in range(16, 16 + count, 25):
        x = photos[first:first + 25]
        theirs = run_ort(out_path, x, [output])[output].reshape(len(x), -1)
        mine = ours.run({model.graph.input[0].name: x})[output].reshape(len(x), -1)
        same += int((theirs.argmax(1) == mine.argmax(1)).sum())
        # Quantized logits tie: espresso's top class holds ONNX Runtime's top value.
        tied += int((theirs[np.arange(len(x)), mine.argmax(1)] == theirs.max(1)).sum())
        worst = max(worst, float(np.abs(theirs - mine).max()) / step)
    print(json.dumps({"model": model_path, "quantized": out_path, "photos": count, "same_top1": same / count, "top1_among_tied": tied / count,
                      "max_error_steps": round(worst, 3)}))


if __name__ == "__main__":
    main()
