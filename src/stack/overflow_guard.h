// overflow_guard.h - turns a fault in a guard region into a clear message.
//
// This unit owns asyncjob's SIGSEGV/SIGBUS handler. The handler runs on an
// alternate signal stack (an overflowing stack has no room left for it),
// asks the job layer which stack is running (the FaultLocator), and if the
// faulting address lies in that stack's guard region it prints
//
//   asyncjob: stack overflow in job 0x...: fault at 0x... in the guard
//   0x...-0x... below its stack 0x...-0x... (65536 bytes)
//
// and aborts. Any other signal goes where it would have gone without us:
// to the handler installed before ours, called as the kernel would have
// called it (its SA_SIGINFO, SA_NODEFER, SA_RESETHAND and sa_mask
// honoured), or to the default action (a fault whose previous disposition
// was SIG_DFL or SIG_IGN kills the process by that signal; a signal sent
// with kill() or raise() is ignored or re-sent to SIG_DFL).
//
// Hosts that own their signals keep the handler out with
// SetOverflowHandlerEnabled(false) or ASYNCJOB_OVERFLOW_HANDLER=0; an
// overflow then still faults in the guard, without the message.
//
//   stack::SetFaultLocator(&CurrentStack);  // once
//   stack::PrepareThreadForOverflow();      // on each thread that runs jobs
//   stack::ReleaseThreadAltStack();         // before that thread exits
#ifndef ASYNCJOB_SRC_STACK_OVERFLOW_GUARD_H_
#define ASYNCJOB_SRC_STACK_OVERFLOW_GUARD_H_

#include <cstdint>

#include "stack/stack.h"

namespace asyncjob::stack {

// Returns the stack of the job running on this thread (nullptr when none)
// and stores an identifying pointer for the message in *owner. Called from
// the signal handler: must be async-signal-safe.
using FaultLocator = const Stack* (*)(const void** owner);

void SetFaultLocator(FaultLocator locator);

// Installs the process-wide handler (once, unless disabled) and gives the
// calling thread an alternate signal stack if it has none.
void PrepareThreadForOverflow();

// false: uninstalls the handler (putting back the previous dispositions
// where ours is still the current one) and keeps it out. true: installs it
// now; false when sigaction() refused.
bool SetOverflowHandlerEnabled(bool enable);
// Whether asyncjob's handler is the current SIGSEGV disposition.
bool OverflowHandlerInstalled();

// Frees the alternate signal stack PrepareThreadForOverflow() gave this
// thread, if any.
void ReleaseThreadAltStack();

// Stack overflows caught in this process, by the guard (the handler) or by
// a slab stack's canary. Each stops the process right after its message,
// so a live process reads 0; the count is for a core file (the gdb
// extension's `asyncjob stats` reads the hidden symbol
// asyncjob_overflows_caught) and a dump made at that moment.
std::uint64_t OverflowsCaught();
// Counts one (async-signal-safe).
void CountOverflow();

}  // namespace asyncjob::stack

#endif  // ASYNCJOB_SRC_STACK_OVERFLOW_GUARD_H_
