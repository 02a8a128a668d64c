// fuzz_support.h - what the API fuzzer's reference model (api_model.h) and
// its operation interpreter (api_fuzzer.cc) share: reporting a mismatch and
// tracing ops, reading the input, the sources of job stacks (which kind a
// stack is, and the custom allocator whose outcomes an input plans), and the
// eventfds the inputs set as wait fds and signal.
//
// It knows nothing of the model's state or of the ops.
#ifndef ASYNCJOB_TESTS_RELIABILITY_FUZZ_SUPPORT_H_
#define ASYNCJOB_TESTS_RELIABILITY_FUZZ_SUPPORT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "context/context.h"  // ASYNCJOB_CONTEXT_RETURN_FREE

namespace api_fuzzer {

// ----- Failure reporting -----

extern bool g_trace;            // ASYNCJOB_FUZZ_TRACE: print every op
extern std::size_t g_op_count;  // ops run in this input

// Prints where the library and the model disagreed, and what differed, then
// aborts (which libFuzzer reports as a crash).
[[noreturn]] __attribute__((format(printf, 4, 5))) void Fail(const char* file, int line,
                                                             const char* what, const char* format,
                                                             ...);

#define FZ_CHECK(cond, ...)                                                  \
  do {                                                                       \
    if (!(cond)) ::api_fuzzer::Fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (false)

// With g_trace: one line naming the op and who runs it (self < 0: the top
// level, else the model's job id).
void Trace(int self, const char* format, ...) __attribute__((format(printf, 2, 3)));

// ----- Input -----

struct Reader {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;
  bool empty() const { return pos >= size; }
  std::uint8_t Byte() { return pos < size ? data[pos++] : 0; }
  Reader Sub(std::size_t n) {
    n = std::min(n, size - std::min(pos, size));
    Reader sub{data + pos, n, 0};
    pos += n;
    return sub;
  }
};

// ----- Stack sources -----

// Where every stack of the process comes from, chosen once at start.
enum class Mode { kLibrary, kCustom };
extern Mode g_mode;

// The kind of a job's stack, as asyncjob_get_pool_stats() counts them.
enum Kind { kGuarded = 0, kSlab = 1, kCustom = 2 };

// Whether jobs are entered "return-free" (the assembly back end without
// sanitizers): such a job cannot free its own stack.
#if defined(ASYNCJOB_CONTEXT_RETURN_FREE) && ASYNCJOB_CONTEXT_RETURN_FREE
constexpr bool kReturnFreeBuild = true;
#else
constexpr bool kReturnFreeBuild = false;
#endif

// Custom mode: the allocator and its plan of outcomes, consumed one per
// allocation from the front (an empty plan means kOk).
enum class AllocOutcome : std::uint8_t { kOk, kNull, kTooSmall, kBigger, kMisaligned };

// The ASYNC_set_mem_functions() pair of custom mode. Every block handed out
// is remembered until it comes back.
void* FuzzAlloc(std::size_t* num);
void FuzzFree(void* address);

std::size_t LiveBlocks();  // blocks handed out and not freed
std::size_t AllocCalls();  // calls of FuzzAlloc so far
// The outcome the allocation `index` places from now will have.
AllocOutcome PlanAt(std::size_t index);
void ClearAllocPlan();
// Appends outcomes to the plan; returns how many it now holds.
std::size_t ExtendAllocPlan(const std::vector<AllocOutcome>& outcomes);

// ----- Wait fds -----

// The fds an input sets in wait contexts are these eventfds, opened once
// for the process, so that an input can make one readable (the library
// releases a tombstone whose context has a readable fd) and every input
// starts with all of them drained.
constexpr int kEventFds = 8;
void OpenEventFds();
int EventFd(int index);
int EventFdIndex(int fd);  // -1: not one of them
void SignalEventFd(int index);
void DrainEventFd(int index);

}  // namespace api_fuzzer

#endif  // ASYNCJOB_TESTS_RELIABILITY_FUZZ_SUPPORT_H_
