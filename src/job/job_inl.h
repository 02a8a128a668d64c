// job_inl.h - the hot paths of job.h, inline.
//
// Internal to the job unit; included at the end of job.h. Starting,
// resuming and pausing a job are inline so that they compile into the C
// API's functions: the context switch is then called from ASYNC_start_job
// and ASYNC_pause_job themselves, and the code that runs after a switch
// returns through as few frames as possible (each such return is one the
// CPU's return predictor gets wrong, since the last calls it saw were made
// on the other stack). Where the back end allows it, the C API returns
// through no frame at all: EnterReturnFree() and PauseReturnFree() (see
// docs/design.md, "Return-free switching"). Slow and cold paths stay out of
// line in job.cc.
#ifndef ASYNCJOB_SRC_JOB_JOB_INL_H_
#define ASYNCJOB_SRC_JOB_JOB_INL_H_

#include <atomic>
#include <cstdint>
#include <cstring>

#include "base/align.h"
#include "base/sanitizers.h"

namespace asyncjob::job {
namespace internal {

// Transfer values a job hands to the code it returns to.
inline void* const kPausedToken = reinterpret_cast<void*>(std::uintptr_t{1});
inline void* const kFinishedToken = reinterpret_cast<void*>(std::uintptr_t{2});

// What a paused job's pause returns when it is resumed (it is also
// ASYNC_pause_job()'s value).
inline void* const kResumedToken = reinterpret_cast<void*>(std::uintptr_t{1});
inline constexpr int kResumedValue = 1;

extern std::atomic<const SwitchHooks*> switch_hooks;
extern std::atomic<void (*)(Job*)> pause_observer;

[[noreturn]] void JobEntry(void* transfer, void* argument) noexcept;
[[noreturn]] void RunCancelHooksAndThrow(Job* job);
// Runs the job's cancel hooks, newest first, and forgets them (cancel.cc).
void RunCancelHooks(Job* job) noexcept;
// What a job resumed by Cancel() does at its pause (job.cc): throws, or,
// when its stack cannot be unwound, pauses again and returns once resumed.
void CancelFromPause(Job* job);
// Run on the stack that entered a job which its thread's exit ended: gives
// the job back and carries the thread's forced unwind on from here.
// `record` is the ThreadExitRecord the job's last switch handed over.
[[noreturn]] void ContinueThreadExit(void* record);
// Copies arguments too large for the job's stack to the heap; false (error
// queued) when out of memory.
bool CopyArgumentsToTheHeap(Job* job, const void* arguments, std::size_t size);
#if ASYNCJOB_VALGRIND
// Whether the process runs under valgrind: -1 until first asked, then 0 or
// 1 for good (a process cannot come under valgrind later).
extern std::atomic<int> under_valgrind;
// Out of line: the client request keeps its operands in an array on the
// stack, which would stop the C API from leaving through the switch by a
// tail call. Also answers under_valgrind the first time.
void MakeAddressable(void* memory, std::size_t size);
#endif

// The bookkeeping of entering `job` (fresh or paused), before the switch.
inline void BeginEntry(Job* job, ThreadState& thread) {
  if (thread.finished_unfreed != nullptr) [[unlikely]]
    Pool::FreeFinishedUnfreedJobs();
  job->links.parent = thread.current;
  job->links.resume_to =
      thread.current != nullptr ? &thread.current->fibre : &thread.thread_context;
  job->state = JobState::kRunning;
  thread.current = job;
  const SwitchHooks* hooks = switch_hooks.load(std::memory_order_acquire);
  if (hooks != nullptr) hooks->entering(job);
  job->entry.fresh = false;
  // The job gets its own C++ exception state for as long as it runs. When
  // both are empty, the thread's is already the job's.
  ExceptionState* exceptions = thread.exceptions;
  const bool swap = !exceptions->empty() || !job->exceptions.inside.empty();
  job->exceptions_swapped = swap;
  if (swap) [[unlikely]] {
    job->exceptions.outside = *exceptions;
    *exceptions = job->exceptions.inside;
  }
}

// The bookkeeping of `job` having paused or finished (thread.current is
// its parent again). Runs after the switch back from the job, or, for
// return-free entries, in the job before it.
inline void EndEntry(Job* job, ThreadState& thread, bool finished) {
  ExceptionState* exceptions = thread.exceptions;
  if (job->exceptions_swapped) [[unlikely]] {
    job->exceptions.inside = *exceptions;
    *exceptions = job->exceptions.outside;
  } else if (!exceptions->empty()) [[unlikely]] {
    // Paused inside a catch block (or with an exception in flight) that the
    // job entered: its state goes with it, the caller's was empty.
    job->exceptions.inside = *exceptions;
    *exceptions = ExceptionState{};
  }
  const SwitchHooks* hooks = switch_hooks.load(std::memory_order_acquire);
  if (hooks != nullptr) hooks->left(job);
  if (finished) {
    ++thread.counters.finishes;
  } else {
    ++thread.counters.pauses;
    if (++thread.paused_now > thread.counters.peak_paused) [[unlikely]]
      thread.counters.peak_paused = thread.paused_now;
    if (auto* observe = pause_observer.load(std::memory_order_relaxed)) [[unlikely]]
      observe(job);
  }
}

// Runs `job` until it pauses or finishes; `transfer` is what its pause
// returns (its entry function ignores it).
inline Outcome Enter(Job* job, void* transfer) {
  ThreadState& thread = this_thread;
#if ASYNCJOB_CONTEXT_RETURN_FREE
  const bool starting = job->entry.fresh;  // see EnterReturnFree()
#endif
  BeginEntry(job, thread);
  job->return_free = false;
#if ASYNCJOB_CONTEXT_RETURN_FREE
  void* token = starting ? context::SwitchKeepingFp(job->links.resume_to, &job->fibre, transfer)
                         : context::Switch(job->links.resume_to, &job->fibre, transfer);
#else
  // Contexts are parked only where switches are return-free: every start
  // here is in a context prepared just now, with its starter's FP state.
  void* token = context::Switch(job->links.resume_to, &job->fibre, transfer);
#endif
  if (token == kPausedToken) [[likely]] {
    EndEntry(job, this_thread, /*finished=*/false);
    return Outcome::kPaused;
  }
  // Any other value than the two tokens: the thread is exiting inside it.
  if (token != kFinishedToken) [[unlikely]]
    ContinueThreadExit(token);
  EndEntry(job, this_thread, /*finished=*/true);
  return Outcome::kFinished;
}

}  // namespace internal

inline Pool* Pool::ForThisThread(bool create) {
  Pool* pool = this_thread.pool;
  if (pool != nullptr || !create) [[likely]]
    return pool;
  return CreateForThisThread();
}

inline Job* Pool::Acquire(bool* exhausted) {
  *exhausted = false;
  if (Job* job = idle_) [[likely]] {
    idle_ = job->links.next_idle;
    --idle_count_;
    return job;
  }
  return AcquireSlow(exhausted);
}

inline void Pool::TakeBack(Job* job, bool on_its_own_stack) {
  if (closing_) [[unlikely]] {
    if (on_its_own_stack) {
      DeferFreeToClosingPool(job);
    } else {
      FreeJobOfClosingPool(job);
    }
    return;
  }
  job->links.next_idle = idle_;
  idle_ = job;
  ++idle_count_;
}

inline void Release(Job* job, bool on_its_own_stack) {
  if (job->entry.heap_arguments != nullptr) {
    std::free(job->entry.heap_arguments);
    job->entry.heap_arguments = nullptr;
  }
  job->state = JobState::kIdle;
  job->links.owner = 0;
  job->user_data = nullptr;
  job->links.pool->TakeBack(job, on_its_own_stack);
}

inline bool PrepareStart(Job* job, int (*function)(void*), const void* arguments, std::size_t size,
                         void* user_data) {
  std::byte* top = job->header_start;
  job->user_data = user_data;  // set first: the caller detaches it on failure
#if ASYNCJOB_ASAN
  // Frames abandoned by the job's previous run may still be poisoned.
  ASAN_UNPOISON_MEMORY_REGION(job->stack.low, top - job->stack.low);
#endif
#if ASYNCJOB_VALGRIND
  // Memcheck marked the frames of the job's last run no-access as they were
  // popped; the argument copy and the first frame may cover them.
  // Outside valgrind (the usual case) this costs a load and a branch.
  if (internal::under_valgrind.load(std::memory_order_relaxed) != 0) [[unlikely]]
    internal::MakeAddressable(job->stack.low, static_cast<std::size_t>(top - job->stack.low));
#endif
  job->entry.arguments = nullptr;
  // The context starts below a fixed room for small arguments, so that a
  // parked context (see Job::parked) lies below any of them.
  std::byte* context_top = top - kSmallArgumentRoom;
  const bool small = arguments == nullptr || size <= kSmallArgumentRoom;
  if (arguments != nullptr && size > 0) {  // no bytes: NULL, as libcrypto
    // Small arguments are copied onto the job's own stack: no allocation.
    const std::size_t room = static_cast<std::size_t>(top - job->stack.low);
    if (size <= room / 4) [[likely]] {
      top = base::AlignDown(top - size, 16);
      std::memcpy(top, arguments, size);
      job->entry.arguments = top;
      if (!small) context_top = top;
    } else if (!internal::CopyArgumentsToTheHeap(job, arguments, size)) {
      return false;
    }
  }
  job->entry.function = function;
  job->entry.result = 0;
  job->block_depth = 0;
  job->cancellation.requested = false;
  job->cancellation.unwound = false;
  job->cancellation.hook_count = 0;
  job->exceptions.inside = ExceptionState{};
  job->exceptions_swapped = false;
  job->links.owner = this_thread.id;  // given with the pool the job came from
  // A context parked by the job's last run goes on to run this one, unless
  // the arguments were copied over its frame.
  if (!job->parked || !small) {
    context::Prepare(&job->fibre, job->stack.low,
                     static_cast<std::size_t>(context_top - job->stack.low), &internal::JobEntry,
                     job);
  }
  job->parked = false;
  job->entry.fresh = true;
  ++this_thread.counters.starts;
  return true;
}

inline bool PrepareResume(Job* job) {
  // One comparison each covers the common case: this thread's, and paused.
  // The owner is a generation number, never an address a later thread
  // could have: an orphan (kOrphaned) or another thread's job takes the slow
  // path, which says which.
  if (job->links.owner != this_thread.id || job->state != JobState::kPaused) [[unlikely]] {
    if (!CheckResumable(job)) return false;
  }
  ++this_thread.counters.resumes;
  --this_thread.paused_now;
  return true;
}

inline Outcome Run(Job* job) { return internal::Enter(job, internal::kResumedToken); }

inline Outcome Start(Job* job, int (*function)(void*), const void* arguments, std::size_t size,
                     void* user_data) {
  if (!PrepareStart(job, function, arguments, size, user_data)) return Outcome::kError;
  return Run(job);
}

inline Outcome Resume(Job* job) {
  if (!PrepareResume(job)) return Outcome::kError;
  return Run(job);
}

inline bool CanPause(const Job* job) {
  return job != nullptr && job->block_depth == 0 && !job->cancellation.requested;
}

inline void PauseCurrent(Job* job) {
  ThreadState& thread = this_thread;
  stack::CheckCanary(job->stack, job);
  job->state = JobState::kPaused;
  thread.current = job->links.parent;
  context::Switch(&job->fibre, job->links.resume_to, internal::kPausedToken);
  if (job->cancellation.requested) [[unlikely]]
    internal::CancelFromPause(job);
}

#if ASYNCJOB_CONTEXT_RETURN_FREE
inline bool CanReturnFree(const Job* job) { return !job->links.pool->closing(); }

inline int EnterReturnFree(Job* job) {
  const bool starting = job->entry.fresh;
  internal::BeginEntry(job, this_thread);
  job->return_free = true;
  // A new job keeps its starter's FP control state: its context may be one
  // parked by the previous job, with the rounding mode that job left.
  if (starting)
    return context::SwitchAndReturnKeepingFp(job->links.resume_to, &job->fibre,
                                             internal::kResumedValue);
  return context::SwitchAndReturn(job->links.resume_to, &job->fibre, internal::kResumedValue);
}

inline int PauseReturnFree(Job* job, int value) {
  ThreadState& thread = this_thread;
  stack::CheckCanary(job->stack, job);
  job->state = JobState::kPaused;
  thread.current = job->links.parent;
  internal::EndEntry(job, thread, /*finished=*/false);
  return context::SwitchAndReturn(&job->fibre, job->links.resume_to, value);
}
#endif

}  // namespace asyncjob::job

#endif  // ASYNCJOB_SRC_JOB_JOB_INL_H_
