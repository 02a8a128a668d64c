// legacy_api.cc - the OpenSSL 1.1.0-pre3 API of <asyncjob/legacy.h>, built
// on the current C API (<asyncjob/async.h>) and nothing below it.
//
// A legacy job is an ordinary job started with a wait context that this file
// creates for it and frees when it finishes. Next to the context lives the
// job's LegacyJobState, which holds its wait fd. The context's callback is set,
// before the job first runs, to WakeFromCallback with the LegacyJobState as its
// argument; that pair is never written again, so any thread can go from a job
// to its LegacyJobState (ASYNC_get_wait_ctx, then ASYNC_WAIT_CTX_get_callback)
// without a lock, and a job whose context has some other callback (or none)
// was not started here.
//
// The wait fd is an eventfd (close-on-exec, non-blocking) created on first
// use and published with a compare-and-swap, so two threads asking at once
// agree on one. Its counter is non-zero, i.e. the fd readable, from a wake
// until the next clear, which reads it back to zero. It is closed with the
// LegacyJobState: when the job finishes, or when starting it fails. A job left
// paused when its thread's pool is cleaned up keeps its LegacyJobState until
// it finishes, exactly as the core keeps the job itself.
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

using asyncjob::base::QueueError;

namespace {

// What this API adds to a job of the current API: the wait context it was
// started with (owned here) and its wait fd (-1 until first needed).
struct LegacyJobState {
  ASYNC_WAIT_CTX* wait_ctx = nullptr;
  std::atomic<int> wait_fd{-1};
};

// Writes to the job's eventfd; returns 1, or 0 with an error queued.
int Wake(LegacyJobState* state, const char* function);

// The callback of every legacy job's wait context: code written for the
// current API calls it to say the job may resume.
int WakeFromCallback(void* argument) {
  return Wake(static_cast<LegacyJobState*>(argument), "the wait context's callback");
}

LegacyJobState* NewLegacyJobState() {
  auto* state = new (std::nothrow) LegacyJobState;
  if (state == nullptr) {
    QueueError(ASYNCJOB_R_MALLOC_FAILURE, "ASYNC_start_job: out of memory for a new job");
    return nullptr;
  }
  state->wait_ctx = ASYNC_WAIT_CTX_new();  // queues its own error
  if (state->wait_ctx == nullptr ||
      ASYNC_WAIT_CTX_set_callback(state->wait_ctx, &WakeFromCallback, state) != 1) {
    ASYNC_WAIT_CTX_free(state->wait_ctx);
    delete state;
    return nullptr;
  }
  return state;
}

// Once the job has finished (or never started): frees its wait context, which
// runs the cleanup of any fd code in the job left set there, and closes the
// wait fd.
void FreeLegacyJobState(LegacyJobState* state) {
  ASYNCJOB_DCHECK(state != nullptr);
  ASYNC_WAIT_CTX_free(state->wait_ctx);
  int fd = state->wait_fd.load(std::memory_order_acquire);
  if (fd >= 0) close(fd);
  delete state;
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
    QueueError(ASYNC_R_INIT_FAILED, "%s: cannot create the job's wait fd: eventfd: %s",
               function, std::strerror(errno));
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
    QueueError(ASYNCJOB_R_INTERNAL_ERROR, "%s: cannot signal the job's wait fd %d: %s",
               function, fd, std::strerror(errno));
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
  if (job == nullptr || ret == nullptr || (*job == nullptr && func == nullptr)) {
    // Bad arguments: the current API checks them and queues the error.
    return ASYNC_start_job(job, nullptr, ret, func, args, size);
  }
  if (*job != nullptr) {
    // Resuming. A job not started here (it has no LegacyJobState) is simply
    // resumed; the current API rejects one that is not paused on this thread.
    LegacyJobState* state = LegacyJobStateOf(*job);
    int status = ASYNC_start_job(job, nullptr, ret, func, args, size);
    if (status == ASYNC_FINISH && state != nullptr) FreeLegacyJobState(state);
    return status;
  }
  LegacyJobState* state = NewLegacyJobState();
  if (state == nullptr) return ASYNC_ERR;
  int status = ASYNC_start_job(job, state->wait_ctx, ret, func, args, size);
  if (status != ASYNC_PAUSE) FreeLegacyJobState(state);  // finished, or never started
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
