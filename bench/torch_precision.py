#!/usr/bin/env python3
"""PyTorch GPU inference timings in fp32 (TF32 off), TF32 and fp16, on the models espresso's precision bench
runs, with the same weights: torchvision's ResNet-18, SqueezeNet 1.1 and MobileNetV2 built with random weights
(seeded; BatchNorm statistics randomised so they are not identities) and exported to ONNX for espresso, and the
shared NIN ONNX model (../shared/data/onnx/nin_cifar10) read through bench/onnx_torch.py; `time` also runs Caffe's
LeNet (bench/pytorch_train_lenet.py's module and a softmax, as Caffe's deploy net ends) on 1 x 28 x 28.

  bench/torch_precision.py export DIR            # writes DIR/onnx/<model>/model.onnx for espresso
  bench/torch_precision.py time DIR --batch 1,64,256 --iterations N

`time` prints one JSON object per line, as `espresso bench --json` does, with "precision": fp32 | tf32 | fp16.
fp16 is PyTorch's fast path: model.half(), channels_last memory format, cuDNN autotuning; every mode is timed
as a CUDA graph replay (CUDA events around it), the median of N replays after warm-up.
"""
import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch
import torchvision

TORCHVISION = {"resnet18": torchvision.models.resnet18, "squeezenet1_1": torchvision.models.squeezenet1_1,
               "mobilenet_v2": torchvision.models.mobilenet_v2}


def build(name):
    torch.manual_seed(1)
    model = TORCHVISION[name](weights=None, num_classes=1000).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def export(directory):
    for name in TORCHVISION:
        out = Path(directory) / "onnx" / name
        out.mkdir(parents=True, exist_ok=True)
        args = dict(input_names=["input"], output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        try:  # the TorchScript exporter writes opset 13, as the shared models were made
            torch.onnx.export(build(name), torch.rand(1, 3, 224, 224), str(out / "model.onnx"), opset_version=13,
                              dynamo=False, **args)
        except Exception as e:  # a PyTorch without it: the dynamo exporter
            print(f"{name}: TorchScript export failed ({e}); trying dynamo", file=sys.stderr)
            torch.onnx.export(build(name), (torch.rand(1, 3, 224, 224),), str(out / "model.onnx"), dynamo=True,
                              **args)
        print(f"exported {out / 'model.onnx'}", file=sys.stderr)


def nin_module(directory):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import onnx
    from onnx_torch import OnnxModule
    return OnnxModule(onnx.load(str(Path(directory) / "onnx" / "nin_cifar10" / "model.onnx"))).eval()


def lenet_module():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pytorch_train_lenet import lenet
    torch.manual_seed(1)
    return torch.nn.Sequential(lenet(), torch.nn.Softmax(dim=1)).eval()


def time_graph(model, x, iterations, warmup):
    """Median ms of CUDA-graph replays of model(x)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):  # cuDNN autotuning and lazy initialisation happen outside the capture
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(x)
    for _ in range(warmup):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(iterations):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return statistics.median(ms)


def on_gpu(cpu_model, precision):
    """A copy of the model on the GPU in the precision's storage type (fp16: half and channels_last)."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = copy.deepcopy(cpu_model)
    if hasattr(model, "constants"):  # bench/onnx_torch.py's OnnxModule keeps its weights in a dict
        model.constants = {k: v.to("cuda", dtype) if v.is_floating_point() else v for k, v in model.constants.items()}
        return model
    model = model.to("cuda", dtype)
    return model.to(memory_format=torch.channels_last) if precision == "fp16" else model


def time_all(directory, batches, iterations, warmup):
    torch.backends.cudnn.benchmark = True
    models = {name: build(name) for name in TORCHVISION}
    shapes = {name: (3, 224, 224) for name in TORCHVISION}
    models["nin_cifar10"] = nin_module(directory)
    shapes["nin_cifar10"] = (3, 32, 32)
    models["lenet"] = lenet_module()
    shapes["lenet"] = (1, 28, 28)
    for name, cpu_model in models.items():
        for precision in ("fp32", "tf32", "fp16"):
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.allow_tf32 = precision == "tf32"
            model = on_gpu(cpu_model, precision)
            for batch in batches:
                x = torch.rand((batch,) + shapes[name], device="cuda")
                if precision == "fp16":
                    x = x.half().contiguous(memory_format=torch.channels_last)
                try:
                    median = time_graph(model, x, iterations, warmup)
                except RuntimeError as e:  # a module PyTorch cannot capture: say so, go on
                    print(f"{name} {precision} batch {batch}: {e}", file=sys.stderr)
                    continue
                print(json.dumps({"framework": "pytorch", "mode": "cuda_graph", "model": name, "device": "cuda",
                                  "precision": precision, "batch": batch, "median_ms": round(median, 4),
                                  "images_per_s": round(batch * 1000 / median, 1),
                                  "torch": torch.__version__}), flush=True)
            del model
            torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("verb", choices=["export", "time"])
    parser.add_argument("directory", help="data folder: onnx/<model>/model.onnx")
    parser.add_argument("--batch", default="1,64,256")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    if args.verb == "export":
        export(args.directory)
    else:
        time_all(args.directory, [int(b) for b in args.batch.split(",")], args.iterations, args.warmup)


if __name__ == "__main__":
    main()
