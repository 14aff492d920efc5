#!/usr/bin/env python3
"""PyTorch DistributedDataParallel reference for bench/dist_bench.sh: the NIN of
bench/models/nin_cifar10.prototxt (Caffe's ceil-mode pooling), SGD with momentum, trained on CIFAR-10
images held on the GPU, one process per GPU over NCCL. Prints one JSON line with the throughput.

  python3 bench/ddp_nin.py --gpus 0,1 --global-batch 512 --iterations 200 [--data DIR]
"""
import argparse, json, os, socket, time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn


def nin():
    def block(cin, cout, k, pad):
        return [nn.Conv2d(cin, cout, k, padding=pad), nn.ReLU(inplace=True)]
    return nn.Sequential(
        *block(3, 192, 5, 2), *block(192, 160, 1, 0), *block(160, 96, 1, 0),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        *block(96, 192, 5, 2), *block(192, 192, 1, 0), *block(192, 192, 1, 0),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        *block(192, 192, 3, 1), *block(192, 192, 1, 0), *block(192, 10, 1, 0),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


def load_images(data, count):
    """CIFAR-10 binary records (label byte + 3072 bytes), scaled like the espresso run; random when absent."""
    path = os.path.join(data or "", "data_batch_1_first4000.bin")
    if data and os.path.exists(path):
        raw = torch.frombuffer(bytearray(open(path, "rb").read()), dtype=torch.uint8).view(-1, 3073)
        labels = raw[:, 0].long()
        images = raw[:, 1:].float().view(-1, 3, 32, 32) / 255.0
        reps = (count + len(images) - 1) // len(images)
        return images.repeat(reps, 1, 1, 1)[:count], labels.repeat(reps)[:count]
    g = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, 32, 32, generator=g), torch.randint(0, 10, (count,), generator=g)


def worker(rank, world, gpus, args, port, queue):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    torch.cuda.set_device(gpus[rank])
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(7)
    torch.backends.cudnn.benchmark = True
    model = nin().cuda()
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[gpus[rank]])
    per_rank = args.global_batch // world
    images, labels = load_images(args.data, 4096)
    images, labels = images.cuda(), labels.cuda()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        start = (i * args.global_batch + rank * per_rank) % (len(images) - per_rank)
        x, y = images[start:start + per_rank], labels[start:start + per_rank]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ddp(x), y)
        loss.backward()
        opt.step()
        return loss

    for i in range(args.warmup):
        step(i)
    torch.cuda.synchronize()
    dist.barrier()
    began = time.perf_counter()
    for i in range(args.iterations):
        loss = step(args.warmup + i)
    torch.cuda.synchronize()
    dist.barrier()
    seconds = time.perf_counter() - began
    if rank == 0:
        queue.put({"framework": "pytorch-ddp", "gpus": world, "global_batch": args.global_batch,
                   "iterations": args.iterations, "seconds": round(seconds, 3),
                   "images_per_s": round(args.iterations * args.global_batch / seconds, 1),
                   "final_loss": round(float(loss), 4), "torch": torch.__version__})
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", default="0")
    parser.add_argument("--global-batch", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--data", default="")
    args = parser.parse_args()
    gpus = [int(g) for g in args.gpus.split(",")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(worker, args=(len(gpus), gpus, args, port, queue), nprocs=len(gpus), join=True)
    print(json.dumps(queue.get()))


if __name__ == "__main__":
    main()
