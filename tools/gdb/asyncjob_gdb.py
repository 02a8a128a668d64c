# asyncjob_gdb.py - gdb commands to see asyncjob's jobs, in a live process or
# a core file, with no help from the program.
#
#   asyncjob jobs       every job of every thread: address, state, thread,
#                       start function, stack range, high-water mark, and
#                       for a paused job where, and (live, with pause
#                       timestamps on) for how long
#   asyncjob bt JOB     the backtrace of a paused job, frame by frame with
#                       symbols and source lines
#   asyncjob stats      counts of jobs by state and by kind of stack
#
# Installed where gdb auto-loads it for libasyncjob.so; or load it by hand:
# `source asyncjob_gdb.py`. It only reads memory. It finds the library's
# registry of pools through the symbol asyncjob_debug_registry (in the symbol
# table of an unstripped library, or in its separate debug information),
# which also gives the offsets of every field it reads, so it needs no
# debug information for the library's types. docs/debugging.md shows the
# output.
import time

import gdb

MAGIC = b"asyncjob-debug1"
LAYOUT_FIELDS = (
    "version pool_registry_next pool_jobs pool_owner_tid pool_closing job_next "
    "job_state job_function job_stack_low job_stack_size job_stack_kind "
    "job_saved_sp job_pause_caller job_paused_at_ns job_user_data job_return_free "
    "registers_inline job_pause_frame frame_fp frame_pc frame_size frame_sp").split()
STATES = ["idle", "running", "paused", "orphaned", "tombstone"]
KINDS = ["guarded", "slab", "custom"]
PTR = 8


def _read(address, size):
    return bytes(gdb.selected_inferior().read_memory(address, size))


def _u(address, size=PTR):
    return int.from_bytes(_read(address, size), "little")


class Registry:
    def __init__(self):
        try:
            base = int(gdb.parse_and_eval("(unsigned long)&asyncjob_debug_registry"))
        except gdb.error:
            raise gdb.GdbError("asyncjob: no symbol asyncjob_debug_registry "
                               "(libasyncjob not loaded, or stripped without debug information)")
        if _read(base, len(MAGIC)) != MAGIC:
            raise gdb.GdbError("asyncjob: asyncjob_debug_registry has an unknown layout")
        self.head_address = _u(base + 16)
        self.layout = {}
        for i, name in enumerate(LAYOUT_FIELDS):
            self.layout[name] = _u(base + 24 + 4 * i, 4)

    def pools(self):
        pool = _u(self.head_address)
        seen = 0
        while pool != 0 and seen < 100000:
            yield pool
            pool = _u(pool + self.layout["pool_registry_next"])
            seen += 1

    def jobs(self):
        L = self.layout
        for pool in self.pools():
            tid = _u(pool + L["pool_owner_tid"])
            closing = _u(pool + L["pool_closing"], 1) != 0
            job = _u(pool + L["pool_jobs"])
            while job != 0:
                yield Job(self, job, tid, closing)
                job = _u(job + L["job_next"])


class Job:
    def __init__(self, registry, address, tid, closing):
        L = registry.layout
        self.registry = registry
        self.address = address
        self.tid = tid
        self.closing = closing
        state = _u(address + L["job_state"], 1)
        self.state = STATES[state] if state < len(STATES) else "?"
        self.function = _u(address + L["job_function"])
        self.stack_low = _u(address + L["job_stack_low"])
        self.stack_size = _u(address + L["job_stack_size"])
        kind = _u(address + L["job_stack_kind"], 1)
        self.kind = KINDS[kind] if kind < len(KINDS) else "?"
        self.pause_caller = _u(address + L["job_pause_caller"])
        self.paused_at_ns = _u(address + L["job_paused_at_ns"])
        # The saved registers: in the saved frame on the job's stack, or
        # (ucontext) in the job's header.
        self.registers = 0
        if L["registers_inline"]:
            self.registers = address + L["job_saved_sp"]
            self.sp = _u(self.registers + L["frame_sp"]) if L["frame_sp"] else 0
        else:
            self.registers = _u(address + L["job_saved_sp"]) if L["frame_size"] else 0
            self.sp = self.registers + L["frame_size"]
        # A pause that left through the switch saved its caller as the pc.
        # The caller of ASYNC_pause_job, recorded at every pause; else (an
        # older library) the saved pc of a return-free pause.
        if not self.pause_caller and self.registers and _u(address + L["job_return_free"], 1):
            self.pause_caller = _u(self.registers + L["frame_pc"])

    def high_water(self):
        """Bytes from the top down to the lowest page holding a non-zero
        byte: stacks start out zero-filled, so this is the deepest use
        (an estimate, low by at most what a frame left as zeros)."""
        page = 4096
        address = self.stack_low - self.stack_low % page
        if address < self.stack_low:
            address += page
        top = self.stack_low + self.stack_size
        while address < top:
            try:
                if any(_read(address, page)):
                    return top - address
            except gdb.MemoryError:
                pass
            address += page
        return 0

    def frames(self):
        """Return addresses, innermost first: the caller of ASYNC_pause_job,
        then the frame-pointer chain saved with the job's registers."""
        L = self.registry.layout
        pcs = []
        if self.pause_caller:
            pcs.append(self.pause_caller)
        if not self.registers or not self.sp:
            return pcs
        fp = _u(self.registers + L["frame_fp"])
        above = self.sp - 2 * PTR
        # ASYNC_pause_job's own frame, where it has one (no return-free
        # pauses): its saved frame pointer is the pausing code's.
        frame = _u(self.address + L["job_pause_frame"])
        if frame and not _u(self.address + L["job_return_free"], 1) and frame % PTR == 0 \
                and above <= frame and frame + 2 * PTR <= self.stack_low + self.stack_size:
            fp = frame
        limit = self.stack_low + self.stack_size
        chain = []
        while len(chain) < 256 and fp % PTR == 0 and above <= fp and self.stack_low <= fp \
                and fp + 2 * PTR <= limit:
            ret = _u(fp + PTR)
            if ret == 0:
                break
            chain.append(ret)
            above = fp + 2 * PTR
            fp = _u(fp)
        # The chain may begin inside the library's own pause path (a build
        # without inlining): what comes before the caller's return goes.
        if self.pause_caller in chain:
            chain = chain[chain.index(self.pause_caller) + 1:]
        for ret in chain:
            if len(pcs) >= 64:
                break
            if not pcs or pcs[-1] != ret:
                pcs.append(ret)
        return pcs


def symbol(pc):
    if pc == 0:
        return "-"
    block = None
    try:
        block = gdb.block_for_pc(pc)
    except RuntimeError:
        pass
    while block is not None and block.function is None:
        block = block.superblock
    if block is not None and block.function is not None:
        return block.function.print_name
    text = gdb.execute("info symbol 0x%x" % pc, to_string=True).strip()
    if text.startswith("No symbol"):
        return "??"
    return text.split(" in section")[0].split(" + ")[0]


def source_line(pc):
    # The return address is past the call: look up the call itself.
    sal = gdb.find_pc_line(pc - 1)
    if sal.symtab is None:
        return ""
    return "%s:%d" % (sal.symtab.filename, sal.line)


# CLOCK_MONOTONIC_COARSE, the clock of the pause timestamps (Linux's id).
CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)


def now_ns():
    """The inferior's clock now, when gdb runs beside a live process on the
    same machine (a native connection); None for a core file or a remote
    target, where "now" means nothing to the recorded time."""
    inferior = gdb.selected_inferior()
    connection = getattr(inferior, "connection", None)
    if connection is None or connection.type != "native" or inferior.pid == 0:
        return None
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


class AsyncjobCommand(gdb.Command):
    """asyncjob's jobs: asyncjob jobs | asyncjob bt JOB | asyncjob stats"""

    def __init__(self):
        super().__init__("asyncjob", gdb.COMMAND_DATA, gdb.COMPLETE_NONE, True)


class JobsCommand(gdb.Command):
    """List every asyncjob job of every thread."""

    def __init__(self):
        super().__init__("asyncjob jobs", gdb.COMMAND_DATA)

    def invoke(self, argument, from_tty):
        registry = Registry()
        now = now_ns()
        count = 0
        for job in registry.jobs():
            count += 1
            line = "job 0x%x %-9s thread %d function %s stack 0x%x-0x%x (%s, %d KiB) " \
                   "high-water %.1f KiB" % (
                       job.address, job.state, job.tid, symbol(job.function), job.stack_low,
                       job.stack_low + job.stack_size, job.kind, job.stack_size // 1024,
                       job.high_water() / 1024.0)
            if job.state == "paused":
                line += " paused in %s" % symbol(job.pause_caller)
                if job.paused_at_ns and now is not None and now >= job.paused_at_ns:
                    line += " for %.3f s" % ((now - job.paused_at_ns) / 1e9)
                elif job.paused_at_ns:
                    line += " at %.3f s (CLOCK_MONOTONIC_COARSE)" % (job.paused_at_ns / 1e9)
            gdb.write(line + "\n")
        gdb.write("%d jobs\n" % count)


class BacktraceCommand(gdb.Command):
    """Backtrace of a paused asyncjob job: asyncjob bt JOB-ADDRESS"""

    def __init__(self):
        super().__init__("asyncjob bt", gdb.COMMAND_STACK)

    def invoke(self, argument, from_tty):
        if not argument.strip():
            raise gdb.GdbError("usage: asyncjob bt JOB (an address from `asyncjob jobs`)")
        wanted = int(gdb.parse_and_eval(argument))
        registry = Registry()
        for job in registry.jobs():
            if job.address != wanted:
                continue
            if job.state != "paused":
                raise gdb.GdbError("asyncjob: job 0x%x is %s, not paused" % (wanted, job.state))
            for i, pc in enumerate(job.frames()):
                where = source_line(pc)
                gdb.write("#%-2d 0x%016x in %s%s\n" % (i, pc, symbol(pc),
                                                        " at " + where if where else ""))
            return
        raise gdb.GdbError("asyncjob: 0x%x is not a job of this process" % wanted)


class StatsCommand(gdb.Command):
    """Counts of asyncjob's jobs by state and kind of stack."""

    def __init__(self):
        super().__init__("asyncjob stats", gdb.COMMAND_DATA)

    def invoke(self, argument, from_tty):
        registry = Registry()
        pools = sum(1 for _ in registry.pools())
        states = {}
        kinds = {}
        reserved = 0
        deepest = 0
        for job in registry.jobs():
            states[job.state] = states.get(job.state, 0) + 1
            kinds[job.kind] = kinds.get(job.kind, 0) + 1
            reserved += job.stack_size
            deepest = max(deepest, job.high_water())
        gdb.write("pools %d; jobs %d: %s\n" % (
            pools, sum(states.values()),
            ", ".join("%s %d" % (s, states[s]) for s in STATES if s in states) or "none"))
        gdb.write("stacks: %s; %d KiB reserved; deepest job used %.1f KiB\n" % (
            ", ".join("%s %d" % (k, kinds[k]) for k in KINDS if k in kinds) or "none",
            reserved // 1024, deepest / 1024.0))
        try:
            address = int(gdb.parse_and_eval("(unsigned long)&asyncjob_overflows_caught"))
            gdb.write("stack overflows caught: %d\n" % _u(address))
        except gdb.error:
            pass  # an older library


AsyncjobCommand()
JobsCommand()
BacktraceCommand()
StatsCommand()
