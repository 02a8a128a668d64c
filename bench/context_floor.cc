// context_floor.cc - the floor under every asyncjob figure: a bare context
// switch there and back, below the job, pool and wait-context layers.
//
// Links the context layer (asyncjob_static, whose context symbols the shared
// library hides) and calls context::Switch() exactly as the job layer does,
// sanitizer and tool hooks included. One iteration is a round trip: main ->
// fibre -> main, two switches. A job's full cycle (start, pause, resume,
// finish) is two such round trips plus the job machinery.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>

#include "context/context.h"

namespace ctx = asyncjob::context;

namespace {

constexpr std::size_t kStackSize = 64 * 1024;

ctx::Context g_main;
ctx::Context g_fibre;
int g_depth = 0;  // frames between each side's loop and its Switch()

// Switch() called `depth` out-of-line frames below the caller. After a switch
// the resumed side returns through frames the other side's calls did not
// push, as a job's API calls would if they switched and then returned
// (ASYNC_start_job -> Start -> Switch on one side, ASYNC_pause_job ->
// PauseCurrent -> Switch on the other): what the API's return-free entries
// avoid.
[[gnu::noinline]] void* SwitchAtDepth(int depth, ctx::Context* from, ctx::Context* to) {
  if (depth == 0) return ctx::Switch(from, to, nullptr);
  void* received = SwitchAtDepth(depth - 1, from, to);
  benchmark::DoNotOptimize(received);  // no tail call: keep the frame
  return received;
}

[[noreturn]] void BounceForever(void*, void*) {
  for (;;) SwitchAtDepth(g_depth, &g_fibre, &g_main);
}

// state.range(0): call depth on each side (0: Switch() straight from the
// loops, the floor proper).
void BM_SwitchRoundTrip(benchmark::State& state) {
  g_depth = static_cast<int>(state.range(0));
  void* stack = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    state.SkipWithError("mmap of the fibre stack failed");
    return;
  }
  ctx::InitializeThreadContext(&g_main);
  ctx::Prepare(&g_fibre, stack, kStackSize, &BounceForever, nullptr);
  ctx::Switch(&g_main, &g_fibre, nullptr);  // first entry: out of the timing
  for (auto _ : state) {
    benchmark::DoNotOptimize(SwitchAtDepth(g_depth, &g_main, &g_fibre));
  }
  // The fibre is left suspended in its loop; nothing on its stack needs
  // unwinding, so the stack can simply go.
  ctx::Destroy(&g_fibre);
  munmap(stack, kStackSize);
}

BENCHMARK(BM_SwitchRoundTrip)->Arg(0)->Arg(1)->Arg(3);

// ----- A design experiment: a job cycle with no return after a switch -----
//
// A switch followed by returns through several frames (Enter -> Start ->
// ASYNC_start_job on one side, PauseCurrent -> ASYNC_pause_job on the other)
// has every such return mispredicted. Here start, pause and finish do their
// bookkeeping *before* switching and end in a tail call to the switch, so
// the resumed side lands straight back in its caller: only the job
// function's own final return is left. One iteration is a full cycle
// (start, pause, resume, finish: four switches), with Prepare() per start as
// the job layer does. The API's return-free entries have this structure;
// this measures it with none of their bookkeeping.

constexpr std::uintptr_t kMiniPaused = 2;
constexpr std::uintptr_t kMiniFinished = 3;

struct MiniJob {
  ctx::Context fibre;
  void* stack = nullptr;
  int (*function)(void*) = nullptr;
  int result = 0;
  bool paused = false;
};

MiniJob g_mini;

[[noreturn]] void MiniEntry(void*, void* argument) {
  auto* job = static_cast<MiniJob*>(argument);
  job->result = job->function(nullptr);
  job->paused = false;
  ctx::SwitchForGood(&job->fibre, &g_main, reinterpret_cast<void*>(kMiniFinished));
}

[[gnu::noinline]] void* MiniStart(MiniJob* job, int (*function)(void*)) {
  job->function = function;
  ctx::Prepare(&job->fibre, job->stack, kStackSize, &MiniEntry, job);
  return ctx::Switch(&g_main, &job->fibre, nullptr);  // a tail call
}

[[gnu::noinline]] void* MiniResume(MiniJob* job) {
  job->paused = false;
  return ctx::Switch(&g_main, &job->fibre, nullptr);  // a tail call
}

[[gnu::noinline]] void* MiniPause() {
  g_mini.paused = true;
  return ctx::Switch(&g_mini.fibre, &g_main, reinterpret_cast<void*>(kMiniPaused));
}

[[gnu::noinline]] int MiniPauseOnce(void*) {
  MiniPause();
  return 1;
}

void BM_ReturnFreeCycle(benchmark::State& state) {
  g_mini.stack = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (g_mini.stack == MAP_FAILED) {
    state.SkipWithError("mmap of the fibre stack failed");
    return;
  }
  ctx::InitializeThreadContext(&g_main);
  for (auto _ : state) {
    void* paused = MiniStart(&g_mini, &MiniPauseOnce);
    void* finished = MiniResume(&g_mini);
    if (paused != reinterpret_cast<void*>(kMiniPaused) ||
        finished != reinterpret_cast<void*>(kMiniFinished)) {
      state.SkipWithError("the cycle went wrong");
      break;
    }
  }
  ctx::Destroy(&g_mini.fibre);
  munmap(g_mini.stack, kStackSize);
}

BENCHMARK(BM_ReturnFreeCycle);

// The same cycle with the fibre parked between jobs, as asyncjob's jobs are
// (docs/design.md, "Parked contexts"): a finished job saves its context in
// its entry loop, and the next start goes on from there instead of
// preparing a fresh context. Only the first start prepares one.

MiniJob g_parked;
bool g_parked_prepared = false;

[[noreturn]] void ParkedEntry(void*, void* argument) {
  auto* job = static_cast<MiniJob*>(argument);
  for (;;) {
    job->result = job->function(nullptr);
    job->paused = false;
    ctx::Switch(&job->fibre, &g_main, reinterpret_cast<void*>(kMiniFinished));
  }
}

[[gnu::noinline]] void* ParkedStart(MiniJob* job, int (*function)(void*)) {
  job->function = function;
  if (!g_parked_prepared) {
    g_parked_prepared = true;
    ctx::Prepare(&job->fibre, job->stack, kStackSize, &ParkedEntry, job);
  }
  return ctx::Switch(&g_main, &job->fibre, nullptr);  // a tail call
}

[[gnu::noinline]] void* ParkedPause() {
  g_parked.paused = true;
  return ctx::Switch(&g_parked.fibre, &g_main, reinterpret_cast<void*>(kMiniPaused));
}

[[gnu::noinline]] int ParkedPauseOnce(void*) {
  ParkedPause();
  return 1;
}

void BM_ParkedCycle(benchmark::State& state) {
  g_parked.stack = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (g_parked.stack == MAP_FAILED) {
    state.SkipWithError("mmap of the fibre stack failed");
    return;
  }
  ctx::InitializeThreadContext(&g_main);
  for (auto _ : state) {
    void* paused = ParkedStart(&g_parked, &ParkedPauseOnce);
    void* finished = MiniResume(&g_parked);
    if (paused != reinterpret_cast<void*>(kMiniPaused) ||
        finished != reinterpret_cast<void*>(kMiniFinished)) {
      state.SkipWithError("the cycle went wrong");
      break;
    }
  }
  // The fibre is left parked in its loop, with nothing to unwind.
  ctx::Destroy(&g_parked.fibre);
  munmap(g_parked.stack, kStackSize);
  g_parked_prepared = false;
}

BENCHMARK(BM_ParkedCycle);

// ----- The cost of a fresh page -----
//
// A job created and paused in a fresh process needs at least one page of
// memory nobody has touched before: its stack's top page. This is what that
// page costs on its own: one iteration writes one byte to the top page of
// the next 128 KiB slot of an anonymous mapping (a page fault, the kernel
// finding and zeroing a page, and whatever the hypervisor adds), with
// 10,000 slots per mapping as in the 10,000-job scale case. Mapping and
// unmapping are out of the timing.

constexpr std::size_t kSlotSize = 128 * 1024;
constexpr std::size_t kSlots = 10'000;

void BM_FreshPage(benchmark::State& state) {
  auto map_slots = [] {
    void* memory = mmap(nullptr, kSlots * kSlotSize, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return memory == MAP_FAILED ? nullptr : static_cast<char*>(memory);
  };
  char* slots = map_slots();
  std::size_t next = 0;
  for (auto _ : state) {
    if (slots == nullptr) {
      state.SkipWithError("mmap failed");
      break;
    }
    if (next == kSlots) {
      state.PauseTiming();
      munmap(slots, kSlots * kSlotSize);
      slots = map_slots();
      next = 0;
      state.ResumeTiming();
      if (slots == nullptr) continue;
    }
    char* top_page = slots + (next + 1) * kSlotSize - 4096;
    *static_cast<volatile char*>(top_page) = 1;
    ++next;
  }
  if (slots != nullptr) munmap(slots, kSlots * kSlotSize);
}

BENCHMARK(BM_FreshPage);

// ----- Reading the FP control state -----
//
// Every switch stores MXCSR and the x87 control word of the context it
// leaves (stmxcsr, fnstcw) and compares them with those of the context it
// resumes: the per-switch cost of keeping the FP control state per context.
// Here the two stores alone, back to back, as two switches of a round trip
// make them. x86-64 only (elsewhere the case reports an error).

void BM_ReadFpControl(benchmark::State& state) {
#if defined(__x86_64__)
  alignas(8) std::uint32_t mxcsr = 0;
  alignas(8) std::uint16_t x87cw = 0;
  for (auto _ : state) {
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(x87cw));
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(x87cw));
    benchmark::DoNotOptimize(mxcsr);
    benchmark::DoNotOptimize(x87cw);
  }
#else
  state.SkipWithError("x86-64 only");
#endif
}

BENCHMARK(BM_ReadFpControl);

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("implementation", "asyncjob context layer");
  benchmark::AddCustomContext("context_backend", ctx::BackendName());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
