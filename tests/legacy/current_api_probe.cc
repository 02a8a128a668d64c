// current_api_probe.cc - the current API, for the legacy tests (see
// current_api_probe.h). Includes <asyncjob/async.h>, never legacy.h.
#include "current_api_probe.h"

#include <unistd.h>

#include "asyncjob/async.h"
#include "support/test_support.h"

namespace legacy_probe {

PoolStats ThisThreadPool() {
  asyncjob_pool_stats stats{};
  PoolStats result;
  result.exists = asyncjob_get_pool_stats(&stats) == 1;
  result.max_size = stats.max_size;
  result.total = stats.total;
  result.idle = stats.idle;
  result.in_use = stats.in_use;
  return result;
}

Constants CurrentConstants() {
  return Constants{ASYNC_ERR,
                   ASYNC_NO_JOBS,
                   ASYNC_PAUSE,
                   ASYNC_FINISH,
                   ASYNC_R_FAILED_TO_SET_POOL,
                   ASYNC_R_INVALID_POOL_SIZE,
                   ASYNC_R_INIT_FAILED,
                   ASYNCJOB_R_MALLOC_FAILURE,
                   ASYNCJOB_R_PASSED_NULL_PARAMETER,
                   ASYNCJOB_R_INTERNAL_ERROR,
                   ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
                   ASYNCJOB_R_WRONG_THREAD,
                   ASYNCJOB_R_JOB_NOT_PAUSED,
                   ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                   ASYNCJOB_R_JOBS_OUTSTANDING,
                   ASYNCJOB_ERR_LIB_ASYNC};
}

SharedFunctions CurrentSharedFunctions() {
  return SharedFunctions{reinterpret_cast<const void*>(&ASYNC_init_thread),
                         reinterpret_cast<const void*>(&ASYNC_cleanup_thread),
                         reinterpret_cast<const void*>(&ASYNC_pause_job),
                         reinterpret_cast<const void*>(&ASYNC_get_current_job),
                         reinterpret_cast<const void*>(&ASYNC_block_pause),
                         reinterpret_cast<const void*>(&ASYNC_unblock_pause),
                         reinterpret_cast<const void*>(&asyncjob_get_error),
                         reinterpret_cast<const void*>(&asyncjob_peek_error),
                         reinterpret_cast<const void*>(&asyncjob_peek_last_error),
                         reinterpret_cast<const void*>(&asyncjob_clear_errors)};
}

namespace {

thread_local ASYNC_WAIT_CTX* probe_wait_ctx = nullptr;

int PauseOnceThenReturn(void* argument) {
  ASYNC_pause_job();
  return *static_cast<int*>(argument);
}

void CloseAndCount(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void* custom_data) {
  close(fd);
  ++*static_cast<int*>(custom_data);
}

const char probe_key = 0;
const char tear_down_key = 0;

void RecordTearDown(ASYNC_WAIT_CTX* ctx, const void*, OSSL_ASYNC_FD fd, void* custom_data) {
  auto* seen = static_cast<TearDown*>(custom_data);
  ++seen->cleanups;
  ASYNC_callback_fn callback = nullptr;
  void* argument = nullptr;
  seen->callback_result =
      ASYNC_WAIT_CTX_get_callback(ctx, &callback, &argument) == 1 ? callback(argument) : -1;
  seen->pause_result = ASYNC_pause_job();
  ASYNC_JOB* job = ASYNC_get_current_job();
  seen->had_current_job = job != nullptr;
  seen->current_job_had_wait_ctx = job != nullptr && ASYNC_get_wait_ctx(job) != nullptr;
  if (seen->also != nullptr) seen->also(seen->also_arg);
  close(fd);
}

}  // namespace

async_job_st* StartCurrentApiJob(bool with_wait_ctx, int result) {
  if (with_wait_ctx) probe_wait_ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  if (ASYNC_start_job(&job, probe_wait_ctx, &ret, &PauseOnceThenReturn, &result, sizeof result) !=
      ASYNC_PAUSE) {
    return nullptr;
  }
  return job;
}

void ForgetCurrentApiWaitCtx() {
  ASYNC_WAIT_CTX_free(probe_wait_ctx);
  probe_wait_ctx = nullptr;
}

int CallCurrentJobWaitCtxCallback() {
  ASYNC_JOB* job = ASYNC_get_current_job();
  if (job == nullptr) return -1;
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(job);
  ASYNC_callback_fn callback = nullptr;
  void* argument = nullptr;
  if (ctx == nullptr || ASYNC_WAIT_CTX_get_callback(ctx, &callback, &argument) != 1) return -1;
  return callback(argument);
}

int SetWaitFdInCurrentJobWaitCtx(int fd, int* cleanups) {
  ASYNC_JOB* job = ASYNC_get_current_job();
  if (job == nullptr) return 0;
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(job);
  if (ctx == nullptr) return 0;
  return ASYNC_WAIT_CTX_set_wait_fd(ctx, &probe_key, fd, cleanups, &CloseAndCount);
}

int ResumeWithCurrentApi(async_job_st** job, int* ret) {
  return ASYNC_start_job(job, nullptr, ret, nullptr, nullptr, 0);
}

int CancelJob(async_job_st** job) { return asyncjob_cancel_job(job); }

int AddCancelHook(void (*fn)(void*), void* arg) { return asyncjob_add_cancel_hook(fn, arg); }

int SetTearDownFdInCurrentJobWaitCtx(int fd, TearDown* tear_down) {
  ASYNC_JOB* job = ASYNC_get_current_job();
  if (job == nullptr) return 0;
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(job);
  if (ctx == nullptr) return 0;
  return ASYNC_WAIT_CTX_set_wait_fd(ctx, &tear_down_key, fd, tear_down, &RecordTearDown);
}

bool UnderMemoryTool() { return ASYNCJOB_ASAN || ASYNCJOB_TSAN || ASYNCJOB_TEST_UNDER_VALGRIND(); }

}  // namespace legacy_probe
