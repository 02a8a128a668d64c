// stack_cache.h - guarded stacks kept mapped between jobs.
//
// This unit owns the mappings of guarded stacks that no job holds: instead of
// unmapping a freed guarded stack (munmap, and a TLB flush), the stack layer
// keeps it, guard in place, to give to the next job that needs one; and when
// it has to map fresh stacks it maps several at once and keeps the ones not
// needed yet. Creating a job from an empty pool then costs no system call.
//
// Two levels, both bounded (SetCacheLimits):
//   - this thread's cache: no lock; fresh stacks of a batch wait here, and
//     stacks freed while the thread has a pool;
//   - the process-wide cache, behind a mutex: what a thread's cache gives up
//     when the thread's last pool goes (ASYNC_cleanup_thread, thread exit) or
//     when it is full.
// A stack that fits in neither is unmapped. Stacks enter the process-wide
// cache with their pages released (madvise) once it holds more than a few,
// so that a large cache costs address space, not memory.
//
// Safety: a cached stack keeps its PROT_NONE guard. While cached, its memory
// is poisoned for AddressSanitizer and no-access for valgrind, so that a
// late use of a freed job is still reported; TakeStack() makes it addressable
// again (undefined, as fresh memory would be for the tools that track it).
//
//   std::byte* low = TakeStack(size, &mapping);   // nullptr: map one
//   ...
//   if (!KeepStack(mapping, low, size)) UnmapGuarded(...);
#ifndef ASYNCJOB_SRC_STACK_STACK_CACHE_H_
#define ASYNCJOB_SRC_STACK_STACK_CACHE_H_

#include <cstddef>

namespace asyncjob::stack {

// On by default, bounded: 64 stacks per thread and 1,024 in the
// process-wide cache. The bounds are those an engine serving thousands of
// connections wants: a thread's cache of 64 holds a whole run of fresh
// stacks (StackSource::kMaxRun, the most mapped at once) and lets a pool
// whose number of jobs swings by up to 64 free and create them again with
// no system call; the
// process-wide cache of 1,024 lets a thread pool of a few dozen threads be
// torn down and rebuilt, or a burst of a thousand connections come and go,
// without mapping again. What it costs when idle: 1,024 stacks are 64 MiB of
// address space (at the default stack size) and 2,048 of the 65,530
// mappings of vm.max_map_count (3%, and they count against the guarded
// budget, a quarter of it, so that they never push a program past it); of
// the process-wide cache only the first kResidentInProcessCache stacks keep
// their pages (a page or two each for shallow jobs, 16 MiB at most if every
// one was used to the bottom), the others are released with MADV_DONTNEED
// as they enter it. So ASYNC_cleanup_thread and thread exit leave at most
// kDefaultProcessCacheLimit guarded stacks (2 mappings each) behind, which
// asyncjob_trim_stack_cache() unmaps on demand.
//
// A program that needs every mapping back at cleanup turns the caches off
// with asyncjob_set_stack_cache_limits(0, 0), or the environment variable
// ASYNCJOB_STACK_CACHE=0,0 (read once, at load; any per_thread,process pair
// sets the limits the same way): every freed guarded stack is then unmapped
// and each is mapped on its own, as before the caches existed.
inline constexpr std::size_t kDefaultThreadCacheLimit = 64;
inline constexpr std::size_t kDefaultProcessCacheLimit = 1024;
// Hard bounds of the settings (the caches are fixed arrays: keeping or
// taking a stack never allocates).
inline constexpr std::size_t kMaxThreadCacheLimit = 64;
inline constexpr std::size_t kMaxProcessCacheLimit = 16384;
// Stacks of the process-wide cache that keep their resident pages: enough
// for a pool of 256 jobs to be cleaned up and rebuilt with no page fault.
inline constexpr std::size_t kResidentInProcessCache = 256;

// Both limits are clamped to the hard bounds. Lowering them trims the caches
// (this thread's and the process-wide one) at once.
void SetCacheLimits(std::size_t per_thread, std::size_t process);
void GetCacheLimits(std::size_t* per_thread, std::size_t* process);

// Stacks cached by every thread and the process.
std::size_t CachedStacks();

// A cached guarded stack of `size` usable bytes: its low end, and the base of
// its mapping (guard included) in *mapping; nullptr when none is cached.
std::byte* TakeStack(std::size_t size, void** mapping);

// Offers a guarded stack no job holds (its mapping base, low end and usable
// size) to the caches. `resident`: it may have pages in memory (a used
// stack; false for one never touched). false when the caches are full: the
// caller unmaps it.
bool KeepStack(void* mapping, std::byte* low, std::size_t size, bool resident);

// Moves this thread's cache into the process-wide one (unmapping what does
// not fit). Called when the thread's last pool goes.
void FlushThreadCache();

// Unmaps every stack of this thread's cache and of the process-wide one;
// returns how many. Also used before giving up on a failed mapping.
std::size_t TrimCaches();

}  // namespace asyncjob::stack

#endif  // ASYNCJOB_SRC_STACK_STACK_CACHE_H_
