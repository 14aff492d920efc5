#!/usr/bin/env python3
"""Writes bench/models/resnet18.prototxt: torchvision's ResNet-18 (He et al. 2016, the v1.5 variant
torchvision has: the stride on the 3x3 convolution of a downsampling block) as a Caffe net for
espresso's training benchmarks. Each torch BatchNorm2d is Caffe's BatchNorm (batch statistics when
training) followed by Scale with a bias; convolutions have no bias, as in torchvision. The stem's
max pooling takes round_mode FLOOR so that 112x112 pools to 56x56 as in PyTorch.
    python3 bench/models/make_resnet18.py > bench/models/resnet18.prototxt"""

out = []


def layer(name, kind, bottoms, top, body=""):
    lines = [f'layer {{\n  name: "{name}"\n  type: "{kind}"']
    lines += [f'  bottom: "{b}"' for b in bottoms]
    lines.append(f'  top: "{top}"')
    if body:
        lines.append(body)
    lines.append("}")
    out.append("\n".join(lines))


def conv(name, bottom, outputs, kernel, stride, pad):
    layer(name, "Convolution", [bottom], name,
          "  param { lr_mult: 1 decay_mult: 1 }\n"
          f"  convolution_param {{\n    num_output: {outputs}\n    kernel_size: {kernel}\n    stride: {stride}\n"
          f"    pad: {pad}\n    bias_term: false\n    weight_filler {{ type: \"msra\" }}\n  }}")
    return name


def bn(name, bottom, relu):
    # In place, as Caffe's ResNets do: BatchNorm, Scale and ReLU all write their input's blob.
    layer(f"{name}_bn", "BatchNorm", [bottom], bottom,
          "  param { lr_mult: 0 }\n  param { lr_mult: 0 }\n  param { lr_mult: 0 }")
    layer(f"{name}_scale", "Scale", [bottom], bottom,
          "  scale_param {\n    bias_term: true\n    filler { value: 1 }\n    bias_filler { value: 0 }\n  }")
    if relu:
        layer(f"{name}_relu", "ReLU", [bottom], bottom)
    return bottom


def block(name, bottom, outputs, stride, downsample):
    a = bn(f"{name}_a", conv(f"{name}_conv_a", bottom, outputs, 3, stride, 1), True)
    b = bn(f"{name}_b", conv(f"{name}_conv_b", a, outputs, 3, 1, 1), False)
    shortcut = bottom
    if downsample:
        shortcut = bn(f"{name}_down", conv(f"{name}_conv_down", bottom, outputs, 1, stride, 0), False)
    layer(f"{name}_sum", "Eltwise", [b, shortcut], f"{name}_sum", "  eltwise_param { operation: SUM }")
    layer(f"{name}_relu", "ReLU", [f"{name}_sum"], f"{name}_sum")
    return f"{name}_sum"


def main():
    print('# torchvision ResNet-18 as a Caffe net, written by bench/models/make_resnet18.py (see there).')
    print('name: "ResNet18"')
    layer("data", "Input", [], "data", "  input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } }")
    x = bn("stem", conv("conv1", "data", 64, 7, 2, 3), True)
    layer("pool1", "Pooling", [x], "pool1",
          "  pooling_param {\n    pool: MAX\n    kernel_size: 3\n    stride: 2\n    pad: 1\n    round_mode: FLOOR\n  }")
    x = "pool1"
    channels = 64
    for stage, outputs in enumerate([64, 128, 256, 512], start=1):
        for index in range(2):
            stride = 2 if stage > 1 and index == 0 else 1
            x = block(f"layer{stage}_{index}", x, outputs, stride, stride != 1 or channels != outputs)
            channels = outputs
    layer("pool5", "Pooling", [x], "pool5", "  pooling_param {\n    pool: AVE\n    global_pooling: true\n  }")
    layer("fc", "InnerProduct", ["pool5"], "fc",
          "  param { lr_mult: 1 decay_mult: 1 }\n  param { lr_mult: 2 decay_mult: 0 }\n"
          "  inner_product_param {\n    num_output: 1000\n    weight_filler { type: \"xavier\" }\n"
          "    bias_filler { type: \"constant\" value: 0 }\n  }")
    layer("prob", "Softmax", ["fc"], "prob")
    print("\n".join(out))


if __name__ == "__main__":
    main()
