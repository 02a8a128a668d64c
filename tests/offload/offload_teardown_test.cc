// The offload engine when a job paused on it is given up without being
// unwound: its thread exits, or its wait context is freed while its stack
// cannot be unwound (a tombstone). The request lives on the job's stack,
// whose pages are dropped then: the engine must have let go of it first
// (its cancel hook withdraws a queued request, or waits for a running one),
// and must wake nobody afterwards.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "asyncjob/async.h"
#include "asyncjob/introspect.h"
#include "asyncjob/offload.hpp"
#include "support/gate.h"
#include "support/test_support.h"

namespace {

using asyncjob::offload::Engine;

using asyncjob_test::Gate;

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

template <class Predicate>
bool WaitUntil(Predicate predicate) {
  for (int i = 0; i < 10000; ++i) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return predicate();
}

// What a job below offloads, and how.
struct Offloaded {
  explicit Offloaded(Engine& on, Gate* held_by = nullptr) : engine(&on), gate(held_by) {}
  Engine* engine;
  Gate* gate;  // the task waits for it, when set
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};
};

// Offloads from a frame 16 KiB deep, so that the request sits on stack pages
// below the job's header page: those that a given-up job loses.
__attribute__((noinline)) void OffloadDeep(Offloaded* offloaded) {
  volatile char depth[16384];
  depth[0] = 1;
  depth[sizeof depth - 1] = 1;
  offloaded->engine->run([offloaded] {
    offloaded->started = true;
    if (offloaded->gate != nullptr) offloaded->gate->Wait();
    offloaded->finished = true;
  });
  (void)depth[1];
}

int OffloadingJob(void* arg) {
  OffloadDeep(*static_cast<Offloaded**>(arg));
  return 1;
}

// The same from inside a noexcept frame: a job paused there cannot be
// unwound, so freeing its context makes it a tombstone.
__attribute__((noinline)) void OffloadDeepInNoexcept(Offloaded* offloaded) noexcept {
  OffloadDeep(offloaded);
}

int OffloadingJobThatCannotUnwind(void* arg) {
  OffloadDeepInNoexcept(*static_cast<Offloaded**>(arg));
  return 1;
}

ASYNC_JOB* StartPaused(ASYNC_WAIT_CTX* ctx, int (*body)(void*), Offloaded* offloaded) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, body, &offloaded, sizeof offloaded), ASYNC_PAUSE);
  return job;
}

// The eventfd the engine registered in a context (it has no callback).
int EngineFd(ASYNC_WAIT_CTX* ctx) {
  OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
  std::size_t count = 1;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, &fd, &count), 1);
  EXPECT_EQ(count, 1u);
  return fd;
}

// Keeps the engine's only worker busy with a task of a job on this thread
// until Release().
class BusyWorker {
 public:
  explicit BusyWorker(Engine& engine) : offloaded_(engine, &gate_), ctx_(ASYNC_WAIT_CTX_new()) {
    job_ = StartPaused(ctx_, &OffloadingJob, &offloaded_);
    EXPECT_TRUE(WaitUntil([this] { return offloaded_.started.load(); }));
  }
  void Release() {
    gate_.Open();
    EXPECT_TRUE(WaitUntil([this] { return Readable(EngineFd(ctx_)); }));
    int ret = 0;
    EXPECT_EQ(ASYNC_start_job(&job_, ctx_, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 1);
    ASYNC_WAIT_CTX_free(ctx_);
  }

 private:
  Gate gate_;
  Offloaded offloaded_;
  ASYNC_WAIT_CTX* ctx_;
  ASYNC_JOB* job_ = nullptr;
};

class OffloadGivenUp : public ::testing::Test {
 protected:
  void SetUp() override {
    asyncjob_clear_errors();
    fds_before_ = asyncjob_test::CountOpenFds();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before_) << "no fd lost";
  }
  std::size_t fds_before_ = 0;
};

}  // namespace

// A thread exits with a job paused on a task still queued behind a busy
// worker: the task is withdrawn as the thread gives the job up, and never
// runs (before, the worker later ran the zeroed request, a call through a
// null pointer).
TEST_F(OffloadGivenUp, AThreadExitingWithItsTaskQueuedWithdrawsIt) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  BusyWorker busy(engine);
  Offloaded queued(engine);
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  std::thread([&] { StartPaused(ctx, &OffloadingJob, &queued); }).join();
  EXPECT_EQ(engine.counters().withdrawn, 1u);
  busy.Release();
  EXPECT_TRUE(WaitUntil([&] { return engine.counters().in_flight == 0; }));
  EXPECT_FALSE(queued.started.load()) << "a withdrawn task never runs";
  EXPECT_FALSE(Readable(EngineFd(ctx))) << "nobody is woken for a job given up";
  ASYNC_WAIT_CTX_free(ctx);
}

// A thread exits while a worker runs its job's task: the exit waits for the
// task, and the engine wakes nobody afterwards (before, the worker went on
// writing to the request on the dropped pages, and signalled the fd).
TEST_F(OffloadGivenUp, AThreadExitingWhileItsTaskRunsWaitsForIt) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  Gate gate;
  Offloaded running(engine, &gate);
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  std::atomic<bool> exited{false};
  std::thread owner([&] {
    StartPaused(ctx, &OffloadingJob, &running);
    ASSERT_TRUE(WaitUntil([&] { return running.started.load(); }));
  });
  std::thread watcher([&] {
    owner.join();
    exited = true;
  });
  ASSERT_TRUE(WaitUntil([&] { return running.started.load(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(exited.load()) << "the thread's exit waits for the task on its job's stack";
  gate.Open();
  watcher.join();
  EXPECT_TRUE(running.finished.load());
  EXPECT_EQ(engine.counters().completed, 1u);
  EXPECT_FALSE(Readable(EngineFd(ctx))) << "nobody is woken for a job given up";
  ASYNC_WAIT_CTX_free(ctx);
}

// A job paused (in a noexcept frame) on a queued task, whose context is
// freed: it cannot be unwound and becomes a tombstone, and its task is
// withdrawn before its stack is dropped.
TEST_F(OffloadGivenUp, ATombstoneWithItsTaskQueuedWithdrawsIt) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  BusyWorker busy(engine);
  Offloaded queued(engine);
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  StartPaused(ctx, &OffloadingJobThatCannotUnwind, &queued);
  ASYNC_WAIT_CTX_free(ctx);
  asyncjob_pool_stats stats{};
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.tombstones, 1u) << "a noexcept frame cannot be unwound";
  EXPECT_EQ(engine.counters().withdrawn, 1u);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << "freeing a context queues nothing";
  busy.Release();
  EXPECT_TRUE(WaitUntil([&] { return engine.counters().in_flight == 0; }));
  EXPECT_FALSE(queued.started.load()) << "a withdrawn task never runs";
}

// The same with the task running when the context is freed: the free waits
// for it, and the tombstone's fd is never signalled (the engine wakes nobody
// once the job is given up), so it waits for the bound or the cleanup.
TEST_F(OffloadGivenUp, ATombstoneWithItsTaskRunningWaitsForIt) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  Gate gate;
  Offloaded running(engine, &gate);
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  StartPaused(ctx, &OffloadingJobThatCannotUnwind, &running);
  const int fd = EngineFd(ctx);
  ASSERT_TRUE(WaitUntil([&] { return running.started.load(); }));
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    gate.Open();
  });
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(running.finished.load()) << "the free returned only once the task was done";
  opener.join();
  EXPECT_FALSE(Readable(fd)) << "nobody is woken for a job given up";
  EXPECT_EQ(engine.counters().completed, 1u);
  asyncjob_pool_stats stats{};
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.tombstones, 1u);
}

// The owner frees a job's context on its own thread while the job, paused
// on another thread, has its task running, and then frees the connection
// the callback's argument points to: the completion calls no callback (it
// used to call the one copied at submission, with the freed argument).
// The job stays paused until its own thread cancels it.
namespace {
std::atomic<int> connection_callbacks{0};
struct Connection {
  int wakeups = 0;
  static int Wake(void* self) {
    ++static_cast<Connection*>(self)->wakeups;
    connection_callbacks.fetch_add(1);
    return 1;
  }
};
}  // namespace

TEST_F(OffloadGivenUp, AContextFreedFromAnotherThreadGetsNoCallbackAfterTheFree) {
  Engine engine({.workers = 1, .queue_capacity = 4});
  Gate gate;
  Offloaded running(engine, &gate);
  auto* connection = new Connection;
  connection_callbacks = 0;
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_WAIT_CTX_set_callback(ctx, &Connection::Wake, connection);
  std::mutex mutex;
  std::condition_variable cv;
  bool paused = false;
  bool end = false;
  bool cancelled = false;
  std::thread owner([&] {
    ASYNC_JOB* job = StartPaused(ctx, &OffloadingJob, &running);
    std::unique_lock lock(mutex);
    paused = true;
    cv.notify_all();
    cv.wait(lock, [&] { return end; });
    cancelled = asyncjob_cancel_job(&job) == 1;
    ASYNC_cleanup_thread();
  });
  // Freed once the job has paused (the worker may start the task while the
  // job is still on its way into the pause).
  {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return paused; });
  }
  ASSERT_TRUE(WaitUntil([&] { return running.started.load(); }));
  ASYNC_WAIT_CTX_free(ctx);
  delete connection;
  gate.Open();
  EXPECT_TRUE(WaitUntil([&] { return engine.counters().completed == 1; }));
  EXPECT_EQ(connection_callbacks.load(), 0) << "a callback called after its context was freed";
  {
    std::lock_guard lock(mutex);
    end = true;
  }
  cv.notify_all();
  owner.join();
  EXPECT_TRUE(cancelled);
  EXPECT_TRUE(running.finished.load());
}
