// Runs a job that pauses three times, through <asyncjob/async.h>.
#include <asyncjob/async.h>

#include <cstdio>

namespace {

struct Counter {
  int *pauses;
};

int PauseThreeTimes(void *arg) {
  // ASYNC_start_job copied the Counter; the pointer inside still leads home.
  int *pauses = static_cast<Counter *>(arg)->pauses;
  for (int i = 0; i < 3; ++i) {
    ++*pauses;
    ASYNC_pause_job();
  }
  return 42;
}

}  // namespace

int main() {
  if (ASYNC_is_capable() != 1) {
    std::fprintf(stderr, "ASYNC_is_capable() says no\n");
    return 1;
  }
  int pauses = 0;
  Counter counter{&pauses};
  ASYNC_JOB *job = nullptr;
  int result = 0;
  int paused_returns = 0;
  for (;;) {
    int status = ASYNC_start_job(&job, nullptr, &result, PauseThreeTimes, &counter, sizeof counter);
    if (status == ASYNC_PAUSE) {
      ++paused_returns;
      continue;
    }
    if (status != ASYNC_FINISH) {
      std::fprintf(stderr, "ASYNC_start_job returned %d\n", status);
      return 1;
    }
    break;
  }
  ASYNC_cleanup_thread();
  if (result != 42 || pauses != 3 || paused_returns != 3 || job != nullptr) {
    std::fprintf(stderr, "result %d, %d pauses, %d ASYNC_PAUSE returns\n", result, pauses,
                 paused_returns);
    return 1;
  }
  std::printf("consumer: job finished after 3 pauses (back end %s)\n", asyncjob_context_backend());
  return 0;
}
