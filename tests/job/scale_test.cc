// A million simultaneously paused jobs on one thread, with default system
// settings (vm.max_map_count of about 65,530 mappings).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <vector>

#include "asyncjob/async.h"
#include "base/sanitizers.h"
#include "support/mapping_check.h"
#include "support/test_support.h"

namespace {

size_t JobCount() {
  if (const char* text = std::getenv("ASYNCJOB_SCALE_JOBS")) return std::strtoul(text, nullptr, 10);
#if ASYNCJOB_TSAN
  return 2'000;  // each job's fibre costs ThreadSanitizer a trace of its own
#elif ASYNCJOB_ASAN
  return 20'000;  // AddressSanitizer multiplies each job's memory many times
#else
  return 1'000'000;
#endif
}

int PauseThenReturnArg(void* arg) {
  int value = *static_cast<int*>(arg);
  ASYNC_pause_job();
  return value;
}

}  // namespace

TEST(Scale, AMillionPausedJobsOnOneThread) {
  const size_t n = JobCount();
  std::vector<ASYNC_JOB*> jobs(n, nullptr);
  ASSERT_EQ(ASYNC_init_thread(0, 0), 1);
  const size_t mappings_before = asyncjob_test::MappingsWithEmptyStackCaches();
  const size_t rss_before = asyncjob_test::ResidentKiB();
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < n; ++i) {
    int value = static_cast<int>(i);
    int ret = -1;
    ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, &PauseThenReturnArg, &value, sizeof value),
              ASYNC_PAUSE)
        << "job " << i;
  }
  auto t1 = std::chrono::steady_clock::now();
  const size_t mappings_peak = asyncjob_test::CountMappings();
  const size_t rss_peak = asyncjob_test::ResidentKiB();
  asyncjob_pool_stats stats;
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, n);
  EXPECT_EQ(stats.guarded + stats.slab, n);
  EXPECT_LT(mappings_peak, 65'530u) << "the default mapping limit holds";

  for (size_t i = 0; i < n; ++i) {
    int ret = -1;
    ASSERT_EQ(ASYNC_start_job(&jobs[i], nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
    ASSERT_EQ(ret, static_cast<int>(i));
  }
  auto t2 = std::chrono::steady_clock::now();
  ASYNC_cleanup_thread();
  if (asyncjob_test::MappingCountsAreExact()) {
    // The stack caches keep at most their limits' worth of stacks (two
    // mappings each); every other stack was unmapped.
    const size_t with_cache = asyncjob_test::CountMappings();
    size_t per_thread = 0, process = 0;
    asyncjob_get_stack_cache_limits(&per_thread, &process);
    const size_t cached = asyncjob_trim_stack_cache();
    EXPECT_LE(cached, per_thread + process);
    EXPECT_LE(with_cache, mappings_before + 2 * cached);
    EXPECT_LE(asyncjob_test::CountMappings(), mappings_before) << "every stack was unmapped";
  }

  using us = std::chrono::duration<double, std::micro>;
  std::printf(
      "%zu jobs: create+pause %.2f us/job, resume+finish %.2f us/job, %.2f KiB RSS per paused "
      "job, %zu guarded + %zu slab stacks, %zu mappings at peak\n",
      n, us(t1 - t0).count() / static_cast<double>(n), us(t2 - t1).count() / static_cast<double>(n),
      static_cast<double>(rss_peak - rss_before) / static_cast<double>(n), stats.guarded,
      stats.slab, mappings_peak);
}
