#!/usr/bin/env python3
"""An independent decoder of Deep Compression's .net weights, for the tests: plain Python, no numpy.

Usage: deep_compression_reference.py DEPLOY.prototxt WEIGHTS.net OUT.caffemodel

It reads the deploy prototxt with its own small text-format parser, follows the channel counts through
Convolution/InnerProduct/Concat layers to get each blob's shape, decodes the .net file (see
docs/compression.md for the layout) and writes a plain caffemodel (NetParameter with `layer` entries)
by encoding the protobuf by hand, so the C++ Caffe importer can load the dense weights.
"""
import re
import struct
import sys


def parse_text(text):
    """Protobuf text format into nested lists of (key, value) pairs."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r'"[^"]*"|[{}:]|[^\s{}:"]+', text)
    pos = 0

    def block():
        nonlocal pos
        items = []
        while pos < len(tokens) and tokens[pos] != "}":
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "{":
                pos += 1
                items.append((key, block()))
                pos += 1  # the closing brace
            else:
                items.append((key, tokens[pos].strip('"')))
                pos += 1
        return items

    return block()


def first(items, key, default=None):
    for k, v in items:
        if k == key:
            return v
    return default


def every(items, key):
    return [v for k, v in items if k == key]


def layer_blob_shapes(net):
    """[(layer name, weight shape, bias shape)] of the learned layers, in order."""
    channels = {}
    names = every(net, "input")
    dims = [int(d) for d in every(net, "input_dim")]
    for i, name in enumerate(names):
        channels[name] = dims[4 * i + 1]
    learned = []
    for layer in every(net, "layer"):
        kind = first(layer, "type")
        bottoms = every(layer, "bottom")
        tops = every(layer, "top")
        if kind == "Convolution":
            p = first(layer, "convolution_param")
            out = int(first(p, "num_output"))
            k = int(first(p, "kernel_size"))
            group = int(first(p, "group", "1"))
            learned.append((first(layer, "name"), [out, channels[bottoms[0]] // group, k, k], [out]))
            c = out
        elif kind == "InnerProduct":
            raise SystemExit("InnerProduct needs spatial sizes; not used by the shared models")
        elif kind == "Concat":
            c = sum(channels[b] for b in bottoms)
        else:
            c = channels[bottoms[0]]
        for t in tops:
            channels[t] = c
    return learned


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def blob(shape, values):
    dims = b"".join(varint(d) for d in shape)
    return field(7, field(1, dims)) + field(5, struct.pack("<%df" % len(values), *values))


def nibble(stream, k):
    byte = stream[k // 2]
    return byte & 15 if k % 2 == 0 else byte >> 4


def main():
    deploy, packed, target = sys.argv[1:4]
    net = parse_text(open(deploy).read())
    layers = [entry for entry in layer_blob_shapes(net)
              if "conv" in entry[0] or "fc" in entry[0] or "ip" in entry[0]]
    data = open(packed, "rb").read()
    at = 0
    counts = struct.unpack_from("<%dI" % len(layers), data, at)
    at += 4 * len(layers)
    out = bytearray()
    for (name, wshape, bshape), nonzeros in zip(layers, counts):
        bits = 8 if "conv" in name else 4
        codebook = struct.unpack_from("<%df" % (1 << bits), data, at)
        at += 4 << bits
        bias = struct.unpack_from("<%df" % bshape[0], data, at)
        at += 4 * bshape[0]
        code_bytes = nonzeros if bits == 8 else (nonzeros + 1) // 2
        codes = data[at:at + code_bytes]
        at += code_bytes
        gaps = data[at:at + (nonzeros + 1) // 2]
        at += (nonzeros + 1) // 2
        size = 1
        for d in wshape:
            size *= d
        index = [0] * size
        place = -1
        for k in range(nonzeros):
            place += nibble(gaps, k) + 1
            index[place] = codes[k] if bits == 8 else nibble(codes, k)
        weights = [codebook[i] for i in index]
        layer = field(1, name.encode()) + field(2, b"Convolution") + field(7, blob(wshape, weights)) + \
            field(7, blob(bshape, bias))
        out += field(100, layer)
    if at != len(data):
        raise SystemExit("%d bytes left over" % (len(data) - at))
    open(target, "wb").write(bytes(out))


if __name__ == "__main__":
    main()
