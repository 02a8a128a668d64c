// Leak accounting: after the ways jobs can end (finishing, being cancelled,
// outliving ASYNC_cleanup_thread, their thread exiting, their wait context
// being freed under them), every fd, mapping and heap block the library took
// is given back.
//
//   - fds (/proc/self/fd) are counted in every configuration, valgrind too;
//   - mappings (/proc/self/maps) where the counts are exact (not under ASan,
//     TSan or valgrind: those map memory of their own at any time);
//   - heap bytes in use (glibc's mallinfo2) over many cycles, where glibc's
//     malloc is the one in use; under ASan and valgrind their own leak
//     checkers see every block left at exit instead.
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "support/mapping_check.h"
#include "support/test_support.h"

using asyncjob_test::CountMappings;
using asyncjob_test::CountOpenFds;
using asyncjob_test::MappingCountsAreExact;
using asyncjob_test::PopError;

namespace {

class Leaks : public ::testing::Test {
 protected:
  void SetUp() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    saved_budget_ = asyncjob_get_guarded_stack_budget();
    // A first thread lets the C library set up what it keeps after a thread
    // (a cached thread stack, a malloc arena), so that only ours count.
    std::thread([] {
      std::vector<char> warm(1000);
      (void)warm;
    }).join();
    fds_before_ = CountOpenFds();
    mappings_before_ = asyncjob_test::MappingsWithEmptyStackCaches();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_set_guarded_stack_budget(saved_budget_);
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty()) << PopError().message;
  }
  void ExpectNothingLeft(const char* when) {
    EXPECT_EQ(CountOpenFds(), fds_before_) << "fds leaked " << when;
    if (MappingCountsAreExact()) {
      EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(mappings_before_))
          << "mappings leaked " << when;
    }
  }
  size_t saved_budget_ = 0;
  size_t fds_before_ = 0;
  size_t mappings_before_ = 0;
};

void CloseFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }
char engine_key;
char scratch_key;

// What an engine does: an eventfd for the context's life, closed by its
// cleanup routine; and a scratch fd for one wait, cleared and closed by the
// job itself once resumed (and by its cleanup routine if the job never is:
// its context freed under it).
int EngineLikeJob(void* arg) {
  const int pauses = *static_cast<int*>(arg);
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  for (int i = 0; i < pauses; ++i) {
    int scratch = -1;
    if (ctx != nullptr) {
      OSSL_ASYNC_FD fd = -1;
      if (ASYNC_WAIT_CTX_get_fd(ctx, &engine_key, &fd, nullptr) == 0) {
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ASYNC_WAIT_CTX_set_wait_fd(ctx, &engine_key, fd, nullptr, &CloseFd);
      }
      scratch = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      ASYNC_WAIT_CTX_set_wait_fd(ctx, &scratch_key, scratch, nullptr, &CloseFd);
    }
    ASYNC_pause_job();
    // The context may have been freed meanwhile: the job carries on without.
    ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    if (ctx != nullptr) ASYNC_WAIT_CTX_clear_fd(ctx, &scratch_key);
    if (scratch >= 0) close(scratch);
  }
  return pauses;
}

int PauseHoldingArgs(void* arg) {
  const auto* bytes = static_cast<const unsigned char*>(arg);
  ASYNC_pause_job();
  return bytes != nullptr ? bytes[0] : -1;
}

}  // namespace

TEST_F(Leaks, WaitFdsAreClosedByTheirCleanupEvenUnderPausedJobs) {
  constexpr int kJobs = 64;
  std::vector<ASYNC_JOB*> jobs(kJobs, nullptr);
  std::vector<ASYNC_WAIT_CTX*> ctxs(kJobs, nullptr);
  int pauses = 3;
  int ret = 0;
  for (int i = 0; i < kJobs; ++i) {
    ctxs[i] = ASYNC_WAIT_CTX_new();
    ASSERT_EQ(ASYNC_start_job(&jobs[i], ctxs[i], &ret, &EngineLikeJob, &pauses, sizeof pauses),
              ASYNC_PAUSE);
  }
  EXPECT_EQ(CountOpenFds(), fds_before_ + 2 * kJobs);
  // Half of the contexts are freed while their jobs are paused: the jobs are
  // orphaned (never to run again) and their fds stay open, since the
  // "engine" could still signal them, until the thread cleans up.
  for (int i = 0; i < kJobs; i += 2) {
    ASYNC_WAIT_CTX_free(ctxs[i]);
    ctxs[i] = nullptr;
    EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
    EXPECT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, nullptr, nullptr, 0), ASYNC_ERR);
    EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOB_ORPHANED);
    jobs[i] = nullptr;
  }
  for (int round = 0; round < pauses; ++round) {
    for (int i = 1; i < kJobs; i += 2) {
      const int status = ASYNC_start_job(&jobs[i], ctxs[i], &ret, nullptr, nullptr, 0);
      ASSERT_EQ(status, round + 1 < pauses ? ASYNC_PAUSE : ASYNC_FINISH);
    }
  }
  for (ASYNC_WAIT_CTX* ctx : ctxs) ASYNC_WAIT_CTX_free(ctx);
  ASYNC_cleanup_thread();
  ExpectNothingLeft("after contexts freed under paused jobs");
}

TEST_F(Leaks, PausedJobsOutliveCleanupThenFreeEverything) {
  // Guarded and slab stacks, arguments on the stack and on the heap.
  asyncjob_set_guarded_stack_budget(4);
  constexpr int kJobs = 40;
  std::vector<unsigned char> big(asyncjob_get_stack_size() / 2, 0x7b);
  unsigned char small = 0x7c;
  std::vector<ASYNC_JOB*> jobs(kJobs, nullptr);
  int ret = 0;
  for (int i = 0; i < kJobs; ++i) {
    const bool heap = i % 2 == 0;
    ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, &PauseHoldingArgs,
                              heap ? big.data() : &small, heap ? big.size() : 1),
              ASYNC_PAUSE);
  }
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.guarded, 4u);
  EXPECT_EQ(stats.slab, static_cast<size_t>(kJobs - 4));
  ASYNC_cleanup_thread();
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 0);
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, i % 2 == 0 ? 0x7b : 0x7c);
  }
  ExpectNothingLeft("once the last job of a cleaned-up pool finished");
}

namespace {
ASYNC_JOB* handed_out = nullptr;
int handed_out_ret = 0;

struct OwnedFd {
  int fd;
  ~OwnedFd() {
    if (fd >= 0) close(fd);
  }
};

// A job that holds what cancelling must give back: heap memory and an fd in
// C++ objects (unwinding destroys them), an engine fd with a cleanup routine
// (cancelling runs it), and a nested job it hands out paused.
int CancellableJob(void*) {
  int pauses = 2;
  handed_out = nullptr;
  ASYNC_start_job(&handed_out, nullptr, &handed_out_ret, &EngineLikeJob, &pauses, sizeof pauses);
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  std::vector<char> heap(100000, 'x');
  OwnedFd scratch{eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &scratch_key, scratch.fd, nullptr, nullptr);
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &engine_key, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), nullptr,
                             &CloseFd);
  for (;;) ASYNC_pause_job();  // only cancelling ends it
}
}  // namespace

TEST_F(Leaks, CancelledJobsAndTheirNestedJobsGiveBackEverything) {
  constexpr int kJobs = 16;
  std::vector<ASYNC_JOB*> jobs(kJobs, nullptr);
  std::vector<ASYNC_WAIT_CTX*> ctxs(kJobs, nullptr);
  std::vector<ASYNC_JOB*> children;
  int ret = 0;
  for (int i = 0; i < kJobs; ++i) {
    ctxs[i] = ASYNC_WAIT_CTX_new();
    ASSERT_EQ(ASYNC_start_job(&jobs[i], ctxs[i], &ret, &CancellableJob, nullptr, 0), ASYNC_PAUSE);
    ASSERT_NE(handed_out, nullptr);
    children.push_back(handed_out);
  }
  EXPECT_EQ(CountOpenFds(), fds_before_ + 2 * kJobs);
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_EQ(asyncjob_cancel_job(&jobs[i]), 1);
    EXPECT_EQ(jobs[i], nullptr);
  }
  EXPECT_EQ(CountOpenFds(), fds_before_) << "cancelling closed both fds of every job";
  // The nested jobs, handed out paused, outlive their parents.
  for (ASYNC_JOB*& child : children) {
    int status;
    while ((status = ASYNC_start_job(&child, nullptr, &ret, nullptr, nullptr, 0)) == ASYNC_PAUSE) {
    }
    ASSERT_EQ(status, ASYNC_FINISH);
  }
  for (ASYNC_WAIT_CTX* ctx : ctxs) ASYNC_WAIT_CTX_free(ctx);
  ASYNC_cleanup_thread();
  ExpectNothingLeft("after cancelling jobs with nested children");
}

TEST_F(Leaks, ThreadExitFreesGuardedAndSlabStacksAndTheSignalStack) {
  // The thread never calls ASYNC_cleanup_thread: its exit does.
  std::thread([] {
    asyncjob_set_guarded_stack_budget(2);
    ASSERT_EQ(ASYNC_init_thread(0, 300), 1);  // 2 guarded, 298 from two slabs
    std::vector<ASYNC_JOB*> jobs(100, nullptr);
    int ret = 0;
    int pauses = 1;
    for (ASYNC_JOB*& job : jobs) {
      ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &EngineLikeJob, &pauses, sizeof pauses),
                ASYNC_PAUSE);
    }
    for (ASYNC_JOB*& job : jobs) {
      ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    }
  }).join();
  ExpectNothingLeft("after a thread with a pool exited");
}

TEST_F(Leaks, ThreadExitAfterCleanupWithPausedJobsThatFinished) {
  std::thread([] {
    asyncjob_set_guarded_stack_budget(1);
    std::vector<ASYNC_JOB*> jobs(3, nullptr);
    int ret = 0;
    int pauses = 1;
    for (ASYNC_JOB*& job : jobs) {
      ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &EngineLikeJob, &pauses, sizeof pauses),
                ASYNC_PAUSE);
    }
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    ASSERT_EQ(ASYNC_init_thread(0, 2), 1);  // a new pool while the old one drains
    for (ASYNC_JOB*& job : jobs) {
      ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    }
  }).join();
  ExpectNothingLeft("after a thread whose old pool drained exited");
}

// Heap bytes in use after many cycles of everything above, on one thread.
TEST_F(Leaks, ManyCyclesDoNotGrowTheHeap) {
  if (ASYNCJOB_ASAN || ASYNCJOB_TSAN || ASYNCJOB_TEST_UNDER_VALGRIND()) {
    GTEST_SKIP() << "malloc is not glibc's here; the tool's leak checker covers this run";
  }
  asyncjob_set_guarded_stack_budget(3);
  std::vector<unsigned char> big(asyncjob_get_stack_size() / 2, 1);
  auto cycle = [&big] {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB* jobs[6] = {};
    int ret = 0;
    int pauses = 2;
    ASSERT_EQ(ASYNC_start_job(&jobs[0], ctx, &ret, &EngineLikeJob, &pauses, sizeof pauses),
              ASYNC_PAUSE);
    for (int i = 1; i < 5; ++i) {
      ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, &PauseHoldingArgs, big.data(), big.size()),
                ASYNC_PAUSE);
    }
    ASYNC_WAIT_CTX* cancelled_ctx = ASYNC_WAIT_CTX_new();
    ASSERT_EQ(ASYNC_start_job(&jobs[5], cancelled_ctx, &ret, &CancellableJob, nullptr, 0),
              ASYNC_PAUSE);
    ASYNC_JOB* child = handed_out;
    ASYNC_cleanup_thread();  // jobs outstanding
    ASSERT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
    ASSERT_EQ(asyncjob_cancel_job(&jobs[5]), 1);
    ASYNC_WAIT_CTX_free(cancelled_ctx);
    ASYNC_WAIT_CTX_free(ctx);  // under a paused job: it is orphaned
    ASSERT_TRUE(asyncjob_test::ErrorQueueEmpty());
    jobs[0] = nullptr;
    for (int i = 1; i < 5; ++i) {
      while (ASYNC_start_job(&jobs[i], nullptr, &ret, nullptr, nullptr, 0) == ASYNC_PAUSE) {
      }
    }
    while (ASYNC_start_job(&child, nullptr, &ret, nullptr, nullptr, 0) == ASYNC_PAUSE) {
    }
    ASSERT_EQ(ASYNC_init_thread(4, 2), 1);
    ASYNC_cleanup_thread();
  };
  for (int i = 0; i < 50; ++i) cycle();  // warm up: tcache, arenas, vectors
  const size_t before = mallinfo2().uordblks;
  for (int i = 0; i < 2000; ++i) cycle();
  const size_t after = mallinfo2().uordblks;
  EXPECT_LE(after, before + 4096) << "heap in use grew by " << after - before
                                  << " bytes over 2000 cycles";
  ExpectNothingLeft("after 2050 cycles");
}

namespace {
int FirstByte(void* arg) { return static_cast<unsigned char*>(arg)[0]; }

// Uses a quarter of its stack in one frame, then returns: the frame is popped
// from the region below the job's header that arguments are copied to.
__attribute__((noinline, no_sanitize("address"))) int UseAQuarterOfTheStack(void* arg) {
  const size_t bytes = asyncjob_get_stack_size() / 4;
  volatile char* frame = static_cast<volatile char*>(__builtin_alloca(bytes));
  for (size_t i = 0; i < bytes; i += 64) frame[i] = 1;
  return static_cast<unsigned char*>(arg)[0] + frame[bytes / 2];
}
}  // namespace

// A pooled job reused with larger arguments than its last run: the copy on
// its stack covers memory the last run's frames used (a quarter of the stack
// deep, so that they cover it whatever the layout of the job's own frames). Under valgrind this
// must not be reported as an invalid write (memcheck marks popped frames
// no-access; the library must make the region addressable again before
// copying into it, as it unpoisons it for ASan).
TEST_F(Leaks, ReusedJobTakesLargerArgumentsOnItsStack) {
  ASSERT_EQ(ASYNC_init_thread(1, 1), 1);
  unsigned char small[8] = {3};
  std::vector<unsigned char> larger(asyncjob_get_stack_size() / 8, 4);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &UseAQuarterOfTheStack, small, sizeof small),
            ASYNC_FINISH);
  EXPECT_EQ(ret, 4);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &FirstByte, larger.data(), larger.size()),
            ASYNC_FINISH);
  EXPECT_EQ(ret, 4);
  ASYNC_cleanup_thread();
  ExpectNothingLeft("after reusing a job with larger arguments");
}
