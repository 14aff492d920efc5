#!/usr/bin/python3
"""Writes ONNX backend-test folders (model.onnx + test_data_set_0/{input,output}_K.pb) for the com.microsoft
quantized operators that ONNX Runtime's quantizer emits in its QOperator format, with ONNX Runtime's own
outputs (onnxruntime-node, pinned in bench/ort) as the expected ones. The folders are committed beside this
script; tests/test_int8.cpp runs them through espresso on the CPU and a GPU.

Usage: /usr/bin/python3 tests/onnx_microsoft/make_tests.py   (Debian python3-onnx, numpy, node, and
bench/ort/node_modules from `cd bench/ort && npm ci --ignore-scripts`)
"""
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MS = "com.microsoft"
rng = np.random.default_rng(7)

ONNX_TYPES = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8, np.float32: TensorProto.FLOAT}
ORT_TYPES = {np.uint8: "uint8", np.int8: "int8", np.float32: "float32"}


def quantized(shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


def const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def qparams(prefix, scale, zero, dtype):
    """A per-tensor scale and zero point as initializers."""
    return [const(prefix + "_scale", np.float32(scale)), const(prefix + "_zero", dtype(zero))]


def run_ort(model_path, inputs, output_names):
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"model": model_path, "inputs": [], "outputs": []}
        for i, (name, value) in enumerate(inputs.items()):
            path = os.path.join(tmp, f"in{i}")
            value.astype(np.float32).tofile(path)
            spec["inputs"].append({"name": name, "type": ORT_TYPES[value.dtype.type], "dims": list(value.shape), "file": path})
        for i, name in enumerate(output_names):
            spec["outputs"].append({"name": name, "file": os.path.join(tmp, f"out{i}")})
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f)
        dims = json.loads(subprocess.run(
            ["node", os.path.join(ROOT, "tests/ort/run_onnx.mjs"), os.path.join(ROOT, "bench/ort/node_modules"),
             os.path.join(tmp, "spec.json")], check=True, capture_output=True, text=True).stdout)
        return [np.fromfile(o["file"], dtype=np.float32).reshape(dims[o["name"]]) for o in spec["outputs"]]


def write_case(name, nodes, inputs, outputs, initializers):
    """inputs: {name: array}; outputs: [(name, dtype)]."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(k, ONNX_TYPES[v.dtype.type], v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, ONNX_TYPES[t], None) for k, t in outputs], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)],
                              producer_name="espresso tests/onnx_microsoft/make_tests.py")
    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(folder, "test_data_set_0"))
    save(model, os.path.join(folder, "model.onnx"))
    results = run_ort(os.path.join(folder, "model.onnx"), inputs, [k for k, _ in outputs])
    data = os.path.join(folder, "test_data_set_0")
    for i, (k, v) in enumerate(inputs.items()):
        with open(os.path.join(data, f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(v, k).SerializeToString())
    for i, ((k, t), v) in enumerate(zip(outputs, results)):
        with open(os.path.join(data, f"output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(v.astype(t), k).SerializeToString())


def elementwise(op, dtype, b_shape):
    zero = 0 if dtype == np.int8 else 128
    inits = qparams("a", 0.05, zero - 3, dtype) + qparams("b", 0.08, zero + 5, dtype) + qparams("c", 0.11, zero + 1, dtype)
    node = helper.make_node(op, ["A", "a_scale", "a_zero", "B", "b_scale", "b_zero", "c_scale", "c_zero"], ["C"], domain=MS)
    suffix = "_broadcast" if b_shape != (2, 3, 4, 5) else ""
    write_case(f"test_{op.lower()}_{np.dtype(dtype).name}{suffix}", [node],
               {"A": quantized((2, 3, 4, 5), dtype), "B": quantized(b_shape, dtype)}, [("C", dtype)], inits)


def unary(op, dtype, shape, attrs, y_scale=0.03, tag=""):
    zero = 0 if dtype == np.int8 else 128
    inits = qparams("x", 0.07, zero + 2, dtype) + qparams("y", y_scale, zero - 4, dtype)
    node = helper.make_node(op, ["X", "x_scale", "x_zero", "y_scale", "y_zero"], ["Y"], domain=MS, **attrs)
    write_case(f"test_{op.lower()}_{np.dtype(dtype).name}{tag}", [node], {"X": quantized(shape, dtype)}, [("Y", dtype)],
               inits)


def concat():
    inits = qparams("y", 0.06, 120, np.uint8)
    inputs, names = {}, ["y_scale", "y_zero"]
    for i, (channels, scale, zero) in enumerate([(2, 0.04, 100), (3, 0.09, 131), (1, 0.06, 120)]):
        inputs[f"X{i}"] = quantized((2, channels, 3, 4), np.uint8)
        inits += qparams(f"x{i}", scale, zero, np.uint8)
        names += [f"X{i}", f"x{i}_scale", f"x{i}_zero"]
    node = helper.make_node("QLinearConcat", names, ["Y"], domain=MS, axis=1)
    write_case("test_qlinearconcat_uint8", [node], inputs, [("Y", np.uint8)], inits)


def qgemm(quantized_output):
    inits = qparams("a", 0.05, 131, np.uint8)
    inits += [const("B", quantized((5, 8), np.int8)), const("b_scale", rng.uniform(0.01, 0.03, 5).astype(np.float32)),
              const("b_zero", np.zeros(5, np.int8)), const("C", rng.integers(-300, 300, 5).astype(np.int32))]
    names = ["A", "a_scale", "a_zero", "B", "b_scale", "b_zero", "C"]
    outputs = [("Y", np.float32)]
    if quantized_output:
        inits += qparams("y", 0.02, 128, np.uint8)
        names += ["y_scale", "y_zero"]
        outputs = [("Y", np.uint8)]
    node = helper.make_node("QGemm", names, ["Y"], domain=MS, transB=1, alpha=0.75)
    write_case("test_qgemm_" + ("uint8" if quantized_output else "float_output"), [node],
               {"A": quantized((3, 8), np.uint8)}, outputs, inits)


def residual_block():
    """QLinearConv → QLinearAdd (the skip) → QLinearGlobalAveragePool → QGemm, as ResNet-18 comes out of
    ONNX Runtime's quantizer."""
    c = 4
    inits = qparams("x", 0.04, 128, np.uint8) + qparams("r", 0.05, 120, np.uint8) + qparams("s", 0.07, 125, np.uint8)
    inits += qparams("p", 0.03, 110, np.uint8) + qparams("g", 0.01, 128, np.uint8)
    inits += [const("W", quantized((c, c, 3, 3), np.int8)), const("w_scale", rng.uniform(0.005, 0.02, c).astype(np.float32)),
              const("w_zero", np.zeros(c, np.int8)), const("bias", rng.integers(-500, 500, c).astype(np.int32)),
              const("G", quantized((10, c), np.int8)), const("g_weight_scale", np.float32(0.02)),
              const("g_weight_zero", np.int8(0))]
    nodes = [
        helper.make_node("QLinearConv", ["X", "x_scale", "x_zero", "W", "w_scale", "w_zero", "r_scale", "r_zero", "bias"],
                         ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("QLinearAdd", ["conv", "r_scale", "r_zero", "X", "x_scale", "x_zero", "s_scale", "s_zero"],
                         ["sum"], domain=MS),
        helper.make_node("QLinearGlobalAveragePool", ["sum", "s_scale", "s_zero", "p_scale", "p_zero"], ["pooled"],
                         domain=MS, channels_last=0),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("QGemm", ["flat", "p_scale", "p_zero", "G", "g_weight_scale", "g_weight_zero", "", "g_scale",
                                   "g_zero"], ["Y"], domain=MS, transB=1),
    ]
    write_case("test_qoperator_residual_block", nodes, {"X": quantized((2, c, 7, 6), np.uint8)}, [("Y", np.uint8)], inits)


def main():
    elementwise("QLinearAdd", np.uint8, (2, 3, 4, 5))
    elementwise("QLinearAdd", np.int8, (1, 3, 1, 1))
    elementwise("QLinearMul", np.uint8, (2, 3, 4, 5))
    elementwise("QLinearMul", np.int8, (5,))
    unary("QLinearAveragePool", np.uint8, (2, 3, 9, 10),
          {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1})
    unary("QLinearAveragePool", np.int8, (1, 2, 8, 7),
          {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [0, 1, 1, 1], "count_include_pad": 1})
    unary("QLinearGlobalAveragePool", np.uint8, (2, 4, 5, 6), {"channels_last": 0}, y_scale=0.005)
    unary("QLinearSigmoid", np.uint8, (2, 3, 4), {}, y_scale=1 / 256)
    unary("QLinearSigmoid", np.int8, (3, 7), {}, y_scale=1 / 256)
    unary("QLinearLeakyRelu", np.uint8, (2, 3, 4), {"alpha": 0.1})
    unary("QLinearLeakyRelu", np.int8, (4, 5), {"alpha": 0.25})
    unary("QLinearSoftmax", np.uint8, (3, 10), {"axis": -1, "opset": 13}, y_scale=1 / 256)
    concat()
    qgemm(True)
    qgemm(False)
    residual_block()


if __name__ == "__main__":
    main()
