// A wait context freed while its job is paused (a server tearing a
// connection down mid-handshake; docs/teardown.md): what becomes of the job
// (unwound when it registered cancel hooks, else a tombstone), what the
// pool, the error queues and the counters say, when tombstones are
// released (fd signalled, bound, pool cleanup, thread exit), a context
// freed on another thread than its job's, and freeing from the places that
// call back into the context.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "support/test_support.h"

namespace {

using asyncjob_test::ErrorQueueEmpty;
using asyncjob_test::PopError;

int cleanups = 0;
int hook_runs = 0;
int destructors = 0;

void CloseFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) {
  ++cleanups;
  close(fd);
}

int fd_key;

// Sets an eventfd on its context (closed by the cleanup routine), then
// pauses until resumed `pauses` times.
struct Plan {
  int pauses = 1;
  bool with_hook = false;
  int fd = -1;
};

void CountHook(void*) { ++hook_runs; }

struct CountsDestruction {
  ~CountsDestruction() { ++destructors; }
};

int PausingJob(void* arg) {
  Plan* plan = *static_cast<Plan**>(arg);
  CountsDestruction on_stack;
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  if (ctx != nullptr) {
    plan->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASYNC_WAIT_CTX_set_wait_fd(ctx, &fd_key, plan->fd, nullptr, &CloseFd);
  }
  if (plan->with_hook) asyncjob_add_cancel_hook(&CountHook, nullptr);
  for (int i = 0; i < plan->pauses; ++i) ASYNC_pause_job();
  return 3;
}

ASYNC_JOB* StartPaused(ASYNC_WAIT_CTX* ctx, Plan* plan) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &PausingJob, &plan, sizeof plan), ASYNC_PAUSE);
  return job;
}

void Signal(int fd) {
  const std::uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
}

asyncjob_pool_stats PoolStats() {
  asyncjob_pool_stats stats{};
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 1);
  return stats;
}

asyncjob_stats Stats() {
  asyncjob_stats stats{};
  EXPECT_EQ(asyncjob_get_stats(&stats), 1);
  return stats;
}

class Orphans : public ::testing::Test {
 protected:
  void SetUp() override {
    asyncjob_clear_errors();
    cleanups = hook_runs = destructors = 0;
    fds_before_ = asyncjob_test::CountOpenFds();
    before_ = Stats();
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
    EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before_) << "no fd lost";
  }
  std::size_t fds_before_ = 0;
  asyncjob_stats before_{};
};

// Code that registered a cancel hook knows how to withdraw what it handed
// out: its job is unwound right away, and its slot reused.
TEST_F(Orphans, AJobWithCancelHooksIsUnwoundWhenItsContextIsFreed) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Plan plan;
  plan.with_hook = true;
  ASYNC_JOB* job = StartPaused(ctx, &plan);
  ASSERT_NE(job, nullptr);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(hook_runs, 1);
  EXPECT_EQ(destructors, 1) << "its stack was unwound";
  EXPECT_EQ(cleanups, 1) << "nothing holds the context: freed at once";
  asyncjob_pool_stats pool = PoolStats();
  EXPECT_EQ(pool.in_use, 0u);
  EXPECT_EQ(pool.tombstones, 0u);
  EXPECT_EQ(pool.idle, 1u);
  asyncjob_stats after = Stats();
  EXPECT_EQ(after.orphans - before_.orphans, 1u);
  EXPECT_EQ(after.orphans_unwound - before_.orphans_unwound, 1u);
  EXPECT_EQ(after.tombstones - before_.tombstones, 0u);
}

// Without hooks nothing is known of who may still hold the job: it becomes
// a tombstone. It never runs again, whatever is asked of it.
TEST_F(Orphans, ATombstoneNeverRunsAgainAndSaysWhy) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Plan plan;
  plan.pauses = 3;
  ASYNC_JOB* job = StartPaused(ctx, &plan);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(destructors, 0) << "a tombstone is not unwound";
  int ret = 42;
  ASYNC_JOB* handle = job;
  EXPECT_EQ(ASYNC_start_job(&handle, nullptr, &ret, nullptr, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOB_ORPHANED);
  EXPECT_EQ(ret, 42);
  EXPECT_EQ(handle, job);
  EXPECT_EQ(asyncjob_cancel_job(&handle), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOB_ORPHANED);
  EXPECT_EQ(handle, job);
  // Starting with the stale context (reachable only through the tombstone)
  // is refused too.
  ASYNC_JOB* fresh = nullptr;
  EXPECT_EQ(ASYNC_start_job(&fresh, ASYNC_get_wait_ctx(job), &ret, &PausingJob, &plan, sizeof plan),
            ASYNC_ERR);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_WAIT_CTX_IN_USE);
  // Freeing the stale context again does nothing.
  ASYNC_WAIT_CTX_free(ASYNC_get_wait_ctx(job));
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(cleanups, 0);
}

// Teardowns never run a pool with a maximum dry.
TEST_F(Orphans, TombstonesDoNotCountTowardsThePoolsMaximum) {
  ASSERT_EQ(ASYNC_init_thread(2, 0), 1);
  std::vector<Plan> plans(50);
  for (Plan& plan : plans) {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    ASSERT_NE(StartPaused(ctx, &plan), nullptr) << "the pool ran dry";
    ASYNC_WAIT_CTX_free(ctx);
    EXPECT_EQ(PoolStats().in_use, 0u);
  }
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(PoolStats().tombstones, 50u);
  // Signalled, they are released and reused.
  for (Plan& plan : plans) Signal(plan.fd);
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());
  EXPECT_EQ(PoolStats().tombstones, 0u);
  EXPECT_EQ(cleanups, 50);
}

// A tombstone is released at the first check after its context is
// signalled (a context made or freed, ASYNC_init_thread), not before.
TEST_F(Orphans, ATombstoneIsReleasedOnceItsContextIsSignalled) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  Plan plan;
  ASYNC_JOB* job = StartPaused(ctx, &plan);
  ASYNC_WAIT_CTX_free(ctx);
  // A completion arriving late still finds its fd open and its context.
  EXPECT_EQ(ASYNC_get_wait_ctx(job), ctx);
  OSSL_ASYNC_FD fd = -1;
  void* custom = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &fd_key, &fd, &custom), 1);
  EXPECT_EQ(fd, plan.fd);
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());
  ASSERT_EQ(ASYNC_init_thread(0, 0), 1);
  EXPECT_EQ(PoolStats().tombstones, 1u) << "not signalled yet";
  EXPECT_EQ(cleanups, 0);
  Signal(plan.fd);
  ASSERT_EQ(ASYNC_init_thread(0, 0), 1);
  EXPECT_EQ(PoolStats().tombstones, 0u);
  EXPECT_EQ(cleanups, 1);
  asyncjob_stats after = Stats();
  EXPECT_EQ(after.tombstones_released - before_.tombstones_released, 1u);
}

TEST_F(Orphans, CleaningUpThePoolReleasesTombstones) {
  Plan plans[3];
  for (Plan& plan : plans) {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    StartPaused(ctx, &plan);
    ASYNC_WAIT_CTX_free(ctx);
  }
  EXPECT_EQ(cleanups, 0);
  ASYNC_cleanup_thread();
  EXPECT_TRUE(ErrorQueueEmpty()) << "no job is outstanding";
  EXPECT_EQ(cleanups, 3);
  asyncjob_pool_stats pool{};
  EXPECT_EQ(asyncjob_get_pool_stats(&pool), 0) << "the pool is gone";
}

TEST_F(Orphans, AThreadThatExitsReleasesItsTombstones) {
  std::thread([] {
    Plan plans[4];
    for (Plan& plan : plans) {
      ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
      StartPaused(ctx, &plan);
      ASYNC_WAIT_CTX_free(ctx);
    }
  }).join();
  EXPECT_EQ(cleanups, 4);
  asyncjob_stats after = Stats();
  EXPECT_EQ(after.tombstones - before_.tombstones, 4u);
  EXPECT_EQ(after.tombstones_released - before_.tombstones_released, 4u);
}

// A thread that exits with a job paused (its context not freed) gives the
// job up without unwinding it: its cancel hook runs on the exiting thread,
// before the job's stack is dropped, and none of its destructors. The
// context, freed afterwards from here, runs its cleanup once.
TEST_F(Orphans, AThreadExitingWithAPausedJobRunsItsCancelHooks) {
  Plan plan;
  plan.with_hook = true;
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  std::thread([ctx, &plan] { StartPaused(ctx, &plan); }).join();
  EXPECT_EQ(hook_runs, 1);
  EXPECT_EQ(destructors, 0);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(cleanups, 1);
  EXPECT_TRUE(ErrorQueueEmpty());
}

// Hooks run as a job is given up may free contexts, the job's own among
// them: every job of the exiting thread is orphaned before any hook runs,
// so nothing is unwound or released under the walk of its pools. (Freeing
// the context used to cancel the job from inside that walk and crash.)
ASYNC_WAIT_CTX* context_to_free = nullptr;
void FreesAContextHook(void*) {
  ++hook_runs;
  ASYNC_WAIT_CTX_free(context_to_free);
}

int PausesWithTwoHooksOneFreeingItsContext(void*) {
  CountsDestruction on_stack;
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &fd_key, eventfd(0, EFD_CLOEXEC), nullptr, &CloseFd);
  asyncjob_add_cancel_hook(&CountHook, nullptr);
  asyncjob_add_cancel_hook(&FreesAContextHook, nullptr);  // runs first
  ASYNC_pause_job();
  return 0;
}

TEST_F(Orphans, AHookFreeingItsOwnContextAsTheThreadExits) {
  std::thread([] {
    context_to_free = ASYNC_WAIT_CTX_new();
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    ASSERT_EQ(ASYNC_start_job(&job, context_to_free, &ret, &PausesWithTwoHooksOneFreeingItsContext,
                              nullptr, 0),
              ASYNC_PAUSE);
  }).join();
  EXPECT_EQ(hook_runs, 2);
  EXPECT_EQ(destructors, 0) << "a job given up is not unwound";
  EXPECT_EQ(cleanups, 1) << "the context was freed, with its fd";
}

// A tombstone's hook that frees another context makes the thread look for
// signalled tombstones; the new one, whose fd is readable already, is not
// listed yet and is not released under the free of its own context.
__attribute__((noinline)) void PauseInNoexceptWithoutCounting() noexcept { ASYNC_pause_job(); }

int PausesInNoexceptWithAHookFreeingAContext(void*) {
  asyncjob_add_cancel_hook(&FreesAContextHook, nullptr);
  PauseInNoexceptWithoutCounting();
  return 0;
}

TEST_F(Orphans, ATombstonesHookFreeingAnotherContext) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  context_to_free = ASYNC_WAIT_CTX_new();
  const int fd = eventfd(1, EFD_CLOEXEC);  // readable: as if the engine had signalled
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &fd_key, fd, nullptr, &CloseFd);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &PausesInNoexceptWithAHookFreeingAContext, nullptr, 0),
            ASYNC_PAUSE);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(hook_runs, 1);
  EXPECT_EQ(PoolStats().tombstones, 1u);
  EXPECT_EQ(cleanups, 0);
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());  // the next check releases it
  EXPECT_EQ(PoolStats().tombstones, 0u);
  EXPECT_EQ(cleanups, 1);
  EXPECT_TRUE(ErrorQueueEmpty());
}

// At most 1024 tombstones per thread: past that the oldest are released at
// the next check, signalled or not.
TEST_F(Orphans, TombstonesAreBoundedPerThread) {
  constexpr int kTeardowns = 1100;
  std::vector<Plan> plans(kTeardowns);
  for (Plan& plan : plans) {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    ASSERT_NE(StartPaused(ctx, &plan), nullptr);
    ASYNC_WAIT_CTX_free(ctx);
    EXPECT_LE(PoolStats().tombstones, 1025u);
  }
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());
  EXPECT_EQ(PoolStats().tombstones, 1024u);
  EXPECT_EQ(cleanups, kTeardowns - 1024);
  // The oldest went first: the newest fds are still open.
  EXPECT_EQ(fcntl(plans.back().fd, F_GETFD), FD_CLOEXEC);
}

// A context freed on another thread than its paused job's: the job cannot
// be unwound from here, so it keeps the (detached) context until it ends
// on its own thread; then the context goes, with its fds.
TEST_F(Orphans, AContextFreedOnAnotherThreadIsKeptUntilTheJobEnds) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  int callback_calls = 0;
  ASYNC_WAIT_CTX_set_callback(
      ctx, [](void* calls) { return ++*static_cast<int*>(calls); }, &callback_calls);
  Plan plan;
  ASYNC_JOB* job = StartPaused(ctx, &plan);
  std::thread([ctx] {
    ASYNC_WAIT_CTX_free(ctx);
    EXPECT_TRUE(ErrorQueueEmpty());
  }).join();
  EXPECT_EQ(cleanups, 0);
  ASYNC_callback_fn callback = nullptr;
  void* argument = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(ctx, &callback, &argument), 0) << "cleared at once";
  EXPECT_EQ(PoolStats().in_use, 1u) << "not an orphan of this thread";
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 3);
  EXPECT_EQ(cleanups, 1) << "its last job let go of it";
  EXPECT_EQ(callback_calls, 0);
  EXPECT_TRUE(ErrorQueueEmpty());
}

// Freeing the context from inside its own running job: the job carries on
// without one, and the context goes at once.
TEST_F(Orphans, FreeingTheContextOfTheRunningJobFreesItAtOnce) {
  struct Self {
    int fd = -1;
    ASYNC_WAIT_CTX* seen_after = reinterpret_cast<ASYNC_WAIT_CTX*>(1);
  } self;
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  Self* pointer = &self;
  auto body = [](void* arg) {
    Self* s = *static_cast<Self**>(arg);
    ASYNC_WAIT_CTX* c = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    s->fd = eventfd(0, EFD_CLOEXEC);
    ASYNC_WAIT_CTX_set_wait_fd(c, &fd_key, s->fd, nullptr, &CloseFd);
    ASYNC_WAIT_CTX_free(c);
    s->seen_after = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    ASYNC_pause_job();
    return 9;
  };
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, body, &pointer, sizeof pointer), ASYNC_PAUSE);
  EXPECT_EQ(cleanups, 1);
  EXPECT_EQ(self.seen_after, nullptr);
  EXPECT_TRUE(ErrorQueueEmpty());
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 9);
}

// A cleanup routine that frees the context being freed under a paused job,
// and a cancel hook that does: each is ignored, every cleanup runs once.
int freeing_cleanups = 0;
void FreeTheContextAgain(ASYNC_WAIT_CTX* ctx, const void*, OSSL_ASYNC_FD fd, void*) {
  ++freeing_cleanups;
  close(fd);
  ASYNC_WAIT_CTX_free(ctx);
}
void FreeItsContextHook(void* ctx) {
  ++hook_runs;
  ASYNC_WAIT_CTX_free(static_cast<ASYNC_WAIT_CTX*>(ctx));
}

TEST_F(Orphans, FreeingAgainFromACleanupOrACancelHookIsIgnored) {
  freeing_cleanups = 0;
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  auto body = [](void*) {
    ASYNC_WAIT_CTX* c = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    ASYNC_WAIT_CTX_set_wait_fd(c, &fd_key, eventfd(0, EFD_CLOEXEC), nullptr, &FreeTheContextAgain);
    asyncjob_add_cancel_hook(&FreeItsContextHook, c);
    ASYNC_pause_job();
    return 0;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, body, nullptr, 0), ASYNC_PAUSE);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(hook_runs, 1);
  EXPECT_EQ(freeing_cleanups, 1);
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(PoolStats().in_use, 0u);
}

// An orphan's unwinding that fails (its pause is inside a noexcept frame)
// falls back to a tombstone; the attempt leaves no error behind. Its cancel
// hook still runs, once, before its stack is dropped (what registered it may
// hold pointers into that stack), but none of its destructors does.
__attribute__((noinline)) void PauseInNoexcept() noexcept {
  CountsDestruction inner;
  ASYNC_pause_job();
}

int PausesInsideNoexcept(void*) {
  asyncjob_add_cancel_hook(&CountHook, nullptr);
  ASYNC_WAIT_CTX* c = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  ASYNC_WAIT_CTX_set_wait_fd(c, &fd_key, eventfd(0, EFD_CLOEXEC), nullptr, &CloseFd);
  PauseInNoexcept();
  return 0;
}

TEST_F(Orphans, AnOrphanThatCannotBeUnwoundBecomesATombstoneQuietly) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &PausesInsideNoexcept, nullptr, 0), ASYNC_PAUSE);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(ErrorQueueEmpty());
  EXPECT_EQ(hook_runs, 1) << "the hook runs as the job is given up";
  EXPECT_EQ(destructors, 0) << "a tombstone's frames are never unwound";
  EXPECT_EQ(PoolStats().tombstones, 1u);
  asyncjob_stats after = Stats();
  EXPECT_EQ(after.orphans_unwound - before_.orphans_unwound, 0u);
  EXPECT_EQ(after.tombstones - before_.tombstones, 1u);
}

}  // namespace

namespace {

// A cleanup routine, run as a signalled tombstone is released, that cleans
// the thread's pool up: every other tombstone is released by it, and the
// release in progress notices and stops.
void CleanUpThePool(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) {
  ++cleanups;
  close(fd);
  ASYNC_cleanup_thread();
}

int PausesWithPoolCleaningFd(void* arg) {
  int* fd = *static_cast<int**>(arg);
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  *fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &fd_key, *fd, nullptr, &CleanUpThePool);
  ASYNC_pause_job();
  return 0;
}

TEST_F(Orphans, ACleanupThatCleansThePoolUpDuringAReleaseIsSafe) {
  int fds[4];
  for (int& fd : fds) {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    int* pointer = &fd;
    ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &PausesWithPoolCleaningFd, &pointer, sizeof pointer),
              ASYNC_PAUSE);
    ASYNC_WAIT_CTX_free(ctx);
  }
  for (int fd : fds) Signal(fd);
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());
  EXPECT_EQ(cleanups, 4);
  asyncjob_pool_stats pool{};
  EXPECT_EQ(asyncjob_get_pool_stats(&pool), 0) << "the pool was cleaned up";
  EXPECT_TRUE(ErrorQueueEmpty());
}

}  // namespace
