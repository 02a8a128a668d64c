// async_bench.cc - the <openssl/async.h> API under Google Benchmark.
//
// Written once against OpenSSL's API and built twice (bench/CMakeLists.txt):
// bench_async_asyncjob sees asyncjob's <openssl/async.h> and links asyncjob;
// bench_async_libcrypto sees the system's header and links libcrypto. Every
// case therefore makes exactly the same calls in both programs.
//
// Each iteration of a case is one unit of work named in its comment; the
// comparison script (bench/compare.py) divides by the jobs per iteration
// where an iteration covers several jobs.
#include <openssl/async.h>

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <vector>

#include "alloc_counter.h"
#include "bench_support.h"

#if !defined(BENCH_IMPLEMENTATION)
#error "BENCH_IMPLEMENTATION must name the implementation under test"
#endif

namespace {

// ----- Job functions -----

int ReturnOne(void*) { return 1; }

int PauseOnce(void*) {
  ASYNC_pause_job();
  return 1;
}

// Reads its arguments (copied by ASYNC_start_job), so that the copy is used.
int ReadArguments(void* args) {
  const auto* bytes = static_cast<const unsigned char*>(args);
  return bytes[0] + 1;
}

// Pauses until *stop (its argument holds the pointer) is set.
int PauseUntilStopped(void* args) {
  std::atomic<bool>* stop;
  std::memcpy(&stop, args, sizeof stop);
  while (!stop->load(std::memory_order_relaxed)) ASYNC_pause_job();
  return 1;
}

// Raise the inexact flag in each of their segments, or do the same work
// with a division whose result is exact (no flag raised).
int DivideAndPause(void*) {
  benchmark::DoNotOptimize(bench::Divide(1.0, 3.0));
  ASYNC_pause_job();
  benchmark::DoNotOptimize(bench::Divide(1.0, 3.0));
  return 1;
}

int DivideExactlyAndPause(void*) {
  benchmark::DoNotOptimize(bench::Divide(1.0, 2.0));
  ASYNC_pause_job();
  benchmark::DoNotOptimize(bench::Divide(1.0, 2.0));
  return 1;
}

// Heap allocations (on this thread) per iteration of the timed loop, as the
// counter allocs_per_iteration.
class AllocationCounter {
 public:
  AllocationCounter() : start_(bench::AllocationsSoFar()) {}
  void Report(benchmark::State& state) const {
    if (state.iterations() == 0) return;
    state.counters["allocs_per_iteration"] =
        static_cast<double>(bench::AllocationsSoFar() - start_) /
        static_cast<double>(state.iterations());
  }

 private:
  unsigned long start_;
};

#define EXPECT_OR_SKIP(state, condition)                     \
  if (!(condition)) {                                        \
    (state).SkipWithError("unexpected result: " #condition); \
    break;                                                   \
  }

// ----- Cases -----

// start -> finish: a job that returns at once (a pooled job reused).
void BM_StartFinish(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  int ret = 0;
  AllocationCounter allocations;
  for (auto _ : state) {
    ASYNC_JOB* job = nullptr;
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &ReturnOne, nullptr, 0) == ASYNC_FINISH);
  }
  allocations.Report(state);
  benchmark::DoNotOptimize(ret);
  ASYNC_WAIT_CTX_free(ctx);
}

// start -> pause -> resume -> finish: the full cycle of a job that waits once.
void BM_FullCycle(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  int ret = 0;
  AllocationCounter allocations;
  for (auto _ : state) {
    ASYNC_JOB* job = nullptr;
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) == ASYNC_PAUSE);
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) == ASYNC_FINISH);
  }
  allocations.Report(state);
  benchmark::DoNotOptimize(ret);
  ASYNC_WAIT_CTX_free(ctx);
}

// resume -> pause: one round trip into a long-running job that pauses again.
void BM_PauseResume(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  std::atomic<bool> stop{false};
  std::atomic<bool>* stop_pointer = &stop;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  if (ASYNC_start_job(&job, ctx, &ret, &PauseUntilStopped, &stop_pointer, sizeof stop_pointer) !=
      ASYNC_PAUSE) {
    state.SkipWithError("the long job did not pause");
  }
  AllocationCounter allocations;
  for (auto _ : state) {
    EXPECT_OR_SKIP(state,
                   ASYNC_start_job(&job, ctx, &ret, &PauseUntilStopped, nullptr, 0) == ASYNC_PAUSE);
  }
  allocations.Report(state);
  stop.store(true, std::memory_order_relaxed);
  while (job != nullptr &&
         ASYNC_start_job(&job, ctx, &ret, &PauseUntilStopped, nullptr, 0) == ASYNC_PAUSE) {
  }
  ASYNC_WAIT_CTX_free(ctx);
}

// start -> finish of a job given state.range(0) bytes of arguments (copied
// by ASYNC_start_job into the job).
void BM_StartFinishArgs(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  std::vector<unsigned char> args(static_cast<std::size_t>(state.range(0)), 7);
  int ret = 0;
  AllocationCounter allocations;
  for (auto _ : state) {
    ASYNC_JOB* job = nullptr;
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &ReadArguments, args.data(),
                                          args.size()) == ASYNC_FINISH);
  }
  allocations.Report(state);
  if (ret != 8) state.SkipWithError("the job did not see its arguments");
  ASYNC_WAIT_CTX_free(ctx);
}

// ASYNC_WAIT_CTX_set_wait_fd + get_changed_fds (count, then fds) + clear_fd,
// what async-aware code and its event loop do around one wait.
void BM_WaitCtxFds(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  static const char key = 0;
  AllocationCounter allocations;
  for (auto _ : state) {
    EXPECT_OR_SKIP(state, ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, 42, nullptr, nullptr) == 1);
    std::size_t added = 0, deleted = 0;
    EXPECT_OR_SKIP(state,
                   ASYNC_WAIT_CTX_get_changed_fds(ctx, nullptr, &added, nullptr, &deleted) == 1);
    OSSL_ASYNC_FD added_fds[1], deleted_fds[1];
    EXPECT_OR_SKIP(state, added == 1 && deleted == 0);
    EXPECT_OR_SKIP(
        state, ASYNC_WAIT_CTX_get_changed_fds(ctx, added_fds, &added, deleted_fds, &deleted) == 1);
    benchmark::DoNotOptimize(added_fds[0]);
    EXPECT_OR_SKIP(state, ASYNC_WAIT_CTX_clear_fd(ctx, &key) == 1);
  }
  allocations.Report(state);
  ASYNC_WAIT_CTX_free(ctx);
}

// Job creation: each iteration starts kChurnBatch jobs that all pause (so the
// pool, emptied by the previous iteration, must create every one), resumes
// them to finish, then ASYNC_cleanup_thread() frees them and the pool, and
// ASYNC_init_thread(0, 0) makes a fresh pool. Per job: create, full cycle,
// free, plus 1/kChurnBatch of a pool's life.
constexpr int kChurnBatch = 64;

void BM_PoolChurn(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctxs[kChurnBatch];
  for (auto& ctx : ctxs) ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* jobs[kChurnBatch];
  int ret = 0;
  ASYNC_cleanup_thread();
  ASYNC_init_thread(0, 0);
  for (auto _ : state) {
    bool ok = true;
    for (int i = 0; i < kChurnBatch && ok; ++i) {
      jobs[i] = nullptr;
      ok = ASYNC_start_job(&jobs[i], ctxs[i], &ret, &PauseOnce, nullptr, 0) == ASYNC_PAUSE;
    }
    for (int i = 0; i < kChurnBatch && ok; ++i) {
      ok = ASYNC_start_job(&jobs[i], ctxs[i], &ret, &PauseOnce, nullptr, 0) == ASYNC_FINISH;
    }
    EXPECT_OR_SKIP(state, ok);
    ASYNC_cleanup_thread();
    EXPECT_OR_SKIP(state, ASYNC_init_thread(0, 0) == 1);
  }
  state.counters["jobs_per_iteration"] = kChurnBatch;
  ASYNC_cleanup_thread();
  for (auto& ctx : ctxs) ASYNC_WAIT_CTX_free(ctx);
}

// The full cycle of a job that raises the inexact flag (an inexact
// division) in each of its two segments, so that it returns to the caller
// with FP status flags the caller's state did not have when it entered. An
// implementation that restores the whole MXCSR at each switch pays a reload
// (serializing) every time; asyncjob compares control bits only.
// BM_FpExactJob is its control: the same divisions, exact, raising no flag.
template <int (*kFunction)(void*)>
void BM_FpJob(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  int ret = 0;
  AllocationCounter allocations;
  for (auto _ : state) {
    ASYNC_JOB* job = nullptr;
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, kFunction, nullptr, 0) == ASYNC_PAUSE);
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, kFunction, nullptr, 0) == ASYNC_FINISH);
  }
  allocations.Report(state);
  ASYNC_WAIT_CTX_free(ctx);
}

void BM_FpFlagsJob(benchmark::State& state) { BM_FpJob<&DivideAndPause>(state); }
void BM_FpExactJob(benchmark::State& state) { BM_FpJob<&DivideExactlyAndPause>(state); }

// A harsher variant: the caller also clears its FP status flags before each
// start and resume (one ldmxcsr each, as feclearexcept() would), so the flags
// differ at every switch out of the job, not just the first.
// BM_FpCallerClears is its control: the same clears, no division in the job.
void BM_FpCallerClears(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  int ret = 0;
  for (auto _ : state) {
    ASYNC_JOB* job = nullptr;
    bench::ClearFpStatusFlags();
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) == ASYNC_PAUSE);
    bench::ClearFpStatusFlags();
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) == ASYNC_FINISH);
  }
  ASYNC_WAIT_CTX_free(ctx);
}

void BM_FpCallerClearsJobDivides(benchmark::State& state) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  int ret = 0;
  for (auto _ : state) {
    ASYNC_JOB* job = nullptr;
    bench::ClearFpStatusFlags();
    EXPECT_OR_SKIP(state,
                   ASYNC_start_job(&job, ctx, &ret, &DivideAndPause, nullptr, 0) == ASYNC_PAUSE);
    bench::ClearFpStatusFlags();
    EXPECT_OR_SKIP(state,
                   ASYNC_start_job(&job, ctx, &ret, &DivideAndPause, nullptr, 0) == ASYNC_FINISH);
  }
  ASYNC_WAIT_CTX_free(ctx);
}

// Full cycles on state.threads() threads at once, each with its own pool
// (ASYNC_init_thread(1, 1)) and wait context. Reported as jobs per second
// over all threads (items_per_second, wall-clock time).
void BM_FullCycleThreads(benchmark::State& state) {
  ASYNC_cleanup_thread();
  if (ASYNC_init_thread(1, 1) != 1) state.SkipWithError("ASYNC_init_thread failed");
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  int ret = 0;
  for (auto _ : state) {
    ASYNC_JOB* job = nullptr;
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) == ASYNC_PAUSE);
    EXPECT_OR_SKIP(state, ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) == ASYNC_FINISH);
  }
  state.SetItemsProcessed(state.iterations());
  ASYNC_WAIT_CTX_free(ctx);
  ASYNC_cleanup_thread();
}

BENCHMARK(BM_StartFinish);
BENCHMARK(BM_FullCycle);
BENCHMARK(BM_PauseResume);
BENCHMARK(BM_StartFinishArgs)->Arg(8)->Arg(256)->Arg(4096);
BENCHMARK(BM_WaitCtxFds);
BENCHMARK(BM_PoolChurn);
BENCHMARK(BM_FpExactJob);
BENCHMARK(BM_FpFlagsJob);
BENCHMARK(BM_FpCallerClears);
BENCHMARK(BM_FpCallerClearsJobDivides);
BENCHMARK(BM_FullCycleThreads)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("implementation", BENCH_IMPLEMENTATION);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
