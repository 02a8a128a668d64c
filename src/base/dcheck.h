// dcheck.h - ASYNCJOB_DCHECK: invariants checked in debugging builds only.
//
// This unit owns the one assertion macro of the library. An invariant that
// callers must keep (a precondition, "only on the owning thread", "the job
// is paused here") is written where it holds:
//
//   ASYNCJOB_DCHECK(job->state == JobState::kPaused);
//
// Debug builds (NDEBUG not defined) and sanitizer builds check it: when it
// is false the process dies through base/fatal.h with
//
//   asyncjob: DCHECK failed at src/stack/stack.cc:42: stack != nullptr
//
// Other builds compile the condition (so that it keeps type-checking) but
// never evaluate it: it must have no side effect the program relies on. It
// knows nothing of the code it checks; errors a caller can make through the
// public API are reported through the error queue, never with a DCHECK.
#ifndef ASYNCJOB_SRC_BASE_DCHECK_H_
#define ASYNCJOB_SRC_BASE_DCHECK_H_

#include "base/fatal.h"
#include "base/sanitizers.h"

#if !defined(NDEBUG) || ASYNCJOB_ASAN || ASYNCJOB_TSAN
#define ASYNCJOB_DCHECK_IS_ON 1
#else
#define ASYNCJOB_DCHECK_IS_ON 0
#endif

namespace asyncjob::base {

[[noreturn, gnu::cold, gnu::noinline]] inline void DcheckFailed(const char* file, int line,
                                                                const char* condition) {
  FatalMessage message;
  message.Add("asyncjob: DCHECK failed at ")
      .Add(file)
      .Add(":")
      .AddDecimal(static_cast<unsigned long long>(line))
      .Add(": ")
      .Add(condition)
      .Add("\n");
  message.WriteAndAbort();
}

}  // namespace asyncjob::base

#if ASYNCJOB_DCHECK_IS_ON
#define ASYNCJOB_DCHECK(condition)                                    \
  do {                                                                \
    if (!(condition)) [[unlikely]] {                                  \
      ::asyncjob::base::DcheckFailed(__FILE__, __LINE__, #condition); \
    }                                                                 \
  } while (false)
#else
// sizeof: the condition is compiled, never evaluated.
#define ASYNCJOB_DCHECK(condition) static_cast<void>(sizeof(!(condition)))
#endif

#endif  // ASYNCJOB_SRC_BASE_DCHECK_H_
