#!/usr/bin/python3
"""PyTorch DistributedDataParallel (Gloo) training of the Fashion-MNIST CNN: the DDP side of BENCHMARKS.md section 8.

One process per rank (bench/ddp_vs_ravnest.py starts rank i inside network namespace i with `ip netns exec`).
What each rank does is what a Ravnest cluster does in `ravnestc compile models/cnn/cnn.onnx --clusters W`:
  * the model and its initial weights: models/cnn/export.make_model() (torch.manual_seed(0)), the ONNX file's source;
  * SGD lr 0.01, momentum 0.9, batch 64 per rank, mean softmax cross-entropy (ravnestc compile's defaults);
  * data: Fashion-MNIST normalised by models/cnn/fashion_mnist.normalize; each epoch the shared permutation
    fashion_mnist.permutation(60000, seed, epoch) (= rt::Sampler) is cut into W contiguous shards and rank r trains
    on shard r, 60000 / W / 64 steps per epoch (runtime/trainer.cc does the same per cluster);
  * rank 0 evaluates the 10,000 test images at the end of every epoch (Ravnest's cluster 0 evaluates at each epoch
    end); the other ranks wait in the next step's all-reduce meanwhile.
DDP all-reduces the gradients of every step (buckets overlapped with backward), so the global batch is 64 x W.

Output (stdout, JSON lines, rank 0 only unless --verbose):
  {"event":"ready","rank":0,"world":W,"elapsed":S}          after the process group is up and the model is broadcast
  {"event":"step","rank":0,"step":N,"loss":L,"elapsed":S}  every --log-every steps
  {"event":"eval","rank":0,"epoch":E,"step":N,"accuracy":A,"elapsed":S}
  {"event":"done","rank":0,"steps":N,"elapsed":S,"bytes_allreduced":B}
elapsed is seconds since this process started training (after "ready"). Bounded: --epochs (at most 10) and
--max-seconds stop training; every collective has --timeout seconds.

Usage: ddp_cnn.py --rank R --world W --master 10.77.0.1:29600 [--iface rnwt0] [--epochs 2] [--max-seconds 600]
"""
import argparse
import datetime
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--master", required=True, help="HOST:PORT of rank 0's rendezvous (TCP store)")
    ap.add_argument("--iface", default="", help="network interface Gloo binds to (GLOO_SOCKET_IFNAME)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300, help="seconds any collective or rendezvous may take")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--verbose", action="store_true", help="every rank prints")
    args = ap.parse_args()
    if not (0 <= args.rank < args.world) or args.world < 1:
        sys.exit(f"ddp_cnn.py: --rank {args.rank} must be in [0, --world {args.world})")
    if not (1 <= args.epochs <= 10) or args.batch < 1 or args.threads < 1 or args.max_seconds <= 0:
        sys.exit("ddp_cnn.py: --epochs must be in [1, 10]; --batch, --threads and --max-seconds positive")
    host, _, port = args.master.rpartition(":")
    if not host or not port.isdigit():
        sys.exit(f"ddp_cnn.py: --master {args.master!r} is not HOST:PORT")

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.iface:
        os.environ["GLOO_SOCKET_IFNAME"] = args.iface
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    sys.path.insert(0, os.path.join(ROOT, "models", "cnn"))
    import export
    import fashion_mnist

    torch.set_num_threads(args.threads)
    talk = args.rank == 0 or args.verbose

    def emit(**fields):
        if talk:
            print(json.dumps(fields), flush=True)

    images, labels = fashion_mnist.load(train=True, directory=args.data)
    test_images, test_labels = fashion_mnist.load(train=False, directory=args.data)
    test_x = torch.from_numpy(fashion_mnist.normalize(test_images))
    test_y = torch.from_numpy(test_labels.astype(np.int64))

    dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=args.rank, world_size=args.world,
                            timeout=datetime.timedelta(seconds=args.timeout))
    model = DDP(export.make_model())  # broadcasts rank 0's parameters (all ranks start equal anyway)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    params = sum(p.numel() for p in model.parameters())

    count = len(images)
    shard = count // args.world
    steps_per_epoch = shard // args.batch
    if steps_per_epoch < 1:
        sys.exit(f"ddp_cnn.py: a shard of {shard} samples is smaller than one batch of {args.batch}")

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test_x), 1000):
                correct += int((model.module(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum())
        model.train()
        return correct / len(test_x)

    dist.barrier()
    start = time.perf_counter()
    emit(event="ready", rank=args.rank, world=args.world, params=params, steps_per_epoch=steps_per_epoch,
         elapsed=0.0)
    step = 0
    stop = False
    for epoch in range(args.epochs):
        order = fashion_mnist.permutation(count, seed=args.seed, epoch=epoch)
        base = args.rank * shard
        for s in range(steps_per_epoch):
            idx = order[base + s * args.batch:][:args.batch]
            x = torch.from_numpy(fashion_mnist.normalize(images[idx]))
            y = torch.from_numpy(labels[idx].astype(np.int64))
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
            step += 1
            if step % args.log_every == 0:
                emit(event="step", rank=args.rank, step=step, loss=round(loss.item(), 5),
                     elapsed=round(time.perf_counter() - start, 3))
        if args.rank == 0:
            acc = evaluate()
            emit(event="eval", rank=0, epoch=epoch, step=step, accuracy=round(acc, 6),
                 elapsed=round(time.perf_counter() - start, 3))
        # Rank 0 decides whether there is time for another epoch; everyone follows.
        flag = torch.tensor([1 if time.perf_counter() - start > args.max_seconds else 0])
        dist.broadcast(flag, src=0)
        if int(flag[0]):
            stop = True
            break
    # Bytes each rank hands to the all-reduce per step: every gradient once (Gloo's ring sends about 2(W-1)/W of it).
    emit(event="done", rank=args.rank, steps=step, stopped_early=stop, elapsed=round(time.perf_counter() - start, 3),
         bytes_allreduced=step * params * 4)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
