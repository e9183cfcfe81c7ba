#!/usr/bin/python3
"""Fault-injection benchmark (issue 7): random kill and link-cut scenarios on a 3-stage CNN run with a backup
for every stage (or, with --clusters 2, two clusters of 2 stages averaging every 2 steps, every worker with a
backup, which also takes the worker's place in its averaging ring), each checked against the same run without
faults.

Scenarios (drawn from --seed, printed so a row can be replayed):
  * kill: the worker of a random stage is killed with SIGKILL when the last stage reports a random step;
    its backup takes the stage over and the pipeline replays the unfinished step (docs/faults.md).
    detection = kill -> the backup's "takeover" event; recovery = kill -> the last survivor's "recovered"
    event (both as this script sees the lines arrive, so they include the output pipes' latency).
  * freeze: the same with SIGSTOP instead of SIGKILL: the frozen worker keeps its sockets open and its kernel
    keeps acknowledging, so only the missed heartbeats tell (every node runs with --heartbeat-timeout, the
    deadline's floor; default 3 s here). Detection and recovery as for kill; the frozen process is killed at
    the end.
  * cut: ravnest-launch --links with one node's (worker's or backup's) access link down from second 2 or 3
    for a random 2-10 s
    (links.md "changes"); nothing is declared failed: detection is "-", recovery = how much longer the run
    took than the fault-free run.
For every scenario: steps lost = steps the final run is short of the configured total (0 when it finished),
and whether every stage's final parameters equal the fault-free run's (max relative difference <= 1e-5).

Usage (tools built in --build; the dataset installed):
    /usr/bin/python3 bench/fault_injection.py [--build build] [--scenarios 20] [--seed N] [--steps 150]
                                              [--heartbeat-timeout 3] [--clusters 1|2]
"""
import argparse
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

STAGES = 3
CLUSTERS = 1
WORKERS = STAGES * CLUSTERS  # node c * STAGES + s is stage s of cluster c; node WORKERS + i is worker i's backup
DTYPES = {1: np.float32, 7: np.int64, 11: np.float64, 6: np.int32}


def read_rvt(path):
    """The tensors of a Ravnest tensor file (docs/bundle-format.md)."""
    out = {}
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"RVNTENS1":
        raise ValueError(f"{path}: not a Ravnest tensor file")
    (count,), at = struct.unpack_from("<I", data, 8), 12
    for _ in range(count):
        (name_len,) = struct.unpack_from("<I", data, at)
        at += 4
        name = data[at:at + name_len].decode()
        at += name_len
        dtype, rank = struct.unpack_from("<iI", data, at)
        at += 8
        dims = struct.unpack_from(f"<{rank}q", data, at)
        at += 8 * rank
        (nbytes,) = struct.unpack_from("<Q", data, at)
        at += 8
        out[name] = np.frombuffer(data[at:at + nbytes], dtype=DTYPES.get(dtype, np.uint8)).reshape(dims)
        at += nbytes
    return out


def max_rel_diff(a, b):
    worst = 0.0
    for name, x in a.items():
        y = b[name].astype(np.float64)
        x = x.astype(np.float64)
        scale = max(np.abs(x).max(), 1e-30)
        worst = max(worst, float(np.abs(x - y).max() / scale))
    return worst


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compile_bundles(build, out, steps):
    backups = ",".join(f"{c}:{s}" for c in range(CLUSTERS) for s in range(STAGES))
    clusters = ["--clusters", str(CLUSTERS), "--average-every", "2"] if CLUSTERS > 1 else []
    subprocess.run([os.path.join(build, "tools", "ravnestc"), "compile",
                    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "cnn",
                                 "cnn.onnx"),
                    "-o", out, "--stages", str(STAGES), "--backup-stages", backups, "--batch", "32", "--microbatches",
                    "4", "--steps", str(steps), "--no-eval"] + clusters, check=True, capture_output=True)


def launch(build, bundles, params, links=None):
    """The whole run through ravnest-launch; returns (seconds, exit code)."""
    cmd = [os.path.join(build, "tools", "ravnest-launch"), bundles, "--save-params", params, "--timeout", "300",
           "--quiet"]
    if links:
        cmd += ["--links", links]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return time.monotonic() - start, proc.returncode, proc.stderr


def kill_run(build, bundles, params, stage, at_step, steps, sig, heartbeat_timeout):
    """A ravnest-rt process per worker and backup; worker `stage` (a node number) gets `sig` at `at_step`.
    Returns the scenario's row."""
    rt = os.path.join(build, "tools", "ravnest-rt")
    ports = [free_port() for _ in range(2 * WORKERS)]
    peers = []
    for i, p in enumerate(ports):
        peers += ["--peer", f"node{i}=127.0.0.1:{p}"]
    os.makedirs(params, exist_ok=True)
    procs = {}
    for i in list(range(WORKERS, 2 * WORKERS)) + list(range(WORKERS)):
        procs[i] = subprocess.Popen([rt, "--bundle", os.path.join(bundles, f"node{i}"), "--listen",
                                     f"127.0.0.1:{ports[i]}", "--recv-timeout", "60", "--heartbeat-timeout",
                                     str(heartbeat_timeout), "--save-params",
                                     os.path.join(params, f"node{i}.rvt")] + peers,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                    env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = {i: [] for i in procs}
    events = {}
    t_kill = None
    deadline = time.monotonic() + 300
    open_fds = {procs[i].stdout.fileno(): i for i in procs}
    last = (stage // STAGES) * STAGES + STAGES - 1  # the victim's cluster's last stage
    while open_fds and time.monotonic() < deadline:
        # A frozen worker never ends by itself: once every other node has, it is killed.
        if t_kill is not None and all(p.poll() is not None for i, p in procs.items() if i != stage):
            procs[stage].kill()
        ready, _, _ = select.select(list(open_fds), [], [], 0.05)
        for fd in ready:
            i = open_fds[fd]
            line = procs[i].stdout.readline()
            if not line:
                del open_fds[fd]
                continue
            lines[i].append(line)
            now = time.monotonic()
            if '"event":"takeover"' in line:
                events.setdefault("takeover", now)
            if '"event":"recovered"' in line:
                events["recovered"] = now
            if t_kill is None and i == last and f'"step":{at_step},' in line:
                procs[stage].send_signal(sig)
                t_kill = now
    codes = {i: p.wait(timeout=60) for i, p in procs.items()}
    final_step = 0
    for i in (last, last + WORKERS):
        for line in lines[i]:
            m = re.search(r'"event":"step".*"step":(\d+),', line)
            if m:
                final_step = max(final_step, int(m.group(1)))
    ok = all(code == 0 for i, code in codes.items() if i != stage)
    detect = events.get("takeover", float("nan")) - t_kill if t_kill else float("nan")
    recover = events.get("recovered", float("nan")) - t_kill if t_kill else float("nan")
    files = {w: os.path.join(params, f"node{w + WORKERS if w == stage else w}.rvt") for w in range(WORKERS)}
    return ok, detect, recover, steps - final_step, files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--scenarios", type=int, default=20)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--heartbeat-timeout", type=float, default=3.0)
    ap.add_argument("--clusters", type=int, default=1, choices=[1, 2])
    args = ap.parse_args()
    global STAGES, CLUSTERS, WORKERS
    if args.clusters == 2:
        STAGES, CLUSTERS = 2, 2
    WORKERS = STAGES * CLUSTERS
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="ravnest-faults-")
    bundles = os.path.join(work, "bundles")
    compile_bundles(args.build, bundles, args.steps)
    base_s, code, err = launch(args.build, bundles, os.path.join(work, "base"))
    if code != 0:
        sys.exit(f"the fault-free run failed:\n{err}")
    base = {w: read_rvt(os.path.join(work, "base", f"node{w}.rvt")) for w in range(WORKERS)}
    shape = f"{STAGES} stages + {STAGES} backups" if CLUSTERS == 1 else \
        f"{CLUSTERS} clusters x {STAGES} stages + {WORKERS} backups, averaging every 2 steps"
    print(f"seed {args.seed}; fault-free run {base_s:.1f} s, {args.steps} steps, {shape}, "
          f"heartbeat floor {args.heartbeat_timeout} s, load average {os.getloadavg()[0]:.2f}")
    print("| # | scenario | detection (s) | recovery (s) | steps lost | final parameters match | exit |")
    print("|---|---|---|---|---|---|---|")
    for n in range(args.scenarios):
        params = os.path.join(work, f"s{n}")
        draw = rng.random()
        if draw < 0.7:
            stage = rng.randrange(WORKERS)
            at = rng.randrange(3, args.steps + 1)
            sig = signal.SIGKILL if draw < 0.45 else signal.SIGSTOP
            ok, detect, recover, lost, files = kill_run(args.build, bundles, params, stage, at, args.steps, sig,
                                                        args.heartbeat_timeout)
            who = f"stage {stage}'s worker" if CLUSTERS == 1 else f"node{stage} (cluster {stage // STAGES}, " \
                f"stage {stage % STAGES})"
            what = f"{'kill' if sig == signal.SIGKILL else 'freeze'} {who} at step {at}"
            det, rec = f"{detect:.3f}", f"{recover:.3f}"
        else:
            node = f"node{rng.randrange(2 * WORKERS)}"
            at_s, for_s = rng.randint(2, 3), rng.randint(2, 10)
            links = os.path.join(work, f"links{n}.json")
            with open(links, "w") as f:
                json.dump({"default": {"up_mbit": 1000, "down_mbit": 1000, "delay_ms": 1},
                           "nodes": {node: {"changes": [{"at_s": at_s, "for_s": for_s, "down": True}]}}}, f)
            seconds, code, _ = launch(args.build, bundles, params, links)
            ok, lost = code == 0, 0 if code == 0 else args.steps
            files = {w: os.path.join(params, f"node{w}.rvt") for w in range(WORKERS)}
            what = f"cut {node}'s link from {at_s} s for {for_s} s"
            det, rec = "-", f"{seconds - base_s:.1f}"
        try:
            diff = max(max_rel_diff(base[w], read_rvt(files[w])) for w in range(WORKERS))
            match = f"yes ({diff:.1e})" if diff <= 1e-5 else f"NO ({diff:.1e})"
        except (OSError, ValueError, KeyError) as e:
            match = f"NO ({e.__class__.__name__})"
        print(f"| {n + 1} | {what} | {det} | {rec} | {lost} | {match} | {'0' if ok else 'FAILED'} |", flush=True)


if __name__ == "__main__":
    main()
