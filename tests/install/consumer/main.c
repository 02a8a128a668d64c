/* The C counterpart of main.cc, linked against the static library. */
#include <asyncjob/async.h>

#include <stdio.h>

static int pause_twice(void *arg) {
  int *pauses = *(int **)arg;
  ++*pauses;
  ASYNC_pause_job();
  ++*pauses;
  ASYNC_pause_job();
  return 7;
}

int main(void) {
  int pauses = 0;
  int *pauses_ptr = &pauses;
  ASYNC_JOB *job = NULL;
  int result = 0;
  int status;

  while ((status = ASYNC_start_job(&job, NULL, &result, pause_twice, &pauses_ptr,
                                   sizeof pauses_ptr)) == ASYNC_PAUSE) {
  }
  ASYNC_cleanup_thread();
  if (status != ASYNC_FINISH || result != 7 || pauses != 2) {
    fprintf(stderr, "status %d, result %d, %d pauses\n", status, result, pauses);
    return 1;
  }
  printf("consumer_c_static: job finished after 2 pauses (back end %s)\n",
         asyncjob_context_backend());
  return 0;
}
