// Deep stacks: with asyncjob_set_stack_size(8 MiB), a job recursing through
// about 6 MiB of frames works, pauses at the bottom, resumes and unwinds
// intact, several at once, on guarded and on slab stacks. (What an overflow
// prints is covered by the death tests in tests/stack/stack_test.cc.)
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "asyncjob/async.h"
#include "base/sanitizers.h"
#include "support/test_support.h"

namespace {

constexpr size_t kStackSize = 8u << 20;
constexpr size_t kDepthBytes = 6u << 20;
constexpr int kFrameBytes = 1024;

// The recursion must use the job's real stack, not AddressSanitizer's
// heap-allocated fake frames.
#define DEEP_REAL_STACK_FRAMES __attribute__((no_sanitize("address"), noinline))

struct Dive {
  int id;
  const char* top = nullptr;      // first frame
  const char* deepest = nullptr;  // last frame
  int frames = 0;
};

DEEP_REAL_STACK_FRAMES int Down(Dive* dive, int depth) {
  volatile char frame[kFrameBytes];
  const char mark = static_cast<char>(dive->id * 31 + depth);
  frame[0] = mark;
  frame[kFrameBytes - 1] = mark;
  const char* here = static_cast<const char*>(__builtin_frame_address(0));
  if (depth == 0) dive->top = here;
  int below = 0;
  if (static_cast<size_t>(dive->top - here) < kDepthBytes) {
    below = Down(dive, depth + 1);
  } else {
    dive->deepest = here;
    dive->frames = depth + 1;
    ASYNC_pause_job();  // paused 6 MiB down
  }
  // Every frame must have come back as it was left.
  return below + (frame[0] == mark && frame[kFrameBytes - 1] == mark ? 1 : -1000000);
}

int DiveJob(void* arg) { return Down(*static_cast<Dive**>(arg), 0); }

class DeepStacks : public ::testing::Test {
 protected:
  void SetUp() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    saved_size_ = asyncjob_get_stack_size();
    saved_budget_ = asyncjob_get_guarded_stack_budget();
    ASSERT_EQ(asyncjob_set_stack_size(kStackSize), 1);
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_set_stack_size(saved_size_);
    asyncjob_set_guarded_stack_budget(saved_budget_);
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  }

  // Starts n jobs that each dive 6 MiB and pause there; resumes them in
  // reverse order; each must unwind intact.
  void DiveWith(int n) {
    std::vector<Dive> dives(static_cast<size_t>(n));
    std::vector<ASYNC_JOB*> jobs(static_cast<size_t>(n), nullptr);
    int ret = 0;
    for (int i = 0; i < n; ++i) {
      dives[i].id = i + 1;
      Dive* dive = &dives[i];
      ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, &DiveJob, &dive, sizeof dive),
                ASYNC_PAUSE);
      ASSERT_GE(static_cast<size_t>(dive->top - dive->deepest), kDepthBytes);
      EXPECT_LT(static_cast<size_t>(dive->top - dive->deepest), kStackSize);
    }
    // The stacks are distinct: no dive reaches into another's range.
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        if (i == j) continue;
        const bool apart = dives[i].deepest > dives[j].top || dives[i].top < dives[j].deepest;
        EXPECT_TRUE(apart) << "jobs " << i << " and " << j << " share stack memory";
      }
    }
    for (int i = n - 1; i >= 0; --i) {
      ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
      EXPECT_EQ(ret, dives[i].frames) << "a frame of job " << i << " changed while paused";
    }
  }

  size_t saved_size_ = 0;
  size_t saved_budget_ = 0;
};

}  // namespace

TEST_F(DeepStacks, SixMiBOfFramesOnAnEightMiBGuardedStack) {
  DiveWith(1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 1u);
}

TEST_F(DeepStacks, SeveralJobsPausedSixMiBDownAtOnce) {
  DiveWith(3);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.total, 3u);
}

TEST_F(DeepStacks, SixMiBOfFramesOnEightMiBSlabStacks) {
  if (ASYNCJOB_TEST_UNDER_VALGRIND()) {
    GTEST_SKIP() << "a slab of 8 MiB stacks is 2 GiB of address space, too much for valgrind";
  }
  asyncjob_set_guarded_stack_budget(0);
  // The canary of a slab stack sits just below it: a deep but bounded job
  // must not reach it (CheckCanary aborts at the pause if it did).
  DiveWith(2);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.slab, 2u);
}

// ----- The overflow message outlives a second pool -----

namespace {

DEEP_REAL_STACK_FRAMES int RecurseForever(int depth) {
  volatile char frame[kFrameBytes];
  frame[0] = static_cast<char>(depth);
  if (depth > 1'000'000'000) return frame[0];
  return RecurseForever(depth + 1) + frame[0];
}
int PauseThenOverflow(void*) {
  ASYNC_pause_job();
  return RecurseForever(0);
}
int ReturnOne(void*) { return 1; }

}  // namespace

// A job left paused when its pool was cleaned up still overflows with the
// message, even after a newer pool of the same thread came and went: the
// thread's alternate signal stack, which the handler runs on, must live as
// long as any of its jobs.
TEST(DeepStackDeathTest, OverflowMessageAfterANewerPoolCameAndWent) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        ASYNC_start_job(&job, nullptr, &ret, &PauseThenOverflow, nullptr, 0);
        ASYNC_cleanup_thread();  // the job's pool is closing, the job paused
        ASYNC_JOB* other = nullptr;
        ASYNC_start_job(&other, nullptr, &ret, &ReturnOne, nullptr, 0);  // a newer pool
        ASYNC_cleanup_thread();                                          // which goes away at once
        ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0);       // overflows into its guard
      },
      "asyncjob: stack overflow in job 0x[0-9a-f]+: fault at 0x[0-9a-f]+ in the guard");
}
