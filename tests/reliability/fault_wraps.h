// fault_wraps.h - fails chosen system and allocation calls made by the
// library, for the fault-injection tests.
//
// The fault-injection executables link the static library (asyncjob_static)
// with the linker's --wrap for mmap, mprotect, malloc, operator new (plain
// and nothrow), eventfd and the start of a std::thread: every call to those
// from the library's objects (and the test's own) goes through a wrapper
// here, which passes it on unless a fault is armed for it. The thread's
// start is libstdc++'s std::thread::_M_start_thread, which every
// std::thread constructor calls (pthread_create itself is called inside
// libstdc++.so, out of reach of --wrap); the wrapper throws what libstdc++
// throws when pthread_create fails. Arm a fault just before the call under
// test and disarm it just after: the wrappers see every caller in the
// executable, including GoogleTest.
//
//   fault::Arm(fault::Call::kGuardedStackMmap);
//   int status = ASYNC_start_job(&job, nullptr, &ret, &Work, nullptr, 0);
//   fault::Disarm();
//   EXPECT_EQ(fault::Fired(), 1);
#ifndef ASYNCJOB_TESTS_RELIABILITY_FAULT_WRAPS_H_
#define ASYNCJOB_TESTS_RELIABILITY_FAULT_WRAPS_H_

#include <cstddef>

namespace fault {

enum class Call {
  kGuardedStackMmap,  // mmap of a guarded stack (MAP_STACK, PROT_NONE)
  kSlabMmap,          // mmap of a stack slab (MAP_STACK, read/write)
  kAltStackMmap,      // mmap of a thread's alternate signal stack
  kMprotect,          // mprotect (the usable part of a guarded stack)
  kMalloc,            // malloc of exactly the size given to Arm()
  kNothrowNew,        // operator new(size_t, nothrow_t)
  kThrowingNew,       // operator new(size_t): throws std::bad_alloc
  kEventfd,           // eventfd
  kThreadStart,       // starting a std::thread: throws std::system_error(EAGAIN)
};

// Fails the nth matching call from now on (1: the next one), once, with
// ENOMEM (EMFILE for eventfd). For kMalloc only calls of `size` bytes match.
void Arm(Call call, int nth = 1, std::size_t size = 0);
// Fails every matching call until disarmed.
void ArmAlways(Call call, std::size_t size = 0);
void Disarm();
// Failures injected since the last Arm().
int Fired();

}  // namespace fault

#endif  // ASYNCJOB_TESTS_RELIABILITY_FAULT_WRAPS_H_
