// The pool's and the arguments' sizes are bounded (docs/safety.md, "Limits
// and exhaustion"): ASYNC_init_thread refuses, at once, to create more than
// 2^20 jobs up front (SIZE_MAX, 2^63, 2^56, one over), leaving the pool as
// it was, while a max_size of SIZE_MAX is simply unlimited; argument sizes
// no object can have (above PTRDIFF_MAX) are refused before any copy, and a
// copy too large for memory fails with an error; sizes around the on-stack
// limit (a quarter of the stack) are copied exactly. After each refusal the
// thread runs jobs normally.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "asyncjob/async.h"
#include "base/sanitizers.h"
#include "support/test_support.h"

// A copy of 2^56 bytes must fail with NULL from malloc, not stop the process
// in the sanitizers' allocators.
#if ASYNCJOB_ASAN
extern "C" const char* __asan_default_options();
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }
#endif
#if ASYNCJOB_TSAN
extern "C" const char* __tsan_default_options();
extern "C" const char* __tsan_default_options() { return "allocator_may_return_null=1"; }
#endif

using asyncjob_test::PopError;
using asyncjob_test::QueuedError;

namespace {

constexpr size_t kMaxInitSize = size_t{1} << 20;

class JobLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
  }
};

bool ran = false;
int Ran(void*) {
  ran = true;
  return 3;
}

int PauseOnce(void*) {
  ASYNC_pause_job();
  return 4;
}

// The bytes the job received, for comparison.
std::vector<unsigned char> received;
int Receive(void* arg) {
  const size_t size = received.size();
  std::memcpy(received.data(), arg, size);
  ASYNC_pause_job();  // still there after a pause
  return std::memcmp(received.data(), arg, size) == 0 ? 1 : 0;
}

void ExpectAJobRuns() {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 4);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
}

size_t PoolTotal() {
  asyncjob_pool_stats stats{};
  return asyncjob_get_pool_stats(&stats) == 1 ? stats.total : 0;
}

}  // namespace

TEST_F(JobLimits, InitSizeAboveTheBoundIsRefusedAndThePoolKept) {
  ASSERT_EQ(ASYNC_init_thread(0, 2), 1);
  ASSERT_EQ(PoolTotal(), 2u);
  for (size_t max_size : {size_t{0}, SIZE_MAX}) {
    for (size_t init_size : {SIZE_MAX, SIZE_MAX - 1, size_t{1} << 63, size_t{1} << 56,
                             size_t{1} << 32, kMaxInitSize + 1}) {
      SCOPED_TRACE(::testing::Message() << max_size << ", " << init_size);
      EXPECT_EQ(ASYNC_init_thread(max_size, init_size), 0);
      QueuedError error = PopError();
      EXPECT_EQ(error.reason(), ASYNC_R_INVALID_POOL_SIZE) << error.message;
      EXPECT_NE(error.message.find("up front"), std::string::npos) << error.message;
      EXPECT_EQ(PoolTotal(), 2u) << "the pool is as it was";
      ExpectAJobRuns();
    }
  }
}

TEST_F(JobLimits, InitSizeAboveMaxSizeIsStillRefusedFirst) {
  EXPECT_EQ(ASYNC_init_thread(4, SIZE_MAX), 0);
  EXPECT_EQ(PopError().reason(), ASYNC_R_INVALID_POOL_SIZE);
  ExpectAJobRuns();
}

TEST_F(JobLimits, MaxSizeOfSizeMaxIsUnlimited) {
  ASSERT_EQ(ASYNC_init_thread(SIZE_MAX, 3), 1);
  EXPECT_EQ(PoolTotal(), 3u);
  std::vector<ASYNC_JOB*> jobs(5, nullptr);
  int ret = 0;
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
  }
  asyncjob_pool_stats stats{};
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.max_size, SIZE_MAX);
  EXPECT_EQ(stats.in_use, 5u);
  for (ASYNC_JOB*& job : jobs) {
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 4);
  }
}

TEST_F(JobLimits, ArgumentSizesNoObjectCanHaveAreRefused) {
  char arguments[16] = "not read";
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  for (size_t size :
       {SIZE_MAX, SIZE_MAX - 15, size_t{1} << 63, static_cast<size_t>(PTRDIFF_MAX) + 1}) {
    SCOPED_TRACE(size);
    ASYNC_JOB* job = nullptr;
    int ret = -1;
    ran = false;
    EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &Ran, arguments, size), ASYNC_ERR);
    EXPECT_EQ(job, nullptr);
    EXPECT_EQ(ret, -1);
    EXPECT_FALSE(ran);
    QueuedError error = PopError();
    EXPECT_EQ(error.reason(), ASYNCJOB_R_PASSED_INVALID_ARGUMENT) << error.message;
    EXPECT_NE(error.message.find("no object"), std::string::npos) << error.message;
    // The context was left free: a job can use it at once.
    ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &Ran, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 3);
    ExpectAJobRuns();
  }
  ASYNC_WAIT_CTX_free(ctx);
}

TEST_F(JobLimits, ArgumentsTooLargeForMemoryFailWithAnError) {
  char arguments[16] = "not read";
  for (size_t size : {size_t{1} << 56, static_cast<size_t>(PTRDIFF_MAX)}) {
    SCOPED_TRACE(size);
    ASYNC_JOB* job = nullptr;
    int ret = -1;
    ran = false;
    EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Ran, arguments, size), ASYNC_ERR);
    EXPECT_EQ(job, nullptr);
    EXPECT_FALSE(ran);
    QueuedError error = PopError();
    EXPECT_EQ(error.reason(), ASYNCJOB_R_MALLOC_FAILURE) << error.message;
    ExpectAJobRuns();
  }
}

TEST_F(JobLimits, HugeSizesWithNullArgumentsAreIgnored) {
  // As in OpenSSL: without arguments the size means nothing.
  for (size_t size : {SIZE_MAX, size_t{1} << 63, size_t{1} << 56}) {
    ASYNC_JOB* job = nullptr;
    int ret = -1;
    ran = false;
    EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Ran, nullptr, size), ASYNC_FINISH);
    EXPECT_TRUE(ran);
    EXPECT_EQ(ret, 3);
  }
}

TEST_F(JobLimits, SizesAroundTheOnStackLimitAreCopiedExactly) {
  // Up to a quarter of the stack is copied onto it, the rest to the heap;
  // either way the job sees the exact bytes.
  const size_t quarter = asyncjob_get_stack_size() / 4;
  for (size_t size : {quarter - 1024, quarter - 17, quarter - 16, quarter - 1, quarter, quarter + 1,
                      quarter + 16, 2 * quarter, 4 * quarter + 1}) {
    SCOPED_TRACE(size);
    std::vector<unsigned char> arguments(size);
    for (size_t i = 0; i < size; ++i) arguments[i] = static_cast<unsigned char>(i * 131 + 7);
    received.assign(size, 0);
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Receive, arguments.data(), size), ASYNC_PAUSE);
    EXPECT_EQ(received, arguments);
    ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 1);
  }
}
