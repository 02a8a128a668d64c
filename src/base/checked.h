// checked.h - size arithmetic that says when it overflows.
//
// This unit owns overflow-checked addition and multiplication of sizes, for
// the layers that derive mapping sizes, slot offsets and copy lengths from
// numbers a program handed them. Each returns false (and leaves *result
// alone) when the exact result does not fit, so that a caller refuses the
// input instead of using a wrapped value. It knows nothing of what the
// numbers mean.
//
//   std::size_t bytes;
//   if (!base::CheckedMul(slot_size, slots, &bytes) ||
//       !base::CheckedAdd(bytes, PageSize(), &bytes)) {
//     QueueError(...);
//     return false;
//   }
#ifndef ASYNCJOB_SRC_BASE_CHECKED_H_
#define ASYNCJOB_SRC_BASE_CHECKED_H_

#include <cstddef>

#include "base/dcheck.h"

namespace asyncjob::base {

// *result = a + b, unless that overflows a size_t (then false).
[[nodiscard]] constexpr bool CheckedAdd(std::size_t a, std::size_t b, std::size_t* result) {
  std::size_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) return false;
  *result = sum;
  return true;
}

// *result = a * b, unless that overflows a size_t (then false).
[[nodiscard]] constexpr bool CheckedMul(std::size_t a, std::size_t b, std::size_t* result) {
  std::size_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) return false;
  *result = product;
  return true;
}

// *result = the smallest multiple of `alignment` (a power of two) not below
// `value`, unless that does not fit in a size_t (then false).
[[nodiscard]] constexpr bool CheckedAlignUp(std::size_t value, std::size_t alignment,
                                            std::size_t* result) {
  ASYNCJOB_DCHECK(alignment != 0 && (alignment & (alignment - 1)) == 0);
  std::size_t bumped = 0;
  if (__builtin_add_overflow(value, alignment - 1, &bumped)) return false;
  *result = bumped & ~(alignment - 1);
  return true;
}

namespace checked_internal {
constexpr std::size_t kMax = ~std::size_t{0};
constexpr bool AddFits(std::size_t a, std::size_t b) {
  std::size_t r = 0;
  return CheckedAdd(a, b, &r) && r == a + b;
}
constexpr bool MulFits(std::size_t a, std::size_t b) {
  std::size_t r = 0;
  return CheckedMul(a, b, &r) && r == a * b;
}
constexpr bool AlignFits(std::size_t v, std::size_t a) {
  std::size_t r = 0;
  return CheckedAlignUp(v, a, &r);
}
static_assert(AddFits(kMax - 1, 1) && !AddFits(kMax, 1));
static_assert(MulFits(kMax / 2, 2) && !MulFits(kMax / 2 + 1, 2) && MulFits(0, kMax));
static_assert(AlignFits(kMax - 4095, 4096) && !AlignFits(kMax - 4094, 4096));
}  // namespace checked_internal

}  // namespace asyncjob::base

#endif  // ASYNCJOB_SRC_BASE_CHECKED_H_
