// The unwind check (src/job/unwind_check.h) on its own: from a point deep in
// a call chain, would a C++ exception reach the frame of Outer(), or end in
// std::terminate? Each case builds the chain with the frame shape it names
// and compares the check's answer with what the C++ runtime does.
#include "job/unwind_check.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "no_unwind_tables.h"

namespace {

using asyncjob::job::CheckUnwindTo;
using asyncjob::job::UnwindBlocker;
using asyncjob::job::UnwindCheck;

// Functions whose frames the walk must see: never inlined, never cloned.
#if defined(__clang__)
#define TEST_FRAME __attribute__((noinline))
#else
#define TEST_FRAME __attribute__((noipa))
#endif

UnwindCheck result;
volatile int sink;

// The point of the would-be throw: checks up to Outer()'s frame.
TEST_FRAME void Check();

// The frame that catches: the walk stops here. Calls body().
TEST_FRAME void Outer(void (*body)()) {
  body();
  sink = sink + 1;  // not a tail call
}

TEST_FRAME void Check() {
  result = CheckUnwindTo(reinterpret_cast<const void*>(&Outer), 0);
  sink = sink + 1;
}

struct Noisy {
  ~Noisy() { sink = sink + 1; }
};

// ----- Frames an exception passes -----

TEST_FRAME void Plain() {
  Check();
  sink = sink + 1;
}

TEST_FRAME void WithCleanup() {
  Noisy noisy;
  Check();
}

TEST_FRAME void CatchAllThatRethrows() {
  try {
    Noisy noisy;
    Check();
  } catch (...) {
    sink = sink + 1;
    throw;
  }
}

TEST_FRAME void NestedTryBlocks() {
  try {
    try {
      Noisy noisy;
      Check();
    } catch (const std::runtime_error&) {
      sink = sink + 1;
    }
  } catch (...) {
    throw;
  }
}

TEST_FRAME void TypedCatch() {
  try {
    Check();
  } catch (const std::exception&) {
    sink = sink + 1;
  }
}

// ----- Frames that terminate -----

TEST_FRAME void Noexcept() noexcept {
  Plain();
  sink = sink + 1;
}

TEST_FRAME void NoexceptWithCleanup() noexcept {
  Noisy noisy;
  Plain();
}

struct ChecksInDestructor {
  TEST_FRAME ~ChecksInDestructor() { Plain(); }
};

TEST_FRAME void DestructorAtScopeExit() {
  ChecksInDestructor checks;
  sink = sink + 1;
}

int CheckFromC(void*) {
  Plain();
  return 1;
}

TEST_FRAME void UnderCWithoutUnwindTables() {
  sink = CallWithoutUnwindTables(&CheckFromC, nullptr);
}

// Outer() called from a noexcept function: frames above the stop frame do
// not matter.
TEST_FRAME void NoexceptAboveTheStopFrame() noexcept { Outer(&WithCleanup); }

bool Contains(void (*function)(), const void* address) {
  auto start = reinterpret_cast<std::uintptr_t>(function);
  auto at = reinterpret_cast<std::uintptr_t>(address);
  return at > start && at - start < 1024;
}

UnwindCheck RunUnderOuter(void (*body)()) {
  result = UnwindCheck{UnwindBlocker::kStopFrameNotFound, nullptr, -1};
  Outer(body);
  return result;
}

TEST(UnwindCheck, PlainFramesPass) {
  UnwindCheck check = RunUnderOuter(&Plain);
  EXPECT_EQ(check.blocker, UnwindBlocker::kNone);
  EXPECT_GE(check.frames_walked, 2) << "Check and Plain were examined";
}

TEST(UnwindCheck, CleanupsPass) {
  EXPECT_EQ(RunUnderOuter(&WithCleanup).blocker, UnwindBlocker::kNone);
}

TEST(UnwindCheck, CatchAllBlocksThatRethrowPass) {
  EXPECT_EQ(RunUnderOuter(&CatchAllThatRethrows).blocker, UnwindBlocker::kNone);
}

TEST(UnwindCheck, NestedTryBlocksPass) {
  EXPECT_EQ(RunUnderOuter(&NestedTryBlocks).blocker, UnwindBlocker::kNone);
}

TEST(UnwindCheck, TypedCatchClausesPass) {
  EXPECT_EQ(RunUnderOuter(&TypedCatch).blocker, UnwindBlocker::kNone);
}

TEST(UnwindCheck, TheWalkStopsAtTheStopFrame) {
  result = UnwindCheck{UnwindBlocker::kStopFrameNotFound, nullptr, -1};
  NoexceptAboveTheStopFrame();
  EXPECT_EQ(result.blocker, UnwindBlocker::kNone);
}

TEST(UnwindCheck, ANoexceptFunctionBlocks) {
  UnwindCheck check = RunUnderOuter(reinterpret_cast<void (*)()>(&Noexcept));
  EXPECT_EQ(check.blocker, UnwindBlocker::kNoexcept);
  EXPECT_TRUE(Contains(reinterpret_cast<void (*)()>(&Noexcept), check.frame)) << check.frame;
}

TEST(UnwindCheck, ANoexceptFunctionWithCleanupsBlocks) {
  UnwindCheck check = RunUnderOuter(reinterpret_cast<void (*)()>(&NoexceptWithCleanup));
  EXPECT_EQ(check.blocker, UnwindBlocker::kNoexcept);
  EXPECT_TRUE(Contains(reinterpret_cast<void (*)()>(&NoexceptWithCleanup), check.frame));
}

TEST(UnwindCheck, ADestructorRunAtScopeExitBlocks) {
  UnwindCheck check = RunUnderOuter(&DestructorAtScopeExit);
  EXPECT_EQ(check.blocker, UnwindBlocker::kNoexcept);
}

TEST(UnwindCheck, CFramesWithoutUnwindTablesBlock) {
  UnwindCheck check = RunUnderOuter(&UnderCWithoutUnwindTables);
  EXPECT_EQ(check.blocker, UnwindBlocker::kNoUnwindInfo);
  EXPECT_TRUE(Contains(reinterpret_cast<void (*)()>(&CallWithoutUnwindTables), check.frame))
      << check.frame;
}

TEST(UnwindCheck, DescribesBlockersAndNamesExportedFunctions) {
  EXPECT_EQ(std::string(asyncjob::job::DescribeBlocker(UnwindBlocker::kNoUnwindInfo)),
            "no unwind information");
  const void* start = nullptr;
  const char* name =
      asyncjob::job::FunctionNameAt(reinterpret_cast<const char*>(&std::terminate) + 1, &start);
  ASSERT_NE(name, nullptr);
  EXPECT_NE(std::string(name).find("terminate"), std::string::npos) << name;
  EXPECT_EQ(start, reinterpret_cast<const void*>(&std::terminate));
}

}  // namespace
