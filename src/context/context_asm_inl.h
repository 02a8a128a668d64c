// context_asm_inl.h - the assembly back end's switch, inlined into callers.
//
// Internal to the context unit; included by context.h. The routines named
// here are written in assembly, one file per ABI:
//   context_x86_64_sysv.S   (x86-64, System V)
//   context_aarch64_aapcs.S (AArch64, AAPCS64)
#ifndef ASYNCJOB_SRC_CONTEXT_CONTEXT_ASM_INL_H_
#define ASYNCJOB_SRC_CONTEXT_CONTEXT_ASM_INL_H_

#include <cstdint>

#include "base/dcheck.h"
#include "context/annotations.h"

extern "C" {
// Pushes the callee-saved registers and FP control state on the current
// stack, stores the stack pointer in *save_sp, loads load_sp and pops the
// registers saved there. Returns `transfer` on the resumed side.
void* asyncjob_context_switch(void** save_sp, void* load_sp, void* transfer);

// The same, except that the resumed context keeps the caller's FP control
// state instead of loading its own (see SwitchKeepingFp()).
void* asyncjob_context_switch_keep_fp(void** save_sp, void* load_sp, void* transfer);

#if ASYNCJOB_CONTEXT_RETURN_FREE
// The same routine seen as returning an int, so that a function returning
// int can leave through it by a tail call (see SwitchAndReturn()).
int asyncjob_context_switch_int(void** save_sp, void* load_sp,
                                std::intptr_t transfer) __asm__("asyncjob_context_switch");

// The same as asyncjob_context_switch_keep_fp, seen as returning an int.
int asyncjob_context_switch_keep_fp_int(
    void** save_sp, void* load_sp,
    std::intptr_t transfer) __asm__("asyncjob_context_switch_keep_fp");

// Makes the context saved at saved_sp resume in a stub that calls
// function(argument), read from the Diversion its transfer value points to,
// in place of returning; returns the return address it replaced.
void* asyncjob_context_divert(void* saved_sp);
#endif

// Builds at stack_top (16-byte aligned, growing down) a frame that the switch
// can load: it "returns" into a trampoline that calls shim(transfer, argument)
// with the current FP control state. Returns the stack pointer to load.
void* asyncjob_context_make(void* stack_top, void (*shim)(void*, void*), void* argument);
}

namespace asyncjob::context {

inline void* Switch(Context* from, Context* to, void* transfer) {
  // *to was prepared, or suspended by a switch away from it.
  ASYNCJOB_DCHECK(from != to && to->stack_pointer != nullptr);
  internal::BeforeSwitch(from, to, /*leaving_for_good=*/false);
  ASYNCJOB_TSAN_SWITCH_TO_FIBER(to);
  void* received = asyncjob_context_switch(&from->stack_pointer, to->stack_pointer, transfer);
  internal::AfterSwitch(from);
  return received;
}

[[noreturn]] inline void SwitchForGood(Context* from, Context* to, void* transfer) {
  ASYNCJOB_DCHECK(from != to && to->stack_pointer != nullptr);
  internal::BeforeSwitch(from, to, /*leaving_for_good=*/true);
  ASYNCJOB_TSAN_SWITCH_TO_FIBER(to);
  asyncjob_context_switch(&from->stack_pointer, to->stack_pointer, transfer);
  __builtin_unreachable();
}

inline void* SwitchKeepingFp(Context* from, Context* to, void* transfer) {
  ASYNCJOB_DCHECK(from != to && to->stack_pointer != nullptr);
  internal::BeforeSwitch(from, to, /*leaving_for_good=*/false);
  ASYNCJOB_TSAN_SWITCH_TO_FIBER(to);
  void* received =
      asyncjob_context_switch_keep_fp(&from->stack_pointer, to->stack_pointer, transfer);
  internal::AfterSwitch(from);
  return received;
}

#if ASYNCJOB_CONTEXT_RETURN_FREE
inline int SwitchAndReturn(Context* from, Context* to, int transfer) {
  return asyncjob_context_switch_int(&from->stack_pointer, to->stack_pointer, transfer);
}

inline int SwitchAndReturnKeepingFp(Context* from, Context* to, int transfer) {
  return asyncjob_context_switch_keep_fp_int(&from->stack_pointer, to->stack_pointer, transfer);
}

inline void Divert(Context* paused, Diversion* diversion) {
  diversion->return_address = asyncjob_context_divert(paused->stack_pointer);
}
#endif

}  // namespace asyncjob::context

#endif  // ASYNCJOB_SRC_CONTEXT_CONTEXT_ASM_INL_H_
