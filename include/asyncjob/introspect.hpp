// asyncjob/introspect.hpp - <asyncjob/introspect.h> for C++: the counters,
// the jobs of a thread or of the process, backtraces of paused jobs and
// dumps, with values instead of visitor callbacks and asyncjob::Error
// instead of return codes.
//
// How to use it:
//
//   namespace ai = asyncjob::introspect;
//   asyncjob_stats_ex counts = ai::stats(ai::Scope::kProcess);
//   for (const ai::JobInfo& job : ai::jobs(ai::Scope::kProcess)) {
//     std::printf("%p %s in %s\n", static_cast<void*>(job.job), job.state_name.c_str(),
//                 job.function_name.c_str());
//   }
//   for (void* frame : ai::backtrace(paused_job)) ...   // this thread's job
//   ai::dump(stderr);
//
// jobs() copies what it reports while the library holds its locks, so the
// caller may do anything with the result, including starting jobs. With
// for_each_job() the visitor runs under those locks: it must not start,
// free or clean up jobs or pools (see asyncjob_for_each_job(3)); an
// exception it throws ends the walk and propagates to the caller.
#ifndef ASYNCJOB_INTROSPECT_HPP
#define ASYNCJOB_INTROSPECT_HPP

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/introspect.h"

namespace asyncjob::introspect {

enum class Scope { kThread = ASYNCJOB_SCOPE_THREAD, kProcess = ASYNCJOB_SCOPE_PROCESS };

// asyncjob_get_stats_ex() for the scope; throws Error if it fails.
inline asyncjob_stats_ex stats(Scope scope = Scope::kThread) {
  asyncjob_stats_ex out{};
  out.size = sizeof out;
  if (asyncjob_get_stats_ex(&out, static_cast<int>(scope)) != 1) {
    throw Error::FromQueue("asyncjob::introspect::stats");
  }
  return out;
}

// One job, copied out of asyncjob_job_info.
struct JobInfo {
  ASYNC_JOB* job = nullptr;
  int state = ASYNCJOB_JOB_IDLE;  // ASYNCJOB_JOB_*
  std::string state_name;         // "idle", "running", "paused", ...
  unsigned long thread_id = 0;    // kernel thread id of the pool's thread
  void* function = nullptr;       // what it was last started with
  std::string function_name;      // its symbol, or empty
  ASYNC_WAIT_CTX* wait_ctx = nullptr;
  std::size_t num_fds = 0;
  std::chrono::nanoseconds paused_for{0};  // 0 unless pause timestamps are on
  void* pause_caller = nullptr;
  void* stack_low = nullptr;
  std::size_t stack_size = 0;
  int stack_kind = ASYNCJOB_STACK_GUARDED;  // ASYNCJOB_STACK_*
  std::size_t stack_high_water = 0;         // bytes from the top, 0: unknown

  static JobInfo From(const asyncjob_job_info& info) {
    JobInfo copy;
    copy.job = info.job;
    copy.state = info.state;
    copy.state_name = asyncjob_job_state_name(info.state);
    copy.thread_id = info.thread_id;
    copy.function = info.function;
    if (info.function_name != nullptr) copy.function_name = info.function_name;
    copy.wait_ctx = info.wait_ctx;
    copy.num_fds = info.num_fds;
    copy.paused_for = std::chrono::nanoseconds(info.paused_for_ns);
    copy.pause_caller = info.pause_caller;
    copy.stack_low = info.stack_low;
    copy.stack_size = info.stack_size;
    copy.stack_kind = info.stack_kind;
    copy.stack_high_water = info.stack_high_water;
    return copy;
  }
};

// Calls visit(const JobInfo&) for each job of the scope; a visitor that
// returns bool stops the walk by returning false. Returns the number of
// jobs visited.
template <typename Visitor>
int for_each_job(Visitor&& visit, Scope scope = Scope::kThread) {
  struct Walk {
    Visitor& visit;
    std::exception_ptr failure;
  } walk{visit, nullptr};
  auto trampoline = [](const asyncjob_job_info* info, void* arg) -> int {
    auto* w = static_cast<Walk*>(arg);
    try {
      if constexpr (std::is_same_v<std::invoke_result_t<Visitor&, const JobInfo&>, bool>) {
        return w->visit(JobInfo::From(*info)) ? 1 : 0;
      } else {
        w->visit(JobInfo::From(*info));
        return 1;
      }
    } catch (...) {
      // Never through the library's frames: carried out after the walk.
      w->failure = std::current_exception();
      return 0;
    }
  };
  const int visited = scope == Scope::kProcess ? asyncjob_for_each_job_in_process(trampoline, &walk)
                                               : asyncjob_for_each_job(trampoline, &walk);
  if (walk.failure) std::rethrow_exception(walk.failure);
  if (visited < 0) throw Error::FromQueue("asyncjob::introspect::for_each_job");
  return visited;
}

// Every job of the scope, copied.
inline std::vector<JobInfo> jobs(Scope scope = Scope::kThread) {
  std::vector<JobInfo> all;
  for_each_job([&all](const JobInfo& info) { all.push_back(info); }, scope);
  return all;
}

// The return addresses of a paused job of this thread, innermost first (at
// most max); throws Error for a job that is not paused or not this
// thread's.
inline std::vector<void*> backtrace(ASYNC_JOB* job, int max = 64) {
  if (max < 1) throw Error(0, "asyncjob::introspect::backtrace: max must be at least 1");
  std::vector<void*> frames(static_cast<std::size_t>(max));
  const int count = asyncjob_job_backtrace(job, frames.data(), max);
  if (count < 0) throw Error::FromQueue("asyncjob::introspect::backtrace");
  frames.resize(static_cast<std::size_t>(count));
  return frames;
}

// asyncjob_dump(): the process's counters and every job, to out.
inline void dump(std::FILE* out = stderr) {
  if (asyncjob_dump(out) != 1) throw Error::FromQueue("asyncjob::introspect::dump");
}

}  // namespace asyncjob::introspect

#endif  // ASYNCJOB_INTROSPECT_HPP
