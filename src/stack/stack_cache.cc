// stack_cache.cc - the per-thread and process-wide caches of free guarded
// stacks (stack_cache.h).
#include "stack/stack_cache.h"

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "base/dcheck.h"
#include "base/sanitizers.h"
#include "stack/stack.h"

namespace asyncjob::stack {

namespace {

// A cached stack: its low end and usable size; the mapping starts a guard
// below `low`. Sizes are whole pages, so bit 0 of `size_and_resident` says
// whether the stack may have pages in memory.
struct Entry {
  std::byte* low = nullptr;
  std::size_t size_and_resident = 0;
  std::size_t size() const { return size_and_resident & ~std::size_t{1}; }
  bool resident() const { return (size_and_resident & 1) != 0; }
};

Entry MakeEntry(std::byte* low, std::size_t size, bool resident) {
  ASYNCJOB_DCHECK((size & 1) == 0);
  return Entry{low, size | (resident ? 1 : 0)};
}

// While cached, a stack is off limits to the program: the tools report a late
// use of a freed job's memory as they would have reported it unmapped.
void MarkCached(std::byte* low, std::size_t size) {
#if ASYNCJOB_ASAN
  ASAN_POISON_MEMORY_REGION(low, size);
#endif
#if ASYNCJOB_VALGRIND
  VALGRIND_MAKE_MEM_NOACCESS(low, size);
#endif
  (void)low;
  (void)size;
}

// Given out again: addressable, its contents undefined, as fresh memory.
void MarkTaken(std::byte* low, std::size_t size) {
#if ASYNCJOB_ASAN
  ASAN_UNPOISON_MEMORY_REGION(low, size);
#endif
#if ASYNCJOB_VALGRIND
  VALGRIND_MAKE_MEM_UNDEFINED(low, size);
#endif
  (void)low;
  (void)size;
}

// Unmaps a cached stack, guard included; no poison is left on its addresses,
// which a later mapping may reuse.
void Unmap(const Entry& entry) {
  MarkTaken(entry.low, entry.size());
  munmap(entry.low - GuardSize(), GuardSize() + entry.size());
}

std::atomic<std::size_t> thread_limit{kDefaultThreadCacheLimit};
std::atomic<std::size_t> process_limit{kDefaultProcessCacheLimit};
std::atomic<std::size_t> cached_total{0};  // in every cache

// This thread's cache. Default TLS model (not initial-exec like the job
// layer's hot state): it is used on slow paths only, and its size must not
// eat into the static TLS a dlopen'ed library may need.
struct ThreadCache {
  std::size_t count = 0;
  Entry entries[kMaxThreadCacheLimit];
};
constinit thread_local ThreadCache thread_cache;

// The process-wide cache. A fork while another thread holds the mutex would
// leave it locked in the child: the atfork handlers hold it across fork().
pthread_mutex_t process_mutex = PTHREAD_MUTEX_INITIALIZER;
std::size_t process_count = 0;     // under process_mutex
std::size_t process_resident = 0;  // of those, entries that may have pages
Entry process_entries[kMaxProcessCacheLimit];
pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

// ASYNCJOB_STACK_CACHE=per_thread,process sets the limits (0,0 turns the
// caches off) for programs that cannot call asyncjob_set_stack_cache_limits()
// (an OpenSSL program built against the compatibility header, a benchmark).
[[gnu::constructor]] void ReadLimitsFromTheEnvironment() {
  const char* value = std::getenv("ASYNCJOB_STACK_CACHE");
  if (value == nullptr) return;
  unsigned long per_thread = 0;
  unsigned long process = 0;
  if (std::sscanf(value, "%lu,%lu", &per_thread, &process) == 2) {
    thread_limit.store(std::min<std::size_t>(per_thread, kMaxThreadCacheLimit));
    process_limit.store(std::min<std::size_t>(process, kMaxProcessCacheLimit));
  }
}

void LockBeforeFork() { pthread_mutex_lock(&process_mutex); }
void UnlockAfterFork() { pthread_mutex_unlock(&process_mutex); }
void RegisterAtFork() { pthread_atfork(&LockBeforeFork, &UnlockAfterFork, &UnlockAfterFork); }

void LockProcessCache() {
  pthread_once(&atfork_once, &RegisterAtFork);
  pthread_mutex_lock(&process_mutex);
}
void UnlockProcessCache() { pthread_mutex_unlock(&process_mutex); }

// Takes the newest entry of `size` from entries[0, *count); fills *out.
bool TakeFrom(Entry* entries, std::size_t* count, std::size_t size, Entry* out) {
  for (std::size_t i = *count; i-- > 0;) {
    if (entries[i].size() == size) {
      *out = entries[i];
      entries[i] = entries[--*count];
      return true;
    }
  }
  return false;
}

// Into the process-wide cache; false when it is full. Releases the pages of
// a resident stack once enough others keep theirs.
bool KeepInProcessCache(Entry entry) {
  bool drop_pages = false;
  LockProcessCache();
  const std::size_t limit = process_limit.load(std::memory_order_relaxed);
  if (process_count >= limit) {
    UnlockProcessCache();
    return false;
  }
  if (entry.resident()) {
    if (process_resident >= kResidentInProcessCache) {
      drop_pages = true;
      entry = MakeEntry(entry.low, entry.size(), false);
    } else {
      ++process_resident;
    }
  }
  if (drop_pages) {
    // Give the pages back before publishing the entry: another thread may
    // take it as soon as the lock is released. The guard is untouched.
    UnlockProcessCache();
    madvise(entry.low, entry.size(), MADV_DONTNEED);
    LockProcessCache();
    if (process_count >= process_limit.load(std::memory_order_relaxed)) {
      UnlockProcessCache();
      return false;
    }
  }
  process_entries[process_count++] = entry;
  UnlockProcessCache();
  return true;
}

}  // namespace

void SetCacheLimits(std::size_t per_thread, std::size_t process) {
  thread_limit.store(std::min(per_thread, kMaxThreadCacheLimit), std::memory_order_relaxed);
  process_limit.store(std::min(process, kMaxProcessCacheLimit), std::memory_order_relaxed);
  // Trim what the new limits leave out: this thread's cache and the process's.
  ThreadCache& cache = thread_cache;
  while (cache.count > thread_limit.load(std::memory_order_relaxed)) {
    Unmap(cache.entries[--cache.count]);
    cached_total.fetch_sub(1, std::memory_order_relaxed);
  }
  Entry excess[64];
  for (;;) {
    std::size_t n = 0;
    LockProcessCache();
    while (n < 64 && process_count > process_limit.load(std::memory_order_relaxed)) {
      excess[n] = process_entries[--process_count];
      if (excess[n].resident()) --process_resident;
      ++n;
    }
    UnlockProcessCache();
    if (n == 0) break;
    for (std::size_t i = 0; i < n; ++i) Unmap(excess[i]);
    cached_total.fetch_sub(n, std::memory_order_relaxed);
  }
}

void GetCacheLimits(std::size_t* per_thread, std::size_t* process) {
  if (per_thread != nullptr) *per_thread = thread_limit.load(std::memory_order_relaxed);
  if (process != nullptr) *process = process_limit.load(std::memory_order_relaxed);
}

std::size_t CachedStacks() { return cached_total.load(std::memory_order_relaxed); }

std::byte* TakeStack(std::size_t size, void** mapping) {
  if (cached_total.load(std::memory_order_relaxed) == 0) return nullptr;
  Entry entry;
  ThreadCache& cache = thread_cache;
  bool found = TakeFrom(cache.entries, &cache.count, size, &entry);
  if (!found) {
    LockProcessCache();
    found = TakeFrom(process_entries, &process_count, size, &entry);
    if (found && entry.resident()) --process_resident;
    UnlockProcessCache();
  }
  if (!found) return nullptr;
  cached_total.fetch_sub(1, std::memory_order_relaxed);
  MarkTaken(entry.low, entry.size());
  *mapping = entry.low - GuardSize();
  return entry.low;
}

bool KeepStack(void* mapping, std::byte* low, std::size_t size, bool resident) {
  ASYNCJOB_DCHECK(static_cast<std::byte*>(mapping) + GuardSize() == low);
  (void)mapping;
  const Entry entry = MakeEntry(low, size, resident);
  MarkCached(low, size);
  ThreadCache& cache = thread_cache;
  if (cache.count < thread_limit.load(std::memory_order_relaxed)) {
    cache.entries[cache.count++] = entry;
  } else if (!KeepInProcessCache(entry)) {
    MarkTaken(low, size);  // the caller unmaps it: leave no poison behind
    return false;
  }
  cached_total.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void FlushThreadCache() {
  // Oldest first, so that the most recently used stacks, the likeliest to
  // be warm, end up on top of the process-wide cache.
  ThreadCache& cache = thread_cache;
  for (std::size_t i = 0; i < cache.count; ++i) {
    if (!KeepInProcessCache(cache.entries[i])) {
      Unmap(cache.entries[i]);
      cached_total.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  cache.count = 0;
}

std::size_t TrimCaches() {
  std::size_t unmapped = 0;
  ThreadCache& cache = thread_cache;
  while (cache.count > 0) {
    Unmap(cache.entries[--cache.count]);
    ++unmapped;
  }
  for (;;) {
    Entry batch[64];
    std::size_t n = 0;
    LockProcessCache();
    while (n < 64 && process_count > 0) {
      batch[n] = process_entries[--process_count];
      if (batch[n].resident()) --process_resident;
      ++n;
    }
    UnlockProcessCache();
    if (n == 0) break;
    for (std::size_t i = 0; i < n; ++i) Unmap(batch[i]);
    unmapped += n;
  }
  cached_total.fetch_sub(unmapped, std::memory_order_relaxed);
  return unmapped;
}

}  // namespace asyncjob::stack
