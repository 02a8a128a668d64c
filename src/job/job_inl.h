// job_inl.h - the hot paths of job.h, inline.
//
// Internal to the job unit; included at the end of job.h. Starting,
// resuming and pausing a job are inline so that they compile into the C
// API's functions: the context switch is then called from ASYNC_start_job
// and ASYNC_pause_job themselves, and the code that runs after a switch
// returns through as few frames as possible (each such return is one the
// CPU's return predictor gets wrong, since the last calls it saw were made
// on the other stack). Slow and cold paths stay out of line in job.cc.
#ifndef ASYNCJOB_SRC_JOB_JOB_INL_H_
#define ASYNCJOB_SRC_JOB_JOB_INL_H_

#include <atomic>
#include <cstdint>
#include <cstring>

#include "context/sanitizers.h"

namespace asyncjob::job {
namespace internal {

// Transfer values a job hands to the code it returns to.
inline void* const kPausedToken = reinterpret_cast<void*>(std::uintptr_t{1});
inline void* const kFinishedToken = reinterpret_cast<void*>(std::uintptr_t{2});

extern std::atomic<const SwitchHooks*> switch_hooks;

[[noreturn]] void JobEntry(void* transfer, void* argument) noexcept;
[[noreturn]] void RunCancelHooksAndThrow(Job* job);
Outcome ArgumentsOnTheHeap(Job* job, const void* arguments, std::size_t size);

inline std::byte* AlignDown16(std::byte* p) {
  return reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(p) &
                                      ~std::uintptr_t{15});
}

// Runs `job` (fresh or paused) on this thread until it pauses or finishes.
inline Outcome Enter(Job* job) {
  ThreadState& thread = this_thread;
  job->parent = thread.current;
  job->resume_to = thread.current != nullptr ? &thread.current->fibre : &thread.thread_context;
  job->state = JobState::kRunning;
  thread.current = job;
  const SwitchHooks* hooks = switch_hooks.load(std::memory_order_acquire);
  if (hooks != nullptr) hooks->entering(job);
  job->fresh = false;
  // The job gets its own C++ exception state for as long as it runs.
  ExceptionState* exceptions = thread.exceptions;
  ExceptionState outside = *exceptions;
  *exceptions = job->exception_state;
  void* token = context::Switch(job->resume_to, &job->fibre, nullptr);
  job->exception_state = *exceptions;
  *exceptions = outside;
  if (hooks != nullptr) hooks->left(job);
  if (token == kFinishedToken) {
    ++this_thread.counters.finishes;
    return Outcome::kFinished;
  }
  ++this_thread.counters.pauses;
  return Outcome::kPaused;
}

}  // namespace internal

inline Pool* Pool::ForThisThread(bool create) {
  Pool* pool = this_thread.pool;
  if (pool != nullptr || !create) [[likely]] return pool;
  return CreateForThisThread();
}

inline Job* Pool::Acquire(bool* exhausted) {
  *exhausted = false;
  if (Job* job = idle_) [[likely]] {
    idle_ = job->next_idle;
    --idle_count_;
    return job;
  }
  return AcquireSlow(exhausted);
}

void ReleaseToClosingPool(Job* job);

inline void Release(Job* job) {
  if (job->heap_arguments != nullptr) {
    std::free(job->heap_arguments);
    job->heap_arguments = nullptr;
  }
  job->state = JobState::kIdle;
  job->owner = nullptr;
  job->user_data = nullptr;
  Pool* pool = job->pool;
  if (pool->closing_) [[unlikely]] {
    ReleaseToClosingPool(job);
    return;
  }
  job->next_idle = pool->idle_;
  pool->idle_ = job;
  ++pool->idle_count_;
}

inline Outcome Start(Job* job, int (*function)(void*), const void* arguments,
                     std::size_t size, void* user_data) {
  std::byte* top = job->header_start;
  job->user_data = user_data;  // set first: the caller detaches it on kError
#if ASYNCJOB_ASAN
  // Frames abandoned by the job's previous run may still be poisoned.
  ASAN_UNPOISON_MEMORY_REGION(job->stack.low, top - job->stack.low);
#endif
  job->arguments = nullptr;
  if (arguments != nullptr) {
    // Small arguments are copied onto the job's own stack: no allocation.
    const std::size_t room = static_cast<std::size_t>(top - job->stack.low);
    if (size <= room / 4) [[likely]] {
      top = internal::AlignDown16(top - size);
      if (size > 0) std::memcpy(top, arguments, size);
      job->arguments = top;
    } else if (internal::ArgumentsOnTheHeap(job, arguments, size) == Outcome::kError) {
      return Outcome::kError;
    }
  }
  job->function = function;
  job->block_depth = 0;
  job->result = 0;
  job->cancel_requested = false;
  job->cancelled = false;
  job->cancel_hook_count = 0;
  job->exception_state = ExceptionState{};
  job->owner = &this_thread;
  context::Prepare(&job->fibre, job->stack.low, static_cast<std::size_t>(top - job->stack.low),
                   &internal::JobEntry, job);
  job->fresh = true;
  ++this_thread.counters.starts;
  return internal::Enter(job);
}

inline Outcome Resume(Job* job) {
  // One comparison covers the common case: paused, and this thread's.
  if (job->owner != &this_thread || job->state != JobState::kPaused) [[unlikely]] {
    if (!CheckResumable(job)) return Outcome::kError;
  }
  ++this_thread.counters.resumes;
  return internal::Enter(job);
}

inline bool PauseCurrent() {
  ThreadState& thread = this_thread;
  Job* job = thread.current;
  if (job == nullptr || job->block_depth > 0 || job->cancel_requested) return false;
  stack::CheckCanary(job->stack, job);
  job->state = JobState::kPaused;
  thread.current = job->parent;
  context::Switch(&job->fibre, job->resume_to, internal::kPausedToken);
  if (job->cancel_requested) [[unlikely]] internal::RunCancelHooksAndThrow(job);
  return true;
}

}  // namespace asyncjob::job

#endif  // ASYNCJOB_SRC_JOB_JOB_INL_H_
