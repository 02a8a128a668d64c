/*
 * legacy_example.c - a program written against the OpenSSL 1.1.0-pre3 API,
 * doing what that release's ASYNC_start_job(3) example describes: a pool of
 * one job; the job prints the message it was given, signals its own wait fd
 * (standing in for an external event), pauses, and once resumed clears the
 * signal; the program waits for the signal with select() before resuming.
 * Its output is compared line by line with the manual's expected output.
 */
#include <stdio.h>
#include <sys/select.h>

#include <asyncjob/legacy.h>

static int greet(void *arg) {
  ASYNC_JOB *self = ASYNC_get_current_job();

  if (self == NULL || !ASYNC_in_job()) {
    printf("Not running inside a job, which cannot happen\n");
    return 0;
  }
  printf("Executing within a job\n");
  printf("Passed in message is: %s\n", (const char *)arg);

  ASYNC_wake(self);  /* the event the program will wait for */
  ASYNC_pause_job(); /* back to main() until it resumes us */
  ASYNC_clear_wake(self);

  printf("Resumed the job after a pause\n");
  return 1;
}

int main(void) {
  char message[] = "Hello world!";
  ASYNC_JOB *job = NULL;
  int ret = 0;
  int status = 1;

  if (!ASYNC_init(1, 1, 1)) {
    printf("Could not create the job pool\n");
    return 1;
  }
  for (;;) {
    fd_set readable;
    int fd;

    switch (ASYNC_start_job(&job, &ret, greet, message, sizeof message)) {
      case ASYNC_PAUSE:
        printf("Job was paused\n");
        break;
      case ASYNC_FINISH:
        printf("Job finished with return value %d\n", ret);
        status = ret == 1 ? 0 : 1;
        goto done;
      default: /* ASYNC_ERR, ASYNC_NO_JOBS */
        printf("An error occurred\n");
        goto done;
    }

    printf("Waiting for the job to be woken up\n");
    fd = ASYNC_get_wait_fd(job);
    if (fd < 0) {
      printf("The job has no wait fd\n");
      goto done;
    }
    FD_ZERO(&readable);
    FD_SET(fd, &readable);
    if (select(fd + 1, &readable, NULL, NULL, NULL) != 1) {
      printf("select() failed\n");
      goto done;
    }
  }

done:
  ASYNC_cleanup(1);
  return status;
}
