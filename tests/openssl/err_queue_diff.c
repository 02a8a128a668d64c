/*
 * err_queue_diff.c - what libcrypto's error queue holds after each ASYNC_*
 * call, for a differential test.
 *
 * The same source is built twice: against libcrypto alone (libcrypto's own
 * jobs) and with libasyncjob linked before libcrypto (asyncjob's jobs, its
 * errors mirrored into libcrypto's queue). Each scenario is a short sequence
 * of calls whose behaviour libcrypto defines (no call where libcrypto
 * crashes, leaks or has undefined behaviour); after each call the program
 * prints the result and the library and reason of ERR_peek_error(). Both
 * builds must print the same lines: an entry asyncjob leaves in libcrypto's
 * queue where libcrypto leaves none would make libssl's SSL_get_error()
 * report SSL_ERROR_SSL for the thread's next, unrelated operation.
 *
 *   err_queue_diff GROUP    GROUP: "single" (one job per wait context) or
 *                           "shared" (several jobs paused on one context)
 *
 * Within a group the scenarios run in order on the main thread, each ending
 * with ERR_clear_error() and ASYNC_cleanup_thread(); a group's last
 * scenarios leave jobs paused for good (resuming them would touch a freed
 * wait context under libcrypto), so nothing runs after them.
 */
#include <limits.h>
#include <openssl/async.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----- Printing ----- */

static const char *current_scenario = "";

static void PrintQueue(void) {
  unsigned long code = ERR_peek_error();
  if (code == 0) {
    printf(", libcrypto queue empty\n");
  } else {
    printf(", libcrypto queue lib %d reason %d\n", ERR_GET_LIB(code), ERR_GET_REASON(code));
  }
}

/* One line: the scenario, what was called, what it gave, the queue. */
static void Report(const char *call, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void Report(const char *call, const char *format, ...) {
  printf("%s: %s -> ", current_scenario, call);
  va_list args;
  va_start(args, format);
  vprintf(format, args);
  va_end(args);
  PrintQueue();
}

static const char *StartResult(int result) {
  switch (result) {
    case ASYNC_ERR:
      return "ASYNC_ERR";
    case ASYNC_NO_JOBS:
      return "ASYNC_NO_JOBS";
    case ASYNC_PAUSE:
      return "ASYNC_PAUSE";
    case ASYNC_FINISH:
      return "ASYNC_FINISH";
    default:
      return "(unknown)";
  }
}

/* ASYNC_start_job, reported with the job handle's state and *ret. */
static int Start(const char *call, ASYNC_JOB **job, ASYNC_WAIT_CTX *ctx, int *ret,
                 int (*func)(void *), void *args, size_t size) {
  int result = ASYNC_start_job(job, ctx, ret, func, args, size);
  Report(call, "%s, job %s, ret %d", StartResult(result), *job == NULL ? "NULL" : "set", *ret);
  return result;
}

/* Resumes *job; when there is no paused job (it was refused at its start)
 * says so on one line, so that the output stays aligned line by line with
 * the other build's. */
static void Resume(const char *call, ASYNC_JOB **job, ASYNC_WAIT_CTX *ctx, int *ret) {
  if (*job == NULL) {
    printf("%s: %s -> no paused job to resume\n", current_scenario, call);
    return;
  }
  Start(call, job, ctx, ret, NULL, NULL, 0);
}

static int CompareFds(const void *a, const void *b) {
  OSSL_ASYNC_FD x = *(const OSSL_ASYNC_FD *)a;
  OSSL_ASYNC_FD y = *(const OSSL_ASYNC_FD *)b;
  return (x > y) - (x < y);
}

/* Writes "n [a b c]" with the fds sorted: neither manual page promises an
 * order, and libcrypto lists the newest first. */
static void FormatFds(char *out, size_t room, const OSSL_ASYNC_FD *fds, size_t count) {
  OSSL_ASYNC_FD sorted[16];
  if (count > 16) count = 16;
  memcpy(sorted, fds, count * sizeof *fds);
  qsort(sorted, count, sizeof *sorted, CompareFds);
  int used = snprintf(out, room, "%zu [", count);
  for (size_t i = 0; i < count && used > 0 && (size_t)used < room; ++i) {
    used += snprintf(out + used, room - (size_t)used, i == 0 ? "%d" : " %d", (int)sorted[i]);
  }
  if (used > 0 && (size_t)used < room) snprintf(out + used, room - (size_t)used, "]");
}

static void ReportAllFds(ASYNC_WAIT_CTX *ctx) {
  OSSL_ASYNC_FD fds[16];
  size_t count = 0;
  int result = ASYNC_WAIT_CTX_get_all_fds(ctx, NULL, &count);
  Report("ASYNC_WAIT_CTX_get_all_fds(ctx, NULL, &n)", "%d, n %zu", result, count);
  if (count > 16) return;
  result = ASYNC_WAIT_CTX_get_all_fds(ctx, fds, &count);
  char text[128];
  FormatFds(text, sizeof text, fds, count);
  Report("ASYNC_WAIT_CTX_get_all_fds(ctx, fds, &n)", "%d, fds %s", result, text);
}

static void ReportChangedFds(ASYNC_WAIT_CTX *ctx) {
  OSSL_ASYNC_FD added[16];
  OSSL_ASYNC_FD deleted[16];
  size_t added_count = 0;
  size_t deleted_count = 0;
  int result = ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &added_count, NULL, &deleted_count);
  Report("ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &a, NULL, &d)", "%d, a %zu, d %zu", result,
         added_count, deleted_count);
  if (added_count > 16 || deleted_count > 16) return;
  result = ASYNC_WAIT_CTX_get_changed_fds(ctx, added, &added_count, deleted, &deleted_count);
  char added_text[128];
  char deleted_text[128];
  FormatFds(added_text, sizeof added_text, added, added_count);
  FormatFds(deleted_text, sizeof deleted_text, deleted, deleted_count);
  Report("ASYNC_WAIT_CTX_get_changed_fds(ctx, add, &a, del, &d)", "%d, added %s, deleted %s",
         result, added_text, deleted_text);
}

/* ----- Job bodies ----- */

/* What a job body is handed (by pointer, copied into the job as its
 * arguments) and what it records. */
struct Probe {
  int fd;                       /* the wait fd it sets, under the key &fd */
  int pauses;                   /* how many times it pauses */
  int saw_own_job;              /* ASYNC_get_current_job() was non-NULL */
  int saw_ctx;                  /* ASYNC_get_wait_ctx() gave the starter's */
  ASYNC_WAIT_CTX *expected_ctx; /* the context it was started with */
  int free_ctx_itself;          /* frees expected_ctx before finishing */
  int result;                   /* returned */
};

static struct Probe *ProbeOf(void *args) { return *(struct Probe **)args; }

static int ReturnResult(void *args) { return ProbeOf(args)->result; }

static int PauseThenReturn(void *args) {
  struct Probe *probe = ProbeOf(args);
  for (int i = 0; i < probe->pauses; ++i) ASYNC_pause_job();
  return probe->result;
}

/* Looks at its job and wait context, then pauses as asked. */
static int LookAround(void *args) {
  struct Probe *probe = ProbeOf(args);
  ASYNC_JOB *self = ASYNC_get_current_job();
  probe->saw_own_job = self != NULL;
  probe->saw_ctx = self != NULL && ASYNC_get_wait_ctx(self) == probe->expected_ctx;
  for (int i = 0; i < probe->pauses; ++i) ASYNC_pause_job();
  if (probe->free_ctx_itself) ASYNC_WAIT_CTX_free(probe->expected_ctx);
  return probe->result;
}

/* Sets its fd on its context, pauses, clears the fd, pauses again (if
 * asked twice), returns. */
static int SetPauseClear(void *args) {
  struct Probe *probe = ProbeOf(args);
  ASYNC_WAIT_CTX *ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  if (!ASYNC_WAIT_CTX_set_wait_fd(ctx, &probe->fd, probe->fd, NULL, NULL)) return -1;
  ASYNC_pause_job();
  if (!ASYNC_WAIT_CTX_clear_fd(ctx, &probe->fd)) return -2;
  if (probe->pauses > 1) ASYNC_pause_job();
  return probe->result;
}

/* Blocks pausing: the pause in between is a no-op returning 1. */
static int PauseWhileBlocked(void *args) {
  struct Probe *probe = ProbeOf(args);
  ASYNC_block_pause();
  int blocked = ASYNC_pause_job();
  ASYNC_unblock_pause();
  ASYNC_pause_job();
  return blocked == 1 ? probe->result : -1;
}

static int ArgsAreNull(void *args) { return args == NULL ? 1 : 0; }

static int FirstByte(void *args) { return args == NULL ? -1 : *(unsigned char *)args; }

/* Jobs left paused at the end of a group: reachable, never resumed. */
static ASYNC_JOB *left_paused[8];
static size_t left_paused_count;

static void LeavePaused(ASYNC_JOB *job) {
  if (job != NULL && left_paused_count < sizeof left_paused / sizeof *left_paused) {
    left_paused[left_paused_count++] = job;
  }
}

static int cleanups_run;
static void CountCleanup(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd, void *data) {
  (void)ctx;
  (void)key;
  (void)fd;
  (void)data;
  ++cleanups_run;
}

static int CallbackFn(void *arg) {
  (void)arg;
  return 1;
}

/* ----- Scenarios: one job per wait context ----- */

#if defined(HAVE_ASYNC_SET_MEM_FUNCTIONS)
/* First of all, before any job stack exists anywhere in the process. */
static void MemFunctionsBeforeAnyStack(void) {
  ASYNC_stack_alloc_fn alloc_fn = NULL;
  ASYNC_stack_free_fn free_fn = NULL;
  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  Report("ASYNC_get_mem_functions(&a, &f)", "alloc %s, free %s", alloc_fn ? "set" : "NULL",
         free_fn ? "set" : "NULL");
  Report("ASYNC_set_mem_functions(NULL, NULL)", "%d", ASYNC_set_mem_functions(NULL, NULL));
}

/* After stacks exist: refused with a bare 0 and nothing queued. */
static void MemFunctionsAfterStacks(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  struct Probe probe = {.pauses = 1, .result = 4};
  struct Probe *p = &probe;
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  Start("ASYNC_start_job(pauses once)", &job, ctx, &ret, PauseThenReturn, &p, sizeof p);
  Report("ASYNC_set_mem_functions(NULL, NULL) with a job paused", "%d",
         ASYNC_set_mem_functions(NULL, NULL));
  Start("ASYNC_start_job(resume)", &job, ctx, &ret, NULL, NULL, 0);
  Report("ASYNC_set_mem_functions(NULL, NULL) after", "%d", ASYNC_set_mem_functions(NULL, NULL));
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx)", "done");
}
#endif

static void InitThread(void) {
  Report("ASYNC_init_thread(4, 2)", "%d", ASYNC_init_thread(4, 2));
  ASYNC_cleanup_thread();
  Report("ASYNC_cleanup_thread()", "done");
  Report("ASYNC_init_thread(0, 0)", "%d", ASYNC_init_thread(0, 0));
  ASYNC_cleanup_thread();
  Report("ASYNC_init_thread(5, 0)", "%d", ASYNC_init_thread(5, 0));
  ASYNC_cleanup_thread();
  Report("ASYNC_init_thread(1, 1)", "%d", ASYNC_init_thread(1, 1));
  ASYNC_cleanup_thread();
}

static void InitThreadInitAboveMax(void) {
  Report("ASYNC_init_thread(1, 2)", "%d", ASYNC_init_thread(1, 2));
  ERR_clear_error();
  Report("ASYNC_init_thread(3, 4)", "%d", ASYNC_init_thread(3, 4));
  ERR_clear_error();
  /* The pool refused leaves the thread as it was: jobs still run. */
  ASYNC_JOB *job = NULL;
  int ret = 0;
  struct Probe probe = {.result = 9};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(returns 9) after the refusals", &job, NULL, &ret, ReturnResult, &p,
        sizeof p);
}

static void CleanupThread(void) {
  ASYNC_cleanup_thread();
  Report("ASYNC_cleanup_thread() with no pool", "done");
  ASYNC_cleanup_thread();
  Report("ASYNC_cleanup_thread() again", "done");
  Report("ASYNC_init_thread(2, 2)", "%d", ASYNC_init_thread(2, 2));
  ASYNC_cleanup_thread();
  Report("ASYNC_cleanup_thread() with two idle jobs", "done");
}

static void StartFinish(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  struct Probe probe = {.result = 7};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(returns 7)", &job, NULL, &ret, ReturnResult, &p, sizeof p);
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  probe.result = 8;
  Start("ASYNC_start_job(ctx, returns 8)", &job, ctx, &ret, ReturnResult, &p, sizeof p);
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx)", "done");
}

static void StartPauseResume(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  struct Probe probe = {.pauses = 2, .result = 5, .expected_ctx = ctx};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(pauses twice)", &job, ctx, &ret, LookAround, &p, sizeof p);
  Report("ASYNC_get_current_job() outside", "%s", ASYNC_get_current_job() ? "set" : "NULL");
  Report("ASYNC_get_wait_ctx(paused job)", "%s",
         job != NULL && ASYNC_get_wait_ctx(job) == ctx ? "its ctx" : "other");
  Report("inside: ASYNC_get_current_job(), ASYNC_get_wait_ctx()", "job %s, ctx %s",
         probe.saw_own_job ? "set" : "NULL", probe.saw_ctx ? "its ctx" : "other");
  /* On resume func, args and ctx are ignored. */
  Start("ASYNC_start_job(resume with other arguments)", &job, NULL, &ret, ArgsAreNull, &p,
        sizeof p);
  Start("ASYNC_start_job(resume)", &job, ctx, &ret, NULL, NULL, 0);
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx)", "done");
}

static void NoJobsWithAFullPool(void) {
  Report("ASYNC_init_thread(1, 0)", "%d", ASYNC_init_thread(1, 0));
  ASYNC_JOB *job = NULL;
  ASYNC_JOB *other = NULL;
  int ret = 0;
  int other_ret = 42;
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  ASYNC_WAIT_CTX *other_ctx = ASYNC_WAIT_CTX_new();
  struct Probe probe = {.pauses = 1, .result = 6};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(pauses once)", &job, ctx, &ret, PauseThenReturn, &p, sizeof p);
  Start("ASYNC_start_job(second job, pool full)", &other, other_ctx, &other_ret, PauseThenReturn,
        &p, sizeof p);
  Start("ASYNC_start_job(resume the first)", &job, ctx, &ret, NULL, NULL, 0);
  Start("ASYNC_start_job(second job, pool free again)", &other, other_ctx, &other_ret,
        PauseThenReturn, &p, sizeof p);
  Start("ASYNC_start_job(resume the second)", &other, other_ctx, &other_ret, NULL, NULL, 0);
  ASYNC_WAIT_CTX_free(ctx);
  ASYNC_WAIT_CTX_free(other_ctx);
  Report("ASYNC_WAIT_CTX_free() of both", "done");
}

static void Arguments(void) {
  ASYNC_JOB *job = NULL;
  int ret = -5;
  unsigned char byte = 33;
  Start("ASYNC_start_job(NULL args, size 0)", &job, NULL, &ret, ArgsAreNull, NULL, 0);
  ret = -5;
  Start("ASYNC_start_job(args, size 1)", &job, NULL, &ret, FirstByte, &byte, 1);
  ret = -5;
  Start("ASYNC_start_job(args, size 0)", &job, NULL, &ret, ArgsAreNull, &byte, 0);
  ret = -5;
  Start("ASYNC_start_job(args, size SIZE_MAX)", &job, NULL, &ret, FirstByte, &byte, SIZE_MAX);
  ERR_clear_error();
  ret = -5;
  Start("ASYNC_start_job(args, size 1) after", &job, NULL, &ret, FirstByte, &byte, 1);
}

static void PauseOutsideAJob(void) {
  Report("ASYNC_pause_job() outside a job", "%d", ASYNC_pause_job());
  Report("ASYNC_get_current_job() outside a job", "%s", ASYNC_get_current_job() ? "set" : "NULL");
  ASYNC_block_pause();
  Report("ASYNC_block_pause() outside a job", "done");
  ASYNC_unblock_pause();
  Report("ASYNC_unblock_pause() outside a job", "done");
  ASYNC_unblock_pause();
  Report("ASYNC_unblock_pause() outside a job, unbalanced", "done");
  Report("ASYNC_is_capable()", "%d", ASYNC_is_capable());
}

static void BlockPause(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  struct Probe probe = {.result = 11};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(pause blocked, then unblocked)", &job, ctx, &ret, PauseWhileBlocked, &p,
        sizeof p);
  Start("ASYNC_start_job(resume)", &job, ctx, &ret, NULL, NULL, 0);
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx)", "done");
}

static void WaitCtxCalls(void) {
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  Report("ASYNC_WAIT_CTX_new()", "%s", ctx != NULL ? "set" : "NULL");
  static const int key_a = 0;
  static const int key_b = 0;
  static const int missing = 0;
  OSSL_ASYNC_FD fd = -7;
  void *data = NULL;
  Report("ASYNC_WAIT_CTX_set_wait_fd(a, 1000)", "%d",
         ASYNC_WAIT_CTX_set_wait_fd(ctx, &key_a, 1000, (void *)&key_a, NULL));
  Report("ASYNC_WAIT_CTX_set_wait_fd(b, 1001)", "%d",
         ASYNC_WAIT_CTX_set_wait_fd(ctx, &key_b, 1001, NULL, CountCleanup));
  int result = ASYNC_WAIT_CTX_get_fd(ctx, &key_a, &fd, &data);
  Report("ASYNC_WAIT_CTX_get_fd(a)", "%d, fd %d, data %s", result, (int)fd,
         data == &key_a ? "a" : "other");
  fd = -7;
  result = ASYNC_WAIT_CTX_get_fd(ctx, &missing, &fd, &data);
  Report("ASYNC_WAIT_CTX_get_fd(missing key)", "%d, fd %d", result, (int)fd);
  ReportAllFds(ctx);
  ReportChangedFds(ctx);
  Report("ASYNC_WAIT_CTX_clear_fd(a)", "%d", ASYNC_WAIT_CTX_clear_fd(ctx, &key_a));
  Report("ASYNC_WAIT_CTX_clear_fd(a) again", "%d", ASYNC_WAIT_CTX_clear_fd(ctx, &key_a));
  Report("ASYNC_WAIT_CTX_clear_fd(missing key)", "%d", ASYNC_WAIT_CTX_clear_fd(ctx, &missing));
  ReportAllFds(ctx);
  ReportChangedFds(ctx);

  ASYNC_callback_fn callback = NULL;
  void *callback_arg = NULL;
  result = ASYNC_WAIT_CTX_get_callback(ctx, &callback, &callback_arg);
  Report("ASYNC_WAIT_CTX_get_callback() with none set", "%d", result);
  Report("ASYNC_WAIT_CTX_set_callback(fn, arg)", "%d",
         ASYNC_WAIT_CTX_set_callback(ctx, CallbackFn, (void *)&key_a));
  result = ASYNC_WAIT_CTX_get_callback(ctx, &callback, &callback_arg);
  Report("ASYNC_WAIT_CTX_get_callback()", "%d, fn %s, arg %s", result,
         callback == CallbackFn ? "ours" : "other", callback_arg == &key_a ? "ours" : "other");
  Report("ASYNC_WAIT_CTX_set_callback(NULL ctx)", "%d",
         ASYNC_WAIT_CTX_set_callback(NULL, CallbackFn, NULL));
  Report("ASYNC_WAIT_CTX_set_callback(NULL fn)", "%d",
         ASYNC_WAIT_CTX_set_callback(ctx, NULL, NULL));
  result = ASYNC_WAIT_CTX_get_callback(ctx, &callback, &callback_arg);
  Report("ASYNC_WAIT_CTX_get_callback() after clearing it", "%d", result);

  Report("ASYNC_WAIT_CTX_get_status() of a new ctx", "%d", ASYNC_WAIT_CTX_get_status(ctx));
  Report("ASYNC_WAIT_CTX_set_status(ASYNC_STATUS_EAGAIN)", "%d",
         ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_EAGAIN));
  Report("ASYNC_WAIT_CTX_get_status()", "%d", ASYNC_WAIT_CTX_get_status(ctx));
  Report("ASYNC_WAIT_CTX_set_status(ASYNC_STATUS_OK)", "%d",
         ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_OK));

  cleanups_run = 0;
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx with b set)", "cleanups run %d", cleanups_run);
  ASYNC_WAIT_CTX_free(NULL);
  Report("ASYNC_WAIT_CTX_free(NULL)", "done");
}

/* A job's fd changes, round by round (a round ends when the job resumes). */
static void ChangedFdsOfAJob(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  struct Probe probe = {.fd = 1010, .pauses = 2, .result = 12};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(sets its fd, pauses)", &job, ctx, &ret, SetPauseClear, &p, sizeof p);
  ReportAllFds(ctx);
  ReportChangedFds(ctx);
  Start("ASYNC_start_job(resume: clears its fd, pauses)", &job, ctx, &ret, NULL, NULL, 0);
  ReportAllFds(ctx);
  ReportChangedFds(ctx);
  Start("ASYNC_start_job(resume: finishes)", &job, ctx, &ret, NULL, NULL, 0);
  ReportAllFds(ctx);
  ReportChangedFds(ctx);
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx)", "done");
}

/* The job frees its own context while it runs, then finishes without
 * pausing again: defined under libcrypto, which drops the pointer at the
 * finish. */
static void JobFreesItsOwnContext(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  struct Probe probe = {.pauses = 1, .result = 13, .expected_ctx = ctx, .free_ctx_itself = 1};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(pauses once)", &job, ctx, &ret, LookAround, &p, sizeof p);
  Start("ASYNC_start_job(resume: frees its ctx, finishes)", &job, ctx, &ret, NULL, NULL, 0);
}

/* Last of its group: the job is never resumed (under libcrypto the resume
 * would write to the freed context). */
static void FreeUnderAPausedJob(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  static const int key = 0;
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, 1020, NULL, CountCleanup);
  struct Probe probe = {.pauses = 1, .result = 14, .expected_ctx = ctx};
  struct Probe *p = &probe;
  Start("ASYNC_start_job(pauses once)", &job, ctx, &ret, LookAround, &p, sizeof p);
  /* When the cleanup routines run is not compared: libcrypto runs them at
   * once, closing fds an engine may still signal; asyncjob keeps them until
   * the orphaned job's context is signalled (docs/teardown.md, and
   * tests/wait/orphan_test.cc). Only the error queue is compared. */
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx) under the paused job", "done");
  /* The queue stays as the free left it for whatever the thread does next. */
  ASYNC_WAIT_CTX *next = ASYNC_WAIT_CTX_new();
  Report("ASYNC_WAIT_CTX_new() next", "%s", next != NULL ? "set" : "NULL");
  ASYNC_WAIT_CTX_free(next);
  LeavePaused(job);
}

/* ----- Scenarios: several jobs paused on one wait context ----- */

/* Three jobs on one context, each with its own fd. */
static void ThreeJobsOnOneContext(void) {
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB *jobs[3] = {NULL, NULL, NULL};
  int rets[3] = {0, 0, 0};
  struct Probe probes[3];
  struct Probe *pointers[3];
  static const char *starts[3] = {"ASYNC_start_job(job 1 sets fd 1030, pauses)",
                                  "ASYNC_start_job(job 2 sets fd 1031, pauses)",
                                  "ASYNC_start_job(job 3 sets fd 1032, pauses)"};
  static const char *resumes[3] = {"ASYNC_start_job(resume job 1: clears its fd, finishes)",
                                   "ASYNC_start_job(resume job 2: clears its fd, finishes)",
                                   "ASYNC_start_job(resume job 3: clears its fd, finishes)"};
  for (int i = 0; i < 3; ++i) {
    probes[i] = (struct Probe){.fd = 1030 + i, .pauses = 1, .result = 20 + i};
    pointers[i] = &probes[i];
    Start(starts[i], &jobs[i], ctx, &rets[i], SetPauseClear, &pointers[i], sizeof pointers[i]);
    ReportChangedFds(ctx);
  }
  ReportAllFds(ctx);
  for (int i = 0; i < 3; ++i) {
    Report("ASYNC_get_wait_ctx(paused job)", "%s",
           jobs[i] == NULL                      ? "no paused job"
           : ASYNC_get_wait_ctx(jobs[i]) == ctx ? "the shared ctx"
                                                : "other");
  }
  for (int i = 0; i < 3; ++i) {
    Resume(resumes[i], &jobs[i], ctx, &rets[i]);
    ReportAllFds(ctx);
    ReportChangedFds(ctx);
  }
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx)", "done");
}

/* Two jobs on one context, resumed in the other order, the first one
 * pausing twice: the counts restart at every resume of either job. */
static void RoundsOfTwoJobsOnOneContext(void) {
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB *first = NULL;
  ASYNC_JOB *second = NULL;
  int first_ret = 0;
  int second_ret = 0;
  struct Probe first_probe = {.fd = 1040, .pauses = 2, .result = 30};
  struct Probe second_probe = {.fd = 1041, .pauses = 1, .result = 31};
  struct Probe *first_pointer = &first_probe;
  struct Probe *second_pointer = &second_probe;
  Start("ASYNC_start_job(first sets fd 1040, pauses)", &first, ctx, &first_ret, SetPauseClear,
        &first_pointer, sizeof first_pointer);
  Start("ASYNC_start_job(second sets fd 1041, pauses)", &second, ctx, &second_ret, SetPauseClear,
        &second_pointer, sizeof second_pointer);
  ReportChangedFds(ctx);
  Resume("ASYNC_start_job(resume second: clears its fd, finishes)", &second, ctx, &second_ret);
  ReportAllFds(ctx);
  ReportChangedFds(ctx);
  Resume("ASYNC_start_job(resume first: clears its fd, pauses)", &first, ctx, &first_ret);
  ReportAllFds(ctx);
  ReportChangedFds(ctx);
  Resume("ASYNC_start_job(resume first: finishes)", &first, ctx, &first_ret);
  ReportAllFds(ctx);
  ReportChangedFds(ctx);
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx)", "done");
}

/* Last of its group: three jobs paused on one context that is freed; they
 * are never resumed. */
static void FreeUnderThreePausedJobs(void) {
  ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB *jobs[3] = {NULL, NULL, NULL};
  int rets[3] = {0, 0, 0};
  static struct Probe probes[3];
  static struct Probe *pointers[3];
  static const char *starts[3] = {"ASYNC_start_job(job 1 sets fd 1050, pauses)",
                                  "ASYNC_start_job(job 2 sets fd 1051, pauses)",
                                  "ASYNC_start_job(job 3 sets fd 1052, pauses)"};
  for (int i = 0; i < 3; ++i) {
    probes[i] = (struct Probe){.fd = 1050 + i, .pauses = 1, .result = 40 + i};
    pointers[i] = &probes[i];
    Start(starts[i], &jobs[i], ctx, &rets[i], SetPauseClear, &pointers[i], sizeof pointers[i]);
  }
  ASYNC_WAIT_CTX_free(ctx);
  Report("ASYNC_WAIT_CTX_free(ctx) under three paused jobs", "done");
  ASYNC_WAIT_CTX *next = ASYNC_WAIT_CTX_new();
  Report("ASYNC_WAIT_CTX_new() next", "%s", next != NULL ? "set" : "NULL");
  ASYNC_WAIT_CTX_free(next);
  for (int i = 0; i < 3; ++i) LeavePaused(jobs[i]);
}

/* ----- Driver ----- */

struct Scenario {
  const char *name;
  void (*run)(void);
};

static const struct Scenario kSingle[] = {
#if defined(HAVE_ASYNC_SET_MEM_FUNCTIONS)
    {"mem_functions_before_any_stack", MemFunctionsBeforeAnyStack},
#endif
    {"init_thread", InitThread},
    {"init_thread_init_above_max", InitThreadInitAboveMax},
    {"cleanup_thread", CleanupThread},
    {"start_finish", StartFinish},
    {"start_pause_resume", StartPauseResume},
    {"no_jobs_with_a_full_pool", NoJobsWithAFullPool},
    {"arguments", Arguments},
    {"pause_outside_a_job", PauseOutsideAJob},
    {"block_pause", BlockPause},
    {"wait_ctx_calls", WaitCtxCalls},
    {"changed_fds_of_a_job", ChangedFdsOfAJob},
#if defined(HAVE_ASYNC_SET_MEM_FUNCTIONS)
    {"mem_functions_after_stacks", MemFunctionsAfterStacks},
#endif
    {"job_frees_its_own_context", JobFreesItsOwnContext},
    {"free_under_a_paused_job", FreeUnderAPausedJob},
};

static const struct Scenario kShared[] = {
    {"three_jobs_on_one_context", ThreeJobsOnOneContext},
    {"rounds_of_two_jobs_on_one_context", RoundsOfTwoJobsOnOneContext},
    {"free_under_three_paused_jobs", FreeUnderThreePausedJobs},
};

static void RunAll(const struct Scenario *scenarios, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    current_scenario = scenarios[i].name;
    ERR_clear_error();
    scenarios[i].run();
    ERR_clear_error();
    if (i + 1 < count) ASYNC_cleanup_thread();
  }
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *group = argc > 1 ? argv[1] : "";
  if (strcmp(group, "single") == 0) {
#if !defined(HAVE_ASYNC_SET_MEM_FUNCTIONS)
    printf(
        "# skipped mem_functions_before_any_stack, mem_functions_after_stacks: "
        "this libcrypto has no ASYNC_set_mem_functions (OpenSSL 3.2 and later)\n");
#endif
    RunAll(kSingle, sizeof kSingle / sizeof *kSingle);
  } else if (strcmp(group, "shared") == 0) {
    RunAll(kShared, sizeof kShared / sizeof *kShared);
  } else {
    fprintf(stderr, "usage: %s single|shared\n", argv[0]);
    return 2;
  }
  return 0;
}
