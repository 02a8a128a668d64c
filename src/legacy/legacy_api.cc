// legacy_api.cc - the OpenSSL 1.1.0-pre3 API of <asyncjob/legacy.h>, built
// on the current C API (<asyncjob/async.h>) and nothing below it but one
// hook of the C API's (capi/detach_wait_ctx.h).
//
// A legacy job is an ordinary job started with a wait context that this file
// creates for it. Next to the context lives the job's LegacyJobState, which
// holds its wait fd. The context's callback is set, before the job first
// runs, to WakeFromCallback with the LegacyJobState as its argument; that
// pair is never written again, so any thread can go from a job to its
// LegacyJobState (ASYNC_get_wait_ctx, then ASYNC_WAIT_CTX_get_callback)
// without a lock, and a job whose context has some other callback (or none)
// was not started here.
//
// The wait fd is an eventfd (close-on-exec, non-blocking) created on first
// use and published with a compare-and-swap, so two threads asking at once
// agree on one. Its counter is non-zero, i.e. the fd readable, from a wake
// until the next clear, which reads it back to zero.
//
// Who frees a LegacyJobState. A legacy job can end in ways this file does
// not see from outside: resumed to its end by the current API's
// ASYNC_start_job, or cancelled with asyncjob_cancel_job. So the job frees
// its own: it runs RunLegacyJob, which calls the program's function and, as
// that returns or is unwound by a cancellation, frees the state from inside
// the job (ReleaseAtJobEnd): the context is detached from the job and freed,
// which runs the cleanup routine of any fd code in the job left set there,
// and the wait fd is closed. The current API's own paths are untouched.
// What never reaches that point is freed here too: a job that could not be
// started, and a job still paused when its thread exits (each thread keeps a
// list of its live states; a job left paused by ASYNC_cleanup_thread keeps
// its state until it ends or its thread exits).
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>

#include "asyncjob/async.h"
#define ASYNCJOB_LEGACY_IMPLEMENTATION
#include "asyncjob/legacy.h"
#include "base/dcheck.h"
#include "base/error_queue.h"
#include "base/eventfd.h"
#include "capi/detach_wait_ctx.h"

using asyncjob::base::QueueError;

namespace {

// What this API adds to a job of the current API: the program's function,
// the wait context the job was started with (owned here), its wait fd (-1
// until first needed) and its place in its thread's list of live states.
struct LegacyJobState {
  int (*function)(void*) = nullptr;
  ASYNC_WAIT_CTX* wait_ctx = nullptr;
  std::atomic<int> wait_fd{-1};
  LegacyJobState* previous = nullptr;
  LegacyJobState* next = nullptr;
};

// The states of this thread's legacy jobs that were started and have not
// ended. Only the thread itself touches its list: jobs start, run and end on
// the thread that started them. At the thread's exit, the jobs still listed
// are paused for good (no other thread may resume them): their states are
// freed then. C++ runs this destructor before the pthread key destructors,
// so the jobs are still there to be detached from.
class LiveStates {
 public:
  constexpr LiveStates() = default;
  LiveStates(const LiveStates&) = delete;
  LiveStates& operator=(const LiveStates&) = delete;
  ~LiveStates();

  void Add(LegacyJobState* state) {
    state->previous = nullptr;
    state->next = first_;
    if (first_ != nullptr) first_->previous = state;
    first_ = state;
  }
  void Remove(LegacyJobState* state) {
    if (state->previous != nullptr) {
      state->previous->next = state->next;
    } else {
      ASYNCJOB_DCHECK(first_ == state);
      first_ = state->next;
    }
    if (state->next != nullptr) state->next->previous = state->previous;
    state->previous = state->next = nullptr;
  }

 private:
  LegacyJobState* first_ = nullptr;
};

thread_local LiveStates live_states;

// Writes to the job's eventfd; returns 1, or 0 with an error queued.
int Wake(LegacyJobState* state, const char* function);

// The callback of every legacy job's wait context: code written for the
// current API calls it to say the job may resume.
int WakeFromCallback(void* argument) {
  return Wake(static_cast<LegacyJobState*>(argument), "the wait context's callback");
}

LegacyJobState* NewLegacyJobState(int (*function)(void*)) {
  auto* state = new (std::nothrow) LegacyJobState;
  if (state == nullptr) {
    QueueError(ASYNCJOB_R_MALLOC_FAILURE, "ASYNC_start_job: out of memory for a new job");
    return nullptr;
  }
  state->function = function;
  state->wait_ctx = ASYNC_WAIT_CTX_new();  // queues its own error
  if (state->wait_ctx == nullptr ||
      ASYNC_WAIT_CTX_set_callback(state->wait_ctx, &WakeFromCallback, state) != 1) {
    ASYNC_WAIT_CTX_free(state->wait_ctx);
    delete state;
    return nullptr;
  }
  return state;
}

// Once no job uses its context (the job ended, never started, or was
// detached from it): frees the wait context, which runs the cleanup of any
// fd code in the job left set there, then closes the wait fd (a cleanup
// routine may still wake the job through the context's callback) and frees
// the state. The state is no longer listed.
void FreeLegacyJobState(LegacyJobState* state) {
  ASYNCJOB_DCHECK(state != nullptr);
  ASYNC_WAIT_CTX_free(state->wait_ctx);
  int fd = state->wait_fd.load(std::memory_order_acquire);
  if (fd >= 0) close(fd);
  delete state;
}

// Detaches the state's context from the job (which is ending, or paused for
// good) and frees the state. Pausing is blocked meanwhile, in case a cleanup
// routine tries it.
void ReleaseFromItsJob(LegacyJobState* state) {
  ASYNC_block_pause();
  live_states.Remove(state);
  asyncjob::capi::DetachWaitCtx(state->wait_ctx);
  FreeLegacyJobState(state);
  ASYNC_unblock_pause();
}

LiveStates::~LiveStates() {
  // One at a time from the front: a cleanup routine run by freeing one may
  // start (and leave paused) another legacy job on this thread.
  while (LegacyJobState* state = first_) ReleaseFromItsJob(state);
}

// The LegacyJobState of a running or paused job started by
// asyncjob_legacy_start_job, or nullptr (nothing queued). job is not NULL.
LegacyJobState* LegacyJobStateOf(ASYNC_JOB* job) {
  ASYNCJOB_DCHECK(job != nullptr);
  ASYNC_WAIT_CTX* wait_ctx = ASYNC_get_wait_ctx(job);
  if (wait_ctx == nullptr) return nullptr;
  ASYNC_callback_fn callback = nullptr;
  void* argument = nullptr;
  if (ASYNC_WAIT_CTX_get_callback(wait_ctx, &callback, &argument) != 1 ||
      callback != &WakeFromCallback) {
    return nullptr;
  }
  auto* state = static_cast<LegacyJobState*>(argument);
  // The callback pair is set once, before the job first runs: its
  // LegacyJobState names this very context.
  ASYNCJOB_DCHECK(state->wait_ctx == wait_ctx);
  return state;
}

// Frees the current job's LegacyJobState as the job ends, however it ends:
// its function returned, or its stack is being unwound by a cancellation.
class ReleaseAtJobEnd {
 public:
  ReleaseAtJobEnd() = default;
  ReleaseAtJobEnd(const ReleaseAtJobEnd&) = delete;
  ReleaseAtJobEnd& operator=(const ReleaseAtJobEnd&) = delete;
  ~ReleaseAtJobEnd() {
    // Looked up again rather than kept: should the thread have exited while
    // the job was paused, its state was freed and its context detached.
    if (LegacyJobState* state = LegacyJobStateOf(ASYNC_get_current_job())) {
      ReleaseFromItsJob(state);
    }
  }
};

// What every legacy job runs: the program's function, with the arguments
// the current API copied into the job.
int RunLegacyJob(void* arguments) {
  LegacyJobState* state = LegacyJobStateOf(ASYNC_get_current_job());
  ASYNCJOB_DCHECK(state != nullptr);
  ReleaseAtJobEnd release;
  return state->function(arguments);
}

// LegacyJobStateOf, queueing an error (and returning nullptr) for a bad job.
LegacyJobState* CheckedLegacyJobStateOf(ASYNC_JOB* job, const char* function) {
  if (job == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "%s: job is NULL", function);
    return nullptr;
  }
  LegacyJobState* state = LegacyJobStateOf(job);
  if (state == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
               "%s: job %p is not a running or paused job started with the 1.1.0 "
               "API's ASYNC_start_job",
               function, static_cast<void*>(job));
  }
  return state;
}

// The job's wait fd, created on first use; -1 (error queued) when it cannot be.
int WaitFd(LegacyJobState* state, const char* function) {
  ASYNCJOB_DCHECK(state != nullptr);
  int fd = state->wait_fd.load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  int created = asyncjob::base::CreateEventFd();
  if (created < 0) {
    QueueError(ASYNC_R_INIT_FAILED, "%s: cannot create the job's wait fd: eventfd: %s", function,
               std::strerror(errno));
    return -1;
  }
  if (state->wait_fd.compare_exchange_strong(fd, created, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
    return created;
  }
  close(created);  // another thread was first; fd now holds its descriptor
  return fd;
}

int Wake(LegacyJobState* state, const char* function) {
  int fd = WaitFd(state, function);
  if (fd < 0) return 0;
  if (!asyncjob::base::SignalEventFd(fd)) {
    QueueError(ASYNCJOB_R_INTERNAL_ERROR, "%s: cannot signal the job's wait fd %d: %s", function,
               fd, std::strerror(errno));
    return 0;
  }
  return 1;
}

}  // namespace

extern "C" {

int asyncjob_legacy_init(int init_thread, size_t max_size, size_t init_size) {
  return init_thread != 0 ? ASYNC_init_thread(max_size, init_size) : 1;
}

void asyncjob_legacy_cleanup(int cleanupthread) {
  if (cleanupthread != 0) ASYNC_cleanup_thread();
}

int asyncjob_legacy_start_job(ASYNC_JOB** job, int* ret, int (*func)(void*), void* args,
                              size_t size) {
  if (job == nullptr || ret == nullptr || *job != nullptr || func == nullptr) {
    // Resuming (a job not started here is simply resumed; the current API
    // rejects one that is not paused on this thread, and the job frees its
    // own state if it finishes), or bad arguments, which the current API
    // checks and reports.
    return ASYNC_start_job(job, nullptr, ret, func, args, size);
  }
  LegacyJobState* state = NewLegacyJobState(func);
  if (state == nullptr) return ASYNC_ERR;
  live_states.Add(state);
  int status = ASYNC_start_job(job, state->wait_ctx, ret, &RunLegacyJob, args, size);
  if (status == ASYNC_ERR || status == ASYNC_NO_JOBS) {
    // Never started, so RunLegacyJob did not run: no job has the context.
    live_states.Remove(state);
    FreeLegacyJobState(state);
  }
  return status;
}

int asyncjob_legacy_in_job(void) { return ASYNC_get_current_job() != nullptr ? 1 : 0; }

int asyncjob_legacy_get_wait_fd(ASYNC_JOB* job) {
  LegacyJobState* state = CheckedLegacyJobStateOf(job, "ASYNC_get_wait_fd");
  return state != nullptr ? WaitFd(state, "ASYNC_get_wait_fd") : -1;
}

void asyncjob_legacy_wake(ASYNC_JOB* job) {
  if (LegacyJobState* state = CheckedLegacyJobStateOf(job, "ASYNC_wake")) {
    Wake(state, "ASYNC_wake");
  }
}

void asyncjob_legacy_clear_wake(ASYNC_JOB* job) {
  LegacyJobState* state = CheckedLegacyJobStateOf(job, "ASYNC_clear_wake");
  if (state == nullptr) return;
  int fd = state->wait_fd.load(std::memory_order_acquire);
  if (fd < 0) return;  // never woken: nothing to clear
  if (!asyncjob::base::DrainEventFd(fd)) {
    QueueError(ASYNCJOB_R_INTERNAL_ERROR, "ASYNC_clear_wake: cannot read the job's wait fd %d: %s",
               fd, std::strerror(errno));
  }
}

}  // extern "C"
