// asyncjob::Loop under misuse: timeouts at and beyond the clock's range or
// negative, deadlines that pass before a job starts or as it is woken; the
// loop destroyed by the code it runs (a completion callback, a posted
// function, a job, a destructor run by a cancellation); re-entrant calls;
// null callables; the loop destroyed on another thread (fine with no job
// started, an abort with a message otherwise).
#include <sys/eventfd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"
#include "loop/loop_test_support.h"
#include "support/test_support.h"

namespace {

using namespace std::chrono_literals;
using asyncjob::JobHandle;
using asyncjob::JobStatus;
using asyncjob::Loop;
using asyncjob::SpawnOptions;
using loop_test::EventFd;
using loop_test::Later;
using loop_test::PauseUntil;
using Duration = std::chrono::steady_clock::duration;

const int fd_key = 0;

// Counts the destructors that ran on a job's stack.
struct Unwound {
  explicit Unwound(int* counter) : counter_(counter) {}
  ~Unwound() { ++*counter_; }
  Unwound(const Unwound&) = delete;
  Unwound& operator=(const Unwound&) = delete;
  int* counter_;
};

// Runs an action when destroyed: on a job's stack, when it unwinds.
struct OnUnwind {
  explicit OnUnwind(std::function<void()> action) : action_(std::move(action)) {}
  ~OnUnwind() { action_(); }
  OnUnwind(const OnUnwind&) = delete;
  OnUnwind& operator=(const OnUnwind&) = delete;
  std::function<void()> action_;
};

// A job that waits for a wake-up nobody sends (until cancelled).
void WaitForever() {
  asyncjob::prepare_wakeup();
  for (;;) asyncjob::pause();
}

// ----- Timeouts -----

// duration::max() used to overflow the deadline (signed overflow, flagged
// by UBSan) into the past, so the job timed out at once. Deadlines beyond
// the clock's range never expire; one just inside it waits (epoll's
// timeout clamped, not wrapped: the loop does not spin).
TEST(LoopMisuse, HugeTimeoutsDoNotExpire) {
  for (Duration timeout : {Duration::max(), Duration::max() - 1ns, Duration::max() / 2}) {
    Loop loop;
    EventFd event;
    auto handle = loop.spawn(
        [&] {
          auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, event.fd());
          PauseUntil([&] { return event.Consume(); });
          return 5;
        },
        SpawnOptions{.timeout = timeout});
    Later writer(20ms, [&] { event.Signal(); });
    loop.run();
    EXPECT_EQ(handle.status(), JobStatus::kSucceeded) << timeout.count();
    EXPECT_EQ(handle.get(), 5);
    EXPECT_EQ(loop.counters().timed_out, 0u);
    // Start, the fd's wake-up, perhaps an EINTR: not a spin until 20 ms.
    EXPECT_LT(loop.counters().iterations, 50u) << "the wait for the deadline did not block";
  }
}

TEST(LoopMisuse, HugeTimeoutLeavesRunOnceWaitingAsAsked) {
  Loop loop;
  auto handle = loop.spawn(WaitForever, SpawnOptions{.timeout = Duration::max() / 2});
  EXPECT_TRUE(loop.run_once());
  EXPECT_TRUE(loop.run_once(1ms));
  EXPECT_TRUE(loop.run_once(2ms));
  EXPECT_EQ(handle.status(), JobStatus::kPaused);
  EXPECT_TRUE(handle.cancel());
}

// A negative timeout has expired already: the job times out on the next
// iteration without running, whatever its size (duration::min() too).
TEST(LoopMisuse, NegativeTimeoutsTimeOutWithoutRunning) {
  Loop loop;
  int ran = 0;
  std::vector<JobStatus> completions;
  std::vector<JobHandle<int>> handles;
  for (Duration timeout :
       {Duration(-1), Duration(-1'000'000'000), Duration::min(), -Duration::max()}) {
    handles.push_back(loop.spawn(
        [&] {
          ++ran;
          return 1;
        },
        [&](JobHandle<int>& done) { completions.push_back(done.status()); },
        SpawnOptions{.timeout = timeout}));
  }
  loop.run();
  EXPECT_EQ(ran, 0);
  for (auto& handle : handles) {
    EXPECT_EQ(handle.status(), JobStatus::kTimedOut);
    EXPECT_THROW(handle.get(), asyncjob::JobTimedOut);
  }
  EXPECT_EQ(completions, std::vector<JobStatus>(4, JobStatus::kTimedOut));
  EXPECT_EQ(loop.counters().timed_out, 4u);
  EXPECT_EQ(loop.size(), 0u);
}

// A completion callback of an expired job may spawn another expired job:
// it times out too, and the loop ends.
TEST(LoopMisuse, ExpiredJobSpawnedByAnExpiryCompletionTimesOut) {
  Loop loop;
  JobHandle<int> second;
  loop.spawn([] { return 1; },
             [&](JobHandle<int>&) {
               second = loop.spawn([] { return 2; }, SpawnOptions{.timeout = -1ns});
             },
             SpawnOptions{.timeout = -1ns});
  loop.run();
  ASSERT_TRUE(second);
  EXPECT_EQ(second.status(), JobStatus::kTimedOut);
  EXPECT_EQ(loop.counters().timed_out, 2u);
}

// The deadline counts from spawn(): a job the loop gets to after it passed
// times out without running.
TEST(LoopMisuse, ADeadlinePassedBeforeTheJobStartsTimesItOutUnrun) {
  Loop loop;
  bool ran = false;
  auto handle = loop.spawn([&] { ran = true; }, SpawnOptions{.timeout = 1ms});
  std::this_thread::sleep_for(5ms);
  loop.run();
  EXPECT_EQ(handle.status(), JobStatus::kTimedOut);
  EXPECT_FALSE(ran);
}

// A job whose wake-up arrives in the iteration in which its deadline has
// passed is timed out, not resumed: the deadline wins.
TEST(LoopMisuse, AJobWokenAfterItsDeadlinePassedTimesOut) {
  Loop loop;
  EventFd event;
  int unwound = 0;
  bool started = false;
  auto handle = loop.spawn(
      [&] {
        started = true;
        Unwound guard(&unwound);
        auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, event.fd());
        PauseUntil([&] { return event.Consume(); });
        return 1;
      },
      SpawnOptions{.timeout = 20ms});
  loop.run_once();  // starts it (or times it out, on a very slow machine)
  event.Signal();
  std::this_thread::sleep_for(40ms);
  loop.run_once();
  EXPECT_EQ(handle.status(), JobStatus::kTimedOut);
  EXPECT_EQ(loop.size(), 0u);
  EXPECT_EQ(loop.counters().resumes, 0u) << "timed out, not resumed";
  EXPECT_EQ(unwound, started ? 1 : 0);
}

// A job that ended takes its timer with it: the next job in its slot (the
// loop reuses the most recently freed one) has no deadline.
TEST(LoopMisuse, AnEndedJobsTimerDoesNotFireOnTheNextJobInItsSlot) {
  Loop loop;
  auto first = loop.spawn([] { return 1; }, SpawnOptions{.timeout = 5ms});
  loop.run();
  bool first_timed_out = first.status() == JobStatus::kTimedOut;
  auto second = loop.spawn(WaitForever);
  loop.run_once();
  std::this_thread::sleep_for(10ms);
  loop.run_once();
  loop.run_once();
  EXPECT_EQ(second.status(), JobStatus::kPaused);
  EXPECT_EQ(loop.counters().timed_out, first_timed_out ? 1u : 0u);
  EXPECT_TRUE(second.cancel());
}

// ----- The loop destroyed by the code it runs -----

// From a completion callback during run(): the job that finished keeps its
// result, the paused and queued ones are cancelled without their
// completions, and the loop's fds are closed once run() returns.
TEST(LoopMisuse, DestroyedFromItsOwnCompletionCallback) {
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  auto loop = std::make_unique<Loop>();
  int unwound = 0;
  int other_completions = 0;
  bool queued_ran = false;
  auto paused = loop->spawn(
      [&] {
        Unwound guard(&unwound);
        WaitForever();
      },
      [&](JobHandle<void>&) { ++other_completions; });
  loop->run_once();
  ASSERT_EQ(paused.status(), JobStatus::kPaused);
  auto finisher = loop->spawn([] { return 3; }, [&](JobHandle<int>&) { loop.reset(); });
  auto queued =
      loop->spawn([&] { queued_ran = true; }, [&](JobHandle<void>&) { ++other_completions; });
  Loop* raw = loop.get();
  raw->run();  // returns although the loop is gone
  EXPECT_EQ(loop, nullptr);
  EXPECT_EQ(finisher.get(), 3);
  EXPECT_EQ(paused.status(), JobStatus::kCancelled);
  EXPECT_EQ(unwound, 1);
  EXPECT_FALSE(queued_ran);
  EXPECT_EQ(queued.status(), JobStatus::kCancelled);
  EXPECT_EQ(other_completions, 0);
  EXPECT_FALSE(paused.cancel());
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

// The same from run_once(), with a completion that then throws: the
// exception still comes out, and the loop is freed.
TEST(LoopMisuse, DestroyedFromACompletionThatThenThrows) {
  auto loop = std::make_unique<Loop>();
  auto paused = loop->spawn(WaitForever);
  loop->spawn([] {},
              [&](JobHandle<void>&) {
                loop.reset();
                throw std::runtime_error("after the reset");
              });
  Loop* raw = loop.get();
  EXPECT_THROW(raw->run_once(), std::runtime_error);
  EXPECT_EQ(paused.status(), JobStatus::kCancelled);
}

// From a posted function: functions posted after it do not run.
TEST(LoopMisuse, DestroyedFromAPostedFunction) {
  auto loop = std::make_unique<Loop>();
  bool later_ran = false;
  auto paused = loop->spawn(WaitForever);
  loop->post([&] { loop.reset(); });
  loop->post([&] { later_ran = true; });
  Loop* raw = loop.get();
  raw->run_until_stopped();  // returns: the loop is gone
  EXPECT_FALSE(later_ran);
  EXPECT_EQ(paused.status(), JobStatus::kCancelled);
}

// From inside a job: the job goes on until it returns (its result kept) or
// pauses (then it is cancelled and unwinds); the other jobs are cancelled
// at once.
TEST(LoopMisuse, DestroyedFromInsideAJobThatThenReturns) {
  auto loop = std::make_unique<Loop>();
  int unwound = 0;
  auto other = loop->spawn([&] {
    Unwound guard(&unwound);
    WaitForever();
  });
  auto destroyer = loop->spawn([&] {
    asyncjob::pause();  // polled: resumed on the next iteration
    loop.reset();
    return 9;
  });
  Loop* raw = loop.get();
  raw->run();
  EXPECT_EQ(destroyer.get(), 9);
  EXPECT_EQ(other.status(), JobStatus::kCancelled);
  EXPECT_EQ(unwound, 1);
}

TEST(LoopMisuse, DestroyedFromInsideAJobThatThenPauses) {
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  auto loop = std::make_unique<Loop>();
  int unwound = 0;
  bool handle_cancel_after = true;
  JobHandle<int> destroyer;
  destroyer = loop->spawn([&] {
    Unwound guard(&unwound);
    // An fd owned by the job's wait context, closed by its cleanup routine.
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    asyncjob::current_wait_ctx().register_fd(&fd_key, fd, &loop_test::CloseFd).release();
    loop.reset();
    handle_cancel_after = destroyer.cancel();  // the loop is gone: false
    asyncjob::pause();
    return 1;
  });
  Loop* raw = loop.get();
  raw->run();
  EXPECT_FALSE(handle_cancel_after);
  EXPECT_EQ(destroyer.status(), JobStatus::kCancelled);
  EXPECT_EQ(unwound, 1);
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

// From a destructor that a cancellation runs on a job's stack: through
// cancel() called outside run(), and through a timeout inside run().
TEST(LoopMisuse, DestroyedByAnUnwindingJobCancelledByCancel) {
  auto loop = std::make_unique<Loop>();
  int unwound = 0;
  auto other = loop->spawn([&] {
    Unwound guard(&unwound);
    WaitForever();
  });
  auto victim = loop->spawn([&] {
    OnUnwind destroy([&] { loop.reset(); });
    WaitForever();
  });
  loop->run_once();
  ASSERT_EQ(victim.status(), JobStatus::kPaused);
  EXPECT_TRUE(victim.cancel());
  EXPECT_EQ(loop, nullptr);
  EXPECT_EQ(victim.status(), JobStatus::kCancelled);
  EXPECT_EQ(other.status(), JobStatus::kCancelled);
  EXPECT_EQ(unwound, 1);
}

TEST(LoopMisuse, DestroyedByAnUnwindingJobCancelledByCancelAll) {
  auto loop = std::make_unique<Loop>();
  for (int i = 0; i < 3; ++i) loop->spawn(WaitForever);
  auto victim = loop->spawn([&] {
    OnUnwind destroy([&] { loop.reset(); });
    WaitForever();
  });
  for (int i = 0; i < 3; ++i) loop->spawn(WaitForever);
  loop->run_once();
  Loop* raw = loop.get();
  raw->cancel_all();
  EXPECT_EQ(loop, nullptr);
  EXPECT_EQ(victim.status(), JobStatus::kCancelled);
}

TEST(LoopMisuse, DestroyedByAnUnwindingJobThatTimedOut) {
  auto loop = std::make_unique<Loop>();
  auto other = loop->spawn(WaitForever);
  bool started = false;
  auto victim = loop->spawn(
      [&] {
        started = true;
        OnUnwind destroy([&] { loop.reset(); });
        WaitForever();
      },
      SpawnOptions{.timeout = 100ms});
  Loop* raw = loop.get();
  while (loop != nullptr && !victim.done()) raw->run_once(5ms);
  if (!started) GTEST_SKIP() << "the machine took over 100 ms to start the job";
  EXPECT_EQ(loop, nullptr);
  EXPECT_EQ(victim.status(), JobStatus::kTimedOut);
  EXPECT_EQ(other.status(), JobStatus::kCancelled);
}

// From a completion callback that cancel() called outside run().
TEST(LoopMisuse, DestroyedFromACompletionRunByCancel) {
  auto loop = std::make_unique<Loop>();
  auto other = loop->spawn(WaitForever);
  auto victim = loop->spawn(WaitForever, [&](JobHandle<void>&) { loop.reset(); });
  loop->run_once();
  Loop* raw = loop.get();
  EXPECT_TRUE(raw->cancel(victim.id()));
  EXPECT_EQ(loop, nullptr);
  EXPECT_EQ(other.status(), JobStatus::kCancelled);
}

// A job cancelled by the loop's destruction may try to spawn or cancel
// from its destructors: spawn is refused with Error, cancel finds nothing.
TEST(LoopMisuse, SpawnFromAJobUnwoundByTheDestructionIsRefused) {
  int refused = 0;
  bool cancelled_other = true;
  {
    Loop loop;
    asyncjob::JobId first = loop.spawn(WaitForever).id();
    loop.spawn([&loop, &refused, &cancelled_other, first] {
      OnUnwind action([&] {
        try {
          loop.spawn([] {});
        } catch (const asyncjob::Error&) {
          ++refused;
        }
        cancelled_other = loop.cancel(first);
      });
      WaitForever();
    });
    loop.run_once();
  }
  EXPECT_EQ(refused, 1);
  EXPECT_FALSE(cancelled_other);
}

// ----- Re-entrant calls -----

TEST(LoopMisuse, RunFromItsOwnCallbacksIsRefused) {
  Loop loop;
  int refused = 0;
  auto count_refusal = [&](auto&& call) {
    try {
      call();
    } catch (const asyncjob::Error&) {
      ++refused;
    }
  };
  loop.spawn([] {},
             [&](JobHandle<void>&) {
               count_refusal([&] { loop.run(); });
               count_refusal([&] { loop.run_once(); });
               count_refusal([&] { loop.run_until_stopped(); });
             });
  loop.post([&] { count_refusal([&] { loop.run(); }); });
  // From a destructor that a cancellation runs: inside the job.
  auto victim = loop.spawn([&] {
    OnUnwind action([&] { count_refusal([&] { loop.run_once(); }); });
    WaitForever();
  });
  loop.run_once();
  EXPECT_TRUE(victim.cancel());
  EXPECT_EQ(refused, 5);
  EXPECT_EQ(loop.size(), 0u);
}

// stop() from inside a job and from a completion: run() returns after the
// iteration, jobs stay as they are, and running the loop again goes on.
TEST(LoopMisuse, StopFromInsideAJobAndACompletion) {
  Loop loop;
  asyncjob::Waker waker;
  auto job = loop.spawn([&] {
    loop.stop();
    waker = asyncjob::prepare_wakeup();
    asyncjob::pause();
    return 1;
  });
  loop.run();  // would wait for the waker without the stop
  EXPECT_EQ(job.status(), JobStatus::kPaused);
  waker();
  loop.run();
  EXPECT_EQ(job.get(), 1);
  auto waiting = loop.spawn(WaitForever);
  auto second = loop.spawn([] { return 2; }, [&](JobHandle<int>&) { loop.stop(); });
  loop.run();
  EXPECT_EQ(second.get(), 2);
  EXPECT_EQ(waiting.status(), JobStatus::kPaused);
  EXPECT_TRUE(waiting.cancel());
}

// ----- Callables -----

int ReturnsSeven() { return 7; }

TEST(LoopMisuse, NullOrEmptyCallablesAreRefused) {
  Loop loop;
  int (*null_function)() = nullptr;
  std::function<int()> empty;
  std::function<void(JobHandle<int>&)> empty_done;
  EXPECT_THROW(loop.spawn(null_function), asyncjob::Error);
  EXPECT_THROW(loop.spawn(empty), asyncjob::Error);
  EXPECT_THROW(loop.spawn(ReturnsSeven, empty_done), asyncjob::Error);
  void (*null_done)(JobHandle<int>&) = nullptr;
  EXPECT_THROW(loop.spawn(ReturnsSeven, null_done), asyncjob::Error);
  EXPECT_EQ(loop.size(), 0u);
  EXPECT_EQ(loop.counters().spawned, 0u);
  // The same kinds, not empty, are fine.
  auto a = loop.spawn(ReturnsSeven);
  auto b = loop.spawn(std::function<int()>(ReturnsSeven));
  loop.run();
  EXPECT_EQ(a.get(), 7);
  EXPECT_EQ(b.get(), 7);
}

// ----- Threads -----

// With no job started, the loop may be destroyed on another thread: queued
// jobs are cancelled (never run, no completions), fds closed, and the loop
// thread's pool is left as it was.
TEST(LoopMisuse, DestroyedOnAnotherThreadWithOnlyQueuedJobs) {
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  auto loop = std::make_unique<Loop>();
  bool ran = false;
  bool completed = false;
  std::vector<JobHandle<int>> handles;
  for (int i = 0; i < 3; ++i) {
    handles.push_back(loop->spawn(
        [&] {
          ran = true;
          return 1;
        },
        [&](JobHandle<int>&) { completed = true; }));
  }
  std::thread([&] { loop.reset(); }).join();
  for (auto& handle : handles) EXPECT_EQ(handle.status(), JobStatus::kCancelled);
  EXPECT_FALSE(ran);
  EXPECT_FALSE(completed);
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

// A loop whose jobs all finished (or were cancelled on its thread) may go
// to another thread to be destroyed; the loop thread's pool is free, so
// ASYNC_init_thread works there afterwards.
TEST(LoopMisuse, DestroyedOnAnotherThreadAfterCancelAll) {
  auto loop = std::make_unique<Loop>();
  auto done = loop->spawn([] { return 1; });
  auto paused = loop->spawn(WaitForever);
  loop->run_once();
  loop->run_once();
  ASSERT_EQ(paused.status(), JobStatus::kPaused);
  loop->cancel_all();
  std::thread([&] { loop.reset(); }).join();
  EXPECT_EQ(done.get(), 1);
  EXPECT_EQ(paused.status(), JobStatus::kCancelled);
  EXPECT_EQ(ASYNC_init_thread(4, 0), 1) << "no job of this thread's pool is left in use";
  ASYNC_cleanup_thread();
}

using LoopMisuseDeathTest = ::testing::Test;

// A started job can only be cancelled on the loop's thread: destroying the
// loop elsewhere would leak it (its stack, fds and a place in that thread's
// pool). It aborts with a message instead, while the loop thread lives on.
TEST(LoopMisuseDeathTest, DestroyedOnAnotherThreadWithAPausedJobAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto loop = std::make_unique<Loop>();
        loop->spawn(WaitForever);
        loop->run_once();
        std::thread([&] { loop.reset(); }).join();
      },
      "asyncjob::Loop destroyed on thread [0-9]+ but 1 of its jobs are paused on thread "
      "[0-9]+, the only thread that can cancel them");
}

TEST(LoopMisuseDeathTest, DestroyedOnAnotherThreadWhileItRunsAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto loop = std::make_unique<Loop>();
        loop->post([&] { std::thread([&] { loop.reset(); }).join(); });
        loop->run();
      },
      "asyncjob::Loop destroyed on thread [0-9]+ while its own thread [0-9]+ is running it");
}

}  // namespace
