// introspect_test: <asyncjob/introspect.h> - counters by scope and their
// versioned struct, the jobs of a thread and of the process, the stack
// high-water mark, backtraces of paused jobs, dumps, pause times, and
// argument checks.
#include "asyncjob/introspect.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

using asyncjob_test::PopError;

// Functions the backtrace must name: C linkage and exported from the test
// program (-rdynamic), so that dladdr() knows them; never inlined.
extern "C" {
__attribute__((noinline)) int introspect_pause_here(void) {
  ASYNC_pause_job();
  asm volatile("" ::: "memory");  // no tail call: keep this frame
  return 7;
}
__attribute__((noinline)) int introspect_level_one(void* /*unused*/) {
  const int value = introspect_pause_here();
  asm volatile("" ::: "memory");
  return value + 1;
}
// Uses about `*depth` KiB of stack, then pauses. Not instrumented by ASan,
// whose use-after-return detection would move its buffers to a heap "fake
// stack" and leave the job's stack untouched.
__attribute__((noinline, no_sanitize("address"))) int introspect_deep(int kib) {
  volatile char buffer[1024];
  buffer[0] = static_cast<char>(kib);
  int result = 0;
  if (kib > 1) {
    result = introspect_deep(kib - 1);
  } else {
    ASYNC_pause_job();
  }
  // The buffer stays in use after the call: no compiler may turn the
  // recursion into a loop (Clang's accumulator recursion elimination).
  asm volatile("" : : "r"(buffer) : "memory");
  return result + buffer[0];
}
int introspect_deep_job(void* argument) { return introspect_deep(*static_cast<int*>(argument)); }
int introspect_just_pause(void*) {
  ASYNC_pause_job();
  return 0;
}
}

namespace {

std::string SymbolOf(const void* address) {
  Dl_info info{};
  if (address == nullptr || dladdr(address, &info) == 0 || info.dli_sname == nullptr) return "";
  return info.dli_sname;
}

// Starts a job of `function` that pauses; returns it.
ASYNC_JOB* StartPaused(int (*function)(void*), void* argument = nullptr, size_t size = 0) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, function, argument, size), ASYNC_PAUSE);
  return job;
}

void Finish(ASYNC_JOB* job) {
  int ret = 0;
  while (ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0) == ASYNC_PAUSE) {
  }
}

asyncjob_stats_ex Stats(int scope) {
  asyncjob_stats_ex stats;
  std::memset(&stats, 0xff, sizeof stats);
  stats.size = sizeof stats;
  EXPECT_EQ(asyncjob_get_stats_ex(&stats, scope), 1);
  return stats;
}

std::vector<asyncjob_job_info> JobsOfThisThread() {
  std::vector<asyncjob_job_info> jobs;
  asyncjob_for_each_job(
      [](const asyncjob_job_info* info, void* arg) {
        static_cast<std::vector<asyncjob_job_info>*>(arg)->push_back(*info);
        return 1;
      },
      &jobs);
  return jobs;
}

const asyncjob_job_info* Find(const std::vector<asyncjob_job_info>& jobs, ASYNC_JOB* job) {
  for (const auto& info : jobs)
    if (info.job == job) return &info;
  return nullptr;
}

// A thread that keeps `count` jobs paused until released.
class PausingThread {
 public:
  explicit PausingThread(int count) {
    thread_ = std::thread([this, count] {
      std::vector<ASYNC_JOB*> jobs;
      for (int i = 0; i < count; ++i) jobs.push_back(StartPaused(&introspect_just_pause));
      std::unique_lock lock(mutex_);
      tid_ = static_cast<unsigned long>(syscall(SYS_gettid));
      ready_ = true;
      changed_.notify_all();
      changed_.wait(lock, [this] { return release_; });
      lock.unlock();
      for (ASYNC_JOB* job : jobs) Finish(job);
      ASYNC_cleanup_thread();
    });
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return ready_; });
  }
  ~PausingThread() {
    {
      std::lock_guard lock(mutex_);
      release_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  unsigned long tid() const { return tid_; }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool ready_ = false;
  bool release_ = false;
  unsigned long tid_ = 0;
  std::thread thread_;
};

TEST(IntrospectStats, RefusesBadArguments) {
  EXPECT_EQ(asyncjob_get_stats_ex(nullptr, ASYNCJOB_SCOPE_THREAD), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  asyncjob_stats_ex stats{};
  stats.size = 8;  // below the first version
  EXPECT_EQ(asyncjob_get_stats_ex(&stats, ASYNCJOB_SCOPE_THREAD), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_INVALID_ARGUMENT));
  EXPECT_EQ(stats.jobs_created, 0u);
  stats.size = sizeof stats;
  EXPECT_EQ(asyncjob_get_stats_ex(&stats, 7), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_INVALID_ARGUMENT));
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

TEST(IntrospectStats, FillsOnlyWhatTheCallerHasRoomFor) {
  struct {
    asyncjob_stats_ex stats;
    unsigned long long after;
  } buffer;
  std::memset(&buffer, 0xab, sizeof buffer);
  buffer.stats.size = sizeof buffer.stats;
  ASSERT_EQ(asyncjob_get_stats_ex(&buffer.stats, ASYNCJOB_SCOPE_PROCESS), 1);
  EXPECT_EQ(buffer.after, 0xababababababababull);
  EXPECT_EQ(buffer.stats.size, sizeof buffer.stats);
  EXPECT_EQ(buffer.stats.stack_size, asyncjob_get_stack_size());
}

TEST(IntrospectStats, ThreadAndProcessScopes) {
  const asyncjob_stats_ex before = Stats(ASYNCJOB_SCOPE_THREAD);
  ASYNC_JOB* a = StartPaused(&introspect_just_pause);
  ASYNC_JOB* b = StartPaused(&introspect_just_pause);
  ASYNC_JOB* c = StartPaused(&introspect_just_pause);
  {
    PausingThread other(2);
    const asyncjob_stats_ex mine = Stats(ASYNCJOB_SCOPE_THREAD);
    const asyncjob_stats_ex all = Stats(ASYNCJOB_SCOPE_PROCESS);
    EXPECT_EQ(mine.jobs_paused, 3u);
    EXPECT_EQ(mine.starts - before.starts, 3u);
    EXPECT_EQ(mine.pauses - before.pauses, 3u);
    EXPECT_GE(all.jobs_paused, 5u);
    EXPECT_GE(all.jobs_live, mine.jobs_live + 2);
    EXPECT_EQ(mine.stacks_guarded + mine.stacks_slab + mine.stacks_custom, mine.jobs_live);
    EXPECT_GE(mine.stack_bytes_reserved, mine.jobs_live * asyncjob_get_stack_size());
    EXPECT_GT(mine.stack_bytes_resident, 0u);
    EXPECT_LE(mine.stack_bytes_resident, mine.stack_bytes_reserved);
  }
  Finish(a);
  Finish(b);
  Finish(c);
  const asyncjob_stats_ex after = Stats(ASYNCJOB_SCOPE_THREAD);
  EXPECT_EQ(after.jobs_paused, 0u);
  EXPECT_EQ(after.finishes - before.finishes, 3u);
  EXPECT_EQ(after.resumes - before.resumes, 3u);
}

TEST(IntrospectJobs, ThisThreadsJobs) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, ctx, &ret, &introspect_level_one, nullptr, 0), ASYNC_PAUSE);
  int key = 0;
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, 0, nullptr, nullptr), 1);

  const auto jobs = JobsOfThisThread();
  const asyncjob_job_info* info = Find(jobs, job);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->state, ASYNCJOB_JOB_PAUSED);
  EXPECT_STREQ(asyncjob_job_state_name(info->state), "paused");
  EXPECT_EQ(info->function, reinterpret_cast<void*>(&introspect_level_one));
  ASSERT_NE(info->function_name, nullptr);
  EXPECT_STREQ(info->function_name, "introspect_level_one");
  EXPECT_EQ(info->wait_ctx, ctx);
  EXPECT_EQ(info->num_fds, 1u);
  EXPECT_EQ(info->thread_id, static_cast<unsigned long>(syscall(SYS_gettid)));
  EXPECT_EQ(SymbolOf(info->pause_caller), "introspect_pause_here");
  EXPECT_EQ(info->stack_size, asyncjob_get_stack_size());
  EXPECT_GT(info->stack_high_water, 0u);
  EXPECT_LE(info->stack_high_water, info->stack_size);
  Finish(job);
  ASYNC_WAIT_CTX_free(ctx);
  for (const auto& other : JobsOfThisThread()) EXPECT_NE(other.state, ASYNCJOB_JOB_PAUSED);
}

TEST(IntrospectJobs, EveryThreadsJobsFromAnyThread) {
  PausingThread first(2);
  PausingThread second(3);
  struct Seen {
    unsigned long first_tid, second_tid;
    int first = 0, second = 0;
  } seen{first.tid(), second.tid()};
  const int calls = asyncjob_for_each_job_in_process(
      [](const asyncjob_job_info* info, void* arg) {
        auto* s = static_cast<Seen*>(arg);
        if (info->state != ASYNCJOB_JOB_PAUSED) return 1;
        EXPECT_STREQ(info->function_name, "introspect_just_pause");
        if (info->thread_id == s->first_tid) ++s->first;
        if (info->thread_id == s->second_tid) ++s->second;
        return 1;
      },
      &seen);
  EXPECT_GE(calls, 5);
  EXPECT_EQ(seen.first, 2);
  EXPECT_EQ(seen.second, 3);
  // A visitor returning 0 stops the walk.
  EXPECT_EQ(
      asyncjob_for_each_job_in_process([](const asyncjob_job_info*, void*) { return 0; }, nullptr),
      1);
}

TEST(IntrospectJobs, HighWaterMarkFollowsTheDeepestUse) {
  // On a thread of its own: fresh stacks, whose pages no earlier job touched.
  std::thread([] {
    int shallow_kib = 1;
    int deep_kib = 40;
    ASYNC_JOB* shallow = StartPaused(&introspect_deep_job, &shallow_kib, sizeof shallow_kib);
    ASYNC_JOB* deep = StartPaused(&introspect_deep_job, &deep_kib, sizeof deep_kib);
    const auto jobs = JobsOfThisThread();
    const asyncjob_job_info* s = Find(jobs, shallow);
    const asyncjob_job_info* d = Find(jobs, deep);
    ASSERT_NE(s, nullptr);
    ASSERT_NE(d, nullptr);
    if (s->stack_kind != ASYNCJOB_STACK_CUSTOM) {
      EXPECT_GE(d->stack_high_water, 40u * 1024);
      EXPECT_LT(s->stack_high_water, 16u * 1024);
      EXPECT_GE(Stats(ASYNCJOB_SCOPE_THREAD).deepest_stack_bytes, d->stack_high_water);
    }
    Finish(shallow);
    Finish(deep);
    ASYNC_cleanup_thread();
  }).join();
}

TEST(IntrospectBacktrace, NamesThePausingFunctionAndItsCaller) {
  ASYNC_JOB* job = StartPaused(&introspect_level_one);
  void* frames[32];
  const int count = asyncjob_job_backtrace(job, frames, 32);
  ASSERT_GE(count, 1);
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.push_back(SymbolOf(frames[i]));
  EXPECT_EQ(names[0], "introspect_pause_here");
  // The caller, through the frame-pointer chain (this file keeps frame
  // pointers), right after it.
  ASSERT_GE(count, 2);
  EXPECT_EQ(names[1], "introspect_level_one");

  char* text = nullptr;
  size_t length = 0;
  FILE* out = open_memstream(&text, &length);
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(asyncjob_print_backtrace(job, out), count);
  std::fclose(out);
  EXPECT_NE(std::string(text).find("#0  "), std::string::npos) << text;
  EXPECT_NE(std::string(text).find("introspect_pause_here"), std::string::npos) << text;
  std::free(text);
  Finish(job);
}

TEST(IntrospectBacktrace, RefusesBadArguments) {
  void* frames[4];
  EXPECT_EQ(asyncjob_job_backtrace(nullptr, frames, 4), -1);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  ASYNC_JOB* job = StartPaused(&introspect_just_pause);
  EXPECT_EQ(asyncjob_job_backtrace(job, nullptr, 4), -1);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(asyncjob_job_backtrace(job, frames, 0), -1);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_INVALID_ARGUMENT));
  EXPECT_EQ(asyncjob_print_backtrace(job, nullptr), -1);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  std::thread([job] {
    void* f[4];
    EXPECT_EQ(asyncjob_job_backtrace(job, f, 4), -1);
    EXPECT_EQ(PopError().reason(), ASYNCJOB_R_WRONG_THREAD);
  }).join();
  Finish(job);
  // Running: the job asks for its own backtrace.
  ASYNC_JOB* running = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(
                &running, nullptr, &ret,
                [](void*) {
                  void* f[4];
                  const int count = asyncjob_job_backtrace(ASYNC_get_current_job(), f, 4);
                  const bool refused = PopError().reason() == ASYNCJOB_R_JOB_NOT_PAUSED;
                  return count == -1 && refused ? 1 : 0;
                },
                nullptr, 0),
            ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  EXPECT_EQ(asyncjob_for_each_job(nullptr, nullptr), -1);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(asyncjob_for_each_job_in_process(nullptr, nullptr), -1);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(asyncjob_dump(nullptr), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(asyncjob_test::ErrorQueueEmpty());
}

TEST(IntrospectDump, ListsCountersAndEveryJob) {
  ASYNC_JOB* job = StartPaused(&introspect_level_one);
  char* text = nullptr;
  size_t length = 0;
  FILE* out = open_memstream(&text, &length);
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(asyncjob_dump(out), 1);
  std::fclose(out);
  const std::string dump(text);
  std::free(text);
  EXPECT_NE(dump.find("asyncjob dump, pid " + std::to_string(getpid())), std::string::npos);
  EXPECT_NE(dump.find("asyncjob stats: "), std::string::npos) << dump;
  EXPECT_NE(dump.find("deepest job used "), std::string::npos) << dump;
  char address[32];
  std::snprintf(address, sizeof address, "job %p paused", static_cast<void*>(job));
  EXPECT_NE(dump.find(address), std::string::npos) << dump;
  EXPECT_NE(dump.find("function introspect_level_one"), std::string::npos) << dump;
  EXPECT_NE(dump.find("paused in introspect_pause_here"), std::string::npos) << dump;
  Finish(job);
}

TEST(IntrospectPauseTimes, OnlyWhenEnabled) {
  const int initial = asyncjob_set_pause_timestamps(0);
  ASYNC_JOB* untimed = StartPaused(&introspect_just_pause);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  const asyncjob_job_info* info = nullptr;
  auto jobs = JobsOfThisThread();
  info = Find(jobs, untimed);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->paused_for_ns, 0u);

  EXPECT_EQ(asyncjob_set_pause_timestamps(1), 0);
  ASYNC_JOB* timed = StartPaused(&introspect_just_pause);
  // The coarse clock advances every few milliseconds: after this sleep it
  // has moved on (the exact amount is not checked).
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  jobs = JobsOfThisThread();
  info = Find(jobs, timed);
  ASSERT_NE(info, nullptr);
  EXPECT_GT(info->paused_for_ns, 0u);
  EXPECT_EQ(asyncjob_set_pause_timestamps(initial), 1);
  Finish(untimed);
  Finish(timed);
}

}  // namespace

// ----- Peak paused and wake-ups (the struct's second version) -----

namespace {

void NoopHook(void*) {}

int PauseWithAHook(void*) {
  asyncjob_add_cancel_hook(&NoopHook, nullptr);
  ASYNC_pause_job();
  return 0;
}

ASYNC_JOB* StartPausedOn(ASYNC_WAIT_CTX* ctx, int (*function)(void*)) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, ctx, &ret, function, nullptr, 0), ASYNC_PAUSE);
  return job;
}

// Runs body on a thread of its own (its counters start at zero) and cleans
// the thread's pool up after it.
template <typename Body>
void OnAFreshThread(Body body) {
  std::thread thread([&body] {
    body();
    ASYNC_cleanup_thread();
  });
  thread.join();
}

}  // namespace

TEST(IntrospectStats, TheFirstVersionsSizeIsFilledAndNoMore) {
  struct {
    asyncjob_stats_ex stats;
    unsigned long long after;
  } buffer;
  std::memset(&buffer, 0xab, sizeof buffer);
  buffer.stats.size = offsetof(asyncjob_stats_ex, peak_paused);
  ASSERT_EQ(asyncjob_get_stats_ex(&buffer.stats, ASYNCJOB_SCOPE_THREAD), 1);
  EXPECT_EQ(buffer.stats.stack_size, asyncjob_get_stack_size());
  EXPECT_EQ(buffer.stats.peak_paused, 0xababababababababull) << "beyond the caller's size";
  EXPECT_EQ(buffer.stats.wakeups_by_fd, 0xababababababababull);
}

TEST(IntrospectStats, PeakPausedIsTheMostPausedAtOnce) {
  OnAFreshThread([] {
    ASYNC_JOB* a = StartPaused(&introspect_just_pause);
    ASYNC_JOB* b = StartPaused(&introspect_just_pause);
    ASYNC_JOB* c = StartPaused(&introspect_just_pause);
    EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).peak_paused, 3u);
    Finish(a);
    ASYNC_JOB* d = StartPaused(&introspect_just_pause);
    EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).peak_paused, 3u) << "three at once again, not four";
    ASYNC_JOB* e = StartPaused(&introspect_just_pause);
    asyncjob_stats_ex stats = Stats(ASYNCJOB_SCOPE_THREAD);
    EXPECT_EQ(stats.peak_paused, 4u);
    EXPECT_EQ(stats.jobs_paused, 4u);
    for (ASYNC_JOB* job : {b, c, d, e}) Finish(job);
    stats = Stats(ASYNCJOB_SCOPE_THREAD);
    EXPECT_EQ(stats.peak_paused, 4u) << "a peak stays";
    EXPECT_EQ(stats.jobs_paused, 0u);
  });
  EXPECT_GE(Stats(ASYNCJOB_SCOPE_PROCESS).peak_paused, 4u)
      << "the process keeps the highest peak of its threads";
}

TEST(IntrospectStats, CancelledAndAbandonedJobsAreNoLongerPaused) {
  OnAFreshThread([] {
    // Cancelled: one paused job less.
    ASYNC_JOB* a = StartPaused(&introspect_just_pause);
    ASYNC_JOB* b = StartPaused(&introspect_just_pause);
    ASSERT_EQ(asyncjob_cancel_job(&b), 1);
    ASYNC_JOB* c = StartPaused(&introspect_just_pause);
    EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).peak_paused, 2u);
    // Orphaned by freeing their wait contexts: kept as a tombstone (no
    // cancel hook) or unwound (a hook): either way no longer paused.
    ASYNC_WAIT_CTX* kept = ASYNC_WAIT_CTX_new();
    ASYNC_WAIT_CTX* unwound = ASYNC_WAIT_CTX_new();
    ASYNC_JOB* tombstone = StartPausedOn(kept, &introspect_just_pause);
    ASYNC_JOB* hooked = StartPausedOn(unwound, &PauseWithAHook);
    ASSERT_NE(tombstone, nullptr);
    ASSERT_NE(hooked, nullptr);
    EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).peak_paused, 4u);
    ASYNC_WAIT_CTX_free(kept);
    ASYNC_WAIT_CTX_free(unwound);
    asyncjob_stats_ex stats = Stats(ASYNCJOB_SCOPE_THREAD);
    EXPECT_EQ(stats.orphans, 2u);
    EXPECT_EQ(stats.jobs_paused, 2u);
    ASYNC_JOB* d = StartPaused(&introspect_just_pause);
    ASYNC_JOB* e = StartPaused(&introspect_just_pause);
    EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).peak_paused, 4u) << "a, c, d, e: four at once";
    ASYNC_JOB* f = StartPaused(&introspect_just_pause);
    EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).peak_paused, 5u);
    for (ASYNC_JOB* job : {a, c, d, e, f}) Finish(job);
    EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).jobs_paused, 0u);
  });
}

TEST(IntrospectStats, EnginesCountTheirWakeUps) {
  const asyncjob_stats_ex before = Stats(ASYNCJOB_SCOPE_PROCESS);
  EXPECT_EQ(asyncjob_count_wakeup(ASYNCJOB_WAKEUP_BY_CALLBACK), 1);
  EXPECT_EQ(asyncjob_count_wakeup(ASYNCJOB_WAKEUP_BY_FD), 1);
  std::thread other([] { EXPECT_EQ(asyncjob_count_wakeup(ASYNCJOB_WAKEUP_BY_FD), 1); });
  other.join();
  const asyncjob_stats_ex after = Stats(ASYNCJOB_SCOPE_THREAD);
  EXPECT_EQ(after.wakeups_by_callback - before.wakeups_by_callback, 1u);
  EXPECT_EQ(after.wakeups_by_fd - before.wakeups_by_fd, 2u) << "process-wide, in both scopes";
  EXPECT_EQ(asyncjob_count_wakeup(2), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_INVALID_ARGUMENT));
  EXPECT_EQ(asyncjob_count_wakeup(-1), 0);
  EXPECT_EQ(PopError().reason(), ASYNCJOB_ERR_GET_REASON(ASYNCJOB_R_PASSED_INVALID_ARGUMENT));
  EXPECT_EQ(Stats(ASYNCJOB_SCOPE_PROCESS).wakeups_by_fd, after.wakeups_by_fd)
      << "refused: not counted";
}

TEST(IntrospectStats, ALiveProcessHasCaughtNoOverflow) {
  // Every overflow stops the process: the count only shows in its core
  // (introspect.gdb_overflow).
  EXPECT_EQ(Stats(ASYNCJOB_SCOPE_PROCESS).stack_overflows, 0u);
  EXPECT_EQ(Stats(ASYNCJOB_SCOPE_THREAD).stack_overflows, 0u);
}
