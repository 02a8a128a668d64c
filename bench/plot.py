#!/usr/bin/env python3
"""Plots time per job against N for the scale case (N jobs paused at once).

Reads the scale-<implementation>-<N>.json files that run.py left in
--results and draws, for libcrypto and asyncjob, the time per job of the
create+pause phase and of the resume+finish phase, into one PNG. Needs
matplotlib (Debian: python3-matplotlib); without it, says so and leaves the
existing plot alone.
"""
import argparse
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from benchlib import load_scale  # noqa: E402

PHASES = (("create_pause_ns_per_job", "create + pause"),
          ("resume_finish_ns_per_job", "resume + finish"))
STYLE = {"libcrypto": dict(color="#c0392b", marker="s"),
         "asyncjob": dict(color="#2471a3", marker="o")}


def load(results):
    """implementation -> {N: counters}"""
    series = {}
    for (implementation, jobs), counters in load_scale(results).items():
        series.setdefault(implementation, {})[jobs] = counters
    return series


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        print("plot.py: matplotlib is not installed (Debian: python3-matplotlib); "
              "{} not redrawn".format(args.output), file=sys.stderr)
        return
    series = load(args.results)
    if not series:
        sys.exit("plot.py: no scale results in " + args.results)

    figure, axes = plt.subplots(1, len(PHASES), figsize=(10, 4.2), dpi=110)
    for axis, (counter, title) in zip(axes, PHASES):
        for implementation in ("libcrypto", "asyncjob"):
            points = sorted(series.get(implementation, {}).items())
            if not points:
                continue
            xs = [n for n, _ in points]
            ys = [bench[counter] / 1000.0 for _, bench in points]
            axis.plot(xs, ys, label=implementation, linewidth=2, markersize=6,
                      **STYLE[implementation])
            for x, y in zip(xs, ys):
                axis.annotate("{:.2f}".format(y) if y < 10 else "{:.1f}".format(y), (x, y),
                              textcoords="offset points", xytext=(0, 7), ha="center",
                              fontsize=8, color=STYLE[implementation]["color"])
        axis.set_xscale("log")
        axis.set_yscale("log")
        jobs = sorted({n for points in series.values() for n in points})
        axis.set_xticks(jobs)
        axis.set_xticklabels(["{:,}".format(n) for n in jobs])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: "{:g}".format(value)))
        axis.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: "{:g}".format(value)))
        axis.set_title(title)
        axis.set_xlabel("jobs paused at once (N)")
        axis.set_ylabel("time per job (µs)")
        axis.grid(True, which="both", alpha=0.3)
        axis.margins(x=0.15, y=0.25)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    figure.suptitle("N jobs paused at once on one thread: time per job")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(args.output)
    print("wrote " + args.output)


if __name__ == "__main__":
    main()
