#!/usr/bin/python3
"""Benchmark 5: single-process training step of the target models (issue 3), Ravnest next to PyTorch, same run.

For every model (default: cnn, resnet50, inception_v3, bert, gpt_sorter, llama_block, gpt2_small, the committed
SMALL variants; with --full also the full sizes resnet50_full, inception_v3_full, bert_full, gpt_sorter_full and
llama_block_full, exported to --tmp first), every thread count T (default
1 and 2) and each of R rounds (default 3, alternating the two programs), it runs
  * Ravnest: `ravnestc compile MODEL.onnx --stages 1 --batch B --microbatches 1 --lr 0.01 --momentum 0.9 --no-eval`
    once per model, then `ravnest-rt --bundle DIR/node0 --steps W+N --no-eval` with OMP_NUM_THREADS=T; samples/s
    = B * N / (elapsed at step W+N - elapsed at step W), from the `step` events ravnest-rt prints, so process
    start, bundle loading, data set-up and the W warm-up steps are excluded (as bench/cnn_train.py does);
  * PyTorch 1.13 (this script with --pytorch-worker): the same model definition (models/<name>/export.py build(),
    models/cnn/export.make_model() for cnn, seeded as the export), train mode, one fixed batch of B samples,
    each step = zero_grad + forward + mean cross-entropy (models/zoo.loss_of) + backward + SGD(lr 0.01,
    momentum 0.9); W warm-up steps, then N timed steps. OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS
    = T before torch is imported and torch.set_num_threads(T); OpenBLAS as installed (bench/pytorch_train.py's
    header says how to check; the BLAS actually mapped is printed).
Peak RSS of each process from `/usr/bin/time -f %M` (max over rounds). Prints a Markdown table: median samples/s
(min, max over rounds), Ravnest / PyTorch, peak RSS.

Differences that favour PyTorch: Ravnest's step also builds its batch from its data set each step (fashion-mnist
images resized to the model's input, or the sort / sort-classify token tasks, docs/data.md), PyTorch reuses one
fixed tensor. The work per step is otherwise the same model, batch, loss and optimizer.

Run on a quiet machine (check `uptime`), with the tools already built:
    /usr/bin/python3 bench/zoo_bench.py [--build build] [--models cnn bert ...] [--threads 1 2] [--rounds 3]
                                        [--full] [--tmp /tmp/zoo-bench] [--step-scale 1.0]
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (model dir, small?, ONNX file (relative to ROOT, or to --tmp for full), batch, timed steps, warm-up steps)
MODELS = {
    "cnn": ("cnn", True, "models/cnn/cnn.onnx", 64, 200, 20),
    "resnet50": ("resnet50", True, "models/resnet50/resnet50_small.onnx", 32, 100, 10),
    "inception_v3": ("inception_v3", True, "models/inception_v3/inception_v3_small.onnx", 32, 50, 5),
    "bert": ("bert", True, "models/bert/bert_small.onnx", 32, 200, 20),
    "gpt_sorter": ("gpt_sorter", True, "models/gpt_sorter/gpt_sorter_small.onnx", 32, 200, 20),
    "llama_block": ("llama_block", True, "models/llama_block/llama_block_small.onnx", 32, 200, 20),
    "gpt2_small": ("gpt2_small", True, "models/gpt2_small/gpt2_small_small.onnx", 32, 100, 10),
    "resnet50_full": ("resnet50", False, "resnet50_full.onnx", 32, 20, 3),
    "inception_v3_full": ("inception_v3", False, "inception_v3_full.onnx", 8, 10, 2),
    "bert_full": ("bert", False, "bert_full.onnx", 8, 10, 2),
    "gpt_sorter_full": ("gpt_sorter", False, "gpt_sorter_full.onnx", 32, 200, 20),
    "llama_block_full": ("llama_block", False, "llama_block_full.onnx", 8, 10, 2),
}
FULL = [name for name in MODELS if name.endswith("_full")]
DEFAULT = ["cnn", "resnet50", "inception_v3", "bert", "gpt_sorter", "llama_block", "gpt2_small"]


def _rss_mb(stderr):
    return int([l for l in stderr.splitlines() if l.startswith("RSS_KB=")][-1].split("=")[1]) / 1024


# ---------------------------------------------------------------------------------------------------------------
# PyTorch side (runs in a child process so that its threads and peak RSS are its own).


def _load_export(model_dir):
    path = os.path.join(ROOT, "models", model_dir, "export.py")
    spec = importlib.util.spec_from_file_location(f"{model_dir}_export", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytorch_worker(args):
    threads = args.threads[0]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    sys.path.insert(0, os.path.join(ROOT, "models"))
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import zoo
    from pytorch_train import loaded_blas

    torch.set_num_threads(threads)
    model_dir, small, _, batch, _, _ = MODELS[args.pytorch_worker]
    export = _load_export(model_dir)
    if model_dir == "cnn":
        model = export.make_model()
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g)
    else:
        model = export.build(small)
        x, y = export.example(small)  # the fixture batch, tiled to `batch` samples
        reps = -(-batch // x.size(0))
        x = x.repeat(reps, *([1] * (x.dim() - 1)))[:batch].contiguous()
        y = y.repeat(reps, *([1] * (y.dim() - 1)))[:batch].contiguous()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = zoo.loss_of(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        sys.exit(f"training diverged: loss {loss.item()}")
    print(json.dumps({"samples_per_s": args.steps * batch / elapsed, "blas": loaded_blas(),
                      "torch": torch.__version__, "final_loss": loss.item()}))


def pytorch_round(name, threads, steps, warmup):
    cmd = ["/usr/bin/time", "-f", "RSS_KB=%M", "/usr/bin/python3", os.path.abspath(__file__), "--pytorch-worker",
           name, "--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"PyTorch worker for {name} failed:\n{proc.stderr}")
    result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    return result["samples_per_s"], _rss_mb(proc.stderr), result


# ---------------------------------------------------------------------------------------------------------------
# Ravnest side.


def ravnest_round(build, bundle, batch, threads, steps, warmup):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = ["/usr/bin/time", "-f", "RSS_KB=%M", os.path.join(build, "tools", "ravnest-rt"), "--bundle",
           os.path.join(bundle, "node0"), "--steps", str(warmup + steps), "--no-eval"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ravnest-rt on {bundle} failed:\n{proc.stderr}")
    elapsed = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "step":
                elapsed[event["step"]] = event["elapsed"]
    seconds = elapsed[warmup + steps] - elapsed[warmup] if warmup > 0 else elapsed[steps]
    return batch * steps / seconds, _rss_mb(proc.stderr)


def export_full(name, tmp):
    model_dir, _, onnx, _, _, _ = MODELS[name]
    path = os.path.join(tmp, onnx)
    if not os.path.exists(path):
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "models", model_dir, "export.py"), "--full", "--out",
                        path], check=True, capture_output=True)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", nargs="+", default=None, choices=sorted(MODELS))
    ap.add_argument("--full", action="store_true", help="also the full-size models (*_full, exported to --tmp)")
    ap.add_argument("--tmp", default="/tmp/zoo-bench")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--step-scale", type=float, default=1.0, help="multiply every model's timed and warm-up steps "
                    "(at least 5 timed, 1 warm-up): shorter runs on a busy machine")
    ap.add_argument("--pytorch-worker", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pytorch_worker:
        return pytorch_worker(args)

    models = args.models or (DEFAULT + (FULL if args.full else []))
    os.makedirs(args.tmp, exist_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}",
          flush=True)
    print("| model | batch | threads | Ravnest samples/s | PyTorch samples/s | Ravnest / PyTorch | Ravnest peak RSS "
          "| PyTorch peak RSS |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    info = {}
    for name in models:
        _, small, onnx, batch, steps, warmup = MODELS[name]
        steps, warmup = max(5, round(steps * args.step_scale)), max(1, round(warmup * args.step_scale))
        path = os.path.join(ROOT, onnx) if small else export_full(name, args.tmp)
        bundle = os.path.join(args.tmp, name)
        subprocess.run([os.path.join(args.build, "tools", "ravnestc"), "compile", path, "-o", bundle, "--stages", "1",
                        "--batch", str(batch), "--microbatches", "1", "--lr", "0.01", "--momentum", "0.9", "--seed",
                        "0", "--no-eval"], check=True, capture_output=True)
        for threads in args.threads:
            rv, pt, rv_rss, pt_rss = [], [], [], []
            for _ in range(args.rounds):
                s, r = ravnest_round(args.build, bundle, batch, threads, steps, warmup)
                rv.append(s)
                rv_rss.append(r)
                s, r, info = pytorch_round(name, threads, steps, warmup)
                pt.append(s)
                pt_rss.append(r)
            a, b = statistics.median(rv), statistics.median(pt)
            print(f"| {name} | {batch} | {threads} | {a:.0f} (min {min(rv):.0f}, max {max(rv):.0f}) | {b:.0f} "
                  f"(min {min(pt):.0f}, max {max(pt):.0f}) | {a / b:.2f}x | {max(rv_rss):.0f} MB | "
                  f"{max(pt_rss):.0f} MB |", flush=True)
    print(f"\nPyTorch {info.get('torch', '?')}, BLAS: {info.get('blas', '?')}; median of {args.rounds} rounds.")
    print(f"load average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
