// Parked contexts: a job that finished on its own stack keeps its context
// parked in the job layer's entry loop, and its next start with at most
// kSmallArgumentRoom bytes of arguments runs there instead of preparing a
// fresh context (src/job/job.cc, JobEntry). These tests check that a reused
// context behaves exactly like a fresh one: arguments of every size arrive
// intact (also larger ones, copied where the parked frame was), pauses,
// exceptions, cancellation and pthread_exit() work in it, and cleanup frees
// parked jobs. Where parking applies (return-free builds, not under
// valgrind) they also check that it happens, so that a change cannot turn
// it off unnoticed.
#include <gtest/gtest.h>
#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "asyncjob/async.h"
#include "asyncjob/introspect.h"
#include "base/sanitizers.h"
#include "job/job.h"

#if ASYNCJOB_ASAN
// AddressSanitizer's option: frames moved to a heap "fake stack".
extern "C" int __asan_option_detect_stack_use_after_return;
#endif

namespace {

using asyncjob::job::Job;
using asyncjob::job::kSmallArgumentRoom;

bool ParkingApplies() {
#if ASYNCJOB_CONTEXT_RETURN_FREE
#if ASYNCJOB_VALGRIND
  return !RUNNING_ON_VALGRIND;
#else
  return true;
#endif
#else
  return false;
#endif
}

ASYNC_JOB* last_job = nullptr;

bool IsParked(ASYNC_JOB* job) { return reinterpret_cast<const Job*>(job)->parked; }

// Arguments: a length and that many bytes following a pattern of the length.
std::vector<unsigned char> Pattern(std::size_t size) {
  std::vector<unsigned char> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<unsigned char>(i * 7 + size);
  return bytes;
}

std::size_t expected_size = 0;

// Returns 1 if its arguments are the pattern of expected_size bytes.
int CheckArguments(void* args) {
  last_job = ASYNC_get_current_job();
  std::vector<unsigned char> want = Pattern(expected_size);
  return std::memcmp(args, want.data(), want.size()) == 0 ? 1 : 0;
}

int ReturnSeven(void*) {
  last_job = ASYNC_get_current_job();
  return 7;
}

// Recurses `depth` frames, each with a local the caller checks, pausing at
// the bottom.
int Recurse(int depth) {
  volatile int here = depth * 3;
  if (depth == 0) {
    ASYNC_pause_job();
    return 0;
  }
  int below = Recurse(depth - 1);
  return here == depth * 3 ? below + 1 : -1000;
}

int PauseDeep(void* args) {
  int depth;
  std::memcpy(&depth, args, sizeof depth);
  last_job = ASYNC_get_current_job();
  return Recurse(depth);
}

class ParkedContext : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(ASYNC_init_thread(1, 1), 1);  // one job: every start reuses it
    ctx_ = ASYNC_WAIT_CTX_new();
    ASSERT_NE(ctx_, nullptr);
  }
  void TearDown() override {
    ASYNC_WAIT_CTX_free(ctx_);
    ASYNC_cleanup_thread();
  }
  int StartToFinish(int (*function)(void*), const void* args, std::size_t size) {
    ASYNC_JOB* job = nullptr;
    int ret = -1;
    EXPECT_EQ(ASYNC_start_job(&job, ctx_, &ret, function, const_cast<void*>(args), size),
              ASYNC_FINISH);
    return ret;
  }
  ASYNC_WAIT_CTX* ctx_ = nullptr;
};

TEST_F(ParkedContext, AFinishedJobParksAndItsNextStartRunsThere) {
  EXPECT_EQ(StartToFinish(&ReturnSeven, nullptr, 0), 7);
  ASYNC_JOB* first = last_job;
  EXPECT_EQ(IsParked(first), ParkingApplies());
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(StartToFinish(&ReturnSeven, nullptr, 0), 7);
    EXPECT_EQ(last_job, first);  // the pool's one job, each time
    EXPECT_EQ(IsParked(first), ParkingApplies());
  }
}

TEST_F(ParkedContext, ArgumentsOfEverySizeArriveIntactInAnyOrder) {
  const std::size_t sizes[] = {1,
                               8,
                               kSmallArgumentRoom - 1,
                               kSmallArgumentRoom,
                               kSmallArgumentRoom + 1,
                               4096,
                               64 * 1024 /* on the heap */,
                               16,
                               kSmallArgumentRoom + 16,
                               kSmallArgumentRoom};
  for (int round = 0; round < 3; ++round) {
    for (std::size_t size : sizes) {
      expected_size = size;
      std::vector<unsigned char> args = Pattern(size);
      EXPECT_EQ(StartToFinish(&CheckArguments, args.data(), size), 1) << size << " bytes";
      // Any size can be followed by a parked start.
      EXPECT_EQ(IsParked(last_job), ParkingApplies()) << size << " bytes";
    }
  }
}

TEST_F(ParkedContext, AReusedContextPausesAtAnyDepthAndKeepsItsFrames) {
  for (int depth : {0, 5, 1, 40, 3, 0, 200}) {
    ASYNC_JOB* job = nullptr;
    int ret = -1;
    ASSERT_EQ(ASYNC_start_job(&job, ctx_, &ret, &PauseDeep, &depth, sizeof depth), ASYNC_PAUSE);
    EXPECT_FALSE(IsParked(job));  // running (paused), not parked
    ASSERT_EQ(ASYNC_start_job(&job, ctx_, &ret, &PauseDeep, &depth, sizeof depth), ASYNC_FINISH);
    EXPECT_EQ(ret, depth) << "depth " << depth;
  }
}

int ThrowAndCatch(void*) {
  try {
    throw std::runtime_error("inside");
  } catch (const std::runtime_error& error) {
    ASYNC_pause_job();  // paused inside the catch block
    return std::strcmp(error.what(), "inside") == 0 ? 5 : -1;
  }
}

TEST_F(ParkedContext, ExceptionsWorkInAReusedContext) {
  EXPECT_EQ(StartToFinish(&ReturnSeven, nullptr, 0), 7);  // parks
  for (int i = 0; i < 10; ++i) {
    ASYNC_JOB* job = nullptr;
    int ret = -1;
    ASSERT_EQ(ASYNC_start_job(&job, ctx_, &ret, &ThrowAndCatch, nullptr, 0), ASYNC_PAUSE);
    EXPECT_EQ(std::uncaught_exceptions(), 0);
    ASSERT_EQ(ASYNC_start_job(&job, ctx_, &ret, &ThrowAndCatch, nullptr, 0), ASYNC_FINISH);
    EXPECT_EQ(ret, 5);
  }
}

bool unwound = false;
struct SetOnUnwind {
  ~SetOnUnwind() { unwound = true; }
};

int PauseWithAGuard(void*) {
  SetOnUnwind guard;
  ASYNC_pause_job();
  return 1;
}

TEST_F(ParkedContext, CancellingAJobOfAReusedContextUnwindsItAndTheNextStartWorks) {
  EXPECT_EQ(StartToFinish(&ReturnSeven, nullptr, 0), 7);  // parks
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  unwound = false;
  ASSERT_EQ(ASYNC_start_job(&job, ctx_, &ret, &PauseWithAGuard, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(asyncjob_cancel_job(&job), 1);
  EXPECT_TRUE(unwound);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(StartToFinish(&ReturnSeven, nullptr, 0), 7);
  EXPECT_EQ(IsParked(last_job), ParkingApplies());
}

void* ExitInAReusedJob(void*) {
  ASYNC_init_thread(1, 1);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  if (ASYNC_start_job(&job, nullptr, &ret, &ReturnSeven, nullptr, 0) != ASYNC_FINISH || ret != 7)
    return nullptr;
  // The thread's pool has one job, parked now: this start reuses it.
  ASYNC_start_job(
      &job, nullptr, &ret,
      [](void*) -> int { pthread_exit(reinterpret_cast<void*>(std::uintptr_t{42})); }, nullptr, 0);
  return nullptr;  // not reached
}

TEST(ParkedContextThreads, PthreadExitInAReusedContextEndsTheThreadWithItsValue) {
  if (ASYNCJOB_TSAN) GTEST_SKIP() << "TSan refuses pthread_exit from a fibre (docs/safety.md)";
#if ASYNCJOB_ASAN
  if (__asan_option_detect_stack_use_after_return != 0) {
    GTEST_SKIP() << "ASan with detect_stack_use_after_return: a thread's exit inside a job is "
                    "not carried across stacks (docs/safety.md)";
  }
#endif
  pthread_t thread;
  ASSERT_EQ(pthread_create(&thread, nullptr, &ExitInAReusedJob, nullptr), 0);
  void* value = nullptr;
  ASSERT_EQ(pthread_join(thread, &value), 0);
  EXPECT_EQ(value, reinterpret_cast<void*>(std::uintptr_t{42}));
}

TEST(ParkedContextCleanup, CleanupFreesParkedJobs) {
  asyncjob_stats_ex before{};
  before.size = sizeof before;
  ASSERT_EQ(asyncjob_get_stats_ex(&before, ASYNCJOB_SCOPE_THREAD), 1);
  ASSERT_EQ(ASYNC_init_thread(8, 0), 1);
  ASYNC_WAIT_CTX* ctxs[8];
  ASYNC_JOB* jobs[8] = {};
  int ret = 0;
  for (int i = 0; i < 8; ++i) {
    ctxs[i] = ASYNC_WAIT_CTX_new();
    ASSERT_EQ(ASYNC_start_job(&jobs[i], ctxs[i], &ret, &PauseWithAGuard, nullptr, 0), ASYNC_PAUSE);
  }
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(ASYNC_start_job(&jobs[i], ctxs[i], &ret, &PauseWithAGuard, nullptr, 0), ASYNC_FINISH);
  }
  ASYNC_cleanup_thread();  // eight idle jobs, parked where parking applies
  for (ASYNC_WAIT_CTX* ctx : ctxs) ASYNC_WAIT_CTX_free(ctx);
  asyncjob_stats_ex after{};
  after.size = sizeof after;
  ASSERT_EQ(asyncjob_get_stats_ex(&after, ASYNCJOB_SCOPE_THREAD), 1);
  EXPECT_EQ(after.jobs_live, 0u);
  EXPECT_EQ(after.jobs_freed - before.jobs_freed, after.jobs_created - before.jobs_created);
}

}  // namespace
