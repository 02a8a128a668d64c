// boost_peer.cc - asyncjob next to Boost.Context, in one program and one run.
//
// Two pairs, each measured the same way on both sides:
//   raw switch round trip   asyncjob's context::Switch() to a fibre and back,
//                           and Boost's jump_fcontext() there and back: the
//                           bare register switch of each library;
//   full cycle              create -> pause -> resume -> finish: an
//                           ASYNC_start_job job that pauses once (pooled, as
//                           OpenSSL callers use it), and a boost::context::fiber
//                           on a pooled_fixedsize_stack that resumes its
//                           caller once, then returns.
// Both fibres get 64 KiB stacks. At the end the program prints the median of
// each case over its repetitions and the ratios asyncjob / Boost (below 1:
// asyncjob is faster). Built only when CMake finds Boost.Context (see
// bench/CMakeLists.txt); run.py runs it when it was built.
#include <asyncjob/async.h>
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <algorithm>
#include <boost/context/detail/fcontext.hpp>
#include <boost/context/fiber.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>
#include <cstddef>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "context/context.h"

namespace {

namespace actx = asyncjob::context;
namespace bctx = boost::context;

constexpr std::size_t kStackSize = 64 * 1024;

// ----- Raw switches -----

actx::Context g_main;
actx::Context g_fibre;

[[noreturn]] void BounceForever(void*, void*) {
  for (;;) actx::Switch(&g_fibre, &g_main, nullptr);
}

void BM_AsyncjobRawSwitch(benchmark::State& state) {
  void* stack = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    state.SkipWithError("mmap of the fibre stack failed");
    return;
  }
  actx::InitializeThreadContext(&g_main);
  actx::Prepare(&g_fibre, stack, kStackSize, &BounceForever, nullptr);
  actx::Switch(&g_main, &g_fibre, nullptr);  // first entry: out of the timing
  for (auto _ : state) benchmark::DoNotOptimize(actx::Switch(&g_main, &g_fibre, nullptr));
  actx::Destroy(&g_fibre);
  munmap(stack, kStackSize);
}

[[noreturn]] void BoostBounceForever(bctx::detail::transfer_t from) {
  for (;;) from = bctx::detail::jump_fcontext(from.fctx, nullptr);
}

void BM_BoostRawSwitch(benchmark::State& state) {
  void* stack = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    state.SkipWithError("mmap of the fibre stack failed");
    return;
  }
  bctx::detail::fcontext_t fibre = bctx::detail::make_fcontext(
      static_cast<char*>(stack) + kStackSize, kStackSize, &BoostBounceForever);
  // First entry, out of the timing: the fibre now waits in its loop.
  bctx::detail::transfer_t to = bctx::detail::jump_fcontext(fibre, nullptr);
  for (auto _ : state) {
    to = bctx::detail::jump_fcontext(to.fctx, nullptr);
    benchmark::DoNotOptimize(to.data);
  }
  // The fibre stays suspended in its loop, with nothing to unwind.
  munmap(stack, kStackSize);
}

// ----- Full cycles -----

int PauseOnce(void*) {
  ASYNC_pause_job();
  return 1;
}

void BM_AsyncjobJobCycle(benchmark::State& state) {
  asyncjob_set_stack_size(kStackSize);
  ASYNC_init_thread(1, 1);
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  for (auto _ : state) {
    if (ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) != ASYNC_PAUSE ||
        ASYNC_start_job(&job, ctx, &ret, &PauseOnce, nullptr, 0) != ASYNC_FINISH) {
      state.SkipWithError("the job did not pause and finish");
      break;
    }
  }
  ASYNC_WAIT_CTX_free(ctx);
  ASYNC_cleanup_thread();
}

void BM_BoostFiberCycle(benchmark::State& state) {
  bctx::pooled_fixedsize_stack stacks(kStackSize);
  int finished = 0;
  for (auto _ : state) {
    bctx::fiber fibre{std::allocator_arg, stacks, [&finished](bctx::fiber&& caller) {
                        caller = std::move(caller).resume();  // pause
                        ++finished;
                        return std::move(caller);
                      }};
    fibre = std::move(fibre).resume();  // start: runs until the pause
    fibre = std::move(fibre).resume();  // resume: runs to the end
    if (fibre) {
      state.SkipWithError("the fiber did not finish");
      break;
    }
  }
  benchmark::DoNotOptimize(finished);
}

BENCHMARK(BM_AsyncjobRawSwitch);
BENCHMARK(BM_BoostRawSwitch);
BENCHMARK(BM_AsyncjobJobCycle);
BENCHMARK(BM_BoostFiberCycle);

// Prints as the console does, and keeps each case's time per iteration (ns)
// of every repetition for the ratios.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Iteration && !run.error_occurred) {
        times_[run.run_name.function_name].push_back(run.GetAdjustedRealTime());
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  double Median(const std::string& name) const {
    auto it = times_.find(name);
    if (it == times_.end() || it->second.empty()) return 0;
    std::vector<double> sorted = it->second;
    std::sort(sorted.begin(), sorted.end());
    const std::size_t n = sorted.size();
    return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  }

 private:
  std::map<std::string, std::vector<double>> times_;
};

void PrintRatio(const RecordingReporter& reporter, const char* what, const char* ours,
                const char* theirs) {
  const double a = reporter.Median(ours);
  const double b = reporter.Median(theirs);
  if (a <= 0 || b <= 0) return;
  std::printf("ratio %-18s asyncjob %8.2f ns / Boost %8.2f ns = %.2fx\n", what, a, b, a / b);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("implementation", "asyncjob and Boost.Context");
  benchmark::AddCustomContext("context_backend", actx::BackendName());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  std::printf("medians over the repetitions; ratio < 1: asyncjob is faster\n");
  PrintRatio(reporter, "raw_switch", "BM_AsyncjobRawSwitch", "BM_BoostRawSwitch");
  PrintRatio(reporter, "full_cycle", "BM_AsyncjobJobCycle", "BM_BoostFiberCycle");
  return 0;
}
