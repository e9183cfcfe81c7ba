#!/usr/bin/python3
"""All-reduce benchmark driver: Ravnest's ring all-reduce next to Gloo and MPI.

Builds bench/allreduce/ with -DRAVNEST_BUILD_BENCH=ON in its own build folder, runs
  1. loopback: N = 2, 3, 4 processes, S = 1, 16, 64 MiB of float32, sum; Ravnest,
     Gloo (allreduce() ring, AllreduceRingChunked, AllreduceRing) and MPI_Allreduce
     (Open MPI over loopback TCP, and over shared memory), alternating programs for
     --rounds rounds;
  2. emulated home links: every ring hop through a LinkRelay of --link-mbit per
     direction and --hop-delay-ms one way, S = 1, 16 MiB, Ravnest only, next to the
     ring bound 2(N-1)/N * S/B + 2(N-1) * hop delay;
and prints Markdown tables. Numbers are nccl-tests' (algbw = S/t, busbw = algbw * 2(N-1)/N,
GB = 1e9 bytes); t is the timed loop's wall time per iteration on the slowest rank.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = re.compile(r"^RESULT impl=(\S+) n=(\d+) bytes=(\d+) iters=(\d+) avg_s=([\d.]+) min_s=([\d.]+)")
MPI_TCP = ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo"]
MPI_SM = ["--mca", "btl", "self,vader"]


def sh(cmd, **kw):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def ensure_packages():
    """Gloo and Open MPI are the peers; install them (Debian) when missing and we are root."""
    missing = [pkg for pkg, probe in (("libgloo-dev", "/usr/include/gloo/allreduce.h"),
                                      ("libopenmpi-dev", "/usr/bin/mpicc"), ("openmpi-bin", "/usr/bin/mpirun"))
               if not os.path.exists(probe)]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit("allreduce_bench: missing " + " ".join(missing) + "; run: sudo apt-get install -y " + " ".join(missing))
    sh(["apt-get", "install", "-y", "-q"] + missing, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def build(build_dir):
    sh(["cmake", "-S", REPO, "-B", build_dir, "-G", "Ninja", "-DRAVNEST_BUILD_BENCH=ON", "-DRAVNEST_BUILD_TESTS=OFF"],
       stdout=subprocess.DEVNULL)
    sh(["ninja", "-C", build_dir, "-j2", "ravnest-allreduce-bench", "ravnest-allreduce-gloo", "ravnest-allreduce-mpi"],
       stdout=subprocess.DEVNULL)
    return os.path.join(build_dir, "bench", "allreduce")


def run(cmd, timeout=300):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        sys.exit(f"allreduce_bench: {' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    rows = []
    for line in out.stdout.splitlines():
        m = RESULT.match(line)
        if m:
            rows.append((m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(5)), float(m.group(6))))
    return rows


def programs(bin_dir, n, mib, warmup, iters):
    """(impl, command) for every peer of one (N, sizes) point."""
    common = ["--mib", ",".join(map(str, mib)), "--warmup", str(warmup), "--iters", str(iters)]
    mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(n)]
    mpi = os.path.join(bin_dir, "ravnest-allreduce-mpi")
    yield [os.path.join(bin_dir, "ravnest-allreduce-bench"), "--ranks", str(n)] + common
    for algo in ("allreduce", "ring_chunked", "ring"):
        yield [os.path.join(bin_dir, "ravnest-allreduce-gloo"), "--ranks", str(n), "--algorithm", algo] + common
    yield mpirun + MPI_TCP + [mpi, "--label", "mpi-tcp"] + common
    yield mpirun + MPI_SM + [mpi, "--label", "mpi-shm"] + common


def busbw(n, size, t):
    return size / t / 1e9 * 2 * (n - 1) / n


def fmt_cell(n, size, times):
    med = statistics.median(times)
    rng = f" [{min(times) * 1e3:.1f}–{max(times) * 1e3:.1f}]" if len(times) > 1 else ""
    return f"{med * 1e3:.1f}{rng} / {busbw(n, size, med):.2f}"


IMPLS = [("ravnest", "Ravnest ring"), ("gloo-allreduce", "Gloo allreduce() ring"),
         ("gloo-ring_chunked", "Gloo RingChunked"), ("gloo-ring", "Gloo Ring"),
         ("mpi-tcp", "MPI TCP (lo)"), ("mpi-shm", "MPI shared mem")]


def loopback(bin_dir, ranks, rounds):
    # (impl, n, bytes) -> [avg_s per round]; small sizes get more iterations than 64 MiB.
    results = {}
    for _ in range(rounds):
        for n in ranks:
            for mib, warmup, iters in (([1, 16], 2, 10), ([64], 1, 4)):
                for cmd in programs(bin_dir, n, mib, warmup, iters):
                    for impl, rn, size, t, _ in run(cmd):
                        results.setdefault((impl, rn, size), []).append(t)
    print("\n### Loopback (127.0.0.1), sum of float32\n")
    print(f"Each cell: time per all-reduce in ms, median [min–max] of {rounds} rounds / busbw in GB/s (of the median).\n")
    print("| N | S | " + " | ".join(name for _, name in IMPLS) + " |")
    print("|---|---|" + "---|" * len(IMPLS))
    for n in ranks:
        for mib in (1, 16, 64):
            size = mib << 20
            cells = [fmt_cell(n, size, results[(impl, n, size)]) if (impl, n, size) in results else "–"
                     for impl, _ in IMPLS]
            print(f"| {n} | {mib} MiB | " + " | ".join(cells) + " |")


def links(bin_dir, ranks, mbit, hop_delay_ms):
    print(f"\n### Emulated links: {mbit:g} Mbit/s per direction, {hop_delay_ms:g} ms one way per ring hop\n")
    print("Step model (the ring bound asked for): 2(N-1)/N · S/B + 2(N-1) · L, B the link rate, L the hop's one-way "
          "delay. Chunk pipelining overlaps the steps, so the real floor is lower: "
          "max(2(N-1)/N · S/B + L, 2(N-1) · L). Each iteration starts on every rank at the same instant "
          "(--isolated 1); time = last rank done, mean [min] of 3.\n")
    print("| N | S | Ravnest time (s) | step-model bound (s) | Ravnest / step bound | pipelined floor (s) | "
          "busbw (Mbit/s) |")
    print("|---|---|---|---|---|---|---|")
    for n in ranks:
        cmd = [os.path.join(bin_dir, "ravnest-allreduce-bench"), "--ranks", str(n), "--mib", "1,16", "--warmup", "1",
               "--iters", "3", "--link-mbit", str(mbit), "--delay-ms", str(hop_delay_ms), "--isolated", "1"]
        for impl, rn, size, t, t_min in run(cmd, timeout=600):
            wire = 2 * (n - 1) / n * size * 8 / (mbit * 1e6)
            lat = hop_delay_ms / 1e3
            bound = wire + 2 * (n - 1) * lat
            floor = max(wire + lat, 2 * (n - 1) * lat)
            print(f"| {n} | {size >> 20} MiB | {t:.3f} [{t_min:.3f}] | {bound:.3f} | {t / bound:.2f} | {floor:.3f} | "
                  f"{busbw(n, size, t) * 8e3:.1f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    p.add_argument("--ranks", default="2,3,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--link-mbit", type=float, default=100)
    p.add_argument("--hop-delay-ms", type=float, default=40, help="one-way delay of a ring hop (20 ms per node, two nodes)")
    p.add_argument("--skip-loopback", action="store_true")
    p.add_argument("--skip-links", action="store_true")
    a = p.parse_args()
    ensure_packages()
    if shutil.which("ninja") is None:
        sys.exit("allreduce_bench: ninja not found (apt-get install ninja-build)")
    bin_dir = build(a.build_dir)
    ranks = [int(x) for x in a.ranks.split(",")]
    if not a.skip_loopback:
        loopback(bin_dir, ranks, a.rounds)
    if not a.skip_links:
        links(bin_dir, ranks, a.link_mbit, a.hop_delay_ms)


if __name__ == "__main__":
    main()
