// fuzz_support.cc - the API fuzzer's failure reporting, tracing and custom
// stack allocator (see fuzz_support.h).
#include "fuzz_support.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "asyncjob/async.h"

namespace api_fuzzer {

// ----- Failure reporting -----

bool g_trace = false;
std::size_t g_op_count = 0;

void Fail(const char* file, int line, const char* what, const char* format, ...) {
  std::fprintf(stderr, "api_fuzzer: model mismatch at %s:%d after op #%zu: %s\n  ", file, line,
               g_op_count, what);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fprintf(stderr, "\n  (rerun with ASYNCJOB_FUZZ_TRACE=1 to see every op)\n");
  std::abort();
}

void Trace(int self, const char* format, ...) {
  if (!g_trace) return;
  std::fprintf(stderr, "#%zu %s%d: ", g_op_count, self < 0 ? "top" : "job ", self < 0 ? 0 : self);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
}

// ----- Stack sources -----

Mode g_mode = Mode::kLibrary;

namespace {

std::mutex g_alloc_mutex;
std::vector<AllocOutcome> g_plan;           // consumed from the front
std::unordered_map<void*, void*> g_blocks;  // pointer handed out -> malloc'd block
std::size_t g_alloc_calls = 0;

}  // namespace

void* FuzzAlloc(std::size_t* num) {
  std::lock_guard lock(g_alloc_mutex);
  FZ_CHECK(num != nullptr && *num == asyncjob_get_stack_size(),
           "the allocator must be asked for the default stack size");
  ++g_alloc_calls;
  AllocOutcome outcome = AllocOutcome::kOk;
  if (!g_plan.empty()) {
    outcome = g_plan.front();
    g_plan.erase(g_plan.begin());
  }
  std::size_t skew = 0;
  switch (outcome) {
    case AllocOutcome::kNull:
      return nullptr;
    case AllocOutcome::kTooSmall:
      *num = 4096;
      break;
    case AllocOutcome::kBigger:
      *num += 8192;
      break;
    case AllocOutcome::kMisaligned:
      skew = 8;
      break;
    case AllocOutcome::kOk:
      break;
  }
  auto* block = static_cast<char*>(std::malloc(*num + skew));
  FZ_CHECK(block != nullptr, "malloc of a %zu-byte stack failed", *num);
  g_blocks[block + skew] = block;
  return block + skew;
}

void FuzzFree(void* address) {
  std::lock_guard lock(g_alloc_mutex);
  auto it = g_blocks.find(address);
  FZ_CHECK(it != g_blocks.end(), "free of %p, which the allocator never handed out", address);
  std::free(it->second);
  g_blocks.erase(it);
}

std::size_t LiveBlocks() {
  std::lock_guard lock(g_alloc_mutex);
  return g_blocks.size();
}

std::size_t AllocCalls() {
  std::lock_guard lock(g_alloc_mutex);
  return g_alloc_calls;
}

AllocOutcome PlanAt(std::size_t index) {
  std::lock_guard lock(g_alloc_mutex);
  return index < g_plan.size() ? g_plan[index] : AllocOutcome::kOk;
}

void ClearAllocPlan() {
  std::lock_guard lock(g_alloc_mutex);
  g_plan.clear();
}

std::size_t ExtendAllocPlan(const std::vector<AllocOutcome>& outcomes) {
  std::lock_guard lock(g_alloc_mutex);
  g_plan.insert(g_plan.end(), outcomes.begin(), outcomes.end());
  return g_plan.size();
}

// ----- Wait fds -----

namespace {
int g_event_fds[kEventFds] = {-1, -1, -1, -1, -1, -1, -1, -1};
}  // namespace

void OpenEventFds() {
  for (int& fd : g_event_fds) {
    fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
      std::fprintf(stderr, "api_fuzzer: eventfd failed (errno %d)\n", errno);
      std::abort();
    }
  }
}

int EventFd(int index) { return g_event_fds[index]; }

int EventFdIndex(int fd) {
  for (int i = 0; i < kEventFds; ++i) {
    if (g_event_fds[i] == fd) return i;
  }
  return -1;
}

void SignalEventFd(int index) {
  const std::uint64_t one = 1;
  FZ_CHECK(write(g_event_fds[index], &one, sizeof one) == sizeof one, "eventfd write failed");
}

void DrainEventFd(int index) {
  std::uint64_t count = 0;
  const ssize_t got = read(g_event_fds[index], &count, sizeof count);
  FZ_CHECK(got == sizeof count || (got < 0 && errno == EAGAIN), "eventfd read failed");
}

}  // namespace api_fuzzer
