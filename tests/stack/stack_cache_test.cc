// The stack caches (asyncjob_set_stack_cache_limits): on by default, 64 per
// thread and 1024 process-wide; freed guarded stacks stay mapped with their guard and go to the
// next jobs, within the bounds, across ASYNC_cleanup_thread, thread exit and fork, and never past
// the guarded budget. Its own executable: the caches are process-wide state.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <thread>
#include <vector>

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

TEST(StackCacheDefaults, OnByDefaultWithTheDocumentedBounds) {
  size_t per_thread = 0, process = 0;
  asyncjob_get_stack_cache_limits(&per_thread, &process);
  EXPECT_EQ(per_thread, 64u);
  EXPECT_EQ(process, 1024u);
}

TEST(StackCacheDefaults, ZeroLimitsTurnThemOffSoCleanupLeavesNoMapping) {
  size_t per_thread = 0, process = 0;
  asyncjob_get_stack_cache_limits(&per_thread, &process);
  asyncjob_set_stack_cache_limits(0, 0);
  EXPECT_EQ(asyncjob_trim_stack_cache(), 0u) << "limits of 0 unmapped every cached stack";
  ASYNC_cleanup_thread();
  const size_t before = CountMappings();
  ASSERT_EQ(ASYNC_init_thread(0, 16), 1);
  ASYNC_cleanup_thread();
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), before);
  }
  EXPECT_EQ(asyncjob_trim_stack_cache(), 0u);
  asyncjob_set_stack_cache_limits(per_thread, process);
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
    asyncjob_set_stack_cache_limits(64, 1024);  // the defaults
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

int PauseOnce(void*) {
  ASYNC_pause_job();
  return 1;
}

// A thread that creates 10,000 jobs, pauses and finishes them, leaves at most
// the process-wide cache's worth of stacks behind when it exits (its pool's
// idle jobs are freed then, and its own cache goes to the process's), and
// nothing else.
constexpr size_t kJobs = 10000;
TEST_F(StackCache, ATenThousandJobThreadLeavesAtMostTheBound) {
  std::thread([] {}).join();
  before_ = CountMappings();
  size_t peak = 0;
  std::thread([&peak] {
    ASSERT_EQ(ASYNC_init_thread(0, 0), 1);
    std::vector<ASYNC_JOB*> jobs(kJobs, nullptr);
    int ret = 0;
    for (ASYNC_JOB*& job : jobs) {
      ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
    }
    asyncjob_pool_stats stats;
    ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
    EXPECT_EQ(stats.guarded, kJobs);
    peak = CountMappings();
    for (ASYNC_JOB*& job : jobs) {
      ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    }
  }).join();
  const size_t after_thread = CountMappings();
  if (MappingCountsAreExact()) {
    EXPECT_GE(peak, before_ + 2 * kJobs) << "every stack had its guard";
    EXPECT_LE(after_thread, before_ + 2 * 1024) << "at most the process-wide bound stayed";
  }
  const size_t cached = asyncjob_trim_stack_cache();
  EXPECT_EQ(cached, 1024u) << "the process-wide cache filled up, and no further";
  if (MappingCountsAreExact()) {
    EXPECT_EQ(CountMappings(), before_);
  }
}

const void* frames[512];
int TouchThreePagesAndPause(void* arg) {
  const int index = *static_cast<int*>(arg);
  volatile char deep[3 * 4096];
  for (size_t i = 0; i < sizeof deep; i += 512) deep[i] = 1;
  frames[index] = __builtin_frame_address(0);
  ASYNC_pause_job();
  return deep[0];
}

// Of the stacks in the process-wide cache, at most 256
// (kResidentInProcessCache) keep their pages; the others are released.
TEST_F(StackCache, TheProcessCacheKeepsThePagesOfAtMost256Stacks) {
  if (ASYNCJOB_TEST_UNDER_VALGRIND()) GTEST_SKIP() << "mincore describes valgrind's process";
  constexpr int kTouching = 512;
  std::vector<ASYNC_JOB*> jobs(kTouching, nullptr);
  int ret = 0;
  for (int i = 0; i < kTouching; ++i) {
    ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, &TouchThreePagesAndPause, &i, sizeof i),
              ASYNC_PAUSE);
  }
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  }
  ASYNC_cleanup_thread();  // the thread's cache goes to the process's
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  size_t resident = 0;
  for (const void* frame : frames) {
    unsigned char flags = 0;
    void* frame_page = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(frame) & ~(page - 1));
    ASSERT_EQ(mincore(frame_page, page, &flags), 0) << "a cached stack is still mapped";
    resident += flags & 1;
  }
  EXPECT_LE(resident, 256u);
  const size_t cached = asyncjob_trim_stack_cache();
  EXPECT_GE(cached, static_cast<size_t>(kTouching)) << "every used stack was cached";
  EXPECT_LE(cached, 1024u);
}

// With a budget smaller than the caches, threads that come and go keep
// within it: cached stacks count as guarded ones.
TEST_F(StackCache, ThreadsThatComeAndGoStayWithinTheGuardedBudget) {
  std::thread([] {}).join();  // the C library's own first-thread mappings
  before_ = CountMappings();
  asyncjob_set_guarded_stack_budget(8);
  for (int round = 0; round < 3; ++round) {
    std::thread([] {
      ASSERT_EQ(ASYNC_init_thread(0, 16), 1);
      asyncjob_pool_stats stats;
      ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
      EXPECT_EQ(stats.guarded, 8u);
      EXPECT_EQ(stats.slab, 8u);
      RunOneJob();
    }).join();
  }
  EXPECT_LE(asyncjob_trim_stack_cache(), 8u) << "never more guarded mappings than the budget";
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
