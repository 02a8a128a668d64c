// context_ucontext.cc - the portable back end: getcontext/makecontext/
// swapcontext from the C library.
//
// Selected with -DASYNCJOB_CONTEXT_BACKEND=ucontext. Every switch makes a
// signal-mask system call inside swapcontext(), so it is an order of
// magnitude slower than the assembly back ends; it exists for platforms
// without them and as a reference the test suite also runs against.
#include "context/context.h"

#if ASYNCJOB_CONTEXT_UCONTEXT

#include <cstdlib>

#include "base/dcheck.h"
#include "context/annotations.h"

namespace asyncjob::context {
namespace {

// makecontext() can pass only int arguments portably, so the switch hands
// its transfer value and target through the thread instead.
thread_local void* pending_transfer = nullptr;
thread_local Context* entering = nullptr;

void UcontextEntry() { internal::EntryShim(pending_transfer, entering); }

}  // namespace

void Prepare(Context* context, void* stack_low, std::size_t stack_size, EntryFunction entry,
             void* argument) {
  internal::PrepareCommon(context, stack_low, stack_size, entry, argument);
  if (getcontext(&context->ucontext) != 0) std::abort();
  context->ucontext.uc_stack.ss_sp = stack_low;
  context->ucontext.uc_stack.ss_size = stack_size;
  context->ucontext.uc_link = nullptr;
  makecontext(&context->ucontext, &UcontextEntry, 0);
}

void* Switch(Context* from, Context* to, void* transfer) {
  ASYNCJOB_DCHECK(from != to);
  internal::BeforeSwitch(from, to, /*leaving_for_good=*/false);
  pending_transfer = transfer;
  entering = to;
  ASYNCJOB_TSAN_SWITCH_TO_FIBER(to);
  if (swapcontext(&from->ucontext, &to->ucontext) != 0) std::abort();
  internal::AfterSwitch(from);
  return pending_transfer;
}

void SwitchForGood(Context* from, Context* to, void* transfer) {
  ASYNCJOB_DCHECK(from != to);
  internal::BeforeSwitch(from, to, /*leaving_for_good=*/true);
  pending_transfer = transfer;
  entering = to;
  ASYNCJOB_TSAN_SWITCH_TO_FIBER(to);
  setcontext(&to->ucontext);
  std::abort();
}

const char* BackendName() { return "ucontext"; }

}  // namespace asyncjob::context

#endif  // ASYNCJOB_CONTEXT_UCONTEXT
