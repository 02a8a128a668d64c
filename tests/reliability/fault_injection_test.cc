// Fault injection: the library's calls to mmap, mprotect, malloc, operator
// new and eventfd fail on demand (fault_wraps.h: this executable links the
// static library with the linker's --wrap). Each failure must give ASYNC_ERR
// (or 0 / NULL for the calls that return those) with an error-queue entry
// naming it, leak no memory, mapping or fd, and leave the thread's pool
// usable: a following job runs to its finish.
//
// Leaks: mappings and fds are counted before and after (mappings only where
// the counts are exact: not under ASan, TSan or valgrind); heap leaks are
// left to LeakSanitizer and valgrind, which run this executable too.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "fault_wraps.h"
#include "support/test_support.h"

using asyncjob_test::PopError;
using asyncjob_test::QueuedError;

namespace {

int PauseOnceReturnSeven(void*) {
  ASYNC_pause_job();
  return 7;
}

int ReturnArgSize(void* arg) { return arg != nullptr ? 1 : 0; }

bool never_ran = true;
int MustNotRun(void*) {
  never_ran = false;
  return -1;
}

::testing::AssertionResult ErrorIs(int reason, const char* text_in_message) {
  QueuedError error = PopError();
  if (error.code == 0) return ::testing::AssertionFailure() << "no error queued";
  if (error.library() != ASYNCJOB_ERR_LIB_ASYNC || error.reason() != reason) {
    return ::testing::AssertionFailure()
           << "reason " << error.reason() << ", want " << reason << ": " << error.message;
  }
  if (error.message.find(text_in_message) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message \"" << error.message << "\" lacks \"" << text_in_message << "\"";
  }
  return ::testing::AssertionSuccess();
}

class FaultInjection : public ::testing::Test {
 protected:
  void SetUp() override {
    // These tests make the mapping of a stack fail: with the stack caches
    // on, a cached stack would serve the job instead, and a pool would map
    // several stacks at once. They run with the caches off, where cleanup
    // leaves no mapping behind (stack_cache_test covers the caches).
    asyncjob_get_stack_cache_limits(&saved_thread_cache_, &saved_process_cache_);
    asyncjob_set_stack_cache_limits(0, 0);
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    saved_budget_ = asyncjob_get_guarded_stack_budget();
    fds_before_ = asyncjob_test::CountOpenFds();
    mappings_before_ = asyncjob_test::CountMappings();
  }
  void TearDown() override {
    fault::Disarm();
    ASYNC_cleanup_thread();
    asyncjob_set_guarded_stack_budget(saved_budget_);
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
    EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before_) << "an fd leaked";
    if (asyncjob_test::MappingCountsAreExact()) {
      EXPECT_EQ(asyncjob_test::CountMappings(), mappings_before_) << "a mapping leaked";
    }
    asyncjob_set_stack_cache_limits(saved_thread_cache_, saved_process_cache_);
  }

  // The pool still works: a job pauses, is resumed and finishes.
  static void ExpectUsable(ASYNC_WAIT_CTX* ctx = nullptr) {
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &PauseOnceReturnSeven, nullptr, 0), ASYNC_PAUSE);
    ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 7);
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  }

  // Starts a job expected to fail: ASYNC_ERR with *job and *ret untouched,
  // and the function never called.
  static void ExpectStartFails(ASYNC_WAIT_CTX* ctx = nullptr, const void* args = nullptr,
                               size_t size = 0) {
    ASYNC_JOB* job = nullptr;
    int ret = 4242;
    never_ran = true;
    EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &MustNotRun, const_cast<void*>(args), size),
              ASYNC_ERR);
    EXPECT_EQ(job, nullptr);
    EXPECT_EQ(ret, 4242);
    EXPECT_TRUE(never_ran);
  }

  size_t saved_budget_ = 0;
  size_t fds_before_ = 0;
  size_t mappings_before_ = 0;
  size_t saved_thread_cache_ = 0;
  size_t saved_process_cache_ = 0;
};

}  // namespace

// ----- Stacks -----

TEST_F(FaultInjection, GuardedStackMmapFailure) {
  fault::Arm(fault::Call::kGuardedStackMmap);
  ExpectStartFails();
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_STACK_ALLOCATION_FAILED, "mmap"));
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.total, 0u) << "a stack that failed is no job";
  ExpectUsable();
}

TEST_F(FaultInjection, GuardedStackMprotectFailureUnmapsAndKeepsTheBudget) {
  // One guarded stack allowed: if the failure kept its place in the budget,
  // the next stack would come from a slab.
  asyncjob_set_guarded_stack_budget(1);
  fault::Arm(fault::Call::kMprotect);
  ExpectStartFails();
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_STACK_ALLOCATION_FAILED, "mprotect"));
  ExpectUsable();
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 1u);
  EXPECT_EQ(stats.slab, 0u);
}

TEST_F(FaultInjection, GuardedFailureInsideInitThreadFreesWhatItMade) {
  fault::Arm(fault::Call::kGuardedStackMmap, 5);
  EXPECT_EQ(ASYNC_init_thread(0, 8), 0);
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_STACK_ALLOCATION_FAILED, "mmap"));
  EXPECT_TRUE(ErrorIs(ASYNC_R_INIT_FAILED, "4 of the 8"));
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.total, 0u) << "the four stacks made were freed";
  ASYNC_cleanup_thread();
  if (asyncjob_test::MappingCountsAreExact()) {
    EXPECT_EQ(asyncjob_test::CountMappings(), mappings_before_);
  }
  ASSERT_EQ(ASYNC_init_thread(0, 8), 1);
  ExpectUsable();
}

TEST_F(FaultInjection, SlabMmapFailureWhenTheGuardedBudgetIsExhausted) {
  asyncjob_set_guarded_stack_budget(0);
  fault::Arm(fault::Call::kSlabMmap);
  ExpectStartFails();
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_STACK_ALLOCATION_FAILED, "slab"));
  ExpectUsable();
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.slab, 1u);
}

TEST_F(FaultInjection, SlabBookkeepingAllocationFailureUnmapsTheSlab) {
  asyncjob_set_guarded_stack_budget(0);
  ASSERT_EQ(ASYNC_init_thread(0, 0), 1);  // the pool itself is made now
  fault::Arm(fault::Call::kNothrowNew);
  ExpectStartFails();
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_MALLOC_FAILURE, "slab"));
  if (asyncjob_test::MappingCountsAreExact()) {
    // The pool's alternate signal stack is the one mapping added so far.
    EXPECT_EQ(asyncjob_test::CountMappings(), mappings_before_ + 1);
  }
  ExpectUsable();
}

TEST_F(FaultInjection, NestedStartFailsInsideAJobWhichCarriesOn) {
  static int nested_status;
  static unsigned long nested_error;
  auto outer = [](void*) -> int {
    ASYNC_JOB* inner = nullptr;
    int inner_ret = 99;
    fault::Arm(fault::Call::kGuardedStackMmap);
    nested_status = ASYNC_start_job(&inner, nullptr, &inner_ret, &MustNotRun, nullptr, 0);
    fault::Disarm();
    nested_error = asyncjob_get_error(nullptr);
    ASYNC_pause_job();
    return inner == nullptr && inner_ret == 99 ? 3 : -3;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +outer, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(nested_status, ASYNC_ERR);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(nested_error), ASYNCJOB_R_STACK_ALLOCATION_FAILED);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 3);
  ExpectUsable();
}

TEST_F(FaultInjection, DefaultStackAllocatorReturnsNullWhenMmapFails) {
  // The defaults ASYNC_get_mem_functions() hands out, for programs that
  // wrap them, fail cleanly too.
  ASYNC_stack_alloc_fn alloc_fn = nullptr;
  ASYNC_stack_free_fn free_fn = nullptr;
  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  size_t num = 64 * 1024;
  fault::Arm(fault::Call::kGuardedStackMmap);
  EXPECT_EQ(alloc_fn(&num), nullptr);
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_STACK_ALLOCATION_FAILED, "mmap"));
  fault::Arm(fault::Call::kMprotect);
  EXPECT_EQ(alloc_fn(&num), nullptr);
  fault::Disarm();
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_STACK_ALLOCATION_FAILED, "mprotect"));
}

// ----- The pool and the thread -----

TEST_F(FaultInjection, PoolAllocationFailure) {
  fault::Arm(fault::Call::kNothrowNew);
  ExpectStartFails();
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNC_R_INIT_FAILED, "pool"));
  asyncjob_pool_stats stats;
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 0) << "no pool was made";

  fault::Arm(fault::Call::kNothrowNew);
  EXPECT_EQ(ASYNC_init_thread(4, 2), 0);
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNC_R_INIT_FAILED, "pool"));
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 0);
  ExpectUsable();
}

TEST_F(FaultInjection, AlternateSignalStackMmapFailureIsTolerated) {
  // Without an alternate stack an overflow dies without asyncjob's message;
  // jobs themselves work. A fresh thread has none (unless a sanitizer gave
  // it one, which asyncjob then uses).
  // A first thread lets the C library set up what it keeps after a thread
  // (a cached thread stack, a malloc arena), so that only our mappings count.
  std::thread([] {
    std::vector<char> warm(1000);
    (void)warm;
  }).join();
  mappings_before_ = asyncjob_test::CountMappings();
  std::thread([] {
    stack_t current;
    ASSERT_EQ(sigaltstack(nullptr, &current), 0);
    if ((current.ss_flags & SS_DISABLE) == 0) {
      GTEST_SKIP() << "this thread already has an alternate signal stack";
    }
    fault::Arm(fault::Call::kAltStackMmap);
    ExpectUsable();
    fault::Disarm();
    EXPECT_EQ(fault::Fired(), 1);
    ASSERT_EQ(sigaltstack(nullptr, &current), 0);
    EXPECT_NE(current.ss_flags & SS_DISABLE, 0);
    ASYNC_cleanup_thread();
  }).join();
}

// ----- Arguments -----

TEST_F(FaultInjection, ArgsCopyFailureReturnsTheJobAndFreesTheContext) {
  // Arguments larger than a quarter of the stack are copied to the heap.
  std::vector<unsigned char> args(asyncjob_get_stack_size() / 2, 0x5a);
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  ASSERT_EQ(ASYNC_init_thread(1, 1), 1);
  fault::Arm(fault::Call::kMalloc, 1, args.size());
  ExpectStartFails(ctx, args.data(), args.size());
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_MALLOC_FAILURE, "arguments"));
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u) << "the job went back to the pool";
  EXPECT_EQ(stats.idle, 1u);
  // The context is not left attached to the job that never ran, and the only
  // job of the pool (max 1) is free again.
  ExpectUsable(ctx);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &ReturnArgSize, args.data(), args.size()),
            ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  ASYNC_WAIT_CTX_free(ctx);
}

// ----- Wait contexts -----

TEST_F(FaultInjection, WaitCtxAllocationFailure) {
  fault::Arm(fault::Call::kNothrowNew);
  EXPECT_EQ(ASYNC_WAIT_CTX_new(), nullptr);
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_MALLOC_FAILURE, "ASYNC_WAIT_CTX_new"));
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  ExpectUsable(ctx);
  ASYNC_WAIT_CTX_free(ctx);
}

namespace {
int cleanups = 0;
void CountCleanup(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD, void*) { ++cleanups; }
char keys[8];
}  // namespace

TEST_F(FaultInjection, WaitFdAllocationFailureLeavesTheContextConsistent) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  cleanups = 0;
  // Room for a few fds is made up front; the next one needs memory.
  int set = 0;
  for (; set < 8; ++set) {
    fault::Arm(fault::Call::kThrowingNew);
    const int ok = ASYNC_WAIT_CTX_set_wait_fd(ctx, &keys[set], 10 + set, nullptr, &CountCleanup);
    fault::Disarm();
    if (ok == 0) break;
    EXPECT_EQ(fault::Fired(), 0);
  }
  ASSERT_LT(set, 8) << "no set_wait_fd ever allocated";
  EXPECT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_MALLOC_FAILURE, "set_wait_fd"));
  size_t numfds = 0;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &numfds), 1);
  EXPECT_EQ(numfds, static_cast<size_t>(set)) << "the failed fd is not listed";
  size_t added = 0, deleted = 0;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, nullptr, &added, nullptr, &deleted), 1);
  EXPECT_EQ(added, static_cast<size_t>(set));
  EXPECT_EQ(deleted, 0u);
  OSSL_ASYNC_FD fd = -1;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &keys[set], &fd, nullptr), 0);
  // It can be set once memory is there.
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &keys[set], 10 + set, nullptr, &CountCleanup), 1);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(cleanups, set + 1);
}

// ----- C++ allocations behind the C API -----

TEST_F(FaultInjection, WaitCtxConstructorOutOfMemoryReturnsNull) {
  // The object comes from a nothrow new; the room it reserves for fds from
  // a throwing one, which must not leave ASYNC_WAIT_CTX_new.
  fault::Arm(fault::Call::kThrowingNew);
  EXPECT_EQ(ASYNC_WAIT_CTX_new(), nullptr);
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_MALLOC_FAILURE, "ASYNC_WAIT_CTX_new"));
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  ExpectUsable(ctx);
  ASYNC_WAIT_CTX_free(ctx);
}

namespace {
int SetFdAndPause(void*) {
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &keys[0], 70, nullptr, &CountCleanup);
  ASYNC_pause_job();
  return 1;
}
}  // namespace

TEST_F(FaultInjection, CancelOutOfMemoryForTheFdCleanupDefersItToTheFree) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  cleanups = 0;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &SetFdAndPause, nullptr, 0), ASYNC_PAUSE);
  fault::Arm(fault::Call::kThrowingNew);  // the copy of the fd list
  EXPECT_EQ(asyncjob_cancel_job(&job), 1) << "the job is cancelled all the same";
  fault::Disarm();
  ASSERT_EQ(fault::Fired(), 1);
  EXPECT_EQ(job, nullptr);
  EXPECT_TRUE(ErrorIs(ASYNCJOB_R_MALLOC_FAILURE, "asyncjob_cancel_job"));
  EXPECT_EQ(cleanups, 0);
  size_t numfds = 0;
  ASSERT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &numfds), 1);
  EXPECT_EQ(numfds, 1u) << "the fd is still set";
  ExpectUsable(ctx);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(cleanups, 1) << "its cleanup ran when the context was freed";
}
