#!/usr/bin/python3
"""Benchmark 2: pipeline schedules, measured bubbles next to the simulator's prediction.

For the Fashion-MNIST CNN (models/cnn/cnn.onnx) cut into 4 stages, for m = 8 and 16 micro-batches of
--mb-size samples each (global batch = mb-size * m), and for each schedule gpipe, 1f1b, zb-h1, zb-h2, auto:
  * `ravnestc compile --stages 4 --batch B --microbatches m --schedule K --steps N --no-eval`;
  * `ravnest-launch DIR --no-eval --trace T.json --predict` (the launcher adds the simulator's prediction from
    each node's schedule.json and its measured mean F/B/W, comm = mean wire-span duration, to the trace);
  * from the merged trace, over the steady steps (the first --skip steps dropped), per step:
      makespan = first F start on any stage .. last W/STEP end on any stage,
      busy     = sum of F/B/W durations over the stages,
      bubble   = 1 - busy / (p * makespan), averaged over the steps;
    throughput = samples of the steady steps / (their first F start .. their last W/STEP end);
    peak in flight per stage = max over time of micro-batches whose F has ended and whose W has not.
The predicted bubble is otherData.prediction.bubble_ratio (one simulated step; STEP is not in its makespan).
Then everything again with every pipeline link emulated as a home link (--links: 100 Mbit/s up and down,
20 ms one way per node, so 40 ms per link); there the table also shows a prediction whose comm is the wire
span plus the link's latency and serialisation time (ravnestc schedule; for auto that re-plans for those costs).
SVGs of each schedule's predicted timeline (m = 8, measured costs of the run without links) go to
docs/schedules/. Not a test: numbers are printed as a Markdown table.

    /usr/bin/python3 bench/pipeline_bubbles.py [--build build] [--steps 12] [--skip 2] [--mb-size 16]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ["gpipe", "1f1b", "zb-h1", "zb-h2", "auto"]
STAGES = 4  # --stages overrides
HOME_LINK = {"default": {"up_mbit": 100, "down_mbit": 100, "delay_ms": 20, "loss": 0}}


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return proc


def analyse(trace_path, skip, mb_size, m):
    doc = json.load(open(trace_path))
    pred = doc["otherData"]["prediction"]
    measured_pids = {e["pid"] for e in doc["traceEvents"]
                     if e["ph"] == "M" and e["name"] == "process_name" and not e["args"]["name"].startswith("predicted")}
    steps = {}   # step -> list of (kind, pid, start, end) on the compute lane
    wire = []    # (bytes, dur)
    for e in doc["traceEvents"]:
        if e["ph"] != "X" or e["pid"] not in measured_pids:
            continue
        if e["tid"] == 3:
            wire.append((e["args"]["bytes"], e["dur"]))
        if e["tid"] != 1:
            continue
        kind = e["name"].split(" ")[0]
        steps.setdefault(e["args"]["step"], []).append((kind, e["pid"], e["ts"], e["ts"] + e["dur"],
                                                         e["args"]["microbatch"]))
    steady = sorted(s for s in steps if s >= skip)
    if not steady:
        sys.exit(f"{trace_path}: no steps after the first {skip}")
    bubbles, peaks = [], {}
    for s in steady:
        ev = steps[s]
        start = min(t0 for k, _, t0, _, _ in ev if k == "F")
        end = max(t1 for k, _, _, t1, _ in ev if k in ("W", "STEP"))
        busy = sum(t1 - t0 for k, _, t0, t1, _ in ev if k in ("F", "B", "W"))
        bubbles.append(1 - busy / (STAGES * (end - start)))
        for pid in measured_pids:  # F ended, W not yet ended; at equal times the W end counts first
            changes = sorted([(t1, 1) for k, p, _, t1, _ in ev if p == pid and k == "F"] +
                             [(t1, -1) for k, p, _, t1, _ in ev if p == pid and k == "W"])
            level = peak = 0
            for _, d in changes:
                level += d
                peak = max(peak, level)
            peaks[pid] = max(peaks.get(pid, 0), peak)
    t_start = min(t0 for k, _, t0, _, _ in steps[steady[0]] if k == "F")
    t_end = max(t1 for k, _, _, t1, _ in steps[steady[-1]] if k in ("W", "STEP"))
    return {
        "bubble": sum(bubbles) / len(bubbles),
        "pred_bubble": pred["bubble_ratio"],
        "pred_makespan": pred["makespan_s"],
        "pred_peak": pred["peak_in_flight"],
        "costs": pred["costs"],
        "comm": pred["comm_s"],
        "wire_bytes": sum(b for b, _ in wire) / len(wire) if wire else 0,
        "throughput": mb_size * m * len(steady) / ((t_end - t_start) * 1e-6),
        "step_ms": (t_end - t_start) * 1e-3 / len(steady),
        "peak": [peaks[p] for p in sorted(peaks)],
    }


def stage_costs_arg(costs):
    return ":".join(f"{c['f_s']:.6f},{c['b_s']:.6f},{c['w_s']:.6f}" for c in costs)


def simulate_cli(build, kind, m, costs, comm, svg=None):
    cmd = [os.path.join(build, "tools", "ravnestc"), "schedule", "--stages", str(STAGES), "--microbatches", str(m),
           "--schedule", kind, "--stage-costs", stage_costs_arg(costs), "--comm", f"{comm:.6f}"]
    if svg:
        cmd += ["--svg", svg]
    out = run(cmd).stdout
    return float(re.search(r"bubble ratio: ([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--mb-size", type=int, default=16, help="samples per micro-batch")
    ap.add_argument("--microbatches", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--links-steps", type=int, default=8, help="steps of the runs over emulated home links")
    ap.add_argument("--svg-dir", default=os.path.join(ROOT, "docs", "schedules"))
    ap.add_argument("--data", default=None, help="Fashion-MNIST folder (default: the compiler's)")
    args = ap.parse_args()
    global STAGES
    STAGES = args.stages
    tools = os.path.join(args.build, "tools")
    work = tempfile.mkdtemp(prefix="ravnest_bubbles_")
    links_file = os.path.join(work, "links.json")
    json.dump(HOME_LINK, open(links_file, "w"))
    t0 = time.time()
    load_start = os.getloadavg()[0]

    results = {}  # (links, m, kind) -> analysis
    for links in (False, True):
        steps = args.links_steps if links else args.steps
        for m in args.microbatches:
            for kind in KINDS:
                bundle = os.path.join(work, f"{kind}-m{m}-{'links' if links else 'direct'}")
                run([os.path.join(tools, "ravnestc"), "compile", os.path.join(ROOT, "models", "cnn", "cnn.onnx"),
                     "-o", bundle, "--stages", str(STAGES), "--batch", str(args.mb_size * m), "--microbatches",
                     str(m), "--schedule", kind, "--steps", str(steps), "--no-eval"]
                    + (["--data", args.data] if args.data else []))
                trace = os.path.join(bundle, "trace.json")
                cmd = [os.path.join(tools, "ravnest-launch"), bundle, "--no-eval", "--quiet", "--trace", trace,
                       "--predict", "--timeout", "300"]
                if links:
                    cmd += ["--links", links_file]
                run(cmd)
                r = analyse(trace, args.skip, args.mb_size, m)
                if links:  # comm = wire span + 40 ms one way + serialisation of the mean frame at 100 Mbit/s
                    r["link_comm"] = r["comm"] + 0.040 + r["wire_bytes"] * 8 / 100e6
                    r["pred_link"] = simulate_cli(args.build, kind, m, r["costs"], r["link_comm"])
                results[(links, m, kind)] = r
                print(f"# {'links' if links else 'direct'} m={m} {kind}: measured {r['bubble']:.3f}, "
                      f"predicted {r['pred_bubble']:.3f}, {r['throughput']:.0f} samples/s "
                      f"({time.time() - t0:.0f} s)", file=sys.stderr)

    os.makedirs(args.svg_dir, exist_ok=True)
    for kind in KINDS:
        r = results[(False, args.microbatches[0], kind)]
        simulate_cli(args.build, kind, args.microbatches[0], r["costs"], r["comm"],
                     os.path.join(args.svg_dir, f"{kind}-p{STAGES}-m{args.microbatches[0]}.svg"))

    print(f"Pipeline bubbles: CNN, {STAGES} stages ({STAGES} ravnest-rt processes), {args.mb_size} samples per micro-batch, "
          f"{args.steps} steps ({args.links_steps} over links), first {args.skip} skipped.")
    print(f"This machine has {os.cpu_count()} cores: the {STAGES} stage processes share them (OMP_NUM_THREADS="
          f"{max(1, os.cpu_count() // STAGES)}), so compute phases of different stages contend and a stage's F/B/W "
          "take longer while its neighbours compute. The measured bubble is therefore not the idle time of a "
          "dedicated-machine pipeline.")
    print("Load average (1 min) at start %.1f, at end %.1f: above %d means other work shared the cores too.\n" % (
        load_start, os.getloadavg()[0], os.cpu_count()))
    for links in (False, True):
        print("### " + ("emulated home links (100 Mbit/s, 20 ms one way per node)" if links else "loopback") + "\n")
        head = "| schedule | m | measured bubble | predicted bubble |"
        sep = "|---|---|---|---|"
        if links:
            head += " predicted, link comm |"
            sep += "---|"
        head += " samples/s | gain over 1f1b | step ms | peak in flight (predicted / measured) |"
        sep += "---|---|---|---|"
        print(head)
        print(sep)
        for m in args.microbatches:
            base = results[(links, m, "1f1b")]["throughput"]
            for kind in KINDS:
                r = results[(links, m, kind)]
                row = f"| {kind} | {m} | {r['bubble']:.3f} | {r['pred_bubble']:.3f} |"
                if links:
                    row += f" {r['pred_link']:.3f} (comm {r['link_comm'] * 1e3:.0f} ms) |"
                row += (f" {r['throughput']:.0f} | {r['throughput'] / base:.2f}x | {r['step_ms']:.0f} |"
                        f" {' '.join(map(str, r['pred_peak']))} / {' '.join(map(str, r['peak']))} |")
                print(row)
        print()
    r = results[(False, args.microbatches[0], "1f1b")]
    print("Measured mean F/B/W ms per stage (loopback, 1f1b, m = %d): %s; mean wire span %.2f ms." % (
        args.microbatches[0], "; ".join(f"{c['f_s'] * 1e3:.2f}/{c['b_s'] * 1e3:.2f}/{c['w_s'] * 1e3:.2f}"
                                        for c in r["costs"]), r["comm"] * 1e3))
    print(f"Total time {time.time() - t0:.0f} s.")


if __name__ == "__main__":
    main()
