// Every stack size a program can hand over is bounded: sizes above the
// 1 GiB maximum (SIZE_MAX, 2^63, 2^56, one byte over, sizes that would round
// past SIZE_MAX) are refused with an error and the current size kept, with
// any guarded-stack budget; after each refusal a job still runs. The bounds
// themselves work: a 1 GiB stack, guarded or from a slab, runs a job; sizes
// just off a page multiple round up; the default allocator, called
// directly, refuses what it cannot map without touching *num.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "asyncjob/async.h"
#include "support/test_support.h"

using asyncjob_test::PopError;
using asyncjob_test::QueuedError;

namespace {

constexpr size_t kMaximum = size_t{1} << 30;  // docs/safety.md, "Limits and exhaustion"
constexpr size_t kSizeMax = SIZE_MAX;

size_t Page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Sizes no stack may have.
std::vector<size_t> TooLarge() {
  return {kSizeMax,        kSizeMax - 1,          kSizeMax - Page() + 2, kSizeMax - Page(),
          size_t{1} << 63, (size_t{1} << 63) + 1, size_t{1} << 56,       (size_t{1} << 56) - 1,
          size_t{1} << 40, kMaximum + 1,          kMaximum + Page() - 1, kMaximum + Page(),
          2 * kMaximum};
}

int Seven(void*) { return 7; }

int TouchAndPause(void* arg) {
  volatile char buffer[8 * 1024];
  for (size_t i = 0; i < sizeof buffer; i += 512) buffer[i] = 1;
  ASYNC_pause_job();
  return buffer[512] + (arg != nullptr ? 1 : 0);
}

::testing::AssertionResult Refused(const char* expected_text) {
  QueuedError error = PopError();
  if (error.code == 0) return ::testing::AssertionFailure() << "no error queued";
  if (error.library() != ASYNCJOB_ERR_LIB_ASYNC ||
      error.reason() != ASYNCJOB_R_PASSED_INVALID_ARGUMENT) {
    return ::testing::AssertionFailure() << "reason " << error.reason() << ": " << error.message;
  }
  if (error.message.find(expected_text) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message \"" << error.message << "\" lacks \"" << expected_text << "\"";
  }
  return ::testing::AssertionSuccess();
}

// A job pauses, is resumed and finishes; nothing is queued.
void ExpectAJobRuns() {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &TouchAndPause, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Seven, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 7);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
}

class StackLimits : public ::testing::TestWithParam<size_t> {
 protected:
  void SetUp() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    saved_budget_ = asyncjob_get_guarded_stack_budget();
    saved_size_ = asyncjob_get_stack_size();
    asyncjob_set_guarded_stack_budget(GetParam());
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_set_guarded_stack_budget(saved_budget_);
    asyncjob_set_stack_size(saved_size_);
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
  }
  size_t saved_budget_ = 0;
  size_t saved_size_ = 0;
};

// Budget 0: every stack from a slab. The default budget: guarded stacks.
// SIZE_MAX: no limit on guarded stacks.
INSTANTIATE_TEST_SUITE_P(Budgets, StackLimits,
                         ::testing::Values(size_t{0}, asyncjob_get_guarded_stack_budget(),
                                           kSizeMax),
                         [](const ::testing::TestParamInfo<size_t>& budget) {
                           return budget.param == 0          ? std::string("Slabs")
                                  : budget.param == kSizeMax ? std::string("Unlimited")
                                                             : std::string("DefaultBudget");
                         });

}  // namespace

TEST_P(StackLimits, SizesAboveTheMaximumAreRefusedAndTheSizeKept) {
  ExpectAJobRuns();  // stacks of the current size exist; refusals must not disturb them
  const size_t before = asyncjob_get_stack_size();
  for (size_t size : TooLarge()) {
    SCOPED_TRACE(size);
    EXPECT_EQ(asyncjob_set_stack_size(size), 0);
    EXPECT_TRUE(Refused("above the maximum"));
    EXPECT_EQ(asyncjob_get_stack_size(), before);
    ExpectAJobRuns();
    ASSERT_EQ(ASYNC_init_thread(0, 0), 1);  // the next job makes a new stack
    ExpectAJobRuns();
  }
}

TEST_P(StackLimits, SizesBelowTheMinimumAreRefusedAndTheSizeKept) {
  const size_t before = asyncjob_get_stack_size();
  for (size_t size : {size_t{0}, size_t{1}, size_t{4096}, size_t{16 * 1024 - 1}}) {
    SCOPED_TRACE(size);
    EXPECT_EQ(asyncjob_set_stack_size(size), 0);
    EXPECT_TRUE(Refused("below the minimum"));
    EXPECT_EQ(asyncjob_get_stack_size(), before);
  }
  ExpectAJobRuns();
}

TEST_P(StackLimits, SizesOffAPageMultipleRoundUp) {
  const size_t page = Page();
  for (size_t size : {16 * 1024 + size_t{1}, 64 * 1024 - size_t{1}, 64 * 1024 + page - 1,
                      kMaximum - page + 1, kMaximum - 1}) {
    SCOPED_TRACE(size);
    ASSERT_EQ(asyncjob_set_stack_size(size), 1);
    EXPECT_EQ(asyncjob_get_stack_size(), (size + page - 1) / page * page);
    EXPECT_LE(asyncjob_get_stack_size(), kMaximum);
  }
  ASSERT_EQ(asyncjob_set_stack_size(64 * 1024 + 1), 1);
  ExpectAJobRuns();
}

TEST_P(StackLimits, TheMaximumItselfRunsJobs) {
  // Mapped without reserving memory: only the pages touched are committed.
  ASSERT_EQ(asyncjob_set_stack_size(kMaximum), 1);
  EXPECT_EQ(asyncjob_get_stack_size(), kMaximum);
  ExpectAJobRuns();
  // Two at once: a slab of 1 GiB stacks holds one, the second gets its own.
  ASYNC_JOB* first = nullptr;
  ASYNC_JOB* second = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&first, nullptr, &ret, &TouchAndPause, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&second, nullptr, &ret, &TouchAndPause, &ret, sizeof ret), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&second, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 2);
  ASSERT_EQ(ASYNC_start_job(&first, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
}

TEST_P(StackLimits, LargeSlabStacksShareSlabsOfBoundedSize) {
  // 16 MiB stacks: four to a slab. Ten of them paused at once.
  ASSERT_EQ(asyncjob_set_stack_size(16u << 20), 1);
  std::vector<ASYNC_JOB*> jobs(10, nullptr);
  int ret = 0;
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &TouchAndPause, nullptr, 0), ASYNC_PAUSE);
  }
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 10u);
  if (GetParam() == 0) {
    EXPECT_EQ(stats.slab, 10u);
  }
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 1);
  }
  ExpectAJobRuns();
}

TEST_P(StackLimits, TheDefaultAllocatorRefusesWhatItCannotMap) {
  ASYNC_stack_alloc_fn alloc_fn = nullptr;
  ASYNC_stack_free_fn free_fn = nullptr;
  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  for (size_t size : TooLarge()) {
    SCOPED_TRACE(size);
    size_t num = size;
    EXPECT_EQ(alloc_fn(&num), nullptr);
    EXPECT_EQ(num, size) << "*num is left alone on failure";
    QueuedError error = PopError();
    EXPECT_EQ(error.reason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED) << error.message;
    EXPECT_NE(error.message.find("above the maximum"), std::string::npos) << error.message;
  }
  size_t num = 16 * 1024 + 1;
  void* block = alloc_fn(&num);
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(num % Page(), 0u);
  EXPECT_GE(num, 16u * 1024 + 1);
  static_cast<volatile char*>(block)[num - 1] = 1;
  free_fn(block);
  ExpectAJobRuns();
}

TEST_P(StackLimits, BudgetExtremesRunJobs) {
  // The parameter is the budget: 0, the default or SIZE_MAX.
  if (GetParam() == kSizeMax) {
    EXPECT_EQ(asyncjob_get_guarded_stack_budget(), kSizeMax - 1) << "SIZE_MAX means unlimited";
  } else {
    EXPECT_EQ(asyncjob_get_guarded_stack_budget(), GetParam());
  }
  std::vector<ASYNC_JOB*> jobs(3, nullptr);
  int ret = 0;
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &TouchAndPause, nullptr, 0), ASYNC_PAUSE);
  }
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded + stats.slab, 3u);
  if (GetParam() == 0) {
    EXPECT_EQ(stats.slab, 3u);
  } else if (GetParam() == kSizeMax) {
    EXPECT_EQ(stats.guarded, 3u);
  }
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  }
}
