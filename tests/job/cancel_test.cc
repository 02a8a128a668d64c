// Cancelling paused jobs through the C API (asyncjob_cancel_job and cancel
// hooks), and the per-job C++ exception state.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

#include "asyncjob/async.h"
#include "support/mapping_check.h"
#include "support/test_support.h"

using asyncjob_test::PopError;

namespace {

// What destructors, hooks and handlers did, in order.
std::vector<std::string> events;

class Cancel : public ::testing::Test {
 protected:
  void SetUp() override {
    asyncjob_clear_errors();
    events.clear();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
};

struct Noisy {
  explicit Noisy(std::string name) : name_(std::move(name)) {}
  ~Noisy() { events.push_back("~" + name_); }
  std::string name_;
};

int RaiiThenPause(void*) {
  Noisy outer("outer");
  {
    Noisy inner("inner");
    ASYNC_pause_job();
    events.push_back("not reached after cancel");
  }
  return 5;
}

void RecordHook(void* arg) {
  events.push_back(std::string("hook ") + static_cast<const char*>(arg));
}

}  // namespace

TEST_F(Cancel, UnwindsThePausedStackRunningDestructors) {
  ASYNC_JOB* job = nullptr;
  int ret = 99;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &RaiiThenPause, nullptr, 0), ASYNC_PAUSE);
  EXPECT_TRUE(events.empty());
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(ret, 99) << "a cancelled job writes no result";
  EXPECT_EQ(events, (std::vector<std::string>{"~inner", "~outer"}));
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u) << "the job went back to the pool";
  EXPECT_EQ(stats.idle, 1u);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

TEST_F(Cancel, HooksRunNewestFirstBeforeTheUnwind) {
  auto job_fn = [](void*) -> int {
    Noisy guard("guard");
    asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("first"));
    asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("second"));
    asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("removed"));
    EXPECT_EQ(asyncjob_remove_cancel_hook(&RecordHook, const_cast<char*>("removed")), 1);
    EXPECT_EQ(asyncjob_remove_cancel_hook(&RecordHook, const_cast<char*>("never added")), 0);
    ASYNC_pause_job();
    return 0;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +job_fn, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(events, (std::vector<std::string>{"hook second", "hook first", "~guard"}));
}

TEST_F(Cancel, HooksAreForgottenWhenAJobFinishes) {
  auto finishes_with_hook = [](void*) -> int {
    asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("stale"));
    return 1;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +finishes_with_hook, nullptr, 0), ASYNC_FINISH);
  // The same pooled job runs again and is cancelled: the old hook must not run.
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &RaiiThenPause, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(events, (std::vector<std::string>{"~inner", "~outer"}));
}

TEST_F(Cancel, HookLimitAndOutsideAJob) {
  EXPECT_EQ(asyncjob_add_cancel_hook(&RecordHook, nullptr), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_NOT_IN_JOB);
  EXPECT_EQ(asyncjob_add_cancel_hook(nullptr, nullptr), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);
  auto many = [](void*) -> int {
    int added = 0;
    while (asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("x")) == 1 && added < 100) {
      ++added;
    }
    return added;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +many, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 8);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_TOO_MANY_CANCEL_HOOKS);
}

namespace {
const int kEngineKey = 0;
int closed_fds = 0;
void CloseEventFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) {
  close(fd);
  ++closed_fds;
}
int WaitOnEventFd(void*) {
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &kEngineKey, fd, nullptr, &CloseEventFd);
  ASYNC_pause_job();
  return 1;
}
}  // namespace

TEST_F(Cancel, WhilePausedOnAnFdCleansTheFdUp) {
  size_t fds_before = asyncjob_test::CountOpenFds();
  closed_fds = 0;
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &WaitOnEventFd, nullptr, 0), ASYNC_PAUSE);
  OSSL_ASYNC_FD fd = -1;
  size_t added = 0, deleted = 0;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, &fd, &added, nullptr, &deleted), 1);
  ASSERT_EQ(added, 1u);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(closed_fds, 1) << "the fd's cleanup routine ran";
  size_t count = 9;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &count), 1);
  EXPECT_EQ(count, 0u);
  OSSL_ASYNC_FD gone = -1;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, nullptr, &added, &gone, &deleted), 1);
  EXPECT_EQ(deleted, 1u) << "the loop learns the fd is gone";
  EXPECT_EQ(gone, fd);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(closed_fds, 1) << "no second cleanup at free";
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
  // The context can serve a new job.
}

namespace {
int PauseOnce(void*) {
  ASYNC_pause_job();
  return 2;
}
}  // namespace

// A context's fds are cleaned up when the job cancelled is its only one,
// whichever of its jobs that is: here the later of two, once the first
// (which set the fd) has finished.
TEST_F(Cancel, TheLastJobLeftInASharedContextCleansItsFdsUp) {
  closed_fds = 0;
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* first = nullptr;
  ASYNC_JOB* second = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&first, ctx, &ret, &WaitOnEventFd, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&second, ctx, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&first, ctx, &ret, &WaitOnEventFd, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(closed_fds, 0) << "a job that finishes leaves the fds alone";
  ASSERT_EQ(asyncjob_cancel_job(&second), 1);
  EXPECT_EQ(closed_fds, 1) << "the context's only job was cancelled";
  size_t count = 9;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &count), 1);
  EXPECT_EQ(count, 0u);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(closed_fds, 1) << "no second cleanup at free";
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

TEST_F(Cancel, FinishedOrMissingJobsAreClearErrors) {
  ASYNC_JOB* none = nullptr;
  EXPECT_EQ(asyncjob_cancel_job(&none), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);
  EXPECT_EQ(asyncjob_cancel_job(nullptr), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);

  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &RaiiThenPause, nullptr, 0), ASYNC_PAUSE);
  ASYNC_JOB* stale = job;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(asyncjob_cancel_job(&stale), 0);
  asyncjob_test::QueuedError error = PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_JOB_NOT_PAUSED);
  EXPECT_NE(error.message.find("finished"), std::string::npos) << error.message;
  EXPECT_NE(stale, nullptr) << "*job is left alone on failure";
}

TEST_F(Cancel, FromAnotherThreadFailsAndLeavesTheJob) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &RaiiThenPause, nullptr, 0), ASYNC_PAUSE);
  int status = -1;
  int reason = 0;
  std::thread other([&] {
    ASYNC_JOB* copy = job;
    status = asyncjob_cancel_job(&copy);
    reason = PopError().reason();
  });
  other.join();
  EXPECT_EQ(status, 0);
  EXPECT_EQ(reason, ASYNCJOB_R_WRONG_THREAD);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 5);
}

namespace {
ASYNC_JOB* victim = nullptr;
int victim_cancel_status = -1;
struct CancelsVictimOnDestruction {
  ~CancelsVictimOnDestruction() { victim_cancel_status = asyncjob_cancel_job(&victim); }
};
int CancelsAnotherWhileUnwinding(void*) {
  CancelsVictimOnDestruction cleanup;
  ASYNC_pause_job();
  return 0;
}
}  // namespace

TEST_F(Cancel, FromACleanupPathOfAnotherCancelledJob) {
  ASYNC_JOB* first = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&victim, nullptr, &ret, &RaiiThenPause, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&first, nullptr, &ret, &CancelsAnotherWhileUnwinding, nullptr, 0),
            ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&first), 1);
  EXPECT_EQ(victim_cancel_status, 1);
  EXPECT_EQ(victim, nullptr);
  EXPECT_EQ(events, (std::vector<std::string>{"~inner", "~outer"}));
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u);
}

TEST_F(Cancel, PausingIsDisabledWhileUnwinding) {
  struct PausesInDestructor {
    ~PausesInDestructor() {
      events.push_back(ASYNC_pause_job() == 1 ? "pause returned" : "?");
      events.push_back(asyncjob_is_cancelling() ? "cancelling" : "not cancelling");
    }
  };
  auto job_fn = [](void*) -> int {
    PausesInDestructor p;
    ASYNC_pause_job();
    return 0;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +job_fn, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(asyncjob_is_cancelling(), 0);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1) << "the destructor's pause did not park the job";
  EXPECT_EQ(events, (std::vector<std::string>{"pause returned", "cancelling"}));
}

TEST_F(Cancel, CatchAllBlocksThatRethrowLetTheUnwindThrough) {
  auto job_fn = [](void*) -> int {
    try {
      Noisy n("in try");
      ASYNC_pause_job();
    } catch (...) {
      events.push_back("catch(...)");
      throw;
    }
    return 0;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +job_fn, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(events, (std::vector<std::string>{"~in try", "catch(...)"}));
}

// ----- Exception state per job -----

namespace {
int PauseInsideCatch(void*) {
  try {
    throw std::runtime_error("inside the job");
  } catch (const std::runtime_error& e) {
    ASYNC_pause_job();  // paused with an exception being handled
    // Still the same exception after the resume.
    std::exception_ptr current = std::current_exception();
    try {
      std::rethrow_exception(current);
    } catch (const std::runtime_error& again) {
      return std::string(again.what()) == "inside the job" ? 1 : 0;
    }
  }
  return 0;
}
}  // namespace

TEST_F(Cancel, PausingInsideACatchBlockKeepsEachSidesExceptionState) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseInsideCatch, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(std::uncaught_exceptions(), 0);
  EXPECT_FALSE(std::current_exception()) << "the job's caught exception stays in the job";
  try {
    throw std::logic_error("caller's own");
  } catch (const std::logic_error&) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 1);
    try {
      throw;  // the caller's exception is intact after the job ran
    } catch (const std::logic_error& mine) {
      EXPECT_STREQ(mine.what(), "caller's own");
    }
  }
}

namespace {
// Reports whether it runs with no exception of its own, before and after
// a pause, and handles one of its own in between.
int SeesNoCallerException(void*) {
  int clean = std::current_exception() == nullptr && std::uncaught_exceptions() == 0 ? 1 : 0;
  try {
    throw std::runtime_error("job's own");
  } catch (const std::runtime_error&) {
  }
  ASYNC_pause_job();
  return clean + (std::current_exception() == nullptr ? 1 : 0);
}
}  // namespace

// Each combination of the caller's state (empty, or inside a catch block)
// at the start and at the resume: the job never sees the caller's
// exception, and the caller's is intact afterwards.
TEST_F(Cancel, AJobNeverSeesItsCallersExceptionWhateverEachSideHolds) {
  for (int combination = 0; combination < 4; ++combination) {
    const bool start_in_catch = (combination & 1) != 0;
    const bool resume_in_catch = (combination & 2) != 0;
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    auto step = [&](bool in_catch, int expected) {
      if (!in_catch) {
        EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &SeesNoCallerException, nullptr, 0),
                  expected);
        EXPECT_FALSE(std::current_exception());
        return;
      }
      try {
        throw std::logic_error("caller's own");
      } catch (const std::logic_error&) {
        EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &SeesNoCallerException, nullptr, 0),
                  expected);
        try {
          throw;
        } catch (const std::logic_error& mine) {
          EXPECT_STREQ(mine.what(), "caller's own");
        }
      }
      EXPECT_FALSE(std::current_exception());
    };
    step(start_in_catch, ASYNC_PAUSE);
    step(resume_in_catch, ASYNC_FINISH);
    EXPECT_EQ(ret, 2) << "start in a catch block: " << start_in_catch
                      << ", resume in one: " << resume_in_catch;
  }
}

TEST(CancelDeathTest, AnExceptionEscapingACJobFunctionIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto throws = [](void*) -> int { throw std::runtime_error("escapes"); };
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        ASYNC_start_job(&job, nullptr, &ret, +throws, nullptr, 0);
      },
      "asyncjob: a C\\+\\+ exception escaped job 0x[0-9a-f]+");
}

// The pause being cancelled may be the last call of its caller, which then
// has no frame of its own left: the unwind starts in the caller's caller.
namespace {
__attribute__((noinline)) int PauseAsLastCall() { return ASYNC_pause_job(); }

int PausesThroughATailCall(void*) {
  Noisy guard("guard");
  try {
    PauseAsLastCall();
  } catch (...) {
    events.push_back("caught");
    throw;
  }
  return 1;
}

int PausesTwice(void*) {
  Noisy guard("guard");
  ASYNC_pause_job();
  events.push_back("resumed");
  ASYNC_pause_job();
  return 2;
}
}  // namespace

TEST_F(Cancel, UnwindsFromAPauseThatWasATailCall) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesThroughATailCall, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(events, (std::vector<std::string>{"caught", "~guard"}));
}

TEST_F(Cancel, AResumedAndPausedAgainJobUnwindsFromItsSecondPause) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesTwice, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesTwice, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(events, (std::vector<std::string>{"resumed", "~guard"}));
}

TEST_F(Cancel, AJobPausedWhenItsPoolWasCleanedUpIsCancelledAndFreed) {
  ASYNC_cleanup_thread();
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &RaiiThenPause, nullptr, 0), ASYNC_PAUSE);
  ASYNC_cleanup_thread();
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(events, (std::vector<std::string>{"~inner", "~outer"}));
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before));
  }
}

TEST_F(Cancel, AJobThatPausedAfterItsPoolWasCleanedUpIsCancelledAndFreed) {
  ASYNC_cleanup_thread();
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesTwice, nullptr, 0), ASYNC_PAUSE);
  ASYNC_cleanup_thread();
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(events, (std::vector<std::string>{"resumed", "~guard"}));
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before));
  }
}
