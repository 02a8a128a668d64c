// The C++ side of headers_coexist.c: the system's real <openssl/async.h>
// (OpenSSL 3.0) and <asyncjob/async.h> in one translation unit, built with
// -std=c++20 -Wall -Wextra -Werror, OpenSSL's header first
// (-DASYNCJOB_HEADER_FIRST=0) and asyncjob's first (=1). Only has to compile.
#if ASYNCJOB_HEADER_FIRST
#include <asyncjob/async.h>
#include <openssl/async.h>
#else
#include <openssl/async.h>
#include <asyncjob/async.h>
#endif

#include <cstddef>
#include <type_traits>

// The declarations both headers make are one and the same entity.
static_assert(
    std::is_same_v<decltype(&ASYNC_start_job), int (*)(ASYNC_JOB **, ASYNC_WAIT_CTX *, int *,
                                                       int (*)(void *), void *, std::size_t)>);
static_assert(std::is_same_v<OSSL_ASYNC_FD, int>);
static_assert(ASYNC_ERR == 0 && ASYNC_NO_JOBS == 1 && ASYNC_PAUSE == 2 && ASYNC_FINISH == 3);

int headers_coexist_cxx();

int headers_coexist_cxx() {
  static const int key = 0;
  int sum = 0;
  ASYNC_stack_alloc_fn alloc_fn = nullptr;
  ASYNC_stack_free_fn free_fn = nullptr;
  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  sum += ASYNC_set_mem_functions(alloc_fn, free_fn);

  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  sum += ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, OSSL_BAD_ASYNC_FD, nullptr,
                                    [](ASYNC_WAIT_CTX *, const void *, OSSL_ASYNC_FD, void *) {});
  ASYNC_callback_fn cb = [](void *) { return 1; };
  sum += ASYNC_WAIT_CTX_set_callback(ctx, cb, nullptr);
  ASYNC_JOB *job = nullptr;
  int ret = 0;
  sum += ASYNC_start_job(
      &job, ctx, &ret, [](void *) { return ASYNC_pause_job(); }, nullptr, 0);
  sum += ASYNC_WAIT_CTX_get_status(ctx) == ASYNC_STATUS_OK;
  ASYNC_WAIT_CTX_free(ctx);
  ASYNC_cleanup_thread();

  asyncjob_pool_stats stats{};
  sum += asyncjob_get_pool_stats(&stats);
  sum += static_cast<int>(asyncjob_peek_last_error(nullptr));
  return sum;
}
