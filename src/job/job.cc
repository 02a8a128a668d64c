// job.cc - the cold paths of the job unit (job.h): pools, thread exit,
// the job entry point and counters (cancellation: cancel.cc).
#include "job/job.h"

#include <cxxabi.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <unwind.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>

#include "base/align.h"
#include "base/error_queue.h"
#include "base/fatal.h"
#include "base/sanitizers.h"
#include "job/unwind_check.h"
#include "stack/overflow_guard.h"
#include "stack/stack_cache.h"

#if ASYNCJOB_ASAN
#include <sanitizer/lsan_interface.h>
#endif

namespace asyncjob::job {

constinit thread_local ThreadState this_thread __attribute__((tls_model("initial-exec")));

namespace {

constexpr std::size_t kHeaderAlignment = 64;

// The header's layout (see Job): everything a start, pause, resume and
// finish touch lies before the cancel hooks, in the first four cache lines,
// and the header takes no more room than it used to. Checked where the
// sizes are known: 64-bit targets, the assembly back end, no sanitizers.
#if UINTPTR_MAX == UINT64_MAX && !ASYNCJOB_CONTEXT_UCONTEXT && !ASYNCJOB_ASAN && !ASYNCJOB_TSAN
static_assert(offsetof(Job, cancellation) + offsetof(Job::Cancellation, hooks) <=
              4 * kHeaderAlignment);
// 400 bytes, plus the pool membership links and the last pause's record
// (cold, at the end): still seven cache lines, the room it always took.
static_assert(sizeof(Job) <= 7 * kHeaderAlignment);
#endif

// Thread generations (ThreadState::id): 0 means "none yet".
std::atomic<std::uint64_t> next_thread_id{1};

// Pools of exited threads that hold orphans: kept, and reachable, for the
// life of the process, since the orphans' headers stay readable.
std::mutex orphanage_mutex;
Pool* orphanage = nullptr;

std::atomic<void (*)(Job*)> thread_exit_observer{nullptr};
std::atomic<void (*)(Job*)> tombstone_releaser{nullptr};

// Totals of threads whose pools were cleaned up.
std::mutex totals_mutex;
Counters totals;

void AddCounters(Counters& into, const Counters& from) {
  into.jobs_created += from.jobs_created;
  into.jobs_freed += from.jobs_freed;
  into.starts += from.starts;
  into.resumes += from.resumes;
  into.pauses += from.pauses;
  into.finishes += from.finishes;
  into.cancels += from.cancels;
  into.exhausted += from.exhausted;
  into.orphans += from.orphans;
  into.orphans_unwound += from.orphans_unwound;
  into.tombstones += from.tombstones;
  into.tombstones_released += from.tombstones_released;
  if (from.peak_paused > into.peak_paused) into.peak_paused = from.peak_paused;
}

// Runs the cancel hooks of a paused job that is being given up without an
// unwind (a tombstone, or a job of an exiting thread), from outside it and
// with nothing queued: whoever registered them still holds pointers into
// the job's stack (an accelerator's request), and must let go of them
// before DropStackPages() zeroes it.
void RunHooksOfAbandonedJob(Job* job) {
  if (job->cancellation.hook_count == 0) return;
  base::ScopedErrorSuppression quiet;
  internal::RunCancelHooks(job);
}

// Gives the pages of a job's stack below its header page back to the
// kernel: for a job whose frames never run nor unwind again, while its
// header must stay readable. A custom allocator's block is left as it is
// (its pages are not ours to drop). The range stays mapped: a late write
// into it (a completion filling in a result on the job's stack) lands in a
// fresh zero page.
void DropStackPages(Job* job) {
  if (job->stack.kind == stack::StackKind::kCustom) return;
  const std::size_t page = stack::PageSize();
  std::byte* low = base::AlignUp(job->stack.low, page);
  std::byte* high = base::AlignDown(job->header_start, page);
  if (high > low) madvise(low, static_cast<std::size_t>(high - low), MADV_DONTNEED);
}

// Releases every tombstone of this thread, through the layer above's
// releaser when there is one.
void ReleaseAllTombstones() {
  void (*release)(Job*) = tombstone_releaser.load(std::memory_order_acquire);
  while (Job* job = this_thread.tombstones) {
    if (release != nullptr) {
      release(job);  // ends with ReleaseTombstone(job)
    } else {
      ReleaseTombstone(job);
    }
  }
}

// Moves the calling thread's counts into the process totals.
void FlushThreadCounters() {
  std::lock_guard lock(totals_mutex);
  AddCounters(totals, this_thread.counters);
  this_thread.counters = Counters{};
}

pthread_key_t thread_exit_key;
pthread_once_t thread_exit_key_once = PTHREAD_ONCE_INIT;

// Runs when a thread that had a pool exits, after its stack was unwound.
void OnThreadExit(void*) { Pool::OrphanThisThreadsJobs(); }

// For the overflow handler: the stack of the job running on this thread.
const stack::Stack* RunningStack(const void** owner) {
  Job* job = this_thread.current;
  if (job == nullptr) return nullptr;
  *owner = job;
  return &job->stack;
}

void MakeThreadExitKey() {
  pthread_key_create(&thread_exit_key, &OnThreadExit);
  stack::SetFaultLocator(&RunningStack);
}

[[noreturn]] void DieOfEscapedException(Job* job) {
  base::FatalMessage message;
  message.Add("asyncjob: a C++ exception escaped job ")
      .AddPointer(job)
      .Add("; it cannot cross ASYNC_start_job (catch it inside the job)\n");
  message.WriteAndAbort();
}

[[noreturn]] void DieOfUnknownForcedUnwind(Job* job, const char* what) {
  base::FatalMessage message;
  message.Add("asyncjob: the thread is exiting inside job ")
      .AddPointer(job)
      .Add(", but ")
      .Add(what)
      .Add("\n");
  message.WriteAndAbort();
}

// The C++ runtime's header of a caught exception (Itanium C++ ABI, 2.2.1):
// for a foreign exception, such as the C library's forced unwind, the
// runtime records as "caught" a header placed so that its unwind_header is
// the foreign _Unwind_Exception.
struct ItaniumExceptionHeader {
  void* exception_type;
  void (*exception_destructor)(void*);
  void (*unexpected_handler)();
  void (*terminate_handler)();
  void* next_exception;
  int handler_count;
  int handler_switch_value;
  const unsigned char* action_record;
  const unsigned char* language_specific_data;
  void* catch_temp;
  void* adjusted_pointer;
  _Unwind_Exception unwind_header;
};
static_assert(sizeof(ItaniumExceptionHeader) ==
              offsetof(ItaniumExceptionHeader, unwind_header) + sizeof(_Unwind_Exception));

// The forced unwind the running job's catch block has caught (see
// JobEntry()), or nullptr if what it caught does not look like one.
_Unwind_Exception* CaughtForcedUnwind() {
  void* caught = this_thread.exceptions->caught_exceptions;
  if (caught == nullptr) return nullptr;
  // As the runtime finds the header from the exception: just before it.
  auto* exception = &static_cast<ItaniumExceptionHeader*>(caught)->unwind_header;
  // _Unwind_ForcedUnwind() stored the stop function and its argument here.
  if (exception->private_1 == 0) return nullptr;
  return exception;
}

// What a job that its thread's exit ended hands to the stack that entered
// it, on its own stack (which stays until the job is released).
struct ThreadExitRecord {
  Job* job;
  _Unwind_Exception* exception;
  bool entry_ended;  // EndEntry() already ran (return-free entries)
#if ASYNCJOB_CONTEXT_RETURN_FREE
  context::Diversion diversion;
#endif
};

// The thread is exiting inside `job`: the forced unwind reached the job's
// entry function and is caught there. The catch must never end (ending it
// would delete the C library's exception object, which aborts the
// process): leave the job's stack for good, and let the code that entered
// the job carry the same unwind on from its own call site.
[[noreturn]] void LeaveForThreadExit(Job* job) {
  _Unwind_Exception* exception = CaughtForcedUnwind();
  if (exception == nullptr) DieOfUnknownForcedUnwind(job, "its forced unwind cannot be found");
  ThreadExitRecord record{};
  record.job = job;
  record.exception = exception;
  ThreadState& thread = this_thread;
  thread.current = job->links.parent;
  context::Context* from = &job->fibre;
  context::Context* to = job->links.resume_to;
#if ASYNCJOB_CONTEXT_RETURN_FREE
  if (job->return_free) {
    // The code that entered the job left through the switch: nothing runs
    // there after it. Make it call ContinueThreadExit() as if from its
    // switch's call site, and do its part of the exit here.
    internal::EndEntry(job, thread, /*finished=*/true);
    record.entry_ended = true;
    record.diversion = context::Diversion{nullptr, &internal::ContinueThreadExit, &record};
    context::Divert(to, &record.diversion);
    context::SwitchForGood(from, to, &record.diversion);
  }
#endif
  // Enter() sees a transfer value that is neither token.
  context::SwitchForGood(from, to, &record);
}

}  // namespace

namespace internal {

void ContinueThreadExit(void* record_pointer) {
  // Read the record first: it lives on the job's stack, which Release()
  // may free.
  const ThreadExitRecord record = *static_cast<ThreadExitRecord*>(record_pointer);
  Job* job = record.job;
  _Unwind_Exception* exception = record.exception;
  if (!record.entry_ended) EndEntry(job, this_thread, /*finished=*/true);
  if (auto observer = thread_exit_observer.load(std::memory_order_acquire)) observer(job);
  job->entry.result = 0;
  Release(job);
  // The C library's unwind, continued from this frame: its stop function
  // runs the cleanup handlers and destructors still to run on this stack
  // (and on the stacks below, job by job) and ends the thread.
  _Unwind_ForcedUnwind(exception, reinterpret_cast<_Unwind_Stop_Fn>(exception->private_1),
                       reinterpret_cast<void*>(exception->private_2));
  DieOfUnknownForcedUnwind(job, "its forced unwind could not be continued past it");
}

std::atomic<const SwitchHooks*> switch_hooks{nullptr};
std::atomic<void (*)(Job*)> pause_observer{nullptr};

#if ASYNCJOB_CONTEXT_RETURN_FREE
// Whether a job finishing on its own stack may park its context for the next
// start (Job::parked): not when its pool is closing (it is freed), nor under
// valgrind (a start marks the stack below the header undefined, the parked
// frame included).
bool MayPark(const Job* job) {
#if ASYNCJOB_VALGRIND
  if (under_valgrind.load(std::memory_order_relaxed) != 0) return false;
#endif
  return !job->links.pool->closing();
}
#endif

// The code every job's context starts in. In return-free builds it loops:
// a job that finished parks here, and its next start goes on from the
// switch that parked it instead of preparing a fresh context.
[[noreturn]] void JobEntry(void* /*transfer*/, void* argument) noexcept {
  Job* job = static_cast<Job*>(argument);
  for (;;) {
    try {
      job->entry.result = job->entry.function(job->entry.arguments);
    } catch (const JobCancelled&) {
      job->entry.result = 0;
      job->cancellation.unwound = true;
    } catch (abi::__forced_unwind&) {
      // pthread_exit() or cancellation inside the job: it must go on.
      LeaveForThreadExit(job);
    } catch (...) {
      DieOfEscapedException(job);
    }
    if (job->entry.heap_arguments != nullptr) {
      std::free(job->entry.heap_arguments);
      job->entry.heap_arguments = nullptr;
    }
    stack::CheckCanary(job->stack, job);
    ThreadState& thread = this_thread;
    thread.current = job->links.parent;
#if ASYNCJOB_CONTEXT_RETURN_FREE
    if (job->return_free) {
      // Nobody waits after a switch for this job to end: do the caller's work
      // here, and hand the caller its return value directly.
      EndEntry(job, thread, /*finished=*/true);
      int value = job->outcome.finish(job);
      context::Context* from = &job->fibre;
      context::Context* to = job->links.resume_to;
      void* transfer = reinterpret_cast<void*>(static_cast<std::intptr_t>(value));
      const bool park = MayPark(job);
      job->parked = park;
      Release(job, /*on_its_own_stack=*/true);  // nothing reuses it before we left
      if (!park) context::SwitchForGood(from, to, transfer);
      context::Switch(from, to, transfer);  // returns at the job's next start
      continue;
    }
#endif
    context::SwitchForGood(&job->fibre, job->links.resume_to, kFinishedToken);
  }
}

#if ASYNCJOB_VALGRIND
std::atomic<int> under_valgrind{-1};

void MakeAddressable(void* memory, std::size_t size) {
  if (under_valgrind.load(std::memory_order_relaxed) < 0) {
    under_valgrind.store(RUNNING_ON_VALGRIND ? 1 : 0, std::memory_order_relaxed);
  }
  if (under_valgrind.load(std::memory_order_relaxed) != 0)
    VALGRIND_MAKE_MEM_UNDEFINED(memory, size);
}
#endif

bool CopyArgumentsToTheHeap(Job* job, const void* arguments, std::size_t size) {
  // No object is larger than PTRDIFF_MAX bytes: such a size is a caller's
  // mistake (a negative length converted), not memory to copy.
  if (size > static_cast<std::size_t>(PTRDIFF_MAX)) {
    // libcrypto's malloc of that size fails: its queue gets that failure.
    base::QueueAllocationFailure(ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
                                 "job arguments of %zu bytes: no object is that large", size);
    return false;
  }
  void* copy = std::malloc(size);
  if (copy == nullptr) {
    base::QueueError(ASYNCJOB_R_MALLOC_FAILURE, "out of memory copying %zu bytes of job arguments",
                     size);
    return false;
  }
  std::memcpy(copy, arguments, size);
  job->entry.heap_arguments = copy;
  job->entry.arguments = copy;
  return true;
}

}  // namespace internal

namespace {
// The thread that exits the process gets no pthread key destructor call:
// free its idle jobs here, so that nothing of ours is left for leak checkers.
// libcrypto may already be cleaned up at this point: errors are not
// mirrored any more, and a pool with paused jobs only loses its idle ones.
__attribute__((destructor)) void CleanUpTheExitingThread() {
  base::SetErrorMirror(nullptr);
  Pool::FreeFinishedUnfreedJobs();
  ReleaseAllTombstones();
  Pool* pool = this_thread.pool;
  if (pool == nullptr) return;
  if (pool->in_use() == 0) {
    Pool::CleanupThisThread();
  } else {
    pool->FreeIdleJobs();
  }
}
}  // namespace

void SetSwitchHooks(const SwitchHooks* hooks) {
  internal::switch_hooks.store(hooks, std::memory_order_release);
}

void SetThreadExitObserver(void (*observer)(Job* job)) {
  thread_exit_observer.store(observer, std::memory_order_release);
}

namespace {
std::atomic<void (*)(const Job*)> job_free_observer{nullptr};
}  // namespace

const void* PauseCaller(const Job* job) {
  if (job->last_pause.caller != nullptr) return job->last_pause.caller;
  context::SavedRegisters saved;
  if (job->return_free && context::GetSavedRegisters(&job->fibre, &saved)) return saved.pc;
  return nullptr;
}

void SetJobFreeObserver(void (*observer)(const Job* job)) {
  job_free_observer.store(observer, std::memory_order_relaxed);
}

void SetPauseObserver(void (*observer)(Job* job)) {
  internal::pause_observer.store(observer, std::memory_order_relaxed);
}

// ----- The registry of pools (introspection) -----

// What a debugger needs to walk the registry without the library's debug
// information: where the fields are. tools/gdb/asyncjob_gdb.py reads it.
struct DebugLayout {
  std::uint32_t version;
  std::uint32_t pool_registry_next, pool_jobs, pool_owner_tid, pool_closing;
  std::uint32_t job_next, job_state, job_function, job_stack_low, job_stack_size, job_stack_kind;
  // job_saved_sp: where the saved stack pointer is, or, with
  // registers_inline (ucontext), where the saved registers are.
  std::uint32_t job_saved_sp, job_pause_caller, job_paused_at_ns, job_user_data, job_return_free;
  std::uint32_t registers_inline, job_pause_frame;
  // The saved frame of a suspended context: offsets from its saved sp of
  // the frame pointer and the return address, and the frame's size (all 0
  // for the ucontext back end, whose registers are at job_saved_sp, fp,
  // pc and sp at frame_fp, frame_pc and frame_sp from there).
  std::uint32_t frame_fp, frame_pc, frame_size, frame_sp;

  static constexpr DebugLayout Make();
};

}  // namespace asyncjob::job

namespace {
asyncjob::job::Pool* registry_head = nullptr;
std::mutex registry_mutex;
}  // namespace

// For debuggers: the head of the registry and its layout. Named, not
// exported (the symbol table of an unstripped library, or its separate
// debug information, has it).
extern "C" {
struct AsyncjobDebugRegistry {
  char magic[16];
  asyncjob::job::Pool** head;
  asyncjob::job::DebugLayout layout;
};
}

namespace asyncjob::job {

#define ASYNCJOB_OFFSET(type, member) static_cast<std::uint32_t>(__builtin_offsetof(type, member))
constexpr DebugLayout DebugLayout::Make() {
  DebugLayout layout{};
  layout.version = 1;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
  layout.pool_registry_next = ASYNCJOB_OFFSET(Pool, registry_next_);
  layout.pool_jobs = ASYNCJOB_OFFSET(Pool, jobs_);
  layout.pool_owner_tid = ASYNCJOB_OFFSET(Pool, owner_tid_);
  layout.pool_closing = ASYNCJOB_OFFSET(Pool, closing_);
#pragma GCC diagnostic pop
  layout.job_next = ASYNCJOB_OFFSET(Job, membership.next);
  layout.job_state = ASYNCJOB_OFFSET(Job, state);
  layout.job_function = ASYNCJOB_OFFSET(Job, entry.function);
  layout.job_stack_low = ASYNCJOB_OFFSET(Job, stack.low);
  layout.job_stack_size = ASYNCJOB_OFFSET(Job, stack.size);
  layout.job_stack_kind = ASYNCJOB_OFFSET(Job, stack.kind);
#if !ASYNCJOB_CONTEXT_UCONTEXT
  layout.job_saved_sp = ASYNCJOB_OFFSET(Job, fibre.stack_pointer);
#else
  layout.job_saved_sp = ASYNCJOB_OFFSET(Job, fibre.ucontext.uc_mcontext);
  layout.registers_inline = 1;
#if defined(__x86_64__)
  layout.frame_fp = ASYNCJOB_OFFSET(mcontext_t, gregs) + REG_RBP * 8;
  layout.frame_pc = ASYNCJOB_OFFSET(mcontext_t, gregs) + REG_RIP * 8;
  layout.frame_sp = ASYNCJOB_OFFSET(mcontext_t, gregs) + REG_RSP * 8;
#elif defined(__aarch64__)
  layout.frame_fp = ASYNCJOB_OFFSET(mcontext_t, regs) + 29 * 8;
  layout.frame_pc = ASYNCJOB_OFFSET(mcontext_t, pc);
  layout.frame_sp = ASYNCJOB_OFFSET(mcontext_t, sp);
#endif
#endif
  layout.job_pause_caller = ASYNCJOB_OFFSET(Job, last_pause.caller);
  layout.job_paused_at_ns = ASYNCJOB_OFFSET(Job, last_pause.at_ns);
  layout.job_user_data = ASYNCJOB_OFFSET(Job, user_data);
  layout.job_return_free = ASYNCJOB_OFFSET(Job, return_free);
  layout.job_pause_frame = ASYNCJOB_OFFSET(Job, last_pause.frame);
#if !ASYNCJOB_CONTEXT_UCONTEXT
  const context::SavedFrameLayout frame = context::SavedFrame();
  layout.frame_fp = frame.fp_offset;
  layout.frame_pc = frame.pc_offset;
  layout.frame_size = frame.size;
#endif
  return layout;
}
#undef ASYNCJOB_OFFSET

}  // namespace asyncjob::job

extern "C" {
__attribute__((used, visibility("hidden"))) AsyncjobDebugRegistry asyncjob_debug_registry = {
    "asyncjob-debug1", &registry_head, asyncjob::job::DebugLayout::Make()};
}

namespace asyncjob::job {

void Pool::Register(Pool* pool) {
  std::lock_guard lock(registry_mutex);
  pool->registry_next_ = registry_head;
  if (registry_head != nullptr) registry_head->registry_previous_ = pool;
  registry_head = pool;
}

void Pool::Unregister(Pool* pool) {
  std::lock_guard lock(registry_mutex);
  if (pool->registry_previous_ != nullptr) {
    pool->registry_previous_->registry_next_ = pool->registry_next_;
  } else {
    registry_head = pool->registry_next_;
  }
  if (pool->registry_next_ != nullptr)
    pool->registry_next_->registry_previous_ = pool->registry_previous_;
}

void ForEachJobOfThisThread(void (*visit)(const PoolView&, const Job*, void*), void* argument) {
  auto walk = [&](Pool* pool) {
    const PoolView view{pool, pool->owner_, pool->owner_tid_, pool->closing_};
    for (const Job* job = pool->jobs_; job != nullptr; job = job->membership.next)
      visit(view, job, argument);
  };
  if (this_thread.pool != nullptr) walk(this_thread.pool);
  for (Pool* pool = this_thread.closing_pools; pool != nullptr; pool = pool->next_closing_)
    walk(pool);
}

void ForEachJobInProcess(void (*visit)(const PoolView&, const Job*, void*), void* argument) {
  std::lock_guard registry(registry_mutex);
  for (Pool* pool = registry_head; pool != nullptr; pool = pool->registry_next_) {
    std::lock_guard jobs(pool->jobs_mutex_);
    const PoolView view{pool, pool->owner_, pool->owner_tid_, pool->closing_};
    for (const Job* job = pool->jobs_; job != nullptr; job = job->membership.next)
      visit(view, job, argument);
  }
}

Counters ProcessCounters() {
  std::lock_guard lock(totals_mutex);
  Counters sum = totals;
  AddCounters(sum, this_thread.counters);
  return sum;
}

// ----- Pool -----

// Frees a pool with no jobs left, and the thread's alternate signal stack
// once no pool of the thread (a newer one, or an older closing one whose
// paused jobs may still overflow) needs it.
void Pool::Delete(Pool* pool) {
  Unregister(pool);
  if (pool->closing_) {
    Pool** link = &this_thread.closing_pools;
    while (*link != pool) link = &(*link)->next_closing_;
    *link = pool->next_closing_;
  }
  FlushThreadCounters();
  delete pool;
  if (--this_thread.live_pools == 0) stack::ReleaseThreadAltStack();
}

Pool* Pool::CreateForThisThread() {
  ThreadState& thread = this_thread;
  pthread_once(&thread_exit_key_once, &MakeThreadExitKey);
  auto* pool = new (std::nothrow) Pool(0);
  if (pool == nullptr) {
    base::QueueAllocationFailure(ASYNC_R_INIT_FAILED, "out of memory for the job pool");
    return nullptr;
  }
  if (thread.id == 0) thread.id = next_thread_id.fetch_add(1, std::memory_order_relaxed);
  if (!thread.thread_context_ready) {
    context::InitializeThreadContext(&thread.thread_context);
    thread.exceptions = reinterpret_cast<ExceptionState*>(abi::__cxa_get_globals());
    thread.thread_context_ready = true;
  }
  stack::PrepareThreadForOverflow();
  pool->owner_ = thread.id;
  pool->owner_tid_ = static_cast<unsigned long>(syscall(SYS_gettid));
  Register(pool);
  pthread_setspecific(thread_exit_key, pool);
  thread.pool = pool;
  ++thread.live_pools;
  return pool;
}

bool Pool::InitThisThread(std::size_t max_size, std::size_t init_size) {
  if (max_size != 0 && init_size > max_size) {
    base::QueueError(ASYNC_R_INVALID_POOL_SIZE, "init_size %zu exceeds max_size %zu", init_size,
                     max_size);
    return false;
  }
  if (init_size > kMaxInitSize) {
    base::QueueError(ASYNC_R_INVALID_POOL_SIZE,
                     "init_size %zu exceeds the %zu jobs that can be created up front "
                     "(more are created on demand)",
                     init_size, kMaxInitSize);
    return false;
  }
  Pool* pool = this_thread.pool;
  if (pool != nullptr && pool->in_use() > 0) {
    base::QueueError(ASYNC_R_FAILED_TO_SET_POOL,
                     "this thread's pool has %zu jobs in use; finish them first", pool->in_use());
    return false;
  }
  if (pool == nullptr) {
    pool = CreateForThisThread();
    if (pool == nullptr) return false;
  }
  pool->FreeIdleJobs();
  pool->max_size_ = max_size;
  pool->stacks_.ExpectStacks(init_size);  // mapped together
  for (std::size_t i = 0; i < init_size; ++i) {
    Job* job = pool->CreateJob();
    if (job == nullptr) {
      pool->FreeIdleJobs();
      base::QueueError(ASYNC_R_INIT_FAILED, "created %zu of the %zu jobs asked for", i, init_size);
      return false;
    }
    job->links.next_idle = pool->idle_;
    pool->idle_ = job;
    ++pool->idle_count_;
  }
  return true;
}

void Pool::CleanupThisThread() {
  ThreadState& thread = this_thread;
  FreeFinishedUnfreedJobs();
  ReleaseAllTombstones();
  Pool* pool = thread.pool;
  if (pool == nullptr) return;
  pool->FreeIdleJobs();
  thread.pool = nullptr;
  if (pool->total_ == 0) {
    Delete(pool);
    // Closing pools keep the exit call: their jobs become orphans then.
    if (thread.closing_pools == nullptr && thread_exit_key_once != PTHREAD_ONCE_INIT) {
      pthread_setspecific(thread_exit_key, nullptr);
    }
    return;
  }
  pool->MarkClosing();
  base::QueueError(ASYNCJOB_R_JOBS_OUTSTANDING,
                   "%zu jobs are still paused; each is freed when it finishes", pool->total_);
}

void Pool::MarkClosing() {
  closing_ = true;
  next_closing_ = this_thread.closing_pools;
  this_thread.closing_pools = this;
}

void Pool::OrphanThisThreadsJobs() {
  ThreadState& thread = this_thread;
  FreeFinishedUnfreedJobs();
  ReleaseAllTombstones();
  if (Pool* pool = thread.pool) {
    thread.pool = nullptr;
    pool->FreeIdleJobs();
    if (pool->total_ == 0) {
      Delete(pool);
    } else {
      pool->MarkClosing();
    }
  }
  GiveUpPausedJobs();
  while (Pool* pool = thread.closing_pools) {
    thread.closing_pools = pool->next_closing_;
    pool->Orphan();
  }
}

// In two passes, so that what a hook does (free a wait context, which
// orphans or cancels the paused jobs in it; cancel a job) finds every job
// of the exiting thread orphaned already: none is unwound, released or
// made a tombstone while the pools are being walked. The jobs with hooks
// are listed through links.next_idle, which a paused job does not use;
// an orphaned job is never freed by anyone, so the list stays valid.
void Pool::GiveUpPausedJobs() {
  Job* pending = nullptr;
  for (Pool* pool = this_thread.closing_pools; pool != nullptr; pool = pool->next_closing_) {
    for (Job* job = pool->jobs_; job != nullptr; job = job->membership.next) {
      if (job->state != JobState::kPaused) continue;
      job->state = JobState::kOrphaned;
      if (job->cancellation.hook_count > 0) {
        job->links.next_idle = pending;
        pending = job;
      }
    }
  }
  while (Job* job = pending) {
    pending = job->links.next_idle;
    job->links.next_idle = nullptr;
    RunHooksOfAbandonedJob(job);
  }
}

void Pool::Orphan() {
  FreeIdleJobs();
  for (Job* job = jobs_; job != nullptr; job = job->membership.next) {
    // Running only if the thread left it without unwinding it (by a
    // longjmp, or from code without unwind information): its context may
    // still be the tools' current one.
    const bool was_running = job->state == JobState::kRunning;
    job->state = JobState::kOrphaned;
    if (job->entry.heap_arguments != nullptr) {
      std::free(job->entry.heap_arguments);
      job->entry.heap_arguments = nullptr;
    }
    if (!was_running) context::Destroy(&job->fibre);
    // Its frames are never run again nor unwound: their pages go back to
    // the kernel. The page of the header stays, so that a late resume or
    // cancel reads a header that refuses it.
    DropStackPages(job);
#if ASYNCJOB_ASAN
    // What the header points to (its wait context) stays reachable through
    // it, as long as the header itself: tell the leak checker to look.
    __lsan_register_root_region(job, sizeof(Job));
#endif
  }
  FlushThreadCounters();
  {
    std::lock_guard lock(orphanage_mutex);
    next_closing_ = orphanage;
    orphanage = this;
  }
  stack::FlushThreadCache();  // the idle jobs' stacks: this pool is never deleted
  if (--this_thread.live_pools == 0) stack::ReleaseThreadAltStack();
}

Job* Pool::AcquireSlow(bool* exhausted) {
  if (max_size_ != 0 && total_ - tombstones_ >= max_size_) {
    *exhausted = true;
    ++this_thread.counters.exhausted;
    return nullptr;
  }
  return CreateJob();
}

Job* Pool::CreateJob() {
  stack::Stack memory;
  if (!stacks_.Allocate(&memory)) return nullptr;
  std::byte* header = base::AlignDown(memory.high() - sizeof(Job), kHeaderAlignment);
  Job* job = new (header) Job;
  job->stack = memory;
  job->links.pool = this;
  job->header_start = header;
  {
    std::lock_guard lock(jobs_mutex_);
    job->membership.next = jobs_;
    if (jobs_ != nullptr) jobs_->membership.previous = job;
    jobs_ = job;
  }
  ++total_;
  ++kind_counts_[static_cast<int>(memory.kind)];
  ++this_thread.counters.jobs_created;
  return job;
}

void Pool::FreeJob(Job* job) {
  if (auto* observe = job_free_observer.load(std::memory_order_relaxed)) observe(job);
  stack::Stack memory = job->stack;
  {
    std::lock_guard lock(jobs_mutex_);
    if (job->membership.previous != nullptr) {
      job->membership.previous->membership.next = job->membership.next;
    } else {
      jobs_ = job->membership.next;
    }
    if (job->membership.next != nullptr) {
      job->membership.next->membership.previous = job->membership.previous;
    }
  }
  context::Destroy(&job->fibre);
  job->~Job();
  --total_;
  --kind_counts_[static_cast<int>(memory.kind)];
  ++this_thread.counters.jobs_freed;
  stacks_.Release(&memory);
}

void Pool::FreeIdleJobs() {
  while (Job* job = idle_) {
    idle_ = job->links.next_idle;
    --idle_count_;
    FreeJob(job);
  }
}

void Pool::FreeJobOfClosingPool(Job* job) {
  FreeJob(job);
  if (total_ == 0) Delete(this);  // nothing touches the pool after this
}

void Pool::DeferFreeToClosingPool(Job* job) {
  ThreadState& thread = this_thread;
  job->links.next_idle = thread.finished_unfreed;
  thread.finished_unfreed = job;
  // Should the thread exit without entering another job, free it then.
  pthread_once(&thread_exit_key_once, &MakeThreadExitKey);
  if (pthread_getspecific(thread_exit_key) == nullptr) {
    pthread_setspecific(thread_exit_key, &thread);
  }
}

void Pool::FreeFinishedUnfreedJobs() {
  ThreadState& thread = this_thread;
  while (Job* job = thread.finished_unfreed) {
    thread.finished_unfreed = job->links.next_idle;
    job->links.pool->FreeJobOfClosingPool(job);
  }
}

// ----- Tombstones -----

void SetTombstoneReleaser(void (*release)(Job* job)) {
  tombstone_releaser.store(release, std::memory_order_release);
}

void Abandon(Job* job) {
  ASYNCJOB_DCHECK(job->state == JobState::kPaused && OwnedByThisThread(job));
  ThreadState& thread = this_thread;
  // A tombstone from here on (nothing a hook does can resume, cancel or
  // abandon it again), but listed only after its hooks ran: a hook that
  // frees another context makes the thread look for signalled tombstones,
  // which must not release this one while its context is being freed.
  job->state = JobState::kTombstone;
  --thread.paused_now;
  RunHooksOfAbandonedJob(job);
  ++job->links.pool->tombstones_;
  job->links.next_idle = thread.tombstones;
  thread.tombstones = job;
  ++thread.tombstone_count;
  ++thread.counters.tombstones;
  DropStackPages(job);
}

void ReleaseTombstone(Job* job) {
  ASYNCJOB_DCHECK(job->state == JobState::kTombstone);
  ThreadState& thread = this_thread;
  for (Job** link = &thread.tombstones; *link != nullptr; link = &(*link)->links.next_idle) {
    if (*link == job) {
      *link = job->links.next_idle;
      --thread.tombstone_count;
      break;
    }
  }
  job->links.next_idle = nullptr;
  --job->links.pool->tombstones_;
  ++thread.counters.tombstones_released;
  ++thread.tombstone_releases;
  Release(job);
}

void CountOrphan(bool unwound) {
  ++this_thread.counters.orphans;
  if (unwound) ++this_thread.counters.orphans_unwound;
}

// ----- Running jobs -----

bool CheckResumable(const Job* job) {
  if (job->state == JobState::kTombstone) {
    base::QueueError(ASYNCJOB_R_JOB_ORPHANED,
                     "job %p was orphaned when its wait context was freed while it was "
                     "paused; it never runs again",
                     static_cast<const void*>(job));
    return false;
  }
  if (job->state == JobState::kOrphaned) {
    base::QueueError(ASYNCJOB_R_OWNER_THREAD_EXITED,
                     "job %p was left paused by a thread that has exited; no thread "
                     "can resume or cancel it",
                     static_cast<const void*>(job));
    return false;
  }
  if (job->links.owner == 0) {
    base::QueueError(ASYNCJOB_R_JOB_NOT_PAUSED,
                     "job %p is not paused: it finished or never started",
                     static_cast<const void*>(job));
    return false;
  }
  if (job->links.owner != this_thread.id) {
    base::QueueError(ASYNCJOB_R_WRONG_THREAD,
                     "job %p belongs to another thread; resume it on the thread "
                     "that started it",
                     static_cast<const void*>(job));
    return false;
  }
  if (job->state != JobState::kPaused) {
    base::QueueError(ASYNCJOB_R_JOB_NOT_PAUSED,
                     "job %p is running, not paused; it cannot be resumed",
                     static_cast<const void*>(job));
    return false;
  }
  return true;
}

}  // namespace asyncjob::job
