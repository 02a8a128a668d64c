// context.h - execution contexts and the switch between them.
//
// This unit owns the lowest layer of asyncjob: saving the registers of the
// running code, loading another context's, and building the first frame of a
// context that has never run. It knows nothing of jobs or pools: it is given a
// stack (any memory) and an entry function.
//
// Two back ends share this interface, chosen at configure time:
//   - assembly (context_x86_64_sysv.S, context_aarch64_aapcs.S): saves the
//     callee-saved registers and the FP control state on the stack being left;
//     the FP control state is reloaded only when it differs (a reload costs a
//     serializing instruction).
//   - ucontext (context_ucontext.cc): swapcontext(3); portable, much slower.
//
// The sanitizer and debugger protocols (ASan and TSan fibre annotations) live
// here as well, so that every switch in the program goes through them.
//
// Usage:
//   Context thread_ctx, fibre;
//   InitializeThreadContext(&thread_ctx);
//   Prepare(&fibre, stack_low, stack_size, &Entry, arg);
//   void* from_fibre = Switch(&thread_ctx, &fibre, to_fibre);
//   ...
//   // in Entry(transfer, arg), to leave for good:
//   SwitchForGood(&fibre, &thread_ctx, result);
//
// A context must only be switched to from the thread that prepared it.
#ifndef ASYNCJOB_SRC_CONTEXT_CONTEXT_H_
#define ASYNCJOB_SRC_CONTEXT_CONTEXT_H_

#include <cstddef>

#include "base/sanitizers.h"

#if ASYNCJOB_CONTEXT_UCONTEXT
#include <ucontext.h>
#endif

// Whether switches can be left through by a tail call (SwitchAndReturn()
// and Divert() below): the assembly back end, without sanitizers, whose
// fibre annotations need code to run after every switch.
#if !ASYNCJOB_CONTEXT_UCONTEXT && !ASYNCJOB_ASAN && !ASYNCJOB_TSAN
#define ASYNCJOB_CONTEXT_RETURN_FREE 1
#else
#define ASYNCJOB_CONTEXT_RETURN_FREE 0
#endif

namespace asyncjob::context {

// The function a fresh context starts in. It receives the transfer value of
// the switch that first entered it and the argument given to Prepare(). It
// must never return: it leaves with SwitchForGood().
using EntryFunction = void (*)(void* transfer, void* argument);

struct Context {
#if ASYNCJOB_CONTEXT_UCONTEXT
  ucontext_t ucontext{};
#else
  void* stack_pointer = nullptr;  // where the switch saved the registers
#endif
  EntryFunction entry = nullptr;
  void* entry_argument = nullptr;
  // Bounds of the stack this context runs on (the thread's own stack learns
  // them from AddressSanitizer on the first switch away from it).
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
#if ASYNCJOB_ASAN
  void* asan_fake_stack = nullptr;
#endif
#if ASYNCJOB_TSAN
  void* tsan_fiber = nullptr;
  bool owns_tsan_fiber = false;
#endif
};

// Makes *context stand for the code running now on this thread's own stack.
void InitializeThreadContext(Context* context);

// Builds, on [stack_low, stack_low + stack_size), a context that will call
// entry(transfer, argument) when first switched to. May be called again on the
// same Context to reuse it once its previous run has left for good.
void Prepare(Context* context, void* stack_low, std::size_t stack_size, EntryFunction entry,
             void* argument);

// Releases what Prepare() acquired for tools (the TSan fibre).
void Destroy(Context* context);

// Saves the running code into *from and resumes *to, handing it transfer
// (returned by the Switch() that suspended *to, or given to its entry
// function). Returns the transfer value of the switch that later resumes
// *from.
void* Switch(Context* from, Context* to, void* transfer);

// Like Switch(), for a context that will never be resumed again (until it is
// prepared anew).
[[noreturn]] void SwitchForGood(Context* from, Context* to, void* transfer);

#if ASYNCJOB_CONTEXT_RETURN_FREE
// Return-free switching (docs/design.md): these let the code around a switch
// avoid the returns the CPU's return predictor would get wrong.

// Switch() as the last step of a function returning int: written
// `return SwitchAndReturn(from, to, value);` it compiles to a jump, so that
// when *from is resumed the switch returns straight into that function's
// caller, handing it the int transfer value of the switch that resumed *from.
// Whatever the function must do after being resumed, the resuming side does.
inline int SwitchAndReturn(Context* from, Context* to, int transfer);

// Diverting a context suspended by a switch: when next switched to with
// `&diversion` as the transfer value, it calls diversion.function(argument)
// as if the code it was suspended in had made that call just after its
// switch returned (so the function may throw into that code), instead of
// returning there. Divert() fills in return_address.
struct Diversion {
  void* return_address;
  void (*function)(void*);
  void* argument;
};
inline void Divert(Context* paused, Diversion* diversion);

// SwitchAndReturn() as SwitchKeepingFp() below.
inline int SwitchAndReturnKeepingFp(Context* from, Context* to, int transfer);
#endif

#if !ASYNCJOB_CONTEXT_UCONTEXT
// Switch(), except that *to goes on with the FP control state of the code
// calling it rather than the one it was suspended with (docs/design.md, "FP
// control state"): for a parked job context about to run a new job, which
// must start with its starter's rounding mode, not the one the previous job
// left there. The state of *from is saved as usual. Assembly back ends only
// (contexts are parked only there).
inline void* SwitchKeepingFp(Context* from, Context* to, void* transfer);
#endif

// "x86_64-sysv", "aarch64-aapcs" or "ucontext".
const char* BackendName();

// Introspection: the registers a suspended context saved, for walking its
// stack from outside (a debugger, or another context of the same thread).
struct SavedRegisters {
  const void* pc = nullptr;  // where it goes on when resumed
  const void* sp = nullptr;  // its stack pointer once resumed
  const void* fp = nullptr;  // its frame pointer (x86-64 rbp, AArch64 x29)
};
// false when `context` is not suspended (never switched away from).
bool GetSavedRegisters(const Context* context, SavedRegisters* out);

// Where the assembly back ends keep those registers, as offsets from the
// saved stack pointer (Context::stack_pointer), and the size of the saved
// frame; all 0 for the ucontext back end.
struct SavedFrameLayout {
  unsigned fp_offset;
  unsigned pc_offset;
  unsigned size;
};
constexpr SavedFrameLayout SavedFrame() {
#if ASYNCJOB_CONTEXT_UCONTEXT
  return {0, 0, 0};
#elif defined(__x86_64__)
  return {48, 56, 64};            // FRAME_RBP, FRAME_RETURN, FRAME_SIZE in context_x86_64_sysv.S
#elif defined(__aarch64__)
  return {160, 168, 176};  // x29, x30 and FRAME_SIZE in context_aarch64_aapcs.S
#else
  return {0, 0, 0};
#endif
}

}  // namespace asyncjob::context

#if !ASYNCJOB_CONTEXT_UCONTEXT
#include "context/context_asm_inl.h"
#endif

#endif  // ASYNCJOB_SRC_CONTEXT_CONTEXT_H_
