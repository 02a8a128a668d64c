// The asyncjob demo: several jobs, each waiting on real timers, driven by one
// epoll loop through the OpenSSL-style API.
//
// Each job plays a "request" that needs three slow steps. For each step it
// arms a timerfd (standing in for an accelerator or a network reply),
// registers it with its ASYNC_WAIT_CTX, and pauses. The loop learns of new
// and removed fds through ASYNC_WAIT_CTX_get_changed_fds(), waits with
// epoll, and resumes whichever job's fd became readable.
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "asyncjob/async.h"

namespace {

constexpr int kJobs = 5;
constexpr int kSteps = 3;

struct Request {
  int id;
  int delay_ms[kSteps];
};

std::chrono::steady_clock::time_point start_time;

double Elapsed() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                   start_time)
      .count();
}

// The key under which this "engine" registers its fd in a wait context.
const int timer_key = 0;

void CloseTimer(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }

// Waits `ms` milliseconds without blocking the thread: arm a timer, hand its
// fd to whoever runs the job, pause until they resume us.
bool SlowStep(int ms) {
  ASYNC_JOB* job = ASYNC_get_current_job();
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(job);
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return false;
  itimerspec when{};
  when.it_value.tv_sec = ms / 1000;
  when.it_value.tv_nsec = (ms % 1000) * 1000000L;
  timerfd_settime(fd, 0, &when, nullptr);
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &timer_key, fd, nullptr, &CloseTimer);
  ASYNC_pause_job();
  uint64_t expirations = 0;
  ssize_t got = read(fd, &expirations, sizeof expirations);
  ASYNC_WAIT_CTX_clear_fd(ctx, &timer_key);
  close(fd);
  return got == sizeof expirations;
}

int RunRequest(void* argument) {
  const Request* request = static_cast<const Request*>(argument);
  std::printf("%7.1f ms  job %d: started on its own stack\n", Elapsed(), request->id);
  for (int step = 0; step < kSteps; ++step) {
    std::printf("%7.1f ms  job %d: step %d waits %d ms, pausing\n", Elapsed(), request->id,
                step + 1, request->delay_ms[step]);
    if (!SlowStep(request->delay_ms[step])) return -1;
    std::printf("%7.1f ms  job %d: step %d done, resumed\n", Elapsed(), request->id,
                step + 1);
  }
  return request->id * 100;
}

struct Slot {
  ASYNC_JOB* job = nullptr;
  ASYNC_WAIT_CTX* ctx = nullptr;
  int result = 0;
  bool done = false;
};

}  // namespace

int main() {
  start_time = std::chrono::steady_clock::now();
  std::printf("asyncjob demo: %d jobs x %d timed steps, one epoll loop (context switch: %s)\n\n",
              kJobs, kSteps, asyncjob_context_backend());
  if (!ASYNC_init_thread(kJobs, kJobs)) {
    std::printf("ASYNC_init_thread failed\n");
    return 1;
  }
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Slot> slots(kJobs);
  int remaining = kJobs;

  // Applies a job's fd changes to the epoll set, then records the outcome.
  auto after_run = [&](int index, int status) {
    Slot& slot = slots[index];
    if (status == ASYNC_ERR || status == ASYNC_NO_JOBS) {
      std::printf("job %d could not run: %s\n", index, status == ASYNC_ERR ? "error" : "no jobs");
      slot.done = true;
      --remaining;
      return;
    }
    size_t added = 0, deleted = 0;
    ASYNC_WAIT_CTX_get_changed_fds(slot.ctx, nullptr, &added, nullptr, &deleted);
    std::vector<OSSL_ASYNC_FD> add(added), del(deleted);
    ASYNC_WAIT_CTX_get_changed_fds(slot.ctx, add.data(), &added, del.data(), &deleted);
    for (OSSL_ASYNC_FD fd : del) epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
    for (OSSL_ASYNC_FD fd : add) {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u32 = static_cast<uint32_t>(index);
      epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
    }
    if (status == ASYNC_FINISH) {
      std::printf("%7.1f ms  job %d: finished, returned %d\n", Elapsed(), index, slot.result);
      slot.done = true;
      --remaining;
    }
  };

  for (int i = 0; i < kJobs; ++i) {
    Request request{i, {30 + 17 * ((i * 7) % 5), 20 + 11 * ((i * 3) % 4), 10 + 9 * i}};
    slots[i].ctx = ASYNC_WAIT_CTX_new();
    int status = ASYNC_start_job(&slots[i].job, slots[i].ctx, &slots[i].result, &RunRequest,
                                 &request, sizeof request);
    after_run(i, status);
  }

  int wakeups = 0;
  while (remaining > 0) {
    epoll_event events[kJobs];
    int ready = epoll_wait(epoll, events, kJobs, 5000);
    if (ready <= 0) {
      std::printf("epoll_wait timed out\n");
      break;
    }
    for (int e = 0; e < ready; ++e) {
      int index = static_cast<int>(events[e].data.u32);
      Slot& slot = slots[index];
      if (slot.done) continue;
      ++wakeups;
      std::printf("%7.1f ms  loop: fd of job %d is readable, resuming it\n", Elapsed(), index);
      // The old timer is closed by the job; drop it from epoll first.
      int status = ASYNC_start_job(&slot.job, slot.ctx, &slot.result, nullptr, nullptr, 0);
      after_run(index, status);
    }
  }

  asyncjob_pool_stats stats;
  asyncjob_get_pool_stats(&stats);
  std::printf("\nsummary: %d jobs finished after %d wake-ups in %.1f ms; pool holds %zu idle jobs "
              "(%zu with guard pages)\n",
              kJobs - remaining, wakeups, Elapsed(), stats.idle, stats.guarded);
  for (Slot& slot : slots) ASYNC_WAIT_CTX_free(slot.ctx);
  close(epoll);
  ASYNC_cleanup_thread();
  return remaining == 0 ? 0 : 1;
}
