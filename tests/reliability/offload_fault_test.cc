// Fault injection into the offload engine (fault_wraps.h): a worker thread
// that cannot be started, or memory that runs out while starting them, makes
// the constructor throw std::system_error naming how many workers started,
// after stopping and joining those: no std::terminate, no thread left
// behind, and a new engine works. Out of memory while queueing a task runs
// the task inline.
#include <dirent.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/offload.hpp"
#include "fault_wraps.h"

namespace {

using asyncjob::offload::Engine;
using asyncjob::offload::Options;

std::size_t CountThreads() {
  std::size_t count = 0;
  if (DIR* dir = opendir("/proc/self/task")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(dir);
  }
  return count;
}

// The thread count once joined threads are gone: a thread leaves
// /proc/self/task a moment after pthread_join() returns (the kernel reaps
// it after waking the joiner). A thread still running stays counted.
std::size_t CountThreadsSettled(std::size_t expected) {
  std::size_t count = CountThreads();
  for (int i = 0; i < 5000 && count != expected; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    count = CountThreads();
  }
  return count;
}

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

class OffloadFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    // ThreadSanitizer starts a thread of its own with the program's first
    // one: let it, before counting.
    std::thread([] {}).join();
    threads_before_ = CountThreads();
  }
  void TearDown() override {
    fault::Disarm();
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
  // The constructor failed as `code` with `text` in its message, and left no
  // thread running.
  void ExpectFailed(const Options& options, std::errc code, const std::string& text) {
    try {
      Engine engine(options);
      ADD_FAILURE() << "the engine started";
    } catch (const std::system_error& error) {
      EXPECT_EQ(error.code(), code) << error.what();
      EXPECT_NE(std::string(error.what()).find(text), std::string::npos) << error.what();
    }
    fault::Disarm();
    EXPECT_EQ(fault::Fired(), 1);
    EXPECT_EQ(CountThreadsSettled(threads_before_), threads_before_)
        << "every started worker was joined";
    Engine engine(options);  // nothing is left broken
    EXPECT_EQ(OffloadedValue(engine, 9), 9);
  }
  std::size_t threads_before_ = 0;
};

}  // namespace

TEST_F(OffloadFaults, EachWorkerThatCannotStart) {
  for (int nth = 1; nth <= 4; ++nth) {
    SCOPED_TRACE(nth);
    fault::Arm(fault::Call::kThreadStart, nth);
    ExpectFailed(Options{.workers = 4}, std::errc::resource_unavailable_try_again,
                 "started " + std::to_string(nth - 1) + " of 4 workers");
  }
}

TEST_F(OffloadFaults, EachAllocationWhileStarting) {
  // The queue's first blocks, the list of workers, each worker's state:
  // fail each in turn until the constructor makes no more allocations.
  int failures = 0;
  for (int nth = 1; nth <= 64; ++nth) {
    SCOPED_TRACE(nth);
    fault::Arm(fault::Call::kThrowingNew, nth);
    try {
      Engine engine(Options{.workers = 3});
      fault::Disarm();
      EXPECT_EQ(fault::Fired(), 0) << "a failed allocation went unnoticed";
      break;
    } catch (const std::system_error& error) {
      fault::Disarm();
      ++failures;
      EXPECT_EQ(error.code(), std::errc::not_enough_memory) << error.what();
      EXPECT_NE(std::string(error.what()).find("out of memory"), std::string::npos) << error.what();
      EXPECT_EQ(CountThreadsSettled(threads_before_), threads_before_)
          << "every started worker was joined";
    }
  }
  EXPECT_GE(failures, 4) << "the queue, the list and three workers' states allocate";
  Engine engine(Options{.workers = 3});
  EXPECT_EQ(OffloadedValue(engine, 9), 9);
}

TEST_F(OffloadFaults, OutOfMemoryWhileQueueingRunsTheTaskInline) {
  // One worker held busy; jobs queue requests until the queue needs a new
  // block, which fails for one of them: that job runs its task inline.
  Engine engine(Options{.workers = 1, .queue_capacity = 10000});
  std::mutex mutex;
  std::condition_variable opened;
  bool open = false;
  std::atomic<bool> busy{false};
  auto blocker = asyncjob::start([&] {
    engine.run([&] {
      busy = true;
      std::unique_lock lock(mutex);
      opened.wait(lock, [&] { return open; });
    });
    return 0;
  });
  while (!busy) std::this_thread::yield();
  std::vector<asyncjob::Job<int>> jobs;
  for (int i = 0; i < 200 && engine.counters().inline_runs == 0; ++i) {
    auto job = asyncjob::start([&engine, i] {
      int result = -1;
      fault::ArmAlways(fault::Call::kThrowingNew);
      engine.run([&result, i] { result = i; });
      fault::Disarm();
      return result;
    });
    fault::Disarm();  // queued and paused: disarm before anything else allocates
    jobs.push_back(std::move(job));
  }
  {
    std::lock_guard lock(mutex);
    open = true;
  }
  opened.notify_all();
  EXPECT_EQ(engine.counters().inline_runs, 1u) << "one task ran inline";
  for (int polls = 0; blocker.paused() && polls < 10000000; ++polls) blocker.resume();
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    for (int polls = 0; jobs[i].paused() && polls < 10000000; ++polls) jobs[i].resume();
    ASSERT_TRUE(jobs[i].finished());
    EXPECT_EQ(jobs[i].get(), static_cast<int>(i));
  }
  EXPECT_TRUE(jobs.back().finished());
  EXPECT_EQ(engine.counters().in_flight, 0u);
  EXPECT_EQ(OffloadedValue(engine, 6), 6) << "the engine still queues";
}
