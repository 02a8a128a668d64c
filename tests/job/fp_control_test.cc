// Each job keeps its own floating-point control state (docs/design.md, "FP
// control state"): a rounding mode set in a job stays in the job across its
// pauses, a caller's mode set between resumes stays with the caller, and a
// new job starts with the mode of the code that starts it, also when it runs
// in a context parked by an earlier job that changed its own mode.
//
// fegetround() reads the x87 control word on x86-64 and FPCR on AArch64;
// on x86-64 MXCSR's rounding bits, which SSE arithmetic uses, are read too.
#include <gtest/gtest.h>

#include <cfenv>
#include <cstdint>

#include "asyncjob/async.h"

namespace {

// The rounding mode as both FP units on this CPU see it; -1 when they
// disagree (x86-64: MXCSR bits 13-14 against the x87 control word).
int RoundingMode() {
  const int mode = fegetround();
#if defined(__x86_64__)
  std::uint32_t mxcsr = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  // MXCSR bits 13-14: 0 nearest, 1 down, 2 up, 3 toward zero.
  const int sse_modes[4] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO};
  const int sse_mode = sse_modes[(mxcsr >> 13) & 3];
  if (sse_mode != mode) return -1;
#endif
  return mode;
}

// What a job saw, and what it sets.
struct Probe {
  int seen_at_start = -2;
  int seen_after_resume = -2;
  int sets = FE_TONEAREST;
};

int SetModeThenPause(void* argument) {
  auto* probe = *static_cast<Probe**>(argument);
  probe->seen_at_start = RoundingMode();
  fesetround(probe->sets);
  ASYNC_pause_job();
  probe->seen_after_resume = RoundingMode();
  return 1;
}

int SetModeAndFinish(void* argument) {
  auto* probe = *static_cast<Probe**>(argument);
  probe->seen_at_start = RoundingMode();
  fesetround(probe->sets);
  return 1;
}

class FpControl : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(fesetround(FE_TONEAREST), 0);
    ASSERT_EQ(ASYNC_init_thread(1, 1), 1);  // one job: every start reuses it
  }
  void TearDown() override {
    ASYNC_cleanup_thread();
    fesetround(FE_TONEAREST);
  }

  // Runs func(probe) to its first pause or end.
  int Start(ASYNC_JOB** job, int (*func)(void*), Probe* probe) {
    int ret = 0;
    return ASYNC_start_job(job, nullptr, &ret, func, &probe, sizeof probe);
  }
};

TEST_F(FpControl, ARoundingModeSetInAJobStaysInTheJob) {
  Probe probe;
  probe.sets = FE_UPWARD;
  ASYNC_JOB* job = nullptr;
  ASSERT_EQ(Start(&job, &SetModeThenPause, &probe), ASYNC_PAUSE);
  EXPECT_EQ(probe.seen_at_start, FE_TONEAREST);
  EXPECT_EQ(RoundingMode(), FE_TONEAREST) << "the paused job's mode leaked to its caller";
  ASSERT_EQ(Start(&job, &SetModeThenPause, &probe), ASYNC_FINISH);
  EXPECT_EQ(probe.seen_after_resume, FE_UPWARD);
  EXPECT_EQ(RoundingMode(), FE_TONEAREST) << "the finished job's mode leaked to its caller";
}

TEST_F(FpControl, ACallersModeSetBetweenResumesStaysWithTheCaller) {
  Probe probe;
  probe.sets = FE_TOWARDZERO;
  ASYNC_JOB* job = nullptr;
  ASSERT_EQ(Start(&job, &SetModeThenPause, &probe), ASYNC_PAUSE);
  ASSERT_EQ(fesetround(FE_DOWNWARD), 0);
  ASSERT_EQ(Start(&job, &SetModeThenPause, &probe), ASYNC_FINISH);
  EXPECT_EQ(probe.seen_after_resume, FE_TOWARDZERO) << "the caller's mode reached the job";
  EXPECT_EQ(RoundingMode(), FE_DOWNWARD);
}

// The bug this guards against: a job's context is parked for the next job
// with the FP control state the job left, and the next start reloaded it.
TEST_F(FpControl, ANewJobStartsWithItsStartersModeNotThePreviousJobs) {
  const int modes[] = {FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO, FE_TONEAREST};
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(round);
    const int starter_mode = modes[round % 4];
    ASSERT_EQ(fesetround(starter_mode), 0);
    Probe probe;
    probe.sets = modes[(round + 2) % 4];  // not the next starter's: the next job must not see it
    ASYNC_JOB* job = nullptr;
    ASSERT_EQ(Start(&job, &SetModeAndFinish, &probe), ASYNC_FINISH);
    EXPECT_EQ(probe.seen_at_start, starter_mode);
    EXPECT_EQ(RoundingMode(), starter_mode) << "the finished job's mode leaked to its caller";
  }
}

TEST_F(FpControl, AJobThatPausedInAReusedContextKeepsItsOwnMode) {
  // The first job leaves FE_UPWARD in the context the second one reuses;
  // the second sets its own, pauses, and must get its own back.
  Probe first;
  first.sets = FE_UPWARD;
  ASYNC_JOB* job = nullptr;
  ASSERT_EQ(Start(&job, &SetModeAndFinish, &first), ASYNC_FINISH);
  Probe second;
  second.sets = FE_TOWARDZERO;
  ASSERT_EQ(Start(&job, &SetModeThenPause, &second), ASYNC_PAUSE);
  EXPECT_EQ(second.seen_at_start, FE_TONEAREST);
  EXPECT_EQ(RoundingMode(), FE_TONEAREST);
  ASSERT_EQ(Start(&job, &SetModeThenPause, &second), ASYNC_FINISH);
  EXPECT_EQ(second.seen_after_resume, FE_TOWARDZERO);
  EXPECT_EQ(RoundingMode(), FE_TONEAREST);
}

}  // namespace
