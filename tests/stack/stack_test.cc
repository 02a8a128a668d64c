// Job stacks: guard regions, sizes, the guarded-stack budget and slab
// stacks, canaries, and the messages an overflow produces.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "asyncjob/async.h"
#include "base/sanitizers.h"
#include "support/mapping_check.h"
#include "support/test_support.h"

using asyncjob_test::Mapping;
using asyncjob_test::MappingContaining;

namespace {

class Stacks : public ::testing::Test {
 protected:
  void SetUp() override {
    asyncjob_clear_errors();
    saved_budget_ = asyncjob_get_guarded_stack_budget();
    saved_size_ = asyncjob_get_stack_size();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_set_guarded_stack_budget(saved_budget_);
    asyncjob_set_stack_size(saved_size_);
    asyncjob_clear_errors();
  }
  size_t saved_budget_ = 0;
  size_t saved_size_ = 0;
};

int RunToFinish(int (*func)(void*), void* args, size_t size) {
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  int status;
  while ((status = ASYNC_start_job(&job, nullptr, &ret, func, args, size)) == ASYNC_PAUSE) {
  }
  EXPECT_EQ(status, ASYNC_FINISH);
  return ret;
}

// Touches `bytes` of stack in one frame, then pauses while holding it.
template <size_t kBytes>
int UseStack(void*) {
  volatile unsigned char buffer[kBytes];
  for (size_t i = 0; i < kBytes; i += 256) buffer[i] = static_cast<unsigned char>(i / 256 + 1);
  ASYNC_pause_job();
  int sum = 0;
  for (size_t i = 0; i < kBytes; i += 256) sum += buffer[i];
  return sum > 0 ? 1 : 0;
}

const void* local_address = nullptr;
int RecordLocalAndPause(void*) {
  // The frame address, not a local's: under ASan locals may live on a
  // heap-allocated fake frame.
  local_address = __builtin_frame_address(0);
  ASYNC_pause_job();
  return 0;
}

}  // namespace

TEST_F(Stacks, DefaultSizeIsAtLeastOpenSSLs32KiB) {
  EXPECT_GE(asyncjob_get_stack_size(), 32u * 1024);
  EXPECT_EQ(RunToFinish(&UseStack<40 * 1024>, nullptr, 0), 1);
}

TEST_F(Stacks, GuardedStackHasAGuardOfAtLeast64KiBBelowIt) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &RecordLocalAndPause, nullptr, 0), ASYNC_PAUSE);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  ASSERT_EQ(stats.guarded, 1u);
  Mapping stack = MappingContaining(local_address);
  EXPECT_EQ(stack.protection, "rw-p");
  EXPECT_GE(stack.high - stack.low, asyncjob_get_stack_size());
  Mapping guard = MappingContaining(reinterpret_cast<const void*>(stack.low - 1));
  EXPECT_EQ(guard.protection, "---p");
  EXPECT_GE(guard.high - guard.low, 64u * 1024);
  EXPECT_EQ(guard.high, stack.low);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
}

TEST_F(Stacks, StacksAreCommittedLazily) {
  // Sixty-four idle jobs with 1 MiB stacks must not cost 64 MiB of memory.
  if (!asyncjob_test::MappingCountsAreExact()) GTEST_SKIP() << "RSS is not the program's own";
  ASSERT_EQ(asyncjob_set_stack_size(1024 * 1024), 1);
  size_t before = asyncjob_test::ResidentKiB();
  ASSERT_EQ(ASYNC_init_thread(0, 64), 1);
  size_t after = asyncjob_test::ResidentKiB();
  EXPECT_LT(after - before, 8u * 1024) << "resident KiB grew by " << after - before;
}

TEST_F(Stacks, StackSizeCanBeRaisedAndTooSmallIsRejected) {
  EXPECT_EQ(asyncjob_set_stack_size(1024), 0);
  asyncjob_test::QueuedError error = asyncjob_test::PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_PASSED_INVALID_ARGUMENT);
  EXPECT_NE(error.message.find("minimum"), std::string::npos);
  ASSERT_EQ(asyncjob_set_stack_size(300 * 1024 + 1), 1);
  EXPECT_GE(asyncjob_get_stack_size(), 300u * 1024 + 1);
  EXPECT_EQ(asyncjob_get_stack_size() % static_cast<size_t>(sysconf(_SC_PAGESIZE)), 0u);
  EXPECT_EQ(RunToFinish(&UseStack<256 * 1024>, nullptr, 0), 1);
}

TEST_F(Stacks, PastTheGuardedBudgetStacksComeFromSlabs) {
  ASYNC_cleanup_thread();
  asyncjob_set_guarded_stack_budget(0);
  std::vector<ASYNC_JOB*> jobs(300, nullptr);
  int ret = 0;
  size_t mappings_before = asyncjob_test::MappingsWithEmptyStackCaches();
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &UseStack<8 * 1024>, nullptr, 0), ASYNC_PAUSE);
  }
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 0u);
  EXPECT_EQ(stats.slab, 300u);
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_LE(asyncjob_test::CountMappings(), mappings_before + 4)
        << "300 slab stacks share a couple of mappings";
  }
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 1);
  }
  ASYNC_cleanup_thread();
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(mappings_before));
  }
}

TEST_F(Stacks, BudgetIsSharedThenSlabsTakeOver) {
  ASYNC_cleanup_thread();
  asyncjob_set_guarded_stack_budget(5);
  ASSERT_EQ(ASYNC_init_thread(0, 8), 1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 5u);
  EXPECT_EQ(stats.slab, 3u);
  ASYNC_cleanup_thread();
  // Freed guarded stacks return to the budget.
  ASSERT_EQ(ASYNC_init_thread(0, 5), 1);
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 5u);
}

TEST_F(Stacks, DefaultBudgetIsAQuarterOfTheMappingLimit) {
  FILE* file = std::fopen("/proc/sys/vm/max_map_count", "r");
  ASSERT_NE(file, nullptr);
  unsigned long limit = 0;
  ASSERT_EQ(std::fscanf(file, "%lu", &limit), 1);
  std::fclose(file);
  EXPECT_EQ(saved_budget_, limit / 4);
}

TEST_F(Stacks, SlabStacksReuseFreedSlots) {
  ASYNC_cleanup_thread();
  asyncjob_set_guarded_stack_budget(0);
  size_t mappings_before = asyncjob_test::MappingsWithEmptyStackCaches();
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(ASYNC_init_thread(0, 600), 1);
    ASYNC_cleanup_thread();
  }
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(mappings_before));
  }
}

// ----- Death tests: what an overflow prints -----

// The recursion must run on the job's real stack, not on AddressSanitizer's
// heap-allocated fake frames.
#define ASYNCJOB_REAL_STACK_FRAMES __attribute__((no_sanitize("address"), noinline))

namespace {
ASYNCJOB_REAL_STACK_FRAMES int Recurse(int depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (depth > 1'000'000'000) return frame[0];
  return Recurse(depth + 1) + frame[0];
}
int OverflowForever(void*) { return Recurse(0); }
}  // namespace

TEST(StackDeathTest, GuardedOverflowNamesTheJobAndItsStack) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        ASYNC_start_job(&job, nullptr, &ret, &OverflowForever, nullptr, 0);
      },
      "asyncjob: stack overflow in job 0x[0-9a-f]+: fault at 0x[0-9a-f]+ in the guard "
      "0x[0-9a-f]+-0x[0-9a-f]+ below its stack 0x[0-9a-f]+-0x[0-9a-f]+ \\([0-9]+ bytes\\)");
}

namespace {
// A custom allocator that leaves room below the stack it hands out, so that a
// bounded overflow lands in memory we own and only the canary notices.
constexpr size_t kPadding = 64 * 1024;
void* PaddedAlloc(size_t* num) {
  *num = 64 * 1024;
  auto* block = static_cast<char*>(std::malloc(kPadding + *num));
  return block + kPadding;
}
void PaddedFree(void* addr) { std::free(static_cast<char*>(addr) - kPadding); }

ASYNCJOB_REAL_STACK_FRAMES int RecurseBounded(int depth) {
  volatile char frame[512];
  for (volatile char& c : frame) c = static_cast<char>(depth);  // a frame in real use
  if (depth == 0) return frame[0];
  return RecurseBounded(depth - 1) + frame[0];
}
int OverflowThenPause(void*) {
  // About 80 KiB of frames on a 64 KiB stack: past the canary, into padding.
  int value = RecurseBounded(150);
  ASYNC_pause_job();
  return value;
}
}  // namespace

TEST(StackDeathTest, CanaryOverflowIsCaughtAtThePause) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ASYNC_set_mem_functions(&PaddedAlloc, &PaddedFree);
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        ASYNC_start_job(&job, nullptr, &ret, &OverflowThenPause, nullptr, 0);
      },
      "asyncjob: stack overflow detected in job 0x[0-9a-f]+: the canary at 0x[0-9a-f]+, below "
      "its stack 0x[0-9a-f]+-0x[0-9a-f]+ \\([0-9]+ bytes\\), was overwritten");
}

namespace {
void UserSegvHandler(int) {
  const char text[] = "the program's own handler ran\n";
  ssize_t ignored = write(STDERR_FILENO, text, sizeof text - 1);
  (void)ignored;
  _exit(3);
}
int FaultOutsideAnyGuard(void*) {
  volatile int* nowhere = nullptr;
  *nowhere = 1;
  return 0;
}
}  // namespace

TEST(StackDeathTest, OtherFaultsReachTheProgramsOwnHandler) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        signal(SIGSEGV, &UserSegvHandler);
        ASYNC_init_thread(0, 1);  // installs asyncjob's handler after the program's
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        ASYNC_start_job(&job, nullptr, &ret, &FaultOutsideAnyGuard, nullptr, 0);
      },
      ::testing::ExitedWithCode(3), "the program's own handler ran");
}

TEST(StackDeathTest, OtherFaultsKeepTheDefaultAction) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ASYNC_init_thread(0, 1);
        ASYNC_JOB* job = nullptr;
        int ret = 0;
        ASYNC_start_job(&job, nullptr, &ret, &FaultOutsideAnyGuard, nullptr, 0);
      },
#if ASYNCJOB_ASAN || ASYNCJOB_TSAN
      // The sanitizer's own SIGSEGV handler was there first and reports it.
      [](int status) { return status != 0; }, "");
#else
      ::testing::KilledBySignal(SIGSEGV), "");
#endif
}
