// asyncjob_wait_ctx_call_callback(): an engine's worker calling a paused
// job's callback through its context, against the owner freeing that
// context on its own thread: a call after the free calls nothing, a free
// waits for a call in progress, and a callback may free its own context.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "asyncjob/async.h"
#include "support/test_support.h"

namespace {

using asyncjob_test::ErrorQueueEmpty;

// A job paused with `ctx` on a thread of its own, which cancels it (and
// cleans its pool up) when End() is called.
class JobOnItsOwnThread {
 public:
  explicit JobOnItsOwnThread(ASYNC_WAIT_CTX* ctx) {
    thread_ = std::thread([this, ctx] {
      ASYNC_JOB* job = nullptr;
      int ret = 0;
      const int status = ASYNC_start_job(
          &job, ctx, &ret,
          [](void*) {
            ASYNC_pause_job();
            return 1;
          },
          nullptr, 0);
      {
        std::lock_guard lock(mutex_);
        paused_ = status == ASYNC_PAUSE;
        started_ = true;
      }
      cv_.notify_all();
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return end_; });
      if (paused_) cancelled_ = asyncjob_cancel_job(&job) == 1;
      ASYNC_cleanup_thread();
    });
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return started_; });
  }
  bool paused() {
    std::lock_guard lock(mutex_);
    return paused_;
  }
  // Cancels the job on its thread; true when that worked.
  bool End() {
    {
      std::lock_guard lock(mutex_);
      end_ = true;
    }
    cv_.notify_all();
    thread_.join();
    return cancelled_;
  }

 private:
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool started_ = false;
  bool paused_ = false;
  bool end_ = false;
  bool cancelled_ = false;
};

struct Calls {
  std::atomic<int> count{0};
  std::function<void()> during;  // run inside the callback, when set
  static int Callback(void* self) {
    auto* calls = static_cast<Calls*>(self);
    if (calls->during) calls->during();
    calls->count.fetch_add(1);
    return 1;
  }
};

class CallbackCall : public ::testing::Test {
 protected:
  void SetUp() override { asyncjob_clear_errors(); }
  void TearDown() override { asyncjob_clear_errors(); }
};

}  // namespace

TEST_F(CallbackCall, CallsTheCallbackSetNow) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Calls first;
  Calls second;
  ASYNC_WAIT_CTX_set_callback(ctx, &Calls::Callback, &first);
  EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 1);
  ASYNC_WAIT_CTX_set_callback(ctx, &Calls::Callback, &second);
  std::thread([ctx] { EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 1); }).join();
  EXPECT_EQ(first.count.load(), 1);
  EXPECT_EQ(second.count.load(), 1);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST_F(CallbackCall, WithoutACallbackNothingIsCalledOrQueued) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 0);
  EXPECT_TRUE(ErrorQueueEmpty());
  ASYNC_WAIT_CTX_free(ctx);
}

TEST_F(CallbackCall, ANullContextIsAnError) {
  EXPECT_EQ(asyncjob_wait_ctx_call_callback(nullptr), 0);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)), ASYNCJOB_R_PASSED_NULL_PARAMETER);
}

// The owner frees the context while its job is paused on another thread:
// the context stays for the job, but its callback is never called again.
TEST_F(CallbackCall, AfterTheOwnerFreedTheContextNothingIsCalled) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Calls calls;
  ASYNC_WAIT_CTX_set_callback(ctx, &Calls::Callback, &calls);
  JobOnItsOwnThread job(ctx);
  ASSERT_TRUE(job.paused());
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 0);
  EXPECT_EQ(calls.count.load(), 0);
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_TRUE(job.End());
}

// A free on the owner's thread waits for a call in progress on another
// thread: when it returns, the callback has returned, so the owner may
// free what the callback's argument points to.
TEST_F(CallbackCall, AFreeWaitsForACallInProgress) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Calls calls;
  std::atomic<bool> inside{false};
  calls.during = [&inside] {
    inside = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  };
  ASYNC_WAIT_CTX_set_callback(ctx, &Calls::Callback, &calls);
  JobOnItsOwnThread job(ctx);
  ASSERT_TRUE(job.paused());
  std::thread worker([ctx] { EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 1); });
  while (!inside.load()) std::this_thread::yield();
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(calls.count.load(), 1) << "the free returned before the callback did";
  worker.join();
  EXPECT_TRUE(job.End());
}

// A callback that frees its own context (on the thread calling it) does not
// wait for itself; later calls call nothing.
TEST_F(CallbackCall, ACallbackMayFreeItsOwnContext) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Calls calls;
  calls.during = [ctx] { ASYNC_WAIT_CTX_free(ctx); };
  ASYNC_WAIT_CTX_set_callback(ctx, &Calls::Callback, &calls);
  JobOnItsOwnThread job(ctx);
  ASSERT_TRUE(job.paused());
  std::thread([ctx] {
    EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 1);
    EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 0);
  }).join();
  EXPECT_EQ(calls.count.load(), 1);
  EXPECT_TRUE(job.End());
}

namespace {
int callback_cleanups = 0;
int key;
void CountCleanup(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD, void*) { ++callback_cleanups; }
}  // namespace

// Outside the documented use (no job keeps the context), a callback that
// frees its own context still leaves the call that is running it sound: the
// context is deleted, its cleanups run, as that call returns.
TEST_F(CallbackCall, ACallbackFreeingAContextNoJobKeepsIsDeletedAsTheCallReturns) {
  callback_cleanups = 0;
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, 0, nullptr, &CountCleanup);
  Calls calls;
  calls.during = [ctx] {
    ASYNC_WAIT_CTX_free(ctx);
    EXPECT_EQ(callback_cleanups, 0) << "not deleted under the running call";
  };
  ASYNC_WAIT_CTX_set_callback(ctx, &Calls::Callback, &calls);
  std::thread([ctx] { EXPECT_EQ(asyncjob_wait_ctx_call_callback(ctx), 1); }).join();
  EXPECT_EQ(calls.count.load(), 1);
  EXPECT_EQ(callback_cleanups, 1);
}

// A's callback calls B's, and B's frees A: the free neither waits for the
// calls open on its own thread nor deletes A under them.
TEST_F(CallbackCall, ANestedCallbackFreeingTheOuterContext) {
  callback_cleanups = 0;
  ASYNC_WAIT_CTX* outer = ASYNC_WAIT_CTX_new();
  ASYNC_WAIT_CTX* inner = ASYNC_WAIT_CTX_new();
  ASYNC_WAIT_CTX_set_wait_fd(outer, &key, 0, nullptr, &CountCleanup);
  Calls outer_calls;
  Calls inner_calls;
  outer_calls.during = [inner] { EXPECT_EQ(asyncjob_wait_ctx_call_callback(inner), 1); };
  inner_calls.during = [outer] { ASYNC_WAIT_CTX_free(outer); };
  ASYNC_WAIT_CTX_set_callback(outer, &Calls::Callback, &outer_calls);
  ASYNC_WAIT_CTX_set_callback(inner, &Calls::Callback, &inner_calls);
  std::thread([outer] { EXPECT_EQ(asyncjob_wait_ctx_call_callback(outer), 1); }).join();
  EXPECT_EQ(outer_calls.count.load(), 1);
  EXPECT_EQ(inner_calls.count.load(), 1);
  EXPECT_EQ(callback_cleanups, 1);
  ASYNC_WAIT_CTX_free(inner);
}
