/*
 * A program written against OpenSSL's <openssl/async.h> and nothing else,
 * built by install.openssl_program with `pkg-config asyncjob-openssl`, so
 * that the header and every ASYNC_* call come from asyncjob.
 *
 * It does what the EXAMPLES section of ASYNC_start_job(3) describes: a job
 * that checks it runs inside a job, hands the caller a pipe to wait on
 * (with a cleanup routine closing both ends), pauses, and finishes once the
 * caller has seen the pipe become readable. stdout must be exactly the
 * "expected output" of that page (expected_output.txt); problems go to
 * stderr and make the exit status non-zero.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <unistd.h>

#include <openssl/async.h>

/* The address identifies our descriptor in the wait context. */
static const int wake_key;

struct wake_pipe {
  OSSL_ASYNC_FD read_end;
  OSSL_ASYNC_FD write_end;
};

static int cleanups_run;
static OSSL_ASYNC_FD pipe_ends[2] = {-1, -1};

static void close_wake_pipe(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd,
                            void *custom_data) {
  struct wake_pipe *wake = custom_data;

  (void)ctx;
  if (key != &wake_key || fd != wake->read_end)
    fprintf(stderr, "cleanup called with the wrong key or descriptor\n");
  close(wake->read_end);
  close(wake->write_end);
  free(wake);
  ++cleanups_run;
}

static int job_main(void *arg) {
  const char *text = arg;
  ASYNC_JOB *self = ASYNC_get_current_job();
  struct wake_pipe *wake;
  int fds[2];
  char token = 'w';

  if (self == NULL) {
    fprintf(stderr, "job_main is not running inside a job\n");
    return 0;
  }
  printf("Executing within a job\n");
  printf("Passed in message is: %s\n", text);

  if (pipe(fds) != 0) {
    perror("pipe");
    return 0;
  }
  wake = malloc(sizeof *wake);
  if (wake == NULL) {
    close(fds[0]);
    close(fds[1]);
    return 0;
  }
  wake->read_end = pipe_ends[0] = fds[0];
  wake->write_end = pipe_ends[1] = fds[1];
  if (!ASYNC_WAIT_CTX_set_wait_fd(ASYNC_get_wait_ctx(self), &wake_key, wake->read_end, wake,
                                  close_wake_pipe)) {
    fprintf(stderr, "ASYNC_WAIT_CTX_set_wait_fd failed\n");
    close_wake_pipe(NULL, &wake_key, fds[0], wake);
    return 0;
  }

  /* Stands in for the event the job would wait for, e.g. a reply from a
   * device: it is ready at once, so the caller's select() returns at once. */
  if (write(wake->write_end, &token, 1) != 1) {
    perror("write");
    return 0;
  }

  ASYNC_pause_job();

  /* Back here only after the caller saw the descriptor become readable. */
  if (read(wake->read_end, &token, 1) != 1 || token != 'w') {
    fprintf(stderr, "reading the wake-up byte failed\n");
    return 0;
  }
  printf("Resumed the job after a pause\n");
  return 1;
}

/* Blocks until the job's descriptor is readable. */
static int wait_for_wake_up(ASYNC_WAIT_CTX *ctx) {
  OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
  size_t count = 0;
  fd_set readable;

  if (!ASYNC_WAIT_CTX_get_all_fds(ctx, NULL, &count) || count != 1) {
    fprintf(stderr, "expected one descriptor, the wait context has %zu\n", count);
    return 0;
  }
  if (!ASYNC_WAIT_CTX_get_all_fds(ctx, &fd, &count) || fd < 0) {
    fprintf(stderr, "ASYNC_WAIT_CTX_get_all_fds failed\n");
    return 0;
  }
  for (;;) {
    FD_ZERO(&readable);
    FD_SET(fd, &readable);
    if (select(fd + 1, &readable, NULL, NULL, NULL) > 0) return 1;
    if (errno != EINTR) {
      perror("select");
      return 0;
    }
  }
}

int main(void) {
  char greeting[] = "Hello world!";
  ASYNC_WAIT_CTX *ctx;
  ASYNC_JOB *job = NULL;
  int job_result = 0;
  int pauses = 0;
  int ok = 0;

  printf("Starting...\n");
  ctx = ASYNC_WAIT_CTX_new();
  if (ctx == NULL) {
    fprintf(stderr, "ASYNC_WAIT_CTX_new failed\n");
    return 1;
  }

  for (;;) {
    int status = ASYNC_start_job(&job, ctx, &job_result, job_main, greeting, sizeof greeting);
    if (status == ASYNC_FINISH) {
      printf("Job finished with return value %d\n", job_result);
      ok = job_result == 1 && pauses == 1;
      break;
    }
    if (status != ASYNC_PAUSE) {
      printf("An error occurred\n");
      break;
    }
    ++pauses;
    printf("Job was paused\n");
    printf("Waiting for the job to be woken up\n");
    if (!wait_for_wake_up(ctx)) break;
  }

  ASYNC_WAIT_CTX_free(ctx);
  printf("Finishing\n");

  /* Freeing the context ran the cleanup routine, which closed both ends. */
  if (cleanups_run != 1) {
    fprintf(stderr, "the cleanup routine ran %d times, expected once\n", cleanups_run);
    ok = 0;
  }
  if (pipe_ends[0] < 0 || fcntl(pipe_ends[0], F_GETFD) != -1 ||
      fcntl(pipe_ends[1], F_GETFD) != -1) {
    fprintf(stderr, "the pipe was not closed\n");
    ok = 0;
  }
  ASYNC_cleanup_thread();
  return ok ? 0 : 1;
}
