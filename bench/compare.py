#!/usr/bin/env python3
"""Joins the benchmark results of libcrypto and asyncjob into one table.

Reads the Google Benchmark JSON files that run.py left in --results:
  async-libcrypto.json, async-asyncjob.json   the API cases
  scale-<implementation>-<N>.json             N paused jobs
  floor.json                                  asyncjob's bare context switch
  boost-*.json                                asyncjob next to Boost.Context
                                              (only when that peer was built)
prints the comparison table and which targets are met, and writes the same
as Markdown (--markdown) with the machine, the date and what each case
measures. Python standard library only.
"""
import argparse
import datetime
import glob
import os
import platform
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from benchlib import (cpu_model, load_best, load_scale, markdown_table, real_ns,  # noqa: E402
                      system_name, to_ns, write_report)

IMPLEMENTATIONS = ("libcrypto", "asyncjob")

# (key, label, benchmark run name, jobs per iteration, what it measures)
CASES = [
    ("start_finish", "start -> finish (no pause)", "BM_StartFinish", 1,
     "ASYNC_start_job of a job that returns at once; the pool reuses one job."),
    ("full_cycle", "full cycle: start -> pause -> resume -> finish", "BM_FullCycle", 1,
     "A job that pauses once: two ASYNC_start_job calls, four context switches."),
    ("pause_resume", "pause + resume round trip (one long job)", "BM_PauseResume", 1,
     "ASYNC_start_job resuming a job that pauses again at once: two switches."),
    ("args_8", "start -> finish, 8 B of arguments", "BM_StartFinishArgs/8", 1,
     "As start -> finish, with arguments that ASYNC_start_job copies into the job."),
    ("args_256", "start -> finish, 256 B of arguments", "BM_StartFinishArgs/256", 1,
     "The same with 256 bytes."),
    ("args_4096", "start -> finish, 4 KiB of arguments", "BM_StartFinishArgs/4096", 1,
     "The same with 4 KiB."),
    ("wait_ctx", "WAIT_CTX set_wait_fd + get_changed_fds x2 + clear_fd", "BM_WaitCtxFds", 1,
     "Registering a wait fd, reading the changes (count, then fds) and clearing it, "
     "outside any job."),
    ("pool_churn", "job creation, empty pool (per job)", "BM_PoolChurn", 64,
     "64 jobs started and paused at once, so the emptied pool must create each, resumed "
     "to finish, then ASYNC_cleanup_thread() and ASYNC_init_thread(0, 0): per job, "
     "creating it, a full cycle, freeing it and 1/64 of a pool's life."),
    ("fp_exact", "full cycle, job divides exactly (control)", "BM_FpExactJob", 1,
     "The full cycle of a job that does an exact division (1.0 / 2.0, no FP flag "
     "raised) in each segment; control for the next case."),
    ("fp_job", "full cycle, job raises the FP inexact flag", "BM_FpFlagsJob", 1,
     "The same with an inexact division (1.0 / 3.0) in each segment, so that the job "
     "returns with FP status flags the caller did not have."),
    ("fp_caller_clears", "full cycle, caller clears FP flags (control)",
     "BM_FpCallerClears", 1,
     "The full cycle with the caller clearing its FP status flags (ldmxcsr) before "
     "each start and resume; control for the next case."),
    ("fp_caller_clears_job_divides", "  ... and job raises the inexact flag",
     "BM_FpCallerClearsJobDivides", 1,
     "The previous case with the inexact division in the job: the flags differ at every "
     "switch out of the job."),
]
THREAD_COUNTS = (1, 2)
THREADS_RUN = "BM_FullCycleThreads/real_time/threads:{}"
FLOOR_DEPTHS = (0, 1, 3)
# Rows of the experiment without FP control state: (label, run, from its
# context-floor program rather than its job cases).
NOFP_ROWS = [
    ("experiment, no FP control state: raw switch round trip", "BM_SwitchRoundTrip/0", True),
    ("experiment, no FP control state: parked cycle", "BM_ParkedCycle", True),
    ("experiment, no FP control state: ASYNC_* start -> finish", "BM_StartFinish", False),
    ("experiment, no FP control state: ASYNC_* full cycle", "BM_FullCycle", False),
    ("experiment, no FP control state: ASYNC_* pause + resume", "BM_PauseResume", False),
]
# Cases whose asyncjob build must make no heap allocation per iteration.
STEADY_STATE = ("start_finish", "full_cycle", "pause_resume", "args_8", "args_256",
                "args_4096", "fp_exact", "fp_job")
SERIALIZING = {"ldmxcsr", "fldcw", "fldenv", "frstor", "fxrstor", "fxrstor64", "xrstor",
               "xrstor64", "xrstors", "xrstors64", "cpuid", "lfence", "mfence", "serialize",
               "iretq", "wrmsr", "invd", "wbinvd", "lidt", "lgdt"}
# bench/boost_peer.cc: (asyncjob run, Boost run, largest ratio wanted, target)
BOOST_PAIRS = [
    ("BM_AsyncjobRawSwitch", "BM_BoostRawSwitch", 0.6,
     "raw switch round trip <= 0.6x Boost.Context's jump_fcontext round trip"),
    ("BM_AsyncjobJobCycle", "BM_BoostFiberCycle", 0.5,
     "full job cycle <= half of a Boost fiber's create -> pause -> resume -> finish"),
]
BOOST_LABELS = {
    "BM_AsyncjobRawSwitch": "raw switch round trip (asyncjob Switch / Boost jump_fcontext)",
    "BM_AsyncjobJobCycle": "full cycle (ASYNC_start_job job / fiber on a pooled_fixedsize_stack)",
}
NOISE = 1.05  # "not slower" allows 5 % of run-to-run noise


def load_averages(contexts):
    return [c["load_avg"][0] for c in contexts if c.get("load_avg")]


def fmt_time(ns):
    if ns is None:
        return "-"
    if ns < 10:
        return "{:.2f} ns".format(ns)
    if ns < 1000:
        return "{:.1f} ns".format(ns)
    if ns < 1e6:
        return "{:.2f} us".format(ns / 1e3)
    return "{:.2f} ms".format(ns / 1e6)


def fmt_ratio(ratio):
    if ratio is None:
        return "-"
    return "{:.2f}x".format(ratio) if ratio < 10 else "{:.1f}x".format(ratio)


def switch_path_check(binary, objdump):
    """Disassembles asyncjob_context_switch and splits it into the path every
    switch runs (entry to the first indirect jump) and the rest. Returns
    (met, text) or None where not applicable."""
    if platform.machine() not in ("x86_64", "AMD64") or not objdump:
        return None
    try:
        listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", binary],
                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return False, "could not disassemble: {}".format(error)
    match = re.search(r"<asyncjob_context_switch>:\n(.*?)\n\n", listing, re.S)
    if not match:
        return False, "asyncjob_context_switch not found in {}".format(binary)
    main_path, rest, in_main = [], [], True
    for line in match.group(1).splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        mnemonic = parts[1].split()[0] if parts[1].split() else ""
        (main_path if in_main else rest).append(mnemonic)
        if in_main and mnemonic == "jmp" and "*" in parts[1]:
            in_main = False
    bad = sorted({m for m in main_path if m in SERIALIZING})
    behind = sorted({m for m in rest if m in SERIALIZING})
    if bad:
        return False, "serializing on every switch: {}".format(", ".join(bad))
    return True, ("{} instructions on every switch, none serializing; {} only behind "
                  "the branches taken when the FP control state differs").format(
                      len(main_path), " and ".join(behind) or "nothing else")


class Report:
    def __init__(self, results, floor_binary, objdump):
        self.contexts = {}
        self.runs = {}
        self.rounds = 0
        for implementation in IMPLEMENTATIONS:
            paths = glob.glob(os.path.join(results, "async-{}-*.json".format(implementation)))
            if not paths:
                sys.exit("compare.py: no results of {} in {}".format(implementation, results))
            self.contexts[implementation], self.runs[implementation] = load_best(paths)
            self.rounds = load_best.counts.get("BM_FullCycle", 0)
        self.floor_contexts, self.floor = load_best(
            glob.glob(os.path.join(results, "floor-*.json")))
        self.boost_contexts, self.boost = load_best(
            glob.glob(os.path.join(results, "boost-*.json")))
        # The experiment without FP control state (x86-64 only; may be absent).
        _, self.nofp = load_best(glob.glob(os.path.join(results, "nofp-async-*.json")))
        _, self.nofp_floor = load_best(glob.glob(os.path.join(results, "nofp-floor-*.json")))
        self.scale = load_scale(results)  # (implementation, N) -> counters
        self.loads = load_averages(self.floor_contexts + sum(self.contexts.values(), []))
        self.switch_check = switch_path_check(floor_binary, objdump)

    def time_of(self, implementation, run_name, per=1):
        run = self.runs[implementation].get(run_name)
        if run is None or run.get("error_occurred"):
            return None
        return to_ns(run["real_time"], run["time_unit"]) / per

    def counter(self, implementation, run_name, name):
        run = self.runs[implementation].get(run_name)
        return None if run is None else run.get(name)

    def boost_ns(self, run_name):
        run = self.boost.get(run_name)
        return None if run is None else real_ns(run)

    def nofp_ns(self, run_name, floor=False):
        run = (self.nofp_floor if floor else self.nofp).get(run_name)
        return None if run is None else real_ns(run)

    def floor_ns(self, depth):
        run = self.floor.get("BM_SwitchRoundTrip/{}".format(depth))
        return None if run is None else to_ns(run["real_time"], run["time_unit"])

    def case_times(self):
        rows = []
        for key, label, run_name, per, _ in CASES:
            lc = self.time_of("libcrypto", run_name, per)
            aj = self.time_of("asyncjob", run_name, per)
            rows.append((key, label, lc, aj, lc / aj if lc and aj else None))
        return rows

    def thread_rates(self):
        rows = []
        for threads in THREAD_COUNTS:
            name = THREADS_RUN.format(threads)
            lc = self.counter("libcrypto", name, "items_per_second")
            aj = self.counter("asyncjob", name, "items_per_second")
            rows.append((threads, lc, aj, aj / lc if lc and aj else None))
        return rows

    def scale_rows(self):
        jobs_list = sorted({jobs for _, jobs in self.scale})
        rows = []
        for jobs in jobs_list:
            lc = self.scale.get(("libcrypto", jobs), {})
            aj = self.scale.get(("asyncjob", jobs), {})
            rows.append((jobs, lc, aj))
        return rows

    def targets(self):
        """[(met or None, description, evidence)]"""
        times = {row[0]: row for row in self.case_times()}
        out = []

        def ratio_target(key, wanted, text):
            _, _, lc, aj, ratio = times[key]
            met = ratio is not None and ratio >= wanted
            out.append((met if ratio is not None else None, text,
                        "libcrypto {} / asyncjob {} = {}".format(
                            fmt_time(lc), fmt_time(aj), fmt_ratio(ratio))))

        # 1. Creating jobs.
        ratio_target("pool_churn", 1, "job creation from an empty pool >= libcrypto (aim 2x)")
        lc = self.scale.get(("libcrypto", 10_000))
        aj = self.scale.get(("asyncjob", 10_000))
        text = "10,000 paused jobs (every stack guarded): create+pause >= 2x faster per job"
        if lc and aj:
            counter = "create_pause_ns_per_job"
            ratio = lc[counter] / aj[counter]
            out.append((ratio >= 2, text, "libcrypto {} / asyncjob {} = {}".format(
                fmt_time(lc[counter]), fmt_time(aj[counter]), fmt_ratio(ratio))))
        else:
            out.append((None, text, "not run"))
        # 2. The common case of a job's life.
        ratio_target("full_cycle", 6, "full cycle >= 6x faster than libcrypto")
        ratio_target("start_finish", 6, "start -> finish >= 6x faster than libcrypto")
        # 3. A peer in the same run.
        for ours, theirs, wanted, text in BOOST_PAIRS:
            a, b = self.boost_ns(ours), self.boost_ns(theirs)
            if a and b:
                out.append((a / b <= wanted, text, "asyncjob {} / Boost {} = {}".format(
                    fmt_time(a), fmt_time(b), fmt_ratio(a / b))))
            else:
                out.append((None, text, "Boost.Context not found when the benchmarks were built"))
        # 4. is measured under real OpenSSL: benchmarks-openssl.md.
        out.append((None, "provider hand-off <= 5 % overhead (P-256 and RSA-2048)",
                    "measured under real OpenSSL by `cmake --workflow --preset "
                    "bench-openssl`: see [benchmarks-openssl.md](benchmarks-openssl.md)"))

        # 5. What was met before and must stay met.
        million = 1_000_000
        lc = self.scale.get(("libcrypto", million))
        aj = self.scale.get(("asyncjob", million))
        text = "1,000,000 paused jobs: RSS per paused job <= libcrypto's"
        if lc and aj:
            a, b = aj["rss_kib_per_paused_job"], lc["rss_kib_per_paused_job"]
            pa = aj.get("page_tables_kib_per_paused_job")
            pb = lc.get("page_tables_kib_per_paused_job")
            tables = (" (page tables, outside RSS: {:.2f} and {:.2f} KiB)".format(pa, pb)
                      if pa is not None and pb is not None else "")
            out.append((a <= b, text, "asyncjob {:.2f} KiB, libcrypto {:.2f} KiB{}".format(
                a, b, tables)))
        else:
            out.append((None, text, "not run"))
        rates = {threads: (lc, aj) for threads, lc, aj, _ in self.thread_rates()}
        text = "2 threads scale at least as well as libcrypto's (jobs/s, 2 threads / 1 thread)"
        (lc1, aj1), (lc2, aj2) = rates.get(1, (None, None)), rates.get(2, (None, None))
        if lc1 and aj1 and lc2 and aj2:
            ours, theirs = aj2 / aj1, lc2 / lc1
            out.append((ours * NOISE >= theirs, text, "asyncjob {} , libcrypto {}".format(
                fmt_ratio(ours), fmt_ratio(theirs)).replace(" ,", ",")))
        else:
            out.append((None, text, "not run"))

        allocations = {key: self.counter("asyncjob", dict((c[0], c[2]) for c in CASES)[key],
                                         "allocs_per_iteration") for key in STEADY_STATE}
        known = [v for v in allocations.values() if v is not None]
        met = bool(known) and all(v == 0 for v in known)
        out.append((met if known else None,
                    "no heap allocation on the steady-state path",
                    "asyncjob allocations per iteration: {} (malloc interposed here; "
                    "tests/job/alloc_count_test.cc checks it too)".format(
                        ", ".join("{} {:g}".format(k, v) for k, v in allocations.items()
                                  if v is not None))))

        if self.switch_check is not None:
            met, evidence = self.switch_check
            out.append((met, "x86-64 switch: no serializing instruction unless FP control "
                        "state differs", evidence))
        fp, exact, plain = times["fp_job"][3], times["fp_exact"][3], times["full_cycle"][3]
        if fp and exact and plain:
            out.append((fp <= exact * NOISE,
                        "full cycle of a job raising FP status flags not slower than the "
                        "plain full cycle (asyncjob; plain = same job, exact division)",
                        "{} vs {} ({:+.1f} %); the full cycle without any division: {}".format(
                            fmt_time(fp), fmt_time(exact), (fp / exact - 1) * 100,
                            fmt_time(plain))))
        return out

    def analysis(self):
        """Paragraphs explaining the results, with this run's numbers."""
        out = []
        f0, f1, f3 = (self.floor_ns(d) for d in FLOOR_DEPTHS)
        full = self.time_of("asyncjob", "BM_FullCycle")
        lc_full = self.time_of("libcrypto", "BM_FullCycle")
        if f0 and f1 and f3 and full:
            out += [
                "**Switch-heavy cases: mispredicted returns.** The bare switch round trip "
                "costs {} when each side switches straight from its loop, {} when it switches "
                "one call frame down and {} three frames down. After a switch, every return "
                "into a frame that the other side's calls did not push is mispredicted by the "
                "CPU's return-stack predictor. asyncjob's API avoids them (assembly back end, "
                "without sanitizers): `ASYNC_start_job` and `ASYNC_pause_job` do their "
                "bookkeeping before switching and leave through the switch by a tail call, and "
                "a finishing job does its caller's bookkeeping itself, so the resumed side "
                "lands directly in the code that called the API. A full cycle costs {}, "
                "against {} for two three-frame round trips, which is what switches returning "
                "through the API's frames would cost. libcrypto's switches (setjmp/longjmp) "
                "return through frames after every switch, and it does more work per call "
                "({} per full cycle).".format(
                    fmt_time(f0), fmt_time(f1), fmt_time(f3), fmt_time(full),
                    fmt_time(2 * f3), fmt_time(lc_full))]
        lc_m = self.scale.get(("libcrypto", 1_000_000))
        aj_m = self.scale.get(("asyncjob", 1_000_000))
        if lc_m and aj_m and "create_pause_faults_per_job" in aj_m:
            out += [
                "",
                "**Creating a million paused jobs: page faults.** Each paused job touches "
                "fresh memory: asyncjob takes {:.2f} page faults per job (the stack's top "
                "page, which holds the job header and the first frames), libcrypto {:.2f}. "
                "Page faults are expensive on virtual machines (microseconds each), so this "
                "phase is mostly kernel time for both ({} and {} per job) and its ratio "
                "follows the fault counts (see the fresh-page paragraph below).".format(
                    aj_m["create_pause_faults_per_job"], lc_m["create_pause_faults_per_job"],
                    fmt_time(aj_m["create_pause_ns_per_job"]),
                    fmt_time(lc_m["create_pause_ns_per_job"]))]
        if lc_m and aj_m:
            out += [
                "",
                "**Resuming a million paused jobs: memory latency.** No page faults here, "
                "but each job's stack page has not been touched since it paused: the TLB "
                "entry, the page-table entry and the cache lines of the job header and "
                "saved frame all miss ({} per job for asyncjob, {} for libcrypto, against "
                "{} for a pause+resume round trip with everything in cache). With one job "
                "per 64 KiB slot the page tables are sparse (one page-table page per 32 "
                "jobs), which makes the page walks miss too.".format(
                    fmt_time(aj_m["resume_finish_ns_per_job"]),
                    fmt_time(lc_m["resume_finish_ns_per_job"]),
                    fmt_time(self.time_of("asyncjob", "BM_PauseResume")))]
        churn_lc = self.time_of("libcrypto", "BM_PoolChurn", 64)
        churn_aj = self.time_of("asyncjob", "BM_PoolChurn", 64)
        if churn_lc and churn_aj:
            out += [
                "",
                "**Job creation from an empty pool: kept stacks.** A guarded stack costs "
                "system calls to make (mmap, a guard, a page fault) and to free (munmap "
                "and a TLB flush); libcrypto's malloc'd stacks are recycled by malloc. "
                "asyncjob keeps freed guarded stacks mapped, guard in place, in bounded "
                "per-thread and process-wide caches (docs/design.md, \"The stack caches\"), so that "
                "a pool emptied and rebuilt makes no system call: {} per job, against {} "
                "for libcrypto.".format(fmt_time(churn_aj), fmt_time(churn_lc))]
        fresh = self.floor.get("BM_FreshPage")
        lc_k = self.scale.get(("libcrypto", 10_000))
        aj_k = self.scale.get(("asyncjob", 10_000))
        if fresh is not None and lc_k and aj_k:
            page = real_ns(fresh)
            lc_c, aj_c = lc_k["create_pause_ns_per_job"], aj_k["create_pause_ns_per_job"]
            out += [
                "",
                "**What bounds the 10,000-job case: a fresh page per job.** In a fresh "
                "process no stack is cached: every paused job needs a page of memory nobody "
                "touched before (its stack's top page, holding the job header and the first "
                "frames). Touching such a page costs {} here on its own (`BM_FreshPage`: one "
                "byte written to the top page of each 128 KiB slot of a fresh mapping: a page "
                "fault, a zeroed page, and the hypervisor's share). asyncjob takes {:.2f} "
                "faults per job and {} per job in all, libcrypto {:.2f} faults and {}. Being "
                "2x faster than libcrypto would mean {} per job, {} the cost of the one page "
                "alone: no change to the job machinery can get there while each paused job "
                "needs a page of its own. (A one-off experiment on the 2-vCPU virtual "
                "machine of 2026-12-04, not re-run by this page: committing the page ahead "
                "with madvise(MADV_POPULATE_WRITE) as the stack is made left the first touch "
                "costing most of a fault, and the 10,000-job case no faster.) Besides the page, each fresh guarded stack costs "
                "its share of one mmap per run of stacks and an mprotect for its guard, "
                "which splits the mapping (two mappings per stack); guard markers "
                "(MADV_GUARD_INSTALL) would save the mprotect and the split, but gdb's "
                "gcore then leaves those stacks out of its cores (docs/design.md, "
                "\"The stack caches\").".format(
                    fmt_time(page), aj_k.get("create_pause_faults_per_job", 0), fmt_time(aj_c),
                    lc_k.get("create_pause_faults_per_job", 0), fmt_time(lc_c),
                    fmt_time(lc_c / 2), fmt_ratio(lc_c / 2 / page))]
        structure = self.floor.get("BM_ParkedCycle") or self.floor.get("BM_ReturnFreeCycle")
        lc_full = self.time_of("libcrypto", "BM_FullCycle")
        boost_cycle = self.boost_ns("BM_BoostFiberCycle")
        if structure is not None and full and lc_full:
            bare = real_ns(structure)
            text = (
                "**What bounds the full cycle.** The structure of asyncjob's cycle alone "
                "(the parked-context experiment row: four return-free switches, the job "
                "function's mispredicted return after its pause, its context parked "
                "between jobs, and no bookkeeping at all) costs {}, {} faster than "
                "libcrypto's full cycle. asyncjob's full cycle costs {} ({}); the "
                "difference, {}, is the bookkeeping OpenSSL's semantics and asyncjob's "
                "safety need: the pool, the wait context's change rounds, the per-job C++ "
                "exception state, the owner and state checks that refuse misuse, the "
                "switch hooks that keep libcrypto's per-thread library context per job, "
                "the canary check, and the counters of <asyncjob/introspect.h>. 6x "
                "libcrypto would mean {} per cycle, {} of bookkeeping on top of the "
                "structure.").format(
                    fmt_time(bare), fmt_ratio(lc_full / bare), fmt_time(full),
                    fmt_ratio(lc_full / full), fmt_time(full - bare), fmt_time(lc_full / 6),
                    fmt_time(max(lc_full / 6 - bare, 0)))
            fp_read = self.floor.get("BM_ReadFpControl")
            if fp_read is not None:
                text += (
                    " Within the structure, the four switches' stores of the FP control "
                    "state alone take {} here (twice `BM_ReadFpControl`).").format(
                        fmt_time(2 * real_ns(fp_read)))
            nofp_full = self.nofp_ns("BM_FullCycle")
            nofp_sf = self.nofp_ns("BM_StartFinish")
            lc_sf = self.time_of("libcrypto", "BM_StartFinish")
            sf = self.time_of("asyncjob", "BM_StartFinish")
            if nofp_full and nofp_sf and lc_sf and sf:
                full_met, sf_met = lc_full / nofp_full >= 6, lc_sf / nofp_sf >= 6
                text += (
                    " Built with a switch that keeps no FP control state (the experiment "
                    "rows: it neither stores, compares nor reloads MXCSR and the x87 control "
                    "word, and neither does libcrypto's switch), the same API costs {} per "
                    "full cycle ({}) and {} per start -> finish ({}), against {} ({}) and {} "
                    "({}) with it: keeping that state per context costs {} per full cycle "
                    "and {} per start -> finish on this CPU (stmxcsr is microcoded here, and "
                    "the compare must wait for its result). {}").format(
                        fmt_time(nofp_full), fmt_ratio(lc_full / nofp_full), fmt_time(nofp_sf),
                        fmt_ratio(lc_sf / nofp_sf), fmt_time(full), fmt_ratio(lc_full / full),
                        fmt_time(sf), fmt_ratio(lc_sf / sf), fmt_time(full - nofp_full),
                        fmt_time(sf - nofp_sf),
                        "Without it both 6x targets would be met." if full_met and sf_met else
                        "Without it the full cycle would meet 6x; start -> finish would "
                        "still miss it." if full_met else
                        "Without it start -> finish would meet 6x; the full cycle would "
                        "still miss it." if sf_met else
                        "Even without it neither 6x target would be met.")
                text += (
                    " Keeping the FP control state per context is a guarantee of asyncjob's "
                    "(docs/design.md, \"FP control state\"), and it stays.")
            if boost_cycle:
                text += (
                    " Half of Boost's bare fiber cycle is {}, {} the structure's own cost "
                    "with no bookkeeping at all: that target asks for a job cycle with "
                    "{} of bookkeeping.").format(
                        fmt_time(boost_cycle / 2),
                        "below" if boost_cycle / 2 < bare else "just above",
                        "less than none" if boost_cycle / 2 < bare
                        else fmt_time(boost_cycle / 2 - bare))
            nofp_parked = self.nofp_ns("BM_ParkedCycle", floor=True)
            if boost_cycle and nofp_parked and nofp_full:
                text += (
                    " Without the FP control state the structure costs {} ({} half of "
                    "Boost's cycle) and the API's full cycle {}: {}.").format(
                        fmt_time(nofp_parked),
                        "above" if nofp_parked > boost_cycle / 2 else "below",
                        fmt_time(nofp_full),
                        "within that target" if nofp_full <= boost_cycle / 2 else
                        "the bookkeeping on top of the structure still misses that target")
            out += ["", text]
        boost_raw = self.boost_ns("BM_BoostRawSwitch")
        ours_raw = self.boost_ns("BM_AsyncjobRawSwitch")
        fp_read = self.floor.get("BM_ReadFpControl")
        fp_read_ns = real_ns(fp_read) if fp_read is not None else None
        if boost_raw and ours_raw:
            text = (
                "**Raw switch against Boost.Context.** Both switches save the same six "
                "callee-saved registers, store the FP control state of the context they "
                "leave (stmxcsr, fnstcw) and leave by an indirect jump; Boost then reloads "
                "MXCSR and the x87 control word on every switch, asyncjob only when they "
                "differ (a compare and an untaken branch). Per round trip: {} for asyncjob, "
                "{} for Boost ({}); 0.6x would need {}.").format(
                    fmt_time(ours_raw), fmt_time(boost_raw), fmt_ratio(ours_raw / boost_raw),
                    fmt_time(0.6 * boost_raw))
            if fp_read_ns:
                text += (
                    " The two stores of the FP control state that a round trip makes cost "
                    "{} here on their own (`BM_ReadFpControl`), {} of asyncjob's round "
                    "trip (stmxcsr is a microcoded instruction, slow on some CPUs). {} "
                    "Keeping the FP control state per context, which libcrypto's "
                    "setjmp/longjmp switch does not do, is what these stores pay for; "
                    "asyncjob keeps it (see docs/design.md).").format(
                        fmt_time(fp_read_ns), "{:.0f} %".format(100 * fp_read_ns / ours_raw),
                        "0.6x of Boost is less than those stores alone." if
                        0.6 * boost_raw < fp_read_ns else
                        "What is left beside them is the register saves both libraries make.")
            nofp_raw = self.nofp_ns("BM_SwitchRoundTrip/0", floor=True)
            ours_floor = self.floor_ns(0)
            if nofp_raw and ours_floor:
                text += (
                    " The same switch without the FP control state (the experiment build) "
                    "makes the round trip in {} against {} with it: {} of Boost's, where "
                    "the target asks for 0.6x.").format(
                        fmt_time(nofp_raw), fmt_time(ours_floor),
                        fmt_ratio(nofp_raw / boost_raw))
            if ours_raw > boost_raw:
                text += (
                    " On this CPU asyncjob's round trip is the slower one, by {}, although "
                    "both make the same stores: asyncjob reads the stored words back to "
                    "compare them with the resumed context's, and that read waits for the "
                    "microcoded store to complete, where Boost reloads without reading "
                    "(moving the read six instructions later changed nothing measurable). "
                    "Reloading on every switch instead would put ldmxcsr, costly on other "
                    "CPUs, on every switch; the static check above holds asyncjob to not "
                    "doing so.").format(
                        fmt_time(ours_raw - boost_raw))
            out += ["", text]
        clears = self.time_of("asyncjob", "BM_FpCallerClears")
        clears_div = self.time_of("asyncjob", "BM_FpCallerClearsJobDivides")
        if clears and clears_div:
            if clears_div > 1.2 * clears:
                text = (
                    "**A caller that rewrites MXCSR before every call.** The switch reads "
                    "MXCSR (stmxcsr) to compare FP control states; on this CPU reading it "
                    "right after an ldmxcsr that changed its value stalls (tens of ns). When "
                    "the caller clears its FP flags before each start and resume and the job "
                    "raises them again, every such read pays: {} against {} with the same "
                    "clears and no flags raised. libcrypto never reads MXCSR on a switch.")
            else:
                text = (
                    "**A caller that rewrites MXCSR before every call.** The switch reads "
                    "MXCSR (stmxcsr) to compare FP control states; on some CPUs reading it "
                    "right after an ldmxcsr that changed its value stalls (tens of ns), on "
                    "this one it does not: {} against {} with the same clears and no flags "
                    "raised.")
            out += ["", (text + " No reload happens in either case (see the static check "
                         "above).").format(fmt_time(clears_div), fmt_time(clears))]
        return out

    # ----- Output -----

    def tables(self):
        """Returns a list of (title, header, rows) in display order."""
        tables = []
        rows = [(label, fmt_time(lc), fmt_time(aj), fmt_ratio(r))
                for _, label, lc, aj, r in self.case_times()]
        tables.append(("Per operation (best of all runs; ratio = libcrypto / "
                       "asyncjob, > 1 means asyncjob is faster)",
                       ("case", "libcrypto", "asyncjob", "ratio"), rows))

        rows = []
        for threads, lc, aj, r in self.thread_rates():
            rate = lambda v: "-" if v is None else "{:.2f} M/s".format(v / 1e6)
            rows.append(("full cycles, {} thread{}, one pool each".format(
                threads, "s" if threads > 1 else ""), rate(lc), rate(aj), fmt_ratio(r)))
        tables.append(("Jobs per second over all threads (ratio = asyncjob / libcrypto)",
                       ("case", "libcrypto", "asyncjob", "ratio"), rows))

        rows = []
        for jobs, lc, aj in self.scale_rows():
            def cell(run, counter, fmt):
                return fmt(run[counter]) if counter in run else "-"

            def ratio(counter):
                if counter in lc and counter in aj and aj[counter]:
                    return fmt_ratio(lc[counter] / aj[counter])
                return "-"
            n = "{:,}".format(jobs)
            kib = lambda v: "{:.2f} KiB".format(v)
            count = lambda v: "{:,.0f}".format(v)
            rows.append((n + " jobs: create+pause, per job",
                         cell(lc, "create_pause_ns_per_job", fmt_time),
                         cell(aj, "create_pause_ns_per_job", fmt_time),
                         ratio("create_pause_ns_per_job")))
            rows.append((n + " jobs: resume+finish, per job",
                         cell(lc, "resume_finish_ns_per_job", fmt_time),
                         cell(aj, "resume_finish_ns_per_job", fmt_time),
                         ratio("resume_finish_ns_per_job")))
            faults = lambda v: "{:.2f}".format(v)
            rows.append((n + " jobs: page faults per job, create+pause",
                         cell(lc, "create_pause_faults_per_job", faults),
                         cell(aj, "create_pause_faults_per_job", faults), ""))
            rows.append((n + " jobs: RSS per paused job",
                         cell(lc, "rss_kib_per_paused_job", kib),
                         cell(aj, "rss_kib_per_paused_job", kib),
                         ratio("rss_kib_per_paused_job")))
            rows.append((n + " jobs: page tables per paused job",
                         cell(lc, "page_tables_kib_per_paused_job", kib),
                         cell(aj, "page_tables_kib_per_paused_job", kib),
                         ratio("page_tables_kib_per_paused_job")))
            rows.append((n + " jobs: memory mappings at peak",
                         cell(lc, "maps_peak", count), cell(aj, "maps_peak", count), ""))
        tables.append(("N jobs paused at once on one thread (a fresh process per N and "
                       "run; best time of the runs)", ("case", "libcrypto", "asyncjob", "ratio"), rows))

        rows = []
        floor = self.floor_ns(0)
        for depth in FLOOR_DEPTHS:
            value = self.floor_ns(depth)
            label = ("raw switch round trip (ping-pong floor)" if depth == 0 else
                     "  same, Switch() {} call frame{} deep on each side".format(
                         depth, "s" if depth > 1 else ""))
            rows.append((label, fmt_time(value)))
        full = self.time_of("asyncjob", "BM_FullCycle")
        pause = self.time_of("asyncjob", "BM_PauseResume")
        if floor and full:
            rows.append(("asyncjob full cycle / floor", fmt_ratio(full / floor)))
        experiment = self.floor.get("BM_ReturnFreeCycle")
        lc_full = self.time_of("libcrypto", "BM_FullCycle")
        if experiment is not None:
            value = real_ns(experiment)
            rows.append(("experiment: full cycle with no return after a switch",
                         fmt_time(value)))
            if floor:
                rows.append(("  experiment / floor", fmt_ratio(value / floor)))
            if lc_full:
                rows.append(("  libcrypto full cycle / experiment", fmt_ratio(lc_full / value)))
        parked = self.floor.get("BM_ParkedCycle")
        if parked is not None:
            rows.append(("experiment: the same with the context parked between jobs",
                         fmt_time(real_ns(parked))))
            if lc_full:
                rows.append(("  libcrypto full cycle / parked experiment",
                             fmt_ratio(lc_full / real_ns(parked))))
        if floor and pause:
            rows.append(("asyncjob pause+resume / floor", fmt_ratio(pause / floor)))
        fresh = self.floor.get("BM_FreshPage")
        if fresh is not None:
            rows.append(("a fresh page: first write to an untouched page", fmt_time(real_ns(fresh))))
        fp_read = self.floor.get("BM_ReadFpControl")
        if fp_read is not None and "error_occurred" not in fp_read:
            rows.append(("storing the FP control state twice (stmxcsr + fnstcw, as a round trip "
                         "does)", fmt_time(real_ns(fp_read))))
        for label, run_name, floor_run in NOFP_ROWS:
            value = self.nofp_ns(run_name, floor=floor_run)
            if value is not None:
                rows.append((label, fmt_time(value)))
        tables.append(("asyncjob's context switch alone", ("case", "asyncjob"), rows))

        if self.boost:
            rows = []
            for ours, theirs, _, text in BOOST_PAIRS:
                a, b = self.boost_ns(ours), self.boost_ns(theirs)
                rows.append((BOOST_LABELS[ours], fmt_time(a), fmt_time(b),
                             fmt_ratio(a / b) if a and b else "-"))
            tables.append(("asyncjob next to Boost.Context (one program, one run; ratio = "
                           "asyncjob / Boost, < 1 means asyncjob is faster)",
                           ("case", "asyncjob", "Boost", "ratio"), rows))
        return tables

    def print_text(self, out=sys.stdout):
        for title, header, rows in self.tables():
            widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
            print("\n" + title, file=out)
            line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                             for i, (h, w) in enumerate(zip(header, widths)))
            print(line, file=out)
            print("-" * len(line), file=out)
            for row in rows:
                print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths))), file=out)
        if self.loads:
            print("\nload average (1 min) as the programs started: {:.2f} to {:.2f}{}".format(
                min(self.loads), max(self.loads),
                "  (other work was running: figures are noisy)" if max(self.loads) > 1.0
                else ""), file=out)
        print("\nTargets", file=out)
        for met, text, evidence in self.targets():
            mark = {True: "MET   ", False: "MISSED", None: "N/A   "}[met]
            print("  [{}] {}: {}".format(mark, text, evidence), file=out)

    def markdown(self, plot_name):
        lc_name = self.contexts["libcrypto"][0].get("implementation", "libcrypto")
        aj_name = self.contexts["asyncjob"][0].get("implementation", "asyncjob")
        context = self.contexts["asyncjob"][0]
        date = context.get("date", "")[:10] or datetime.date.today().isoformat()
        lines = [
            "# Benchmarks: asyncjob and libcrypto side by side",
            "",
            "Generated by `cmake --workflow --preset bench` (see the README), which builds the",
            "benchmark programs in `bench/`, runs them and rewrites this page and",
            "`{}`. Do not edit by hand: edit `bench/compare.py`.".format(plot_name),
            "",
            *markdown_table(("", ""), [
                ("date", date),
                ("CPU", "{} ({} logical CPUs, {} MHz)".format(
                    cpu_model(), context.get("num_cpus", "?"), context.get("mhz_per_cpu", "?"))),
                ("system", system_name()),
                ("compared", "{} and {}".format(lc_name, aj_name)),
                ("load average (1 min) as the programs started",
                 "{:.2f} to {:.2f}".format(min(self.loads), max(self.loads))
                 if self.loads else "unknown"),
            ]),
            "",
            "Every case is written once against `<openssl/async.h>` and built twice, once",
            "against libcrypto's header and library and once against asyncjob's, so both",
            "implementations make exactly the same calls. Times are wall-clock; each case",
            "ran {} times per implementation (Google Benchmark, rounds alternating between".format(
                self.rounds),
            "the two programs) and the table shows the fastest run, since other work on the",
            "machine can only slow a run down. A load average well above 0 means other work",
            "was running: figures from such a run are noisier. Google Benchmark's warning",
            "that its library was built for debugging concerns the Debian package of Google",
            "Benchmark itself, not the code measured: both programs are Release builds.",
            "",
            "## Targets",
            "",
        ]
        lines += markdown_table(("", "target", "measured"), [
            ({True: "met", False: "**missed**", None: "n/a"}[met], text, evidence)
            for met, text, evidence in self.targets()])
        for title, header, rows in self.tables():
            heading, _, note = title.partition(" (")
            note = note.rstrip(")")
            lines += ["", "## " + heading, ""]
            if note:
                lines += [note[0].upper() + note[1:] + ".", ""]
            lines += markdown_table(header, [[str(c).strip() or " " for c in row] for row in rows],
                                    "l" + "r" * (len(header) - 1))
            if title.startswith("N jobs"):
                lines += ["", "![time per job against N]({})".format(plot_name)]
        lines += ["", "## Where the time goes", ""] + self.analysis()
        lines += ["", "## What each case measures", ""]
        for _, label, _, _, what in CASES:
            if label.lstrip().startswith("..."):
                label = "full cycle, caller clears FP flags and job raises the inexact flag"
            lines.append("- **{}**: {}".format(label.strip(), what))
        lines += [
            "- **full cycles, N threads**: the full cycle on 1 and 2 threads at once, each "
            "thread with its own pool (`ASYNC_init_thread(1, 1)`) and wait context; jobs per "
            "second summed over the threads.",
            "- **N jobs paused at once**: N wait contexts are made first (untimed); then N jobs "
            "are started and each pauses at once (the pool creates every one), VmRSS and the "
            "lines of `/proc/self/maps` are read with all N paused, and each job is resumed "
            "to finish. RSS per paused job is the VmRSS growth over the create+pause phase "
            "divided by N; page tables per paused job the same for VmPTE, which VmRSS "
            "leaves out. Each N runs in a fresh process.",
            "- **raw switch round trip**: asyncjob's `context::Switch()` to a fibre and back, "
            "with nothing else: the floor under every job operation. The deeper variants call "
            "`Switch()` under 1 or 3 out-of-line frames on each side, as an API that switches "
            "and then returns would (`ASYNC_start_job` -> ... -> `Switch()` on one side, "
            "`ASYNC_pause_job` -> ... -> `Switch()` on the other): after a switch every return "
            "to a frame the other side's calls did not push is mispredicted by the "
            "return-stack predictor.",
            "- **experiment: full cycle with no return after a switch**: not asyncjob's API "
            "but the structure it uses with none of its bookkeeping (`BM_ReturnFreeCycle` in "
            "`bench/context_floor.cc`): start, pause and finish do their bookkeeping before "
            "switching and end in a tail call to the switch, so the resumed side lands "
            "straight back in its caller; Prepare() per start as the job layer does.",
            "- **experiment: the same with the context parked between jobs** "
            "(`BM_ParkedCycle`): the same structure with the fibre kept in its entry loop "
            "between jobs, as asyncjob's jobs are (docs/design.md, \"Parked contexts\"): "
            "only the first start prepares a context.",
            "- **storing the FP control state** (`BM_ReadFpControl` in "
            "`bench/context_floor.cc`): stmxcsr and fnstcw into memory, twice, with nothing "
            "else: what the two switches of a round trip spend on the state they keep per "
            "context.",
            "- **experiment: no FP control state** (`bench_async_no_fp` and "
            "`bench_context_floor_no_fp`, x86-64 only): the library built once more with "
            "`ASYNCJOB_EXPERIMENT_NO_FP_CONTROL`, whose switch neither stores, compares nor "
            "reloads MXCSR and the x87 control word (libcrypto's setjmp/longjmp switch keeps "
            "no FP control state either), running the same cases: what keeping that state "
            "per context costs. Never installed, never the library's behaviour.",
            "- **a fresh page** (`BM_FreshPage` in `bench/context_floor.cc`): one byte written "
            "to the top page of each 128 KiB slot of a fresh anonymous mapping of 10,000 "
            "slots (mapping and unmapping untimed): the page fault and zeroed page that "
            "every job created and paused in a fresh process needs at least once.",
            "- **asyncjob next to Boost.Context** (`bench/boost_peer.cc`, built only when "
            "CMake finds Boost.Context, e.g. Debian's libboost-context-dev; it is not part of "
            "CI): both libraries in one program and one run, 64 KiB stacks on both sides. Raw "
            "switch: asyncjob's `context::Switch()` and Boost's `jump_fcontext()` to a fibre "
            "and back. Full cycle: an `ASYNC_start_job` job that pauses once, and a "
            "`boost::context::fiber` on a `pooled_fixedsize_stack` created, resumed until it "
            "resumes its caller, resumed again until it returns, and destroyed.",
            "",
            "Heap allocations per iteration (malloc interposed in both programs):",
            "",
        ]
        allocations = []
        for key, label, run_name, _, _ in CASES:
            lc = self.counter("libcrypto", run_name, "allocs_per_iteration")
            aj = self.counter("asyncjob", run_name, "allocs_per_iteration")
            if lc is not None or aj is not None:
                fmt = lambda v: "-" if v is None else "{:g}".format(round(v, 3))
                allocations.append((label.strip(" ."), fmt(lc), fmt(aj)))
        lines += markdown_table(("case", "libcrypto", "asyncjob"), allocations, "lrr")
        lines += [
            "",
            "Run it again with `cmake --workflow --preset bench`; a quick check that",
            "everything builds and runs (tiny timings, only N = 10,000, report written into",
            "the build tree instead of here) is `ASYNCJOB_BENCH_SMOKE=1 cmake --workflow "
            "--preset bench`.",
            "",
        ]
        return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--floor-binary", default="")
    parser.add_argument("--objdump", default="")
    parser.add_argument("--markdown")
    parser.add_argument("--plot-name", default="benchmarks-scale.png")
    args = parser.parse_args()
    report = Report(args.results, args.floor_binary, args.objdump)
    report.print_text()
    if args.markdown:
        print()
        write_report(args.markdown, report.markdown(args.plot_name))


if __name__ == "__main__":
    main()
