// third_party_engine_test.cc - engines torn down mid-operation: the wait
// context of a paused job freed (a connection dropped) while the engine
// that paused it still owes a completion.
//
// The engine here is written the way third-party ones are (OpenSSL's
// dasync, QAT's): inside the job it makes an eventfd, registers it with
// ASYNC_WAIT_CTX_set_wait_fd() and a cleanup routine that closes it, hands
// the job pointer to its "device" (a thread of its own) and pauses. The
// device completes later from its thread: ASYNC_get_wait_ctx(job), the
// callback if the context has one, else a write to the fd. It registers no
// cancel hooks, so a teardown makes its job a tombstone (docs/teardown.md);
// the checks are that the late completion finds the context and fd still
// there, that nothing is closed under it, and that the tombstone is
// released once signalled (or by the bound, ASYNC_cleanup_thread or the
// thread's exit), running the cleanup routine exactly once.
//
// The offload engine (asyncjob::offload::Engine) registers cancel hooks: its
// jobs are unwound at the teardown, their request withdrawn or waited for,
// and no tombstone is made.
//
// The device completes when the test opens a gate, never after a sleep.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "asyncjob/errors.h"
#include "asyncjob/offload.hpp"
#include "support/gate.h"
#include "support/test_support.h"

namespace {

using asyncjob_test::CountOpenFds;
using asyncjob_test::ErrorQueueEmpty;
using asyncjob_test::PopError;

using asyncjob_test::Gate;

asyncjob_stats Stats() {
  asyncjob_stats stats{};
  asyncjob_get_stats(&stats);
  return stats;
}

asyncjob_pool_stats PoolStats() {
  asyncjob_pool_stats stats{};
  asyncjob_get_pool_stats(&stats);
  return stats;
}

bool FdIsOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }

std::string FdTarget(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char target[256] = {};
  ssize_t length = readlink(link, target, sizeof target - 1);
  return length > 0 ? std::string(target, static_cast<std::size_t>(length)) : std::string();
}

// The engine's key for its wait fd.
const char kEngineKey = 0;

// One operation of the engine, from submission to completion: what the
// engine set up in the job, and what its device saw when it completed.
struct Operation {
  bool hung = false;  // the device never completes it
  // Set in the job.
  ASYNC_JOB* job = nullptr;
  int fd = -1;
  int watcher = -1;  // the test's duplicate: reads the counter after the fd is closed
  std::atomic<int> cleanups{0};
  int cleanup_fd = -1;
  // Set by the device when it completes.
  Gate go;    // the test lets the device complete
  Gate done;  // the device has completed
  bool found_context = false;
  bool had_callback = false;
  bool found_fd = false;
  int written_fd = -1;
  int cleanups_before_write = -1;
  std::string fd_target_at_write;
  bool write_ok = false;
  // Set in the job once resumed.
  bool finished = false;
};

// The engine's cleanup routine: closes the eventfd, as dasync's does.
void CloseEngineFd(ASYNC_WAIT_CTX*, const void* key, OSSL_ASYNC_FD fd, void* custom_data) {
  auto* operation = static_cast<Operation*>(custom_data);
  EXPECT_EQ(key, &kEngineKey);
  operation->cleanup_fd = fd;
  operation->cleanups.fetch_add(1, std::memory_order_acq_rel);
  close(fd);
}

// The engine's device: one thread completing the operations handed to it,
// each when the test opens its gate.
class Device {
 public:
  Device() : thread_([this] { Loop(); }) {}
  ~Device() {
    Submit(nullptr);
    thread_.join();
  }
  void Submit(Operation* operation) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(operation);
    }
    submitted_.notify_one();
  }

 private:
  void Loop() {
    for (;;) {
      Operation* operation;
      {
        std::unique_lock lock(mutex_);
        submitted_.wait(lock, [this] { return !queue_.empty(); });
        operation = queue_.front();
        queue_.erase(queue_.begin());
      }
      if (operation == nullptr) return;
      operation->go.Wait();
      Complete(operation);
      operation->done.Open();
    }
  }

  // What a completion does: the job's context, its callback if any, else
  // the engine's fd.
  static void Complete(Operation* operation) {
    ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(operation->job);
    operation->found_context = ctx != nullptr;
    if (ctx == nullptr) return;
    ASYNC_callback_fn callback = nullptr;
    void* argument = nullptr;
    if (ASYNC_WAIT_CTX_get_callback(ctx, &callback, &argument) == 1) {
      operation->had_callback = true;
      callback(argument);
      return;
    }
    OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
    void* custom_data = nullptr;
    operation->found_fd =
        ASYNC_WAIT_CTX_get_fd(ctx, &kEngineKey, &fd, &custom_data) == 1 && custom_data == operation;
    if (!operation->found_fd) return;
    operation->written_fd = fd;
    operation->cleanups_before_write = operation->cleanups.load(std::memory_order_acquire);
    operation->fd_target_at_write = FdTarget(fd);
    std::uint64_t one = 1;
    operation->write_ok = write(fd, &one, sizeof one) == sizeof one;
  }

  std::mutex mutex_;
  std::condition_variable submitted_;
  std::vector<Operation*> queue_;
  std::thread thread_;
};

struct EngineCall {
  Device* device;  // nullptr: no device, the operation is never completed
  Operation* operation;
  bool with_fd;
};

// The engine's operation, run inside the job. No object with a destructor
// lives across the pause: a tombstone's frames never run again.
int EngineOperation(void* argument) {
  EngineCall call = *static_cast<EngineCall*>(argument);
  Operation* operation = call.operation;
  operation->job = ASYNC_get_current_job();
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(operation->job);
  if (call.with_fd) {
    operation->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (operation->fd < 0) return 0;
    operation->watcher = dup(operation->fd);
    if (ASYNC_WAIT_CTX_set_wait_fd(ctx, &kEngineKey, operation->fd, operation, &CloseEngineFd) !=
        1) {
      return 0;
    }
  }
  if (call.device != nullptr) call.device->Submit(operation);
  ASYNC_pause_job();
  if (call.with_fd) {
    std::uint64_t count = 0;
    if (read(operation->fd, &count, sizeof count) != sizeof count) return 0;
  }
  operation->finished = true;
  return 1;
}

// Starts the engine's operation in a new job of `ctx`; it pauses.
ASYNC_JOB* StartOperation(ASYNC_WAIT_CTX* ctx, Device* device, Operation* operation,
                          bool with_fd = true) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EngineCall call{device, operation, with_fd};
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &EngineOperation, &call, sizeof call), ASYNC_PAUSE);
  return job;
}

// The application's completion callback: counts calls.
int CountCallback(void* argument) {
  static_cast<std::atomic<int>*>(argument)->fetch_add(1);
  return 1;
}

// The counter of the eventfd behind `watcher` (0 when nothing was written).
std::uint64_t ReadCounter(int watcher) {
  std::uint64_t count = 0;
  if (read(watcher, &count, sizeof count) != sizeof count) return 0;
  return count;
}

bool Readable(int fd) {
  pollfd polled{fd, POLLIN, 0};
  return poll(&polled, 1, 0) == 1;
}

class ThirdPartyEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    asyncjob_clear_errors();
    ASSERT_EQ(ASYNC_init_thread(0, 0), 1);
    fds_ = CountOpenFds();
    stats_ = Stats();
    in_use_ = PoolStats().in_use;
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    EXPECT_EQ(CountOpenFds(), fds_);
  }

  Device device_;
  std::size_t fds_ = 0;
  asyncjob_stats stats_{};
  std::size_t in_use_ = 0;
};

// ----- Without a teardown: the engine as it is meant to run -----

TEST_F(ThirdPartyEngine, CompletesThroughItsFd) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Operation operation;
  ASYNC_JOB* job = StartOperation(ctx, &device_, &operation);
  operation.go.Open();
  operation.done.Wait();
  EXPECT_TRUE(operation.write_ok);
  EXPECT_FALSE(operation.had_callback);
  ASSERT_TRUE(Readable(operation.fd));
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &EngineOperation, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  EXPECT_TRUE(operation.finished);
  EXPECT_EQ(operation.cleanups.load(), 0);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(operation.cleanups.load(), 1);
  close(operation.watcher);
  EXPECT_EQ(Stats().orphans, stats_.orphans);
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST_F(ThirdPartyEngine, CompletesThroughTheCallbackWhenOneIsSet) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  std::atomic<int> calls{0};
  ASSERT_EQ(ASYNC_WAIT_CTX_set_callback(ctx, &CountCallback, &calls), 1);
  Operation operation;
  ASYNC_JOB* job = StartOperation(ctx, &device_, &operation);
  operation.go.Open();
  operation.done.Wait();
  EXPECT_TRUE(operation.had_callback);
  EXPECT_EQ(calls.load(), 1);
  ASSERT_EQ(write(operation.fd, "\1\0\0\0\0\0\0\0", 8), 8);  // what the callback's owner would do
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &EngineOperation, nullptr, 0), ASYNC_FINISH);
  EXPECT_TRUE(operation.finished);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(operation.cleanups.load(), 1);
  close(operation.watcher);
}

// ----- Torn down mid-operation: tombstones -----

// What releases a signalled tombstone: the calls an application makes as
// connections begin and end.
enum class Trigger { kNewContext, kFreeContext, kInitThread };

std::string TriggerName(const ::testing::TestParamInfo<Trigger>& info) {
  switch (info.param) {
    case Trigger::kNewContext:
      return "AsyncWaitCtxNew";
    case Trigger::kFreeContext:
      return "AsyncWaitCtxFree";
    case Trigger::kInitThread:
      return "AsyncInitThread";
  }
  return "Unknown";
}

// Pulls one trigger at a time, each call on its own: the contexts the
// kFreeContext trigger frees were made up front (a new context releases
// too), and those kNewContext makes are freed only at the end.
class Releaser {
 public:
  explicit Releaser(Trigger trigger) : trigger_(trigger) {
    if (trigger_ == Trigger::kFreeContext) {
      for (ASYNC_WAIT_CTX*& spare : spares_) spare = ASYNC_WAIT_CTX_new();
    }
  }
  ~Releaser() {
    for (ASYNC_WAIT_CTX* spare : spares_) ASYNC_WAIT_CTX_free(spare);
    for (ASYNC_WAIT_CTX* made : made_) ASYNC_WAIT_CTX_free(made);
  }
  void Pull() {
    switch (trigger_) {
      case Trigger::kNewContext:
        made_.push_back(ASYNC_WAIT_CTX_new());
        break;
      case Trigger::kFreeContext:
        ASSERT_LT(next_, spares_.size());
        ASYNC_WAIT_CTX_free(spares_[next_]);
        spares_[next_++] = nullptr;
        break;
      case Trigger::kInitThread:
        EXPECT_EQ(ASYNC_init_thread(0, 0), 1);
        break;
    }
  }

 private:
  Trigger trigger_;
  std::array<ASYNC_WAIT_CTX*, 3> spares_{};
  std::size_t next_ = 0;
  std::vector<ASYNC_WAIT_CTX*> made_;
};

class ThirdPartyEngineTornDown : public ThirdPartyEngine,
                                 public ::testing::WithParamInterface<Trigger> {};

// The teardown, then the device's late completion through the fd, then the
// release. The checks at each step are the point of the test.
void TearDownThenComplete(Device* device, bool with_callback, Trigger trigger,
                          const asyncjob_stats& before, std::size_t in_use) {
  Releaser releaser(trigger);
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  std::atomic<int> calls{0};
  if (with_callback) {
    ASSERT_EQ(ASYNC_WAIT_CTX_set_callback(ctx, &CountCallback, &calls), 1);
  }
  Operation operation;
  ASYNC_JOB* job = StartOperation(ctx, device, &operation);
  ASSERT_NE(job, nullptr);
  ASSERT_GE(operation.fd, 0);
  EXPECT_EQ(PoolStats().in_use, in_use + 1);

  // The teardown: a legal act, no error queued.
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(ErrorQueueEmpty());
  asyncjob_stats after_teardown = Stats();
  EXPECT_EQ(after_teardown.orphans, before.orphans + 1);
  EXPECT_EQ(after_teardown.orphans_unwound, before.orphans_unwound);
  EXPECT_EQ(after_teardown.tombstones, before.tombstones + 1);
  EXPECT_EQ(after_teardown.tombstones_released, before.tombstones_released);
  EXPECT_EQ(PoolStats().in_use, in_use);
  EXPECT_EQ(PoolStats().tombstones, 1u);
  // The context's fds stay open for the device.
  EXPECT_EQ(operation.cleanups.load(), 0);
  EXPECT_TRUE(FdIsOpen(operation.fd));

  // The tombstone cannot be resumed nor cancelled.
  int ret = -1;
  ASYNC_JOB* stale = job;
  EXPECT_EQ(ASYNC_start_job(&stale, nullptr, &ret, &EngineOperation, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOB_ORPHANED);
  stale = job;
  EXPECT_EQ(asyncjob_cancel_job(&stale), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOB_ORPHANED);
  EXPECT_FALSE(operation.finished);

  // Not signalled yet: what would release it keeps it.
  releaser.Pull();
  EXPECT_EQ(PoolStats().tombstones, 1u);
  EXPECT_EQ(operation.cleanups.load(), 0);

  // The device completes, late.
  operation.go.Open();
  operation.done.Wait();
  EXPECT_TRUE(operation.found_context);
  EXPECT_FALSE(operation.had_callback) << "the freed owner's callback was offered";
  EXPECT_EQ(calls.load(), 0);
  EXPECT_TRUE(operation.found_fd);
  EXPECT_EQ(operation.written_fd, operation.fd);
  EXPECT_EQ(operation.cleanups_before_write, 0) << "the fd was closed before the device wrote";
  EXPECT_EQ(operation.fd_target_at_write, "anon_inode:[eventfd]");
  EXPECT_TRUE(operation.write_ok);
  // Still kept: nothing has looked since.
  EXPECT_EQ(PoolStats().tombstones, 1u);
  EXPECT_EQ(operation.cleanups.load(), 0);

  // Signalled: the next such call releases it and frees the context.
  releaser.Pull();
  EXPECT_EQ(PoolStats().tombstones, 0u);
  EXPECT_EQ(operation.cleanups.load(), 1);
  EXPECT_EQ(operation.cleanup_fd, operation.fd);
  EXPECT_FALSE(FdIsOpen(operation.fd));
  // The write went to that eventfd, not to another file that took its number.
  EXPECT_EQ(ReadCounter(operation.watcher), 1u);
  close(operation.watcher);
  asyncjob_stats released = Stats();
  EXPECT_EQ(released.tombstones, before.tombstones + 1);
  EXPECT_EQ(released.tombstones_released, before.tombstones_released + 1);
  EXPECT_EQ(PoolStats().in_use, in_use);
  EXPECT_FALSE(operation.finished);
  EXPECT_TRUE(ErrorQueueEmpty());

  // Released more than once it is not: the cleanup stays at one.
  releaser.Pull();
  EXPECT_EQ(operation.cleanups.load(), 1);
}

TEST_P(ThirdPartyEngineTornDown, LateCompletionWritesTheStillOpenFdThenReleases) {
  TearDownThenComplete(&device_, /*with_callback=*/false, GetParam(), stats_, in_use_);
}

// The application had set a callback: after the teardown the device finds
// none (the owner's object may be gone) and falls back to the fd.
TEST_P(ThirdPartyEngineTornDown, CallbackModeFallsBackToTheFd) {
  TearDownThenComplete(&device_, /*with_callback=*/true, GetParam(), stats_, in_use_);
}

INSTANTIATE_TEST_SUITE_P(Release, ThirdPartyEngineTornDown,
                         ::testing::Values(Trigger::kNewContext, Trigger::kFreeContext,
                                           Trigger::kInitThread),
                         TriggerName);

// Many connections torn down before their device answers any: each
// completion lands in its own eventfd, and one call releases them all.
TEST_F(ThirdPartyEngine, ManyTeardownsThenLateCompletions) {
  constexpr int kOperations = 16;
  std::vector<std::unique_ptr<Operation>> operations;
  for (int i = 0; i < kOperations; ++i) {
    operations.push_back(std::make_unique<Operation>());
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    ASSERT_NE(StartOperation(ctx, &device_, operations.back().get()), nullptr);
    ASYNC_WAIT_CTX_free(ctx);
  }
  EXPECT_EQ(PoolStats().tombstones, static_cast<std::size_t>(kOperations));
  EXPECT_EQ(PoolStats().in_use, in_use_);
  for (auto& operation : operations) operation->go.Open();
  for (auto& operation : operations) operation->done.Wait();
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());
  EXPECT_EQ(PoolStats().tombstones, 0u);
  for (auto& operation : operations) {
    EXPECT_EQ(operation->cleanups_before_write, 0);
    EXPECT_EQ(operation->cleanups.load(), 1);
    EXPECT_EQ(ReadCounter(operation->watcher), 1u);
    close(operation->watcher);
  }
  EXPECT_EQ(Stats().tombstones_released, stats_.tombstones_released + kOperations);
  EXPECT_TRUE(ErrorQueueEmpty());
}

// More than 1024 tombstones on a thread: the oldest are released (their
// cleanup routines run), and no more than 1024 are kept after each call
// that looks.
TEST_F(ThirdPartyEngine, TombstonesAreBoundedOldestReleasedFirst) {
  constexpr std::size_t kBound = 1024;
  constexpr std::size_t kWithFds = 8;  // the oldest; the rest have no fd
  constexpr std::size_t kTeardowns = kBound + kWithFds;
  std::vector<std::unique_ptr<Operation>> operations;
  std::size_t most_kept = 0;
  for (std::size_t i = 0; i < kTeardowns; ++i) {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    most_kept = std::max(most_kept, PoolStats().tombstones);
    operations.push_back(std::make_unique<Operation>());
    // A device that never answers.
    ASSERT_NE(StartOperation(ctx, nullptr, operations.back().get(), i < kWithFds), nullptr);
    ASYNC_WAIT_CTX_free(ctx);
  }
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());
  most_kept = std::max(most_kept, PoolStats().tombstones);
  EXPECT_EQ(most_kept, kBound);
  EXPECT_EQ(PoolStats().tombstones, kBound);
  EXPECT_EQ(PoolStats().in_use, in_use_);
  asyncjob_stats stats = Stats();
  EXPECT_EQ(stats.tombstones, stats_.tombstones + kTeardowns);
  EXPECT_EQ(stats.tombstones_released, stats_.tombstones_released + kWithFds);
  // The released ones are the oldest: the ones with fds, each cleaned up once.
  for (std::size_t i = 0; i < kWithFds; ++i) {
    EXPECT_EQ(operations[i]->cleanups.load(), 1) << "operation " << i;
    EXPECT_FALSE(FdIsOpen(operations[i]->fd));
    EXPECT_EQ(ReadCounter(operations[i]->watcher), 0u);
    close(operations[i]->watcher);
  }
  // The thread's cleanup releases the rest.
  ASYNC_cleanup_thread();
  EXPECT_EQ(Stats().tombstones_released, stats_.tombstones_released + kTeardowns);
  EXPECT_TRUE(ErrorQueueEmpty());
}

// A device that never answers: ASYNC_cleanup_thread releases the tombstone
// and runs the cleanup routine, once.
TEST_F(ThirdPartyEngine, ReleasedAtCleanupThread) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Operation operation;
  ASSERT_NE(StartOperation(ctx, nullptr, &operation), nullptr);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(PoolStats().tombstones, 1u);
  EXPECT_TRUE(FdIsOpen(operation.fd));
  ASYNC_cleanup_thread();
  EXPECT_EQ(operation.cleanups.load(), 1);
  EXPECT_FALSE(FdIsOpen(operation.fd));
  close(operation.watcher);
  EXPECT_EQ(Stats().tombstones_released, stats_.tombstones_released + 1);
  EXPECT_EQ(PoolStats().tombstones, 0u);
  EXPECT_TRUE(ErrorQueueEmpty());
}

// A thread that tears a connection down and exits without cleaning up: its
// exit releases the tombstone, closes the fd through the cleanup routine and
// leaves nothing behind (ASan and valgrind runs check the memory).
TEST_F(ThirdPartyEngine, ReleasedAtThreadExit) {
  Operation operation;
  std::size_t kept_before_exit = 0;
  std::thread thread([&] {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    if (StartOperation(ctx, nullptr, &operation) == nullptr) return;
    ASYNC_WAIT_CTX_free(ctx);
    kept_before_exit = PoolStats().tombstones;
  });
  thread.join();
  EXPECT_EQ(kept_before_exit, 1u);
  EXPECT_EQ(operation.cleanups.load(), 1);
  EXPECT_FALSE(FdIsOpen(operation.fd));
  close(operation.watcher);
  asyncjob_stats stats = Stats();
  EXPECT_EQ(stats.tombstones, stats_.tombstones + 1);
  EXPECT_EQ(stats.tombstones_released, stats_.tombstones_released + 1);
  EXPECT_EQ(PoolStats().tombstones, 0u);  // this thread's pool never had one
}

// ----- The offload engine: cancel hooks, so unwound at the teardown -----

class OffloadEngineTornDown : public ThirdPartyEngine {};

struct OffloadCall {
  asyncjob::offload::Engine* engine;
  Gate* started;  // the task began on a worker
  Gate* release;  // the task may return
  std::atomic<bool>* task_done;
  std::atomic<bool>* job_finished;
};

int RunOnOffloadEngine(void* argument) {
  OffloadCall call = *static_cast<OffloadCall*>(argument);
  call.engine->run([&call] {
    call.started->Open();
    call.release->Wait();
    call.task_done->store(true);
  });
  call.job_finished->store(true);
  return 1;
}

// Queued behind another job's task: the teardown withdraws the request; the
// task never runs.
TEST_F(OffloadEngineTornDown, QueuedRequestIsWithdrawn) {
  asyncjob::offload::Engine engine({.workers = 1, .queue_capacity = 16});
  Gate first_started, first_release, second_started, second_release;
  std::atomic<bool> first_done{false}, first_finished{false};
  std::atomic<bool> second_done{false}, second_finished{false};

  ASYNC_WAIT_CTX* first_ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* first = nullptr;
  int ret = 0;
  OffloadCall first_call{&engine, &first_started, &first_release, &first_done, &first_finished};
  ASSERT_EQ(
      ASYNC_start_job(&first, first_ctx, &ret, &RunOnOffloadEngine, &first_call, sizeof first_call),
      ASYNC_PAUSE);
  first_started.Wait();  // the one worker is busy with it

  ASYNC_WAIT_CTX* second_ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* second = nullptr;
  OffloadCall second_call{&engine, &second_started, &second_release, &second_done,
                          &second_finished};
  ASSERT_EQ(ASYNC_start_job(&second, second_ctx, &ret, &RunOnOffloadEngine, &second_call,
                            sizeof second_call),
            ASYNC_PAUSE);
  EXPECT_EQ(PoolStats().in_use, in_use_ + 2);

  ASYNC_WAIT_CTX_free(second_ctx);  // the teardown
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(engine.counters().withdrawn, 1u);
  EXPECT_FALSE(second_finished.load()) << "the job was unwound, not run on";
  asyncjob_stats stats = Stats();
  EXPECT_EQ(stats.orphans, stats_.orphans + 1);
  EXPECT_EQ(stats.orphans_unwound, stats_.orphans_unwound + 1);
  EXPECT_EQ(stats.tombstones, stats_.tombstones);
  EXPECT_EQ(PoolStats().tombstones, 0u);
  EXPECT_EQ(PoolStats().in_use, in_use_ + 1);

  // The first job is untouched: it completes as usual.
  first_release.Open();
  size_t count = 0;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_all_fds(first_ctx, nullptr, &count), 1);
  ASSERT_EQ(count, 1u);
  OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_all_fds(first_ctx, &fd, &count), 1);
  pollfd polled{fd, POLLIN, 0};
  ASSERT_EQ(poll(&polled, 1, -1), 1);
  EXPECT_EQ(ASYNC_start_job(&first, first_ctx, &ret, &RunOnOffloadEngine, nullptr, 0),
            ASYNC_FINISH);
  EXPECT_TRUE(first_finished.load());
  ASYNC_WAIT_CTX_free(first_ctx);
  EXPECT_FALSE(second_started.IsOpen()) << "the withdrawn task ran";
  EXPECT_EQ(PoolStats().in_use, in_use_);
  EXPECT_EQ(CountOpenFds(), fds_);  // both contexts' eventfds closed
}

// Running on a worker: the teardown waits for the task before unwinding the
// stack it uses. Another thread lets the task return; whichever comes first,
// the free returns only after the task did.
TEST_F(OffloadEngineTornDown, RunningRequestIsWaitedFor) {
  asyncjob::offload::Engine engine({.workers = 1, .queue_capacity = 16});
  Gate started, release;
  std::atomic<bool> task_done{false}, job_finished{false};
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  OffloadCall call{&engine, &started, &release, &task_done, &job_finished};
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &RunOnOffloadEngine, &call, sizeof call), ASYNC_PAUSE);
  started.Wait();
  std::thread releaser([&release] {
    // Gives the free a moment to reach the wait; not a timing assertion.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release.Open();
  });
  ASYNC_WAIT_CTX_free(ctx);  // the teardown
  EXPECT_TRUE(task_done.load()) << "the stack was unwound under the running task";
  releaser.join();
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_FALSE(job_finished.load());
  EXPECT_EQ(engine.counters().completed, 1u);
  EXPECT_EQ(engine.counters().withdrawn, 0u);
  asyncjob_stats stats = Stats();
  EXPECT_EQ(stats.orphans_unwound, stats_.orphans_unwound + 1);
  EXPECT_EQ(stats.tombstones, stats_.tombstones);
  EXPECT_EQ(PoolStats().in_use, in_use_);
  EXPECT_EQ(PoolStats().tombstones, 0u);
  EXPECT_EQ(CountOpenFds(), fds_);
}

}  // namespace
