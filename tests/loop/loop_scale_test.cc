// Ten thousand jobs paused at once on one loop, woken from two other threads
// in random order, half through wait fds (an eventfd per job, as engines
// do) and half through their wait contexts' callbacks. Each job waits twice;
// wake-ups often arrive before the job has paused. All must finish with the
// right results.
#include <sys/eventfd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"
#include "base/sanitizers.h"
#include "loop/loop_test_support.h"
#include "support/test_support.h"

namespace {

std::size_t JobCount() {
  if (const char* text = std::getenv("ASYNCJOB_SCALE_JOBS")) {
    return std::min<std::size_t>(std::strtoul(text, nullptr, 10), 10'000);
  }
#if ASYNCJOB_TSAN
  return 500;  // each job's fibre costs ThreadSanitizer memory of its own
#else
  return 10'000;
#endif
}

constexpr int kRounds = 2;
const int fd_key = 0;

struct Slot {
  bool use_fd = false;
  int fd = -1;                // written by the job before it publishes round 1
  asyncjob::Waker waker;      // written by the job before it publishes a round
  std::atomic<int> round{0};  // the round the job is waiting in
  std::atomic<int> woken{0};  // the last round a waker completed
};

void WakeInRandomOrder(std::vector<Slot>& slots, const std::vector<std::size_t>& order) {
  for (int round = 1; round <= kRounds; ++round) {
    for (std::size_t index : order) {
      Slot& slot = slots[index];
      while (slot.round.load(std::memory_order_acquire) < round) std::this_thread::yield();
      slot.woken.store(round, std::memory_order_release);
      if (slot.use_fd) {
        std::uint64_t one = 1;
        ASSERT_EQ(write(slot.fd, &one, sizeof one), 8);
      } else {
        slot.waker();
      }
    }
  }
}

TEST(LoopScale, TenThousandJobsWokenInRandomOrder) {
  const std::size_t n = JobCount();
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  // Half of the jobs own an eventfd: make room for them if the soft limit is
  // low, or use fewer fds when the hard limit forbids it.
  std::size_t fd_jobs = n / 2;
  const rlim_t limit = loop_test::RaiseFdLimit(fds_before + fd_jobs + 64);
  if (limit < fds_before + fd_jobs + 64)
    fd_jobs = limit > fds_before + 64 ? limit - fds_before - 64 : 0;

  std::mt19937 random(20240517);
  std::vector<Slot> slots(n);
  std::vector<std::size_t> kinds(n);
  std::iota(kinds.begin(), kinds.end(), 0);
  std::shuffle(kinds.begin(), kinds.end(), random);
  for (std::size_t i = 0; i < fd_jobs; ++i) slots[kinds[i]].use_fd = true;

  asyncjob::Loop loop;
  std::vector<asyncjob::JobHandle<std::uint64_t>> handles;
  handles.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    handles.push_back(loop.spawn([&slot = slots[i], i]() -> std::uint64_t {
      asyncjob::WaitCtxRef ctx = asyncjob::current_wait_ctx();
      if (slot.use_fd) {
        slot.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (slot.fd < 0) throw std::runtime_error("eventfd failed");
        ctx.register_fd(&fd_key, slot.fd, &loop_test::CloseFd).release();
      }
      for (int round = 1; round <= kRounds; ++round) {
        if (slot.use_fd) {
          slot.round.store(round, std::memory_order_release);
          std::uint64_t value = 0;
          loop_test::PauseUntil([&] { return read(slot.fd, &value, sizeof value) > 0; });
        } else {
          slot.waker = asyncjob::prepare_wakeup();
          slot.round.store(round, std::memory_order_release);
          loop_test::PauseUntil(
              [&] { return slot.woken.load(std::memory_order_acquire) >= round; });
        }
      }
      return i * 3 + 1;
    }));
  }
  // Everyone paused in round 1 before the wakers start.
  loop.run_once();
  ASSERT_EQ(loop.counters().paused, n);

  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), random);
  std::vector<std::size_t> first_half(order.begin(),
                                      order.begin() + static_cast<std::ptrdiff_t>(n / 2));
  std::vector<std::size_t> second_half(order.begin() + static_cast<std::ptrdiff_t>(n / 2),
                                       order.end());
  std::thread waker_a([&] { WakeInRandomOrder(slots, first_half); });
  std::thread waker_b([&] { WakeInRandomOrder(slots, second_half); });
  loop.run();
  waker_a.join();
  waker_b.join();

  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_EQ(handles[i].status(), asyncjob::JobStatus::kSucceeded) << "job " << i;
    ASSERT_EQ(handles[i].get(), i * 3 + 1) << "job " << i;
  }
  asyncjob::LoopCounters stats = loop.counters();
  const std::uint64_t callback_jobs = n - fd_jobs;
  EXPECT_EQ(stats.succeeded, n);
  EXPECT_EQ(stats.wakeups_callback, callback_jobs * kRounds);
  // A job that sees its last round completed before pausing finishes before
  // the callback of that round reaches the loop: that wake-up is stale.
  EXPECT_LE(stats.wakeups_stale, callback_jobs);
  EXPECT_LE(stats.wakeups_fd, fd_jobs * kRounds);
  if (fd_jobs > 0) {
    EXPECT_GT(stats.wakeups_fd, 0u);
  }
  EXPECT_LE(stats.eventfd_signals, stats.wakeups_callback);
  EXPECT_GE(stats.resumes, n);
  std::printf(
      "%zu jobs (%zu with an eventfd): %llu resumes, %llu fd and %llu callback wake-ups "
      "(%llu coalesced, %llu stale), %llu eventfd signals, %llu iterations\n",
      n, fd_jobs, static_cast<unsigned long long>(stats.resumes),
      static_cast<unsigned long long>(stats.wakeups_fd),
      static_cast<unsigned long long>(stats.wakeups_callback),
      static_cast<unsigned long long>(stats.wakeups_coalesced),
      static_cast<unsigned long long>(stats.wakeups_stale),
      static_cast<unsigned long long>(stats.eventfd_signals),
      static_cast<unsigned long long>(stats.iterations));
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before + 2) << "only the loop's own two fds";
}

}  // namespace
