// Threads that exit with jobs: a paused job whose thread exited (an orphan)
// is refused to every later thread, including one the C library placed at
// the dead thread's thread-local address; pthread_exit() and pthread_cancel()
// inside a job end the thread as they would without asyncjob (exit value,
// cleanup handlers and destructors on the job's stack and on the thread's,
// in order) and give the job back. Plain pthreads throughout, as a C host
// process would use them.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "asyncjob/async.h"
#include "support/mapping_check.h"
#include "support/test_support.h"

using asyncjob_test::PopError;

extern "C" int asyncjob_test_c_exit_in_job(char* log, size_t log_size, void** value);
extern "C" int asyncjob_test_legacy_resume_orphan(unsigned long* error);

namespace {

// ----- Helpers -----

// What cleanup handlers and destructors did, in order (one thread at a time).
std::mutex events_mutex;
std::vector<std::string> events;

void Record(const std::string& event) {
  std::lock_guard lock(events_mutex);
  events.push_back(event);
}

std::vector<std::string> TakeEvents() {
  std::lock_guard lock(events_mutex);
  std::vector<std::string> taken;
  taken.swap(events);
  return taken;
}

struct Noisy {
  explicit Noisy(const char* name) : name_(name) {}
  ~Noisy() { Record(std::string("~") + name_); }
  const char* name_;
};

void RecordHandler(void* name) { Record(static_cast<const char*>(name)); }

// A marker in the test program's static TLS block: a thread whose marker
// has the address of an exited thread's got that thread's whole block,
// asyncjob's thread state included.
thread_local int tls_marker;

pthread_t Spawn(void* (*body)(void*), void* argument) {
  pthread_t thread;
  EXPECT_EQ(pthread_create(&thread, nullptr, body, argument), 0);
  return thread;
}

void* Join(pthread_t thread) {
  void* value = nullptr;
  EXPECT_EQ(pthread_join(thread, &value), 0);
  return value;
}

int PauseOnce(void*) {
  ASYNC_pause_job();
  return 1;
}

// ----- Orphans: jobs left paused by a thread that exited -----

struct Orphans {
  int count = 1;
  std::size_t max_size = 0;          // the exiting thread's pool
  bool cleanup_before_exit = false;  // ASYNC_cleanup_thread() with them paused
  std::vector<ASYNC_JOB*> jobs;
  const void* tls_address = nullptr;
};

void* LeaveJobsPaused(void* argument) {
  auto* orphans = static_cast<Orphans*>(argument);
  orphans->tls_address = &tls_marker;
  if (orphans->max_size != 0) {
    EXPECT_EQ(ASYNC_init_thread(orphans->max_size, orphans->max_size), 1);
  }
  for (int i = 0; i < orphans->count; ++i) {
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
    orphans->jobs.push_back(job);
  }
  if (orphans->max_size != 0) {
    ASYNC_JOB* job = nullptr;
    int ret = 0;
    EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_NO_JOBS);
  }
  if (orphans->cleanup_before_exit) {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
  return nullptr;
}

// Whether resuming and cancelling `job` from the calling thread are refused
// because its thread exited, leaving the handle untouched.
void ExpectRefused(ASYNC_JOB* job) {
  ASYNC_JOB* handle = job;
  int ret = -1;
  EXPECT_EQ(ASYNC_start_job(&handle, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(handle, job);
  EXPECT_EQ(ret, -1);
  asyncjob_test::QueuedError error = PopError();
  EXPECT_EQ(error.reason(), ASYNCJOB_R_OWNER_THREAD_EXITED) << error.message;
  EXPECT_NE(error.message.find("exited"), std::string::npos) << error.message;
  EXPECT_EQ(asyncjob_cancel_job(&handle), 0);
  EXPECT_EQ(handle, job);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_OWNER_THREAD_EXITED);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

// What the later thread does with the orphans, and what it reports.
struct LaterThread {
  const Orphans* orphans = nullptr;
  bool with_pool = true;
  std::size_t max_size = 0;
  const void* tls_address = nullptr;
  bool own_jobs_ran = false;
  bool overflow = false;  // finally overflow a stack of its own (death test)
};

// The recursion must run on the job's real stack, not on AddressSanitizer's
// heap-allocated fake frames.
__attribute__((no_sanitize("address"), noinline)) int Recurse(int depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (depth > 1'000'000'000) return frame[0];
  return Recurse(depth + 1) + frame[0];
}
int OverflowForever(void*) { return Recurse(0); }

void* UseOrphansFromLaterThread(void* argument) {
  auto* later = static_cast<LaterThread*>(argument);
  later->tls_address = &tls_marker;
  if (later->with_pool) {
    EXPECT_EQ(ASYNC_init_thread(later->max_size, 0), 1);
  }
  for (ASYNC_JOB* job : later->orphans->jobs) ExpectRefused(job);
  asyncjob_pool_stats stats{};
  if (!later->with_pool) {
    // Refusing created nothing here.
    EXPECT_EQ(asyncjob_get_pool_stats(&stats), 0);
  }
  // Its own pool works as if the orphans did not exist.
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
  if (later->max_size == 1) {
    ASYNC_JOB* second = nullptr;
    EXPECT_EQ(ASYNC_start_job(&second, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_NO_JOBS);
  }
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 1u);
  EXPECT_EQ(stats.total, 1u);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  EXPECT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u);
  later->own_jobs_ran = true;
  if (later->overflow && later->tls_address == later->orphans->tls_address) {
    ASYNC_JOB* overflowing = nullptr;
    ASYNC_start_job(&overflowing, nullptr, &ret, &OverflowForever, nullptr, 0);
  }
  ASYNC_cleanup_thread();
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  return nullptr;
}

// Runs a thread that leaves `orphans` paused and exits, then threads until
// one gets the exited thread's TLS block (at most a few tries; glibc reuses
// a joined thread's stack and TLS for the next thread), each using the
// orphans as `later` says. Returns whether the address was reused.
bool OrphanThenReuseTheThread(Orphans* orphans, LaterThread* later) {
  Join(Spawn(&LeaveJobsPaused, orphans));
  later->orphans = orphans;
  for (int attempt = 0; attempt < 8; ++attempt) {
    Join(Spawn(&UseOrphansFromLaterThread, later));
    if (later->tls_address == orphans->tls_address) return true;
  }
  return false;
}

class OrphanedJobs : public ::testing::Test {
 protected:
  void SetUp() override { asyncjob_clear_errors(); }
  void TearDown() override {
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
  // Logs whether the later thread really had the exited one's TLS address:
  // the case the owner check must survive.
  void Report(bool reused) {
    std::printf("TLS block of the exited thread %s by the later thread\n",
                reused ? "reused" : "NOT reused");
    RecordProperty("tls_reused", reused ? "yes" : "no");
  }
};

TEST_F(OrphanedJobs, LaterThreadAtTheSameTlsAddressIsRefused) {
  Orphans orphans;
  orphans.count = 3;
  LaterThread later;
  bool reused = OrphanThenReuseTheThread(&orphans, &later);
  Report(reused);
  EXPECT_TRUE(reused) << "glibc did not reuse the thread's TLS block";
  EXPECT_TRUE(later.own_jobs_ran);
  // The main thread is refused for the same reason.
  for (ASYNC_JOB* job : orphans.jobs) ExpectRefused(job);
}

TEST_F(OrphanedJobs, LaterThreadWithoutAPoolIsRefused) {
  Orphans orphans;
  LaterThread later;
  later.with_pool = false;
  Report(OrphanThenReuseTheThread(&orphans, &later));
  EXPECT_TRUE(later.own_jobs_ran);
  for (ASYNC_JOB* job : orphans.jobs) ExpectRefused(job);
}

TEST_F(OrphanedJobs, ExitingThreadWithABoundedPool) {
  Orphans orphans;
  orphans.count = 2;
  orphans.max_size = 2;
  LaterThread later;
  later.max_size = 1;
  Report(OrphanThenReuseTheThread(&orphans, &later));
  EXPECT_TRUE(later.own_jobs_ran);
  for (ASYNC_JOB* job : orphans.jobs) ExpectRefused(job);
}

TEST_F(OrphanedJobs, JobsOfAPoolCleanedUpBeforeExit) {
  Orphans orphans;
  orphans.count = 2;
  orphans.cleanup_before_exit = true;
  LaterThread later;
  Report(OrphanThenReuseTheThread(&orphans, &later));
  EXPECT_TRUE(later.own_jobs_ran);
  for (ASYNC_JOB* job : orphans.jobs) ExpectRefused(job);
}

TEST_F(OrphanedJobs, TheLegacyApiRefusesThemToo) {
  unsigned long error = 0;
  EXPECT_EQ(asyncjob_test_legacy_resume_orphan(&error), ASYNC_ERR);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(error), ASYNCJOB_R_OWNER_THREAD_EXITED);
}

TEST(OrphanedJobsDeathTest, OverflowInTheLaterThreadStillNamesTheJob) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Orphans orphans;
        LaterThread later;
        later.overflow = true;  // in the thread that got the exited one's TLS
        OrphanThenReuseTheThread(&orphans, &later);
      },
      "asyncjob: stack overflow in job 0x[0-9a-f]+: fault at 0x[0-9a-f]+ in the guard");
}

// ----- What orphans cost -----

constexpr std::size_t kTouched = 40 * 1024;

struct Touched {
  std::uintptr_t low = 0;  // of the bytes the job wrote before pausing
};

__attribute__((no_sanitize("address"), noinline)) int TouchThenPause(void* argument) {
  volatile char frame[kTouched];
  for (std::size_t i = 0; i < kTouched; i += 512) frame[i] = 1;
  (*static_cast<Touched**>(argument))->low = reinterpret_cast<std::uintptr_t>(&frame[0]);
  ASYNC_pause_job();
  return frame[0];
}

struct TouchedOrphans {
  static constexpr int kCount = 8;
  Touched touched[kCount];
  ASYNC_JOB* jobs[kCount] = {};
};

void* TouchAndLeavePaused(void* argument) {
  auto* orphans = static_cast<TouchedOrphans*>(argument);
  for (int i = 0; i < TouchedOrphans::kCount; ++i) {
    Touched* touched = &orphans->touched[i];
    int ret = 0;
    EXPECT_EQ(ASYNC_start_job(&orphans->jobs[i], nullptr, &ret, &TouchThenPause, &touched,
                              sizeof touched),
              ASYNC_PAUSE);
  }
  return nullptr;
}

// Pages of [low, low + size) resident in memory.
std::size_t ResidentPages(std::uintptr_t low, std::size_t size) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::uintptr_t first = low & ~(page - 1);
  std::size_t count = (low + size - first + page - 1) / page;
  std::vector<unsigned char> residency(count);
  EXPECT_EQ(mincore(reinterpret_cast<void*>(first), count * page, residency.data()), 0);
  std::size_t resident = 0;
  for (unsigned char flags : residency) resident += flags & 1;
  return resident;
}

TEST_F(OrphanedJobs, TheirStackPagesAreReleasedAndTheirMappingsBounded) {
  // Warm up: the thread machinery's own first-use mappings.
  {
    TouchedOrphans warm;
    Join(Spawn(&TouchAndLeavePaused, &warm));
  }
  std::size_t mappings[3] = {asyncjob_test::MappingsWithEmptyStackCaches(), 0, 0};
  std::size_t fds = asyncjob_test::CountOpenFds();
  for (int round = 1; round <= 2; ++round) {
    TouchedOrphans orphans;
    Join(Spawn(&TouchAndLeavePaused, &orphans));
    mappings[round] = asyncjob_test::MappingsWithEmptyStackCaches();
    for (int i = 0; i < TouchedOrphans::kCount; ++i) {
      // The frames' pages went back to the kernel; the header still answers.
      if (!ASYNCJOB_TEST_UNDER_VALGRIND()) {
        EXPECT_EQ(ResidentPages(orphans.touched[i].low, kTouched - 4096), 0u) << "job " << i;
      }
      ExpectRefused(orphans.jobs[i]);
    }
  }
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds);
  if (asyncjob_test::MappingCountsAreExact()) {
    // Each round keeps its orphans' stacks (two mappings each at most, the
    // stack and its guard), and nothing else: not the thread's signal stack.
    EXPECT_LE(mappings[1] - mappings[0], 2u * TouchedOrphans::kCount);
    EXPECT_EQ(mappings[2] - mappings[1], mappings[1] - mappings[0]);
  }
}

// ----- pthread_exit() and pthread_cancel() inside a job -----

#if ASYNCJOB_TSAN
// ThreadSanitizer's pthread_exit() interceptor refuses to run on a fibre (a
// CHECK in its runtime). Under TSan the threads end themselves by
// cancellation instead, which takes the same forced unwind.
constexpr bool kExitByCancelling = true;
#else
constexpr bool kExitByCancelling = false;
#endif

[[noreturn]] void EndThisThread(std::intptr_t value) {
  if (kExitByCancelling) {
    pthread_cancel(pthread_self());
    pthread_testcancel();
  }
  pthread_exit(reinterpret_cast<void*>(value));
}

// What pthread_join() sees of EndThisThread(value).
void* ExitValue(std::intptr_t value) {
  return kExitByCancelling ? PTHREAD_CANCELED : reinterpret_cast<void*>(value);
}

// A thread that runs a job to its end: the first one makes the mappings
// the C library keeps for later threads (a cached stack, a malloc arena).
void* RunOneJob(void*) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_FINISH);
  return nullptr;
}

#if ASYNCJOB_ASAN
// AddressSanitizer's option: frames moved to a heap "fake stack".
extern "C" int __asan_option_detect_stack_use_after_return;
#endif

// Whether ASan keeps frames on fake stacks (detect_stack_use_after_return):
// a forced unwind carried from a job's stack to its resumer's is not
// supported then (docs/safety.md, "Threads that exit or are cancelled").
bool AsanFakeStacksOn() {
#if ASYNCJOB_ASAN
  return __asan_option_detect_stack_use_after_return != 0;
#else
  return false;
#endif
}

class ThreadExitInJob : public ::testing::Test {
 protected:
  void SetUp() override {
    if (AsanFakeStacksOn()) {
      GTEST_SKIP() << "ASan with detect_stack_use_after_return: a thread's exit inside a job "
                      "is not carried across stacks (see docs/safety.md)";
    }
    asyncjob_clear_errors();
    TakeEvents();
    Join(Spawn(&RunOneJob, nullptr));
    mappings_ = asyncjob_test::MappingsWithEmptyStackCaches();
    fds_ = asyncjob_test::CountOpenFds();
    asyncjob_get_stats(&stats_);
  }
  // Every job the threads made was freed with them, and nothing was left.
  void ExpectAllReclaimed() {
    asyncjob_stats stats{};
    ASSERT_EQ(asyncjob_get_stats(&stats), 1);
    EXPECT_EQ(stats.jobs_created - stats_.jobs_created, stats.jobs_freed - stats_.jobs_freed);
    EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_);
    if (asyncjob_test::MappingCountsAreExact()) {
      EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(mappings_));
    }
  }
  std::size_t mappings_ = 0;
  std::size_t fds_ = 0;
  asyncjob_stats stats_{};
};

// In-use count of the exiting thread's pool, read by the thread's last
// cleanup handler (after the job was given back).
std::atomic<long> in_use_at_exit{-1};

void RecordInUse(void*) {
  asyncjob_pool_stats stats{};
  in_use_at_exit = asyncjob_get_pool_stats(&stats) == 1 ? static_cast<long>(stats.in_use) : -2;
}

struct ExitPlan {
  bool pause_first = false;  // pause once, be resumed, then exit
  bool cancel = false;       // block in read() until pthread_cancel()
  int pipe_read = -1;
  std::atomic<bool> blocking{false};
};

int ExitInsideJob(void* argument) {
  ExitPlan* plan = *static_cast<ExitPlan**>(argument);
  Noisy job_local("job-local");
  pthread_cleanup_push(&RecordHandler, const_cast<char*>("job-cleanup"));
  if (plan->pause_first) ASYNC_pause_job();
  if (plan->cancel) {
    char byte;
    plan->blocking = true;
    for (;;) {
      if (read(plan->pipe_read, &byte, 1) < 0) break;  // never returns: cancelled
    }
  } else {
    EndThisThread(42);
  }
  pthread_cleanup_pop(0);
  Record("job-returned");
  return 0;
}

void* ThreadWithJob(void* argument) {
  auto* plan = static_cast<ExitPlan*>(argument);
  Noisy thread_local_object("thread-local");
  pthread_cleanup_push(&RecordInUse, nullptr);
  pthread_cleanup_push(&RecordHandler, const_cast<char*>("thread-cleanup"));
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int status = ASYNC_start_job(&job, nullptr, &ret, &ExitInsideJob, &plan, sizeof plan);
  if (plan->pause_first) {
    EXPECT_EQ(status, ASYNC_PAUSE);
    ASYNC_start_job(&job, nullptr, &ret, &ExitInsideJob, &plan, sizeof plan);
  }
  Record("start-job-returned");
  pthread_cleanup_pop(0);
  pthread_cleanup_pop(0);
  return nullptr;
}

const std::vector<std::string> kExitOrder = {"job-cleanup", "~job-local", "thread-cleanup",
                                             "~thread-local"};

TEST_F(ThreadExitInJob, PthreadExitEndsTheThreadWithItsValue) {
  ExitPlan plan;
  testing::internal::CaptureStderr();
  void* value = Join(Spawn(&ThreadWithJob, &plan));
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(value, ExitValue(42));
  EXPECT_EQ(TakeEvents(), kExitOrder);
  EXPECT_EQ(in_use_at_exit.load(), 0);
  ExpectAllReclaimed();
}

TEST_F(ThreadExitInJob, PthreadExitAfterAResume) {
  ExitPlan plan;
  plan.pause_first = true;
  void* value = Join(Spawn(&ThreadWithJob, &plan));
  EXPECT_EQ(value, ExitValue(42));
  EXPECT_EQ(TakeEvents(), kExitOrder);
  EXPECT_EQ(in_use_at_exit.load(), 0);
  ExpectAllReclaimed();
}

TEST_F(ThreadExitInJob, PthreadCancelWhileBlockedInRead) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  fds_ += 2;
  ExitPlan plan;
  plan.cancel = true;
  plan.pipe_read = pipe_fds[0];
  pthread_t thread = Spawn(&ThreadWithJob, &plan);
  while (!plan.blocking) usleep(1000);
  // Deferred cancellation acts in read(), whether it is blocked yet or not.
  ASSERT_EQ(pthread_cancel(thread), 0);
  EXPECT_EQ(Join(thread), PTHREAD_CANCELED);
  EXPECT_EQ(TakeEvents(), kExitOrder);
  EXPECT_EQ(in_use_at_exit.load(), 0);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  fds_ -= 2;
  ExpectAllReclaimed();
}

// thread -> job A -> job B, and B calls pthread_exit().
int ExitInInnerJob(void*) {
  Noisy inner("inner");
  EndThisThread(7);
}

int StartInnerJob(void*) {
  Noisy outer("outer");
  pthread_cleanup_push(&RecordHandler, const_cast<char*>("outer-cleanup"));
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASYNC_start_job(&job, nullptr, &ret, &ExitInInnerJob, nullptr, 0);
  Record("outer-continued");
  pthread_cleanup_pop(0);
  return 0;
}

void* ThreadWithNestedJobs(void*) {
  Noisy thread_local_object("thread-local");
  pthread_cleanup_push(&RecordInUse, nullptr);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASYNC_start_job(&job, nullptr, &ret, &StartInnerJob, nullptr, 0);
  Record("start-job-returned");
  pthread_cleanup_pop(0);
  return nullptr;
}

TEST_F(ThreadExitInJob, NestedJobsUnwindInnerThenOuterThenTheThread) {
  void* value = Join(Spawn(&ThreadWithNestedJobs, nullptr));
  EXPECT_EQ(value, ExitValue(7));
  EXPECT_EQ(TakeEvents(),
            (std::vector<std::string>{"~inner", "outer-cleanup", "~outer", "~thread-local"}));
  EXPECT_EQ(in_use_at_exit.load(), 0);
  ExpectAllReclaimed();
}

// A thread that exits inside one job while another of its jobs is paused:
// the paused one becomes an orphan, the other goes back to the pool.
struct PausedElsewhere {
  ASYNC_JOB* paused = nullptr;
};

void* ExitWithAnotherJobPaused(void* argument) {
  auto* state = static_cast<PausedElsewhere*>(argument);
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&state->paused, nullptr, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
  pthread_cleanup_push(&RecordInUse, nullptr);
  ASYNC_JOB* job = nullptr;
  ASYNC_start_job(&job, nullptr, &ret, &ExitInInnerJob, nullptr, 0);
  pthread_cleanup_pop(0);
  return nullptr;
}

TEST_F(ThreadExitInJob, AnotherJobOfTheThreadIsPaused) {
  PausedElsewhere state;
  EXPECT_EQ(Join(Spawn(&ExitWithAnotherJobPaused, &state)), ExitValue(7));
  EXPECT_EQ(TakeEvents(), (std::vector<std::string>{"~inner"}));
  EXPECT_EQ(in_use_at_exit.load(), 1) << "the paused job, not the exited one";
  ExpectRefused(state.paused);
}

// Resumed from a pool cleaned up meanwhile: the job is entered without the
// return-free switch, so the exit goes back through the resuming call.
void* ExitAfterCleanup(void*) {
  Noisy thread_local_object("thread-local");
  ExitPlan plan;
  plan.pause_first = true;
  ExitPlan* argument = &plan;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &ExitInsideJob, &argument, sizeof argument),
            ASYNC_PAUSE);
  ASYNC_cleanup_thread();
  EXPECT_EQ(PopError().reason(), ASYNCJOB_R_JOBS_OUTSTANDING);
  ASYNC_start_job(&job, nullptr, &ret, &ExitInsideJob, &argument, sizeof argument);
  Record("start-job-returned");
  return nullptr;
}

TEST_F(ThreadExitInJob, ResumedFromAClosingPool) {
  EXPECT_EQ(Join(Spawn(&ExitAfterCleanup, nullptr)), ExitValue(42));
  EXPECT_EQ(TakeEvents(), (std::vector<std::string>{"job-cleanup", "~job-local", "~thread-local"}));
  ExpectAllReclaimed();
}

// The job's wait context: its fds' cleanup routines run, and it is free for
// another job.
int closed_fds = 0;
void CloseFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) {
  close(fd);
  ++closed_fds;
}
const int kKey = 0;

int SetFdThenExit(void*) {
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &kKey, eventfd(0, EFD_CLOEXEC), nullptr, &CloseFd);
  ASYNC_pause_job();
  EndThisThread(0);
}

void* ThreadWithWaitContext(void* ctx) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  auto* wait = static_cast<ASYNC_WAIT_CTX*>(ctx);
  EXPECT_EQ(ASYNC_start_job(&job, wait, &ret, &SetFdThenExit, nullptr, 0), ASYNC_PAUSE);
  ASYNC_start_job(&job, wait, &ret, &SetFdThenExit, nullptr, 0);
  return ctx;
}

TEST_F(ThreadExitInJob, TheWaitContextIsReleased) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  closed_fds = 0;
  EXPECT_EQ(Join(Spawn(&ThreadWithWaitContext, ctx)), ExitValue(0));
  EXPECT_EQ(closed_fds, 1);
  size_t count = 1;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &count), 1);
  EXPECT_EQ(count, 0u);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0), ASYNC_FINISH);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
  ASYNC_cleanup_thread();
  ExpectAllReclaimed();
}

// The same from C, whose pthread_cleanup_push() (without -fexceptions)
// works by setjmp and the C library's own unwinding, not by destructors.
TEST_F(ThreadExitInJob, FromCWithSetjmpCleanupHandlers) {
  char log[256] = {};
  void* value = nullptr;
  ASSERT_EQ(asyncjob_test_c_exit_in_job(log, sizeof log, &value), 0);
  EXPECT_EQ(value, ExitValue(99));
  EXPECT_STREQ(log, "inner-job thread in-use=0 ");
  ExpectAllReclaimed();
}

}  // namespace
