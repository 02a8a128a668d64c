/* Runs three jobs (two of them pause once) and exits: with ASYNCJOB_STATS=1
 * the library reports exactly that on stderr. */
#include <asyncjob/async.h>

static int pause_once(void *arg) {
  (void)arg;
  ASYNC_pause_job();
  return 1;
}

static int no_pause(void *arg) {
  (void)arg;
  return 2;
}

int main(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  for (int i = 0; i < 2; ++i) {
    if (ASYNC_start_job(&job, NULL, &ret, pause_once, NULL, 0) != ASYNC_PAUSE) return 1;
    if (ASYNC_start_job(&job, NULL, &ret, NULL, NULL, 0) != ASYNC_FINISH) return 1;
  }
  if (ASYNC_start_job(&job, NULL, &ret, no_pause, NULL, 0) != ASYNC_FINISH) return 1;
  return 0;
}
