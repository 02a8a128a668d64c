// introspect.cc - <asyncjob/introspect.h>: counters, the jobs of a thread
// or of the process, backtraces of paused jobs, dumps.
//
// A layer above job/ (its registry of pools and per-pool job lists) and
// wait/ (the fds of a job's wait context). Nothing here runs on the start,
// pause or resume paths unless asked: the pause observer (pause times,
// ASYNCJOB_DUMP_ON_FILE) is installed only when one of them is on.
#include "asyncjob/introspect.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "base/error_queue.h"
#include "context/context.h"
#include "job/job.h"
#include "stack/overflow_guard.h"
#include "stack/stack.h"
#include "wait/wait_ctx.h"

namespace {

using asyncjob::base::QueueError;
using asyncjob::job::Job;
using asyncjob::job::JobState;
using asyncjob::job::PoolView;

// The first version of asyncjob_stats_ex ended with stack_size; the
// second added peak_paused and the wake-up counts.
constexpr std::size_t kStatsExV1Size = offsetof(asyncjob_stats_ex, peak_paused);

// Wake-ups reported by engines (asyncjob_count_wakeup()).
std::atomic<std::uint64_t> wakeups_by_callback{0};
std::atomic<std::uint64_t> wakeups_by_fd{0};

std::uint64_t CoarseNow() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(now.tv_nsec);
}

void Dump(FILE* out, const asyncjob_stats_ex& stats);

// ----- The pause observer: pause times and ASYNCJOB_DUMP_ON_FILE -----

std::atomic<bool> pause_timestamps{false};
const char* dump_on_file = nullptr;  // set once, at load
std::atomic<std::uint64_t> next_file_check_ns{0};

void ObservePause(Job* job) {
  const std::uint64_t now = CoarseNow();
  if (pause_timestamps.load(std::memory_order_relaxed)) job->last_pause.at_ns = now;
  if (dump_on_file == nullptr) return;
  // At most one look at the file a second, by whichever thread gets there.
  std::uint64_t due = next_file_check_ns.load(std::memory_order_relaxed);
  if (now < due || !next_file_check_ns.compare_exchange_strong(due, now + 1000000000u,
                                                               std::memory_order_relaxed))
    return;
  if (access(dump_on_file, F_OK) != 0) return;
  // Removed first, so that one request makes one dump.
  if (unlink(dump_on_file) != 0) return;
  // This may run on the job's own stack (a pause that leaves through the
  // switch does its bookkeeping there): only the counters, which include
  // this thread's own, are taken here; the formatting and the walk, which
  // need more stack, run on a thread of their own.
  asyncjob_stats_ex stats;
  stats.size = sizeof stats;
  asyncjob_get_stats_ex(&stats, ASYNCJOB_SCOPE_PROCESS);
  try {
    std::thread([&stats] { Dump(stderr, stats); }).join();
  } catch (...) {
    // No thread to be had: no dump this time, and nothing else disturbed.
  }
}

void UpdatePauseObserver() {
  const bool wanted = pause_timestamps.load(std::memory_order_relaxed) || dump_on_file != nullptr;
  asyncjob::job::SetPauseObserver(wanted ? &ObservePause : nullptr);
}

// ----- Jobs -----

int PublicState(JobState state) {
  switch (state) {
    case JobState::kIdle:
      return ASYNCJOB_JOB_IDLE;
    case JobState::kRunning:
      return ASYNCJOB_JOB_RUNNING;
    case JobState::kPaused:
      return ASYNCJOB_JOB_PAUSED;
    case JobState::kOrphaned:
      return ASYNCJOB_JOB_ORPHANED;
    case JobState::kTombstone:
      return ASYNCJOB_JOB_TOMBSTONE;
  }
  return -1;
}

// Bytes from the top of the usable stack down to its lowest resident page.
std::size_t HighWaterMark(const Job* job, std::size_t* resident_bytes) {
  *resident_bytes = 0;
  if (job->stack.kind == asyncjob::stack::StackKind::kCustom || job->state == JobState::kOrphaned)
    return 0;
  const std::size_t page = asyncjob::stack::PageSize();
  const auto low = reinterpret_cast<std::uintptr_t>(job->stack.low);
  const std::uintptr_t first = (low + page - 1) & ~(page - 1);
  const std::uintptr_t high = reinterpret_cast<std::uintptr_t>(job->stack.high());
  if (high <= first) return 0;
  const std::size_t pages = (high - first + page - 1) / page;
  unsigned char small[256];
  std::vector<unsigned char> large;
  unsigned char* vector = small;
  if (pages > sizeof small) {
    large.resize(pages);
    vector = large.data();
  }
  if (mincore(reinterpret_cast<void*>(first), high - first, vector) != 0) return 0;
  std::size_t lowest = pages;
  for (std::size_t i = pages; i-- > 0;) {
    if (vector[i] & 1) {
      lowest = i;
      *resident_bytes += page;
    }
  }
  if (lowest == pages) return 0;
  return high - (first + lowest * page);
}

void Describe(const PoolView& pool, const Job* job, asyncjob_job_info* info, std::uint64_t now,
              std::size_t* resident) {
  *info = asyncjob_job_info{};
  info->job = reinterpret_cast<ASYNC_JOB*>(const_cast<Job*>(job));
  info->state = PublicState(job->state);
  info->thread_id = pool.owner_tid;
  info->function = reinterpret_cast<void*>(job->entry.function);
  if (info->function != nullptr) {
    Dl_info symbol{};
    if (dladdr(info->function, &symbol) != 0 && symbol.dli_sname != nullptr)
      info->function_name = symbol.dli_sname;
  }
  if (job->state == JobState::kPaused || job->state == JobState::kRunning) {
    if (job->user_data != nullptr) {
      info->wait_ctx = static_cast<asyncjob::wait::WaitContext*>(job->user_data)->handle();
      std::size_t count = 0;
      if (ASYNC_WAIT_CTX_get_all_fds(info->wait_ctx, nullptr, &count) == 1) info->num_fds = count;
    }
  }
  if (job->state == JobState::kPaused) {
    info->pause_caller = const_cast<void*>(asyncjob::job::PauseCaller(job));
    const std::uint64_t at = job->last_pause.at_ns;
    if (at != 0 && now >= at) info->paused_for_ns = now - at;
  }
  info->stack_low = job->stack.low;
  info->stack_size = job->stack.size;
  info->stack_kind = static_cast<int>(job->stack.kind);
  info->stack_high_water = HighWaterMark(job, resident);
}

struct Walk {
  asyncjob_job_visitor visit;
  void* argument;
  std::uint64_t now;
  int calls = 0;
  bool stopped = false;
};

void VisitOne(const PoolView& pool, const Job* job, void* argument) {
  auto* walk = static_cast<Walk*>(argument);
  if (walk->stopped) return;
  asyncjob_job_info info;
  std::size_t resident = 0;
  Describe(pool, job, &info, walk->now, &resident);
  ++walk->calls;
  if (walk->visit(&info, walk->argument) == 0) walk->stopped = true;
}

// Counts of the jobs of a scope, now.
struct Census {
  std::uint64_t now;
  asyncjob_stats_ex* out;
};

void CountOne(const PoolView& pool, const Job* job, void* argument) {
  auto* census = static_cast<Census*>(argument);
  asyncjob_job_info info;
  std::size_t resident = 0;
  Describe(pool, job, &info, census->now, &resident);
  asyncjob_stats_ex* out = census->out;
  ++out->jobs_live;
  if (info.state == ASYNCJOB_JOB_PAUSED) ++out->jobs_paused;
  if (info.state == ASYNCJOB_JOB_RUNNING) ++out->jobs_running;
  if (info.stack_kind == ASYNCJOB_STACK_GUARDED) ++out->stacks_guarded;
  if (info.stack_kind == ASYNCJOB_STACK_SLAB) ++out->stacks_slab;
  if (info.stack_kind == ASYNCJOB_STACK_CUSTOM) ++out->stacks_custom;
  out->stack_bytes_reserved += info.stack_size;
  out->stack_bytes_resident += resident;
  if (info.stack_high_water > out->deepest_stack_bytes)
    out->deepest_stack_bytes = info.stack_high_water;
}

// The deepest stack use of jobs already freed, measured as they go when
// ASYNCJOB_STATS is set (one mincore() per freed job), so that the exit
// report covers them.
std::atomic<std::uint64_t> deepest_of_freed{0};

bool Plausible(const Job* job, std::uintptr_t fp, std::uintptr_t above) {
  const auto low = reinterpret_cast<std::uintptr_t>(job->stack.low);
  const auto high = reinterpret_cast<std::uintptr_t>(job->header_start);
  return fp % sizeof(void*) == 0 && fp >= above && fp >= low && fp + 2 * sizeof(void*) <= high;
}

void PrintStatsLine(FILE* out, const asyncjob_stats_ex& stats) {
  std::fprintf(out,
               "asyncjob stats: %llu created, %llu freed, %llu live, %llu paused now, %llu "
               "running, %llu paused at most; %llu starts, %llu pauses, %llu resumes, %llu "
               "finishes, %llu cancels, %llu no-jobs; %llu orphans (%llu unwound), %llu "
               "tombstones (%llu released); woken %llu times by callback, %llu by fd\n",
               stats.jobs_created, stats.jobs_freed, stats.jobs_live, stats.jobs_paused,
               stats.jobs_running, stats.peak_paused, stats.starts, stats.pauses, stats.resumes,
               stats.finishes, stats.cancels, stats.no_jobs, stats.orphans, stats.orphans_unwound,
               stats.tombstones, stats.tombstones_released, stats.wakeups_by_callback,
               stats.wakeups_by_fd);
  std::fprintf(out,
               "asyncjob stacks: %llu guarded, %llu slab, %llu custom; %llu KiB reserved, %llu "
               "KiB resident; deepest job used %.1f KiB of %.0f KiB; %llu overflows caught\n",
               stats.stacks_guarded, stats.stacks_slab, stats.stacks_custom,
               stats.stack_bytes_reserved / 1024, stats.stack_bytes_resident / 1024,
               static_cast<double>(stats.deepest_stack_bytes) / 1024.0,
               static_cast<double>(stats.stack_size) / 1024.0, stats.stack_overflows);
}

int PrintJob(const asyncjob_job_info* info, void* argument) {
  auto* out = static_cast<FILE*>(argument);
  std::fprintf(out, "  job %p %s thread %lu function %s (%p) stack %p+%zu %s high-water %zu",
               static_cast<void*>(info->job), asyncjob_job_state_name(info->state), info->thread_id,
               info->function_name != nullptr ? info->function_name : "?", info->function,
               info->stack_low, info->stack_size,
               info->stack_kind == ASYNCJOB_STACK_GUARDED ? "guarded"
               : info->stack_kind == ASYNCJOB_STACK_SLAB  ? "slab"
                                                          : "custom",
               info->stack_high_water);
  if (info->state == ASYNCJOB_JOB_PAUSED) {
    Dl_info symbol{};
    const char* name = nullptr;
    if (info->pause_caller != nullptr && dladdr(info->pause_caller, &symbol) != 0)
      name = symbol.dli_sname;
    std::fprintf(out, " paused in %s (%p)", name != nullptr ? name : "?", info->pause_caller);
    if (info->paused_for_ns != 0)
      std::fprintf(out, " for %.3f s", static_cast<double>(info->paused_for_ns) / 1e9);
    if (info->wait_ctx != nullptr)
      std::fprintf(out, " wait_ctx %p fds %zu", static_cast<void*>(info->wait_ctx), info->num_fds);
  }
  std::fputc('\n', out);
  return 1;
}

void DumpAtExit() { asyncjob_dump(stderr); }

void Dump(FILE* out, const asyncjob_stats_ex& stats) {
  std::fprintf(out, "asyncjob dump, pid %ld, context switch %s\n", static_cast<long>(getpid()),
               asyncjob_context_backend());
  PrintStatsLine(out, stats);
  asyncjob_for_each_job_in_process(&PrintJob, out);
  std::fflush(out);
}

void MeasureFreedJob(const Job* job) {
  std::size_t resident = 0;
  const std::uint64_t depth = HighWaterMark(job, &resident);
  std::uint64_t seen = deepest_of_freed.load(std::memory_order_relaxed);
  while (depth > seen &&
         !deepest_of_freed.compare_exchange_weak(seen, depth, std::memory_order_relaxed)) {
  }
}

void PrintStackLineAtExit() {
  asyncjob_stats_ex stats;
  stats.size = sizeof stats;
  asyncjob_get_stats_ex(&stats, ASYNCJOB_SCOPE_PROCESS);
  std::fprintf(stderr, "asyncjob stacks: deepest job used %.1f KiB of %.0f KiB\n",
               static_cast<double>(stats.deepest_stack_bytes) / 1024.0,
               static_cast<double>(stats.stack_size) / 1024.0);
}

__attribute__((constructor)) void ReadIntrospectionEnvironment() {
  const char* times = std::getenv("ASYNCJOB_PAUSE_TIMES");
  if (times != nullptr && *times != '\0' && *times != '0')
    pause_timestamps.store(true, std::memory_order_relaxed);
  const char* file = std::getenv("ASYNCJOB_DUMP_ON_FILE");
  if (file != nullptr && *file != '\0') dump_on_file = file;
  UpdatePauseObserver();
  const char* dump = std::getenv("ASYNCJOB_DUMP");
  if (dump != nullptr && std::strcmp(dump, "exit") == 0) std::atexit(&DumpAtExit);
  const char* stats = std::getenv("ASYNCJOB_STATS");
  if (stats != nullptr && *stats != '\0' && *stats != '0') {
    asyncjob::job::SetJobFreeObserver(&MeasureFreedJob);
    std::atexit(&PrintStackLineAtExit);
  }
}

}  // namespace

extern "C" {

int asyncjob_get_stats_ex(asyncjob_stats_ex* out, int scope) {
  if (out == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_get_stats_ex: out is NULL");
    return 0;
  }
  if (out->size < kStatsExV1Size) {
    QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
               "asyncjob_get_stats_ex: out->size %zu is below the first version's %zu (set it "
               "to sizeof *out)",
               out->size, kStatsExV1Size);
    return 0;
  }
  if (scope != ASYNCJOB_SCOPE_THREAD && scope != ASYNCJOB_SCOPE_PROCESS) {
    QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "asyncjob_get_stats_ex: unknown scope %d",
               scope);
    return 0;
  }
  asyncjob_stats_ex stats{};
  const asyncjob::job::Counters counters = scope == ASYNCJOB_SCOPE_THREAD
                                               ? asyncjob::job::this_thread.counters
                                               : asyncjob::job::ProcessCounters();
  stats.jobs_created = counters.jobs_created;
  stats.jobs_freed = counters.jobs_freed;
  stats.starts = counters.starts;
  stats.pauses = counters.pauses;
  stats.resumes = counters.resumes;
  stats.finishes = counters.finishes;
  stats.cancels = counters.cancels;
  stats.no_jobs = counters.exhausted;
  stats.orphans = counters.orphans;
  stats.orphans_unwound = counters.orphans_unwound;
  stats.tombstones = counters.tombstones;
  stats.tombstones_released = counters.tombstones_released;
  stats.peak_paused = counters.peak_paused;
  stats.wakeups_by_callback = wakeups_by_callback.load(std::memory_order_relaxed);
  stats.wakeups_by_fd = wakeups_by_fd.load(std::memory_order_relaxed);
  stats.stack_overflows = asyncjob::stack::OverflowsCaught();
  Census census{CoarseNow(), &stats};
  if (scope == ASYNCJOB_SCOPE_THREAD) {
    asyncjob::job::ForEachJobOfThisThread(&CountOne, &census);
  } else {
    asyncjob::job::ForEachJobInProcess(&CountOne, &census);
  }
  if (scope == ASYNCJOB_SCOPE_PROCESS) {
    const std::uint64_t freed = deepest_of_freed.load(std::memory_order_relaxed);
    if (freed > stats.deepest_stack_bytes) stats.deepest_stack_bytes = freed;
  }
  stats.stack_size = asyncjob_get_stack_size();
  const std::size_t size = out->size;
  std::memcpy(reinterpret_cast<char*>(out) + sizeof(size_t),
              reinterpret_cast<const char*>(&stats) + sizeof(size_t),
              (size < sizeof stats ? size : sizeof stats) - sizeof(size_t));
  return 1;
}

int asyncjob_count_wakeup(int how) {
  if (how == ASYNCJOB_WAKEUP_BY_CALLBACK) {
    wakeups_by_callback.fetch_add(1, std::memory_order_relaxed);
  } else if (how == ASYNCJOB_WAKEUP_BY_FD) {
    wakeups_by_fd.fetch_add(1, std::memory_order_relaxed);
  } else {
    QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
               "asyncjob_count_wakeup: how is %d, not ASYNCJOB_WAKEUP_BY_CALLBACK (0) or "
               "ASYNCJOB_WAKEUP_BY_FD (1)",
               how);
    return 0;
  }
  return 1;
}

int asyncjob_for_each_job(asyncjob_job_visitor visit, void* arg) {
  if (visit == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_for_each_job: visit is NULL");
    return -1;
  }
  Walk walk{visit, arg, CoarseNow()};
  asyncjob::job::ForEachJobOfThisThread(&VisitOne, &walk);
  return walk.calls;
}

int asyncjob_for_each_job_in_process(asyncjob_job_visitor visit, void* arg) {
  if (visit == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_for_each_job_in_process: visit is NULL");
    return -1;
  }
  Walk walk{visit, arg, CoarseNow()};
  asyncjob::job::ForEachJobInProcess(&VisitOne, &walk);
  return walk.calls;
}

int asyncjob_job_backtrace(ASYNC_JOB* handle, void** frames, int max) {
  if (handle == nullptr || frames == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_job_backtrace: job or frames is NULL");
    return -1;
  }
  if (max < 1) {
    QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "asyncjob_job_backtrace: max is %d", max);
    return -1;
  }
  const Job* job = reinterpret_cast<const Job*>(handle);
  if (job->state != JobState::kPaused) {
    QueueError(ASYNCJOB_R_JOB_NOT_PAUSED, "asyncjob_job_backtrace: the job is not paused");
    return -1;
  }
  if (!asyncjob::job::OwnedByThisThread(job)) {
    QueueError(ASYNCJOB_R_WRONG_THREAD, "asyncjob_job_backtrace: the job is another thread's");
    return -1;
  }
  int count = 0;
  auto add = [&](const void* pc) {
    if (pc == nullptr || count >= max) return;
    if (count > 0 && frames[count - 1] == pc) return;
    frames[count++] = const_cast<void*>(pc);
  };
  const void* caller = asyncjob::job::PauseCaller(job);
  add(caller);
  asyncjob::context::SavedRegisters saved;
  if (!asyncjob::context::GetSavedRegisters(&job->fibre, &saved)) return count;
  auto fp = reinterpret_cast<std::uintptr_t>(saved.fp);
  std::uintptr_t above = reinterpret_cast<std::uintptr_t>(saved.sp) - 2 * sizeof(void*);
  // ASYNC_pause_job()'s own frame, where it has one: its saved frame
  // pointer is the pausing code's, whatever the switch saved.
  const auto pause_frame = reinterpret_cast<std::uintptr_t>(job->last_pause.frame);
  if (!job->return_free && pause_frame != 0 && Plausible(job, pause_frame, above)) fp = pause_frame;
  // The chain may begin inside the library's own pause path (a build
  // without inlining): the frames before the caller's return are dropped.
  constexpr int kMaxChain = 256;
  const void* chain[kMaxChain];
  int length = 0;
  while (length < kMaxChain && Plausible(job, fp, above)) {
    const void* const* frame = reinterpret_cast<const void* const*>(fp);
    chain[length++] = frame[1];
    above = fp + 2 * sizeof(void*);
    fp = reinterpret_cast<std::uintptr_t>(frame[0]);
  }
  int first = 0;
  for (int i = 0; i < length; ++i) {
    if (chain[i] == caller) {
      first = i + 1;
      break;
    }
  }
  for (int i = first; i < length && count < max; ++i) add(chain[i]);
  return count;
}

int asyncjob_print_backtrace(ASYNC_JOB* job, FILE* out) {
  if (out == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_print_backtrace: out is NULL");
    return -1;
  }
  void* frames[64];
  const int count = asyncjob_job_backtrace(job, frames, 64);
  for (int i = 0; i < count; ++i) {
    Dl_info symbol{};
    const char* name = nullptr;
    const char* object = nullptr;
    std::uintptr_t offset = 0;
    if (dladdr(frames[i], &symbol) != 0) {
      name = symbol.dli_sname;
      object = symbol.dli_fname;
      if (symbol.dli_saddr != nullptr)
        offset = reinterpret_cast<std::uintptr_t>(frames[i]) -
                 reinterpret_cast<std::uintptr_t>(symbol.dli_saddr);
    }
    std::fprintf(out, "#%-2d %p in %s+0x%lx (%s)\n", i, frames[i], name != nullptr ? name : "??",
                 static_cast<unsigned long>(offset), object != nullptr ? object : "?");
  }
  return count;
}

int asyncjob_dump(FILE* out) {
  if (out == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_dump: out is NULL");
    return 0;
  }
  asyncjob_stats_ex stats;
  stats.size = sizeof stats;
  asyncjob_get_stats_ex(&stats, ASYNCJOB_SCOPE_PROCESS);
  Dump(out, stats);
  return 1;
}

int asyncjob_set_pause_timestamps(int on) {
  const bool previous = pause_timestamps.exchange(on != 0, std::memory_order_relaxed);
  UpdatePauseObserver();
  return previous ? 1 : 0;
}

const char* asyncjob_job_state_name(int state) {
  switch (state) {
    case ASYNCJOB_JOB_IDLE:
      return "idle";
    case ASYNCJOB_JOB_RUNNING:
      return "running";
    case ASYNCJOB_JOB_PAUSED:
      return "paused";
    case ASYNCJOB_JOB_ORPHANED:
      return "orphaned";
    case ASYNCJOB_JOB_TOMBSTONE:
      return "tombstone";
    default:
      return "?";
  }
}

}  // extern "C"
