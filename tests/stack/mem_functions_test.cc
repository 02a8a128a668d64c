// ASYNC_set_mem_functions / ASYNC_get_mem_functions. The "no stack allocated
// yet" state is per process, so the whole story is one test in its own
// executable.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "asyncjob/async.h"
#include "support/test_support.h"

namespace {

constexpr size_t kCustomSize = 96 * 1024;
int allocations = 0;
int frees = 0;
bool fail_next = false;
bool too_small_next = false;
char* last_block = nullptr;

void* CountingAlloc(size_t* num) {
  ++allocations;
  if (fail_next) {
    fail_next = false;
    return nullptr;
  }
  *num = too_small_next ? 4096 : kCustomSize;
  too_small_next = false;
  last_block = static_cast<char*>(std::malloc(*num));
  return last_block;
}

void CountingFree(void* addr) {
  ++frees;
  std::free(addr);
}

const char* deepest = nullptr;
int UseEightyKiB(void*) {
  volatile char buffer[80 * 1024];
  for (size_t i = 0; i < sizeof buffer; i += 512) buffer[i] = 1;
  deepest = const_cast<const char*>(&buffer[0]);
  ASYNC_pause_job();
  return buffer[512];
}

int Seven(void*) { return 7; }

}  // namespace

TEST(MemFunctions, CustomAllocatorsUntilTheFirstStack) {
  asyncjob_clear_errors();
  ASYNC_stack_alloc_fn alloc_fn = nullptr;
  ASYNC_stack_free_fn free_fn = nullptr;
  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  EXPECT_NE(alloc_fn, nullptr) << "the defaults are real functions";
  EXPECT_NE(free_fn, nullptr);

  // The defaults work when called directly (a program may wrap them).
  size_t num = 50000;
  void* stack = alloc_fn(&num);
  ASSERT_NE(stack, nullptr);
  EXPECT_GE(num, 50000u);
  std::memset(stack, 0xab, num);
  free_fn(stack);

  // Setting: NULL keeps the current function of that kind.
  ASSERT_EQ(ASYNC_set_mem_functions(&CountingAlloc, nullptr), 1);
  ASSERT_EQ(ASYNC_set_mem_functions(nullptr, &CountingFree), 1);
  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  EXPECT_EQ(alloc_fn, &CountingAlloc);
  EXPECT_EQ(free_fn, &CountingFree);

  // A changed *num is the stack size: 80 KiB of locals fit in 96 KiB.
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &UseEightyKiB, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(allocations, 1);
  EXPECT_GE(deepest, last_block);
  EXPECT_LT(deepest, last_block + kCustomSize);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.custom, 1u);

  // Once a stack exists, the allocators are fixed.
  EXPECT_EQ(ASYNC_set_mem_functions(&CountingAlloc, &CountingFree), 0);
  EXPECT_EQ(asyncjob_test::PopError().reason(), ASYNCJOB_R_MEM_FUNCTIONS_LOCKED);

  // An allocator that fails: ASYNC_ERR with an error, pool still usable.
  ASSERT_EQ(ASYNC_init_thread(0, 0), 1);  // drops the idle job: next start allocates
  EXPECT_EQ(frees, 1);
  fail_next = true;
  job = nullptr;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Seven, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(job, nullptr);
  asyncjob_test::QueuedError error = asyncjob_test::PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  EXPECT_NE(error.message.find("NULL"), std::string::npos);

  // An allocator that hands back too little: rejected, and the memory freed.
  too_small_next = true;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Seven, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(asyncjob_test::PopError().reason(), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  EXPECT_EQ(frees, 2);

  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &Seven, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 7);
  ASYNC_cleanup_thread();
  EXPECT_EQ(frees, allocations - 1) << "every stack handed out was freed (one allocation failed)";
}
