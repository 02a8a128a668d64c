// scale_bench.cc - N jobs paused at once on one thread.
//
// Built twice like async_bench.cc (asyncjob and libcrypto). Each case runs
// once (Iterations(1)) and is meant to be run alone in a fresh process, one
// N per process (--benchmark_filter=Scale/N$), so that the memory figures
// of one N are not blurred by memory a previous N freed but kept.
//
// A case creates N wait contexts (untimed, before the baseline), then:
//   create+pause:   ASYNC_start_job of N jobs, each pausing at once (the
//                   pool is empty: every start creates a job)
//   peak:           VmRSS and /proc/self/maps lines with all N paused
//   resume+finish:  ASYNC_start_job on each paused job, which finishes
// and reports per job: the time of each phase, its page faults, and the RSS
// growth from the baseline to the peak (and that of the page tables, which
// VmRSS leaves out).
#include <openssl/async.h>

#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <chrono>
#include <cstddef>
#include <vector>

#include "bench_support.h"

#if !defined(BENCH_IMPLEMENTATION)
#error "BENCH_IMPLEMENTATION must name the implementation under test"
#endif

namespace {

// Page faults (minor: no I/O) of this process so far.
double MinorFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_minflt);
}

int PauseOnce(void*) {
  ASYNC_pause_job();
  return 1;
}

void BM_Scale(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    std::vector<ASYNC_WAIT_CTX*> ctxs(n);
    std::vector<ASYNC_JOB*> jobs(n, nullptr);
    for (auto& ctx : ctxs) ctx = ASYNC_WAIT_CTX_new();
    if (ASYNC_init_thread(0, 0) != 1) {
      state.SkipWithError("ASYNC_init_thread failed");
      break;
    }
    const std::size_t rss_before = bench::ResidentKiB();
    const std::size_t maps_before = bench::CountMappings();
    const std::size_t pte_before = bench::PageTableKiB();
    int ret = 0;
    bool ok = true;

    const double faults0 = MinorFaults();
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < n && ok; ++i) {
      ok = ASYNC_start_job(&jobs[i], ctxs[i], &ret, &PauseOnce, nullptr, 0) == ASYNC_PAUSE;
    }
    const auto t1 = std::chrono::steady_clock::now();
    const double faults1 = MinorFaults();
    const std::size_t rss_peak = bench::ResidentKiB();
    const std::size_t maps_peak = bench::CountMappings();
    const std::size_t pte_peak = bench::PageTableKiB();
    const double faults2 = MinorFaults();
    const auto t2 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < n && ok; ++i) {
      ok = ASYNC_start_job(&jobs[i], ctxs[i], &ret, &PauseOnce, nullptr, 0) == ASYNC_FINISH;
    }
    const auto t3 = std::chrono::steady_clock::now();
    const double faults3 = MinorFaults();
    if (!ok) {
      state.SkipWithError("a job did not pause or finish as expected");
      break;
    }
    ASYNC_cleanup_thread();
    for (auto& ctx : ctxs) ASYNC_WAIT_CTX_free(ctx);

    using ns = std::chrono::duration<double, std::nano>;
    const double count = static_cast<double>(n);
    const double create_ns = ns(t1 - t0).count();
    const double resume_ns = ns(t3 - t2).count();
    state.SetIterationTime((create_ns + resume_ns) * 1e-9);
    state.counters["jobs"] = count;
    state.counters["create_pause_ns_per_job"] = create_ns / count;
    state.counters["resume_finish_ns_per_job"] = resume_ns / count;
    state.counters["create_pause_faults_per_job"] = (faults1 - faults0) / count;
    state.counters["resume_finish_faults_per_job"] = (faults3 - faults2) / count;
    state.counters["rss_kib_per_paused_job"] = static_cast<double>(rss_peak - rss_before) / count;
    state.counters["page_tables_kib_per_paused_job"] =
        static_cast<double>(pte_peak - pte_before) / count;
    state.counters["rss_peak_mib"] = static_cast<double>(rss_peak) / 1024.0;
    state.counters["maps_before"] = static_cast<double>(maps_before);
    state.counters["maps_peak"] = static_cast<double>(maps_peak);
  }
}

BENCHMARK(BM_Scale)
    ->Arg(10'000)
    ->Arg(100'000)
    ->Arg(1'000'000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("implementation", BENCH_IMPLEMENTATION);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
