// cancel.cc - cancelling a paused job (job.h: Cancel(), cancel hooks): the
// job, resumed, walks its own stack (unwind_check.h) and either runs its
// cancel hooks and unwinds, or, where the unwind would terminate the
// process, reports why and pauses again where it was.
#include <exception>

#include "base/error_queue.h"
#include "job/job.h"
#include "job/unwind_check.h"

namespace asyncjob::job {
namespace {

// Cancel()'s before_unwind, for the job it is entering: read by the job
// as soon as it resumes, before any other code runs.
using BeforeUnwind = void (*)(Job* job);
constinit thread_local BeforeUnwind pending_before_unwind
    __attribute__((tls_model("initial-exec"))) = nullptr;

}  // namespace

namespace internal {

// Queues why `job` cannot be cancelled.
void QueueRefusal(const Job* job, const UnwindCheck& check) {
  const int reason = check.blocker == UnwindBlocker::kNoexcept ||
                             check.blocker == UnwindBlocker::kExceptionSpecification
                         ? ASYNCJOB_R_NOEXCEPT_FRAME
                         : ASYNCJOB_R_STACK_NOT_UNWINDABLE;
  const void* start = nullptr;
  const char* name = FunctionNameAt(check.frame, &start);
  if (name != nullptr) {
    base::QueueError(reason,
                     "job %p cannot be cancelled: its stack cannot be unwound through frame "
                     "%p (%s+%#zx): %s",
                     static_cast<const void*>(job), check.frame, name,
                     static_cast<std::size_t>(static_cast<const char*>(check.frame) -
                                              static_cast<const char*>(start)),
                     DescribeBlocker(check.blocker));
  } else {
    base::QueueError(reason,
                     "job %p cannot be cancelled: its stack cannot be unwound through frame "
                     "%p (function unknown): %s",
                     static_cast<const void*>(job), check.frame, DescribeBlocker(check.blocker));
  }
}

// A job resumed by Cancel() at its pause: walks its stack, from the pause
// to JobEntry, before throwing; `frames_to_skip` of its own frames lie
// between the walk and the pause. Returns when the stack cannot be unwound
// and the job, paused again, was later resumed by other means than Cancel().
__attribute__((noinline)) void CheckThenThrow(Job* job, int frames_to_skip) {
  while (job->cancellation.requested) {
    BeforeUnwind before_unwind = pending_before_unwind;
    pending_before_unwind = nullptr;
    UnwindCheck check = CheckUnwindTo(reinterpret_cast<const void*>(&JobEntry), frames_to_skip + 1);
    if (check.blocker == UnwindBlocker::kNone) {
      if (before_unwind != nullptr) before_unwind(job);
      RunCancelHooksAndThrow(job);
    }
    // Throwing would end in std::terminate: report it, and go back to
    // Cancel() paused as before (Cancel() entered the job with Enter(),
    // which does the caller's side of this pause).
    QueueRefusal(job, check);
    job->cancellation.requested = false;
    ThreadState& thread = this_thread;
    job->state = JobState::kPaused;
    thread.current = job->links.parent;
    context::Switch(&job->fibre, job->links.resume_to, kPausedToken);
  }
}

__attribute__((noinline)) void CancelFromPause(Job* job) {
  CheckThenThrow(job, 1);
  asm volatile("" ::: "memory");  // not a tail call: the walk skips this frame
}

#if ASYNCJOB_CONTEXT_RETURN_FREE
// The function a job paused by PauseReturnFree() calls when Cancel()
// resumes it, as if from its pause (see Cancel()): it runs as if called by
// the code that called the pause, so it returns that pause's value when the
// job, which could not be cancelled, is resumed later.
__attribute__((noinline)) int CancelFromReturnFreePause(void* job) {
  CheckThenThrow(static_cast<Job*>(job), 1);
  return kResumedValue;
}
#endif

void RunCancelHooks(Job* job) noexcept {
  // Newest first: the last request made is the first withdrawn. A hook
  // that throws cannot stop the cancellation: its exception is dropped and
  // reported, and the other hooks still run.
  Job::Cancellation& cancellation = job->cancellation;
  while (cancellation.hook_count > 0) {
    CancelHook hook = cancellation.hooks[--cancellation.hook_count];
    try {
      hook.function(hook.argument);
    } catch (const std::exception& e) {
      base::QueueError(ASYNCJOB_R_CANCEL_HOOK_THREW,
                       "a cancel hook of job %p threw (%s); the exception was dropped",
                       static_cast<void*>(job), e.what());
    } catch (...) {
      base::QueueError(ASYNCJOB_R_CANCEL_HOOK_THREW,
                       "a cancel hook of job %p threw a non-std::exception; it was dropped",
                       static_cast<void*>(job));
    }
  }
}

void RunCancelHooksAndThrow(Job* job) {
  RunCancelHooks(job);
  throw JobCancelled{};
}

}  // namespace internal

Outcome Cancel(Job* job, void (*before_unwind)(Job* job)) {
  if (!CheckResumable(job)) return Outcome::kError;
  --this_thread.paused_now;  // again if the unwind is refused and it pauses
  job->cancellation.requested = true;
  pending_before_unwind = before_unwind;
  void* transfer = internal::kResumedToken;
#if ASYNCJOB_CONTEXT_RETURN_FREE
  // A job paused by PauseReturnFree() resumes straight in the code that
  // called the pause: make it check and throw from there instead. The
  // diversion calls the function as void(void*); it returns an int, the
  // pause's value, only when the job is later resumed normally, and the
  // code it returns to reads that int (the casts go through void(*)(),
  // which any function pointer type may be cast to and from).
  context::Diversion diversion{nullptr,
                               reinterpret_cast<void (*)(void*)>(reinterpret_cast<void (*)()>(
                                   &internal::CancelFromReturnFreePause)),
                               job};
  if (job->return_free) {
    context::Divert(&job->fibre, &diversion);
    transfer = &diversion;
  }
#endif
  // Pausing is disabled while cancelling, so the job runs to its end, or,
  // when its stack cannot be unwound, pauses again where it was (an error
  // queued): kPaused.
  Outcome outcome = internal::Enter(job, transfer);
  if (outcome == Outcome::kFinished) ++this_thread.counters.cancels;
  return outcome;
}

bool AddCancelHook(void (*function)(void*), void* argument) {
  Job* job = this_thread.current;
  if (job == nullptr) {
    base::QueueError(ASYNCJOB_R_NOT_IN_JOB, "cancel hooks belong to a job; none is running");
    return false;
  }
  Job::Cancellation& cancellation = job->cancellation;
  // Being cancelled: the hooks have run or are running, and run once.
  // Accepted, so that code creating a hook in a destructor on the unwind
  // path gets no error to throw.
  if (cancellation.requested) return true;
  if (cancellation.hook_count == kMaxCancelHooks) {
    base::QueueError(ASYNCJOB_R_TOO_MANY_CANCEL_HOOKS, "job %p already has %d cancel hooks",
                     static_cast<void*>(job), kMaxCancelHooks);
    return false;
  }
  cancellation.hooks[cancellation.hook_count++] = CancelHook{function, argument};
  return true;
}

bool RemoveCancelHook(void (*function)(void*), void* argument) {
  Job* job = this_thread.current;
  if (job == nullptr) return false;
  Job::Cancellation& cancellation = job->cancellation;
  for (int i = cancellation.hook_count - 1; i >= 0; --i) {
    if (cancellation.hooks[i].function == function && cancellation.hooks[i].argument == argument) {
      for (int j = i; j + 1 < cancellation.hook_count; ++j) {
        cancellation.hooks[j] = cancellation.hooks[j + 1];
      }
      --cancellation.hook_count;
      return true;
    }
  }
  return false;
}

}  // namespace asyncjob::job
