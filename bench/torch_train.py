#!/usr/bin/env python3
"""PyTorch eager training throughput for the nets that bench/run_train_throughput.sh trains with espresso.

Prints one JSON object per line: {"framework": "pytorch", "phase": "training", "model", "batch",
"median_ms", "images_per_s", "peak_device_mib", "torch"}. A step is zero_grad, forward, cross-entropy
loss, backward and SGD with momentum 0.9, timed like `espresso bench --train`: wall time per step with
the device synchronised at its end; the median over the timed steps after warm-up. fp32 with TF32
off, cuDNN autotuning on; --precision fp16 / bf16 is PyTorch AMP (torch.autocast in that type, fp32 master
weights, and for fp16 a GradScaler with its defaults: the step's inf check, unscale and skip). Peak memory is
torch.cuda.max_memory_allocated from before the model was moved to the GPU. Random inputs; sample i has
class i mod classes, as in espresso's bench.
  bench/torch_train.py --model nin --batch 128
  bench/torch_train.py --model resnet18 --batch 64 --precision fp16
With --profile FILE, three more steps run under torch.profiler and FILE gets their CUDA kernels' total times,
largest first (where the time goes on PyTorch's side, beside ESPRESSO_PROFILE_LAYERS on ours).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import nin  # noqa: E402  (the same NIN as bench/models/nin_cifar10.prototxt)


def nin_logits():
    # The Softmax at the end is the loss's (CrossEntropyLoss = SoftmaxWithLoss).
    layers = list(nin())
    assert isinstance(layers[-1], nn.Softmax)
    return nn.Sequential(*layers[:-1])


def resnet18():
    import torchvision
    return torchvision.models.resnet18(weights=None)


MODELS = {"nin": (nin_logits, (3, 32, 32), 10), "resnet18": (resnet18, (3, 224, 224), 1000)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--profile", metavar="FILE", help="CUDA kernel times of three more steps, to FILE")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    torch.manual_seed(1)
    torch.cuda.reset_peak_memory_stats(device)
    build, chw, classes = MODELS[args.model]
    model = build().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(args.batch, *chw, device=device) * 2 - 1
    y = torch.arange(args.batch, device=device) % classes

    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=args.precision == "fp16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    samples = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000.0)
    median = statistics.median(samples)
    print(json.dumps({"framework": "pytorch", "phase": "training", "model": args.model,
                      "precision": args.precision, "batch": args.batch,
                      "median_ms": round(median, 4), "images_per_s": round(args.batch * 1000.0 / median, 1),
                      "peak_device_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                      "torch": torch.__version__}), flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        with open(args.profile, "w") as out:
            out.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=90))


if __name__ == "__main__":
    main()
