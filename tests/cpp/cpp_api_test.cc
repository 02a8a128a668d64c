// The C++ API (<asyncjob/asyncjob.hpp>): typed results, exceptions carried
// out of jobs, cancellation with RAII, wait-context and pause helpers, and
// interoperation with the C API.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "support/test_support.h"

namespace {

class CppApi : public ::testing::Test {
 protected:
  void SetUp() override { asyncjob_clear_errors(); }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
};

std::vector<std::string> events;

struct Noisy {
  explicit Noisy(std::string label) : name(std::move(label)) {}
  ~Noisy() { events.push_back("~" + name); }
  std::string name;
};

}  // namespace

TEST_F(CppApi, TypedResultOfAnyMovableType) {
  auto job = asyncjob::start([] { return std::make_unique<std::string>("moved out"); });
  ASSERT_TRUE(job.finished());
  std::unique_ptr<std::string> value = job.get();
  EXPECT_EQ(*value, "moved out");

  auto vec = asyncjob::start([] {
    asyncjob::pause();
    return std::vector<int>{1, 2, 3};
  });
  EXPECT_TRUE(vec.paused());
  vec.resume();
  EXPECT_EQ(vec.get(), (std::vector<int>{1, 2, 3}));
}

TEST_F(CppApi, VoidJobsAndCapturedState) {
  int counter = 0;
  auto job = asyncjob::start([&] {
    for (int i = 0; i < 3; ++i) {
      ++counter;
      asyncjob::pause();
    }
  });
  int resumes = 0;
  while (!job.finished()) {
    job.resume();
    ++resumes;
  }
  EXPECT_EQ(resumes, 3);
  EXPECT_EQ(counter, 3);
  job.get();  // no value, no exception
}

TEST_F(CppApi, ExceptionIsRethrownToTheResumerAtFinish) {
  auto job = asyncjob::start([]() -> int {
    asyncjob::pause();
    throw std::runtime_error("from the job");
  });
  ASSERT_TRUE(job.paused());
  EXPECT_THROW(
      {
        try {
          job.resume();
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "from the job");
          throw;
        }
      },
      std::runtime_error);
  EXPECT_TRUE(job.finished());
  EXPECT_THROW(job.get(), std::runtime_error) << "get() rethrows it too";
}

TEST_F(CppApi, ExceptionBeforeTheFirstPauseLeavesStart) {
  EXPECT_THROW(asyncjob::start([]() -> int { throw std::logic_error("early"); }), std::logic_error);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u) << "the job finished and went back to the pool";
}

TEST_F(CppApi, PausingInsideACatchBlockIsSafe) {
  auto job = asyncjob::start([] {
    try {
      throw std::runtime_error("handled in the job");
    } catch (const std::exception& e) {
      asyncjob::pause();
      return std::string(e.what());
    }
  });
  EXPECT_FALSE(std::current_exception());
  try {
    throw 42;
  } catch (int) {
    job.resume();
    EXPECT_EQ(job.get(), "handled in the job");
    try {
      throw;
    } catch (int mine) {
      EXPECT_EQ(mine, 42);
    }
  }
}

TEST_F(CppApi, CancelRunsDestructorsAndHooks) {
  events.clear();
  auto job = asyncjob::start([] {
    Noisy resource("resource");
    asyncjob::OnCancel withdraw([] { events.push_back("withdraw request"); });
    asyncjob::pause();
    events.push_back("not reached");
    return 1;
  });
  ASSERT_TRUE(job.paused());
  job.cancel();
  EXPECT_TRUE(job.cancelled());
  EXPECT_TRUE(job.finished());
  EXPECT_EQ(events, (std::vector<std::string>{"withdraw request", "~resource"}));
  EXPECT_THROW(job.get(), asyncjob::JobWasCancelled);
  job.cancel();  // cancelling a finished job does nothing
}

TEST_F(CppApi, DestroyingAPausedJobCancelsIt) {
  events.clear();
  {
    auto job = asyncjob::start([] {
      Noisy resource("owned by the job");
      asyncjob::pause();
    });
    ASSERT_TRUE(job.paused());
  }
  EXPECT_EQ(events, (std::vector<std::string>{"~owned by the job"}));
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u);
}

TEST_F(CppApi, CatchAllInsideAJobMustRethrowTheCancellation) {
  events.clear();
  auto job = asyncjob::start([] {
    try {
      asyncjob::pause();
    } catch (...) {
      events.push_back(asyncjob::cancelling() ? "cancelling" : "other");
      if (asyncjob::cancelling()) throw;
    }
    return 0;
  });
  job.cancel();
  EXPECT_EQ(events, (std::vector<std::string>{"cancelling"}));
}

TEST_F(CppApi, MovedJobsKeepRunning) {
  auto job = asyncjob::start([] {
    asyncjob::pause();
    return 9;
  });
  asyncjob::Job<int> moved = std::move(job);
  EXPECT_FALSE(job.paused());
  ASSERT_TRUE(moved.paused());
  moved.resume();
  EXPECT_EQ(moved.get(), 9);
}

TEST_F(CppApi, ResumeOrGetInTheWrongStateThrows) {
  auto job = asyncjob::start([] {
    asyncjob::pause();
    return 1;
  });
  EXPECT_THROW(job.get(), asyncjob::Error);
  job.resume();
  EXPECT_THROW(job.resume(), asyncjob::Error);
}

TEST_F(CppApi, PoolExhaustedIsItsOwnError) {
  ASSERT_EQ(ASYNC_init_thread(1, 0), 1);
  auto first = asyncjob::start([] { asyncjob::pause(); });
  EXPECT_THROW(asyncjob::start([] {}), asyncjob::PoolExhausted);
  first.resume();
}

TEST_F(CppApi, PauseBlockerNests) {
  auto job = asyncjob::start([] {
    int skipped = 0;
    {
      asyncjob::PauseBlocker outer;
      {
        asyncjob::PauseBlocker inner;
        asyncjob::pause();
        ++skipped;
      }
      asyncjob::pause();
      ++skipped;
    }
    asyncjob::pause();  // this one pauses
    return skipped;
  });
  ASSERT_TRUE(job.paused());
  job.resume();
  EXPECT_EQ(job.get(), 2);
}

TEST_F(CppApi, WaitCtxOwnsTheContextAndRegistrationsClearFds) {
  size_t fds_before = asyncjob_test::CountOpenFds();
  static const int key = 0;
  int fd = eventfd(0, EFD_CLOEXEC);
  {
    asyncjob::WaitCtx ctx;
    auto job = asyncjob::start(ctx, [fd] {
      asyncjob::WaitCtxRef mine = asyncjob::current_wait_ctx();
      {
        asyncjob::FdRegistration registration = mine.register_fd(&key, fd);
        EXPECT_EQ(mine.fd(&key), fd);
        asyncjob::pause();
      }  // cleared here
      EXPECT_FALSE(mine.fd(&key).has_value());
      asyncjob::pause();
      return 0;
    });
    EXPECT_EQ(ctx.fds(), (std::vector<OSSL_ASYNC_FD>{fd}));
    EXPECT_EQ(ctx.changes().added, (std::vector<OSSL_ASYNC_FD>{fd}));
    job.resume();
    EXPECT_TRUE(ctx.fds().empty());
    EXPECT_EQ(ctx.changes().deleted, (std::vector<OSSL_ASYNC_FD>{fd}));
    job.resume();
    EXPECT_EQ(job.get(), 0);
    EXPECT_THROW((void)ctx.register_fd(&key, -5), asyncjob::Error);
  }
  close(fd);
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

TEST_F(CppApi, ErrorCarriesTheQueuedReason) {
  asyncjob::WaitCtx ctx;
  static const int key = 0;
  auto registration = ctx.register_fd(&key, 3);
  try {
    (void)ctx.register_fd(&key, 4);
    FAIL() << "a duplicate key must throw";
  } catch (const asyncjob::Error& e) {
    EXPECT_EQ(e.reason(), ASYNCJOB_R_DUPLICATE_KEY);
    EXPECT_NE(std::string(e.what()).find("ASYNC_WAIT_CTX_set_wait_fd"), std::string::npos);
  }
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << "the entry moved into the exception";
  registration.release();
}

namespace {
// A C-style "engine" that pauses the job it runs in.
extern "C" int CEngineOperation(void) {
  ASYNC_pause_job();
  return 21;
}
int CJobUsingCppPause(void*) {
  asyncjob::pause();  // C++ pause inside a job started through the C API
  return asyncjob::in_job() ? 7 : 0;
}
}  // namespace

TEST_F(CppApi, InteroperatesWithTheCApi) {
  auto job = asyncjob::start([] { return CEngineOperation() * 2; });
  ASSERT_TRUE(job.paused());
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
  job.resume();
  EXPECT_EQ(job.get(), 42);

  ASYNC_JOB* c_job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&c_job, nullptr, &ret, &CJobUsingCppPause, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&c_job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 7);
}

namespace {
int cleanups_run = 0;
void CloseAndCount(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) {
  close(fd);
  ++cleanups_run;
}
}  // namespace

TEST_F(CppApi, CancellingAJobHoldingAnFdRegistrationRunsTheCleanup) {
  size_t fds_before = asyncjob_test::CountOpenFds();
  cleanups_run = 0;
  static const int key = 0;
  asyncjob::WaitCtx ctx;
  auto job = asyncjob::start(ctx, [] {
    int fd = eventfd(0, EFD_CLOEXEC);
    asyncjob::FdRegistration registration =
        asyncjob::current_wait_ctx().register_fd(&key, fd, &CloseAndCount);
    asyncjob::pause();
  });
  ASSERT_TRUE(job.paused());
  job.cancel();
  EXPECT_EQ(cleanups_run, 1) << "the cleanup routine closed the fd";
  EXPECT_TRUE(ctx.fds().empty());
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

// ----- Jobs that cannot be cancelled, and actions that throw -----

namespace {
__attribute__((noinline)) void PauseInNoexcept() noexcept {
  Noisy inside("in noexcept");
  asyncjob::pause();
}
}  // namespace

TEST_F(CppApi, CancelThrowsWhenTheStackCannotBeUnwoundAndTheJobStaysPaused) {
  events.clear();
  auto job = asyncjob::start([] {
    asyncjob::OnCancel action([] { events.push_back("action"); });
    PauseInNoexcept();
    return 4;
  });
  ASSERT_TRUE(job.paused());
  try {
    job.cancel();
    ADD_FAILURE() << "cancel() returned";
  } catch (const asyncjob::Error& error) {
    EXPECT_EQ(error.reason(), ASYNCJOB_R_NOEXCEPT_FRAME);
    EXPECT_NE(std::string(error.what()).find("cannot be cancelled"), std::string::npos)
        << error.what();
  }
  EXPECT_TRUE(job.paused());
  EXPECT_FALSE(job.cancelled());
  EXPECT_TRUE(events.empty());
  job.resume();
  ASSERT_TRUE(job.finished());
  EXPECT_EQ(job.get(), 4);
  EXPECT_EQ(events, (std::vector<std::string>{"~in noexcept"}));
}

TEST_F(CppApi, DestroyingAJobThatCannotBeCancelledLeavesItPausedAndSaysSo) {
  events.clear();
  ASYNC_JOB* handle = nullptr;
  testing::internal::CaptureStderr();
  {
    auto job = asyncjob::start([] {
      PauseInNoexcept();
      events.push_back("finished after all");
    });
    handle = job.handle();
  }  // no terminate: the job stays paused
  std::string said = testing::internal::GetCapturedStderr();
  EXPECT_NE(said.find("could not be cancelled"), std::string::npos) << said;
  EXPECT_NE(said.find("a noexcept frame"), std::string::npos) << said;
  EXPECT_EQ(asyncjob_test::PopError().reason(), ASYNCJOB_R_NOEXCEPT_FRAME);
  EXPECT_TRUE(events.empty());
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 1u);
  // Whoever holds the handle can still finish it; its task is freed then.
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&handle, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(events, (std::vector<std::string>{"~in noexcept", "finished after all"}));
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u);
}

TEST_F(CppApi, AnOnCancelActionThatThrowsIsReportedAndTheOthersStillRun) {
  events.clear();
  auto job = asyncjob::start([] {
    Noisy resource("resource");
    asyncjob::OnCancel first([] { events.push_back("first action"); });
    asyncjob::OnCancel throws([] { throw std::runtime_error("withdraw failed"); });
    asyncjob::OnCancel last([] { events.push_back("last action"); });
    asyncjob::pause();
    return 1;
  });
  job.cancel();  // does not throw: the job was cancelled
  EXPECT_TRUE(job.cancelled());
  EXPECT_EQ(events, (std::vector<std::string>{"last action", "first action", "~resource"}));
  asyncjob_test::QueuedError error = asyncjob_test::PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_CANCEL_HOOK_THREW);
  EXPECT_NE(error.message.find("withdraw failed"), std::string::npos) << error.message;
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

// A WaitCtx destroyed before the Job paused in it (declared after it, or
// owned by a connection freed first): the job is orphaned. With an
// OnCancel action it is unwound there and then, and the Job reports it
// cancelled; without, it never runs again and the Job's destructor frees
// its callable without a word.
TEST_F(CppApi, AJobWhoseWaitCtxIsDestroyedFirstIsReportedCancelled) {
  events.clear();
  std::optional<asyncjob::Job<int>> job;
  {
    asyncjob::WaitCtx ctx;
    job.emplace(asyncjob::start(ctx, [] {
      Noisy resource("resource");
      asyncjob::OnCancel withdraw([] { events.push_back("withdraw"); });
      asyncjob::pause();
      return 1;
    }));
    ASSERT_TRUE(job->paused());
  }
  EXPECT_EQ(events, (std::vector<std::string>{"withdraw", "~resource"}));
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  EXPECT_THROW(job->resume(), asyncjob::JobWasCancelled);
  EXPECT_TRUE(job->cancelled());
  job.reset();
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u);
}

TEST_F(CppApi, AJobOrphanedWithoutCancelActionsNeverRunsAgain) {
  events.clear();
  std::optional<asyncjob::Job<int>> job;
  {
    asyncjob::WaitCtx ctx;
    job.emplace(asyncjob::start(ctx, [] {
      Noisy resource("resource");
      asyncjob::pause();
      events.push_back("resumed");
      return 1;
    }));
  }
  EXPECT_TRUE(events.empty()) << "a tombstone is not unwound";
  try {
    job->resume();
    ADD_FAILURE() << "an orphan was resumed";
  } catch (const asyncjob::Error& error) {
    EXPECT_EQ(error.reason(), ASYNCJOB_R_JOB_ORPHANED);
  }
  testing::internal::CaptureStderr();
  job.reset();  // frees the callable; nothing to say
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(events.empty());
  asyncjob_clear_errors();
}
