// stack.h - memory for the stacks jobs run on.
//
// This unit owns where job stacks come from and how they are checked:
//   - Guarded stacks: an mmap'd region with a PROT_NONE guard (at least
//     64 KiB) below the usable part. Committed lazily by the kernel. An
//     overflow faults in the guard; overflow_guard.h turns that into a clear
//     message. Each costs two memory mappings, and Linux allows about 65,530
//     per process, so only a budget of stacks get a guard (by default a
//     quarter of vm.max_map_count).
//   - Slab stacks: past the budget, stacks are carved from large shared
//     mappings (256 stacks each), without guards.
//   - Custom stacks: from the allocator set with ASYNC_set_mem_functions().
// Stacks without a guard carry a canary at their low end, checked whenever
// their job pauses or finishes (CheckCanary); a smashed canary aborts with a
// message. A slab stack's canary sits in the last bytes of the slot below it
// (the page that slot's job header already occupies), so that a paused job
// whose stack use is shallow commits a single page.
//
// Guarded stacks no job holds can be kept mapped for the next jobs, and
// mapped several at a time, by the caches of stack_cache.h (on by default,
// bounded).
//
// A StackSource belongs to one thread's pool and is not thread-safe; the
// settings functions are process-wide and thread-safe.
//
//   StackSource source;
//   Stack stack;
//   if (!source.Allocate(&stack)) return;  // error already queued
//   ... run code on [stack.low, stack.low + stack.size) ...
//   source.Release(&stack);
#ifndef ASYNCJOB_SRC_STACK_STACK_H_
#define ASYNCJOB_SRC_STACK_STACK_H_

#include <cstddef>
#include <cstdint>

#include "asyncjob/async.h"

namespace asyncjob::stack {

enum class StackKind : std::uint8_t { kGuarded, kSlab, kCustom };

struct Slab;

struct Stack {
  std::byte* low = nullptr;  // lowest usable address
  std::size_t size = 0;      // usable bytes
  StackKind kind = StackKind::kGuarded;
  void* mapping = nullptr;      // guarded: mapping base; custom: allocator's pointer
  Slab* slab = nullptr;         // slab stacks: the slab it was carved from
  std::byte* canary = nullptr;  // kCanaryBytes checked at pause and finish
  unsigned valgrind_id = 0;
  std::byte* high() const { return low + size; }
};

// Size of the canary below the usable part of an unguarded stack.
inline constexpr std::size_t kCanaryBytes = 64;
// Smallest usable stack accepted (from settings or a custom allocator).
inline constexpr std::size_t kMinimumStackSize = 16 * 1024;
// Largest stack accepted (from settings or a custom allocator): 1 GiB. A
// hundred times the deepest stacks real code needs (a main thread gets
// 8 MiB), yet small enough that every size derived from it (guard plus
// stack, a slab of stacks, offsets into a slab) is far from overflowing and
// a mapping of it can succeed on any 64-bit system.
inline constexpr std::size_t kMaximumStackSize = std::size_t{1} << 30;

class StackSource {
 public:
  StackSource() = default;
  StackSource(const StackSource&) = delete;
  StackSource& operator=(const StackSource&) = delete;
  // Every stack allocated here must have been released.
  ~StackSource();

  // Fills *stack with a fresh stack whose canary is armed. On failure queues
  // an error and returns false.
  bool Allocate(Stack* stack);
  void Release(Stack* stack);

  // About `count` stacks will be allocated next (ASYNC_init_thread): guarded
  // ones are then mapped that many at a time (at most kMaxRun).
  void ExpectStacks(std::size_t count);

  // Most guarded stacks mapped by one mmap; runs start at 4 and double each
  // time the caches run dry.
  static constexpr std::size_t kMaxRun = 64;

 private:
  bool AllocateFromSlab(std::size_t size, Stack* stack);
  // A guarded stack from the caches or a fresh run of them; `in_use`
  // counts it already. Queues an error on failure.
  std::byte* AllocateGuarded(std::size_t size, std::size_t in_use, std::size_t budget,
                             void** mapping);
  Slab* slabs_with_room_ = nullptr;  // doubly linked through Slab::next/prev
  std::size_t next_run_ = 4;
};

// ----- Process-wide settings -----

std::size_t PageSize();
std::size_t GuardSize();
std::size_t DefaultStackSize();
// Queues an error (and keeps the current size) outside
// [kMinimumStackSize, kMaximumStackSize].
bool SetDefaultStackSize(std::size_t bytes);
std::size_t GuardedBudget();
void SetGuardedBudget(std::size_t stacks);
std::size_t GuardedStacksInUse();

// ASYNC_set_mem_functions / ASYNC_get_mem_functions.
bool SetMemFunctions(ASYNC_stack_alloc_fn alloc_fn, ASYNC_stack_free_fn free_fn);
void GetMemFunctions(ASYNC_stack_alloc_fn* alloc_fn, ASYNC_stack_free_fn* free_fn);

// ----- Canary -----

void ArmCanary(const Stack& stack);
bool CanaryIntact(const Stack& stack);  // true for a stack without a canary
void CheckCanaryFailed(const Stack& stack, const void* owner);
// Aborts with a message naming `owner` (the job) when the canary is smashed.
inline void CheckCanary(const Stack& stack, const void* owner) {
  if (stack.canary != nullptr && !CanaryIntact(stack)) [[unlikely]] {
    CheckCanaryFailed(stack, owner);
  }
}

}  // namespace asyncjob::stack

#endif  // ASYNCJOB_SRC_STACK_STACK_H_
