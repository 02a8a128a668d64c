// align.h - rounding sizes and addresses to a power-of-two boundary.
//
// This unit owns the arithmetic of alignment, for the layers that carve
// stacks, frames and headers out of raw memory. It knows nothing of what
// the memory is for. Every alignment must be a power of two (a DCHECK says
// so; page sizes and ABI alignments always are).
//
//   std::size_t usable = base::AlignUp(requested, PageSize());
//   std::byte* top = base::AlignDown(stack_high - size, 16);
#ifndef ASYNCJOB_SRC_BASE_ALIGN_H_
#define ASYNCJOB_SRC_BASE_ALIGN_H_

#include <cstddef>
#include <cstdint>

#include "base/dcheck.h"

namespace asyncjob::base {

constexpr bool IsPowerOfTwo(std::size_t value) { return value != 0 && (value & (value - 1)) == 0; }

// The largest multiple of `alignment` not above `value`.
constexpr std::size_t AlignDown(std::size_t value, std::size_t alignment) {
  ASYNCJOB_DCHECK(IsPowerOfTwo(alignment));
  return value & ~(alignment - 1);
}

// The smallest multiple of `alignment` not below `value` (0 when that
// multiple does not fit in a size_t).
constexpr std::size_t AlignUp(std::size_t value, std::size_t alignment) {
  ASYNCJOB_DCHECK(IsPowerOfTwo(alignment));
  return (value + alignment - 1) & ~(alignment - 1);
}

constexpr bool IsAligned(std::size_t value, std::size_t alignment) {
  return AlignDown(value, alignment) == value;
}

static_assert(sizeof(std::uintptr_t) == sizeof(std::size_t));

template <typename T>
T* AlignDown(T* pointer, std::size_t alignment) {
  return reinterpret_cast<T*>(AlignDown(reinterpret_cast<std::uintptr_t>(pointer), alignment));
}

template <typename T>
T* AlignUp(T* pointer, std::size_t alignment) {
  return reinterpret_cast<T*>(AlignUp(reinterpret_cast<std::uintptr_t>(pointer), alignment));
}

template <typename T>
bool IsAligned(T* pointer, std::size_t alignment) {
  return IsAligned(reinterpret_cast<std::uintptr_t>(pointer), alignment);
}

static_assert(AlignDown(std::size_t{4097}, 4096) == 4096);
static_assert(AlignUp(std::size_t{4097}, 4096) == 8192);
static_assert(AlignUp(std::size_t{4096}, 4096) == 4096);

}  // namespace asyncjob::base

#endif  // ASYNCJOB_SRC_BASE_ALIGN_H_
