#!/usr/bin/python3
"""Benchmark 1: single-process training step of the Fashion-MNIST CNN, Ravnest next to PyTorch, same run.

For each thread count T (default 1 and 2) and each of R rounds (default 3, alternating the two), it runs
  * Ravnest: `ravnestc compile models/cnn/cnn.onnx --stages 1 --batch 64` then `ravnest-rt --steps W+N --no-eval`
    with OMP_NUM_THREADS=T, timing steps W+1..W+N from the step events ravnest-rt prints (the elapsed time
    at each step end), so data loading and kernel set-up are excluded;
  * PyTorch: bench/pytorch_train.py --threads T --steps N --warmup W (OpenBLAS; see that script's header),
and prints a Markdown table of the median samples/s and the peak RSS (max over rounds) of each.

Both do the same work per step: build the batch from uint8 pixels, forward, softmax cross-entropy, backward,
SGD with momentum 0.9. Run it on a quiet machine:
    tools/setup.sh && /usr/bin/python3 bench/cnn_train.py [--threads 1 2] [--rounds 3] [--steps 200]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ravnest_round(build, bundle, threads, warmup, steps):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = ["/usr/bin/time", "-f", "RSS_KB=%M", os.path.join(build, "tools", "ravnest-rt"), "--bundle",
           os.path.join(bundle, "node0"), "--steps", str(warmup + steps), "--no-eval"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ravnest-rt failed:\n{proc.stderr}")
    elapsed = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event.get("event") == "step":
            elapsed[event["step"]] = event["elapsed"]
    rss_kb = int([l for l in proc.stderr.splitlines() if l.startswith("RSS_KB=")][-1].split("=")[1])
    seconds = elapsed[warmup + steps] - elapsed[warmup]
    return 64 * steps / seconds, rss_kb / 1024


def pytorch_round(threads, warmup, steps):
    cmd = ["/usr/bin/time", "-f", "RSS_KB=%M", "/usr/bin/python3", os.path.join(ROOT, "bench", "pytorch_train.py"),
           "--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"pytorch_train.py failed:\n{proc.stderr}")
    result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    rss_kb = int([l for l in proc.stderr.splitlines() if l.startswith("RSS_KB=")][-1].split("=")[1])
    return result["samples_per_s"], rss_kb / 1024, result.get("blas", "?")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()

    bundle = tempfile.mkdtemp(prefix="ravnest-bench-")
    subprocess.run([os.path.join(args.build, "tools", "ravnestc"), "compile", os.path.join(ROOT, "models/cnn/cnn.onnx"),
                    "-o", bundle, "--stages", "1", "--batch", "64", "--microbatches", "1", "--lr", "0.01",
                    "--momentum", "0.9", "--seed", "0", "--no-eval"], check=True, capture_output=True)
    print("| model | threads | Ravnest samples/s | PyTorch samples/s | speed-up | Ravnest peak RSS | PyTorch peak RSS |")
    print("|---|---|---|---|---|---|---|")
    blas = "?"
    for threads in args.threads:
        rv, pt, rv_rss, pt_rss = [], [], [], []
        for _ in range(args.rounds):
            s, r = ravnest_round(args.build, bundle, threads, args.warmup, args.steps)
            rv.append(s)
            rv_rss.append(r)
            s, r, blas = pytorch_round(threads, args.warmup, args.steps)
            pt.append(s)
            pt_rss.append(r)
        a, b = statistics.median(rv), statistics.median(pt)
        print(f"| cnn | {threads} | {a:.0f} (min {min(rv):.0f}, max {max(rv):.0f}) | {b:.0f} (min {min(pt):.0f}, "
              f"max {max(pt):.0f}) | {a / b:.2f}x | {max(rv_rss):.0f} MB | {max(pt_rss):.0f} MB |", flush=True)
    print(f"\nPyTorch BLAS: {blas}; batch 64; {args.steps} timed steps after {args.warmup} warm-up, "
          f"median of {args.rounds} rounds.")


if __name__ == "__main__":
    main()
