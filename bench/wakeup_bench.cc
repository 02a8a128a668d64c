// wakeup_bench: wake-ups per second through the loop's two paths, measured
// in one run with the same jobs, worker threads and request queue.
//
//   callback  every job's wait context has the loop's callback; a worker
//             completing a request calls it. Wake-ups are queued lock-free
//             and the loop's single eventfd is written only when the queue
//             was empty: one system call per batch.
//   per-fd    every job owns an eventfd registered in its wait context for
//             the job's whole life (as OpenSSL engines such as QAT do); a
//             worker writes it, epoll reports it, the job reads it.
//
// Each job submits a request, pauses until it is completed, and repeats.
// Printed: wake-ups per second for each path and their ratio, plus how many
// eventfd writes the callback path needed. Not a test: timings vary with
// the machine; nothing is asserted.
//
//   wakeup_bench [--jobs N] [--rounds R] [--workers W]
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"

namespace {

const int fd_key = 0;

struct Slot {
  int fd = -1;                         // per-fd path
  std::atomic<std::uint32_t> done{0};  // requests completed for this job
};

struct Submission {
  std::uint32_t job;
  asyncjob::Waker wake;  // callback path
};

// The "device": worker threads that complete requests in batches.
class Device {
 public:
  Device(std::vector<Slot>& slots, bool use_fd, int workers) : slots_(slots), use_fd_(use_fd) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~Device() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Loop thread, inside a job.
  void Submit(std::uint32_t job, asyncjob::Waker wake = {}) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      was_empty = pending_.empty();
      pending_.push_back(Submission{job, wake});
    }
    if (was_empty) ready_.notify_one();
  }

 private:
  void Work() {
    std::vector<Submission> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
        if (stopping_ && pending_.empty()) return;
        batch.swap(pending_);
      }
      for (const Submission& submission : batch) {
        Slot& slot = slots_[submission.job];
        slot.done.fetch_add(1, std::memory_order_release);
        if (use_fd_) {
          std::uint64_t one = 1;
          if (write(slot.fd, &one, sizeof one) != sizeof one) std::abort();
        } else {
          submission.wake();
        }
      }
      batch.clear();
    }
  }

  std::vector<Slot>& slots_;
  const bool use_fd_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<Submission> pending_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

void CloseFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }

struct Result {
  double seconds = 0;
  std::uint64_t wakeups = 0;
  asyncjob::LoopCounters stats;
};

Result Run(bool use_fd, std::uint32_t jobs, std::uint32_t rounds, int workers) {
  std::vector<Slot> slots(jobs);
  asyncjob::Loop loop;
  Device device(slots, use_fd, workers);
  for (std::uint32_t i = 0; i < jobs; ++i) {
    loop.spawn([&, i] {
      Slot& slot = slots[i];
      if (use_fd) {
        slot.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (slot.fd < 0) throw std::runtime_error("eventfd failed");
        asyncjob::current_wait_ctx().register_fd(&fd_key, slot.fd, &CloseFd).release();
      }
      for (std::uint32_t round = 1; round <= rounds; ++round) {
        if (use_fd) {
          device.Submit(i);
          std::uint64_t value = 0;
          while (read(slot.fd, &value, sizeof value) != sizeof value) asyncjob::pause();
        } else {
          device.Submit(i, asyncjob::prepare_wakeup());
          while (slot.done.load(std::memory_order_acquire) < round) asyncjob::pause();
        }
      }
    });
  }
  auto start = std::chrono::steady_clock::now();
  loop.run();
  Result result;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.stats = loop.counters();
  result.wakeups = std::uint64_t{jobs} * rounds;
  if (result.stats.failed != 0) {
    std::fprintf(stderr, "wakeup_bench: %llu jobs failed\n",
                 static_cast<unsigned long long>(result.stats.failed));
    std::exit(1);
  }
  return result;
}

void Print(const char* name, const Result& result) {
  std::printf(
      "%-9s %12.0f wake-ups/s  (%llu wake-ups in %.3f s; %llu resumes, %llu loop "
      "iterations, %llu eventfd writes by callbacks)\n",
      name, static_cast<double>(result.wakeups) / result.seconds,
      static_cast<unsigned long long>(result.wakeups), result.seconds,
      static_cast<unsigned long long>(result.stats.resumes),
      static_cast<unsigned long long>(result.stats.iterations),
      static_cast<unsigned long long>(result.stats.eventfd_signals));
}

}  // namespace

int main(int argc, char** argv) {
  std::uint32_t jobs = 1000;
  std::uint32_t rounds = 200;
  int workers = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--jobs") == 0) {
      jobs = static_cast<std::uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    } else if (std::strcmp(argv[i], "--rounds") == 0) {
      rounds = static_cast<std::uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    } else if (std::strcmp(argv[i], "--workers") == 0) {
      workers = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [--jobs N] [--rounds R] [--workers W]\n", argv[0]);
      return 2;
    }
  }
  if (jobs == 0 || rounds == 0 || workers <= 0) {
    std::fprintf(stderr, "wakeup_bench: jobs, rounds and workers must be positive\n");
    return 2;
  }
  // The per-fd path needs one fd per job.
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < jobs + 64u) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, jobs + 64u);
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_cur < jobs + 64u) {
      jobs = static_cast<std::uint32_t>(limit.rlim_cur - 64);
      std::printf("fd limit: using %u jobs\n", jobs);
    }
  }

  std::printf("%u jobs x %u requests each, %d worker thread(s)\n", jobs, rounds, workers);
  Run(false, jobs / 10 + 1, 10, workers);  // warm up: pool, stacks, page faults
  Result callback = Run(false, jobs, rounds, workers);
  Result per_fd = Run(true, jobs, rounds, workers);
  Print("callback", callback);
  Print("per-fd", per_fd);
  double ratio = (static_cast<double>(callback.wakeups) / callback.seconds) /
                 (static_cast<double>(per_fd.wakeups) / per_fd.seconds);
  std::printf("ratio     %.2fx (callback path / per-fd path)\n", ratio);
  return 0;
}
