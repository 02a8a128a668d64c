// mapping_check.h - "no mapping left behind" with the stack caches on.
//
// The stack caches are on by default: after ASYNC_cleanup_thread or a
// thread's exit they may keep freed guarded stacks mapped, guard in place
// (two mappings each), up to their limits. A test that checks that nothing
// is left behind counts its baseline with the caches empty, and afterwards
// checks that what is left beyond it is exactly what the caches may keep:
//
//   const size_t before = asyncjob_test::MappingsWithEmptyStackCaches();
//   ... jobs, ASYNC_cleanup_thread() ...
//   EXPECT_TRUE(asyncjob_test::OnlyCachedStacksLeft(before));
#ifndef ASYNCJOB_TESTS_SUPPORT_MAPPING_CHECK_H_
#define ASYNCJOB_TESTS_SUPPORT_MAPPING_CHECK_H_

#include <gtest/gtest.h>

#include <cstddef>

#include "asyncjob/async.h"
#include "support/test_support.h"

namespace asyncjob_test {

// Unmaps the stacks cached by this thread and the process, then counts the
// mappings.
inline std::size_t MappingsWithEmptyStackCaches() {
  asyncjob_trim_stack_cache();
  return CountMappings();
}

// The mappings beyond `before` are cached stacks only: no more stacks than
// the limits allow, two mappings at most each, and unmapping them (which
// this does) brings the count back to `before` exactly.
inline ::testing::AssertionResult OnlyCachedStacksLeft(std::size_t before) {
  const std::size_t with_cache = CountMappings();
  std::size_t per_thread = 0;
  std::size_t process = 0;
  asyncjob_get_stack_cache_limits(&per_thread, &process);
  const std::size_t cached = asyncjob_trim_stack_cache();
  const std::size_t after = CountMappings();
  if (cached > per_thread + process) {
    return ::testing::AssertionFailure()
           << cached << " stacks cached, above the limits " << per_thread << " + " << process;
  }
  if (with_cache > before + 2 * cached) {
    return ::testing::AssertionFailure()
           << with_cache << " mappings, " << before << " before and " << cached
           << " cached stacks (2 mappings each): a mapping leaked";
  }
  if (after != before) {
    return ::testing::AssertionFailure() << after << " mappings once the " << cached
                                         << " cached stacks were unmapped, " << before << " before";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace asyncjob_test

#endif  // ASYNCJOB_TESTS_SUPPORT_MAPPING_CHECK_H_
