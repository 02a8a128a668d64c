// The offload engine: inline runs, eventfd and callback notification, the
// EAGAIN path of a full queue, spurious resumes, polling without a wait
// context, and cancellation of queued and running requests.
#include "asyncjob/offload.hpp"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/introspect.h"
#include "support/gate.h"
#include "support/test_support.h"

namespace {

using asyncjob::offload::Engine;

using asyncjob_test::Gate;

bool WaitReadable(int fd, int timeout_ms = 10000) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1;
}

struct CallbackRecord {
  std::atomic<int> calls{0};
  static int Call(void* self) {
    static_cast<CallbackRecord*>(self)->calls.fetch_add(1);
    return 1;
  }
};

void WaitFor(const std::atomic<int>& counter, int at_least) {
  for (int i = 0; i < 10000 && counter.load() < at_least; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

class Offload : public ::testing::Test {
 protected:
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
};

}  // namespace

TEST_F(Offload, OutsideAJobTheTaskRunsInline) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  std::thread::id ran_on;
  engine.run([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(engine.counters().inline_runs, 1u);
  EXPECT_EQ(engine.counters().submitted, 0u);
}

TEST_F(Offload, WherePausingIsBlockedTheTaskRunsInline) {
  Engine engine;
  auto job = asyncjob::start([&] {
    asyncjob::PauseBlocker blocked;
    std::thread::id ran_on;
    engine.run([&] { ran_on = std::this_thread::get_id(); });
    return ran_on == std::this_thread::get_id();
  });
  ASSERT_TRUE(job.finished()) << "the job never paused";
  EXPECT_TRUE(job.get());
  EXPECT_EQ(engine.counters().inline_runs, 1u);
}

TEST_F(Offload, WithoutACallbackOneStableEventFdWakesTheJob) {
  size_t fds_before = asyncjob_test::CountOpenFds();
  {
    Engine engine({.workers = 2, .queue_capacity = 8});
    asyncjob::WaitCtx ctx;
    std::thread::id caller = std::this_thread::get_id();
    for (int round = 0; round < 3; ++round) {
      auto job = asyncjob::start(ctx, [&] {
        std::thread::id ran_on;
        engine.run([&] { ran_on = std::this_thread::get_id(); });
        return ran_on != caller;
      });
      ASSERT_TRUE(job.paused());
      std::vector<OSSL_ASYNC_FD> fds = ctx.fds();
      ASSERT_EQ(fds.size(), 1u) << "one eventfd per wait context";
      asyncjob::FdChanges changes = ctx.changes();
      EXPECT_EQ(changes.added.size(), round == 0 ? 1u : 0u) << "registered once, then stable";
      ASSERT_TRUE(WaitReadable(fds[0]));
      job.resume();
      ASSERT_TRUE(job.finished());
      EXPECT_TRUE(job.get()) << "the task ran on a worker thread";
      pollfd p{fds[0], POLLIN, 0};
      EXPECT_EQ(poll(&p, 1, 0), 0) << "drained after the resume";
    }
    EXPECT_EQ(engine.counters().submitted, 3u);
    EXPECT_EQ(engine.counters().completed, 3u);
    EXPECT_EQ(engine.counters().in_flight, 0u);
  }
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before) << "freeing the context closed the eventfd";
}

TEST_F(Offload, WithACallbackTheStatusIsOkAndTheCallbackFires) {
  Engine engine({.workers = 1, .queue_capacity = 8});
  asyncjob::WaitCtx ctx;
  CallbackRecord record;
  ctx.set_callback(&CallbackRecord::Call, &record);
  Gate gate;
  auto job = asyncjob::start(ctx, [&] {
    engine.run([&] { gate.Wait(); });
    return 5;
  });
  ASSERT_TRUE(job.paused());
  EXPECT_EQ(ctx.status(), ASYNC_STATUS_OK) << "set when the request was accepted";
  EXPECT_TRUE(ctx.fds().empty()) << "no fd in callback mode";
  EXPECT_EQ(record.calls.load(), 0);
  gate.Open();
  WaitFor(record.calls, 1);
  EXPECT_EQ(record.calls.load(), 1);
  job.resume();
  EXPECT_EQ(job.get(), 5);
}

asyncjob_stats_ex ProcessStats() {
  asyncjob_stats_ex stats{};
  stats.size = sizeof stats;
  EXPECT_EQ(asyncjob_get_stats_ex(&stats, ASYNCJOB_SCOPE_PROCESS), 1);
  return stats;
}

void WaitCompleted(const Engine& engine, std::uint64_t count) {
  for (int i = 0; i < 10000 && engine.counters().completed < count; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(engine.counters().completed, count);
}

TEST_F(Offload, WakeUpsAreCountedByHowTheEngineWokeTheJob) {
  Engine engine({.workers = 1, .queue_capacity = 8});
  std::uint64_t completed = 0;
  // One task offloaded from a job on ctx, completed, the job resumed.
  auto offload_one = [&](asyncjob::WaitCtx& ctx) {
    auto job = asyncjob::start(ctx, [&] {
      engine.run([] {});
      return 1;
    });
    ASSERT_TRUE(job.paused());
    WaitCompleted(engine, ++completed);
    job.resume();
    ASSERT_TRUE(job.finished());
  };
  const asyncjob_stats_ex before = ProcessStats();
  asyncjob::WaitCtx fd_ctx;  // no callback: the eventfd
  offload_one(fd_ctx);
  asyncjob_stats_ex after = ProcessStats();
  EXPECT_EQ(after.wakeups_by_fd - before.wakeups_by_fd, 1u);
  EXPECT_EQ(after.wakeups_by_callback - before.wakeups_by_callback, 0u);
  asyncjob::WaitCtx callback_ctx;
  CallbackRecord record;
  callback_ctx.set_callback(&CallbackRecord::Call, &record);
  offload_one(callback_ctx);
  after = ProcessStats();
  EXPECT_EQ(after.wakeups_by_fd - before.wakeups_by_fd, 1u);
  EXPECT_EQ(after.wakeups_by_callback - before.wakeups_by_callback, 1u);
}

TEST_F(Offload, AFullQueueGivesEagainAndTheJobRetries) {
  Engine engine({.workers = 1, .queue_capacity = 1});
  Gate gate;
  std::vector<asyncjob::WaitCtx> contexts(3);
  std::vector<CallbackRecord> records(3);
  std::vector<asyncjob::Job<int>> jobs;
  for (int i = 0; i < 3; ++i) {
    contexts[i].set_callback(&CallbackRecord::Call, &records[i]);
    jobs.push_back(asyncjob::start(contexts[i], [&engine, &gate, i] {
      engine.run([&] { gate.Wait(); });
      return i;
    }));
    ASSERT_TRUE(jobs.back().paused());
  }
  // One worker held by the gate and a queue of one: of three requests at
  // least one is refused (which one depends on when the worker takes the
  // first).
  EXPECT_GE(engine.counters().eagain_retries, 1u);
  int refused = 0;
  for (int i = 0; i < 3; ++i) {
    if (contexts[i].status() != ASYNC_STATUS_EAGAIN) continue;
    ++refused;
    EXPECT_GE(records[i].calls.load(), 1) << "the engine woke refused job " << i << " itself";
  }
  EXPECT_GE(refused, 1);
  gate.Open();
  // Resume whatever can run until every job finished.
  for (int spins = 0; spins < 100000; ++spins) {
    bool all_done = true;
    for (auto& job : jobs) {
      if (job.paused()) {
        job.resume();
        all_done = false;
      }
    }
    if (all_done) break;
    std::this_thread::yield();
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(jobs[i].finished());
    EXPECT_EQ(jobs[i].get(), i);
  }
  EXPECT_EQ(engine.counters().completed, 3u);
}

TEST_F(Offload, AnEarlyResumeIsHarmless) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  asyncjob::WaitCtx ctx;
  Gate gate;
  bool ran = false;
  auto job = asyncjob::start(ctx, [&] {
    engine.run([&] {
      gate.Wait();
      ran = true;
    });
    return ran;
  });
  ASSERT_TRUE(job.paused());
  job.resume();  // nothing is done yet
  EXPECT_TRUE(job.paused()) << "the job paused again";
  EXPECT_EQ(engine.counters().spurious_resumes, 1u);
  gate.Open();
  ASSERT_TRUE(WaitReadable(ctx.fds().at(0)));
  job.resume();
  ASSERT_TRUE(job.finished());
  EXPECT_TRUE(job.get());
}

TEST_F(Offload, WithoutAWaitContextTheOwnerPolls) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  auto job = asyncjob::start([&] {
    int value = 0;
    engine.run([&] { value = 17; });
    return value;
  });
  int polls = 0;
  while (job.paused() && polls < 1000000) {
    job.resume();
    ++polls;
  }
  ASSERT_TRUE(job.finished());
  EXPECT_EQ(job.get(), 17);
}

TEST_F(Offload, CancellingAQueuedRequestWithdrawsIt) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  Gate gate;
  asyncjob::WaitCtx busy_ctx, queued_ctx;
  auto busy = asyncjob::start(busy_ctx, [&] { engine.run([&] { gate.Wait(); }); });
  // Let the worker take the first request so that the second stays queued.
  for (int i = 0; i < 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (engine.counters().submitted == 1) break;
  }
  std::atomic<bool> queued_ran{false};
  auto queued = asyncjob::start(queued_ctx, [&] { engine.run([&] { queued_ran = true; }); });
  ASSERT_TRUE(queued.paused());
  queued.cancel();
  EXPECT_TRUE(queued.cancelled());
  gate.Open();
  ASSERT_TRUE(WaitReadable(busy_ctx.fds().at(0)));
  busy.resume();
  ASSERT_TRUE(busy.finished());
  EXPECT_FALSE(queued_ran.load()) << "a withdrawn task never runs";
  EXPECT_EQ(engine.counters().withdrawn + engine.counters().completed, 2u);
}

TEST_F(Offload, CancellingARunningRequestWaitsForIt) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  asyncjob::WaitCtx ctx;
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};
  auto job = asyncjob::start(ctx, [&] {
    engine.run([&] {
      started = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      finished = true;
    });
  });
  while (!started.load()) std::this_thread::yield();
  job.cancel();
  EXPECT_TRUE(finished.load()) << "the task finished before the job's stack went away";
  EXPECT_TRUE(job.cancelled());
}

// ----- Completion batching (Options::completion_batch_window) -----

namespace {

// Jobs offloading one task each on `engine`, every job's wait context with
// a callback that records, for its job, how many tasks of the whole set had
// finished when the callback fired.
struct BatchJobs {
  static constexpr int kJobs = 3;
  asyncjob::WaitCtx contexts[kJobs];
  std::atomic<int> finished_tasks{0};
  std::atomic<int> finished_when_woken[kJobs];
  std::atomic<int> wakeups{0};
  struct Argument {
    BatchJobs* jobs;
    int index;
  } arguments[kJobs];
  std::vector<asyncjob::Job<int>> handles;

  static int Woken(void* argument) {
    auto* a = static_cast<Argument*>(argument);
    a->jobs->finished_when_woken[a->index] = a->jobs->finished_tasks.load();
    a->jobs->wakeups.fetch_add(1);
    return 1;
  }
  BatchJobs() {
    for (int i = 0; i < kJobs; ++i) {
      finished_when_woken[i] = -1;
      arguments[i] = {this, i};
      contexts[i].set_callback(&Woken, &arguments[i]);
    }
  }
  // Starts job i, whose task first waits for `gate` (if any).
  void Start(Engine& engine, int i, Gate* gate) {
    handles.push_back(asyncjob::start(contexts[i], [this, &engine, gate] {
      engine.run([this, gate] {
        if (gate != nullptr) gate->Wait();
        finished_tasks.fetch_add(1);
      });
      return 1;
    }));
    ASSERT_TRUE(handles.back().paused());
  }
};

}  // namespace

TEST_F(Offload, WithoutBatchingEachJobIsWokenAsItsTaskFinishes) {
  Engine engine({.workers = 1, .queue_capacity = 8});
  BatchJobs jobs;
  Gate first, second;
  jobs.Start(engine, 0, &first);
  jobs.Start(engine, 1, &second);
  first.Open();
  WaitFor(jobs.wakeups, 1);
  EXPECT_EQ(jobs.finished_when_woken[0].load(), 1) << "woken while the next task was blocked";
  second.Open();
  WaitFor(jobs.wakeups, 2);
  for (auto& job : jobs.handles) job.resume();
  EXPECT_EQ(engine.counters().batched_wakeups, 0u);
}

TEST_F(Offload, BatchingHoldsWakeUpsUntilTheQueueRunsEmpty) {
  Engine engine(
      {.workers = 1, .queue_capacity = 8, .completion_batch_window = std::chrono::hours(1)});
  BatchJobs jobs;
  Gate gate;
  // The worker is blocked in the first task while the other two queue up.
  jobs.Start(engine, 0, &gate);
  jobs.Start(engine, 1, nullptr);
  jobs.Start(engine, 2, nullptr);
  gate.Open();
  WaitFor(jobs.wakeups, 3);
  ASSERT_EQ(jobs.wakeups.load(), 3);
  for (int i = 0; i < BatchJobs::kJobs; ++i) {
    EXPECT_EQ(jobs.finished_when_woken[i].load(), 3)
        << "job " << i << " was woken once every queued task had finished";
  }
  EXPECT_EQ(engine.counters().batched_wakeups, 2u) << "two held back, the last sent with them";
  EXPECT_EQ(engine.counters().completed, 3u);
  for (auto& job : jobs.handles) {
    job.resume();
    EXPECT_TRUE(job.finished());
  }
}

TEST_F(Offload, TasksLongerThanTheWindowAreNotHeld) {
  Engine engine(
      {.workers = 1, .queue_capacity = 8, .completion_batch_window = std::chrono::microseconds(1)});
  BatchJobs jobs;
  Gate gate;
  jobs.Start(engine, 0, &gate);  // blocked long enough to teach the engine
  jobs.Start(engine, 1, &gate);
  jobs.Start(engine, 2, &gate);
  // The first task must be blocked for a while, not merely queued: on a
  // loaded machine the worker may take it up only after the gate opened.
  for (int i = 0; i < 10000 && gate.waiters() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(gate.waiters(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  gate.Open();
  WaitFor(jobs.wakeups, 3);
  for (auto& job : jobs.handles) job.resume();
  // The first task's time (milliseconds) exceeds the window: nothing held.
  EXPECT_EQ(engine.counters().batched_wakeups, 0u);
}

TEST_F(Offload, AJobCancelledWhileItsWakeUpIsHeldLeavesTheBatchAtOnce) {
  Engine engine(
      {.workers = 1, .queue_capacity = 8, .completion_batch_window = std::chrono::hours(1)});
  BatchJobs jobs;
  Gate hold_first, block_second;
  jobs.Start(engine, 0, &hold_first);
  jobs.Start(engine, 1, &block_second);
  hold_first.Open();
  // The first task finishes and its wake-up is held: the second one is
  // running, blocked.
  for (int i = 0; i < 10000 && jobs.finished_tasks.load() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(jobs.finished_tasks.load(), 1);
  // The worker marks the request held right after the task returns.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(jobs.wakeups.load(), 0);
  jobs.handles[0].cancel();  // returns at once: the second task is still blocked
  EXPECT_TRUE(jobs.handles[0].cancelled());
  block_second.Open();
  WaitFor(jobs.wakeups, 1);
  jobs.handles[1].resume();
  EXPECT_TRUE(jobs.handles[1].finished());
  EXPECT_EQ(jobs.wakeups.load(), 1) << "the cancelled job's wake-up is never sent";
  EXPECT_EQ(jobs.finished_when_woken[0].load(), -1);
  EXPECT_EQ(engine.counters().completed, 2u);
  EXPECT_EQ(engine.counters().batched_wakeups, 0u);
}

TEST_F(Offload, AJobResumedWhileItsWakeUpIsHeldLeavesTheBatch) {
  Engine engine(
      {.workers = 1, .queue_capacity = 8, .completion_batch_window = std::chrono::hours(1)});
  BatchJobs jobs;
  Gate hold_first, block_second;
  jobs.Start(engine, 0, &hold_first);
  jobs.Start(engine, 1, &block_second);
  hold_first.Open();
  for (int i = 0; i < 10000 && jobs.finished_tasks.load() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(jobs.finished_tasks.load(), 1);
  // The worker marks the request held right after the task returns.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // The owner resumes the job without being woken (it polls): the task is
  // done, so the job finishes, and its request (on its stack) is gone.
  jobs.handles[0].resume();
  ASSERT_TRUE(jobs.handles[0].finished());
  EXPECT_EQ(jobs.handles[0].get(), 1);
  block_second.Open();
  WaitFor(jobs.wakeups, 1);
  jobs.handles[1].resume();
  EXPECT_TRUE(jobs.handles[1].finished());
  EXPECT_EQ(jobs.wakeups.load(), 1) << "no wake-up for the job that finished already";
  EXPECT_EQ(engine.counters().completed, 2u);
}

TEST_F(Offload, ANegativeWindowMeansNoBatching) {
  Engine engine({.workers = 1,
                 .queue_capacity = 8,
                 .completion_batch_window = std::chrono::microseconds(-5)});
  BatchJobs jobs;
  Gate first, second;
  jobs.Start(engine, 0, &first);
  jobs.Start(engine, 1, &second);
  first.Open();
  WaitFor(jobs.wakeups, 1);
  EXPECT_EQ(jobs.finished_when_woken[0].load(), 1);
  second.Open();
  WaitFor(jobs.wakeups, 2);
  for (auto& job : jobs.handles) job.resume();
  EXPECT_EQ(engine.counters().batched_wakeups, 0u);
}
