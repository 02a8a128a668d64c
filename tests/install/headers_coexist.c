/*
 * The system's real <openssl/async.h> (OpenSSL 3.0 on Debian 12) and
 * asyncjob's <asyncjob/async.h> in one C translation unit. Built by
 * install.headers with -std=c11 -Wall -Wextra -Werror, twice:
 *   -DASYNCJOB_HEADER_FIRST=0   OpenSSL's header first
 *   -DASYNCJOB_HEADER_FIRST=1   asyncjob's header first
 * It only has to compile: every declaration the two share must agree, and
 * what only asyncjob declares (ASYNC_set_mem_functions, which OpenSSL 3.0
 * lacks, and the asyncjob_* extensions) must still be usable.
 */
#if ASYNCJOB_HEADER_FIRST
#include <asyncjob/async.h>
#include <openssl/async.h>
#else
#include <openssl/async.h>
#include <asyncjob/async.h>
#endif

#include <stddef.h>

static int job_body(void *arg) {
  (void)arg;
  return ASYNC_pause_job();
}

static void fd_cleanup(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd, void *data) {
  (void)ctx;
  (void)key;
  (void)fd;
  (void)data;
}

static int callback(void *arg) {
  (void)arg;
  return 1;
}

int headers_coexist_c(void);

int headers_coexist_c(void) {
  static const int key = 0;
  ASYNC_JOB *job = NULL;
  ASYNC_WAIT_CTX *ctx;
  ASYNC_callback_fn cb = NULL;
  void *cb_arg = NULL;
  ASYNC_stack_alloc_fn alloc_fn = NULL;
  ASYNC_stack_free_fn free_fn = NULL;
  OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
  OSSL_ASYNC_FD fds[4];
  size_t nfds = 0, ndel = 0;
  void *data = NULL;
  int ret = 0;
  int sum = 0;
  asyncjob_pool_stats stats;
  const char *message = NULL;

  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  sum += ASYNC_set_mem_functions(alloc_fn, free_fn);
  sum += ASYNC_init_thread(4, 1);
  sum += ASYNC_is_capable();
  ctx = ASYNC_WAIT_CTX_new();
  sum += ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, fd, NULL, fd_cleanup);
  sum += ASYNC_WAIT_CTX_get_fd(ctx, &key, &fd, &data);
  sum += ASYNC_WAIT_CTX_get_all_fds(ctx, fds, &nfds);
  sum += ASYNC_WAIT_CTX_get_changed_fds(ctx, fds, &nfds, fds + 2, &ndel);
  sum += ASYNC_WAIT_CTX_clear_fd(ctx, &key);
  sum += ASYNC_WAIT_CTX_set_callback(ctx, callback, NULL);
  sum += ASYNC_WAIT_CTX_get_callback(ctx, &cb, &cb_arg);
  sum += ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_EAGAIN);
  sum += ASYNC_WAIT_CTX_get_status(ctx);
  switch (ASYNC_start_job(&job, ctx, &ret, job_body, NULL, 0)) {
    case ASYNC_ERR:
      sum += 1;
      break;
    case ASYNC_NO_JOBS:
      sum += 2;
      break;
    case ASYNC_PAUSE:
      sum += ASYNC_get_wait_ctx(job) == ctx;
      break;
    case ASYNC_FINISH:
      sum += ret;
      break;
    default:
      break;
  }
  ASYNC_block_pause();
  ASYNC_unblock_pause();
  sum += ASYNC_get_current_job() == NULL;
  ASYNC_WAIT_CTX_free(ctx);
  ASYNC_cleanup_thread();
  sum += ASYNC_STATUS_UNSUPPORTED + ASYNC_STATUS_ERR + ASYNC_STATUS_OK;
  sum += ASYNC_R_FAILED_TO_SET_POOL + ASYNC_R_FAILED_TO_SWAP_CONTEXT + ASYNC_R_INVALID_POOL_SIZE +
         ASYNC_R_INIT_FAILED;

  /* asyncjob's extensions. */
  sum += (int)asyncjob_get_error(&message);
  sum += asyncjob_get_pool_stats(&stats);
  sum += asyncjob_context_backend() != NULL;
  return sum;
}
