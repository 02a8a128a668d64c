// current_api_probe.h - what the legacy tests need from the current API.
//
// No translation unit may include both <asyncjob/legacy.h> and
// <asyncjob/async.h>, so the tests (which include the former) reach the
// current API through these functions, defined in current_api_probe.cc
// (which includes the latter). This also shows one program mixing
// translation units of both kinds.
#ifndef ASYNCJOB_TESTS_LEGACY_CURRENT_API_PROBE_H_
#define ASYNCJOB_TESTS_LEGACY_CURRENT_API_PROBE_H_

#include <cstddef>

struct async_job_st;

namespace legacy_probe {

struct PoolStats {
  bool exists = false;
  std::size_t max_size = 0;
  std::size_t total = 0;
  std::size_t idle = 0;
  std::size_t in_use = 0;
};
// The calling thread's pool (asyncjob_get_pool_stats).
PoolStats ThisThreadPool();

// Constants as <asyncjob/async.h> defines them, to compare with legacy.h's.
struct Constants {
  int err, no_jobs, pause, finish;
  int failed_to_set_pool, invalid_pool_size, init_failed;
  int malloc_failure, passed_null_parameter, internal_error, passed_invalid_argument;
  int wrong_thread, job_not_paused, stack_allocation_failed, jobs_outstanding;
  int err_lib_async;
};
Constants CurrentConstants();

// Addresses of current-API functions, to show that legacy.h binds the
// shared names to the very same functions.
struct SharedFunctions {
  const void* init_thread;
  const void* cleanup_thread;
  const void* pause_job;
  const void* get_current_job;
  const void* block_pause;
  const void* unblock_pause;
  const void* get_error;
  const void* peek_error;
  const void* peek_last_error;
  const void* clear_errors;
};
SharedFunctions CurrentSharedFunctions();

// A job started with the current API's ASYNC_start_job (with a wait context
// of this probe's when with_wait_ctx) that pauses once and then returns
// `result`. Returns the paused job; Forget... frees the probe's context
// once the job has finished.
async_job_st* StartCurrentApiJob(bool with_wait_ctx, int result);
void ForgetCurrentApiWaitCtx();

// Inside a job: calls the callback of the current job's wait context, as an
// engine written for the current API does when its work completes. Returns
// the callback's result, or -1 when the job has no context or no callback.
int CallCurrentJobWaitCtxCallback();

// Inside a job: sets `fd` as a wait fd of the current job's wait context
// under a key of the probe's, with a cleanup routine that closes it and
// counts the call in *cleanups. Returns 1 on success.
int SetWaitFdInCurrentJobWaitCtx(int fd, int* cleanups);

// Ending a job through the current API: ASYNC_start_job resuming *job (with
// no wait context, func or args; returns its status), and
// asyncjob_cancel_job (returns its result).
int ResumeWithCurrentApi(async_job_st** job, int* ret);
int CancelJob(async_job_st** job);

// Inside a job: asyncjob_add_cancel_hook(fn, arg). Returns its result.
int AddCancelHook(void (*fn)(void*), void* arg);

// What a wait fd's cleanup routine saw when it ran (see
// SetTearDownFdInCurrentJobWaitCtx).
struct TearDown {
  int cleanups = 0;
  int callback_result = -2;  // the context's callback, called from the cleanup
  int pause_result = -2;     // ASYNC_pause_job() from the cleanup
  bool had_current_job = false;
  bool current_job_had_wait_ctx = true;
  void (*also)(void*) = nullptr;  // then called with also_arg, if set
  void* also_arg = nullptr;
};
// Inside a job: sets `fd` as a wait fd of the current job's wait context
// under a second key of the probe's, with a cleanup routine that records
// what it can do into *tear_down, then closes fd. Returns 1 on success.
int SetTearDownFdInCurrentJobWaitCtx(int fd, TearDown* tear_down);

// Whether malloc is a tool's (ASan, TSan, valgrind): heap figures from
// mallinfo2() and address-space limits mean nothing then.
bool UnderMemoryTool();

}  // namespace legacy_probe

#endif  // ASYNCJOB_TESTS_LEGACY_CURRENT_API_PROBE_H_
