// A custom stack allocator's *num is whatever it says: asyncjob checks it
// before deriving a stack from it. Too large (SIZE_MAX, 2^63, 2^56, one
// byte over the 1 GiB maximum), too small for a stack after the block's
// alignment skew, or a block that would wrap around the address space:
// ASYNC_ERR with ASYNCJOB_R_STACK_ALLOCATION_FAILED, the block handed back
// to the free function, the job function never run, and the next job runs.
// The allocators are process-wide: an executable of its own.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "asyncjob/async.h"
#include "support/test_support.h"

using asyncjob_test::PopError;
using asyncjob_test::QueuedError;

namespace {

constexpr size_t kMaximum = size_t{1} << 30;
constexpr size_t kMinimum = 16 * 1024;
constexpr size_t kBlock = 96 * 1024;  // what the allocator really allocates

// What the next allocation reports and returns.
size_t reported_num = kBlock;
size_t offset = 0;           // returned pointer = block + offset
uintptr_t fake_address = 0;  // nonzero: return this instead of a block
int allocations = 0;
int frees = 0;
int fake_frees = 0;

void* LyingAlloc(size_t* num) {
  ++allocations;
  *num = reported_num;
  if (fake_address != 0) return reinterpret_cast<void*>(fake_address);
  char* block = static_cast<char*>(std::malloc(kBlock + 64));
  if (block == nullptr) return nullptr;
  // Handed out 8 + offset bytes in: 8 bytes off a 16-byte boundary, plus
  // the skew under test. LyingFree subtracts the same.
  return block + sizeof(char*) + offset;
}

void LyingFree(void* addr) {
  if (fake_address != 0 && reinterpret_cast<uintptr_t>(addr) == fake_address) {
    ++fake_frees;
    return;
  }
  ++frees;
  char* start = static_cast<char*>(addr) - offset - sizeof(char*);
  std::free(start);
}

bool ran = false;
int Ran(void*) {
  ran = true;
  return 5;
}

void SetHonest() {
  reported_num = kBlock - offset;
  fake_address = 0;
}

void ExpectRefused(const char* text) {
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  ran = false;
  const int frees_before = frees;
  const int fake_frees_before = fake_frees;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Ran, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(ret, -1);
  EXPECT_FALSE(ran);
  EXPECT_EQ(frees + fake_frees, frees_before + fake_frees_before + 1)
      << "the refused block went back to the free function";
  QueuedError error = PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED) << error.message;
  EXPECT_NE(error.message.find(text), std::string::npos) << error.message;
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

void ExpectAJobRuns() {
  SetHonest();
  ASSERT_EQ(ASYNC_init_thread(0, 0), 1);  // the next start allocates
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Ran, &ret, sizeof ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 5);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
  ASSERT_EQ(ASYNC_init_thread(0, 0), 1);
}

class CustomStackSize : public ::testing::Test {
 protected:
  // Once per process: the allocators are fixed once a stack exists.
  static void SetUpTestSuite() { ASSERT_EQ(ASYNC_set_mem_functions(&LyingAlloc, &LyingFree), 1); }
  void SetUp() override {
    asyncjob_clear_errors();
    offset = 0;
    SetHonest();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    EXPECT_EQ(frees + fake_frees, allocations) << "every block went back";
  }
};

}  // namespace

TEST_F(CustomStackSize, EveryReportedSizeIsChecked) {
  ExpectAJobRuns();

  for (size_t num : {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 15, size_t{1} << 63, size_t{1} << 56,
                     size_t{1} << 40, kMaximum + 1, 2 * kMaximum}) {
    SCOPED_TRACE(num);
    for (size_t skew : {size_t{0}, size_t{3}}) {
      offset = skew;
      reported_num = num;
      ExpectRefused("at most");
      ExpectAJobRuns();
    }
  }

  // Too small once the block is aligned to 16 bytes.
  for (size_t skew : {size_t{0}, size_t{1}, size_t{8}, size_t{15}}) {
    offset = skew;
    const size_t needed = kMinimum + ((16 - (8 + skew) % 16) % 16);  // malloc's block + 8 + skew
    for (size_t num : {size_t{0}, size_t{1}, size_t{64}, kMinimum - 1, needed - 1}) {
      SCOPED_TRACE(num);
      reported_num = num;
      ExpectRefused("at least");
    }
    ExpectAJobRuns();
  }
  offset = 0;
}

TEST_F(CustomStackSize, ABlockWrappingAroundTheAddressSpaceIsRefused) {
  for (uintptr_t address : {UINTPTR_MAX - 4095, UINTPTR_MAX - 64 * 1024 + 1}) {
    SCOPED_TRACE(address);
    fake_address = address;
    reported_num = kBlock;
    ExpectRefused("at most");
  }
  ExpectAJobRuns();
}

TEST_F(CustomStackSize, TheSmallestAcceptedSizeRuns) {
  // An allocator may report less than it allocated: the stack is what it
  // says, and the minimum after alignment is enough for a job.
  offset = 0;
  reported_num = kMinimum + 8;  // malloc's block + 8 is 8 bytes off 16
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Ran, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 5);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
  ExpectAJobRuns();
}
