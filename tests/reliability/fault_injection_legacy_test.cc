// Fault injection in the OpenSSL 1.1.0-pre3 layer (<asyncjob/legacy.h>),
// which creates an eventfd per job that asks for a wait fd and allocates a
// record and a wait context per job. A failure must give ASYNC_ERR, -1 or
// nothing done (as the function's contract says) with an error queued, leak
// no fd, and leave the pool usable.
//
// This file uses the legacy API only: it cannot share a translation unit
// with <asyncjob/async.h> (and so with the tests' support header).
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <string>

#include "asyncjob/legacy.h"
#include "fault_wraps.h"

// From <asyncjob/async.h>, which cannot be included with the legacy API.
extern "C" void asyncjob_set_stack_cache_limits(std::size_t per_thread, std::size_t process);
extern "C" void asyncjob_get_stack_cache_limits(std::size_t* per_thread, std::size_t* process);

namespace {

std::size_t OpenFds() {
  std::size_t count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count;
}

int PopReason(std::string* message = nullptr) {
  const char* text = nullptr;
  unsigned long code = asyncjob_get_error(&text);
  if (message != nullptr) *message = text != nullptr ? text : "";
  return code == 0 ? 0 : ASYNCJOB_ERR_GET_REASON(code);
}

int PauseOnceReturnNine(void*) {
  ASYNC_pause_job();
  return 9;
}

void ExpectLegacyJobRuns() {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, &PauseOnceReturnNine, nullptr, 0), ASYNC_PAUSE);
  EXPECT_GE(ASYNC_get_wait_fd(job), 0);
  ASYNC_wake(job);
  ASSERT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 9);
  EXPECT_EQ(PopReason(), 0);
}

class LegacyFaultInjection : public ::testing::Test {
 protected:
  void SetUp() override {
    // Stack allocation failures are made by failing mmap: with the stack
    // caches on, a cached stack would serve the job instead.
    asyncjob_get_stack_cache_limits(&saved_thread_cache_, &saved_process_cache_);
    asyncjob_set_stack_cache_limits(0, 0);
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    fds_before_ = OpenFds();
  }
  void TearDown() override {
    fault::Disarm();
    ASYNC_cleanup_thread();
    EXPECT_EQ(PopReason(), 0);
    EXPECT_EQ(OpenFds(), fds_before_) << "an fd leaked";
    asyncjob_set_stack_cache_limits(saved_thread_cache_, saved_process_cache_);
  }
  std::size_t fds_before_ = 0;
  std::size_t saved_thread_cache_ = 0;
  std::size_t saved_process_cache_ = 0;
};

int first_fd = -2;
int second_fd = -2;
int AskForTheWaitFdTwice(void*) {
  fault::Arm(fault::Call::kEventfd);
  first_fd = ASYNC_get_wait_fd(ASYNC_get_current_job());
  fault::Disarm();
  second_fd = ASYNC_get_wait_fd(ASYNC_get_current_job());
  ASYNC_pause_job();
  return 1;
}

}  // namespace

TEST_F(LegacyFaultInjection, WaitFdCreationFailureInsideAJob) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, &AskForTheWaitFdTwice, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(fault::Fired(), 1);
  EXPECT_EQ(first_fd, -1);
  std::string message;
  EXPECT_EQ(PopReason(&message), ASYNC_R_INIT_FAILED);
  EXPECT_NE(message.find("eventfd"), std::string::npos) << message;
  EXPECT_GE(second_fd, 0) << "a later call creates it";
  EXPECT_EQ(ASYNC_get_wait_fd(job), second_fd) << "one fd for the job's life";
  EXPECT_EQ(OpenFds(), fds_before_ + 1);
  ASSERT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(OpenFds(), fds_before_) << "closed when the job finished";
  ExpectLegacyJobRuns();
}

TEST_F(LegacyFaultInjection, WakeWithEventfdFailure) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, &PauseOnceReturnNine, nullptr, 0), ASYNC_PAUSE);
  fault::Arm(fault::Call::kEventfd);
  ASYNC_wake(job);
  fault::Disarm();
  EXPECT_EQ(fault::Fired(), 1);
  EXPECT_EQ(PopReason(), ASYNC_R_INIT_FAILED);
  EXPECT_EQ(OpenFds(), fds_before_) << "no fd was made";
  ASYNC_wake(job);
  EXPECT_EQ(PopReason(), 0);
  EXPECT_EQ(OpenFds(), fds_before_ + 1);
  ASSERT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 9);
}

TEST_F(LegacyFaultInjection, StartWithRecordOrWaitContextAllocationFailure) {
  ASSERT_EQ(ASYNC_init_thread(2, 1), 1);  // the pool needs no allocation below
  for (int nth = 1; nth <= 2; ++nth) {    // the job's record, then its wait context
    ASYNC_JOB* job = nullptr;
    int ret = 1234;
    fault::Arm(fault::Call::kNothrowNew, nth);
    EXPECT_EQ(ASYNC_start_job(&job, &ret, &PauseOnceReturnNine, nullptr, 0), ASYNC_ERR);
    fault::Disarm();
    EXPECT_EQ(fault::Fired(), 1) << nth;
    EXPECT_EQ(job, nullptr);
    EXPECT_EQ(ret, 1234);
    EXPECT_EQ(PopReason(), ASYNCJOB_R_MALLOC_FAILURE) << nth;
  }
  ExpectLegacyJobRuns();
}

TEST_F(LegacyFaultInjection, StartWithStackAllocationFailureFreesTheRecord) {
  ASYNC_JOB* job = nullptr;
  int ret = 1234;
  fault::Arm(fault::Call::kGuardedStackMmap);
  EXPECT_EQ(ASYNC_start_job(&job, &ret, &PauseOnceReturnNine, nullptr, 0), ASYNC_ERR);
  fault::Disarm();
  EXPECT_EQ(fault::Fired(), 1);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(PopReason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  ExpectLegacyJobRuns();
}
