// asyncjob::Loop::spawn when memory runs out: every allocation spawn()
// makes (the job's task, the start queue, the slot table and wake queue
// growing by a chunk, the deadline heap) is made to fail in turn, across
// the growth points. A failed spawn throws (asyncjob::Error for the loop's
// own books, std::bad_alloc for the task) and leaves the loop as it was:
// the jobs spawned before run to the end, nothing is counted twice.
//
// The global operator new (plain, array and nothrow; over-aligned ones are
// not used here) is replaced in this executable (hence one of its own): a
// countdown set by the test makes the n-th allocation from now fail.
#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"

namespace {

// 0: no failure planned; n: the n-th allocation from now fails.
thread_local int fail_countdown = 0;
thread_local int failures = 0;

void* Allocate(std::size_t size) {
  if (fail_countdown > 0 && --fail_countdown == 0) {
    ++failures;
    throw std::bad_alloc();
  }
  void* block = std::malloc(size == 0 ? 1 : size);
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

}  // namespace

void* operator new(std::size_t size) { return Allocate(size); }
void* operator new[](std::size_t size) { return Allocate(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return Allocate(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return Allocate(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void operator delete(void* block, const std::nothrow_t&) noexcept { std::free(block); }
void operator delete[](void* block, const std::nothrow_t&) noexcept { std::free(block); }
void operator delete(void* block) noexcept { std::free(block); }
void operator delete[](void* block) noexcept { std::free(block); }
void operator delete(void* block, std::size_t) noexcept { std::free(block); }
void operator delete[](void* block, std::size_t) noexcept { std::free(block); }

namespace {

using namespace std::chrono_literals;

// Whether this executable's operator new is the one called (valgrind
// replaces it with its own).
bool InjectionWorks() {
  fail_countdown = 1;
  bool failed = false;
  try {
    int* volatile probe = new int(0);  // volatile: not elided
    delete probe;
  } catch (const std::bad_alloc&) {
    failed = true;
  }
  fail_countdown = 0;
  failures = 0;
  return failed;
}

TEST(LoopAllocFailure, FailedSpawnsLeaveTheLoopAsItWas) {
  if (!InjectionWorks()) GTEST_SKIP() << "operator new is replaced by a tool (valgrind)";
  asyncjob::Loop loop;
  std::vector<asyncjob::JobHandle<int>> handles;
  handles.reserve(2200);
  int refused = 0;
  // Past the first chunk of 1,024 slots, so that the slot table, the wake
  // queue and the deadline heap grow while allocations fail.
  for (int i = 0; i < 1100; ++i) {
    for (int nth = 1; nth <= 8; ++nth) {
      std::size_t size_before = loop.size();
      fail_countdown = nth;
      try {
        auto handle = loop.spawn([i] { return i; }, asyncjob::SpawnOptions{.timeout = 1h});
        fail_countdown = 0;
        handles.push_back(handle);  // spawned: fewer than nth allocations
        break;
      } catch (const asyncjob::Error&) {
        ++refused;
      } catch (const std::bad_alloc&) {
        ++refused;
      }
      fail_countdown = 0;
      EXPECT_EQ(loop.size(), size_before) << "job " << i << ", allocation " << nth;
    }
  }
  fail_countdown = 0;
  EXPECT_GT(failures, 1100) << "each spawn was made to fail at least once";
  EXPECT_EQ(refused, failures);
  EXPECT_EQ(loop.size(), handles.size());
  EXPECT_EQ(loop.counters().spawned, handles.size());
  loop.run();
  EXPECT_EQ(loop.size(), 0u);
  for (std::size_t i = 0; i < handles.size(); ++i) {
    EXPECT_EQ(handles[i].status(), asyncjob::JobStatus::kSucceeded);
  }
  EXPECT_EQ(loop.counters().succeeded, handles.size());
  EXPECT_EQ(loop.counters().timed_out, 0u);
}

}  // namespace
