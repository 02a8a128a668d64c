// loop_basics: the event loop in a page.
//
// Four jobs run on one asyncjob::Loop:
//   - "timer" jobs wait on timerfds they register in their wait context (as
//     an engine registers its fd), two steps each;
//   - a "worker" job hands a Waker to a thread that completes its request and
//     calls back (the callback path: no fd at all);
//   - a "stuck" job waits for something that never happens and is cancelled
//     by its timeout; the destructor on its stack runs.
// Exits 0 when every job ended as expected.
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"

namespace {

using namespace std::chrono_literals;

const int timer_key = 0;

// An fd closed when the job's stack unwinds, whether the job finishes or is
// cancelled. (A registration's cleanup routine would not run on
// cancellation: the FdRegistration below clears the fd first as it unwinds.)
struct OwnedFd {
  int fd;
  ~OwnedFd() {
    if (fd >= 0) close(fd);
  }
};

// Inside a job: sleeps without blocking the loop's thread.
void Sleep(std::chrono::milliseconds duration) {
  OwnedFd timer{timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)};
  if (timer.fd < 0) throw std::runtime_error("timerfd_create failed");
  itimerspec when{};
  when.it_value.tv_sec = static_cast<time_t>(duration.count() / 1000);
  when.it_value.tv_nsec = static_cast<long>(duration.count() % 1000) * 1'000'000L;
  timerfd_settime(timer.fd, 0, &when, nullptr);
  // Declared after the fd, so cleared before it is closed.
  auto registration = asyncjob::current_wait_ctx().register_fd(&timer_key, timer.fd);
  std::uint64_t expirations = 0;
  while (read(timer.fd, &expirations, sizeof expirations) != sizeof expirations) {
    asyncjob::pause();
  }
}

struct Announce {
  explicit Announce(const char* name) : name_(name) {}
  ~Announce() { std::printf("  %s: its stack unwound\n", name_); }
  Announce(const Announce&) = delete;
  Announce& operator=(const Announce&) = delete;
  const char* name_;
};

}  // namespace

int main() {
  asyncjob::Loop loop;
  std::vector<std::thread> workers;
  auto started = std::chrono::steady_clock::now();
  auto ms = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
        .count();
  };

  auto timer_job = [&](int id, int first_ms, int second_ms) {
    return [&, id, first_ms, second_ms] {
      Sleep(std::chrono::milliseconds(first_ms));
      std::printf("%6.1f ms  timer %d: first step done\n", ms(), id);
      Sleep(std::chrono::milliseconds(second_ms));
      std::printf("%6.1f ms  timer %d: second step done\n", ms(), id);
      return id * 10;
    };
  };
  auto a = loop.spawn(timer_job(1, 30, 10));
  auto b = loop.spawn(timer_job(2, 10, 10));

  auto worker = loop.spawn([&] {
    asyncjob::Waker wake = asyncjob::prepare_wakeup();
    std::string reply;  // filled by the worker while the job is paused
    workers.emplace_back([&reply, wake] {
      std::this_thread::sleep_for(15ms);
      reply = "pong";
      wake();  // any thread; one eventfd write per batch of wake-ups
    });
    asyncjob::pause();
    std::printf("%6.1f ms  worker job: got \"%s\"\n", ms(), reply.c_str());
    return reply;
  });

  auto stuck = loop.spawn(
      [&] {
        Announce announce("stuck job");
        Sleep(10s);  // far longer than its timeout
        return 0;
      },
      [&](asyncjob::JobHandle<int>& done) {
        std::printf("%6.1f ms  stuck job: %s\n", ms(), asyncjob::to_string(done.status()));
      },
      asyncjob::SpawnOptions{.timeout = 60ms});

  loop.run();
  for (std::thread& thread : workers) thread.join();

  bool ok = a.get() == 10 && b.get() == 20 && worker.get() == "pong" &&
            stuck.status() == asyncjob::JobStatus::kTimedOut;
  asyncjob::LoopCounters stats = loop.counters();
  std::printf(
      "\n%llu jobs: %llu succeeded, %llu timed out; %llu resumes after %llu fd and "
      "%llu callback wake-ups\n",
      static_cast<unsigned long long>(stats.spawned),
      static_cast<unsigned long long>(stats.succeeded),
      static_cast<unsigned long long>(stats.timed_out),
      static_cast<unsigned long long>(stats.resumes),
      static_cast<unsigned long long>(stats.wakeups_fd),
      static_cast<unsigned long long>(stats.wakeups_callback));
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
