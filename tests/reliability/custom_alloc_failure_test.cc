// A custom stack allocator (ASYNC_set_mem_functions) that returns NULL on
// demand. Allocators are process-wide and fixed once a stack exists, so this
// executable installs one before any test runs and keeps it.
//
// Each failure must give ASYNC_ERR (or 0 from ASYNC_init_thread) with
// ASYNCJOB_R_STACK_ALLOCATION_FAILED queued on the failing thread only, hand
// back every block the allocator gave out (counted here), and leave the pool
// usable.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include "asyncjob/async.h"
#include "support/test_support.h"

using asyncjob_test::PopError;

namespace {

std::mutex blocks_mutex;
std::set<void*> blocks;              // handed out and not yet freed
std::atomic<int> fail_countdown{0};  // 0: never fail; n: fail the nth call from now
std::atomic<int> calls{0};

void* FailingAlloc(size_t* num) {
  ++calls;
  const int countdown = fail_countdown.load();
  if (countdown > 0 && fail_countdown.fetch_sub(1) == 1) return nullptr;
  void* block = std::malloc(*num);
  std::lock_guard lock(blocks_mutex);
  blocks.insert(block);
  return block;
}

void CheckedFree(void* address) {
  std::lock_guard lock(blocks_mutex);
  ASSERT_EQ(blocks.erase(address), 1u) << "freed a block the allocator did not hand out";
  std::free(address);
}

size_t LiveBlocks() {
  std::lock_guard lock(blocks_mutex);
  return blocks.size();
}

class InstallAllocator : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_EQ(ASYNC_set_mem_functions(&FailingAlloc, &CheckedFree), 1)
        << "a stack was allocated before the allocator could be installed";
  }
};

[[maybe_unused]] ::testing::Environment* const environment =
    ::testing::AddGlobalTestEnvironment(new InstallAllocator);

int PauseOnceReturnEleven(void*) {
  ASYNC_pause_job();
  return 11;
}

class CustomAllocatorFailure : public ::testing::Test {
 protected:
  void SetUp() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    fail_countdown = 0;
    fds_before_ = asyncjob_test::CountOpenFds();
  }
  void TearDown() override {
    fail_countdown = 0;
    ASYNC_cleanup_thread();
    EXPECT_EQ(LiveBlocks(), 0u) << "stack blocks were not given back";
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
    EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before_);
  }
  static void ExpectUsable() {
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceReturnEleven, nullptr, 0),
              ASYNC_PAUSE);
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 11);
  }
  size_t fds_before_ = 0;
};

}  // namespace

TEST_F(CustomAllocatorFailure, StartGetsErrAndThePoolStaysUsable) {
  fail_countdown = 1;
  ASYNC_JOB* job = nullptr;
  int ret = 5;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceReturnEleven, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(ret, 5);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.total, 0u);
  ExpectUsable();
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.custom, 1u);
}

TEST_F(CustomAllocatorFailure, InitThreadFailingHalfwayGivesBackWhatItMade) {
  fail_countdown = 4;  // three stacks made, the fourth fails
  const int calls_before = calls.load();
  EXPECT_EQ(ASYNC_init_thread(0, 6), 0);
  EXPECT_EQ(calls.load() - calls_before, 4) << "it stopped at the first failure";
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  EXPECT_EQ(PopError().reason(), ASYNC_R_INIT_FAILED);
  EXPECT_EQ(LiveBlocks(), 0u) << "the three stacks made were freed";
  ASSERT_EQ(ASYNC_init_thread(0, 6), 1);
  EXPECT_EQ(LiveBlocks(), 6u);
  ExpectUsable();
}

TEST_F(CustomAllocatorFailure, NestedStartFailsInsideAJobThatCarriesOn) {
  static int nested_status;
  static int nested_reason;
  auto outer = [](void*) -> int {
    ASYNC_JOB* inner = nullptr;
    int inner_ret = 0;
    fail_countdown = 1;
    nested_status =
        ASYNC_start_job(&inner, nullptr, &inner_ret, &PauseOnceReturnEleven, nullptr, 0);
    nested_reason = PopError().reason();
    ASYNC_pause_job();
    return inner == nullptr ? 1 : 0;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +outer, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(nested_status, ASYNC_ERR);
  EXPECT_EQ(nested_reason, ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  ExpectUsable();
}

TEST_F(CustomAllocatorFailure, FailureOnAnotherThreadIsQueuedThere) {
  unsigned long other_error = 0;
  std::thread([&other_error] {
    fail_countdown = 1;
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceReturnEleven, nullptr, 0), ASYNC_ERR);
    other_error = asyncjob_get_error(nullptr);
    ExpectUsable();
    // The thread exits without ASYNC_cleanup_thread: its exit frees the pool.
  }).join();
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(other_error), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << "the error went to the failing thread only";
  EXPECT_EQ(LiveBlocks(), 0u) << "thread exit gave back the thread's stacks";
}

TEST_F(CustomAllocatorFailure, EveryAllocationFailingStillLeavesNothingBehind) {
  // An allocator that never succeeds: every start fails the same way.
  for (int i = 0; i < 50; ++i) {
    fail_countdown = 1;
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnceReturnEleven, nullptr, 0), ASYNC_ERR);
    ASSERT_EQ(PopError().reason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  }
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.total, 0u);
  ExpectUsable();
}
