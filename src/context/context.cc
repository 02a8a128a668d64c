// context.cc - the parts of the context unit shared by both back ends.
#include "context/context.h"

#include <cstdlib>
#include <cstring>

#include "base/align.h"
#include "base/dcheck.h"
#include "context/annotations.h"

namespace asyncjob::context {

void InitializeThreadContext(Context* context) {
  ASYNCJOB_DCHECK(context != nullptr);
  *context = Context{};
#if ASYNCJOB_TSAN
  context->tsan_fiber = __tsan_get_current_fiber();
  context->owns_tsan_fiber = false;
#endif
}

void Destroy([[maybe_unused]] Context* context) {
#if ASYNCJOB_TSAN
  if (context->owns_tsan_fiber && context->tsan_fiber != nullptr) {
    __tsan_destroy_fiber(context->tsan_fiber);
  }
  context->tsan_fiber = nullptr;
  context->owns_tsan_fiber = false;
#endif
}

namespace internal {

void EntryShim(void* transfer, void* argument) {
  auto* self = static_cast<Context*>(argument);
  AfterSwitch(self);
  self->entry(transfer, self->entry_argument);
  // The entry function must leave with SwitchForGood().
  std::abort();
}

// Records what every back end's Prepare() needs before it builds its frame.
void PrepareCommon(Context* context, void* stack_low, std::size_t stack_size, EntryFunction entry,
                   void* argument) {
  ASYNCJOB_DCHECK(context != nullptr && entry != nullptr);
  ASYNCJOB_DCHECK(stack_low != nullptr && stack_size > 0);
  context->entry = entry;
  context->entry_argument = argument;
  context->stack_bottom = stack_low;
  context->stack_size = stack_size;
#if ASYNCJOB_ASAN
  context->asan_fake_stack = nullptr;
#endif
#if ASYNCJOB_TSAN
  // A fresh fibre each run: the previous run left frames on its shadow
  // stack that never returned (the entry function leaves by switching).
  if (context->owns_tsan_fiber && context->tsan_fiber != nullptr) {
    __tsan_destroy_fiber(context->tsan_fiber);
  }
  context->tsan_fiber = __tsan_create_fiber(0);
  context->owns_tsan_fiber = true;
#endif
}

}  // namespace internal

#if !ASYNCJOB_CONTEXT_UCONTEXT

void Prepare(Context* context, void* stack_low, std::size_t stack_size, EntryFunction entry,
             void* argument) {
  internal::PrepareCommon(context, stack_low, stack_size, entry, argument);
  // The ABIs want the stack 16-byte aligned at a call.
  std::byte* top = base::AlignDown(static_cast<std::byte*>(stack_low) + stack_size, 16);
  context->stack_pointer = asyncjob_context_make(top, &internal::EntryShim, context);
}

const char* BackendName() {
#if defined(__x86_64__)
  return "x86_64-sysv";
#elif defined(__aarch64__)
  return "aarch64-aapcs";
#endif
}

#endif  // !ASYNCJOB_CONTEXT_UCONTEXT

bool GetSavedRegisters(const Context* context, SavedRegisters* out) {
#if ASYNCJOB_CONTEXT_UCONTEXT
  const mcontext_t& machine = context->ucontext.uc_mcontext;
#if defined(__x86_64__)
  out->pc = reinterpret_cast<const void*>(machine.gregs[REG_RIP]);
  out->sp = reinterpret_cast<const void*>(machine.gregs[REG_RSP]);
  out->fp = reinterpret_cast<const void*>(machine.gregs[REG_RBP]);
#elif defined(__aarch64__)
  out->pc = reinterpret_cast<const void*>(machine.pc);
  out->sp = reinterpret_cast<const void*>(machine.sp);
  out->fp = reinterpret_cast<const void*>(machine.regs[29]);
#else
  (void)machine;
  return false;
#endif
  return out->pc != nullptr;
#else
  const auto* saved = static_cast<const unsigned char*>(context->stack_pointer);
  if (saved == nullptr) return false;
  constexpr SavedFrameLayout frame = SavedFrame();
  std::memcpy(&out->fp, saved + frame.fp_offset, sizeof out->fp);
  std::memcpy(&out->pc, saved + frame.pc_offset, sizeof out->pc);
  out->sp = saved + frame.size;
  return true;
#endif
}

}  // namespace asyncjob::context
