#!/usr/bin/python3
"""PyTorch baseline for benchmark 1: single-process CPU training step of the Fashion-MNIST CNN (models/cnn).

Prints one JSON line:
  {"framework":"pytorch","model":"cnn","threads":T,"batch":64,"samples_per_s":...,"peak_rss_mb":...,
   "steps":N,"warmup":W,"step_ms_median":...,"blas":"...","torch":"..."}

What is measured: W warm-up steps, then N timed steps, each = build the batch from uint8 pixels (normalised as in
models/README.md, the same work rt::fill_batch does) + zero_grad + forward + mean cross-entropy + backward + SGD
(lr 0.01, momentum 0.9). Batches are real Fashion-MNIST training images in the order of the shared sampler
(models/cnn/fashion_mnist.permutation, seed 0, epoch 0 = rt::Sampler(60000, 0).permutation(0)), so Ravnest and
PyTorch see the same data. Initial weights: torch.manual_seed(0), as models/cnn/export.py.

Threads: --threads T sets torch.set_num_threads(T) and, before torch is imported, OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS, so neither OpenMP nor OpenBLAS's own pool use more than T.

BLAS: Debian's torch (BLAS_INFO=generic) calls whatever /usr/lib/x86_64-linux-gnu/libblas.so.3 is, chosen by
update-alternatives. The reference BLAS there is ~10x slower than OpenBLAS and would make an unfair baseline.
Make sure OpenBLAS is selected:
    update-alternatives --display libblas.so.3-x86_64-linux-gnu     # must point to .../openblas-pthread/libblas.so.3
    sudo update-alternatives --set libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
(package libopenblas0-pthread). The script reports in "blas" which libblas file is actually mapped into the process,
and warns on stderr when it is not OpenBLAS. Convolutions go through PyTorch's bundled oneDNN (MKL-DNN) either way.

Usage: /usr/bin/python3 bench/pytorch_train.py --threads 1 [--steps 100] [--warmup 10]
"""
import argparse
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loaded_blas():
    """Real path of the libblas / openblas shared object mapped into this process, or 'unknown'."""
    found = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and ("libblas" in parts[5] or "openblas" in parts[5]):
                    found.add(os.path.realpath(parts[5]))
    except OSError:
        return "unknown"
    return ",".join(sorted(found)) if found else "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1 or args.batch < 1:
        sys.exit("--threads, --steps and --batch must be positive")

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, os.path.join(ROOT, "models", "cnn"))
    import export
    import fashion_mnist

    torch.set_num_threads(args.threads)
    images, labels = fashion_mnist.load(train=True, directory=args.data)
    order = fashion_mnist.permutation(len(images), seed=0, epoch=0)
    model = export.make_model()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    batches_per_epoch = len(images) // args.batch

    def step(i):
        idx = order[(i % batches_per_epoch) * args.batch:][:args.batch]
        x = torch.from_numpy(fashion_mnist.normalize(images[idx]))
        y = torch.from_numpy(labels[idx].astype(np.int64))
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for i in range(args.warmup):
        step(i)
    times = []
    start = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = step(i)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        sys.exit(f"training diverged: loss {loss.item()}")

    blas = loaded_blas()
    if "openblas" not in blas:
        print(f"warning: the BLAS in use is {blas}, not OpenBLAS; see this script's header", file=sys.stderr)
    times.sort()
    print(json.dumps({
        "framework": "pytorch",
        "model": "cnn",
        "threads": args.threads,
        "batch": args.batch,
        "samples_per_s": round(args.steps * args.batch / elapsed, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "steps": args.steps,
        "warmup": args.warmup,
        "step_ms_median": round(1000 * times[len(times) // 2], 3),
        "final_loss": round(loss.item(), 4),
        "blas": blas,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
