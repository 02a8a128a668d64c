// fault_wraps.cc - the --wrap targets behind fault_wraps.h.
#include "fault_wraps.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <new>
#include <system_error>
#include <thread>

namespace fault {
namespace {

std::atomic<bool> armed{false};
std::atomic<bool> always{false};
std::atomic<int> armed_call{-1};
std::atomic<int> remaining{0};  // matching calls to let through, then fail
std::atomic<std::size_t> armed_size{0};
std::atomic<int> fired{0};

// Whether this call, of kind `call`, is to fail.
bool Take(Call call, std::size_t size = 0) {
  if (!armed.load(std::memory_order_acquire)) return false;
  if (armed_call.load(std::memory_order_relaxed) != static_cast<int>(call)) return false;
  if (call == Call::kMalloc && size != armed_size.load(std::memory_order_relaxed)) return false;
  if (always.load(std::memory_order_relaxed)) {
    fired.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return false;
  armed.store(false, std::memory_order_release);
  fired.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace

void Arm(Call call, int nth, std::size_t size) {
  fired.store(0);
  armed_call.store(static_cast<int>(call));
  armed_size.store(size);
  remaining.store(nth);
  always.store(false);
  armed.store(true, std::memory_order_release);
}

void ArmAlways(Call call, std::size_t size) {
  Arm(call, 1, size);
  always.store(true);
}

void Disarm() { armed.store(false, std::memory_order_release); }

int Fired() { return fired.load(); }

}  // namespace fault

using fault::Call;

extern "C" {

void* __real_mmap(void* address, size_t length, int protection, int flags, int fd, off_t offset);
void* __wrap_mmap(void* address, size_t length, int protection, int flags, int fd, off_t offset);
int __real_mprotect(void* address, size_t length, int protection);
int __wrap_mprotect(void* address, size_t length, int protection);
void* __real_malloc(size_t size);
void* __wrap_malloc(size_t size);
int __real_eventfd(unsigned int initial, int flags);
int __wrap_eventfd(unsigned int initial, int flags);
void* __real__Znwm(size_t size);
void* __wrap__Znwm(size_t size);
void* __real__ZnwmRKSt9nothrow_t(size_t size, const std::nothrow_t& tag) noexcept;
void* __wrap__ZnwmRKSt9nothrow_t(size_t size, const std::nothrow_t& tag) noexcept;
// void std::thread::_M_start_thread(std::unique_ptr<_State>, void (*)()): a
// member function (`this` first) taking the unique_ptr by invisible
// reference, which its caller destroys (freeing the state if not taken).
using ThreadStatePointer = std::unique_ptr<std::thread::_State>;
void __real__ZNSt6thread15_M_start_threadESt10unique_ptrINS_6_StateESt14default_deleteIS1_EEPFvvE(
    std::thread* self, ThreadStatePointer* state, void (*depend)());
void __wrap__ZNSt6thread15_M_start_threadESt10unique_ptrINS_6_StateESt14default_deleteIS1_EEPFvvE(
    std::thread* self, ThreadStatePointer* state, void (*depend)());

void* __wrap_mmap(void* address, size_t length, int protection, int flags, int fd, off_t offset) {
  const bool stack = (flags & MAP_STACK) != 0;
  const bool fail = stack ? (protection == PROT_NONE ? fault::Take(Call::kGuardedStackMmap)
                                                     : fault::Take(Call::kSlabMmap))
                          : fault::Take(Call::kAltStackMmap);
  if (fail) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return __real_mmap(address, length, protection, flags, fd, offset);
}

int __wrap_mprotect(void* address, size_t length, int protection) {
  if (fault::Take(Call::kMprotect)) {
    errno = ENOMEM;
    return -1;
  }
  return __real_mprotect(address, length, protection);
}

void* __wrap_malloc(size_t size) {
  if (fault::Take(Call::kMalloc, size)) {
    errno = ENOMEM;
    return nullptr;
  }
  return __real_malloc(size);
}

int __wrap_eventfd(unsigned int initial, int flags) {
  if (fault::Take(Call::kEventfd)) {
    errno = EMFILE;
    return -1;
  }
  return __real_eventfd(initial, flags);
}

void* __wrap__Znwm(size_t size) {
  if (fault::Take(Call::kThrowingNew)) throw std::bad_alloc();
  return __real__Znwm(size);
}

void* __wrap__ZnwmRKSt9nothrow_t(size_t size, const std::nothrow_t& tag) noexcept {
  if (fault::Take(Call::kNothrowNew)) return nullptr;
  return __real__ZnwmRKSt9nothrow_t(size, tag);
}

void __wrap__ZNSt6thread15_M_start_threadESt10unique_ptrINS_6_StateESt14default_deleteIS1_EEPFvvE(
    std::thread* self, ThreadStatePointer* state, void (*depend)()) {
  if (fault::Take(Call::kThreadStart)) {
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            "Resource temporarily unavailable (injected)");
  }
  __real__ZNSt6thread15_M_start_threadESt10unique_ptrINS_6_StateESt14default_deleteIS1_EEPFvvE(
      self, state, depend);
}

}  // extern "C"
