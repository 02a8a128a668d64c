// Behaviour of jobs and the per-thread pool through the C API
// (ASYNC_start_job(3), OpenSSL 3.5), plus asyncjob's documented answers where
// OpenSSL crashes or is undefined.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "support/mapping_check.h"
#include "support/test_support.h"

using asyncjob_test::ErrorQueueEmpty;
using asyncjob_test::PopError;
using asyncjob_test::QueuedError;

namespace {

class JobApi : public ::testing::Test {
 protected:
  void SetUp() override { asyncjob_clear_errors(); }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
};

int ReturnSeven(void*) { return 7; }

int AddOne(void* arg) { return *static_cast<int*>(arg) + 1; }

int PauseOnceThenReturnArg(void* arg) {
  ASYNC_pause_job();
  return *static_cast<int*>(arg);
}

int PauseNTimes(void* arg) {
  int n = *static_cast<int*>(arg);
  for (int i = 0; i < n; ++i) ASYNC_pause_job();
  return n;
}

ASYNC_JOB* seen_job = nullptr;
int RecordCurrentJob(void*) {
  seen_job = ASYNC_get_current_job();
  return 1;
}

// Runs a job to completion, resuming it whenever it pauses.
int RunToFinish(int (*func)(void*), void* args, size_t size, ASYNC_WAIT_CTX* ctx = nullptr) {
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  int status;
  while ((status = ASYNC_start_job(&job, ctx, &ret, func, args, size)) == ASYNC_PAUSE) {
  }
  EXPECT_EQ(status, ASYNC_FINISH);
  return ret;
}

}  // namespace

// ----- Constants and capability -----

TEST_F(JobApi, ConstantsMatchOpenSSL) {
  EXPECT_EQ(ASYNC_ERR, 0);
  EXPECT_EQ(ASYNC_NO_JOBS, 1);
  EXPECT_EQ(ASYNC_PAUSE, 2);
  EXPECT_EQ(ASYNC_FINISH, 3);
  EXPECT_EQ(ASYNC_STATUS_UNSUPPORTED, 0);
  EXPECT_EQ(ASYNC_STATUS_ERR, 1);
  EXPECT_EQ(ASYNC_STATUS_OK, 2);
  EXPECT_EQ(ASYNC_STATUS_EAGAIN, 3);
  EXPECT_EQ(ASYNC_R_FAILED_TO_SET_POOL, 101);
  EXPECT_EQ(ASYNC_R_FAILED_TO_SWAP_CONTEXT, 102);
  EXPECT_EQ(ASYNC_R_INVALID_POOL_SIZE, 103);
  EXPECT_EQ(ASYNC_R_INIT_FAILED, 105);
  OSSL_ASYNC_FD fd = 0;
  static_assert(sizeof fd == sizeof(int));
  EXPECT_EQ(OSSL_BAD_ASYNC_FD, -1);
}

TEST_F(JobApi, IsCapable) { EXPECT_EQ(ASYNC_is_capable(), 1); }

// ----- Start, pause, resume, finish -----

TEST_F(JobApi, StartToFinishWritesRetAndClearsJob) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int input = 41;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &AddOne, &input, sizeof input), ASYNC_FINISH);
  EXPECT_EQ(ret, 42);
  EXPECT_EQ(job, nullptr);
}

TEST_F(JobApi, PauseReturnsJobHandleAndLeavesRetAlone) {
  ASYNC_JOB* job = nullptr;
  int ret = 12345;
  int input = 9;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &input, sizeof input),
            ASYNC_PAUSE);
  EXPECT_NE(job, nullptr);
  EXPECT_EQ(ret, 12345) << "*ret must be written only on ASYNC_FINISH";
  EXPECT_EQ(ASYNC_get_current_job(), nullptr) << "no job is current once it paused";
  ASYNC_JOB* handle = job;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 9);
  EXPECT_EQ(job, nullptr);
  (void)handle;
}

TEST_F(JobApi, ManyPausesEachReturnToCaller) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int pauses = 100;
  int seen_pauses = 0;
  int status;
  while ((status = ASYNC_start_job(&job, nullptr, &ret, &PauseNTimes, &pauses, sizeof pauses)) ==
         ASYNC_PAUSE) {
    ++seen_pauses;
  }
  EXPECT_EQ(status, ASYNC_FINISH);
  EXPECT_EQ(seen_pauses, 100);
  EXPECT_EQ(ret, 100);
}

TEST_F(JobApi, ArgumentsAreCopiedAtStart) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int input = 5;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &input, sizeof input),
            ASYNC_PAUSE);
  input = 999;  // the job has its own copy
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 5);
}

namespace {
struct Big {
  unsigned char bytes[40000];
};
int SumBigAfterPause(void* arg) {
  ASYNC_pause_job();
  const Big* big = static_cast<const Big*>(arg);
  int sum = 0;
  for (unsigned char b : big->bytes) sum += b;
  return sum;
}
int ArgIsNull(void* arg) { return arg == nullptr ? 1 : 0; }
int ArgAligned(void* arg) {
  return reinterpret_cast<std::uintptr_t>(arg) % alignof(std::max_align_t) == 0 ? 1 : 0;
}
}  // namespace

TEST_F(JobApi, LargeArgumentsAreCopiedToo) {
  auto big = std::make_unique<Big>();
  int expected = 0;
  for (size_t i = 0; i < sizeof big->bytes; ++i) {
    big->bytes[i] = static_cast<unsigned char>(i * 7);
    expected += big->bytes[i];
  }
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &SumBigAfterPause, big.get(), sizeof *big),
            ASYNC_PAUSE);
  std::memset(big->bytes, 0, sizeof big->bytes);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, expected);
}

TEST_F(JobApi, NullArgsGiveTheFunctionNull) {
  EXPECT_EQ(RunToFinish(&ArgIsNull, nullptr, 0), 1);
  EXPECT_EQ(RunToFinish(&ArgIsNull, nullptr, 64), 1);
}

TEST_F(JobApi, ArgumentCopiesAreAligned) {
  char odd[3] = {1, 2, 3};
  EXPECT_EQ(RunToFinish(&ArgAligned, odd, sizeof odd), 1);
  char one = 'x';
  EXPECT_EQ(RunToFinish(&ArgAligned, &one, 1), 1);
}

namespace {
int called_instead = 0;
int OtherFunction(void*) {
  ++called_instead;
  return -1;
}
}  // namespace

TEST_F(JobApi, FuncArgsAndSizeAreIgnoredOnRestart) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int input = 77;
  int other = 1;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &input, sizeof input),
            ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &OtherFunction, &other, sizeof other),
            ASYNC_FINISH);
  EXPECT_EQ(ret, 77);
  EXPECT_EQ(called_instead, 0);
}

TEST_F(JobApi, PauseOutsideAJobReturnsOneAndDoesNothing) {
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
  EXPECT_EQ(ASYNC_pause_job(), 1);
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST_F(JobApi, CurrentJobIsTheHandleInsideAndNullOutside) {
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
  seen_job = nullptr;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  // A job that records itself, then pauses so that we can compare handles.
  auto record_and_pause = [](void*) -> int {
    seen_job = ASYNC_get_current_job();
    ASYNC_pause_job();
    return seen_job == ASYNC_get_current_job() ? 1 : 0;
  };
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +record_and_pause, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(seen_job, job);
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1) << "the current job is the same object after a resume";
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
}

TEST_F(JobApi, WaitCtxOfAJobIsTheOneItWasStartedWith) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  static ASYNC_WAIT_CTX* seen;
  auto record = [](void*) -> int {
    seen = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    return 0;
  };
  RunToFinish(+record, nullptr, 0, ctx);
  EXPECT_EQ(seen, ctx);
  ASYNC_WAIT_CTX_free(ctx);
}

// ----- Block and unblock -----

namespace {
int pauses_taken = 0;
int BlockedPauses(void*) {
  pauses_taken = 0;
  ASYNC_block_pause();
  ASYNC_block_pause();
  EXPECT_EQ(ASYNC_pause_job(), 1);  // blocked: returns at once
  ASYNC_unblock_pause();
  EXPECT_EQ(ASYNC_pause_job(), 1);  // still blocked once
  ASYNC_unblock_pause();
  ASYNC_pause_job();  // now it pauses
  pauses_taken = 1;
  return 3;
}
}  // namespace

TEST_F(JobApi, BlockPauseNestsAndUnblockReenables) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &BlockedPauses, nullptr, 0), ASYNC_PAUSE)
      << "only the unblocked pause returns to the caller";
  EXPECT_EQ(pauses_taken, 0);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(pauses_taken, 1);
  EXPECT_EQ(ret, 3);
}

TEST_F(JobApi, BlockOutsideAJobHasNoEffect) {
  ASYNC_block_pause();
  ASYNC_block_pause();
  int n = 1;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseNTimes, &n, sizeof n), ASYNC_PAUSE)
      << "a block taken outside any job must not reach into the next job";
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  ASYNC_unblock_pause();
  ASYNC_unblock_pause();
  ASYNC_unblock_pause();  // extra unblocks outside a job are harmless too
}

TEST_F(JobApi, BlockStateBelongsToTheJob) {
  // A job that leaves pausing blocked when it finishes ...
  auto leaky = [](void*) -> int {
    ASYNC_block_pause();
    return 0;
  };
  RunToFinish(+leaky, nullptr, 0);
  // ... does not stop the next job (reusing the same pooled object) pausing.
  int n = 1;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseNTimes, &n, sizeof n), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
}

TEST_F(JobApi, ExtraUnblockInsideAJobDoesNotGoNegative) {
  auto job_fn = [](void*) -> int {
    ASYNC_unblock_pause();  // nothing to unblock
    ASYNC_block_pause();
    int blocked_pause = ASYNC_pause_job();  // must not pause
    ASYNC_unblock_pause();
    ASYNC_pause_job();  // must pause
    return blocked_pause;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +job_fn, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
}

// ----- The pool -----

TEST_F(JobApi, InitThreadPreCreatesJobs) {
  ASSERT_EQ(ASYNC_init_thread(8, 3), 1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.max_size, 8u);
  EXPECT_EQ(stats.total, 3u);
  EXPECT_EQ(stats.idle, 3u);
  EXPECT_EQ(stats.in_use, 0u);
}

TEST_F(JobApi, InitSizeAboveMaxSizeFails) {
  EXPECT_EQ(ASYNC_init_thread(2, 3), 0);
  QueuedError error = PopError();
  EXPECT_EQ(error.library(), ASYNCJOB_ERR_LIB_ASYNC);
  EXPECT_EQ(error.reason(), ASYNC_R_INVALID_POOL_SIZE);
  EXPECT_FALSE(error.message.empty());
  asyncjob_pool_stats stats;
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 0) << "no pool was created";
}

TEST_F(JobApi, MaxSizeZeroMeansUnlimited) {
  ASSERT_EQ(ASYNC_init_thread(0, 4), 1) << "init_size with an unlimited pool is fine";
  std::vector<ASYNC_JOB*> jobs(200, nullptr);
  int ret = 0;
  int value = 3;
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &value, sizeof value),
              ASYNC_PAUSE);
  }
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 200u);
  EXPECT_EQ(stats.total, 200u);
  EXPECT_EQ(stats.max_size, 0u);
  for (ASYNC_JOB*& job : jobs) {
    ret = 0;
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 3);
  }
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.idle, 200u);
}

TEST_F(JobApi, FirstUseWithoutInitCreatesAnUnlimitedPool) {
  asyncjob_pool_stats stats;
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 0);
  EXPECT_EQ(RunToFinish(&ReturnSeven, nullptr, 0), 7);
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.max_size, 0u);
  EXPECT_EQ(stats.total, 1u);
  EXPECT_EQ(stats.idle, 1u);
}

TEST_F(JobApi, ExhaustedPoolReturnsNoJobsAndTouchesNothing) {
  ASSERT_EQ(ASYNC_init_thread(2, 0), 1);
  ASYNC_JOB* a = nullptr;
  ASYNC_JOB* b = nullptr;
  ASYNC_JOB* c = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&a, nullptr, &ret, &PauseOnceThenReturnArg, &ret, sizeof ret),
            ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&b, nullptr, &ret, &PauseOnceThenReturnArg, &ret, sizeof ret),
            ASYNC_PAUSE);
  int untouched = 555;
  EXPECT_EQ(ASYNC_start_job(&c, nullptr, &untouched, &ReturnSeven, nullptr, 0), ASYNC_NO_JOBS);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(untouched, 555);
  EXPECT_TRUE(ErrorQueueEmpty()) << "NO_JOBS is not an error: nothing is queued";
  // Once one finishes, its job is available again.
  ASSERT_EQ(ASYNC_start_job(&a, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ASYNC_start_job(&c, nullptr, &untouched, &ReturnSeven, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(untouched, 7);
  ASSERT_EQ(ASYNC_start_job(&b, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
}

TEST_F(JobApi, FinishedJobsAreReused) {
  seen_job = nullptr;
  RunToFinish(&RecordCurrentJob, nullptr, 0);
  ASYNC_JOB* first = seen_job;
  RunToFinish(&RecordCurrentJob, nullptr, 0);
  EXPECT_EQ(seen_job, first);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.total, 1u);
}

TEST_F(JobApi, CleanupThreadFreesIdleJobsAndMappings) {
  ASYNC_cleanup_thread();
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  ASSERT_EQ(ASYNC_init_thread(0, 16), 1);
  EXPECT_GT(asyncjob_test::CountMappings(), before);
  ASYNC_cleanup_thread();
  asyncjob_pool_stats stats;
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 0);
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before));
  }
}

TEST_F(JobApi, InitThreadAgainReconfiguresAnIdlePool) {
  ASSERT_EQ(ASYNC_init_thread(4, 2), 1);
  RunToFinish(&ReturnSeven, nullptr, 0);
  ASSERT_EQ(ASYNC_init_thread(1, 1), 1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.max_size, 1u);
  EXPECT_EQ(stats.total, 1u);
}

TEST_F(JobApi, InitThreadWhileJobsArePausedFails) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &ret, sizeof ret),
            ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_init_thread(4, 0), 0);
  EXPECT_EQ(PopError().reason(), ASYNC_R_FAILED_TO_SET_POOL);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
}

TEST_F(JobApi, CleanupWithPausedJobsFreesThemWhenTheyFinish) {
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int value = 31;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &value, sizeof value),
            ASYNC_PAUSE);
  ASYNC_cleanup_thread();
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  // The paused job is still intact and resumable.
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 31);
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before)) << "its stack went with it";
  }
}

// A job cannot free the stack it runs on: one whose pool starts closing
// while it runs (ASYNC_cleanup_thread() called inside it) is freed after it
// has left, by the thread's next entry into a job, cleanup or exit.
int CleanUpThreadThenReturnArg(void* arg) {
  ASYNC_cleanup_thread();
  return *static_cast<int*>(arg);
}

int CleanUpThreadThenPauseThenReturnArg(void* arg) {
  ASYNC_cleanup_thread();
  ASYNC_pause_job();
  return *static_cast<int*>(arg);
}

TEST_F(JobApi, CleanupInsideARunningJobFreesItAfterItFinishes) {
  ASYNC_cleanup_thread();
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  asyncjob_stats start;
  ASSERT_EQ(asyncjob_get_stats(&start), 1);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int value = 17;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &CleanUpThreadThenReturnArg, &value, sizeof value),
            ASYNC_FINISH);
  EXPECT_EQ(ret, 17);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  // The thread carries on with a new pool; its first job frees the old one.
  EXPECT_EQ(RunToFinish(&ReturnSeven, nullptr, 0), 7);
  ASYNC_cleanup_thread();
  asyncjob_stats end;
  ASSERT_EQ(asyncjob_get_stats(&end), 1);
  EXPECT_EQ(end.jobs_freed - start.jobs_freed, end.jobs_created - start.jobs_created);
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before)) << "both stacks went";
  }
}

TEST_F(JobApi, CleanupInsideARunningJobThatThenPausesFreesItWhenItFinishes) {
  ASYNC_cleanup_thread();
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int value = 23;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &CleanUpThreadThenPauseThenReturnArg, &value,
                            sizeof value),
            ASYNC_PAUSE);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 23);
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before));
  }
}

TEST_F(JobApi, CleanupInsideARunningJobThenThreadExitFreesIt) {
  std::thread([] {
    std::vector<char> warm(1000);
    (void)warm;
  }).join();
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  std::thread worker([] {
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    int value = 5;
    ASSERT_EQ(
        ASYNC_start_job(&job, nullptr, &ret, &CleanUpThreadThenReturnArg, &value, sizeof value),
        ASYNC_FINISH);
    EXPECT_EQ(ret, 5);
    asyncjob_clear_errors();
  });
  worker.join();
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before));
  }
}

TEST_F(JobApi, ThreadExitCleansUpItsPool) {
  // A first thread lets the C library set up what it keeps after a thread
  // (a cached thread stack, a malloc arena), so that only our mappings count.
  std::thread([] {
    std::vector<char> warm(1000);
    (void)warm;
  }).join();
  std::size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
  std::thread worker([] {
    ASSERT_EQ(ASYNC_init_thread(0, 8), 1);
    for (int i = 0; i < 20; ++i) RunToFinish(&ReturnSeven, nullptr, 0);
  });
  worker.join();
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before));
  }
}

// ----- Errors where OpenSSL crashes -----

TEST_F(JobApi, NullJobRetOrFuncIsAnError) {
  int ret = 0;
  ASYNC_JOB* job = nullptr;
  EXPECT_EQ(ASYNC_start_job(nullptr, nullptr, &ret, &ReturnSeven, nullptr, 0), ASYNC_ERR);
  QueuedError error = PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);
  EXPECT_NE(error.message.find("job"), std::string::npos);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, nullptr, &ReturnSeven, nullptr, 0), ASYNC_ERR);
  error = PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);
  EXPECT_NE(error.message.find("ret"), std::string::npos);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_ERR);
  error = PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);
  EXPECT_NE(error.message.find("func"), std::string::npos);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(ASYNC_get_wait_ctx(nullptr), nullptr);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);
}

// As with libcrypto, any number of jobs may be started with one context,
// paused at once.
TEST_F(JobApi, AWaitCtxIsSharedBySeveralJobs) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* first = nullptr;
  ASYNC_JOB* second = nullptr;
  ASYNC_JOB* third = nullptr;
  int ret = 0;
  int eight = 8;
  int nine = 9;
  ASSERT_EQ(ASYNC_start_job(&first, ctx, &ret, &PauseOnceThenReturnArg, &eight, sizeof eight),
            ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&second, ctx, &ret, &PauseOnceThenReturnArg, &nine, sizeof nine),
            ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_start_job(&third, ctx, &ret, &ReturnSeven, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 7);
  EXPECT_EQ(ASYNC_get_wait_ctx(first), ctx);
  EXPECT_EQ(ASYNC_get_wait_ctx(second), ctx);
  ASSERT_EQ(ASYNC_start_job(&second, ctx, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 9);
  ASSERT_EQ(ASYNC_start_job(&first, ctx, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 8);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST_F(JobApi, NullWaitCtxJobsPauseAndResume) {
  int n = 3;
  EXPECT_EQ(RunToFinish(&PauseNTimes, &n, sizeof n, nullptr), 3);
}

TEST_F(JobApi, ResumingAFinishedJobIsAnError) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &ret, sizeof ret),
            ASYNC_PAUSE);
  ASYNC_JOB* stale = job;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  ret = 4242;
  EXPECT_EQ(ASYNC_start_job(&stale, nullptr, &ret, nullptr, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOB_NOT_PAUSED);
  EXPECT_EQ(ret, 4242);
}

TEST_F(JobApi, ResumeFromAnotherThreadFailsAndLeavesTheJobResumable) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int value = 64;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceThenReturnArg, &value, sizeof value),
            ASYNC_PAUSE);
  int other_status = -1;
  int other_reason = 0;
  ASYNC_JOB* other_job = nullptr;
  std::thread other([&] {
    ASYNC_JOB* copy = job;
    int other_ret = 0;
    other_status = ASYNC_start_job(&copy, nullptr, &other_ret, nullptr, nullptr, 0);
    other_job = copy;
    other_reason = PopError().reason();
  });
  other.join();
  EXPECT_EQ(other_status, ASYNC_ERR);
  EXPECT_EQ(other_reason, ASYNCJOB_R_WRONG_THREAD);
  EXPECT_EQ(other_job, job) << "the handle is left as it was";
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 64);
}

// ----- Nested jobs -----

namespace {
struct NestedLog {
  int inner_status_first = -1;
  int inner_status_second = -1;
  int inner_ret = 0;
  ASYNC_JOB* outer = nullptr;
  ASYNC_JOB* inner_seen_parent_after = nullptr;
};
NestedLog nested;

int InnerJob(void*) {
  ASYNC_pause_job();  // returns to the outer job, not to main
  return 11;
}

int OuterJob(void*) {
  nested.outer = ASYNC_get_current_job();
  ASYNC_JOB* inner = nullptr;
  nested.inner_status_first =
      ASYNC_start_job(&inner, nullptr, &nested.inner_ret, &InnerJob, nullptr, 0);
  nested.inner_seen_parent_after = ASYNC_get_current_job();
  ASYNC_pause_job();  // the outer job pauses with the inner one paused
  nested.inner_status_second =
      ASYNC_start_job(&inner, nullptr, &nested.inner_ret, nullptr, nullptr, 0);
  return 22;
}
}  // namespace

TEST_F(JobApi, StartInsideAJobRunsANestedJob) {
  nested = NestedLog{};
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &OuterJob, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(nested.inner_status_first, ASYNC_PAUSE)
      << "the nested job's pause returned to the enclosing job";
  EXPECT_EQ(nested.inner_seen_parent_after, nested.outer)
      << "after the nested job paused, the enclosing job is current again";
  EXPECT_EQ(job, nested.outer);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(nested.inner_status_second, ASYNC_FINISH);
  EXPECT_EQ(nested.inner_ret, 11);
  EXPECT_EQ(ret, 22);
  EXPECT_EQ(ASYNC_get_current_job(), nullptr);
}

namespace {
ASYNC_JOB* outer_handle = nullptr;
int resume_running_status = -1;
int resume_running_reason = 0;
int InnerTriesToResumeOuter(void*) {
  ASYNC_JOB* target = outer_handle;
  int r = 0;
  resume_running_status = ASYNC_start_job(&target, nullptr, &r, nullptr, nullptr, 0);
  resume_running_reason = PopError().reason();
  return 0;
}
int OuterStartsInner(void*) {
  outer_handle = ASYNC_get_current_job();
  ASYNC_JOB* inner = nullptr;
  int r = 0;
  return ASYNC_start_job(&inner, nullptr, &r, &InnerTriesToResumeOuter, nullptr, 0);
}
}  // namespace

TEST_F(JobApi, ResumingARunningJobIsAnError) {
  EXPECT_EQ(RunToFinish(&OuterStartsInner, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(resume_running_status, ASYNC_ERR);
  EXPECT_EQ(resume_running_reason, ASYNCJOB_R_JOB_NOT_PAUSED);
}

TEST_F(JobApi, NestedJobPausedCanBeResumedFromTheTopLevel) {
  // The outer job starts an inner job that pauses, then finishes, handing
  // the inner handle out; the top level then resumes the inner job.
  static ASYNC_JOB* inner_handle;
  static int inner_ret;
  auto outer = [](void*) -> int {
    inner_handle = nullptr;
    return ASYNC_start_job(&inner_handle, nullptr, &inner_ret, &InnerJob, nullptr, 0);
  };
  EXPECT_EQ(RunToFinish(+outer, nullptr, 0), ASYNC_PAUSE);
  ASSERT_NE(inner_handle, nullptr);
  EXPECT_EQ(ASYNC_start_job(&inner_handle, nullptr, &inner_ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(inner_ret, 11);
}

// ----- Error queue -----

TEST_F(JobApi, ErrorQueueKeepsOrderPeekAndClear) {
  EXPECT_EQ(asyncjob_get_error(nullptr), 0u);
  ASYNC_init_thread(1, 2);      // INVALID_POOL_SIZE
  ASYNC_get_wait_ctx(nullptr);  // PASSED_NULL_PARAMETER
  const char* message = nullptr;
  unsigned long first = asyncjob_peek_error(&message);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(first), ASYNC_R_INVALID_POOL_SIZE);
  EXPECT_EQ(ASYNCJOB_ERR_GET_LIB(first), 51);
  EXPECT_NE(std::string(message).find("init_size"), std::string::npos);
  unsigned long last = asyncjob_peek_last_error(nullptr);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(last), ASYNCJOB_R_PASSED_NULL_PARAMETER);
  EXPECT_EQ(asyncjob_get_error(nullptr), first);
  EXPECT_EQ(asyncjob_get_error(nullptr), last);
  EXPECT_EQ(asyncjob_get_error(nullptr), 0u);
  ASYNC_get_wait_ctx(nullptr);
  asyncjob_clear_errors();
  EXPECT_EQ(asyncjob_get_error(nullptr), 0u);
}

TEST_F(JobApi, ErrorQueueKeepsTheNewestSixteen) {
  for (int i = 0; i < 20; ++i) ASYNC_init_thread(1, static_cast<size_t>(2 + i));
  int count = 0;
  const char* message = nullptr;
  std::string first_message;
  while (asyncjob_get_error(&message) != 0) {
    if (count == 0) first_message = message;
    ++count;
  }
  EXPECT_EQ(count, 16);
  EXPECT_NE(first_message.find("init_size 6 "), std::string::npos) << first_message;
}

TEST_F(JobApi, ErrorQueueIsPerThread) {
  ASYNC_get_wait_ctx(nullptr);
  unsigned long seen_on_other = 1;
  std::thread other([&] { seen_on_other = asyncjob_get_error(nullptr); });
  other.join();
  EXPECT_EQ(seen_on_other, 0u);
  EXPECT_NE(asyncjob_get_error(nullptr), 0u);
}

TEST_F(JobApi, ContextBackendIsNamed) {
  std::string backend = asyncjob_context_backend();
  EXPECT_TRUE(backend == "x86_64-sysv" || backend == "aarch64-aapcs" || backend == "ucontext")
      << backend;
}
