// The offload engine's options are bounded and its failures are reported,
// never fatal (docs/safety.md, "Limits and exhaustion"): more than
// Engine::kMaxWorkers workers throws std::system_error before any thread
// starts; workers <= 0 and a queue capacity of 0 mean 1, a huge capacity is
// only a limit; a task's exception reaches the job that ran it; a job that
// cannot take one more cancel hook runs its task inline instead of leaving
// a request the cancellation could not withdraw. (A worker thread that
// cannot be created: tests/reliability/offload_fault_test.cc.)
#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/offload.hpp"

namespace {

using asyncjob::offload::Engine;
using asyncjob::offload::Options;

class OffloadLimits : public ::testing::Test {
 protected:
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
};

// Runs engine.run() inside a job, resuming it until it finishes (no wait
// context: the owner polls). Returns what the task computed.
int OffloadedValue(Engine& engine, int value) {
  auto job = asyncjob::start([&] {
    int result = 0;
    engine.run([&] { result = value; });
    return result;
  });
  for (int polls = 0; job.paused() && polls < 10000000; ++polls) job.resume();
  EXPECT_TRUE(job.finished());
  return job.get();
}

void IgnoreCancel(void*) {}

}  // namespace

TEST_F(OffloadLimits, MoreWorkersThanTheMaximumAreRefused) {
  for (int workers : {Engine::kMaxWorkers + 1, 100000, INT_MAX}) {
    SCOPED_TRACE(workers);
    try {
      Engine engine(Options{.workers = workers});
      ADD_FAILURE() << "the engine started " << workers << " workers";
    } catch (const std::system_error& error) {
      EXPECT_EQ(error.code(), std::errc::invalid_argument);
      EXPECT_NE(std::string(error.what()).find("at most"), std::string::npos) << error.what();
    }
  }
  Engine engine(Options{.workers = 2});
  EXPECT_EQ(OffloadedValue(engine, 11), 11);
}

TEST_F(OffloadLimits, WorkersBelowOneMeanOne) {
  for (int workers : {0, -1, INT_MIN}) {
    SCOPED_TRACE(workers);
    Engine engine(Options{.workers = workers});
    EXPECT_EQ(OffloadedValue(engine, workers), workers);
    EXPECT_EQ(engine.counters().submitted, 1u) << "it ran on a worker";
  }
}

TEST_F(OffloadLimits, QueueCapacityZeroMeansOneAndAHugeOneIsOnlyALimit) {
  for (std::size_t capacity : {std::size_t{0}, std::size_t{1}, SIZE_MAX / 2, SIZE_MAX}) {
    SCOPED_TRACE(capacity);
    Engine engine(Options{.workers = 1, .queue_capacity = capacity});
    EXPECT_EQ(OffloadedValue(engine, 5), 5);
    EXPECT_EQ(engine.counters().submitted, 1u);
  }
}

TEST_F(OffloadLimits, ATasksExceptionReachesTheJob) {
  Engine engine(Options{.workers = 1});
  auto job = asyncjob::start([&] {
    try {
      engine.run([] { throw std::runtime_error("the device said no"); });
    } catch (const std::runtime_error& error) {
      return std::string(error.what());
    }
    return std::string("nothing thrown");
  });
  for (int polls = 0; job.paused() && polls < 10000000; ++polls) job.resume();
  ASSERT_TRUE(job.finished());
  EXPECT_EQ(job.get(), "the device said no");
  EXPECT_EQ(engine.counters().submitted, 1u) << "it was thrown on the worker";
  EXPECT_EQ(engine.counters().in_flight, 0u);
  EXPECT_EQ(OffloadedValue(engine, 8), 8) << "the worker survived";
}

TEST_F(OffloadLimits, WithoutRoomForItsCancelHookTheTaskRunsInline) {
  Engine engine(Options{.workers = 1});
  int hooks = 0;
  auto job = asyncjob::start([&] {
    while (asyncjob_add_cancel_hook(&IgnoreCancel, nullptr) == 1) ++hooks;
    asyncjob_clear_errors();
    int result = 0;
    engine.run([&] { result = 21; });
    for (int i = 0; i < hooks; ++i) asyncjob_remove_cancel_hook(&IgnoreCancel, nullptr);
    return result;
  });
  for (int polls = 0; job.paused() && polls < 10000000; ++polls) job.resume();
  ASSERT_TRUE(job.finished());
  EXPECT_EQ(job.get(), 21);
  EXPECT_GT(hooks, 0);
  EXPECT_EQ(engine.counters().inline_runs, 1u);
  EXPECT_EQ(engine.counters().submitted, 0u);
}
