// gdb_demo: three jobs paused in three distinct functions at different
// depths, for the gdb tests (gdb_test.sh), the dump tests (dump_test.sh)
// and docs/debugging.md. Prints "ready PID" once they are paused, then
// waits until killed. With an argument:
//   exit  dumps itself with asyncjob_dump() and backtraces, and exits;
//   file  creates the file named by ASYNCJOB_DUMP_ON_FILE, then keeps a
//         fourth job pausing (every 10 ms, for at most a minute) until the
//         library has taken the file away;
//   overflow  runs a fourth job that recurses into its stack's guard (the
//         library reports the overflow and stops the process).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "asyncjob/introspect.h"

extern "C" {
__attribute__((noinline)) int demo_wait_for_key(void*) {
  ASYNC_pause_job();
  asm volatile("" ::: "memory");  // keeps the frame: no tail call
  return 1;
}

__attribute__((noinline)) int demo_read_record(int length) {
  volatile char record[512];
  record[0] = static_cast<char>(length);
  ASYNC_pause_job();
  asm volatile("" ::: "memory");
  return record[0];
}
__attribute__((noinline)) int demo_parse_message(void*) {
  const int value = demo_read_record(16);
  asm volatile("" ::: "memory");
  return value;
}

__attribute__((noinline)) int demo_sign_digest(int bits) {
  volatile char scratch[4096];
  scratch[0] = static_cast<char>(bits);
  ASYNC_pause_job();
  asm volatile("" ::: "memory");
  return scratch[0];
}
__attribute__((noinline)) int demo_make_signature(int bits) {
  const int value = demo_sign_digest(bits);
  asm volatile("" ::: "memory");
  return value;
}
__attribute__((noinline)) int demo_poll(void*) {
  for (;;) ASYNC_pause_job();
}
// Recurses until the stack's guard stops it (the flag, never cleared,
// only hides that from the compiler).
volatile bool demo_keep_recursing = true;
__attribute__((noinline)) int demo_recurse(int depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (!demo_keep_recursing) return frame[0];
  return demo_recurse(depth + 1) + frame[0];
}
__attribute__((noinline)) int demo_overflow(void*) { return demo_recurse(0); }
__attribute__((noinline)) int demo_handshake(void*) {
  const int value = demo_make_signature(2048);
  asm volatile("" ::: "memory");
  return value;
}
}

int main(int argc, char** argv) {
  int (*functions[])(void*) = {demo_wait_for_key, demo_parse_message, demo_handshake};
  ASYNC_JOB* jobs[3] = {};
  for (int i = 0; i < 3; ++i) {
    int ret = 0;
    if (ASYNC_start_job(&jobs[i], nullptr, &ret, functions[i], nullptr, 0) != ASYNC_PAUSE) {
      std::fprintf(stderr, "gdb_demo: job %d did not pause\n", i);
      return 1;
    }
  }
  if (argc > 1 && std::strcmp(argv[1], "exit") == 0) {
    asyncjob_dump(stdout);
    for (ASYNC_JOB* job : jobs) asyncjob_print_backtrace(job, stdout);
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "overflow") == 0) {
    ASYNC_JOB* overflowing = nullptr;
    int ret = 0;
    ASYNC_start_job(&overflowing, nullptr, &ret, demo_overflow, nullptr, 0);
    return 1;  // not reached: the overflow stops the process
  }
  if (argc > 1 && std::strcmp(argv[1], "file") == 0) {
    const char* path = std::getenv("ASYNCJOB_DUMP_ON_FILE");
    ASYNC_JOB* poller = nullptr;
    int ret = 0;
    if (path == nullptr ||
        ASYNC_start_job(&poller, nullptr, &ret, demo_poll, nullptr, 0) != ASYNC_PAUSE)
      return 1;
    if (FILE* request = std::fopen(path, "w")) {
      std::fclose(request);
    } else {
      return 1;
    }
    for (int i = 0; i < 6000 && access(path, F_OK) == 0; ++i) {
      usleep(10000);
      ASYNC_start_job(&poller, nullptr, &ret, nullptr, nullptr, 0);
    }
    return access(path, F_OK) == 0 ? 1 : 0;
  }
  std::printf("ready %ld\n", static_cast<long>(getpid()));
  std::fflush(stdout);
  for (;;) pause();
}
