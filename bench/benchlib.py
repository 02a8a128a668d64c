"""What the benchmark scripts share.

run.py, compare.py, plot.py and openssl_bench.py import this module for:
describing the machine (cpu_model, system_name), running a program and
capturing its output (run_captured), reading Google Benchmark JSON results
(to_ns, real_ns, load_best, load_scale), and writing Markdown reports
(markdown_table, write_report). It knows nothing of which benchmarks exist
or of what a report says. Python standard library only.

The scripts import it from their own directory; each sets
sys.dont_write_bytecode first so that no __pycache__ lands in the source tree.
"""
import glob
import json
import os
import platform
import re
import subprocess

# ----- The machine -----


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (x86's "model name", or what
    ARM kernels print instead), else whatever Python knows, else "unknown"."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith(("model name", "Model", "CPU part")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def system_name():
    """The operating system and its release to two components, e.g. "Linux 6.1"."""
    return "{} {}".format(platform.system(), ".".join(platform.release().split(".")[:2]))


# ----- Running programs -----


def run_captured(args, **kwargs):
    """Runs a program to its end, its standard output and error captured
    together as text (result.stdout); never raises for a failing exit."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)


# ----- Google Benchmark results -----


def to_ns(value, unit):
    return value * {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]


def real_ns(bench):
    return to_ns(bench["real_time"], bench["time_unit"])


def load_best(paths):
    """Reads Google Benchmark JSON files. Returns their contexts and, per run
    name, the fastest of all its runs in those files (a run on a shared
    machine can only be slowed down by other work). Afterwards
    load_best.counts maps each run name to how many runs were read."""
    contexts, runs = [], {}
    load_best.counts = {}
    for path in sorted(paths):
        with open(path) as file:
            data = json.load(file)
        contexts.append(data["context"])
        for bench in data["benchmarks"]:
            if bench.get("run_type") == "aggregate" or bench.get("error_occurred"):
                continue
            name = bench.get("run_name", bench["name"])
            load_best.counts[name] = load_best.counts.get(name, 0) + 1
            if name not in runs or real_ns(bench) < real_ns(runs[name]):
                runs[name] = bench
    return contexts, runs


SCALE_FILE = re.compile(r"scale-(\w+)-(\d+)-\d+\.json")


def load_scale(results):
    """(implementation, N) -> counters of the scale case, each time the best
    of the runs, the memory figures the largest."""
    scale = {}
    for path in sorted(glob.glob(os.path.join(results, "scale-*.json"))):
        match = SCALE_FILE.fullmatch(os.path.basename(path))
        if not match:
            continue
        key = (match.group(1), int(match.group(2)))
        _, runs = load_best([path])
        for run in runs.values():
            best = scale.setdefault(key, dict(run))
            for counter in ("create_pause_ns_per_job", "resume_finish_ns_per_job"):
                best[counter] = min(best[counter], run[counter])
            for counter in ("rss_kib_per_paused_job", "maps_peak", "rss_peak_mib",
                            "page_tables_kib_per_paused_job"):
                if counter in run:
                    best[counter] = max(best.get(counter, 0), run[counter])
    return scale


# ----- Reports -----


def markdown_table(header, rows, align=None):
    """The lines of a Markdown table. align has one letter per column, "l"
    (the default) or "r"; an empty cell is written as "| |"."""
    align = align or "l" * len(header)

    def line(cells):
        return "|" + "|".join(" {} ".format(c) if str(c) else " " for c in cells) + "|"

    return ([line(header), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
            + [line(row) for row in rows])


def write_report(path, text):
    """Writes text to path and says so."""
    with open(path, "w") as file:
        file.write(text)
    print("wrote " + path)
