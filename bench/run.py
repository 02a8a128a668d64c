#!/usr/bin/env python3
"""Runs every benchmark program, then the comparison and the plot.

Called by the run_benchmarks target (bench/CMakeLists.txt), which passes the
paths of the programs. Writes Google Benchmark JSON files into --results,
then runs compare.py (prints the table, writes docs/benchmarks.md) and
plot.py (docs/benchmarks-scale.png).

Environment:
  ASYNCJOB_BENCH_SMOKE=1  a quick run that only checks that everything works:
                          one round with tiny timing budgets, only N = 10,000
                          for the scale case, and the report and plot go to
                          the results folder instead of docs/.
"""
import argparse
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from benchlib import run_captured  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE_JOBS = (10_000, 100_000, 1_000_000)


def run(command, out_json, extra=()):
    """Runs one benchmark program, its JSON going to out_json."""
    args = [command, "--benchmark_out=" + out_json, "--benchmark_out_format=json", *extra]
    print("+ " + " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(args)),
          flush=True)
    started = time.monotonic()
    result = run_captured(args)
    # Keep the console output of each program next to its JSON, and show
    # only the result lines here (the full context is in the JSON).
    with open(out_json[:-len(".json")] + ".txt", "w") as log:
        log.write(result.stdout)
    for line in result.stdout.splitlines():
        if line.startswith("BM_") or "ERROR" in line or "error" in line:
            print("    " + line)
    print("    ({:.1f} s)".format(time.monotonic() - started), flush=True)
    if result.returncode != 0:
        sys.exit("{} failed with exit status {}".format(command, result.returncode))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("async-asyncjob", "async-libcrypto", "scale-asyncjob", "scale-libcrypto",
                 "context-floor", "results", "docs"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--objdump", default="")
    parser.add_argument("--boost-peer", default="",
                        help="bench_boost_peer, when Boost.Context was found")
    parser.add_argument("--async-no-fp", default="",
                        help="bench_async_no_fp: the experiment without FP control state")
    parser.add_argument("--context-floor-no-fp", default="",
                        help="bench_context_floor_no_fp: the same experiment's context floor")
    parser.add_argument("--plot-python", default=sys.executable)
    args = parser.parse_args()

    smoke = os.environ.get("ASYNCJOB_BENCH_SMOKE", "") not in ("", "0")
    os.makedirs(args.results, exist_ok=True)
    for stale in os.listdir(args.results):
        if stale.endswith((".json", ".txt")):
            os.remove(os.path.join(args.results, stale))

    # The report takes the best of all runs of a case: on a machine shared
    # with other work a run can only be slowed down, never sped up. The
    # programs run in alternating rounds so that a busy spell is unlikely to
    # fall on all the runs of one implementation.
    if smoke:
        micro = ["--benchmark_min_time=0.01"]
        rounds, scale_rounds, scale_jobs = 1, 1, SCALE_JOBS[:1]
    else:
        micro = ["--benchmark_min_time=0.1", "--benchmark_repetitions=2"]
        rounds, scale_rounds, scale_jobs = 3, 2, SCALE_JOBS

    started = time.monotonic()
    out = lambda name: os.path.join(args.results, name + ".json")
    for round_number in range(rounds):
        run(args.context_floor, out("floor-{}".format(round_number)), micro)
        if args.boost_peer:
            run(args.boost_peer, out("boost-{}".format(round_number)), micro)
        for implementation in ("libcrypto", "asyncjob"):
            run(getattr(args, "async_" + implementation),
                out("async-{}-{}".format(implementation, round_number)), micro)
        # The experiment without FP control state: only the cases it bounds.
        if args.async_no_fp:
            run(args.async_no_fp, out("nofp-async-{}".format(round_number)),
                micro + ["--benchmark_filter=^BM_(StartFinish|FullCycle|PauseResume)$"])
        if args.context_floor_no_fp:
            run(args.context_floor_no_fp, out("nofp-floor-{}".format(round_number)),
                micro + ["--benchmark_filter=^BM_(SwitchRoundTrip/0|ParkedCycle)$"])
    # Each N in a process of its own: memory freed by a smaller N would
    # otherwise be reused by the next and hide its RSS growth.
    for round_number in range(scale_rounds):
        for jobs in scale_jobs:
            for implementation in ("libcrypto", "asyncjob"):
                run(getattr(args, "scale_" + implementation),
                    out("scale-{}-{}-{}".format(implementation, jobs, round_number)),
                    ["--benchmark_filter=^BM_Scale/{}/".format(jobs)])
    print("benchmarks ran in {:.0f} s".format(time.monotonic() - started), flush=True)

    docs = args.results if smoke else args.docs
    os.makedirs(docs, exist_ok=True)
    compare = [sys.executable, os.path.join(HERE, "compare.py"), "--results", args.results,
               "--floor-binary", args.context_floor, "--markdown",
               os.path.join(docs, "benchmarks.md"), "--plot-name", "benchmarks-scale.png"]
    if args.objdump:
        compare += ["--objdump", args.objdump]
    subprocess.run(compare, check=True)
    subprocess.run([args.plot_python, os.path.join(HERE, "plot.py"), "--results", args.results,
                    "--output", os.path.join(docs, "benchmarks-scale.png")], check=True)


if __name__ == "__main__":
    main()
