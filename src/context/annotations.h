// annotations.h - tells ASan and TSan about every switch between contexts.
//
// Internal to the context unit. Each back end calls BeforeSwitch() just
// before it changes stacks and AfterSwitch() first thing once it runs again;
// the entry shim calls AfterSwitch() when a fresh context starts. In builds
// without the tools these are empty inline functions.
//
// TSan is told of the switch by TSAN_SWITCH_TO_FIBER in the body of the
// function that performs it, not in a helper: TSan keeps a shadow call stack
// per fibre, and a helper that returned after the switch would pop its frame
// from the fibre being entered.
#ifndef ASYNCJOB_SRC_CONTEXT_ANNOTATIONS_H_
#define ASYNCJOB_SRC_CONTEXT_ANNOTATIONS_H_

#include "context/context.h"

namespace asyncjob::context::internal {

#if ASYNCJOB_ASAN
// The context being left by the switch in progress on this thread: the
// context that resumes reads it to record the bounds of the stack it left.
inline thread_local Context* switching_from = nullptr;
#endif

// leaving_for_good: *from will not resume, so ASan may drop its fake stack.
inline void BeforeSwitch([[maybe_unused]] Context* from, [[maybe_unused]] Context* to,
                         [[maybe_unused]] bool leaving_for_good) {
#if ASYNCJOB_ASAN
  switching_from = from;
  __sanitizer_start_switch_fiber(leaving_for_good ? nullptr : &from->asan_fake_stack,
                                 to->stack_bottom, to->stack_size);
#endif
}

#if ASYNCJOB_TSAN
#define ASYNCJOB_TSAN_SWITCH_TO_FIBER(to) __tsan_switch_to_fiber((to)->tsan_fiber, 0)
#else
#define ASYNCJOB_TSAN_SWITCH_TO_FIBER(to) static_cast<void>(to)
#endif

// `self` is the context now running again (or for the first time).
inline void AfterSwitch([[maybe_unused]] Context* self) {
#if ASYNCJOB_ASAN
  Context* left = switching_from;
  const void* bottom = nullptr;
  std::size_t size = 0;
  __sanitizer_finish_switch_fiber(self->asan_fake_stack, &bottom, &size);
  self->asan_fake_stack = nullptr;
  if (left != nullptr && left->stack_bottom == nullptr) {
    left->stack_bottom = bottom;
    left->stack_size = size;
  }
#endif
}

// Records in *context what every back end's Prepare() needs before it builds
// the first frame.
void PrepareCommon(Context* context, void* stack_low, std::size_t stack_size, EntryFunction entry,
                   void* argument);

// The first code a fresh context runs: completes the tools' view of the
// switch, then calls the entry function given to Prepare().
[[noreturn]] void EntryShim(void* transfer, void* context);

}  // namespace asyncjob::context::internal

#endif  // ASYNCJOB_SRC_CONTEXT_ANNOTATIONS_H_
