// asyncjob::Loop: jobs woken by fds and callbacks from other threads,
// early and stale wake-ups, EAGAIN and polling, timeouts, stop, counters,
// fd hygiene, exceptions, cancellation and the loop's thread rules.
#include <fcntl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"
#include "loop/loop_test_support.h"
#include "support/test_support.h"

namespace {

using namespace std::chrono_literals;
using asyncjob::JobStatus;
using asyncjob::Loop;
using loop_test::EventFd;
using loop_test::Later;
using loop_test::PauseUntil;

const int fd_key = 0;
const int second_key = 0;

// Sets the RAII flag when the job's stack unwinds.
struct Guard {
  explicit Guard(std::atomic<int>* counter) : counter_(counter) {}
  ~Guard() { counter_->fetch_add(1); }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  std::atomic<int>* counter_;
};

TEST(Loop, RunsAJobThatNeverPauses) {
  Loop loop;
  auto handle = loop.spawn([] { return 41 + 1; });
  EXPECT_EQ(handle.status(), JobStatus::kQueued);
  EXPECT_EQ(loop.size(), 1u);
  EXPECT_EQ(loop.run(), 1u);
  EXPECT_EQ(handle.status(), JobStatus::kSucceeded);
  EXPECT_EQ(handle.get(), 42);
  EXPECT_EQ(loop.size(), 0u);
  EXPECT_EQ(loop.run(), 0u) << "nothing left: returns at once";
}

TEST(Loop, JobIdsAreDistinct) {
  Loop loop;
  auto a = loop.spawn([] {});
  auto b = loop.spawn([] {});
  EXPECT_NE(a.id(), asyncjob::JobId::kNone);
  EXPECT_NE(a.id(), b.id());
  loop.run();
  auto c = loop.spawn([] {});  // reuses a record, not an id
  EXPECT_NE(c.id(), a.id());
  EXPECT_NE(c.id(), b.id());
  loop.run();
}

TEST(Loop, EventfdWrittenByAnotherThreadWakesTheJob) {
  Loop loop;
  EventFd event;
  std::atomic<bool> written{false};
  auto handle = loop.spawn([&] {
    auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, event.fd());
    PauseUntil([&] { return event.Consume(); });
    return written.load() ? 7 : -1;
  });
  loop.run_once();  // started and paused
  EXPECT_EQ(handle.status(), JobStatus::kPaused);
  Later writer(20ms, [&] {
    written = true;
    event.Signal();
  });
  loop.run();
  EXPECT_EQ(handle.get(), 7);
  EXPECT_GE(loop.counters().wakeups_fd, 1u);
  EXPECT_EQ(loop.counters().wakeups_callback, 0u);
}

TEST(Loop, PipeWrittenByAnotherThreadWakesTheJob) {
  Loop loop;
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  auto handle = loop.spawn([&] {
    auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, fds[0]);
    char buffer[16] = {};
    ssize_t got = -1;
    PauseUntil([&] { return (got = read(fds[0], buffer, sizeof buffer)) > 0; });
    return std::string(buffer, static_cast<std::size_t>(got));
  });
  Later writer(20ms, [&] { EXPECT_EQ(write(fds[1], "hello", 5), 5); });
  loop.run();
  EXPECT_EQ(handle.get(), "hello");
  close(fds[0]);
  close(fds[1]);
}

TEST(Loop, CallbackFromAnotherThreadWakesTheJob) {
  Loop loop;
  int result_from_worker = 0;  // written by the worker, read by the job
  std::unique_ptr<Later> worker;
  auto handle = loop.spawn([&] {
    asyncjob::Waker wake = asyncjob::prepare_wakeup();
    worker = std::make_unique<Later>(20ms, [&result_from_worker, wake] {
      result_from_worker = 99;
      wake();
    });
    asyncjob::pause();          // status OK: resumed by the callback only
    return result_from_worker;  // the worker's write is visible
  });
  loop.run();
  EXPECT_EQ(handle.get(), 99);
  asyncjob::LoopCounters stats = loop.counters();
  EXPECT_EQ(stats.wakeups_callback, 1u);
  EXPECT_EQ(stats.wakeups_fd, 0u);
  EXPECT_EQ(stats.poll_resumes, 0u) << "status OK: the loop waited instead of polling";
  EXPECT_EQ(stats.resumes, 1u);
}

// The engine convention, with the C API only: take the callback from the
// wait context, set ASYNC_STATUS_OK, pause; the "hardware" calls back.
TEST(Loop, EngineStyleCallbackWithTheCApi) {
  Loop loop;
  std::atomic<bool> completed{false};
  std::unique_ptr<Later> device;
  auto handle = loop.spawn([&] {
    ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    ASYNC_callback_fn callback = nullptr;
    void* argument = nullptr;
    if (ASYNC_WAIT_CTX_get_callback(ctx, &callback, &argument) != 1) return -1;
    ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_OK);
    device = std::make_unique<Later>(10ms, [&completed, callback, argument] {
      completed = true;
      callback(argument);
    });
    ASYNC_pause_job();
    return completed.load() ? 1 : 0;
  });
  loop.run();
  EXPECT_EQ(handle.get(), 1) << "resumed only after the completion";
  EXPECT_EQ(loop.counters().resumes, 1u);
}

// The worker completes and calls back while the job is still running on
// the loop thread: the wake-up must not be lost.
TEST(Loop, CallbackBeforeThePauseFromAnotherThreadIsKept) {
  Loop loop;
  std::atomic<bool> called{false};
  std::thread worker;
  auto handle = loop.spawn([&] {
    asyncjob::Waker wake = asyncjob::prepare_wakeup();
    worker = std::thread([&called, wake] {
      wake();
      called = true;
    });
    while (!called.load()) std::this_thread::yield();  // the callback has returned
    asyncjob::pause();
    return 5;
  });
  loop.run();
  worker.join();
  EXPECT_EQ(handle.get(), 5);
  EXPECT_EQ(loop.counters().resumes, 1u);
  EXPECT_EQ(loop.counters().wakeups_callback, 1u);
}

TEST(Loop, CallbackBeforeThePauseOnTheLoopThreadIsKept) {
  Loop loop;
  auto handle = loop.spawn([] {
    asyncjob::prepare_wakeup()();  // completes synchronously, then pauses
    asyncjob::pause();
    return 6;
  });
  loop.run();
  EXPECT_EQ(handle.get(), 6);
  EXPECT_EQ(loop.counters().resumes, 1u);
}

TEST(Loop, StaleCallbackForAFinishedJobIsIgnored) {
  Loop loop;
  asyncjob::Waker old_waker;
  auto first = loop.spawn([&] { old_waker = asyncjob::prepare_wakeup(); });
  loop.run();
  ASSERT_EQ(first.status(), JobStatus::kSucceeded);
  ASSERT_TRUE(old_waker);

  // The next job reuses the record; it waits for its own callback.
  asyncjob::Waker new_waker;
  int resumes_seen = 0;
  auto second = loop.spawn([&] {
    new_waker = asyncjob::prepare_wakeup();
    asyncjob::pause();
    ++resumes_seen;
  });
  loop.run_once();
  ASSERT_EQ(second.status(), JobStatus::kPaused);
  old_waker();
  loop.run_once(50ms);
  EXPECT_EQ(second.status(), JobStatus::kPaused) << "the stale wake-up resumed another job";
  EXPECT_EQ(resumes_seen, 0);
  EXPECT_EQ(loop.counters().wakeups_stale, 1u);
  new_waker();
  loop.run();
  EXPECT_EQ(second.status(), JobStatus::kSucceeded);
  EXPECT_EQ(resumes_seen, 1);
}

TEST(Loop, StaleCallbackForACancelledJobIsIgnored) {
  Loop loop;
  asyncjob::Waker waker;
  auto handle = loop.spawn([&] {
    waker = asyncjob::prepare_wakeup();
    asyncjob::pause();
  });
  loop.run_once();
  EXPECT_TRUE(handle.cancel());
  EXPECT_EQ(handle.status(), JobStatus::kCancelled);
  std::thread late([waker] { waker(); });  // the device finishes afterwards
  late.join();
  loop.run_once();
  EXPECT_EQ(loop.counters().wakeups_stale, 1u);
  EXPECT_EQ(loop.counters().resumes, 0u);
}

TEST(Loop, SeveralCallbacksBeforeTheLoopLooksAreOneResume) {
  Loop loop;
  asyncjob::Waker waker;
  int resumes_seen = 0;
  auto handle = loop.spawn([&] {
    waker = asyncjob::prepare_wakeup();
    asyncjob::pause();
    ++resumes_seen;
  });
  loop.run_once();
  std::thread a([waker] { waker(); });
  std::thread b([waker] { waker(); });
  a.join();
  b.join();
  waker();
  loop.run();
  EXPECT_EQ(resumes_seen, 1);
  asyncjob::LoopCounters stats = loop.counters();
  EXPECT_EQ(stats.wakeups_callback, 3u);
  EXPECT_EQ(stats.wakeups_coalesced, 2u);
  EXPECT_EQ(stats.eventfd_signals, 1u) << "one eventfd write for the batch";
  EXPECT_EQ(stats.resumes, 1u);
}

TEST(Loop, AWakeUpWhileTheLoopIsRunningAJobCostsNoEventfdWrite) {
  Loop loop;
  asyncjob::Waker waker;
  bool woken = false;
  loop.spawn([&] {
    waker = asyncjob::prepare_wakeup();
    asyncjob::pause();
    woken = true;
  });
  loop.run_once();  // the first job pauses
  // A second job, run by the loop, has another thread wake the first: the
  // loop is awake and drains the queue before it blocks.
  loop.spawn([&] {
    std::thread device([waker] { waker(); });
    device.join();
  });
  loop.run();
  EXPECT_TRUE(woken);
  asyncjob::LoopCounters stats = loop.counters();
  EXPECT_EQ(stats.wakeups_callback, 1u);
  EXPECT_EQ(stats.eventfd_signals, 0u);
  EXPECT_EQ(stats.resumes, 1u);
}

TEST(Loop, AWakeUpWhileTheLoopBlocksRingsAndWakesIt) {
  Loop loop;
  asyncjob::Waker waker;
  bool woken = false;
  loop.spawn([&] {
    waker = asyncjob::prepare_wakeup();
    asyncjob::pause();
    woken = true;
  });
  loop.run_once(0ms);
  std::thread device([waker] {
    std::this_thread::sleep_for(20ms);  // the loop blocks meanwhile
    waker();
  });
  loop.run();
  device.join();
  EXPECT_TRUE(woken);
  EXPECT_EQ(loop.counters().eventfd_signals, 1u);
}

TEST(Loop, EagainStatusResumesOnTheNextIteration) {
  Loop loop;
  std::vector<int> statuses_after_resume;
  auto handle = loop.spawn([&] {
    asyncjob::WaitCtxRef ctx = asyncjob::current_wait_ctx();
    for (int i = 0; i < 3; ++i) {
      ctx.set_status(ASYNC_STATUS_EAGAIN);  // "ring full, retry soon"
      asyncjob::pause();
      statuses_after_resume.push_back(ctx.status());
    }
    return 3;
  });
  loop.run();
  EXPECT_EQ(handle.get(), 3);
  EXPECT_EQ(statuses_after_resume, std::vector<int>(3, ASYNC_STATUS_UNSUPPORTED))
      << "the loop consumed each EAGAIN";
  EXPECT_EQ(loop.counters().eagain_resumes, 3u);
  EXPECT_EQ(loop.counters().resumes, 3u);
}

// Full ring: the engine sets EAGAIN *and* wakes itself before pausing.
TEST(Loop, EagainWithASelfWakeIsOneResume) {
  Loop loop;
  auto handle = loop.spawn([] {
    asyncjob::Waker wake = asyncjob::prepare_wakeup();
    asyncjob::current_wait_ctx().set_status(ASYNC_STATUS_EAGAIN);
    wake();
    asyncjob::pause();
    return 1;
  });
  loop.run();
  EXPECT_EQ(handle.get(), 1);
  EXPECT_EQ(loop.counters().resumes, 1u);
}

TEST(Loop, AJobWithNothingToWaitOnIsPolled) {
  Loop loop;
  int rounds = 0;
  auto handle = loop.spawn([&] {
    while (++rounds < 4) asyncjob::pause();
    return rounds;
  });
  loop.run();
  EXPECT_EQ(handle.get(), 4);
  EXPECT_EQ(loop.counters().poll_resumes, 3u);
}

TEST(Loop, TimeoutCancelsThePausedJob) {
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  std::atomic<int> unwound{0};
  std::atomic<int> hooks{0};
  bool completion_saw_timeout = false;
  {
    Loop loop;
    auto handle = loop.spawn(
        [&] {
          Guard guard(&unwound);
          asyncjob::OnCancel hook([&] { ++hooks; });
          // An engine-owned fd, closed by its cleanup routine.
          int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
          asyncjob::current_wait_ctx().register_fd(&fd_key, fd, &loop_test::CloseFd).release();
          for (;;) asyncjob::pause();  // nobody ever wakes it
          return 0;
        },
        [&](asyncjob::JobHandle<int>& done) {
          completion_saw_timeout = done.status() == JobStatus::kTimedOut;
        },
        asyncjob::SpawnOptions{.timeout = 50ms});
    loop.run();
    EXPECT_EQ(handle.status(), JobStatus::kTimedOut);
    EXPECT_THROW(handle.get(), asyncjob::JobTimedOut);
    EXPECT_EQ(unwound.load(), 1) << "destructors on the job's stack ran";
    EXPECT_EQ(hooks.load(), 1) << "cancel hooks ran";
    EXPECT_TRUE(completion_saw_timeout);
    EXPECT_EQ(loop.counters().timed_out, 1u);
    EXPECT_EQ(loop.counters().cancelled, 0u);
  }
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before) << "the fd's cleanup routine ran";
}

TEST(Loop, TimeoutDoesNotTouchAJobThatFinishesInTime) {
  Loop loop;
  EventFd event;
  auto handle = loop.spawn(
      [&] {
        auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, event.fd());
        PauseUntil([&] { return event.Consume(); });
        return 8;
      },
      asyncjob::SpawnOptions{.timeout = 60s});
  Later writer(10ms, [&] { event.Signal(); });
  loop.run();
  EXPECT_EQ(handle.get(), 8);
  EXPECT_EQ(loop.counters().timed_out, 0u);
}

TEST(Loop, TimeoutsExpireInDeadlineOrder) {
  Loop loop;
  std::vector<int> order;
  for (int i : {3, 1, 2}) {
    loop.spawn(
        [] {
          asyncjob::prepare_wakeup();  // waits for a callback nobody calls
          asyncjob::pause();
        },
        [&order, i](asyncjob::JobHandle<void>&) { order.push_back(i); },
        // Each deadline counts from its job's first run; the spacing leaves
        // room for a loaded machine (or a sanitizer) to take a while between
        // the three starts.
        asyncjob::SpawnOptions{.timeout = i * 150ms});
  }
  loop.run();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(loop.counters().timed_out, 3u);
}

TEST(Loop, StopFromAnotherThread) {
  Loop loop;
  auto handle = loop.spawn([] {
    asyncjob::prepare_wakeup();  // nobody will call it
    asyncjob::pause();
    return 1;
  });
  Later stopper(30ms, [&] { loop.stop(); });
  loop.run();  // returns because of stop(), with the job still paused
  stopper.Join();
  EXPECT_EQ(handle.status(), JobStatus::kPaused);
  EXPECT_EQ(loop.size(), 1u);
  EXPECT_TRUE(handle.cancel());
  EXPECT_THROW(handle.get(), asyncjob::JobWasCancelled);
}

TEST(Loop, StopBeforeRunMakesItReturnAtOnce) {
  Loop loop;
  auto handle = loop.spawn([] { return 1; });
  loop.stop();
  EXPECT_EQ(loop.run(), 0u);
  EXPECT_EQ(handle.status(), JobStatus::kQueued);
  EXPECT_EQ(loop.run(), 1u) << "the stop was consumed";
}

TEST(Loop, RunUntilStoppedServesPostsFromOtherThreads) {
  Loop loop;
  std::thread::id loop_thread = std::this_thread::get_id();
  std::atomic<int> results{0};
  std::thread client([&] {
    for (int i = 0; i < 10; ++i) {
      loop.post([&, i] {
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        loop.spawn([i] { return i; },
                   [&](asyncjob::JobHandle<int>& done) {
                     results += done.get();
                     if (results.load() == 45) loop.stop();
                   });
      });
    }
  });
  loop.run_until_stopped();
  client.join();
  EXPECT_EQ(results.load(), 45);
}

// A server's pattern: another thread calls stop() (or posts a function that
// ends the run) and the loop's thread destroys the loop as soon as run()
// returns, while that other thread may still be inside stop() or post().
// Neither may touch the loop (or its doorbell fd, whose number the process
// may already have reused) once the loop could see the request. Under TSan
// or ASan a late access is reported; without them a write to a reused fd
// shows as an unexpected count on the canary eventfd.
TEST(Loop, DestroyedAsSoonAsAStopOrPostFromAnotherThreadEndsItsRun) {
  constexpr int kRounds = 200;
  for (int round = 0; round < kRounds; ++round) {
    const bool by_post = round % 2 == 1;
    auto loop = std::make_unique<Loop>();
    Loop* raw = loop.get();
    std::thread requester([raw, by_post] {
      if (by_post) {
        raw->post([raw] { raw->stop(); });
      } else {
        raw->stop();
      }
    });
    loop->run_until_stopped();
    loop.reset();
    // The loop's fds (its epoll fd and doorbell) are the lowest free numbers
    // now: the next fds opened take them.
    EventFd canaries[3];
    requester.join();
    for (const EventFd& canary : canaries) {
      EXPECT_FALSE(canary.Consume()) << "round " << round << ": a late doorbell ring reached "
                                     << "an fd opened after the loop was destroyed";
    }
  }
}

TEST(Loop, CountersAddUp) {
  Loop loop;
  EventFd event;
  asyncjob::Waker waker;
  loop.spawn([&] {  // fd
    auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, event.fd());
    PauseUntil([&] { return event.Consume(); });
  });
  loop.spawn([&] {  // callback
    waker = asyncjob::prepare_wakeup();
    asyncjob::pause();
  });
  loop.spawn([] {  // EAGAIN once
    asyncjob::current_wait_ctx().set_status(ASYNC_STATUS_EAGAIN);
    asyncjob::pause();
  });
  loop.spawn([] { asyncjob::pause(); });  // polled once
  loop.spawn([] { throw std::runtime_error("failed"); });
  auto cancelled = loop.spawn([] {
    asyncjob::prepare_wakeup();
    asyncjob::pause();
  });
  loop.spawn(
      [] {
        asyncjob::prepare_wakeup();
        asyncjob::pause();
      },
      // Long enough to outlast the first iteration even under valgrind.
      asyncjob::SpawnOptions{.timeout = 1500ms});

  asyncjob::LoopCounters stats = loop.counters();
  EXPECT_EQ(stats.queued, 7u);
  EXPECT_EQ(stats.spawned, 7u);
  // Starts them all; the EAGAIN and polled ones are resumed at the end of
  // the iteration and finish.
  loop.run_once();
  stats = loop.counters();
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.succeeded, 2u);
  EXPECT_EQ(stats.paused, 4u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_TRUE(cancelled.cancel());
  event.Signal();
  waker();
  loop.run();
  stats = loop.counters();
  EXPECT_EQ(stats.spawned, 7u);
  EXPECT_EQ(stats.succeeded, 4u);
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.cancelled, 1u);
  EXPECT_EQ(stats.timed_out, 1u);
  EXPECT_EQ(stats.queued + stats.paused + stats.running, 0u);
  EXPECT_EQ(stats.wakeups_fd, 1u);
  EXPECT_EQ(stats.wakeups_callback, 1u);
  EXPECT_EQ(stats.wakeups_stale, 0u);
  EXPECT_EQ(stats.eventfd_signals, 1u);
  EXPECT_EQ(stats.eagain_resumes, 1u);
  EXPECT_EQ(stats.poll_resumes, 1u);
  EXPECT_EQ(stats.resumes, 4u);
  EXPECT_GE(stats.iterations, 2u);
}

TEST(Loop, LeavesNoFdBehind) {
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  {
    Loop loop;
    std::vector<int> writers;
    // Jobs owning eventfds (closed by cleanup routines): some finish after a
    // wake-up, some are cancelled, some time out, some are still paused when
    // the loop is destroyed.
    std::vector<int> job_fds(40, -1);
    std::vector<asyncjob::JobHandle<int>> handles;
    for (int i = 0; i < 40; ++i) {
      asyncjob::SpawnOptions options;
      if (i % 4 == 2) options.timeout = 5ms;
      handles.push_back(loop.spawn(
          [&job_fds, i] {
            int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            job_fds[i] = fd;
            asyncjob::current_wait_ctx().register_fd(&fd_key, fd, &loop_test::CloseFd).release();
            std::uint64_t value = 0;
            PauseUntil([&] { return read(fd, &value, sizeof value) > 0; });
            return i;
          },
          options));
    }
    loop.run_once();
    for (int i = 0; i < 40; i += 4) {
      std::uint64_t one = 1;
      ASSERT_EQ(write(job_fds[i], &one, sizeof one), 8);
    }
    for (int i = 1; i < 40; i += 4) handles[i].cancel();
    while (loop.counters().succeeded + loop.counters().timed_out < 20) loop.run_once(10ms);
    EXPECT_EQ(loop.counters().succeeded, 10u);
    EXPECT_EQ(loop.counters().cancelled, 10u);
    EXPECT_EQ(loop.counters().timed_out, 10u);
    EXPECT_EQ(loop.size(), 10u);
  }
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

// The C++ way to own an fd in a job: an RAII owner plus an FdRegistration
// declared after it. Cancellation unwinds both: cleared, then closed.
TEST(Loop, RaiiOwnedFdsAreClosedWhenJobsTimeOut) {
  struct OwnedFd {
    int fd;
    ~OwnedFd() { close(fd); }
  };
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  {
    Loop loop;
    for (int i = 0; i < 10; ++i) {
      loop.spawn(
          [] {
            OwnedFd owned{eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
            auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, owned.fd);
            for (;;) asyncjob::pause();
          },
          asyncjob::SpawnOptions{.timeout = 5ms});
    }
    loop.run();
    EXPECT_EQ(loop.counters().timed_out, 10u);
  }
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

TEST(Loop, AJobMayReplaceItsFdWithOneOfTheSameNumber) {
  Loop loop;
  auto handle = loop.spawn([] {
    asyncjob::WaitCtxRef ctx = asyncjob::current_wait_ctx();
    int previous = -1;
    int same_number = 0;
    for (int step = 0; step < 5; ++step) {
      int timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
      if (timer == previous) ++same_number;
      previous = timer;
      itimerspec when{};
      when.it_value.tv_nsec = 2'000'000;
      timerfd_settime(timer, 0, &when, nullptr);
      auto registration = ctx.register_fd(&fd_key, timer);
      std::uint64_t expirations = 0;
      PauseUntil([&] { return read(timer, &expirations, sizeof expirations) > 0; });
      registration.clear();
      close(timer);
    }
    return same_number;
  });
  loop.run();
  EXPECT_GT(handle.get(), 0) << "the scenario did reuse fd numbers";
  EXPECT_EQ(loop.counters().poll_resumes, 0u);
}

TEST(Loop, OneFdSharedByTwoJobsWakesBoth) {
  Loop loop;
  EventFd event;
  std::atomic<bool> signalled{false};
  auto job = [&] {
    auto registration = asyncjob::current_wait_ctx().register_fd(&fd_key, event.fd());
    PauseUntil([&] { return signalled.load(); });
    return 1;
  };
  auto a = loop.spawn(job);
  auto b = loop.spawn(job);
  loop.run_once();
  signalled = true;
  event.Signal();
  loop.run();
  EXPECT_EQ(a.get() + b.get(), 2);
}

TEST(Loop, AJobWaitingOnTwoFdsWakesOnEither) {
  Loop loop;
  EventFd first;
  EventFd second;
  auto handle = loop.spawn([&] {
    asyncjob::WaitCtxRef ctx = asyncjob::current_wait_ctx();
    auto one = ctx.register_fd(&fd_key, first.fd());
    auto two = ctx.register_fd(&second_key, second.fd());
    PauseUntil([&] { return second.Consume(); });
    return 2;
  });
  Later writer(10ms, [&] { second.Signal(); });
  loop.run();
  EXPECT_EQ(handle.get(), 2);
}

TEST(Loop, ExceptionsThrownInJobsReachTheResult) {
  Loop loop;
  std::string seen_by_completion;
  auto handle = loop.spawn(
      []() -> int {
        asyncjob::pause();
        throw std::runtime_error("request failed");
      },
      [&](asyncjob::JobHandle<int>& done) {
        try {
          done.get();
        } catch (const std::runtime_error& error) {
          seen_by_completion = error.what();
        }
      });
  loop.run();
  EXPECT_EQ(handle.status(), JobStatus::kFailed);
  EXPECT_TRUE(handle.exception() != nullptr);
  EXPECT_EQ(seen_by_completion, "request failed");
  try {
    handle.get();
    FAIL() << "get() did not throw";
  } catch (const std::runtime_error& error) {
    EXPECT_STREQ(error.what(), "request failed");
  }
  EXPECT_EQ(loop.counters().failed, 1u);
}

TEST(Loop, AThrowingCompletionLeavesTheLoopUsable) {
  Loop loop;
  std::vector<asyncjob::JobHandle<int>> handles;
  for (int i = 0; i < 3; ++i) {
    handles.push_back(loop.spawn(
        [i] {
          asyncjob::pause();  // polled once
          return i;
        },
        [i](asyncjob::JobHandle<int>&) {
          if (i == 0) throw std::runtime_error("completion failed");
        }));
  }
  handles.push_back(loop.spawn(
      [] { return 3; },
      [](asyncjob::JobHandle<int>&) { throw std::logic_error("completion at start failed"); }));
  handles.push_back(loop.spawn([] { return 4; }));
  EXPECT_THROW(loop.run(), std::logic_error);    // the job that finished when started
  EXPECT_THROW(loop.run(), std::runtime_error);  // the first job resumed
  EXPECT_EQ(loop.run(), 2u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(handles[static_cast<std::size_t>(i)].get(), i);
  EXPECT_EQ(loop.counters().resumes, 3u);
}

TEST(Loop, ExceptionCaughtInsideTheJobDoesNotFailIt) {
  Loop loop;
  auto handle = loop.spawn([] {
    try {
      asyncjob::pause();
      throw std::logic_error("inner");
    } catch (const std::logic_error&) {
      asyncjob::pause();  // paused inside a catch block
      return 3;
    }
  });
  loop.run();
  EXPECT_EQ(handle.get(), 3);
}

TEST(Loop, GetBeforeTheEndThrows) {
  Loop loop;
  auto handle = loop.spawn([] { return 1; });
  EXPECT_THROW(handle.get(), asyncjob::Error);
  loop.run();
  EXPECT_EQ(handle.get(), 1);
  asyncjob::JobHandle<int> empty;
  EXPECT_FALSE(empty);
  EXPECT_THROW(empty.get(), asyncjob::Error);
}

TEST(Loop, MoveOnlyResults) {
  Loop loop;
  auto handle = loop.spawn([] {
    asyncjob::pause();
    return std::make_unique<int>(11);
  });
  loop.run();
  std::unique_ptr<int> value = handle.get();
  ASSERT_TRUE(value);
  EXPECT_EQ(*value, 11);
}

TEST(Loop, CancellingAQueuedJobMeansItNeverRuns) {
  Loop loop;
  bool ran = false;
  bool completed = false;
  auto handle = loop.spawn(
      [&] { ran = true; },
      [&](asyncjob::JobHandle<void>& done) { completed = done.status() == JobStatus::kCancelled; });
  EXPECT_TRUE(loop.cancel(handle.id()));
  EXPECT_FALSE(loop.cancel(handle.id())) << "already finished";
  loop.run();
  EXPECT_FALSE(ran);
  EXPECT_TRUE(completed);
  EXPECT_THROW(handle.get(), asyncjob::JobWasCancelled);
}

TEST(Loop, CancellingAPausedJobUnwindsItsStack) {
  Loop loop;
  std::atomic<int> unwound{0};
  auto handle = loop.spawn([&] {
    Guard guard(&unwound);
    asyncjob::prepare_wakeup();
    asyncjob::pause();
    return 1;
  });
  loop.run_once();
  EXPECT_EQ(unwound.load(), 0);
  EXPECT_TRUE(handle.cancel());
  EXPECT_EQ(unwound.load(), 1);
  EXPECT_FALSE(handle.cancel());
  EXPECT_EQ(loop.size(), 0u);
}

TEST(Loop, AJobMayCancelAnother) {
  Loop loop;
  std::atomic<int> unwound{0};
  auto victim = loop.spawn([&] {
    Guard guard(&unwound);
    asyncjob::prepare_wakeup();
    asyncjob::pause();
  });
  loop.run_once();
  auto killer = loop.spawn([&] {
    asyncjob::JobHandle<void> copy = victim;
    return copy.cancel();  // unwinds the victim from inside this job
  });
  loop.run();
  EXPECT_TRUE(killer.get());
  EXPECT_EQ(unwound.load(), 1);
  EXPECT_EQ(victim.status(), JobStatus::kCancelled);
}

TEST(Loop, AJobCannotCancelItself) {
  Loop loop;
  asyncjob::JobHandle<bool> self;
  self = loop.spawn([&] { return self.cancel(); });
  loop.run();
  EXPECT_FALSE(self.get());
}

TEST(Loop, CancelAllRunsCompletions) {
  Loop loop;
  int completions = 0;
  for (int i = 0; i < 5; ++i) {
    loop.spawn(
        [] {
          asyncjob::prepare_wakeup();
          asyncjob::pause();
        },
        [&](asyncjob::JobHandle<void>& done) {
          if (done.status() == JobStatus::kCancelled) ++completions;
        });
  }
  loop.run_once();
  loop.spawn([] {}, [&](asyncjob::JobHandle<void>&) { ++completions; });  // still queued
  EXPECT_EQ(loop.cancel_all(), 6u);
  EXPECT_EQ(completions, 6);
  EXPECT_EQ(loop.size(), 0u);
}

TEST(Loop, DestructionCancelsJobsWithoutCallingCompletions) {
  std::atomic<int> unwound{0};
  bool completion_called = false;
  asyncjob::JobHandle<int> handle;
  {
    Loop loop;
    handle = loop.spawn(
        [&] {
          Guard guard(&unwound);
          asyncjob::prepare_wakeup();
          asyncjob::pause();
          return 1;
        },
        [&](asyncjob::JobHandle<int>&) { completion_called = true; });
    loop.run_once();
  }
  EXPECT_EQ(unwound.load(), 1);
  EXPECT_FALSE(completion_called);
  EXPECT_EQ(handle.status(), JobStatus::kCancelled);
  EXPECT_FALSE(handle.cancel()) << "the loop is gone";
}

TEST(Loop, CallbacksAfterTheLoopIsDestroyedDoNothing) {
  asyncjob::Waker waker;
  {
    Loop loop;
    loop.spawn([&] {
      waker = asyncjob::prepare_wakeup();
      asyncjob::pause();
    });
    loop.run_once();
  }
  // A device completing late, on another thread and on this one.
  std::thread late([waker] { EXPECT_EQ(waker(), 1); });
  late.join();
  EXPECT_EQ(waker(), 1);
  Loop next;  // may take the same registry slot
  auto handle = next.spawn([] {
    asyncjob::prepare_wakeup();
    asyncjob::pause();
  });
  next.run_once();
  waker();
  next.run_once(20ms);
  EXPECT_EQ(handle.status(), JobStatus::kPaused);
  EXPECT_EQ(next.counters().wakeups_callback, 0u);
}

TEST(Loop, SpawnFromJobsAndCompletions) {
  Loop loop;
  std::vector<int> results;
  loop.spawn(
      [&] {
        asyncjob::pause();
        loop.spawn([] { return 2; },
                   [&](asyncjob::JobHandle<int>& done) {
                     results.push_back(done.get());
                     loop.spawn(
                         [] { return 3; },
                         [&](asyncjob::JobHandle<int>& last) { results.push_back(last.get()); });
                   });
        return 1;
      },
      [&](asyncjob::JobHandle<int>& done) { results.push_back(done.get()); });
  loop.run();
  EXPECT_EQ(results, (std::vector<int>{1, 2, 3}));
}

TEST(Loop, ThreadRules) {
  Loop loop;
  std::thread other([&] {
    EXPECT_THROW(loop.spawn([] {}), asyncjob::Error);
    EXPECT_THROW(loop.run(), asyncjob::Error);
    EXPECT_THROW(loop.cancel(asyncjob::JobId{1}), asyncjob::Error);
  });
  other.join();
  bool nested_run_refused = false;
  loop.spawn([&] {
    try {
      loop.run();
    } catch (const asyncjob::Error&) {
      nested_run_refused = true;
    }
  });
  loop.run();
  EXPECT_TRUE(nested_run_refused);
}

TEST(Loop, PrepareWakeupOutsideAJobThrows) {
  EXPECT_THROW(asyncjob::prepare_wakeup(), asyncjob::Error);
  asyncjob::Waker empty;
  EXPECT_FALSE(empty);
  EXPECT_EQ(empty(), 0);
}

TEST(Loop, JobsWaitForRoomInALimitedPool) {
  ASSERT_EQ(ASYNC_init_thread(4, 0), 1);
  {
    Loop loop;
    std::vector<asyncjob::JobHandle<int>> handles;
    for (int i = 0; i < 20; ++i) {
      handles.push_back(loop.spawn([i] {
        asyncjob::pause();  // polled
        return i;
      }));
    }
    loop.run();
    for (int i = 0; i < 20; ++i) EXPECT_EQ(handles[i].get(), i);
  }
  ASYNC_cleanup_thread();
}

TEST(Loop, AnExhaustedPoolWithNothingToFinishFailsTheJob) {
  ASSERT_EQ(ASYNC_init_thread(1, 0), 1);
  ASYNC_JOB* outside = nullptr;
  int ret = 0;
  auto pause_once = [](void*) {
    ASYNC_pause_job();
    return 0;
  };
  ASSERT_EQ(ASYNC_start_job(&outside, nullptr, &ret, pause_once, nullptr, 0), ASYNC_PAUSE);
  {
    Loop loop;
    auto handle = loop.spawn([] { return 1; });
    loop.run();
    EXPECT_THROW(handle.get(), asyncjob::PoolExhausted);
  }
  ASSERT_EQ(ASYNC_start_job(&outside, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  ASYNC_cleanup_thread();
  asyncjob_clear_errors();
}

TEST(Loop, ToStringNamesEveryStatus) {
  EXPECT_STREQ(asyncjob::to_string(JobStatus::kTimedOut), "timed out");
  EXPECT_STREQ(asyncjob::to_string(JobStatus::kPaused), "paused");
  EXPECT_TRUE(asyncjob::is_done(JobStatus::kFailed));
  EXPECT_FALSE(asyncjob::is_done(JobStatus::kPaused));
}

}  // namespace
