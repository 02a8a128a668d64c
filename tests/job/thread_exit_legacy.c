/* thread_exit_legacy.c - the 1.1.0 API (<asyncjob/legacy.h>) with a job left
 * paused by a thread that exited: resuming it from another thread is
 * refused with ASYNCJOB_R_OWNER_THREAD_EXITED, as in the current API. Used by
 * thread_exit_test.cc. */
#include <pthread.h>
#include <stddef.h>

#include "asyncjob/legacy.h"

int asyncjob_test_legacy_resume_orphan(unsigned long *error);

static int PauseOnce(void *arguments) {
  (void)arguments;
  ASYNC_pause_job();
  return 1;
}

static void *LeavePaused(void *slot) {
  int ret = 0;
  if (ASYNC_start_job((ASYNC_JOB **)slot, &ret, &PauseOnce, NULL, 0) != ASYNC_PAUSE) {
    *(ASYNC_JOB **)slot = NULL;
  }
  return NULL;
}

/* Returns the status of the resume (ASYNC_ERR expected), with the error it
 * queued in *error; -1 when the job could not be set up. */
int asyncjob_test_legacy_resume_orphan(unsigned long *error) {
  ASYNC_JOB *job = NULL;
  ASYNC_JOB *handle;
  pthread_t thread;
  int ret = -1;
  int status;
  if (pthread_create(&thread, NULL, &LeavePaused, &job) != 0) return -1;
  pthread_join(thread, NULL);
  if (job == NULL) return -1;
  handle = job;
  status = ASYNC_start_job(&handle, &ret, &PauseOnce, NULL, 0);
  *error = asyncjob_get_error(NULL);
  if (handle != job || ret != -1) return -1;
  return status;
}
