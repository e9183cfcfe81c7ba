#!/usr/bin/python3
"""Same-minute comparison of two Ravnest all-reduce bench binaries and Gloo's allreduce().

For each (N, S) cell and each of --rounds rounds, runs the programs back to back (before, after,
Gloo; --warmup 2 --iters 5 each) and prints a Markdown table: per program the median [min-max] of
the rounds' avg_s (mean of the timed iterations on the slowest rank) and the busbw of the median
(nccl-tests' definition, GB = 1e9 bytes), then after/Gloo and after/before busbw ratios.
With --variant LABEL=PROGRAM [ARGS...] (repeatable) further programs, e.g. the same binary with
another --chunk-kib, join each round and get a LABEL / Gloo busbw column.
The load average is printed at the start and the end. Used for BENCHMARKS.md section 3.
"""
import argparse
import re
import shlex
import statistics
import subprocess


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--after", required=True, help="ravnest-allreduce-bench under test")
    ap.add_argument("--before", help="ravnest-allreduce-bench to compare with (optional)")
    ap.add_argument("--gloo", required=True, help="ravnest-allreduce-gloo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=PROGRAM [ARGS...]",
                    help="one more program (and its extra flags) to time in every round")
    ap.add_argument("--cells", default="2x1,2x16,2x64,3x1,3x16,3x64,4x1,4x16,4x64", help="NxMiB,...")
    args = ap.parse_args()
    cells = [tuple(int(v) for v in c.split("x")) for c in args.cells.split(",")]
    progs = ([("before", [args.before])] if args.before else []) + [("after", [args.after])]
    for v in args.variant:
        label, sep, command = v.partition("=")
        if not sep or not label or not command.strip():
            raise SystemExit(f"--variant '{v}': expected LABEL=PROGRAM [ARGS...]")
        progs.append((label, shlex.split(command)))
    progs.append(("gloo", [args.gloo]))
    variants = [name for name, _ in progs[:-1] if name not in ("after", "before")]

    def run(argv, n, s):
        out = subprocess.run(argv + ["--ranks", str(n), "--mib", str(s), "--warmup", "2", "--iters", "5"],
                             capture_output=True, text=True, timeout=300)
        m = re.search(r"avg_s=([0-9.]+)", out.stdout)
        if out.returncode != 0 or not m:
            raise SystemExit(f"{' '.join(argv)} N={n} S={s} MiB failed:\n{out.stderr}")
        return float(m.group(1))

    def load():
        with open("/proc/loadavg") as f:
            return f.read().split()[0]

    print("load average at the start:", load(), flush=True)
    times = {}
    for n, s in cells:
        for _ in range(args.rounds):
            for name, path in progs:
                times.setdefault((n, s, name), []).append(run(path, n, s))
    print("load average at the end:", load())

    def busbw(t, n, s):
        return s * 1048576 / t * 2 * (n - 1) / n / 1e9

    header = ["N", "S"] + [f"{name} ms median [min-max] / busbw GB/s" for name, _ in progs] + ["after / Gloo busbw"]
    header += [f"{name} / Gloo busbw" for name in variants]
    if args.before:
        header.append("after / before busbw")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n, s in cells:
        row = [str(n), f"{s} MiB"]
        med = {}
        for name, _ in progs:
            v = times[(n, s, name)]
            med[name] = statistics.median(v)
            row.append(f"{med[name] * 1e3:.1f} [{min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}] / {busbw(med[name], n, s):.2f}")
        row.append(f"{med['gloo'] / med['after']:.2f}")
        row += [f"{med['gloo'] / med[name]:.2f}" for name in variants]
        if args.before:
            row.append(f"{med['before'] / med['after']:.2f}")
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
