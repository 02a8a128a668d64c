// introspect_cpp_test: <asyncjob/introspect.hpp> - the C++ face of the
// introspection functions: counters, copied job lists, visitors that stop
// or throw, backtraces and dumps, and errors as asyncjob::Error.
#include "asyncjob/introspect.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/errors.h"

extern "C" {
__attribute__((noinline)) int introspect_cpp_pauses(void*) {
  ASYNC_pause_job();
  asm volatile("" ::: "memory");  // no tail call: keep this frame
  return 3;
}
// Asks for its own backtrace while running: the reason of the Error.
int introspect_cpp_backtrace_of_self(void*) {
  try {
    asyncjob::introspect::backtrace(ASYNC_get_current_job());
  } catch (const asyncjob::Error& error) {
    return error.reason();
  }
  return 0;
}
}

namespace {

namespace ai = asyncjob::introspect;

ASYNC_JOB* StartPaused() {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &introspect_cpp_pauses, nullptr, 0), ASYNC_PAUSE);
  return job;
}

void Finish(ASYNC_JOB* job) {
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 3);
}

class IntrospectCpp : public ::testing::Test {
 protected:
  void TearDown() override { ASYNC_cleanup_thread(); }
};

TEST_F(IntrospectCpp, StatsCountThePausedJobsOfTheScope) {
  const asyncjob_stats_ex before = ai::stats();
  ASYNC_JOB* first = StartPaused();
  ASYNC_JOB* second = StartPaused();
  const asyncjob_stats_ex now = ai::stats(ai::Scope::kThread);
  EXPECT_EQ(now.size, sizeof(asyncjob_stats_ex));
  EXPECT_EQ(now.jobs_paused, 2u);
  EXPECT_EQ(now.pauses - before.pauses, 2u);
  EXPECT_GE(ai::stats(ai::Scope::kProcess).jobs_paused, 2u);
  Finish(first);
  Finish(second);
  EXPECT_EQ(ai::stats().jobs_paused, 0u);
}

TEST_F(IntrospectCpp, JobsAreCopiedWithTheirFunctionAndState) {
  ASYNC_JOB* job = StartPaused();
  const std::vector<ai::JobInfo> all = ai::jobs();
  auto found = std::find_if(all.begin(), all.end(),
                            [job](const ai::JobInfo& info) { return info.job == job; });
  ASSERT_NE(found, all.end());
  EXPECT_EQ(found->state, ASYNCJOB_JOB_PAUSED);
  EXPECT_EQ(found->state_name, "paused");
  EXPECT_EQ(found->function, reinterpret_cast<void*>(&introspect_cpp_pauses));
  EXPECT_GT(found->stack_size, 0u);
  // The copy outlives the walk: starting a job while holding it is fine.
  ASYNC_JOB* other = StartPaused();
  EXPECT_EQ(ai::jobs().size(), all.size() + 1);
  Finish(other);
  Finish(job);
}

TEST_F(IntrospectCpp, JobsOfTheProcessIncludeAnotherThreadsPausedJob) {
  ASYNC_JOB* theirs = nullptr;
  unsigned long their_id = 0;
  std::thread other([&] {
    theirs = StartPaused();
    their_id = 0;
    for (const ai::JobInfo& info : ai::jobs()) {
      if (info.job == theirs) their_id = info.thread_id;
    }
    // Seen from this thread while it still exists; then finished here.
    const std::vector<ai::JobInfo> everyone = ai::jobs(ai::Scope::kProcess);
    EXPECT_TRUE(std::any_of(everyone.begin(), everyone.end(),
                            [&](const ai::JobInfo& info) { return info.job == theirs; }));
    Finish(theirs);
    ASYNC_cleanup_thread();
  });
  other.join();
  EXPECT_NE(their_id, 0u);
}

TEST_F(IntrospectCpp, AVisitorReturningFalseStopsTheWalk) {
  ASYNC_JOB* first = StartPaused();
  ASYNC_JOB* second = StartPaused();
  int calls = 0;
  const int visited = ai::for_each_job([&calls](const ai::JobInfo&) {
    ++calls;
    return false;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(visited, 1);
  Finish(first);
  Finish(second);
}

TEST_F(IntrospectCpp, AnExceptionFromTheVisitorEndsTheWalkAndPropagates) {
  ASYNC_JOB* first = StartPaused();
  ASYNC_JOB* second = StartPaused();
  int calls = 0;
  EXPECT_THROW(ai::for_each_job([&calls](const ai::JobInfo&) {
                 ++calls;
                 throw std::runtime_error("visitor failed");
               }),
               std::runtime_error);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(asyncjob_peek_last_error(nullptr), 0u) << "no error queued by a visitor's exception";
  // The library is unaffected: walks and jobs go on.
  EXPECT_EQ(ai::for_each_job([](const ai::JobInfo&) {}), static_cast<int>(ai::jobs().size()));
  Finish(first);
  Finish(second);
}

TEST_F(IntrospectCpp, BacktraceStartsWhereTheJobPaused) {
  ASYNC_JOB* job = StartPaused();
  const std::vector<void*> frames = ai::backtrace(job);
  ASSERT_FALSE(frames.empty());
  // The innermost frame is inside introspect_cpp_pauses (a return address
  // after its call of ASYNC_pause_job).
  const auto start = reinterpret_cast<std::uintptr_t>(&introspect_cpp_pauses);
  const auto first = reinterpret_cast<std::uintptr_t>(frames[0]);
  EXPECT_GT(first, start);
  EXPECT_LT(first, start + 256);
  EXPECT_EQ(ai::backtrace(job, 1).size(), 1u);
  Finish(job);
}

TEST_F(IntrospectCpp, BacktraceErrorsAreThrownAsTheLibrarysError) {
  ASYNC_JOB* job = StartPaused();
  try {
    ai::backtrace(nullptr);
    FAIL() << "no exception";
  } catch (const asyncjob::Error& error) {
    EXPECT_EQ(error.reason(), ASYNCJOB_R_PASSED_NULL_PARAMETER);
    EXPECT_NE(std::string(error.what()).find("asyncjob::introspect::backtrace"), std::string::npos);
  }
  EXPECT_THROW(ai::backtrace(job, 0), asyncjob::Error);
  EXPECT_EQ(asyncjob_peek_last_error(nullptr), 0u) << "the error was taken off the queue";
  Finish(job);
  // A running job has no saved frames to walk.
  ASYNC_JOB* running = nullptr;
  int reason = 0;
  ASSERT_EQ(
      ASYNC_start_job(&running, nullptr, &reason, &introspect_cpp_backtrace_of_self, nullptr, 0),
      ASYNC_FINISH);
  EXPECT_EQ(reason, ASYNCJOB_R_JOB_NOT_PAUSED);
}

TEST_F(IntrospectCpp, DumpWritesEveryJobAndANullFileThrows) {
  ASYNC_JOB* job = StartPaused();
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  ai::dump(out);
  std::rewind(out);
  std::string text;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, out)) > 0;) text.append(buffer, n);
  std::fclose(out);
  char address[32];
  std::snprintf(address, sizeof address, "%p", static_cast<void*>(job));
  EXPECT_NE(text.find(address), std::string::npos) << text;
  EXPECT_THROW(ai::dump(nullptr), asyncjob::Error);
  Finish(job);
}

}  // namespace
