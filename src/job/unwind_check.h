// unwind_check.h - whether a C++ exception thrown here would unwind the
// calling thread's stack up to a given frame, or end in std::terminate.
//
// This unit owns the question Cancel() must answer before it throws
// JobCancelled into a paused job: the C++ runtime calls std::terminate, with
// no way back, when the exception meets a frame it cannot unwind (a frame
// with no unwind information, such as C compiled with
// -fno-asynchronous-unwind-tables) or a frame that forbids exceptions (a
// noexcept function, a destructor). It knows nothing of jobs: it is given
// the function whose frame ends the walk (the job's entry, which catches the
// exception).
//
// How: _Unwind_Backtrace() walks the stack frame by frame, reading the same
// unwind tables (.eh_frame) the exception would. For each frame that has a
// language-specific data area (LSDA, the .gcc_except_table entry of a C++
// function) the check reads it as the C++ personality routine would for an
// exception of an unrelated type (JobCancelled is caught only by catch (...)
// and by the job's entry):
//   - the frame's instruction pointer lies in no call-site entry: terminate
//     (GCC encodes noexcept functions and destructors this way);
//   - its entry names an exception specification: terminate;
//   - its entry leads to a catch (...) whose landing pad calls Clang's
//     terminate helper (__clang_call_terminate; Clang encodes noexcept this
//     way): terminate. Recognised on x86-64 only; see IsTerminateLandingPad
//     in unwind_check.cc;
//   - anything else (a cleanup, a typed catch that does not match, a
//     catch (...) that is assumed to rethrow): the exception passes.
// Frames without an LSDA, and frames of another language's personality
// (C code built with -fexceptions), run no C++ handlers and pass.
//
// Cold path only: each frame costs an FDE lookup and, for C++ frames, an
// LSDA read.
//
//   UnwindCheck check = CheckUnwindTo(reinterpret_cast<const void*>(&Entry), 1);
//   if (check.blocker != UnwindBlocker::kNone) { ...report check.frame... }
#ifndef ASYNCJOB_SRC_JOB_UNWIND_CHECK_H_
#define ASYNCJOB_SRC_JOB_UNWIND_CHECK_H_

#include <cstddef>
#include <cstdint>

namespace asyncjob::job {

enum class UnwindBlocker : std::uint8_t {
  kNone,                    // the exception would reach the stop frame
  kNoUnwindInfo,            // the walk ended early: a frame has no unwind tables
  kNoexcept,                // a noexcept frame (or a destructor) would terminate
  kExceptionSpecification,  // a dynamic exception specification would terminate
  kStopFrameNotFound,       // the walk ended cleanly without meeting the stop frame
};

struct UnwindCheck {
  UnwindBlocker blocker = UnwindBlocker::kNone;
  const void* frame = nullptr;  // the blocking frame's instruction pointer
  int frames_walked = 0;        // frames examined (after the skipped ones)
};

// Examines the frames from CheckUnwindTo()'s caller outwards, after
// skipping `frames_to_skip` of them (0: the caller is the first examined),
// up to the frame of the function that starts at `stop_function`, which is
// not examined: it is trusted to catch the exception.
UnwindCheck CheckUnwindTo(const void* stop_function, int frames_to_skip);

// "name" of the function containing `address`, from the dynamic symbol
// table, or nullptr when unknown (a static or hidden function). *start gets
// the function's address when known.
const char* FunctionNameAt(const void* address, const void** start);

// Human-readable text of a blocker ("no unwind information", ...).
const char* DescribeBlocker(UnwindBlocker blocker);

}  // namespace asyncjob::job

#endif  // ASYNCJOB_SRC_JOB_UNWIND_CHECK_H_
