/* thread_exit_c.c - pthread_exit() inside nested jobs, from C: here
 * pthread_cleanup_push() (C without -fexceptions) registers a setjmp buffer
 * that the C library's forced unwind jumps to, rather than a destructor.
 * Used by thread_exit_test.cc. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "asyncjob/async.h"

int asyncjob_test_c_exit_in_job(char *log, size_t log_size, void **value);

static char *log_buffer;
static size_t log_buffer_size;

static void Log(void *text) {
  size_t used = strlen(log_buffer);
  snprintf(log_buffer + used, log_buffer_size - used, "%s ", (const char *)text);
}

static void LogInUse(void *unused) {
  asyncjob_pool_stats stats;
  char text[32];
  (void)unused;
  if (asyncjob_get_pool_stats(&stats) != 1) stats.in_use = 99;
  snprintf(text, sizeof text, "in-use=%zu", stats.in_use);
  Log(text);
}

/* ThreadSanitizer's pthread_exit() interceptor refuses to run on a fibre:
 * under TSan the thread ends itself by cancellation (PTHREAD_CANCELED). */
#if defined(__SANITIZE_THREAD__)
#define END_BY_CANCELLING 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define END_BY_CANCELLING 1
#endif
#endif

static int Inner(void *arguments) {
  (void)arguments;
  pthread_cleanup_push(&Log, "inner-job");
#ifdef END_BY_CANCELLING
  pthread_cancel(pthread_self());
  pthread_testcancel();
#endif
  pthread_exit((void *)(intptr_t)99);
  pthread_cleanup_pop(0);
  return 0;
}

static int Outer(void *arguments) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  (void)arguments;
  ASYNC_start_job(&job, NULL, &ret, &Inner, NULL, 0);
  Log("outer-continued");
  return 0;
}

static void *Thread(void *argument) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  (void)argument;
  pthread_cleanup_push(&LogInUse, NULL);
  pthread_cleanup_push(&Log, "thread");
  ASYNC_start_job(&job, NULL, &ret, &Outer, NULL, 0);
  Log("start-job-returned");
  pthread_cleanup_pop(0);
  pthread_cleanup_pop(0);
  return NULL;
}

int asyncjob_test_c_exit_in_job(char *log, size_t log_size, void **value) {
  pthread_t thread;
  log_buffer = log;
  log_buffer_size = log_size;
  log[0] = '\0';
  if (pthread_create(&thread, NULL, &Thread, NULL) != 0) return -1;
  return pthread_join(thread, value);
}
