// alloc_counter.cc - counts the heap allocations of the calling thread.
//
// Linked into both builds of async_bench: the program's malloc family
// interposes on the C library's (for libcrypto and asyncjob alike), counts,
// and forwards to glibc's own entry points. Lets a benchmark report heap
// allocations per iteration next to its time.
#include <cerrno>
#include <cstddef>

#include "alloc_counter.h"

extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* pointer, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
void __libc_free(void* pointer);
}

namespace bench {
thread_local unsigned long allocations_on_this_thread __attribute__((tls_model("initial-exec"))) =
    0;
}

extern "C" {

void* malloc(std::size_t size) {
  ++bench::allocations_on_this_thread;
  return __libc_malloc(size);
}

void* calloc(std::size_t count, std::size_t size) {
  ++bench::allocations_on_this_thread;
  return __libc_calloc(count, size);
}

void* realloc(void* pointer, std::size_t size) {
  ++bench::allocations_on_this_thread;
  return __libc_realloc(pointer, size);
}

int posix_memalign(void** result, std::size_t alignment, std::size_t size) {
  ++bench::allocations_on_this_thread;
  void* pointer = __libc_memalign(alignment, size);
  if (pointer == nullptr) return ENOMEM;
  *result = pointer;
  return 0;
}

void* aligned_alloc(std::size_t alignment, std::size_t size) {
  ++bench::allocations_on_this_thread;
  return __libc_memalign(alignment, size);
}

void* memalign(std::size_t alignment, std::size_t size) {
  ++bench::allocations_on_this_thread;
  return __libc_memalign(alignment, size);
}

void free(void* pointer) { __libc_free(pointer); }

}  // extern "C"
