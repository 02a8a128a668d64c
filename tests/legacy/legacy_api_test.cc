// legacy_api_test.cc - the OpenSSL 1.1.0-pre3 API of <asyncjob/legacy.h>.
//
// This file includes legacy.h only; what it needs of the current API comes
// through current_api_probe.h. Every test checks that the process holds as
// many file descriptors at its end as at its start.
#include "asyncjob/legacy.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "base/sanitizers.h"
#include "current_api_probe.h"

// LegacyTest.StartWithAnImpossibleArgumentSizeFailsCleanly asks the library
// to copy SIZE_MAX / 2 bytes of arguments; the sanitizers' allocators must let
// malloc return NULL for that instead of aborting the process. Options from
// ASAN_OPTIONS / TSAN_OPTIONS still apply on top of these.
#if ASYNCJOB_ASAN
extern "C" const char* __asan_default_options();
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }
#endif
#if ASYNCJOB_TSAN
extern "C" const char* __tsan_default_options();
extern "C" const char* __tsan_default_options() { return "allocator_may_return_null=1"; }
#endif

// Some tests let a thread exit with legacy jobs paused, to show that the
// legacy layer then frees what it gave those jobs. The jobs themselves, and
// the pool they came from, are the core's: it keeps the paused jobs of an
// exited thread (docs/safety.md, "Paused jobs at thread exit"), and with
// them that pool's one heap block, which LeakSanitizer is told to leave out
// here. Nothing of the legacy layer's is.
#if ASYNCJOB_ASAN
extern "C" const char* __lsan_default_suppressions();
extern "C" const char* __lsan_default_suppressions() {
  return "leak:asyncjob::job::Pool::CreateForThisThread\n";
}
#endif

namespace {

// ----- Helpers -----

std::size_t CountOpenFds() {
  std::size_t count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count;
}

bool IsOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }

bool Readable(int fd, int timeout_ms = 0) {
  pollfd entry{fd, POLLIN, 0};
  return poll(&entry, 1, timeout_ms) == 1 && (entry.revents & POLLIN) != 0;
}

std::string FdTarget(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char target[256] = {};
  ssize_t length = readlink(link, target, sizeof target - 1);
  return length > 0 ? std::string(target, static_cast<std::size_t>(length)) : std::string();
}

struct QueuedError {
  unsigned long code = 0;
  std::string message;
  int reason() const { return ASYNCJOB_ERR_GET_REASON(code); }
  int library() const { return ASYNCJOB_ERR_GET_LIB(code); }
};

QueuedError PopError() {
  const char* message = nullptr;
  QueuedError error;
  error.code = asyncjob_get_error(&message);
  error.message = message != nullptr ? message : "";
  return error;
}

bool ErrorQueueEmpty() { return asyncjob_peek_error(nullptr) == 0; }

// Pops one error and checks its reason and that its message names `what`.
void ExpectError(int reason, const char* what) {
  QueuedError error = PopError();
  EXPECT_EQ(error.library(), ASYNCJOB_ERR_LIB_ASYNC) << error.message;
  EXPECT_EQ(error.reason(), reason) << error.message;
  EXPECT_NE(error.message.find(what), std::string::npos) << error.message;
}

// Every test starts without a pool or queued errors and must give back every
// descriptor it opened.
class LegacyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    fds_at_start_ = CountOpenFds();
  }
  void TearDown() override {
    EXPECT_EQ(CountOpenFds(), fds_at_start_) << "a wait fd leaked";
    EXPECT_TRUE(ErrorQueueEmpty()) << PopError().message;
    ASYNC_cleanup_thread();
  }
  std::size_t fds_at_start_ = 0;
};

// ----- Job functions -----

int ReturnArgument(void* arg) { return *static_cast<int*>(arg); }

int PauseOnceThenReturn(void* arg) {
  ASYNC_pause_job();
  return *static_cast<int*>(arg);
}

// What a job saw, for the test to check after it ran.
struct Seen {
  ASYNC_JOB* current = nullptr;
  int in_job = -1;
  int fd_before_pause = -1;
  int fd_after_pause = -1;
  bool readable_after_resume = false;
  bool readable_after_clear = true;
};

int GetFdPauseGetFd(void* arg) {
  Seen* seen = *static_cast<Seen**>(arg);
  seen->current = ASYNC_get_current_job();
  seen->in_job = ASYNC_in_job();
  seen->fd_before_pause = ASYNC_get_wait_fd(seen->current);
  ASYNC_pause_job();
  seen->fd_after_pause = ASYNC_get_wait_fd(ASYNC_get_current_job());
  return 7;
}

// The spec's pattern: wake itself, pause, clear the wake once resumed.
int WakePauseClear(void* arg) {
  Seen* seen = *static_cast<Seen**>(arg);
  ASYNC_JOB* self = ASYNC_get_current_job();
  seen->current = self;
  ASYNC_wake(self);
  ASYNC_pause_job();
  seen->fd_after_pause = ASYNC_get_wait_fd(self);
  seen->readable_after_resume = Readable(seen->fd_after_pause);
  ASYNC_clear_wake(self);
  seen->readable_after_clear = Readable(seen->fd_after_pause);
  return 1;
}

// Starts `func` with a pointer argument (copied into the job) and expects a
// pause.
template <typename T>
ASYNC_JOB* StartPaused(int (*func)(void*), T* pointer) {
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  EXPECT_EQ(ASYNC_start_job(&job, &ret, func, &pointer, sizeof pointer), ASYNC_PAUSE);
  EXPECT_NE(job, nullptr);
  return job;
}

int Resume(ASYNC_JOB** job) {
  int ret = -1;
  EXPECT_EQ(ASYNC_start_job(job, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(*job, nullptr);
  return ret;
}

// ----- The header -----

#define LEGACY_STRINGIZE(x) #x
#define LEGACY_EXPANSION(x) LEGACY_STRINGIZE(x)

TEST(LegacyHeaderTest, LegacyNamesAreMacrosForTheirOwnSymbols) {
  EXPECT_STREQ(LEGACY_EXPANSION(ASYNC_init), "asyncjob_legacy_init");
  EXPECT_STREQ(LEGACY_EXPANSION(ASYNC_cleanup), "asyncjob_legacy_cleanup");
  EXPECT_STREQ(LEGACY_EXPANSION(ASYNC_start_job), "asyncjob_legacy_start_job");
  EXPECT_STREQ(LEGACY_EXPANSION(ASYNC_in_job), "asyncjob_legacy_in_job");
  EXPECT_STREQ(LEGACY_EXPANSION(ASYNC_get_wait_fd), "asyncjob_legacy_get_wait_fd");
  EXPECT_STREQ(LEGACY_EXPANSION(ASYNC_wake), "asyncjob_legacy_wake");
  EXPECT_STREQ(LEGACY_EXPANSION(ASYNC_clear_wake), "asyncjob_legacy_clear_wake");
}

TEST(LegacyHeaderTest, SignaturesAreThoseOfThePreRelease) {
  static_assert(std::is_same_v<decltype(&ASYNC_init), int (*)(int, size_t, size_t)>);
  static_assert(std::is_same_v<decltype(&ASYNC_cleanup), void (*)(int)>);
  static_assert(std::is_same_v<decltype(&ASYNC_init_thread), int (*)(size_t, size_t)>);
  static_assert(std::is_same_v<decltype(&ASYNC_cleanup_thread), void (*)()>);
  static_assert(std::is_same_v<decltype(&ASYNC_start_job),
                               int (*)(ASYNC_JOB**, int*, int (*)(void*), void*, size_t)>);
  static_assert(std::is_same_v<decltype(&ASYNC_pause_job), int (*)()>);
  static_assert(std::is_same_v<decltype(&ASYNC_in_job), int (*)()>);
  static_assert(std::is_same_v<decltype(&ASYNC_get_wait_fd), int (*)(ASYNC_JOB*)>);
  static_assert(std::is_same_v<decltype(&ASYNC_get_current_job), ASYNC_JOB* (*)()>);
  static_assert(std::is_same_v<decltype(&ASYNC_wake), void (*)(ASYNC_JOB*)>);
  static_assert(std::is_same_v<decltype(&ASYNC_clear_wake), void (*)(ASYNC_JOB*)>);
  static_assert(std::is_same_v<decltype(&ASYNC_block_pause), void (*)()>);
  static_assert(std::is_same_v<decltype(&ASYNC_unblock_pause), void (*)()>);
  static_assert(ASYNC_ERR == 0 && ASYNC_NO_JOBS == 1 && ASYNC_PAUSE == 2 && ASYNC_FINISH == 3);
  SUCCEED();
}

TEST(LegacyHeaderTest, SharedNamesAreTheCurrentApisFunctions) {
  legacy_probe::SharedFunctions current = legacy_probe::CurrentSharedFunctions();
  EXPECT_EQ(reinterpret_cast<const void*>(&ASYNC_init_thread), current.init_thread);
  EXPECT_EQ(reinterpret_cast<const void*>(&ASYNC_cleanup_thread), current.cleanup_thread);
  EXPECT_EQ(reinterpret_cast<const void*>(&ASYNC_pause_job), current.pause_job);
  EXPECT_EQ(reinterpret_cast<const void*>(&ASYNC_get_current_job), current.get_current_job);
  EXPECT_EQ(reinterpret_cast<const void*>(&ASYNC_block_pause), current.block_pause);
  EXPECT_EQ(reinterpret_cast<const void*>(&ASYNC_unblock_pause), current.unblock_pause);
  EXPECT_EQ(reinterpret_cast<const void*>(&asyncjob_get_error), current.get_error);
  EXPECT_EQ(reinterpret_cast<const void*>(&asyncjob_peek_error), current.peek_error);
  EXPECT_EQ(reinterpret_cast<const void*>(&asyncjob_peek_last_error), current.peek_last_error);
  EXPECT_EQ(reinterpret_cast<const void*>(&asyncjob_clear_errors), current.clear_errors);
}

TEST(LegacyHeaderTest, ConstantsAgreeWithTheCurrentHeader) {
  legacy_probe::Constants current = legacy_probe::CurrentConstants();
  EXPECT_EQ(ASYNC_ERR, current.err);
  EXPECT_EQ(ASYNC_NO_JOBS, current.no_jobs);
  EXPECT_EQ(ASYNC_PAUSE, current.pause);
  EXPECT_EQ(ASYNC_FINISH, current.finish);
  EXPECT_EQ(ASYNC_R_FAILED_TO_SET_POOL, current.failed_to_set_pool);
  EXPECT_EQ(ASYNC_R_INVALID_POOL_SIZE, current.invalid_pool_size);
  EXPECT_EQ(ASYNC_R_INIT_FAILED, current.init_failed);
  EXPECT_EQ(ASYNCJOB_R_MALLOC_FAILURE, current.malloc_failure);
  EXPECT_EQ(ASYNCJOB_R_PASSED_NULL_PARAMETER, current.passed_null_parameter);
  EXPECT_EQ(ASYNCJOB_R_INTERNAL_ERROR, current.internal_error);
  EXPECT_EQ(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, current.passed_invalid_argument);
  EXPECT_EQ(ASYNCJOB_R_WRONG_THREAD, current.wrong_thread);
  EXPECT_EQ(ASYNCJOB_R_JOB_NOT_PAUSED, current.job_not_paused);
  EXPECT_EQ(ASYNCJOB_R_STACK_ALLOCATION_FAILED, current.stack_allocation_failed);
  EXPECT_EQ(ASYNCJOB_R_JOBS_OUTSTANDING, current.jobs_outstanding);
  EXPECT_EQ(ASYNCJOB_ERR_LIB_ASYNC, current.err_lib_async);
}

// ----- ASYNC_init, ASYNC_cleanup and the pool -----

TEST_F(LegacyTest, InitWithInitThreadCreatesThisThreadsPool) {
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
  ASSERT_EQ(ASYNC_init(1, 4, 2), 1);
  legacy_probe::PoolStats pool = legacy_probe::ThisThreadPool();
  EXPECT_TRUE(pool.exists);
  EXPECT_EQ(pool.max_size, 4u);
  EXPECT_EQ(pool.total, 2u);
  EXPECT_EQ(pool.idle, 2u);
}

TEST_F(LegacyTest, InitWithoutInitThreadLeavesThePoolAlone) {
  EXPECT_EQ(ASYNC_init(0, 1, 1), 1);
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
  // The sizes are not used, so even a nonsensical pair is accepted.
  EXPECT_EQ(ASYNC_init(0, 1, 5), 1);
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
  // The first job then makes an unlimited pool, as without any init.
  int value = 3;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, &ret, ReturnArgument, &value, sizeof value), ASYNC_FINISH);
  EXPECT_EQ(ret, 3);
  EXPECT_EQ(legacy_probe::ThisThreadPool().max_size, 0u);
}

TEST_F(LegacyTest, InitRejectsInitSizeAboveMaxSize) {
  EXPECT_EQ(ASYNC_init(1, 2, 3), 0);
  ExpectError(ASYNC_R_INVALID_POOL_SIZE, "init_size");
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
}

TEST_F(LegacyTest, InitFailsWhileJobsArePaused) {
  int value = 1;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_init(1, 1, 1), 0);
  ExpectError(ASYNC_R_FAILED_TO_SET_POOL, "in use");
  EXPECT_EQ(Resume(&job), 1);
  EXPECT_EQ(ASYNC_init(1, 1, 1), 1);
}

TEST_F(LegacyTest, InitThreadAndCleanupThreadWorkAsInTheCurrentApi) {
  ASSERT_EQ(ASYNC_init_thread(3, 1), 1);
  EXPECT_EQ(legacy_probe::ThisThreadPool().total, 1u);
  ASYNC_cleanup_thread();
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
}

TEST_F(LegacyTest, CleanupWithCleanupThreadFreesThisThreadsPool) {
  ASSERT_EQ(ASYNC_init(1, 2, 2), 1);
  ASYNC_cleanup(0);
  EXPECT_TRUE(legacy_probe::ThisThreadPool().exists);
  ASYNC_cleanup(1);
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
  // Nothing left to clean: harmless.
  ASYNC_cleanup(1);
  ASYNC_cleanup(0);
}

TEST_F(LegacyTest, ExhaustedPoolReturnsNoJobsAndTouchesNothing) {
  ASSERT_EQ(ASYNC_init(1, 1, 1), 1);
  int value = 5;
  ASYNC_JOB* first = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&first, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  std::size_t fds = CountOpenFds();
  ASYNC_JOB* second = nullptr;
  int untouched = -7;
  EXPECT_EQ(ASYNC_start_job(&second, &untouched, ReturnArgument, &value, sizeof value),
            ASYNC_NO_JOBS);
  EXPECT_EQ(second, nullptr);
  EXPECT_EQ(untouched, -7);
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(Resume(&first), 5);
  EXPECT_EQ(ASYNC_start_job(&second, &untouched, ReturnArgument, &value, sizeof value),
            ASYNC_FINISH);
  EXPECT_EQ(untouched, 5);
}

TEST_F(LegacyTest, CleanupThreadLeavesAPausedJobAndItsWaitFdUsable) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  int fd = seen.fd_before_pause;
  ASSERT_GE(fd, 0);
  ASYNC_cleanup(1);
  ExpectError(ASYNCJOB_R_JOBS_OUTSTANDING, "paused");
  EXPECT_TRUE(IsOpen(fd));
  EXPECT_EQ(ASYNC_get_wait_fd(job), fd);
  ASYNC_wake(job);
  EXPECT_TRUE(Readable(fd));
  EXPECT_EQ(Resume(&job), 7);
  EXPECT_EQ(seen.fd_after_pause, fd);
  EXPECT_FALSE(IsOpen(fd));
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
}

// ----- ASYNC_start_job -----

TEST_F(LegacyTest, JobThatReturnsAtOnceFinishes) {
  for (int value : {0, 1, -5, 42}) {
    ASYNC_JOB* job = nullptr;
    int ret = 12345;
    EXPECT_EQ(ASYNC_start_job(&job, &ret, ReturnArgument, &value, sizeof value), ASYNC_FINISH);
    EXPECT_EQ(ret, value);
    EXPECT_EQ(job, nullptr);
  }
}

int CheckMessage(void* arg) {
  const char* text = static_cast<const char*>(arg);
  ASYNC_pause_job();
  return std::strcmp(text, "Hello world!") == 0 ? 1 : 0;
}

TEST_F(LegacyTest, ArgumentsAreCopiedIntoTheJob) {
  char message[] = "Hello world!";
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, CheckMessage, message, sizeof message), ASYNC_PAUSE);
  std::memset(message, 'x', sizeof message - 1);
  EXPECT_EQ(Resume(&job), 1);
}

int IsArgumentNull(void* arg) { return arg == nullptr ? 1 : 0; }

TEST_F(LegacyTest, NullArgumentsReachTheJobAsNull) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, &ret, IsArgumentNull, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
}

int Other(void*) { return -1; }

TEST_F(LegacyTest, ResumeIgnoresFuncAndArgs) {
  int value = 9;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  int other = 100;
  EXPECT_EQ(ASYNC_start_job(&job, &ret, Other, &other, sizeof other), ASYNC_FINISH);
  EXPECT_EQ(ret, 9);
}

int PauseThreeTimes(void* arg) {
  int* rounds = *static_cast<int**>(arg);
  for (int i = 0; i < 3; ++i) {
    ++*rounds;
    EXPECT_EQ(ASYNC_pause_job(), 1);
  }
  return *rounds;
}

TEST_F(LegacyTest, JobPausesAndResumesRepeatedly) {
  int rounds = 0;
  ASYNC_JOB* job = StartPaused(PauseThreeTimes, &rounds);
  ASYNC_JOB* first = job;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(job, first);
  EXPECT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(Resume(&job), 3);
}

TEST_F(LegacyTest, StartJobRejectsNullArguments) {
  int value = 0;
  int ret = 0;
  ASYNC_JOB* job = nullptr;
  EXPECT_EQ(ASYNC_start_job(nullptr, &ret, ReturnArgument, &value, sizeof value), ASYNC_ERR);
  ExpectError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "job is NULL");
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, ReturnArgument, &value, sizeof value), ASYNC_ERR);
  ExpectError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ret is NULL");
  EXPECT_EQ(ASYNC_start_job(&job, &ret, nullptr, &value, sizeof value), ASYNC_ERR);
  ExpectError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "func is NULL");
  EXPECT_EQ(job, nullptr);
}

TEST_F(LegacyTest, ResumingAFinishedJobFails) {
  int value = 2;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  ASYNC_JOB* stale = job;
  EXPECT_EQ(Resume(&job), 2);
  ret = -3;
  EXPECT_EQ(ASYNC_start_job(&stale, &ret, nullptr, nullptr, 0), ASYNC_ERR);
  ExpectError(ASYNCJOB_R_JOB_NOT_PAUSED, "not paused");
  EXPECT_EQ(ret, -3);
}

int ResumeItself(void* arg) {
  int* status = *static_cast<int**>(arg);
  ASYNC_JOB* self = ASYNC_get_current_job();
  int ret = 0;
  *status = ASYNC_start_job(&self, &ret, nullptr, nullptr, 0);
  // Its wait fd is unaffected by the failed attempt.
  return ASYNC_get_wait_fd(ASYNC_get_current_job()) >= 0 ? 1 : 0;
}

TEST_F(LegacyTest, ResumingTheRunningJobFails) {
  int status = -1;
  int* pointer = &status;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, &ret, ResumeItself, &pointer, sizeof pointer), ASYNC_FINISH);
  EXPECT_EQ(status, ASYNC_ERR);
  EXPECT_EQ(ret, 1);
  ExpectError(ASYNCJOB_R_JOB_NOT_PAUSED, "running");
}

TEST_F(LegacyTest, JobIsResumedOnlyOnItsOwnThread) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  int status = -1;
  int fd_there = -2;
  int reason = 0;
  std::thread other([&] {
    ASYNC_JOB* copy = job;
    int ret = 0;
    status = ASYNC_start_job(&copy, &ret, nullptr, nullptr, 0);
    reason = ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr));
    // The wait fd can be had from any thread.
    fd_there = ASYNC_get_wait_fd(job);
    ASYNC_cleanup_thread();
  });
  other.join();
  EXPECT_EQ(status, ASYNC_ERR);
  EXPECT_EQ(reason, ASYNCJOB_R_WRONG_THREAD);
  EXPECT_EQ(fd_there, seen.fd_before_pause);
  EXPECT_EQ(Resume(&job), 7);
}

// ----- ASYNC_pause_job, ASYNC_in_job, ASYNC_get_current_job -----

TEST_F(LegacyTest, OutsideAJobPauseDoesNothingAndInJobIsZero) {
  EXPECT_EQ(ASYNC_pause_job(), 1);
  EXPECT_EQ(ASYNC_in_job(), 0);
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
  ASYNC_block_pause();
  ASYNC_unblock_pause();
  ASYNC_unblock_pause();
  EXPECT_EQ(ASYNC_pause_job(), 1);
}

TEST_F(LegacyTest, InsideAJobInJobIsOneAndCurrentJobIsItsHandle) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  EXPECT_EQ(seen.in_job, 1);
  EXPECT_EQ(seen.current, job);
  EXPECT_EQ(ASYNC_in_job(), 0);
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
  EXPECT_EQ(Resume(&job), 7);
  EXPECT_EQ(ASYNC_in_job(), 0);
}

struct Nesting {
  ASYNC_JOB* outer = nullptr;
  ASYNC_JOB* inner = nullptr;
  ASYNC_JOB* inner_saw = nullptr;
  int inner_in_job = -1;
  int outer_in_job_after_inner = -1;
  ASYNC_JOB* outer_current_after_inner = nullptr;
  int outer_fd = -1;
  int inner_fd = -1;
  int inner_fd_seen_by_outer = -1;
  bool inner_readable_when_resumed = false;
  bool inner_fd_open_after_finish = true;
  bool outer_fd_open_after_inner = false;
};

int Inner(void* arg) {
  Nesting* n = *static_cast<Nesting**>(arg);
  n->inner_saw = ASYNC_get_current_job();
  n->inner_in_job = ASYNC_in_job();
  n->inner_fd = ASYNC_get_wait_fd(n->inner_saw);
  ASYNC_pause_job();  // back to Outer
  n->inner_readable_when_resumed = Readable(n->inner_fd);
  ASYNC_clear_wake(n->inner_saw);
  return 11;
}

int Outer(void* arg) {
  Nesting* n = *static_cast<Nesting**>(arg);
  n->outer = ASYNC_get_current_job();
  n->outer_fd = ASYNC_get_wait_fd(n->outer);
  ASYNC_JOB* inner = nullptr;
  int ret = 0;
  if (ASYNC_start_job(&inner, &ret, Inner, &n, sizeof n) != ASYNC_PAUSE) return -1;
  n->inner = inner;
  n->outer_in_job_after_inner = ASYNC_in_job();
  n->outer_current_after_inner = ASYNC_get_current_job();
  n->inner_fd_seen_by_outer = ASYNC_get_wait_fd(inner);
  ASYNC_wake(inner);
  ASYNC_pause_job();  // back to the test
  if (ASYNC_start_job(&inner, &ret, nullptr, nullptr, 0) != ASYNC_FINISH) return -2;
  n->inner_fd_open_after_finish = IsOpen(n->inner_fd);
  n->outer_fd_open_after_inner = IsOpen(n->outer_fd);
  return ret;
}

TEST_F(LegacyTest, NestedJobsHaveTheirOwnWaitFds) {
  Nesting n;
  ASYNC_JOB* job = StartPaused(Outer, &n);
  EXPECT_EQ(n.outer, job);
  EXPECT_EQ(n.inner_saw, n.inner);
  EXPECT_NE(n.inner, n.outer);
  EXPECT_EQ(n.inner_in_job, 1);
  EXPECT_EQ(n.outer_in_job_after_inner, 1);
  EXPECT_EQ(n.outer_current_after_inner, n.outer);
  ASSERT_GE(n.outer_fd, 0);
  ASSERT_GE(n.inner_fd, 0);
  EXPECT_NE(n.outer_fd, n.inner_fd);
  EXPECT_EQ(n.inner_fd_seen_by_outer, n.inner_fd);
  // Waking the inner job did not wake the outer one.
  EXPECT_TRUE(Readable(n.inner_fd));
  EXPECT_FALSE(Readable(n.outer_fd));
  EXPECT_EQ(ASYNC_get_wait_fd(job), n.outer_fd);
  EXPECT_EQ(Resume(&job), 11);
  EXPECT_TRUE(n.inner_readable_when_resumed);
  EXPECT_FALSE(n.inner_fd_open_after_finish);
  EXPECT_TRUE(n.outer_fd_open_after_inner);
  EXPECT_FALSE(IsOpen(n.outer_fd));
}

// ----- ASYNC_block_pause, ASYNC_unblock_pause -----

int BlockedPauses(void* arg) {
  int* pauses_taken = *static_cast<int**>(arg);
  ASYNC_block_pause();
  ASYNC_block_pause();
  EXPECT_EQ(ASYNC_pause_job(), 1);  // blocked: carries on
  ASYNC_unblock_pause();
  EXPECT_EQ(ASYNC_pause_job(), 1);  // still blocked once
  ASYNC_unblock_pause();
  ++*pauses_taken;
  ASYNC_pause_job();      // pauses
  ASYNC_unblock_pause();  // more unblocks than blocks: ignored
  ++*pauses_taken;
  ASYNC_pause_job();  // still pauses
  return 1;
}

TEST_F(LegacyTest, BlockPauseNestsAndUnblockPauseReenablesPausing) {
  int pauses_taken = 0;
  ASYNC_JOB* job = StartPaused(BlockedPauses, &pauses_taken);
  EXPECT_EQ(pauses_taken, 1);
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(pauses_taken, 2);
  EXPECT_EQ(Resume(&job), 1);
}

int BlockAndNeverUnblock(void*) {
  ASYNC_block_pause();
  return 1;
}

TEST_F(LegacyTest, ABlockDiesWithItsJob) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, BlockAndNeverUnblock, nullptr, 0), ASYNC_FINISH);
  int value = 4;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  EXPECT_EQ(Resume(&job), 4);
}

// ----- ASYNC_get_wait_fd -----

TEST_F(LegacyTest, WaitFdIsTheSameInsideTheJobAndFromTheCaller) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  ASSERT_GE(seen.fd_before_pause, 0);
  EXPECT_EQ(ASYNC_get_wait_fd(job), seen.fd_before_pause);
  EXPECT_EQ(ASYNC_get_wait_fd(job), seen.fd_before_pause);
  EXPECT_EQ(Resume(&job), 7);
  EXPECT_EQ(seen.fd_after_pause, seen.fd_before_pause);
}

TEST_F(LegacyTest, WaitFdIsACloseOnExecNonBlockingEventfd) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  int fd = ASYNC_get_wait_fd(job);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(FdTarget(fd), "anon_inode:[eventfd]");
  EXPECT_NE(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_NE(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  EXPECT_FALSE(Readable(fd));
  EXPECT_EQ(Resume(&job), 7);
}

TEST_F(LegacyTest, WaitFdIsCreatedOnlyWhenAskedFor) {
  int value = 8;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  std::size_t before = CountOpenFds();
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  EXPECT_EQ(CountOpenFds(), before);
  // Clearing a wake that never happened creates nothing.
  ASYNC_clear_wake(job);
  EXPECT_EQ(CountOpenFds(), before);
  int fd = ASYNC_get_wait_fd(job);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(CountOpenFds(), before + 1);
  EXPECT_EQ(ASYNC_get_wait_fd(job), fd);
  EXPECT_EQ(CountOpenFds(), before + 1);
  EXPECT_EQ(Resume(&job), 8);
  EXPECT_EQ(CountOpenFds(), before);
}

TEST_F(LegacyTest, WaitFdIsClosedWhenTheJobFinishes) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  int fd = seen.fd_before_pause;
  ASSERT_TRUE(IsOpen(fd));
  EXPECT_EQ(Resume(&job), 7);
  EXPECT_FALSE(IsOpen(fd));
}

int GetFdAndFinish(void* arg) {
  int* fd = *static_cast<int**>(arg);
  *fd = ASYNC_get_wait_fd(ASYNC_get_current_job());
  return *fd >= 0 ? 1 : 0;
}

TEST_F(LegacyTest, WaitFdOfAJobThatNeverPausedIsClosedToo) {
  int fd = -1;
  int* pointer = &fd;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, GetFdAndFinish, &pointer, sizeof pointer), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  EXPECT_FALSE(IsOpen(fd));
}

TEST_F(LegacyTest, EachPausedJobHasItsOwnWaitFd) {
  constexpr int kJobs = 16;
  std::vector<Seen> seen(kJobs);
  std::vector<ASYNC_JOB*> jobs;
  for (Seen& s : seen) jobs.push_back(StartPaused(GetFdPauseGetFd, &s));
  for (int i = 0; i < kJobs; ++i) {
    for (int j = i + 1; j < kJobs; ++j) EXPECT_NE(seen[i].fd_before_pause, seen[j].fd_before_pause);
  }
  ASYNC_wake(jobs[5]);
  for (int i = 0; i < kJobs; ++i) EXPECT_EQ(Readable(seen[i].fd_before_pause), i == 5) << i;
  for (ASYNC_JOB*& job : jobs) EXPECT_EQ(Resume(&job), 7);
}

TEST_F(LegacyTest, AReusedJobStartsWithAFreshUnwokenWaitFd) {
  ASSERT_EQ(ASYNC_init(1, 1, 1), 1);
  Seen first;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &first);
  ASYNC_JOB* handle = job;
  ASYNC_wake(job);  // and never cleared
  EXPECT_EQ(Resume(&job), 7);
  Seen second;
  job = StartPaused(GetFdPauseGetFd, &second);
  EXPECT_EQ(job, handle);  // the pool's one job, reused
  ASSERT_GE(second.fd_before_pause, 0);
  EXPECT_FALSE(Readable(second.fd_before_pause));
  EXPECT_EQ(Resume(&job), 7);
}

TEST_F(LegacyTest, WaitFdErrors) {
  EXPECT_EQ(ASYNC_get_wait_fd(nullptr), -1);
  ExpectError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_get_wait_fd: job is NULL");
  ASYNC_wake(nullptr);
  ExpectError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_wake: job is NULL");
  ASYNC_clear_wake(nullptr);
  ExpectError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_clear_wake: job is NULL");

  // A finished job's handle.
  int value = 1;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  ASYNC_JOB* stale = job;
  EXPECT_EQ(Resume(&job), 1);
  EXPECT_EQ(ASYNC_get_wait_fd(stale), -1);
  ExpectError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "ASYNC_get_wait_fd");
  ASYNC_wake(stale);
  ExpectError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "ASYNC_wake");
  ASYNC_clear_wake(stale);
  ExpectError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "ASYNC_clear_wake");
}

TEST_F(LegacyTest, JobsOfTheCurrentApiHaveNoLegacyWaitFd) {
  for (bool with_wait_ctx : {true, false}) {
    ASYNC_JOB* job = legacy_probe::StartCurrentApiJob(with_wait_ctx, 6);
    ASSERT_NE(job, nullptr);
    EXPECT_EQ(ASYNC_get_wait_fd(job), -1);
    ExpectError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "not a running or paused job started");
    ASYNC_wake(job);
    ExpectError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "ASYNC_wake");
    // The legacy ASYNC_start_job still resumes it.
    EXPECT_EQ(Resume(&job), 6);
    legacy_probe::ForgetCurrentApiWaitCtx();
  }
}

TEST_F(LegacyTest, WaitFdCreationFailureIsReportedAndRecoverable) {
  int value = 3;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  // Allow no descriptor numbered at or above the lowest free one.
  int lowest_free = dup(0);
  ASSERT_GE(lowest_free, 0);
  close(lowest_free);
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  int fd = ASYNC_get_wait_fd(job);
  ASYNC_wake(job);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_EQ(fd, -1);
  ExpectError(ASYNC_R_INIT_FAILED, "ASYNC_get_wait_fd: cannot create the job's wait fd");
  ExpectError(ASYNC_R_INIT_FAILED, "ASYNC_wake: cannot create the job's wait fd");
  fd = ASYNC_get_wait_fd(job);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(Resume(&job), 3);
}

// ----- ASYNC_wake, ASYNC_clear_wake -----

TEST_F(LegacyTest, JobWakesItselfPausesAndClears) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(WakePauseClear, &seen);
  int fd = ASYNC_get_wait_fd(job);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(Readable(fd));
  EXPECT_EQ(Resume(&job), 1);
  EXPECT_EQ(seen.fd_after_pause, fd);
  EXPECT_TRUE(seen.readable_after_resume);
  EXPECT_FALSE(seen.readable_after_clear);
  EXPECT_FALSE(IsOpen(fd));
}

TEST_F(LegacyTest, CallerWakesAPausedJob) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  int fd = seen.fd_before_pause;
  EXPECT_FALSE(Readable(fd));
  ASYNC_wake(job);
  EXPECT_TRUE(Readable(fd));
  ASYNC_clear_wake(job);
  EXPECT_FALSE(Readable(fd));
  EXPECT_EQ(Resume(&job), 7);
}

TEST_F(LegacyTest, OneClearUndoesAnyNumberOfWakes) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(GetFdPauseGetFd, &seen);
  int fd = seen.fd_before_pause;
  for (int i = 0; i < 3; ++i) ASYNC_wake(job);
  EXPECT_TRUE(Readable(fd));
  ASYNC_clear_wake(job);
  EXPECT_FALSE(Readable(fd));
  // Clearing again, or with no wake pending, is harmless.
  ASYNC_clear_wake(job);
  EXPECT_FALSE(Readable(fd));
  ASYNC_wake(job);
  EXPECT_TRUE(Readable(fd));
  EXPECT_EQ(Resume(&job), 7);
}

TEST_F(LegacyTest, WakeCreatesTheWaitFdWhenNeeded) {
  int value = 2;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  std::size_t before = CountOpenFds();
  ASYNC_wake(job);
  EXPECT_EQ(CountOpenFds(), before + 1);
  int fd = ASYNC_get_wait_fd(job);
  EXPECT_TRUE(Readable(fd));
  EXPECT_EQ(Resume(&job), 2);
}

TEST_F(LegacyTest, AnotherThreadWakesAPausedJob) {
  Seen seen;
  ASYNC_JOB* job = StartPaused(WakePauseClear, &seen);
  int fd = ASYNC_get_wait_fd(job);
  ASYNC_clear_wake(job);  // undo the job's own wake: the thread will do it
  ASSERT_FALSE(Readable(fd));
  std::thread waker([job] { ASYNC_wake(job); });
  EXPECT_TRUE(Readable(fd, 10000));
  waker.join();
  EXPECT_EQ(Resume(&job), 1);
  EXPECT_TRUE(seen.readable_after_resume);
  EXPECT_FALSE(seen.readable_after_clear);
}

TEST_F(LegacyTest, ThreadsAskingAtOnceGetOneWaitFd) {
  int value = 1;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value), ASYNC_PAUSE);
  std::size_t before = CountOpenFds();
  constexpr int kThreads = 8;
  std::vector<int> fds(kThreads, -1);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      fds[static_cast<std::size_t>(i)] = ASYNC_get_wait_fd(job);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int fd : fds) EXPECT_EQ(fd, fds[0]);
  EXPECT_GE(fds[0], 0);
  EXPECT_EQ(CountOpenFds(), before + 1);
  EXPECT_EQ(Resume(&job), 1);
}

// ----- Code written for the current API inside a legacy job -----

struct Bridge {
  int callback_result = -2;
  bool readable_after_callback = false;
  int cleanups = 0;
  int engine_fd = -1;
};

int CurrentApiEngine(void* arg) {
  Bridge* b = *static_cast<Bridge**>(arg);
  // An engine registers an fd of its own, then signals completion through
  // the wait context's callback.
  b->engine_fd = dup(0);
  if (legacy_probe::SetWaitFdInCurrentJobWaitCtx(b->engine_fd, &b->cleanups) != 1) return 0;
  b->callback_result = legacy_probe::CallCurrentJobWaitCtxCallback();
  int fd = ASYNC_get_wait_fd(ASYNC_get_current_job());
  b->readable_after_callback = Readable(fd);
  ASYNC_pause_job();
  ASYNC_clear_wake(ASYNC_get_current_job());
  return 1;
}

TEST_F(LegacyTest, WaitContextCallbackWakesTheLegacyJob) {
  Bridge b;
  ASYNC_JOB* job = StartPaused(CurrentApiEngine, &b);
  EXPECT_EQ(b.callback_result, 1);
  EXPECT_TRUE(b.readable_after_callback);
  EXPECT_TRUE(Readable(ASYNC_get_wait_fd(job)));
  EXPECT_EQ(b.cleanups, 0);
  EXPECT_EQ(Resume(&job), 1);
  // The job's wait context was freed: the engine's fd cleaned up and closed.
  EXPECT_EQ(b.cleanups, 1);
  EXPECT_FALSE(IsOpen(b.engine_fd));
}

// ----- Threads and leaks -----

TEST_F(LegacyTest, EachThreadRunsItsOwnPool) {
  constexpr int kThreads = 4;
  std::vector<int> results(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&results, i] {
      if (ASYNC_init(1, 2, 1) != 1) return;
      int ok = 1;
      for (int round = 0; round < 50; ++round) {
        Seen seen;
        Seen* pointer = &seen;
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        if (ASYNC_start_job(&job, &ret, WakePauseClear, &pointer, sizeof pointer) != ASYNC_PAUSE) {
          ok = 0;
          break;
        }
        if (!Readable(ASYNC_get_wait_fd(job), 10000)) ok = 0;
        if (ASYNC_start_job(&job, &ret, nullptr, nullptr, 0) != ASYNC_FINISH || ret != 1) ok = 0;
        if (seen.readable_after_clear) ok = 0;
      }
      if (legacy_probe::ThisThreadPool().max_size != 2) ok = 0;
      ASYNC_cleanup(1);
      if (legacy_probe::ThisThreadPool().exists) ok = 0;
      results[static_cast<std::size_t>(i)] = ok;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int ok : results) EXPECT_EQ(ok, 1);
}

TEST_F(LegacyTest, ManyJobsLeaveNoDescriptorBehind) {
  ASSERT_EQ(ASYNC_init(1, 8, 4), 1);
  for (int round = 0; round < 200; ++round) {
    std::vector<Seen> seen(8);
    std::vector<ASYNC_JOB*> jobs;
    for (Seen& s : seen) {
      jobs.push_back(StartPaused(round % 2 == 0 ? WakePauseClear : GetFdPauseGetFd, &s));
    }
    for (ASYNC_JOB* job : jobs) ASYNC_wake(job);
    for (ASYNC_JOB*& job : jobs) Resume(&job);
  }
  ASYNC_cleanup(1);
}

// ----- However a job ends, everything it had goes -----
//
// A legacy job has a wait context, a record and (once asked for) a wait fd.
// They go when the job ends, whichever API ends it: resumed to its end by
// either ASYNC_start_job, cancelled with asyncjob_cancel_job, or left paused
// when its thread exits (with or without ASYNC_cleanup_thread first). The
// heap is compared in plain builds; under ASan and valgrind their leak
// checkers cover it.

enum class End {
  kLegacyResume,
  kCurrentApiResume,
  kCancel,
  kCleanupThreadThenThreadExit,
  kThreadExit,
};

// Heap bytes in use, all arenas.
std::size_t HeapInUse() { return mallinfo2().uordblks; }

// Starts `count` legacy jobs that pause once, gives each a wait fd (woken
// for half of them), then ends them `how`. Returns their wait fds.
std::vector<int> StartAndEnd(End how, int count) {
  std::vector<int> fds;
  auto run = [&fds, how, count] {
    std::vector<ASYNC_JOB*> jobs;
    int value = 11;
    for (int i = 0; i < count; ++i) {
      ASYNC_JOB* job = nullptr;
      int ret = 0;
      ASSERT_EQ(ASYNC_start_job(&job, &ret, PauseOnceThenReturn, &value, sizeof value),
                ASYNC_PAUSE);
      int fd = ASYNC_get_wait_fd(job);
      ASSERT_GE(fd, 0);
      if (i % 2 == 0) ASYNC_wake(job);
      jobs.push_back(job);
      fds.push_back(fd);
    }
    for (int fd : fds) ASSERT_TRUE(IsOpen(fd));
    for (ASYNC_JOB*& job : jobs) {
      int ret = 0;
      switch (how) {
        case End::kLegacyResume:
          EXPECT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
          EXPECT_EQ(ret, 11);
          break;
        case End::kCurrentApiResume:
          EXPECT_EQ(legacy_probe::ResumeWithCurrentApi(&job, &ret), ASYNC_FINISH);
          EXPECT_EQ(ret, 11);
          break;
        case End::kCancel:
          EXPECT_EQ(legacy_probe::CancelJob(&job), 1);
          break;
        case End::kCleanupThreadThenThreadExit:
        case End::kThreadExit:
          break;  // left paused
      }
      if (how != End::kCleanupThreadThenThreadExit && how != End::kThreadExit) {
        EXPECT_EQ(job, nullptr);
      }
    }
    if (how == End::kCleanupThreadThenThreadExit) {
      ASYNC_cleanup_thread();
      ExpectError(ASYNCJOB_R_JOBS_OUTSTANDING, "paused");
      // The jobs are still paused, and could still be resumed here.
      for (int fd : fds) EXPECT_TRUE(IsOpen(fd));
    }
    EXPECT_TRUE(ErrorQueueEmpty()) << PopError().message;
  };
  if (how == End::kCleanupThreadThenThreadExit || how == End::kThreadExit) {
    std::thread(run).join();
  } else {
    run();
  }
  return fds;
}

void ExpectEverythingGivenBack(End how) {
  constexpr int kJobs = 100;
  const std::size_t fds_before = CountOpenFds();
  StartAndEnd(how, kJobs);  // warm up: the pool, the allocator's caches
  EXPECT_EQ(CountOpenFds(), fds_before);
  const std::size_t heap_before = HeapInUse();
  std::vector<int> fds = StartAndEnd(how, kJobs);
  EXPECT_EQ(CountOpenFds(), fds_before) << "wait fds leaked";
  for (int fd : fds) EXPECT_FALSE(IsOpen(fd)) << fd;
  if (!legacy_probe::UnderMemoryTool()) {
    // 100 records and contexts kept would be well over 10 KiB.
    const std::size_t heap_after = HeapInUse();
    EXPECT_LE(heap_after, heap_before + 2048)
        << "the heap grew by " << heap_after - heap_before << " bytes";
  }
}

TEST_F(LegacyTest, HundredJobsFinishedByTheLegacyApiGiveEverythingBack) {
  ExpectEverythingGivenBack(End::kLegacyResume);
}

TEST_F(LegacyTest, HundredJobsFinishedByTheCurrentApiGiveEverythingBack) {
  ExpectEverythingGivenBack(End::kCurrentApiResume);
}

TEST_F(LegacyTest, HundredCancelledJobsGiveEverythingBack) {
  ExpectEverythingGivenBack(End::kCancel);
}

TEST_F(LegacyTest, HundredJobsPausedAtCleanupThreadThenThreadExitGiveEverythingBack) {
  ExpectEverythingGivenBack(End::kCleanupThreadThenThreadExit);
}

TEST_F(LegacyTest, HundredJobsPausedAtThreadExitGiveEverythingBack) {
  ExpectEverythingGivenBack(End::kThreadExit);
}

// An engine's fd in a legacy job's context, and the job's wait fd, woken.
int EngineThenPause(void* arg) {
  Bridge* b = *static_cast<Bridge**>(arg);
  b->engine_fd = dup(0);
  if (legacy_probe::SetWaitFdInCurrentJobWaitCtx(b->engine_fd, &b->cleanups) != 1) return 0;
  ASYNC_wake(ASYNC_get_current_job());
  ASYNC_pause_job();
  return 1;
}

TEST_F(LegacyTest, CancelledJobClosesItsWaitFdAndFreesItsContext) {
  Bridge b;
  ASYNC_JOB* job = StartPaused(EngineThenPause, &b);
  ASYNC_JOB* stale = job;
  int fd = ASYNC_get_wait_fd(job);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(Readable(fd));
  EXPECT_EQ(legacy_probe::CancelJob(&job), 1);
  EXPECT_EQ(job, nullptr);
  EXPECT_FALSE(IsOpen(fd));
  // Its context's fds were cleaned up once, as when it is freed.
  EXPECT_EQ(b.cleanups, 1);
  EXPECT_FALSE(IsOpen(b.engine_fd));
  // The handle no longer names a legacy job.
  EXPECT_EQ(ASYNC_get_wait_fd(stale), -1);
  ExpectError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT, "not a running or paused job started");
  // Cancelling it again is refused by the current API.
  job = stale;
  EXPECT_EQ(legacy_probe::CancelJob(&job), 0);
  ExpectError(ASYNCJOB_R_JOB_NOT_PAUSED, "not paused");
}

TEST_F(LegacyTest, JobFinishedByTheCurrentApiFreesItsContext) {
  Bridge b;
  ASYNC_JOB* job = StartPaused(EngineThenPause, &b);
  int fd = ASYNC_get_wait_fd(job);
  int ret = 0;
  EXPECT_EQ(legacy_probe::ResumeWithCurrentApi(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  EXPECT_FALSE(IsOpen(fd));
  EXPECT_EQ(b.cleanups, 1);
  EXPECT_FALSE(IsOpen(b.engine_fd));
}

TEST_F(LegacyTest, ThreadExitFreesTheContextsOfPausedJobs) {
  Bridge b;
  int fd = -1;
  std::thread([&b, &fd] {
    ASYNC_JOB* job = StartPaused(EngineThenPause, &b);
    fd = ASYNC_get_wait_fd(job);
  }).join();
  EXPECT_GE(fd, 0);
  EXPECT_FALSE(IsOpen(fd));
  EXPECT_EQ(b.cleanups, 1);
  EXPECT_FALSE(IsOpen(b.engine_fd));
}

// What the wait API did on a job being cancelled: in its cancel hook, and in
// a destructor that runs as its stack unwinds.
struct DuringCancel {
  ASYNC_JOB* self = nullptr;
  int fd = -1;
  int hook_fd = -2;
  bool hook_woke = false;
  bool hook_cleared = false;
  int destructor_fd = -2;
  bool destructor_woke = false;
  bool destructor_cleared = false;
  bool errors_queued = false;
};

void WakeAndClearInHook(void* arg) {
  auto* d = static_cast<DuringCancel*>(arg);
  d->hook_fd = ASYNC_get_wait_fd(d->self);
  ASYNC_wake(d->self);
  d->hook_woke = Readable(d->hook_fd);
  ASYNC_clear_wake(d->self);
  d->hook_cleared = !Readable(d->hook_fd);
}

struct WakesAndClearsWhenDestroyed {
  DuringCancel* d;
  ~WakesAndClearsWhenDestroyed() {
    d->destructor_fd = ASYNC_get_wait_fd(d->self);
    ASYNC_wake(d->self);
    d->destructor_woke = Readable(d->destructor_fd);
    ASYNC_clear_wake(d->self);
    d->destructor_cleared = !Readable(d->destructor_fd);
    d->errors_queued = !ErrorQueueEmpty();
  }
};

int PauseUntilCancelled(void* arg) {
  DuringCancel* d = *static_cast<DuringCancel**>(arg);
  d->self = ASYNC_get_current_job();
  d->fd = ASYNC_get_wait_fd(d->self);
  if (legacy_probe::AddCancelHook(&WakeAndClearInHook, d) != 1) return 0;
  WakesAndClearsWhenDestroyed guard{d};
  for (;;) ASYNC_pause_job();
}

TEST_F(LegacyTest, WaitFdWakeAndClearWorkOnAJobBeingCancelled) {
  DuringCancel d;
  ASYNC_JOB* job = StartPaused(PauseUntilCancelled, &d);
  ASSERT_GE(d.fd, 0);
  EXPECT_EQ(legacy_probe::CancelJob(&job), 1);
  EXPECT_EQ(d.hook_fd, d.fd);
  EXPECT_TRUE(d.hook_woke);
  EXPECT_TRUE(d.hook_cleared);
  EXPECT_EQ(d.destructor_fd, d.fd);
  EXPECT_TRUE(d.destructor_woke);
  EXPECT_TRUE(d.destructor_cleared);
  EXPECT_FALSE(d.errors_queued);
  EXPECT_FALSE(IsOpen(d.fd));
}

// A job whose cancel hook wakes, then cancels, another legacy job.
struct Pair {
  ASYNC_JOB* other = nullptr;
  int other_fd = -1;
  bool other_woke = false;
  int cancel_result = -1;
};

void WakeAndCancelTheOther(void* arg) {
  auto* p = static_cast<Pair*>(arg);
  ASYNC_wake(p->other);
  p->other_woke = Readable(p->other_fd);
  p->cancel_result = legacy_probe::CancelJob(&p->other);
}

int PauseWithHookOnTheOther(void* arg) {
  Pair* p = *static_cast<Pair**>(arg);
  if (legacy_probe::AddCancelHook(&WakeAndCancelTheOther, p) != 1) return 0;
  for (;;) ASYNC_pause_job();
}

TEST_F(LegacyTest, ACancelHookCancelsAnotherLegacyJob) {
  int value = 1;
  Pair p;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&p.other, &ret, PauseOnceThenReturn, &value, sizeof value),
            ASYNC_PAUSE);
  p.other_fd = ASYNC_get_wait_fd(p.other);
  ASSERT_GE(p.other_fd, 0);
  ASYNC_JOB* job = StartPaused(PauseWithHookOnTheOther, &p);
  int own_fd = ASYNC_get_wait_fd(job);
  EXPECT_EQ(legacy_probe::CancelJob(&job), 1);
  EXPECT_TRUE(p.other_woke);
  EXPECT_EQ(p.cancel_result, 1);
  EXPECT_EQ(p.other, nullptr);
  EXPECT_FALSE(IsOpen(p.other_fd));
  EXPECT_FALSE(IsOpen(own_fd));
}

// ----- Cleanup routines that run as a legacy job ends -----
//
// Freeing a legacy job's context at its end runs the cleanup routines of the
// fds code in the job left set there. They run inside the job, which is no
// longer tied to the context: they can still wake it through the context's
// callback, cannot pause it, and are told (with an error) that the job is no
// longer a legacy job with a wait fd.

struct Ending {
  legacy_probe::TearDown tear_down;
  int fd_in_cleanup = -2;
  QueuedError error;
};

void AskForTheEndingJobsWaitFd(void* arg) {
  auto* e = static_cast<Ending*>(arg);
  e->fd_in_cleanup = ASYNC_get_wait_fd(ASYNC_get_current_job());
  e->error = PopError();
}

int SetTearDownFdThenPause(void* arg) {
  Ending* e = *static_cast<Ending**>(arg);
  e->tear_down.also = &AskForTheEndingJobsWaitFd;
  e->tear_down.also_arg = e;
  if (legacy_probe::SetTearDownFdInCurrentJobWaitCtx(dup(0), &e->tear_down) != 1) return 0;
  ASYNC_pause_job();
  return 5;
}

TEST_F(LegacyTest, CleanupRoutinesRunSafelyAsTheJobEnds) {
  for (End how : {End::kLegacyResume, End::kCurrentApiResume, End::kCancel}) {
    Ending e;
    ASYNC_JOB* job = StartPaused(SetTearDownFdThenPause, &e);
    int fd = ASYNC_get_wait_fd(job);
    int ret = 0;
    switch (how) {
      case End::kLegacyResume:
        EXPECT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
        EXPECT_EQ(ret, 5);
        break;
      case End::kCurrentApiResume:
        EXPECT_EQ(legacy_probe::ResumeWithCurrentApi(&job, &ret), ASYNC_FINISH);
        EXPECT_EQ(ret, 5);
        break;
      default:
        EXPECT_EQ(legacy_probe::CancelJob(&job), 1);
        break;
    }
    EXPECT_EQ(job, nullptr);
    EXPECT_EQ(e.tear_down.cleanups, 1);
    EXPECT_EQ(e.tear_down.callback_result, 1);  // the wake still worked
    EXPECT_EQ(e.tear_down.pause_result, 1);     // and the pause did nothing
    EXPECT_TRUE(e.tear_down.had_current_job);
    EXPECT_FALSE(e.tear_down.current_job_had_wait_ctx);
    EXPECT_EQ(e.fd_in_cleanup, -1);
    EXPECT_EQ(e.error.reason(), ASYNCJOB_R_PASSED_INVALID_ARGUMENT) << e.error.message;
    EXPECT_FALSE(IsOpen(fd));
  }
}

// ----- Sizes -----

TEST_F(LegacyTest, InitWithHugeSizes) {
  // init_size above max_size: refused, whatever the sizes.
  EXPECT_EQ(ASYNC_init(1, 1, SIZE_MAX), 0);
  ExpectError(ASYNC_R_INVALID_POOL_SIZE, "init_size");
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
  // A huge max_size with nothing made now is as good as no limit.
  EXPECT_EQ(ASYNC_init(1, SIZE_MAX, 1), 1);
  EXPECT_EQ(legacy_probe::ThisThreadPool().max_size, SIZE_MAX);
  EXPECT_EQ(legacy_probe::ThisThreadPool().total, 1u);
  ASYNC_cleanup(1);
  // Without init_thread the sizes are not used, as in the pre-release.
  EXPECT_EQ(ASYNC_init(0, SIZE_MAX, SIZE_MAX), 1);
  EXPECT_FALSE(legacy_probe::ThisThreadPool().exists);
}

std::size_t VirtualMemoryBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoul(line.substr(7)) * 1024;
  }
  return 0;
}

// Asks for SIZE_MAX jobs at once, in a child process whose address space is
// bounded, so that a library that tried to make them all would stop there
// instead of running the machine out of memory: the call must fail with an
// error queued, and the thread then run jobs normally.
TEST(LegacyInitDeathTest, HugeInitSizeFailsWithAnError) {
  if (legacy_probe::UnderMemoryTool()) {
    GTEST_SKIP() << "the tools reserve address space of their own; no limit fits";
  }
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        rlimit limit{};
        getrlimit(RLIMIT_AS, &limit);
        limit.rlim_cur = VirtualMemoryBytes() + (std::size_t{256} << 20);
        setrlimit(RLIMIT_AS, &limit);
        bool ok = true;
        for (std::size_t max_size : {std::size_t{0}, SIZE_MAX}) {
          asyncjob_clear_errors();
          int result = ASYNC_init(1, max_size, SIZE_MAX);
          QueuedError error = PopError();
          std::fprintf(stderr, "ASYNC_init(1, %zu, SIZE_MAX) = %d: %s\n", max_size, result,
                       error.message.c_str());
          ok = ok && result == 0 && error.code != 0 && !error.message.empty();
          ASYNC_cleanup(1);
        }
        asyncjob_clear_errors();
        int value = 6;
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        ok = ok &&
             ASYNC_start_job(&job, &ret, ReturnArgument, &value, sizeof value) == ASYNC_FINISH &&
             ret == 6;
        std::_Exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(LegacyTest, StartWithAnImpossibleArgumentSizeFailsCleanly) {
  int value = 1;
  ASYNC_JOB* job = nullptr;
  int ret = -3;
  // Half of SIZE_MAX: valgrind's malloc refuses it without calling the size
  // negative, which it would report as an error of the program.
  EXPECT_EQ(ASYNC_start_job(&job, &ret, ReturnArgument, &value, SIZE_MAX / 2), ASYNC_ERR);
  EXPECT_EQ(CountOpenFds(), fds_at_start_);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(ret, -3);
  EXPECT_NE(PopError().code, 0u);
  asyncjob_clear_errors();
  EXPECT_EQ(ASYNC_start_job(&job, &ret, ReturnArgument, &value, sizeof value), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
}

// ----- Other threads -----

// The jobs pause until told to stop, clearing their wake each time they are
// resumed; other threads ask for their wait fds and wake them while this
// thread resumes them. Shows (under TSan) that the calls documented as
// allowed from any thread are free of data races, and that the lazily
// created fd is one per job whoever creates it.
struct WakeTarget {
  std::atomic<bool>* stop;
  int resumes = 0;
};

int PauseUntilStopped(void* arg) {
  WakeTarget* t = *static_cast<WakeTarget**>(arg);
  ASYNC_JOB* self = ASYNC_get_current_job();
  while (!t->stop->load(std::memory_order_relaxed)) {
    ASYNC_pause_job();
    ++t->resumes;
    ASYNC_clear_wake(self);
  }
  return 1;
}

TEST_F(LegacyTest, OtherThreadsWakeJobsWhileTheirThreadResumesThem) {
  constexpr int kJobs = 8;
  constexpr int kWakers = 3;
  constexpr int kWakesEach = 300;
  std::atomic<bool> stop{false};
  std::vector<WakeTarget> targets(kJobs, WakeTarget{&stop});
  std::vector<ASYNC_JOB*> jobs;
  for (WakeTarget& t : targets) jobs.push_back(StartPaused(PauseUntilStopped, &t));
  const std::size_t fds_before = CountOpenFds();

  // Handed to the threads by their creation: no wait fd exists yet, so the
  // first calls race to create them.
  std::vector<std::vector<int>> seen(kWakers, std::vector<int>(kJobs, -1));
  std::atomic<int> wakers_done{0};
  std::vector<std::thread> wakers;
  for (int w = 0; w < kWakers; ++w) {
    wakers.emplace_back([&, w] {
      for (int i = 0; i < kWakesEach; ++i) {
        int j = (i + w) % kJobs;
        int fd = ASYNC_get_wait_fd(jobs[static_cast<std::size_t>(j)]);
        if (seen[w][j] == -1) seen[w][j] = fd;
        if (fd != seen[w][j]) seen[w][j] = -2;  // changed: a second fd
        ASYNC_wake(jobs[static_cast<std::size_t>(j)]);
      }
      wakers_done.fetch_add(1, std::memory_order_release);
    });
  }
  // Meanwhile: resume every job whose fd is readable.
  std::vector<int> own(kJobs, -1);
  while (wakers_done.load(std::memory_order_acquire) < kWakers) {
    std::vector<pollfd> entries;
    for (int j = 0; j < kJobs; ++j) {
      own[j] = ASYNC_get_wait_fd(jobs[static_cast<std::size_t>(j)]);
      entries.push_back(pollfd{own[j], POLLIN, 0});
    }
    if (poll(entries.data(), entries.size(), 10) <= 0) continue;
    for (int j = 0; j < kJobs; ++j) {
      if ((entries[static_cast<std::size_t>(j)].revents & POLLIN) == 0) continue;
      // Through a copy: the wakers read the handles in `jobs`, which
      // ASYNC_start_job would write (with the same value) as the job pauses.
      ASYNC_JOB* job = jobs[static_cast<std::size_t>(j)];
      int ret = 0;
      ASSERT_EQ(ASYNC_start_job(&job, &ret, nullptr, nullptr, 0), ASYNC_PAUSE);
      ASSERT_EQ(job, jobs[static_cast<std::size_t>(j)]);
    }
  }
  for (std::thread& t : wakers) t.join();
  for (int j = 0; j < kJobs; ++j) own[j] = ASYNC_get_wait_fd(jobs[static_cast<std::size_t>(j)]);
  EXPECT_EQ(CountOpenFds(), fds_before + kJobs) << "one wait fd per job";
  for (int w = 0; w < kWakers; ++w) {
    for (int j = 0; j < kJobs; ++j) EXPECT_EQ(seen[w][j], own[j]) << w << " " << j;
  }
  EXPECT_TRUE(ErrorQueueEmpty()) << PopError().message;
  stop.store(true, std::memory_order_relaxed);
  for (ASYNC_JOB*& job : jobs) EXPECT_EQ(Resume(&job), 1);
  EXPECT_EQ(CountOpenFds(), fds_before);
}

}  // namespace
