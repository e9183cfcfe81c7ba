#!/usr/bin/python3
"""End to end over emulated home links: time for the Fashion-MNIST CNN to first reach 85% test accuracy with 4
processes, PyTorch DDP (Gloo) against Ravnest configurations, in one run (BENCHMARKS.md section 8, issue 6).

What it does, in order:
  1. starts bench/wan/netns_links with 4 namespaces rnw0..rnw3 (10.77.0.1..4), 100 Mbit/s up and down per node,
     20 ms one way between any two (so 40 ms round trips); checks the path with ping;
  2. DDP: `ip netns exec rnw<i> bench/ddp_cnn.py --rank i --world 4` (Gloo bound to rnwt<i>), once per --ddp-lrs;
  3. Ravnest, per configuration: `ravnestc compile models/cnn/cnn.onnx --clusters C --stages S ...` and
     `ip netns exec rnw<i> ravnest-rt --bundle DIR/node<i> --listen 10.77.0.<i+1>:29500 --peer ...` for each node;
  4. prints a Markdown table: time from launch to the first evaluation >= --target (evaluations at each epoch end,
     on both sides), the final accuracy, and the bytes the 4 namespaces sent (IP bytes counted on the TUN devices).
Every process runs with OMP_NUM_THREADS=1 (torch.set_num_threads(1)); on a machine with fewer cores than processes
compute, not the link, is what the cores' sharing makes dominant. Each run is bounded (--epochs and --run-timeout);
netns_links is stopped and `ip netns list` checked for leftovers at the end, also after an error or Ctrl-C.

Usage (root): /usr/bin/python3 bench/ddp_vs_ravnest.py [--build build-wan] [--epochs 3] [--configs ...]
  A configuration is NAME:FLAGS with ravnestc flags separated by commas, e.g. "4x1-K8:--clusters,4,--average-every,8".
"""
import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODES = 4
PREFIX = "rnw"
RT_PORT = 29500
DDP_PORT = 29600

# (name, ravnestc compile flags). Learning rates: the default 0.01 and the linear scaling rule of docs/training.md
# (lr x clusters, as the global batch grows with the clusters).
DEFAULT_CONFIGS = [
    ("4 clusters x 1 stage, K=8, lr 0.04", ["--clusters", "4", "--average-every", "8", "--lr", "0.04"]),
    ("4 clusters x 1 stage, K=1, lr 0.04", ["--clusters", "4", "--average-every", "1", "--lr", "0.04"]),
    ("4 clusters x 1 stage, K=32, lr 0.04", ["--clusters", "4", "--average-every", "32", "--lr", "0.04"]),
    ("4 clusters x 1 stage, K=8, int8 averaging, lr 0.04",
     ["--clusters", "4", "--average-every", "8", "--lr", "0.04", "--compress-averaging", "int8"]),
    ("4 clusters x 1 stage, K=8, lr 0.01", ["--clusters", "4", "--average-every", "8"]),
    ("2 clusters x 2 stages, K=8, m=4, lr 0.02",
     ["--clusters", "2", "--stages", "2", "--average-every", "8", "--microbatches", "4", "--lr", "0.02"]),
]


def ns(i):
    return f"{PREFIX}{i}"


def addr(i):
    return f"10.77.0.{i + 1}"


def tun_tx_bytes():
    """IP bytes sent by every namespace's TUN device (what crossed the emulated links), summed."""
    total = 0
    for i in range(NODES):
        out = subprocess.run(["ip", "-n", ns(i), "-s", "-j", "link", "show", "dev", f"{PREFIX}t{i}"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        total += json.loads(out)[0]["stats64"]["tx"]["bytes"]
    return total


class Procs:
    """Children started inside namespaces; stdout lines arrive on one queue with their time since launch."""

    def __init__(self):
        self.procs = []
        self.lines = queue.Queue()
        self.t0 = time.monotonic()

    def start(self, i, argv, env, log_path):
        log = open(log_path, "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns(i), "env"] + [f"{k}={v}" for k, v in env.items()] + argv,
                             stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
        self.procs.append((p, log))

        def pump():
            for line in p.stdout:
                self.lines.put((time.monotonic() - self.t0, i, line.rstrip("\n")))
        threading.Thread(target=pump, daemon=True).start()

    def running(self):
        return any(p.poll() is None for p, _ in self.procs)

    def stop(self):
        for p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p, log in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            log.close()

    def codes(self):
        return [p.returncode for p, _ in self.procs]


def collect(procs, timeout, on_event):
    """Feeds every JSON line to on_event(t, node, event) until all children exit, on_event returns True (enough
    seen: the children are stopped) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    timed_out = False
    procs.stopped_at_target = False
    while True:
        try:
            t, i, line = procs.lines.get(timeout=0.5)
        except queue.Empty:
            if not procs.running() and procs.lines.empty():
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            continue
        if line.startswith("{"):
            try:
                if on_event(t, i, json.loads(line)):
                    procs.stopped_at_target = True
                    break
            except json.JSONDecodeError:
                pass
    procs.stop()
    return timed_out


def summarise(name, evals, target, wall, tx_bytes, timed_out, codes, extra="", stopped=False):
    """One result row; evals = [(t since launch, epoch, accuracy)]; stopped: the script stopped the processes after
    the target was reached (their exit codes then say SIGTERM)."""
    hit = next((e for e in evals if e[2] >= target), None)
    failed = [c for c in codes if c not in (0, None)]
    if stopped:
        status = "stopped at target"
    else:
        status = "timed out" if timed_out else (f"exit codes {codes}" if failed else "ok")
    return {
        "name": name,
        "time_to_target": hit[0] if hit else None,
        "epoch_at_target": hit[1] + 1 if hit else None,
        "evals": [(round(t, 1), round(a, 4)) for t, _, a in evals],
        "final": evals[-1][2] if evals else None,
        "wall": wall,
        "tx_bytes": tx_bytes,
        "status": status,
        "extra": extra,
    }


def run_ddp(args, lr, workdir):
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = tun_tx_bytes()
    procs = Procs()
    for i in range(NODES):
        procs.start(i, [sys.executable if sys.executable else "/usr/bin/python3", os.path.join(ROOT, "bench", "ddp_cnn.py"),
                        "--rank", str(i), "--world", str(NODES), "--master", f"{addr(0)}:{DDP_PORT}",
                        "--iface", f"{PREFIX}t{i}", "--epochs", str(args.epochs), "--lr", str(lr),
                        "--max-seconds", str(args.run_timeout), "--timeout", "120", "--data", args.data],
                    env, os.path.join(workdir, f"ddp-lr{lr}-rank{i}.log"))
    evals = []

    def on_event(t, i, ev):
        if ev.get("event") == "eval":
            evals.append((t, ev["epoch"], ev["accuracy"]))
            print(f"  ddp lr {lr}: epoch {ev['epoch'] + 1} accuracy {ev['accuracy']:.4f} at {t:.1f} s", flush=True)
            return args.stop_at_target and ev["accuracy"] >= args.target
        if ev.get("event") == "step" and ev["step"] % 100 == 0:
            print(f"  ddp lr {lr}: step {ev['step']} at {t:.1f} s", flush=True)
        return False
    timed_out = collect(procs, args.run_timeout + 120, on_event)
    wall = time.monotonic() - procs.t0
    return summarise(f"PyTorch DDP (Gloo), 4 ranks, batch 64 per rank, lr {lr}", evals, args.target, wall,
                     tun_tx_bytes() - before, timed_out, procs.codes(), stopped=procs.stopped_at_target)


def run_ravnest(args, name, flags, workdir, idx):
    out = os.path.join(workdir, f"ravnest{idx}")
    cmd = [os.path.join(args.build, "tools", "ravnestc"), "compile", os.path.join(ROOT, "models", "cnn", "cnn.onnx"),
           "-o", out, "--epochs", str(args.epochs), "--data", args.data, "--host", "127.0.0.1",
           "--base-port", str(RT_PORT)] + flags
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    ids = sorted(d for d in os.listdir(out) if os.path.isfile(os.path.join(out, d, "manifest.json")))
    if len(ids) != NODES:
        raise RuntimeError(f"{name}: the compile wrote {len(ids)} bundles ({ids}), this benchmark needs {NODES}")
    ids.sort(key=lambda d: int(d.removeprefix("node")) if d.removeprefix("node").isdigit() else 0)
    env = {"OMP_NUM_THREADS": "1"}
    before = tun_tx_bytes()
    procs = Procs()
    for i, node in enumerate(ids):
        argv = [os.path.join(args.build, "tools", "ravnest-rt"), "--bundle", os.path.join(out, node),
                "--listen", f"{addr(i)}:{RT_PORT}", "--connect-timeout", "60", "--recv-timeout", "120"]
        for j, other in enumerate(ids):
            if j != i:
                argv += ["--peer", f"{other}={addr(j)}:{RT_PORT}"]
        procs.start(i, argv, env, os.path.join(workdir, f"ravnest{idx}-{node}.log"))
    evals, done = [], []

    def on_event(t, i, ev):
        if ev.get("event") == "eval":
            evals.append((t, ev["epoch"], ev["accuracy"]))
            print(f"  {name}: epoch {ev['epoch'] + 1} accuracy {ev['accuracy']:.4f} at {t:.1f} s", flush=True)
            return args.stop_at_target and ev["accuracy"] >= args.target
        if ev.get("event") == "done":
            done.append(ev)
        return False
    timed_out = collect(procs, args.run_timeout + 60, on_event)
    wall = time.monotonic() - procs.t0
    # Payload Ravnest itself counted (activations, gradients, averaging), when every node got to report it.
    own = sum(d.get("bytes_act", 0) + d.get("bytes_grad", 0) + d.get("bytes_avg", 0) for d in done)
    extra = f"Ravnest payload {own / 1e6:.1f} MB" if len(done) == NODES else ""
    return summarise(f"Ravnest {name}", evals, args.target, wall, tun_tx_bytes() - before, timed_out,
                     procs.codes(), extra=extra, stopped=procs.stopped_at_target)


def ping_rtt():
    if not shutil.which("ping"):
        return "not measured: ping is not installed (apt-get install iputils-ping)"
    out = subprocess.run(["ip", "netns", "exec", ns(0), "ping", "-c", "5", "-i", "0.2", "-W", "2", addr(1)],
                         capture_output=True, text=True, timeout=30).stdout
    line = [l for l in out.splitlines() if "min/avg/max" in l]
    return line[0].split("=")[1].strip() if line else "no reply"


def table(rows, target, header):
    print()
    print(header)
    print()
    print(f"| configuration | time to first eval >= {target:.0%} (s) | reached at epoch | evals (s, accuracy) | "
          "last eval accuracy | bytes on the links | total wall (s) | status |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = f"{r['time_to_target']:.1f}" if r["time_to_target"] is not None else "not reached"
        ep = str(r["epoch_at_target"]) if r["epoch_at_target"] else "-"
        evals = ", ".join(f"{t_:.0f}: {a:.4f}" for t_, a in r["evals"]) or "-"
        final = f"{r['final']:.4f}" if r["final"] is not None else "-"
        extra = f" ({r['extra']})" if r["extra"] else ""
        print(f"| {r['name']} | {t} | {ep} | {evals} | {final} | {r['tx_bytes'] / 1e6:.1f} MB{extra} | "
              f"{r['wall']:.0f} | {r['status']} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-wan"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--run-timeout", type=float, default=420, help="seconds one run may train")
    ap.add_argument("--ddp-lrs", default="0.04,0.01")
    ap.add_argument("--configs", nargs="*", help="NAME:FLAG,FLAG,... (default: a built-in list)")
    ap.add_argument("--rate-mbit", type=float, default=100)
    ap.add_argument("--delay-ms", type=float, default=20)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--run-all-epochs", dest="stop_at_target", action="store_false",
                    help="train every epoch (default: stop a run at its first evaluation >= --target)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (bundles, logs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("ddp_vs_ravnest.py: run as root (network namespaces and TUN devices)")
    if not 1 <= args.epochs <= 10:
        sys.exit("ddp_vs_ravnest.py: --epochs must be in [1, 10]")
    args.build = os.path.abspath(args.build)
    emulator = os.path.join(args.build, "bench", "wan", "netns_links")
    for b in (emulator, os.path.join(args.build, "tools", "ravnestc"), os.path.join(args.build, "tools", "ravnest-rt")):
        if not os.path.exists(b):
            sys.exit(f"ddp_vs_ravnest.py: {b} is missing: cmake -S . -B {args.build} -G Ninja -DRAVNEST_BUILD_BENCH=ON "
                     f"&& ninja -C {args.build} ravnestc ravnest-rt netns_links")
    configs = DEFAULT_CONFIGS
    if args.configs:
        configs = [(c.split(":", 1)[0], c.split(":", 1)[1].split(",")) for c in args.configs]

    workdir = tempfile.mkdtemp(prefix="ddp_vs_ravnest.")
    # The emulator is the links: real links are not slowed by the hosts' CPU load, so it runs at a real-time
    # priority (it sleeps in epoll between packets and cannot starve the processes it serves).
    rt_prio = ["chrt", "-f", "20"] if shutil.which("chrt") else []
    wan = subprocess.Popen(rt_prio + [emulator, "--nodes", str(NODES), "--rate-mbit", str(args.rate_mbit), "--delay-ms",
                            str(args.delay_ms), "--prefix", PREFIX], stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        ready = wan.stdout.readline()
        if not ready.startswith("ready:"):
            raise RuntimeError(f"netns_links did not start (said {ready!r}); see its error above")
        print(ready.strip(), flush=True)
        rtt = ping_rtt()
        print(f"ping {ns(0)} -> {addr(1)}: rtt min/avg/max/mdev = {rtt}", flush=True)
        load = open("/proc/loadavg").read().split()[:3]
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        for lr in [float(x) for x in args.ddp_lrs.split(",") if x]:
            print(f"DDP lr {lr} ...", flush=True)
            rows.append(run_ddp(args, lr, workdir))
        for idx, (name, flags) in enumerate(configs):
            print(f"Ravnest {name} ...", flush=True)
            try:
                rows.append(run_ravnest(args, name, flags, workdir, idx))
            except (subprocess.CalledProcessError, RuntimeError) as e:
                detail = e.stderr if isinstance(e, subprocess.CalledProcessError) else str(e)
                print(f"  {name}: failed: {detail}", file=sys.stderr)
                rows.append(summarise(f"Ravnest {name}", [], args.target, 0, 0, False, [1], extra="compile failed"))
        load_end = open("/proc/loadavg").read().split()[:3]
        header = (f"{NODES} processes, 1 thread each, on {os.cpu_count()} cores; links {args.rate_mbit:g} Mbit/s "
                  f"up/down per node, {args.delay_ms:g} ms one way (ping rtt min/avg/max/mdev {rtt}); epochs <= "
                  f"{args.epochs}; started {started}, load average {' '.join(load)} at start, "
                  f"{' '.join(load_end)} at end. Times are from launching the 4 processes (startup included).")
        table(rows, args.target, header)
        ddp = [r for r in rows if r["name"].startswith("PyTorch") and r["time_to_target"] is not None]
        rav = [r for r in rows if r["name"].startswith("Ravnest") and r["time_to_target"] is not None]
        if ddp and rav:
            best_d = min(ddp, key=lambda r: r["time_to_target"])
            best_r = min(rav, key=lambda r: r["time_to_target"])
            ratio = best_r["time_to_target"] / best_d["time_to_target"]
            print(f"\nbest Ravnest / best DDP time to {args.target:.0%}: {ratio:.2f} "
                  f"({'meets' if ratio <= 0.5 else 'misses'} the bar of at most 0.5)")
        print(json.dumps(rows), file=open(os.path.join(workdir, "results.json"), "w"))
    finally:
        if wan.poll() is None:
            wan.send_signal(signal.SIGTERM)
            try:
                wan.wait(30)
            except subprocess.TimeoutExpired:
                wan.kill()
                wan.wait(10)
        for line in wan.stdout:
            print(line.rstrip(), flush=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if any(l.startswith(PREFIX) for l in left.split()):
            print(f"warning: namespaces left behind: {left.strip()}; remove them with `ip netns del`", file=sys.stderr)
        if args.keep:
            print(f"work folder: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
