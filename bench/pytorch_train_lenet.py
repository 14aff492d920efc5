#!/usr/bin/env python3
"""PyTorch (eager) training of Caffe's LeNet with Caffe's lenet_solver, for the GPU training table.

Same net (conv 20 5x5, max-pool 2/2, conv 50 5x5, max-pool 2/2, ip 500, ReLU, ip 10, softmax loss),
Xavier weight fillers and zero biases, bias lr_mult 2, SGD with momentum 0.9, weight decay 5e-4,
lr policy "inv" (gamma 1e-4, power 0.75), batch 64, pixels scaled by 1/256, the training set in file
order, a test pass over 100 batches of 100 every 500 iterations and at start and end, as `caffe train`
(and `espresso train`) do. Prints one JSON line: wall seconds, iterations/s, final test accuracy.
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder, split):
    prefix = "train" if split == "train" else "t10k"
    def find(kind, dims):
        base = os.path.join(folder, f"{prefix}-{kind}-idx{dims}-ubyte")
        for path in (base, base + ".gz"):
            if os.path.exists(path):
                return path
        raise FileNotFoundError(f"{base}[.gz] not found")
    images = torch.from_numpy(read_idx(find("images", 3)).astype(np.float32) * 0.00390625).unsqueeze(1)
    labels = torch.from_numpy(read_idx(find("labels", 1)).astype(np.int64))
    return images.pin_memory(), labels.pin_memory()


def xavier_(weight):
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(weight, -bound, bound)


def lenet():
    net = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(inplace=True), nn.Linear(500, 10))
    for module in net:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            xavier_(module.weight)
            nn.init.zeros_(module.bias)
    return net


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    train_x, train_y = load(args.data, "train")
    test_x, test_y = load(args.data, "test")
    net = lenet().to(device)
    weights = [m.weight for m in net if hasattr(m, "weight")]
    biases = [m.bias for m in net if hasattr(m, "bias")]
    base_lr = 0.01
    solver = torch.optim.SGD([{"params": weights, "lr": base_lr}, {"params": biases, "lr": 2 * base_lr}],
                             lr=base_lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(solver, lambda it: (1 + 1e-4 * it) ** -0.75)
    loss_fn = nn.CrossEntropyLoss()

    def test():
        net.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, 100 * 100, 100):
                x = test_x[start:start + 100].to(device, non_blocking=True)
                y = test_y[start:start + 100].to(device, non_blocking=True)
                correct += (net(x).argmax(1) == y).sum()
        net.train()
        return correct.item() / 10000

    batch, position = 64, 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    accuracy = test()
    for iteration in range(args.iterations):
        if position + batch > len(train_x):
            position = 0
        x = train_x[position:position + batch].to(device, non_blocking=True)
        y = train_y[position:position + batch].to(device, non_blocking=True)
        position += batch
        solver.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        solver.step()
        schedule.step()
        if (iteration + 1) % 100 == 0:
            loss.item()  # Caffe's display reads the loss
        if (iteration + 1) % 500 == 0:
            accuracy = test()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"framework": "pytorch", "mode": "eager", "device": str(device),
                      "iterations": args.iterations, "seconds": round(seconds, 3),
                      "iterations_per_s": round(args.iterations / seconds, 1), "test_accuracy": accuracy,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
