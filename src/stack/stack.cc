// stack.cc - guarded, slab and custom stacks, their settings and canaries
// (stack.h).
#include "stack/stack.h"

#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

#include "base/align.h"
#include "base/checked.h"
#include "base/dcheck.h"
#include "base/error_queue.h"
#include "base/fatal.h"
#include "base/sanitizers.h"
#include "stack/overflow_guard.h"
#include "stack/stack_cache.h"

namespace asyncjob::stack {

namespace {
// Slots of a slab of small stacks; a slab of large ones has fewer, so that
// no slab maps more than kMaxSlabBytes (plus its leading page).
constexpr std::uint32_t kSlotsPerSlab = 256;
constexpr std::size_t kMaxSlabBytes = std::size_t{64} << 20;
}  // namespace

struct Slab {
  std::byte* base = nullptr;
  std::size_t slot_size = 0;
  std::size_t bytes = 0;  // the whole mapping
  std::uint32_t capacity = 0;
  std::uint32_t in_use = 0;
  std::uint32_t next_fresh = 0;  // slots never handed out start here
  // Slots handed out and given back: a fixed array, so that releasing a
  // stack never allocates (and so can neither fail nor throw).
  std::uint32_t free_count = 0;
  std::uint32_t free_slots[kSlotsPerSlab];
  Slab* next = nullptr;  // list of slabs with room
  Slab* prev = nullptr;
  bool listed = false;
  bool HasRoom() const { return next_fresh < capacity || free_count != 0; }
};

namespace {

constexpr std::size_t kMinimumGuard = 64 * 1024;
constexpr std::size_t kBudgetNotComputed = ~std::size_t{0};

#if ASYNCJOB_ASAN
constexpr std::size_t kBuiltInStackSize = 256 * 1024;  // ASan frames are ~4x larger
#elif ASYNCJOB_TSAN
constexpr std::size_t kBuiltInStackSize = 128 * 1024;
#else
constexpr std::size_t kBuiltInStackSize = 64 * 1024;
#endif

std::atomic<std::size_t> default_stack_size{kBuiltInStackSize};
std::atomic<std::size_t> guarded_budget{kBudgetNotComputed};
std::atomic<std::size_t> guarded_in_use{0};
std::atomic<bool> any_stack_allocated{false};

// ----- Guarded mappings -----

// Maps `count` guarded stacks of `usable` bytes side by side, each above its
// own guard: [guard][stack][guard][stack]... One mmap for all of them, one
// mprotect per stack; each guard+stack pair can later be unmapped on its
// own. Returns how many were made (0: errno says why and *failed which call
// failed), *base the first pair's mapping. Queues nothing: the callers
// decide what a failure means.
std::size_t MapGuardedRun(std::size_t usable, std::size_t count, std::byte** base,
                          const char** failed) {
  ASYNCJOB_DCHECK(base::IsAligned(usable, PageSize()));  // mprotect works in pages
  const std::size_t pair = GuardSize() + usable;
  std::size_t bytes = 0;
  if (usable > kMaximumStackSize || !base::CheckedMul(pair, count, &bytes)) {
    errno = ENOMEM;
    *failed = "mmap";
    return 0;
  }
  void* mapping = mmap(nullptr, bytes, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mapping == MAP_FAILED) {
    *failed = "mmap";
    return 0;
  }
  *base = static_cast<std::byte*>(mapping);
  for (std::size_t i = 0; i < count; ++i) {
    if (mprotect(*base + i * pair + GuardSize(), usable, PROT_READ | PROT_WRITE) != 0) {
      const int saved = errno;
      munmap(*base + i * pair, (count - i) * pair);
      errno = saved;
      *failed = "mprotect";
      return i;
    }
  }
  return count;
}

// One guarded stack; queues an error on failure.
std::byte* MapGuarded(std::size_t usable, void** mapping) {
  std::size_t bytes = 0;
  if (usable > kMaximumStackSize || !base::CheckedAdd(GuardSize(), usable, &bytes)) {
    base::QueueError(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                     "a %zu-byte stack is above the maximum of %zu bytes", usable,
                     kMaximumStackSize);
    return nullptr;
  }
  std::byte* base = nullptr;
  const char* failed = "";
  if (MapGuardedRun(usable, 1, &base, &failed) != 1) {
    base::QueueAllocationFailure(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                                 "%s of a %zu-byte guarded stack failed: %s", failed, bytes,
                                 std::strerror(errno));
    return nullptr;
  }
  *mapping = base;
  return base + GuardSize();
}

void UnmapGuarded(void* mapping, std::size_t usable) { munmap(mapping, GuardSize() + usable); }

// ----- The default ASYNC_stack_alloc_fn / ASYNC_stack_free_fn -----
// Used only when a program calls the functions ASYNC_get_mem_functions()
// returned (for instance to wrap them); jobs use the guarded/slab path
// directly while these are in place.

std::mutex default_registry_mutex;
std::unordered_map<void*, std::pair<void*, std::size_t>>& DefaultRegistry() {
  static auto* registry = new std::unordered_map<void*, std::pair<void*, std::size_t>>;
  return *registry;
}

// Called by programs, from C: nothing may throw out of it.
extern "C" void* DefaultStackAlloc(size_t* num) {
  if (num == nullptr) return nullptr;
  const std::size_t wanted = *num == 0 ? DefaultStackSize() : *num;
  std::size_t usable = 0;
  if (wanted > kMaximumStackSize || !base::CheckedAlignUp(wanted, PageSize(), &usable)) {
    base::QueueError(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                     "a %zu-byte stack is above the maximum of %zu bytes", wanted,
                     kMaximumStackSize);
    return nullptr;
  }
  void* mapping = nullptr;
  std::byte* low = MapGuarded(usable, &mapping);
  if (low == nullptr) return nullptr;
  try {
    // std::mutex::lock throws only for errors a default mutex never has
    // (EDEADLK, EAGAIN of recursive ones); the map's node may throw bad_alloc.
    std::lock_guard lock(default_registry_mutex);
    DefaultRegistry()[low] = {mapping, usable};
  } catch (...) {
    UnmapGuarded(mapping, usable);
    base::QueueError(ASYNCJOB_R_MALLOC_FAILURE, "out of memory recording a %zu-byte stack", usable);
    return nullptr;
  }
  *num = usable;
  return low;
}

extern "C" void DefaultStackFree(void* addr) {
  if (addr == nullptr) return;
  std::pair<void*, std::size_t> entry;
  {
    // Cannot throw: see DefaultStackAlloc; find and erase do not allocate.
    std::lock_guard lock(default_registry_mutex);
    auto it = DefaultRegistry().find(addr);
    if (it == DefaultRegistry().end()) return;
    entry = it->second;
    DefaultRegistry().erase(it);
  }
  UnmapGuarded(entry.first, entry.second);
}

std::atomic<ASYNC_stack_alloc_fn> stack_alloc_fn{&DefaultStackAlloc};
std::atomic<ASYNC_stack_free_fn> stack_free_fn{&DefaultStackFree};

// ----- Canary -----

std::uint64_t CanarySecret() {
  static const std::uint64_t secret = [] {
    std::uint64_t value = 0x9e3779b97f4a7c15ULL;
    if (auto* random = reinterpret_cast<const unsigned char*>(getauxval(AT_RANDOM))) {
      std::memcpy(&value, random + 8, sizeof value);  // glibc uses the first 8
    }
    return value | 1;
  }();
  return secret;
}

std::uint64_t CanaryWord(const Stack& stack, std::size_t index) {
  return CanarySecret() ^
         (reinterpret_cast<std::uintptr_t>(stack.canary) + index * 0x100000001b3ULL);
}

}  // namespace

// ----- Settings -----

std::size_t PageSize() {
  static const std::size_t page = [] {
    long value = sysconf(_SC_PAGESIZE);
    return value > 0 ? static_cast<std::size_t>(value) : std::size_t{4096};
  }();
  return page;
}

std::size_t GuardSize() { return base::AlignUp(kMinimumGuard, PageSize()); }

std::size_t DefaultStackSize() {
  return base::AlignUp(default_stack_size.load(std::memory_order_relaxed), PageSize());
}

bool SetDefaultStackSize(std::size_t bytes) {
  if (bytes < kMinimumStackSize) {
    base::QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
                     "stack size %zu is below the minimum of %zu bytes", bytes, kMinimumStackSize);
    return false;
  }
  // Checked before rounding: a size within a page of SIZE_MAX rounds to 0.
  if (bytes > kMaximumStackSize) {
    base::QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
                     "stack size %zu is above the maximum of %zu bytes", bytes, kMaximumStackSize);
    return false;
  }
  // kMaximumStackSize is a multiple of any page size: the rounding fits.
  default_stack_size.store(base::AlignUp(bytes, PageSize()), std::memory_order_relaxed);
  return true;
}

std::size_t GuardedBudget() {
  std::size_t budget = guarded_budget.load(std::memory_order_relaxed);
  if (budget != kBudgetNotComputed) return budget;
  std::size_t max_map_count = 65530;
  if (std::FILE* file = std::fopen("/proc/sys/vm/max_map_count", "re")) {
    unsigned long value = 0;
    if (std::fscanf(file, "%lu", &value) == 1 && value > 0) max_map_count = value;
    std::fclose(file);
  }
  // Two mappings per guarded stack; leave half of the limit to the program.
  budget = max_map_count / 4;
  std::size_t expected = kBudgetNotComputed;
  guarded_budget.compare_exchange_strong(expected, budget);
  return guarded_budget.load(std::memory_order_relaxed);
}

void SetGuardedBudget(std::size_t stacks) {
  guarded_budget.store(stacks == kBudgetNotComputed ? stacks - 1 : stacks,
                       std::memory_order_relaxed);
}

std::size_t GuardedStacksInUse() { return guarded_in_use.load(std::memory_order_relaxed); }

bool SetMemFunctions(ASYNC_stack_alloc_fn alloc_fn, ASYNC_stack_free_fn free_fn) {
  if (any_stack_allocated.load(std::memory_order_acquire)) {
    base::QueueError(ASYNCJOB_R_MEM_FUNCTIONS_LOCKED,
                     "stack allocators cannot change once a job stack has been allocated");
    return false;
  }
  if (alloc_fn != nullptr) stack_alloc_fn.store(alloc_fn, std::memory_order_release);
  if (free_fn != nullptr) stack_free_fn.store(free_fn, std::memory_order_release);
  return true;
}

void GetMemFunctions(ASYNC_stack_alloc_fn* alloc_fn, ASYNC_stack_free_fn* free_fn) {
  if (alloc_fn != nullptr) *alloc_fn = stack_alloc_fn.load(std::memory_order_acquire);
  if (free_fn != nullptr) *free_fn = stack_free_fn.load(std::memory_order_acquire);
}

// ----- Canary -----

void ArmCanary(const Stack& stack) {
  if (stack.canary == nullptr) return;
  ASYNCJOB_DCHECK(base::IsAligned(stack.canary, alignof(std::uint64_t)));
  auto* words = reinterpret_cast<std::uint64_t*>(stack.canary);
  for (std::size_t i = 0; i < kCanaryBytes / sizeof(std::uint64_t); ++i) {
    words[i] = CanaryWord(stack, i);
  }
}

bool CanaryIntact(const Stack& stack) {
  if (stack.canary == nullptr) return true;
  const auto* words = reinterpret_cast<const std::uint64_t*>(stack.canary);
  for (std::size_t i = 0; i < kCanaryBytes / sizeof(std::uint64_t); ++i) {
    if (words[i] != CanaryWord(stack, i)) return false;
  }
  return true;
}

void CheckCanaryFailed(const Stack& stack, const void* owner) {
  base::FatalMessage message;
  message.Add("asyncjob: stack overflow detected in job ")
      .AddPointer(owner)
      .Add(": the canary at ")
      .AddPointer(stack.canary)
      .Add(", below its stack ")
      .AddPointer(stack.low)
      .Add("-")
      .AddPointer(stack.high())
      .Add(" (")
      .AddDecimal(stack.size)
      .Add(" bytes), was overwritten\n");
  CountOverflow();
  message.WriteAndAbort();
}

// ----- StackSource -----

StackSource::~StackSource() {
  // The thread's cache outlives its pools, not the last of them: the stacks
  // it holds go to the process-wide cache, or back to the kernel.
  FlushThreadCache();
  while (slabs_with_room_ != nullptr) {
    Slab* slab = slabs_with_room_;
    slabs_with_room_ = slab->next;
    ASYNCJOB_DCHECK(slab->in_use == 0);  // every stack was released
    if (slab->in_use == 0) {
      munmap(slab->base, slab->bytes);
      delete slab;
    }
  }
}

bool StackSource::Allocate(Stack* stack) {
  any_stack_allocated.store(true, std::memory_order_release);
  ASYNC_stack_alloc_fn alloc_fn = stack_alloc_fn.load(std::memory_order_acquire);
  *stack = Stack{};
  if (alloc_fn != &DefaultStackAlloc) {
    std::size_t num = DefaultStackSize();
    void* memory = alloc_fn(&num);
    if (memory == nullptr) {
      base::QueueError(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                       "the custom stack allocator returned NULL");
      return false;
    }
    // *num is the allocator's word, whatever its value: check it before
    // deriving the stack's ends from it.
    const auto address = reinterpret_cast<std::uintptr_t>(memory);
    const std::size_t skew = base::AlignUp(address, 16) - address;
    std::size_t end = 0;
    const bool too_small = num < skew + kMinimumStackSize;
    if (too_small || num > kMaximumStackSize || !base::CheckedAdd(address, num, &end)) {
      stack_free_fn.load(std::memory_order_acquire)(memory);
      if (too_small) {
        base::QueueError(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                         "the custom stack allocator gave %zu bytes; at least %zu are needed", num,
                         skew + kMinimumStackSize);
      } else {
        base::QueueError(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                         "the custom stack allocator gave %zu bytes at %p; at most %zu can "
                         "be used",
                         num, memory, kMaximumStackSize);
      }
      return false;
    }
    stack->canary = static_cast<std::byte*>(memory) + skew;
    stack->low = stack->canary + kCanaryBytes;
    stack->size = base::AlignDown(num - skew - kCanaryBytes, 16);
    stack->kind = StackKind::kCustom;
    stack->mapping = memory;
  } else {
    const std::size_t size = DefaultStackSize();
    std::size_t in_use = guarded_in_use.load(std::memory_order_relaxed);
    const std::size_t budget = GuardedBudget();
    bool guarded = false;
    while (in_use < budget) {
      if (guarded_in_use.compare_exchange_weak(in_use, in_use + 1, std::memory_order_relaxed)) {
        guarded = true;
        break;
      }
    }
    if (guarded) {
      void* mapping = nullptr;
      std::byte* low = AllocateGuarded(size, in_use + 1, budget, &mapping);
      if (low == nullptr) {
        guarded_in_use.fetch_sub(1, std::memory_order_relaxed);
        return false;
      }
      stack->low = low;
      stack->size = size;
      stack->kind = StackKind::kGuarded;
      stack->mapping = mapping;
    } else if (!AllocateFromSlab(size, stack)) {
      return false;
    }
  }
  // The context layer needs both ends of the stack 16-byte aligned.
  ASYNCJOB_DCHECK(base::IsAligned(stack->low, 16) && base::IsAligned(stack->size, 16));
  ArmCanary(*stack);
#if ASYNCJOB_VALGRIND
  stack->valgrind_id = VALGRIND_STACK_REGISTER(stack->low, stack->high());
#endif
  return true;
}

std::byte* StackSource::AllocateGuarded(std::size_t size, std::size_t in_use, std::size_t budget,
                                        void** mapping) {
  if (std::byte* low = TakeStack(size, mapping)) return low;
  // Map a run of stacks: this one and, while the budget and this thread's
  // cache have room, the next ones this pool is likely to need.
  std::size_t thread_room = 0;
  GetCacheLimits(&thread_room, nullptr);
  std::size_t room = std::min(thread_room, std::min(next_run_, kMaxRun) - 1);
  const std::size_t mapped = in_use + CachedStacks();
  room = mapped < budget ? std::min(room, budget - mapped) : 0;
  const std::size_t count = room + 1;
  std::byte* base = nullptr;
  const char* failed = "";
  std::size_t made = MapGuardedRun(size, count, &base, &failed);
  if (made == 0 && count > 1) made = MapGuardedRun(size, 1, &base, &failed);
  if (made == 0 && TrimCaches() > 0) {
    // Out of address space or mappings: what the caches held may be enough.
    made = MapGuardedRun(size, 1, &base, &failed);
  }
  if (made == 0) {
    base::QueueAllocationFailure(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                                 "%s of a %zu-byte guarded stack failed: %s", failed,
                                 GuardSize() + size, std::strerror(errno));
    return nullptr;
  }
  next_run_ = std::min(next_run_ * 2, kMaxRun);
  const std::size_t pair = GuardSize() + size;
  for (std::size_t i = 1; i < made; ++i) {
    std::byte* extra = base + i * pair;
    if (!KeepStack(extra, extra + GuardSize(), size, /*resident=*/false)) {
      munmap(extra, (made - i) * pair);
      break;
    }
  }
  *mapping = base;
  return base + GuardSize();
}

void StackSource::ExpectStacks(std::size_t count) {
  next_run_ = std::max<std::size_t>(1, std::min(count, kMaxRun));
}

bool StackSource::AllocateFromSlab(std::size_t size, Stack* stack) {
  // Slots are whole pages, each with room for the next slot's canary.
  ASYNCJOB_DCHECK(base::IsAligned(size, PageSize()) && size > kCanaryBytes);
  Slab* slab = slabs_with_room_;
  while (slab != nullptr && slab->slot_size != size) slab = slab->next;
  if (slab == nullptr) {
    // A leading page holds slot 0's canary; slot i's canary is the top
    // kCanaryBytes of slot i-1.
    const auto capacity = static_cast<std::uint32_t>(
        std::min<std::size_t>(kSlotsPerSlab, std::max<std::size_t>(1, kMaxSlabBytes / size)));
    std::size_t bytes = 0;
    if (size > kMaximumStackSize || !base::CheckedMul(size, capacity, &bytes) ||
        !base::CheckedAdd(bytes, PageSize(), &bytes)) {
      base::QueueError(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                       "a %zu-byte stack is above the maximum of %zu bytes", size,
                       kMaximumStackSize);
      return false;
    }
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) {
      base::QueueAllocationFailure(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
                                   "mmap of a %zu-byte stack slab failed: %s", bytes,
                                   std::strerror(errno));
      return false;
    }
#ifdef MADV_NOHUGEPAGE
    // A huge page would commit 2 MiB where a paused job touches a page or two.
    madvise(base, bytes, MADV_NOHUGEPAGE);
#endif
    slab = new (std::nothrow) Slab;
    if (slab == nullptr) {
      munmap(base, bytes);
      base::QueueError(ASYNCJOB_R_MALLOC_FAILURE, "out of memory for a stack slab");
      return false;
    }
    slab->base = static_cast<std::byte*>(base);
    slab->slot_size = size;
    slab->bytes = bytes;
    slab->capacity = capacity;
    slab->next = slabs_with_room_;
    if (slabs_with_room_ != nullptr) slabs_with_room_->prev = slab;
    slabs_with_room_ = slab;
    slab->listed = true;
  }
  std::uint32_t slot;
  if (slab->free_count != 0) {
    slot = slab->free_slots[--slab->free_count];
  } else {
    slot = slab->next_fresh++;
  }
  ++slab->in_use;
  if (!slab->HasRoom()) {
    // Unlink: full slabs are found again through Stack::slab on release.
    if (slab->prev != nullptr)
      slab->prev->next = slab->next;
    else
      slabs_with_room_ = slab->next;
    if (slab->next != nullptr) slab->next->prev = slab->prev;
    slab->next = slab->prev = nullptr;
    slab->listed = false;
  }
  stack->low = slab->base + PageSize() + std::size_t{slot} * size;
  stack->size = size - kCanaryBytes;
  stack->canary = stack->low - kCanaryBytes;
  stack->kind = StackKind::kSlab;
  stack->slab = slab;
  return true;
}

void StackSource::Release(Stack* stack) {
  if (stack->low == nullptr) return;
#if ASYNCJOB_VALGRIND
  VALGRIND_STACK_DEREGISTER(stack->valgrind_id);
#endif
#if ASYNCJOB_ASAN
  ASAN_UNPOISON_MEMORY_REGION(stack->low, stack->size);
#endif
  switch (stack->kind) {
    case StackKind::kCustom:
      stack_free_fn.load(std::memory_order_acquire)(stack->mapping);
      break;
    case StackKind::kGuarded: {
      // Kept for the next job while the budget counts it among the mappings
      // the process may hold; unmapped otherwise.
      const std::size_t in_use = guarded_in_use.fetch_sub(1, std::memory_order_relaxed) - 1;
      if (in_use + CachedStacks() >= GuardedBudget() ||
          !KeepStack(stack->mapping, stack->low, stack->size, /*resident=*/true)) {
        UnmapGuarded(stack->mapping, stack->size);
      }
      break;
    }
    case StackKind::kSlab: {
      Slab* slab = stack->slab;
      ASYNCJOB_DCHECK(slab != nullptr && slab->in_use > 0);
      --slab->in_use;
      if (slab->in_use == 0) {
        if (slab->listed) {
          if (slab->prev != nullptr)
            slab->prev->next = slab->next;
          else
            slabs_with_room_ = slab->next;
          if (slab->next != nullptr) slab->next->prev = slab->prev;
        }
        munmap(slab->base, slab->bytes);
        delete slab;
        break;
      }
      ASYNCJOB_DCHECK(slab->free_count < slab->capacity);
      slab->free_slots[slab->free_count++] =
          static_cast<std::uint32_t>((stack->low - slab->base - PageSize()) / slab->slot_size);
      if (!slab->listed) {
        slab->prev = nullptr;
        slab->next = slabs_with_room_;
        if (slabs_with_room_ != nullptr) slabs_with_room_->prev = slab;
        slabs_with_room_ = slab;
        slab->listed = true;
      }
      break;
    }
  }
  *stack = Stack{};
}

}  // namespace asyncjob::stack
