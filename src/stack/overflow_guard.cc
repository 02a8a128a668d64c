// overflow_guard.cc - the SIGSEGV/SIGBUS handler of overflow_guard.h, how it
// passes on every signal that is not an overflow, and the per-thread
// alternate signal stacks it runs on.
#include "stack/overflow_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "base/dcheck.h"
#include "base/fatal.h"

// Where gdb finds the count in a core (see OverflowsCaught()).
extern "C" {
__attribute__((used, visibility("hidden"))) unsigned long long asyncjob_overflows_caught = 0;
}

namespace asyncjob::stack {
namespace {

std::atomic<FaultLocator> fault_locator{nullptr};

// What the process had for SIGSEGV and SIGBUS before our handler, and what
// we do with a signal that is not an overflow: behave as that disposition
// would have. Written under settings_mutex while the handler is not
// installed; read by the handler.
struct Previous {
  struct sigaction action;
  // The previous handler was installed with SA_RESETHAND and has run once:
  // the kernel would have reset it to SIG_DFL, so we act as SIG_DFL now.
  std::atomic<bool> reset{false};
};
Previous previous_segv;
Previous previous_bus;

std::mutex settings_mutex;
std::atomic<bool> installed{false};
// Cleared by SetOverflowHandlerEnabled(false) or ASYNCJOB_OVERFLOW_HANDLER=0:
// the handler is not installed (and, where it stays in someone's chain,
// only passes signals on).
std::atomic<bool> enabled{true};
bool environment_read = false;

constexpr std::size_t kAltStackSize = 64 * 1024;
thread_local void* own_alt_stack = nullptr;

Previous& PreviousFor(int signal_number) {
  return signal_number == SIGBUS ? previous_bus : previous_segv;
}

// Whether the kernel raised the signal for the instruction that is running
// (a fault, which re-executes when the handler returns), as opposed to a
// signal sent by kill(), raise(), sigqueue() or tgkill() (si_code <= 0).
bool IsFault(const siginfo_t* info) { return info != nullptr && info->si_code > 0; }

// The default action for a signal that is not ours: for a fault, restore
// SIG_DFL and return, so that the instruction faults again and the kernel
// kills the process with the right signal (and a core dump where enabled).
// A sent signal is sent again, to this thread: blocked while we run, it is
// delivered to SIG_DFL as soon as the handler returns.
void TakeDefaultAction(int signal_number, const siginfo_t* info) {
  struct sigaction default_action;
  std::memset(&default_action, 0, sizeof default_action);
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  sigaction(signal_number, &default_action, nullptr);
  if (!IsFault(info)) {
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), signal_number);
  }
}

// Runs the previous handler as the kernel would have: under its own mask
// (the mask of the interrupted code, plus its sa_mask, plus the signal
// itself unless SA_NODEFER), with the arguments its SA_SIGINFO asks for.
// It runs on asyncjob's alternate signal stack whether or not it asked for
// SA_ONSTACK (the faulting stack may have no room left).
void CallPreviousHandler(const struct sigaction& previous, int signal_number, siginfo_t* info,
                         void* ucontext) {
  sigset_t mask;
  if (ucontext != nullptr) {
    mask = static_cast<ucontext_t*>(ucontext)->uc_sigmask;
  } else {
    pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  }
  for (int other = 1; other < NSIG; ++other) {
    if (sigismember(&previous.sa_mask, other) == 1) sigaddset(&mask, other);
  }
  if ((previous.sa_flags & SA_NODEFER) != 0) {
    sigdelset(&mask, signal_number);
  } else {
    sigaddset(&mask, signal_number);
  }
  sigset_t ours;
  pthread_sigmask(SIG_SETMASK, &mask, &ours);
  if ((previous.sa_flags & SA_SIGINFO) != 0) {
    previous.sa_sigaction(signal_number, info, ucontext);
  } else {
    previous.sa_handler(signal_number);
  }
  pthread_sigmask(SIG_SETMASK, &ours, nullptr);
}

// A signal that is not a stack overflow: do what the disposition that was
// there before us would have done.
void ChainToPrevious(int signal_number, siginfo_t* info, void* ucontext) {
  Previous& previous = PreviousFor(signal_number);
  const struct sigaction& action = previous.action;
  bool is_function = (action.sa_flags & SA_SIGINFO) != 0
                         ? action.sa_sigaction != nullptr
                         : action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN;
  if (!is_function || previous.reset.load(std::memory_order_acquire)) {
    bool ignored = (action.sa_flags & SA_SIGINFO) == 0 && action.sa_handler == SIG_IGN &&
                   !previous.reset.load(std::memory_order_acquire);
    // A fault cannot be ignored: returning would run the faulting
    // instruction again, for ever. A sent signal can.
    if (ignored && !IsFault(info)) return;
    TakeDefaultAction(signal_number, info);
    return;
  }
  if ((action.sa_flags & SA_RESETHAND) != 0) {
    // One shot: the kernel would have reset it before calling it.
    previous.reset.store(true, std::memory_order_release);
  }
  CallPreviousHandler(action, signal_number, info, ucontext);
}

void ReportOverflowIfInAGuard(const siginfo_t* info) {
  const void* owner = nullptr;
  FaultLocator locator = fault_locator.load(std::memory_order_acquire);
  const Stack* stack = locator != nullptr ? locator(&owner) : nullptr;
  if (stack == nullptr || stack->kind != StackKind::kGuarded) return;
  auto* fault = static_cast<std::byte*>(info->si_addr);
  std::byte* guard_low = stack->low - GuardSize();
  if (fault < guard_low || fault >= stack->low) return;
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
  CountOverflow();
  // abort() raises SIGABRT, which needs no stack of the job.
  signal(SIGABRT, SIG_DFL);
  message.WriteAndAbort();
}

void OnFault(int signal_number, siginfo_t* info, void* ucontext) {
  int saved_errno = errno;
  if (IsFault(info) && enabled.load(std::memory_order_acquire)) ReportOverflowIfInAGuard(info);
  ChainToPrevious(signal_number, info, ucontext);
  errno = saved_errno;
}

bool IsOurs(const struct sigaction& action) {
  return (action.sa_flags & SA_SIGINFO) != 0 && action.sa_sigaction == &OnFault;
}

bool EnvironmentDisables() {
  const char* value = std::getenv("ASYNCJOB_OVERFLOW_HANDLER");
  if (value == nullptr) return false;
  return std::strcmp(value, "0") == 0 || std::strcmp(value, "off") == 0 ||
         std::strcmp(value, "no") == 0;
}

// Under settings_mutex.
void ReadEnvironmentOnce() {
  if (environment_read) return;
  environment_read = true;
  if (EnvironmentDisables()) enabled.store(false, std::memory_order_release);
}

// Under settings_mutex.
bool InstallLocked() {
  if (installed.load(std::memory_order_acquire)) return true;
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_sigaction = &OnFault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  struct sigaction old_segv;
  struct sigaction old_bus;
  if (sigaction(SIGSEGV, nullptr, &old_segv) != 0 || sigaction(SIGBUS, nullptr, &old_bus) != 0) {
    return false;
  }
  // Record what was there before the handler can run.
  previous_segv.action = old_segv;
  previous_segv.reset.store(false, std::memory_order_relaxed);
  previous_bus.action = old_bus;
  previous_bus.reset.store(false, std::memory_order_relaxed);
  if (sigaction(SIGSEGV, &action, nullptr) != 0) return false;
  if (sigaction(SIGBUS, &action, nullptr) != 0) {
    sigaction(SIGSEGV, &old_segv, nullptr);
    return false;
  }
  installed.store(true, std::memory_order_release);
  return true;
}

// Under settings_mutex. Puts back the previous dispositions where ours is
// still the one installed; where the program installed its own over ours
// (and may chain to us), ours stays in its chain as a pass-through.
void UninstallLocked() {
  if (!installed.load(std::memory_order_acquire)) return;
  for (int signal_number : {SIGSEGV, SIGBUS}) {
    struct sigaction current;
    if (sigaction(signal_number, nullptr, &current) == 0 && IsOurs(current)) {
      Previous& previous = PreviousFor(signal_number);
      struct sigaction restore = previous.action;
      if (previous.reset.load(std::memory_order_acquire)) {
        std::memset(&restore, 0, sizeof restore);
        restore.sa_handler = SIG_DFL;
      }
      sigaction(signal_number, &restore, nullptr);
    }
  }
  installed.store(false, std::memory_order_release);
}

}  // namespace

void SetFaultLocator(FaultLocator locator) {
  ASYNCJOB_DCHECK(locator != nullptr);
  fault_locator.store(locator, std::memory_order_release);
}

bool SetOverflowHandlerEnabled(bool enable) {
  std::lock_guard lock(settings_mutex);
  environment_read = true;  // an explicit choice overrides the environment
  enabled.store(enable, std::memory_order_release);
  if (!enable) {
    UninstallLocked();
    return true;
  }
  return InstallLocked();
}

bool OverflowHandlerInstalled() {
  std::lock_guard lock(settings_mutex);
  if (!installed.load(std::memory_order_acquire)) return false;
  struct sigaction current;
  return sigaction(SIGSEGV, nullptr, &current) == 0 && IsOurs(current);
}

void PrepareThreadForOverflow() {
  {
    std::lock_guard lock(settings_mutex);
    ReadEnvironmentOnce();
    if (!enabled.load(std::memory_order_acquire)) return;
    if (!InstallLocked()) return;  // overflows are still stopped by the guard
  }
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

std::uint64_t OverflowsCaught() {
  return __atomic_load_n(&asyncjob_overflows_caught, __ATOMIC_RELAXED);
}

void CountOverflow() { __atomic_fetch_add(&asyncjob_overflows_caught, 1, __ATOMIC_RELAXED); }

}  // namespace asyncjob::stack
