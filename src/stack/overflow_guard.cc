// overflow_guard.cc - the SIGSEGV/SIGBUS handler of overflow_guard.h and the
// per-thread alternate signal stacks it runs on.
#include "stack/overflow_guard.h"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "base/dcheck.h"
#include "base/fatal.h"

namespace asyncjob::stack {
namespace {

std::atomic<FaultLocator> fault_locator{nullptr};
struct sigaction previous_segv;
struct sigaction previous_bus;
std::once_flag install_once;

constexpr std::size_t kAltStackSize = 64 * 1024;
thread_local void* own_alt_stack = nullptr;

void ChainToPrevious(const struct sigaction& previous, int signal_number,
                     siginfo_t* info, void* ucontext) {
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(signal_number, info, ucontext);
    return;
  }
  if (previous.sa_handler == SIG_IGN) return;
  if (previous.sa_handler == SIG_DFL) {
    // Re-raise with the default action: the faulting instruction runs again
    // when we return and the kernel applies it.
    struct sigaction restore = previous;
    sigaction(signal_number, &restore, nullptr);
    return;
  }
  previous.sa_handler(signal_number);
}

void OnFault(int signal_number, siginfo_t* info, void* ucontext) {
  const void* owner = nullptr;
  FaultLocator locator = fault_locator.load(std::memory_order_acquire);
  const Stack* stack = locator != nullptr ? locator(&owner) : nullptr;
  if (stack != nullptr && stack->kind == StackKind::kGuarded) {
    auto* fault = static_cast<std::byte*>(info->si_addr);
    std::byte* guard_low = stack->low - GuardSize();
    if (fault >= guard_low && fault < stack->low) {
      // Formatted in a fixed buffer and written with write(2): safe here.
      base::FatalMessage message;
      message.Add("asyncjob: stack overflow in job ")
          .AddPointer(owner)
          .Add(": fault at ")
          .AddPointer(fault)
          .Add(" in the guard ")
          .AddPointer(guard_low)
          .Add("-")
          .AddPointer(stack->low)
          .Add(" below its stack ")
          .AddPointer(stack->low)
          .Add("-")
          .AddPointer(stack->high())
          .Add(" (")
          .AddDecimal(stack->size)
          .Add(" bytes)\n");
      // abort() raises SIGABRT, which needs no stack of the job.
      signal(SIGABRT, SIG_DFL);
      message.WriteAndAbort();
    }
  }
  ChainToPrevious(signal_number == SIGBUS ? previous_bus : previous_segv,
                  signal_number, info, ucontext);
}

void InstallHandler() {
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_sigaction = &OnFault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, &previous_segv);
  sigaction(SIGBUS, &action, &previous_bus);
}

}  // namespace

void SetFaultLocator(FaultLocator locator) {
  ASYNCJOB_DCHECK(locator != nullptr);
  fault_locator.store(locator, std::memory_order_release);
}

void PrepareThreadForOverflow() {
  std::call_once(install_once, &InstallHandler);
  stack_t current;
  if (sigaltstack(nullptr, &current) != 0) return;
  if ((current.ss_flags & SS_DISABLE) == 0) return;  // the thread has one
  void* memory = mmap(nullptr, kAltStackSize, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) return;  // overflows then die without a message
  stack_t alternate;
  alternate.ss_sp = memory;
  alternate.ss_size = kAltStackSize;
  alternate.ss_flags = 0;
  if (sigaltstack(&alternate, nullptr) != 0) {
    munmap(memory, kAltStackSize);
    return;
  }
  own_alt_stack = memory;
}

void ReleaseThreadAltStack() {
  if (own_alt_stack == nullptr) return;
  stack_t current;
  if (sigaltstack(nullptr, &current) == 0 && current.ss_sp == own_alt_stack &&
      (current.ss_flags & SS_ONSTACK) == 0) {
    stack_t disable;
    std::memset(&disable, 0, sizeof disable);
    disable.ss_flags = SS_DISABLE;
    sigaltstack(&disable, nullptr);
    munmap(own_alt_stack, kAltStackSize);
  }
  own_alt_stack = nullptr;
}

}  // namespace asyncjob::stack
