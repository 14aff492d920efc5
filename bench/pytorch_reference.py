#!/usr/bin/env python3
"""PyTorch inference timings for the networks espresso benchmarks, on the same GPU and batch sizes.

Prints one JSON object per line: {"framework", "mode" (eager | cuda_graph), "model", "batch",
"median_ms", "images_per_s"}. fp32 with TF32 off, cuDNN autotuning on (PyTorch's fastest setting).
The networks mirror bench/models/*.prototxt and the Caffe LeNet: Caffe's ceil-rounded pooling included.
"""
import argparse
import json
import statistics

import torch
from torch import nn


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(inplace=True), nn.Linear(500, 10), nn.Softmax(dim=1))


def mlpconv(cin, cout, k, pad, mid):
    return [nn.Conv2d(cin, cout, k, padding=pad), nn.ReLU(inplace=True),
            nn.Conv2d(cout, mid[0], 1), nn.ReLU(inplace=True),
            nn.Conv2d(mid[0], mid[1], 1), nn.ReLU(inplace=True)]


def nin():
    return nn.Sequential(
        *mlpconv(3, 192, 5, 2, (160, 96)), nn.MaxPool2d(3, 2, ceil_mode=True),
        *mlpconv(96, 192, 5, 2, (192, 192)), nn.AvgPool2d(3, 2, ceil_mode=True),
        *mlpconv(192, 192, 3, 1, (192, 10)), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Softmax(dim=1))


MODELS = {"lenet": (lenet, (1, 28, 28)), "nin": (nin, (3, 32, 32))}


def time_ms(run, iterations):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(iterations):
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="lenet,nin")
    parser.add_argument("--batch", default="1,64,256")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    for name in args.models.split(","):
        build, chw = MODELS[name]
        model = build().to(device).eval()
        for batch in [int(b) for b in args.batch.split(",")]:
            x = torch.randn(batch, *chw, device=device)
            with torch.inference_mode():
                for _ in range(20):
                    model(x)
                torch.cuda.synchronize()
                eager = time_ms(lambda: model(x), args.iterations)
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(5):
                        model(x)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(x)
                for _ in range(20):
                    graph.replay()
                replay = time_ms(graph.replay, args.iterations)
            for mode, ms in (("eager", eager), ("cuda_graph", replay)):
                print(json.dumps({"framework": "pytorch", "mode": mode, "model": name, "batch": batch,
                                  "median_ms": round(ms, 4), "images_per_s": round(batch * 1000.0 / ms, 1)}),
                      flush=True)


if __name__ == "__main__":
    main()
