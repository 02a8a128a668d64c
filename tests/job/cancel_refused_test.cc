// Cancelling jobs whose stacks cannot be unwound, through the C API: a job
// paused in a noexcept function, in a destructor, or beneath C code built
// without unwind tables. Throwing JobCancelled there would end in
// std::terminate; instead asyncjob_cancel_job returns 0 with the reason
// queued, and the job stays paused exactly as it was. Also: cancel hooks
// that throw, and hooks added or removed while a job is being cancelled.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "asyncjob/async.h"
#include "no_unwind_tables.h"
#include "support/test_support.h"

using asyncjob_test::PopError;
using asyncjob_test::QueuedError;

namespace {

std::vector<std::string> events;

class CancelRefused : public ::testing::Test {
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

void RecordHook(void* name) { events.push_back(std::string("hook ") + static_cast<char*>(name)); }

__attribute__((noinline)) int PauseInNoexcept() noexcept {
  Noisy inner("noexcept");
  return ASYNC_pause_job();
}

// Pauses inside a noexcept function, then (resumed) pauses again outside it.
int PausesInNoexceptThenOutside(void*) {
  Noisy guard("guard");
  asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("h"));
  events.push_back(PauseInNoexcept() == 1 ? "resumed in noexcept" : "?");
  ASYNC_pause_job();
  events.push_back("resumed outside");
  return 7;
}

struct PausesWhenDestroyed {
  ~PausesWhenDestroyed() {
    ASYNC_pause_job();
    events.push_back("destructor resumed");
  }
};

int PausesInADestructorAtScopeExit(void*) {
  Noisy guard("guard");
  { PausesWhenDestroyed pauses; }
  return 8;
}

int PauseFromC(void*) {
  Noisy inner("under C");
  return ASYNC_pause_job();
}

int PausesBeneathCWithoutUnwindTables(void*) {
  Noisy guard("guard");
  return CallWithoutUnwindTables(&PauseFromC, nullptr);  // 1 + 1
}

// The refusal's message, matched as a whole.
void ExpectRefusal(const QueuedError& error, int reason, const std::string& why) {
  EXPECT_EQ(error.reason(), reason);
  std::regex shape(
      "job 0x[0-9a-f]+ cannot be cancelled: its stack cannot be unwound through "
      "frame 0x[0-9a-f]+ \\(.*\\): " +
      why + ".*");
  EXPECT_TRUE(std::regex_match(error.message, shape)) << error.message;
}

}  // namespace

TEST_F(CancelRefused, PausedInANoexceptFunction) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesInNoexceptThenOutside, nullptr, 0),
            ASYNC_PAUSE);
  ASYNC_JOB* paused = job;
  EXPECT_EQ(asyncjob_cancel_job(&job), 0);
  ExpectRefusal(PopError(), ASYNCJOB_R_NOEXCEPT_FRAME, "a noexcept frame");
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  EXPECT_EQ(job, paused) << "*job untouched";
  EXPECT_TRUE(events.empty()) << "no hook, no destructor ran";
  EXPECT_EQ(asyncjob_is_cancelling(), 0);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 1u);

  // Refused twice: still the same paused job.
  EXPECT_EQ(asyncjob_cancel_job(&job), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_NOEXCEPT_FRAME);

  // It resumes normally, and once it has left the noexcept frame it can be
  // cancelled: the hook and the destructor run then.
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesInNoexceptThenOutside, nullptr, 0),
            ASYNC_PAUSE);
  EXPECT_EQ(events, (std::vector<std::string>{"~noexcept", "resumed in noexcept"}));
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(events,
            (std::vector<std::string>{"~noexcept", "resumed in noexcept", "hook h", "~guard"}));
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

TEST_F(CancelRefused, PausedInADestructorDuringNormalScopeExit) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesInADestructorAtScopeExit, nullptr, 0),
            ASYNC_PAUSE);
  EXPECT_EQ(asyncjob_cancel_job(&job), 0);
  ExpectRefusal(PopError(), ASYNCJOB_R_NOEXCEPT_FRAME, "a noexcept frame");
  EXPECT_TRUE(events.empty());
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 8);
  EXPECT_EQ(events, (std::vector<std::string>{"destructor resumed", "~guard"}));
}

TEST_F(CancelRefused, PausedBeneathCWithoutUnwindTables) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesBeneathCWithoutUnwindTables, nullptr, 0),
            ASYNC_PAUSE);
  EXPECT_EQ(asyncjob_cancel_job(&job), 0);
  ExpectRefusal(PopError(), ASYNCJOB_R_STACK_NOT_UNWINDABLE, "no unwind information");
  EXPECT_TRUE(events.empty()) << "not even the destructor below the C frame ran";
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 2);
  EXPECT_EQ(events, (std::vector<std::string>{"~under C", "~guard"}));
}

TEST_F(CancelRefused, AJobOfAClosingPoolIsRefusedAndStillResumable) {
  // A closing pool's jobs are entered without return-free switching: the
  // other path into the pause.
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PausesInNoexceptThenOutside, nullptr, 0),
            ASYNC_PAUSE);
  ASYNC_cleanup_thread();
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  EXPECT_EQ(asyncjob_cancel_job(&job), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_NOEXCEPT_FRAME);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_PAUSE);
  // Paused again, outside the noexcept frame: now it can be cancelled.
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_EQ(events,
            (std::vector<std::string>{"~noexcept", "resumed in noexcept", "hook h", "~guard"}));
}

namespace {
const int kKey = 0;
void CloseFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }
int RegistersAnFdThenPausesInNoexcept(void*) {
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &kKey, eventfd(0, EFD_CLOEXEC), nullptr, &CloseFd);
  PauseInNoexcept();
  return 3;
}
}  // namespace

TEST_F(CancelRefused, LeavesTheWaitContextsRoundAlone) {
  std::size_t fds_before = asyncjob_test::CountOpenFds();
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &RegistersAnFdThenPausesInNoexcept, nullptr, 0),
            ASYNC_PAUSE);
  EXPECT_EQ(asyncjob_cancel_job(&job), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_NOEXCEPT_FRAME);
  std::size_t added = 0, deleted = 0;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, nullptr, &added, nullptr, &deleted), 1);
  EXPECT_EQ(added, 1u) << "the fd added before the refused cancel is still reported added";
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 3);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before);
}

// ----- Cancel hooks during cancellation -----

namespace {
void ThrowingHook(void*) { throw std::runtime_error("hook failed"); }
void ThrowingAnIntHook(void*) { throw 42; }

int ThreeHooksOneThrowing(void*) {
  Noisy guard("guard");
  asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("first"));
  asyncjob_add_cancel_hook(&ThrowingHook, nullptr);
  asyncjob_add_cancel_hook(&ThrowingAnIntHook, nullptr);
  asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("last"));
  ASYNC_pause_job();
  return 1;
}
}  // namespace

TEST_F(CancelRefused, AThrowingHookIsReportedAndTheCancellationGoesOn) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &ThreeHooksOneThrowing, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1) << "the job was cancelled all the same";
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(events, (std::vector<std::string>{"hook last", "hook first", "~guard"}));
  QueuedError thrown_int = PopError();
  EXPECT_EQ(thrown_int.reason(), ASYNCJOB_R_CANCEL_HOOK_THREW);
  QueuedError thrown_error = PopError();
  EXPECT_EQ(thrown_error.reason(), ASYNCJOB_R_CANCEL_HOOK_THREW);
  EXPECT_NE(thrown_error.message.find("hook failed"), std::string::npos) << thrown_error.message;
  EXPECT_EQ(thrown_error.message.find("escaped"), std::string::npos);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u);
}

namespace {
void RemovesFirst(void*) {
  events.push_back(asyncjob_remove_cancel_hook(&RecordHook, const_cast<char*>("first")) == 1
                       ? "removed first"
                       : "?");
}
struct AddsAHookWhenDestroyed {
  ~AddsAHookWhenDestroyed() {
    events.push_back(asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("late")) == 1
                         ? "late hook accepted"
                         : "late hook refused");
  }
};
int HooksChangingHooks(void*) {
  AddsAHookWhenDestroyed adds;
  asyncjob_add_cancel_hook(&RecordHook, const_cast<char*>("first"));
  asyncjob_add_cancel_hook(&RemovesFirst, nullptr);
  ASYNC_pause_job();
  return 1;
}
}  // namespace

TEST_F(CancelRefused, HooksAddedOrRemovedDuringCancellation) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &HooksChangingHooks, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  // The removed hook did not run; the one added on the unwind path was
  // accepted (so that RAII code has nothing to throw) and never ran.
  EXPECT_EQ(events, (std::vector<std::string>{"removed first", "late hook accepted"}));
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}
