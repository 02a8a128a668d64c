// The stack caches (asyncjob_set_stack_cache_limits): off by default; when
// on, freed guarded stacks stay mapped with their guard and go to the next
// jobs, within the bounds, across ASYNC_cleanup_thread, thread exit and fork,
// and never past the guarded budget. Its own executable: the caches are
// process-wide state.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <thread>

#include "asyncjob/async.h"
#include "base/sanitizers.h"
#include "support/test_support.h"

using asyncjob_test::CountMappings;
using asyncjob_test::Mapping;
using asyncjob_test::MappingContaining;
using asyncjob_test::MappingCountsAreExact;

namespace {

const void* frame_address = nullptr;
int RecordFrameAndPause(void*) {
  // The frame address, not a local's: under ASan locals may live on a
  // heap-allocated fake frame.
  frame_address = __builtin_frame_address(0);
  ASYNC_pause_job();
  return 1;
}

// Runs one job that pauses once; returns the stack mapping it ran on.
Mapping RunOneJob() {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &RecordFrameAndPause, nullptr, 0), ASYNC_PAUSE);
  Mapping stack = MappingContaining(frame_address);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  return stack;
}

TEST(StackCacheDefaults, OffByDefaultSoCleanupLeavesNoMapping) {
  size_t per_thread = 1, process = 1;
  asyncjob_get_stack_cache_limits(&per_thread, &process);
  EXPECT_EQ(per_thread, 0u);
  EXPECT_EQ(process, 0u);
  ASYNC_cleanup_thread();
  const size_t before = CountMappings();
  ASSERT_EQ(ASYNC_init_thread(0, 16), 1);
  ASYNC_cleanup_thread();
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), before);
  }
  EXPECT_EQ(asyncjob_trim_stack_cache(), 0u);
}

class StackCache : public ::testing::Test {
 protected:
  void SetUp() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    saved_budget_ = asyncjob_get_guarded_stack_budget();
    asyncjob_set_stack_cache_limits(64, 1024);
    asyncjob_trim_stack_cache();
    before_ = CountMappings();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_set_stack_cache_limits(0, 0);
    EXPECT_EQ(asyncjob_trim_stack_cache(), 0u) << "limits of 0 unmapped every cached stack";
    asyncjob_set_guarded_stack_budget(saved_budget_);
    if (MappingCountsAreExact()) {
      EXPECT_EQ(CountMappings(), before_) << "a mapping leaked";
    }
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  }
  size_t saved_budget_ = 0;
  size_t before_ = 0;
};

TEST_F(StackCache, LimitsAreClampedToTheirBounds) {
  asyncjob_set_stack_cache_limits(SIZE_MAX, SIZE_MAX);
  size_t per_thread = 0, process = 0;
  asyncjob_get_stack_cache_limits(&per_thread, &process);
  EXPECT_EQ(per_thread, 64u);
  EXPECT_EQ(process, 16384u);
}

TEST_F(StackCache, CleanupKeepsTheStacksAndTheNextPoolReusesThem) {
  ASSERT_EQ(ASYNC_init_thread(0, 16), 1);
  const size_t with_pool = CountMappings();
  ASYNC_cleanup_thread();
  const size_t after_cleanup = CountMappings();
  if (MappingCountsAreExact()) {
    EXPECT_GE(after_cleanup, before_ + 2 * 16) << "the 16 stacks and guards stayed mapped";
  }
  ASSERT_EQ(ASYNC_init_thread(0, 16), 1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 16u);
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), with_pool) << "a new pool maps no stack while the cache has some";
  }
  ASYNC_cleanup_thread();
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), after_cleanup);
  }
  EXPECT_EQ(asyncjob_trim_stack_cache(), 16u);
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), before_);
  }
}

TEST_F(StackCache, AReusedStackKeepsItsGuard) {
  const Mapping first = RunOneJob();
  ASYNC_cleanup_thread();
  const Mapping second = RunOneJob();
  EXPECT_EQ(second.low, first.low) << "the cached stack went to the next job";
  EXPECT_EQ(second.protection, "rw-p");
  const Mapping guard = MappingContaining(reinterpret_cast<const void*>(second.low - 1));
  EXPECT_EQ(guard.protection, "---p");
  EXPECT_GE(guard.high - guard.low, 64u * 1024);
}

TEST_F(StackCache, TheBoundsHold) {
  asyncjob_set_stack_cache_limits(2, 3);
  ASSERT_EQ(ASYNC_init_thread(0, 10), 1);
  ASYNC_cleanup_thread();
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), before_ + 2 * 3) << "three stacks and their guards";
  }
  EXPECT_EQ(asyncjob_trim_stack_cache(), 3u);
}

TEST_F(StackCache, LoweringTheLimitsUnmapsTheExcess) {
  ASSERT_EQ(ASYNC_init_thread(0, 16), 1);
  ASYNC_cleanup_thread();
  asyncjob_set_stack_cache_limits(64, 4);
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), before_ + 2 * 4);
  }
  asyncjob_set_stack_cache_limits(0, 0);
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), before_);
  }
}

TEST_F(StackCache, AnExitingThreadHandsItsStacksToTheProcess) {
  // A first thread lets the C library set up what it keeps after a thread
  // (a cached thread stack, a malloc arena), so that only ours count.
  std::thread([] {}).join();
  before_ = CountMappings();
  std::thread([] {
    ASSERT_EQ(ASYNC_init_thread(0, 8), 1);
    RunOneJob();
  }).join();
  const size_t after_thread = CountMappings();
  if (MappingCountsAreExact()) {
    EXPECT_EQ(after_thread, before_ + 2 * 8) << "the thread's 8 stacks and guards stayed mapped";
  }
  ASSERT_EQ(ASYNC_init_thread(0, 8), 1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 8u);
  ASYNC_cleanup_thread();
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), after_thread) << "this pool took the thread's stacks, no new ones";
  }
  EXPECT_EQ(asyncjob_trim_stack_cache(), 8u);
}

TEST_F(StackCache, CachedStacksCountAgainstTheGuardedBudget) {
  asyncjob_set_guarded_stack_budget(4);
  ASSERT_EQ(ASYNC_init_thread(0, 4), 1);
  ASYNC_cleanup_thread();
  ASSERT_EQ(ASYNC_init_thread(0, 8), 1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 4u);
  EXPECT_EQ(stats.slab, 4u);
  ASYNC_cleanup_thread();
  EXPECT_LE(asyncjob_trim_stack_cache(), 4u) << "never more guarded mappings than the budget";
}

TEST_F(StackCache, AForkedChildRunsJobsOnTheCachedStacks) {
  ASSERT_EQ(ASYNC_init_thread(0, 4), 1);
  ASYNC_cleanup_thread();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    bool ok = ASYNC_init_thread(0, 4) == 1;
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    ok =
        ok && ASYNC_start_job(&job, nullptr, &ret, &RecordFrameAndPause, nullptr, 0) == ASYNC_PAUSE;
    ok = ok && ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0) == ASYNC_FINISH;
    _exit(ok && ret == 1 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  RunOneJob();
  ASYNC_cleanup_thread();
  EXPECT_EQ(asyncjob_trim_stack_cache(), 4u);
}

#if ASYNCJOB_ASAN
// A cached stack is off limits, as an unmapped one was: a late read through
// a pointer into a finished job's stack is reported.
TEST_F(StackCache, ALateUseOfACachedStackIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  RunOneJob();
  ASYNC_cleanup_thread();
  const auto* stale = static_cast<const volatile char*>(frame_address);
  EXPECT_DEATH((void)*stale, "use-after-poison");
}
#endif

}  // namespace
