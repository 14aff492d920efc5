#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/targets/*.cpp).

  scripts/fuzz_seeds.py --small OUT [CLI]  small generated inputs only (committed as tests/fuzz/seeds/);
                                           with CLI also small .esp packages
  scripts/fuzz_seeds.py OUT [DATA] [CLI]   real files from DATA (../shared/data), ONNX's node tests
                                           (Debian's libonnx-testdata) and, with CLI (build/bin/espresso),
                                           .esp packages made from them; not committed (large)

Writes OUT/<target>/<name>. Needs only the Python standard library: protobuf messages are written
field by field in the wire format.
"""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib


# ---- protobuf wire format -------------------------------------------------------------------------
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_float(number, value):
    return varint(number << 3 | 5) + struct.pack("<f", value)


# ---- ONNX (src/import/onnx/onnx.proto) ------------------------------------------------------------
FLOAT, INT64 = 1, 7


def onnx_dims(dims):
    return b"".join(field_bytes(1, field_varint(1, d)) for d in dims)  # TensorShapeProto.dim.dim_value


def onnx_value_info(name, dims):
    tensor_type = field_varint(1, FLOAT) + field_bytes(2, onnx_dims(dims))
    return field_bytes(1, name) + field_bytes(2, field_bytes(1, tensor_type))


def onnx_tensor(name, dims, values=None, external=None, dtype=FLOAT):
    out = b"".join(field_varint(1, d) for d in dims) + field_varint(2, dtype) + field_bytes(8, name)
    if external is not None:
        for key, value in external:
            out += field_bytes(13, field_bytes(1, key) + field_bytes(2, value))
        out += field_varint(14, 1)
    elif dtype == FLOAT:
        out += field_bytes(9, struct.pack("<%df" % len(values), *values))
    else:
        out += field_bytes(9, struct.pack("<%dq" % len(values), *values))
    return out


def onnx_attr_int(name, value):
    return field_bytes(1, name) + field_varint(3, value) + field_varint(20, 2)


def onnx_attr_ints(name, values):
    return field_bytes(1, name) + b"".join(field_varint(8, v) for v in values) + field_varint(20, 7)


def onnx_node(op, inputs, outputs, attrs=(), name=""):
    out = b"".join(field_bytes(1, i) for i in inputs) + b"".join(field_bytes(2, o) for o in outputs)
    if name:
        out += field_bytes(3, name)
    out += field_bytes(4, op) + b"".join(field_bytes(5, a) for a in attrs)
    return out


def onnx_model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = b"".join(field_bytes(1, n) for n in nodes) + field_bytes(2, "g")
    graph += b"".join(field_bytes(5, t) for t in initializers)
    graph += b"".join(field_bytes(11, onnx_value_info(n, d)) for n, d in inputs)
    graph += b"".join(field_bytes(12, onnx_value_info(n, d)) for n, d in outputs)
    return field_varint(1, 8) + field_bytes(7, graph) + field_bytes(8, field_varint(2, opset))


def small_onnx_models():
    w = onnx_tensor("w", [4], [1, 2, 3, 4])
    yield "add_relu.onnx", onnx_model(
        [onnx_node("Add", ["x", "w"], ["s"]), onnx_node("Relu", ["s"], ["y"])], [("x", [1, 4])], [("y", [1, 4])], [w])
    conv_w = onnx_tensor("cw", [2, 1, 3, 3], [0.1 * i for i in range(18)])
    yield "conv_pool_gemm.onnx", onnx_model(
        [onnx_node("Conv", ["x", "cw"], ["c"], [onnx_attr_ints("kernel_shape", [3, 3]), onnx_attr_ints("pads", [1, 1, 1, 1])]),
         onnx_node("MaxPool", ["c"], ["p"], [onnx_attr_ints("kernel_shape", [2, 2]), onnx_attr_ints("strides", [2, 2])]),
         onnx_node("Flatten", ["p"], ["f"], [onnx_attr_int("axis", 1)]),
         onnx_node("Gemm", ["f", "gw"], ["y"], [onnx_attr_int("transB", 1)])],
        [("x", [1, 1, 4, 4])], [("y", [1, 3])], [conv_w, onnx_tensor("gw", [3, 8], [0.01 * i for i in range(24)])])
    shape = onnx_tensor("shape", [2], [1, -1], dtype=INT64)
    yield "shape_ops.onnx", onnx_model(
        [onnx_node("Shape", ["x"], ["s"]), onnx_node("Reshape", ["x", "shape"], ["r"]),
         onnx_node("Transpose", ["r"], ["t"], [onnx_attr_ints("perm", [1, 0])]),
         onnx_node("Softmax", ["t"], ["y"], [onnx_attr_int("axis", 0)])],
        [("x", [2, 3])], [("y", [6, 1])], [shape])


def external_onnx_models():
    for name, location, offset, length in [("inside", "weights.bin", "0", "16"), ("sub", "sub/weights.bin", "0", "16"),
                                           ("symlink_out", "outside.bin", "0", "16"), ("dotdot", "../secret.bin", "0", "16"),
                                           ("absolute", "/etc/passwd", "0", "16"), ("range", "weights.bin", "8", "8")]:
        w = onnx_tensor("w", [4], external=[("location", location), ("offset", offset), ("length", length)])
        yield name + ".onnx", onnx_model([onnx_node("Add", ["x", "w"], ["y"])], [("x", [1, 4])], [("y", [1, 4])], [w])


# ---- Caffe (src/import/caffe/caffe.proto) ---------------------------------------------------------
SMALL_PROTOTXT = {
    "v2_conv.prototxt": """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
""",
    "v1_eltwise.prototxt": """name: "v1"
input: "data" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4
layers { name: "a" type: CONVOLUTION bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layers { name: "sum" type: ELTWISE bottom: "a" bottom: "data" top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layers { name: "concat" type: CONCAT bottom: "sum" bottom: "a" top: "cat" }
layers { name: "slice" type: SLICE bottom: "cat" top: "s1" top: "s2" slice_param { slice_point: 1 } }
layers { name: "lrn" type: LRN bottom: "s2" top: "lrn" lrn_param { local_size: 3 } }
""",
}

SMALL_SOLVER = """net: "lenet_train_test.prototxt"
test_iter: 100 test_interval: 500 base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
lr_policy: "inv" gamma: 0.0001 power: 0.75 display: 100 max_iter: 10000
snapshot: 5000 snapshot_prefix: "examples/mnist/lenet" solver_mode: CPU type: "Adam"
"""


def blob(dims, values):
    shape = field_bytes(7, b"".join(field_varint(1, d) for d in dims))
    return shape + field_bytes(5, struct.pack("<%df" % len(values), *values))


def small_caffemodel():
    """LeNet's layer names with wrong-sized (tiny) blobs, V2 form: reaches the shape checks quickly."""
    layers = b""
    for name, kind in [("conv1", "Convolution"), ("ip2", "InnerProduct")]:
        layer = field_bytes(1, name) + field_bytes(2, kind)
        layer += field_bytes(7, blob([2, 1, 1, 1], [0.5, -0.5])) + field_bytes(7, blob([2], [0.0, 1.0]))
        layers += field_bytes(100, layer)
    return field_bytes(1, "LeNet") + layers


def deep_compression_seed():
    """A two-layer net and its Deep Compression weights (src/import/caffe/deep_compression.cpp has the
    layout): conv1 keeps 5 of its 18 weights with 8-bit codes, ip1 6 of its 24 with 4-bit codes."""
    prototxt = b"""name: "dc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 3 } }
"""
    def layer(bits, biases, nonzeros):
        codebook = struct.pack("<%df" % (1 << bits), *[i / 16.0 for i in range(1 << bits)])
        codes = bytes(range(1, nonzeros + 1)) if bits == 8 else bytes([0x21] * ((nonzeros + 1) // 2))
        gaps = bytes([0x31] * ((nonzeros + 1) // 2))
        return codebook + struct.pack("<%df" % biases, *([0.25] * biases)) + codes + gaps
    net = struct.pack("<2I", 5, 6) + layer(8, 2, 5) + layer(4, 3, 6)
    return prototxt + b"\0" + net


# ---- TensorFlow Lite (FlatBuffers written front to back, every offset pointing forward) -----------
class FlatBuffer:
    def __init__(self):
        self.out = bytearray(b"\0\0\0\0TFL3")

    def _align(self, n):
        self.out += bytes(-len(self.out) % n)

    def _put(self, at, value):
        self.out[at:at + 4] = struct.pack("<I", value)

    def write(self, node):
        """node: ("bytes", count, data) | ("tables", [node]) | ("table", [(index, bytes | node)])."""
        kind = node[0]
        if kind == "bytes":
            self._align(4)
            self.out += bytes(-(len(self.out) + 4) % 16)
            at = len(self.out)
            self.out += struct.pack("<I", node[1]) + node[2]
            return at
        if kind == "tables":
            self._align(4)
            at = len(self.out)
            self.out += struct.pack("<I", len(node[1])) + bytes(4 * len(node[1]))
            for i, item in enumerate(node[1]):
                slot = at + 4 + 4 * i
                self._put(slot, self.write(item) - slot)
            return at
        fields = node[1]
        self._align(4)
        vtable = len(self.out)
        vtable_size = 4 + 2 * (max([i for i, _ in fields], default=-1) + 1)
        self.out += bytes(vtable_size)
        self._align(8)
        self.out += bytes((len(self.out) + 4) % 8 and 4)
        table = len(self.out)
        self.out += struct.pack("<i", table - vtable)
        pending = []
        for index, value in fields:
            size = len(value) if isinstance(value, bytes) else 4
            self.out += bytes(-(len(self.out) - table) % max(size, 4))
            at = len(self.out)
            self.out[vtable + 4 + 2 * index:vtable + 6 + 2 * index] = struct.pack("<H", at - table)
            if isinstance(value, bytes):
                self.out += value
            else:
                self.out += bytes(4)
                pending.append((at, value))
        self.out[vtable:vtable + 4] = struct.pack("<HH", vtable_size, len(self.out) - table)
        for at, child in pending:
            self._put(at, self.write(child) - at)
        return table


def tflite_chain(codes):
    """Input t0 (1 x 4 float) through one operator per builtin code (schema.fbs field numbers)."""
    def ints(values):
        return ("bytes", len(values), struct.pack("<%di" % len(values), *values))
    def name(text):
        return ("bytes", len(text), text.encode() + b"\0")
    tensors = [("table", [(0, ints([1, 4])), (1, b"\0"), (2, struct.pack("<I", 0)), (3, name("t%d" % i))])
               for i in range(len(codes) + 1)]
    operators = [("table", [(0, struct.pack("<I", i)), (1, ints([i])), (2, ints([i + 1]))]) for i in range(len(codes))]
    opcodes = [("table", [(0, struct.pack("<b", min(code, 127))), (3, struct.pack("<i", code))]) for code in codes]
    graph = ("table", [(0, ("tables", tensors)), (1, ints([0])), (2, ints([len(codes)])), (3, ("tables", operators))])
    model = ("table", [(0, struct.pack("<I", 3)), (1, ("tables", opcodes)), (2, ("tables", [graph])),
                       (4, ("tables", [("table", [])]))])
    fb = FlatBuffer()
    fb._put(0, fb.write(model))
    return bytes(fb.out)


# ---- the servers: inference requests, request contexts, references --------------------------------

def infer_requests():
    """fuzz/targets/serve_infer.cpp: a first byte whose low bit announces a 2-byte header length."""
    plain = {"id": "1", "inputs": [{"name": "data", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1.5]}],
             "outputs": [{"name": "prob"}]}
    header = json.dumps({"inputs": [{"name": "data", "shape": [1, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}],
                         "outputs": [{"name": "prob", "parameters": {"binary_data": True}}],
                         "parameters": {"binary_data_output": True}}).encode()
    ints = {"inputs": [{"name": "ids", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}]}
    return [("json", b"\0" + json.dumps(plain).encode()),
            ("binary", b"\1" + struct.pack("<H", len(header)) + header + struct.pack("<2f", 0.5, 1.5)),
            ("int64", b"\0" + json.dumps(ints).encode())]


def request_contexts():
    """fuzz/targets/serve_context.cpp: one context, and a log whose last line is torn."""
    context = {"time": "2026-12-04T08:15:00+01:00", "location": "park-north", "app": "nature-lens",
               "recent": ["oak", "robin"]}
    log = [json.dumps(dict(context, model="lenet")), json.dumps({"time": 1700000000, "model": "resnet"}),
           '{"time": "2026-12-04T0']
    return [("context", json.dumps(context)), ("log", "\n".join(log))]


def references():
    digest = "sha256:" + "ab" * 32
    return [("r%d" % i, text) for i, text in enumerate(
        ["localhost:5000/vision/lenet:1.0", "registry.example/a/b@" + digest, "lenet:latest",
         "ghcr.io/x/y_z-1.2:v1@" + digest])]


# ---- images, IDX, CIFAR, npy, Datum ---------------------------------------------------------------
def png(width, height, colour_type, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def bmp(width, height):
    row = bytes(range(3 * width)) + b"\x00" * ((4 - 3 * width % 4) % 4)
    pixels = row * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def idx(magic, dims, data):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + data


def npy(descr, shape, payload):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join("%d, " % d for d in shape))
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def datum(channels, height, width, data=b"", floats=(), label=0, encoded=False):
    out = field_varint(1, channels) + field_varint(2, height) + field_varint(3, width)
    if data:
        out += field_bytes(4, data)
    out += field_varint(5, label) + b"".join(field_float(6, f) for f in floats)
    if encoded:
        out += field_varint(7, 1)
    return out


def small_seeds():
    gray = png(3, 2, 0, [b"\x00\x80\xff", b"\x10\x20\x30"])
    rgb = png(2, 2, 2, [bytes(range(6)), bytes(range(6, 12))])
    yield "caffe_prototxt", SMALL_PROTOTXT.items()
    yield "caffe_solver", [("solver.prototxt", SMALL_SOLVER)]
    yield "caffemodel", [("tiny_v2.caffemodel", small_caffemodel())]
    yield "deep_compression", [("two_layers", deep_compression_seed())]
    # RELU, LOGISTIC, HARD_SWISH (only in the extended code field), SOFTMAX
    yield "tflite", [("chain.tflite", tflite_chain([19, 14, 117, 25]))]
    yield "onnx", small_onnx_models()
    yield "onnx_external", external_onnx_models()
    yield "image", [("gray.png", gray), ("rgb.png", rgb), ("small.bmp", bmp(3, 2)),
                    ("p5.pgm", b"P5\n3 2\n255\n" + bytes(range(0, 240, 40)))]
    yield "idx", [("images.idx", b"\x00" + idx(2051, [2, 3, 3], bytes(range(18)))),
                  ("labels.idx", b"\x01" + idx(2049, [3], b"\x01\x07\x09"))]
    yield "cifar", [("two_records.bin", bytes([3]) + bytes(3072) + bytes([9]) + bytes(range(256)) * 12)]
    yield "npy", [("f4.npy", npy("<f4", [2, 3], struct.pack("<6f", *range(6)))),
                  ("f8.npy", npy("<f8", [3], struct.pack("<3d", 1.5, 2.5, 3.5)))]
    yield "datum", [("raw.datum", datum(1, 2, 3, bytes(range(6)), label=4)),
                    ("float.datum", datum(1, 1, 2, floats=(0.5, 2.0), label=1)),
                    ("encoded.datum", datum(0, 0, 0, rgb, label=2, encoded=True))]
    yield "serve_infer", infer_requests()
    yield "serve_context", request_contexts()
    yield "store_reference", references()


def write(out, target, name, data):
    folder = os.path.join(out, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def small_packages(out, cli):
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in small_onnx_models():
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(model)
            # Plain, and with --compress (format version 3: deflated manifest, codebook tensors where they fit).
            for suffix, extra in ((".esp", []), ("_compressed.esp", ["--compress"])):
                target = os.path.join(tmp, name.replace(".onnx", suffix))
                if subprocess.run([cli, "convert", path, "-o", target, "--name", "seed"] + extra,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                    with open(target, "rb") as f:
                        write(out, "esp", os.path.basename(target), f.read())
        # Control flow (format version 4: layers with subgraphs): ONNX's If node test, where installed.
        node_if = "/usr/share/libonnx-testdata/data/node/test_if/model.onnx"
        target = os.path.join(tmp, "if.esp")
        if os.path.isfile(node_if) and subprocess.run([cli, "convert", node_if, "-o", target, "--name", "seed"],
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            with open(target, "rb") as f:
                write(out, "esp", "if.esp", f.read())


def real_seeds(out, data_dir, cli):
    def copy(target, path, name=None, limit=None):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            write(out, target, name or os.path.basename(path), data[:limit] if limit else data)

    lenet = os.path.join(data_dir, "caffe", "lenet")
    for folder in [lenet, os.path.join(lenet, "v2_format"), os.path.join(data_dir, "caffe", "squeezenet_v1.0_deep_compression")]:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".prototxt"):
                tag = os.path.basename(folder) + "_" + name
                copy("caffe_solver" if "solver" in name else "caffe_prototxt", os.path.join(folder, name), tag)
    copy("caffemodel", os.path.join(lenet, "lenet_iter_10000.caffemodel"))
    squeezenet = os.path.join(data_dir, "caffe", "squeezenet_v1.0_deep_compression")
    prototxt, net = (os.path.join(squeezenet, name) for name in ["SqueezeNet_deploy.prototxt", "compressed_SqueezeNet.net"])
    if os.path.isfile(prototxt) and os.path.isfile(net):
        with open(prototxt, "rb") as p, open(net, "rb") as n:
            write(out, "deep_compression", "squeezenet", p.read() + b"\0" + n.read())
    models = os.environ.get("ESPRESSO_MODEL_CACHE", os.path.expanduser("~/.cache/espresso-test-models"))
    for root, _, files in sorted(os.walk(models)):
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.endswith(".tflite") and os.path.getsize(path) <= 1 << 20:
                copy("tflite", path)
    copy("onnx", os.path.join(data_dir, "onnx", "mnist-1", "model.onnx"), "mnist-1.onnx")
    node_tests = "/usr/share/libonnx-testdata/data/node"
    if os.path.isdir(node_tests):
        for name in sorted(os.listdir(node_tests)):
            copy("onnx", os.path.join(node_tests, name, "model.onnx"), name + ".onnx")
    for name in ["fish-bike.jpg", "cat_gray.jpg"]:
        copy("image", os.path.join(data_dir, "images", name))
    mnist = os.path.join(data_dir, "mnist")
    for name, flag, count in [("t10k-images-idx3-ubyte.gz", b"\x00", 784 * 20), ("t10k-labels-idx1-ubyte.gz", b"\x01", 20)]:
        path = os.path.join(mnist, name)
        if os.path.isfile(path):
            with gzip.open(path, "rb") as f:
                data = f.read()
            header = 16 if flag == b"\x00" else 8
            body = data[header:header + count]
            data = data[:4] + struct.pack(">I", 20) + data[8:header] + body
            write(out, "idx", name.replace(".gz", ""), flag + data)
    copy("cifar", os.path.join(data_dir, "cifar10", "test_batch_first1000.bin"), "test_first4.bin", limit=4 * 3073)
    copy("npy", os.path.join(data_dir, "imagenet", "ilsvrc_2012_mean.npy"))
    if cli and os.path.exists(cli):
        with tempfile.TemporaryDirectory() as tmp:
            jobs = [("lenet.esp", [os.path.join(lenet, "v2_format", "lenet.prototxt"), "-w",
                                   os.path.join(lenet, "lenet_iter_10000.caffemodel")])]
            for name, args in jobs:
                target = os.path.join(tmp, name)
                if subprocess.run([cli, "convert", *args, "-o", target, "--name", "seed"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                    copy("esp", target, name)


def main():
    args = sys.argv[1:]
    small_only = args[:1] == ["--small"]
    if small_only:
        args = args[1:]
    if not args:
        sys.exit(__doc__)
    out = args[0]
    for target, items in small_seeds():
        for name, data in items:
            write(out, target, name, data)
    if small_only and len(args) > 1:
        small_packages(out, args[1])
    if not small_only:
        here = os.path.dirname(os.path.abspath(__file__))
        data_dir = args[1] if len(args) > 1 else os.environ.get("ESPRESSO_DATA", os.path.join(here, "..", "..", "shared", "data"))
        cli = args[2] if len(args) > 2 else os.path.join(here, "..", "build", "bin", "espresso")
        real_seeds(out, data_dir, cli)


if __name__ == "__main__":
    main()
