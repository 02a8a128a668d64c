// context_smoke.cc - standalone smoke test of the context layer.
//
// Uses only the API of src/context/context.h (InitializeThreadContext,
// Prepare, Switch, SwitchForGood, Destroy) on mmap'd stacks, with no test
// framework, so that it can be cross-compiled and run under qemu-user with
// nothing but a cross compiler (see tools/check-aarch64.sh). It is written
// for every back end: the assembly switches (x86-64, AArch64) and ucontext.
//
// Checks:
//   - transfer values both ways over many ping-pong switches;
//   - callee-saved registers survive a switch: values live across switches
//     in a computation run by two contexts in lockstep, and a probe written
//     in assembly that fills every callee-saved register (x19-x28, d8-d15 on
//     AArch64; rbx, rbp, r12-r15 on x86-64) with known values, switches out
//     and back, and reads them again;
//   - the FP rounding mode (FPCR / MXCSR and x87 control word) is per
//     context, a fresh context inherits its creator's, and sticky exception
//     flags raised in one context do not disturb that;
//   - a context can be prepared again on the same stack and reused after it
//     left with SwitchForGood;
//   - the stack inside a fibre is 16-byte aligned;
//   - C++ exceptions work inside a fibre, and a backtrace taken in a fibre
//     ends cleanly at the context's first frame (the trampoline's CFI);
//   - (assembly back ends) the two assembly entry points work when reached
//     by indirect calls, which is what BTI checks.
//
// Prints one line per test and "N passed, M failed"; exits non-zero on any
// failure.
#include <sys/mman.h>
#include <unistd.h>
#include <unwind.h>

#include <cfenv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "context/context.h"

namespace ctx = asyncjob::context;

// ---------------------------------------------------------------------------
// The register probe: fills the callee-saved registers with seed + 1,
// seed + 2, ..., calls fn(arg), then stores the registers' values into out[]
// (in the same order) and returns. Written in assembly so that the compiler
// has no say in what those registers hold across the call.
extern "C" void smoke_callee_saved_probe(void (*fn)(void*), void* arg, std::uint64_t* out,
                                         std::uint64_t seed);

#if defined(__aarch64__)
// x19-x28 then d8-d15. x29 stays a valid frame pointer (it is preserved by
// the switch all the same: the ping-pong tests would crash otherwise).
constexpr int kProbeRegisters = 18;
const char* const kProbeNames[kProbeRegisters] = {"x19", "x20", "x21", "x22", "x23", "x24",
                                                  "x25", "x26", "x27", "x28", "d8",  "d9",
                                                  "d10", "d11", "d12", "d13", "d14", "d15"};
asm(R"(
        .text
        .globl  smoke_callee_saved_probe
        .hidden smoke_callee_saved_probe
        .type   smoke_callee_saved_probe, %function
        .p2align 2
smoke_callee_saved_probe:
        hint    #34                     /* bti c */
        stp     x29, x30, [sp, #-176]!
        mov     x29, sp
        stp     x19, x20, [sp, #16]
        stp     x21, x22, [sp, #32]
        stp     x23, x24, [sp, #48]
        stp     x25, x26, [sp, #64]
        stp     x27, x28, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        str     x2, [sp, #160]          /* out */
        mov     x16, x0                 /* fn */
        mov     x0, x1                  /* arg */
        add     x19, x3, #1
        add     x20, x3, #2
        add     x21, x3, #3
        add     x22, x3, #4
        add     x23, x3, #5
        add     x24, x3, #6
        add     x25, x3, #7
        add     x26, x3, #8
        add     x27, x3, #9
        add     x28, x3, #10
        add     x9, x3, #11
        fmov    d8, x9
        add     x9, x3, #12
        fmov    d9, x9
        add     x9, x3, #13
        fmov    d10, x9
        add     x9, x3, #14
        fmov    d11, x9
        add     x9, x3, #15
        fmov    d12, x9
        add     x9, x3, #16
        fmov    d13, x9
        add     x9, x3, #17
        fmov    d14, x9
        add     x9, x3, #18
        fmov    d15, x9
        blr     x16
        ldr     x9, [sp, #160]
        stp     x19, x20, [x9, #0]
        stp     x21, x22, [x9, #16]
        stp     x23, x24, [x9, #32]
        stp     x25, x26, [x9, #48]
        stp     x27, x28, [x9, #64]
        stp     d8, d9, [x9, #80]
        stp     d10, d11, [x9, #96]
        stp     d12, d13, [x9, #112]
        stp     d14, d15, [x9, #128]
        ldp     x19, x20, [sp, #16]
        ldp     x21, x22, [sp, #32]
        ldp     x23, x24, [sp, #48]
        ldp     x25, x26, [sp, #64]
        ldp     x27, x28, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        ldp     x29, x30, [sp], #176
        ret
        .size   smoke_callee_saved_probe, .-smoke_callee_saved_probe
)");
#elif defined(__x86_64__)
constexpr int kProbeRegisters = 6;
const char* const kProbeNames[kProbeRegisters] = {"rbx", "rbp", "r12", "r13", "r14", "r15"};
asm(R"(
        .text
        .globl  smoke_callee_saved_probe
        .hidden smoke_callee_saved_probe
        .type   smoke_callee_saved_probe, @function
        .p2align 4
smoke_callee_saved_probe:
        endbr64
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        pushq   %rdx                    /* out; rsp is now 16-byte aligned */
        movq    %rdi, %rax              /* fn */
        movq    %rsi, %rdi              /* arg */
        leaq    1(%rcx), %rbx
        leaq    2(%rcx), %rbp
        leaq    3(%rcx), %r12
        leaq    4(%rcx), %r13
        leaq    5(%rcx), %r14
        leaq    6(%rcx), %r15
        call    *%rax
        popq    %rax
        movq    %rbx, 0(%rax)
        movq    %rbp, 8(%rax)
        movq    %r12, 16(%rax)
        movq    %r13, 24(%rax)
        movq    %r14, 32(%rax)
        movq    %r15, 40(%rax)
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .size   smoke_callee_saved_probe, .-smoke_callee_saved_probe
)");
#else
#define SMOKE_NO_PROBE 1
constexpr int kProbeRegisters = 0;
#endif

namespace {

// ---------------------------------------------------------------------------
// Minimal harness.

int g_failures_in_test = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures_in_test;                                                         \
    }                                                                               \
  } while (0)

// A stack from mmap with an inaccessible guard page below it.
class Stack {
 public:
  explicit Stack(std::size_t size) {
    page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    size_ = (size + page_ - 1) / page_ * page_;
    void* p = mmap(nullptr, size_ + page_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("mmap");
      std::exit(2);
    }
    if (mprotect(p, page_, PROT_NONE) != 0) {
      std::perror("mprotect");
      std::exit(2);
    }
    mapping_ = static_cast<char*>(p);
  }
  ~Stack() { munmap(mapping_, size_ + page_); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  char* low() const { return mapping_ + page_; }
  std::size_t size() const { return size_; }

 private:
  char* mapping_ = nullptr;
  std::size_t page_ = 0;
  std::size_t size_ = 0;
};

constexpr std::size_t kStackSize = 256 * 1024;

// The two contexts every test uses: this thread's own and one fibre.
ctx::Context g_main;
ctx::Context g_fibre;

void* ToPtr(std::uintptr_t v) { return reinterpret_cast<void*>(v); }
std::uintptr_t FromPtr(void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// ---------------------------------------------------------------------------
// Transfer values both ways.

constexpr std::uintptr_t kPingPongRounds = 100000;
constexpr std::uintptr_t kDone = 0xd0e;

std::uintptr_t ToFibre(std::uintptr_t i) { return 3 * i + 1; }
std::uintptr_t ToMain(std::uintptr_t i) { return 5 * i + 2; }

void PingPongEntry(void* transfer, void* argument) {
  CHECK(argument == &g_fibre);
  std::uintptr_t received = FromPtr(transfer);
  for (std::uintptr_t i = 0; i < kPingPongRounds; ++i) {
    CHECK(received == ToFibre(i));
    received = FromPtr(ctx::Switch(&g_fibre, &g_main, ToPtr(ToMain(i))));
  }
  CHECK(received == ToFibre(kPingPongRounds));
  ctx::SwitchForGood(&g_fibre, &g_main, ToPtr(kDone));
}

void TestPingPong() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  ctx::Prepare(&g_fibre, stack.low(), stack.size(), &PingPongEntry, &g_fibre);
  std::uintptr_t mismatches = 0;
  for (std::uintptr_t i = 0; i < kPingPongRounds; ++i) {
    void* got = ctx::Switch(&g_main, &g_fibre, ToPtr(ToFibre(i)));
    if (FromPtr(got) != ToMain(i)) ++mismatches;
  }
  CHECK(mismatches == 0);
  CHECK(FromPtr(ctx::Switch(&g_main, &g_fibre, ToPtr(ToFibre(kPingPongRounds)))) == kDone);
  ctx::Destroy(&g_fibre);
}

// ---------------------------------------------------------------------------
// The registers a suspended context saved (what backtraces of paused jobs
// and the gdb extension read): its stack pointer lies in its own stack and,
// with the assembly back ends, its pc is the return address into the
// function that switched away.

__attribute__((noinline)) void SavedRegistersEntry(void*, void*) {
  volatile int after = 0;
  ctx::Switch(&g_fibre, &g_main, nullptr);
  after = after + 1;  // not a tail call: the switch returns here
  ctx::SwitchForGood(&g_fibre, &g_main, ToPtr(kDone));
}

void TestSavedRegisters() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  ctx::Prepare(&g_fibre, stack.low(), stack.size(), &SavedRegistersEntry, nullptr);
  CHECK(ctx::Switch(&g_main, &g_fibre, nullptr) == nullptr);
  ctx::SavedRegisters saved;
  CHECK(ctx::GetSavedRegisters(&g_fibre, &saved));
  const auto low = reinterpret_cast<std::uintptr_t>(stack.low());
  const auto sp = reinterpret_cast<std::uintptr_t>(saved.sp);
  CHECK(sp > low && sp < low + stack.size());
#if !ASYNCJOB_CONTEXT_UCONTEXT
  // Switch() is inline: optimized, it is part of the entry function; at -O0
  // its out-of-line copy makes the call.
  const auto pc = reinterpret_cast<std::uintptr_t>(saved.pc);
  const auto inside = [pc](std::uintptr_t function) {
    return pc > function && pc < function + 1024;
  };
  void* (*const switch_function)(ctx::Context*, ctx::Context*, void*) = &ctx::Switch;
  CHECK(inside(reinterpret_cast<std::uintptr_t>(&SavedRegistersEntry)) ||
        inside(reinterpret_cast<std::uintptr_t>(switch_function)));
#endif
  CHECK(FromPtr(ctx::Switch(&g_main, &g_fibre, nullptr)) == kDone);
  ctx::Destroy(&g_fibre);
}

// ---------------------------------------------------------------------------
// Values live across switches, in both contexts at once: the compiler keeps
// them in callee-saved integer and FP registers across the Switch() call.

struct Mix {
  std::uint64_t a, b, c, d;
  double x, y, z, w, u, v;
  bool operator==(const Mix&) const = default;
};

constexpr int kMixRounds = 2000;

template <bool kSwitch>
[[gnu::noinline]] Mix Compute(std::uint64_t seed, ctx::Context* self, ctx::Context* other) {
  std::uint64_t a = seed, b = seed ^ 0x9e3779b97f4a7c15u, c = seed * 3, d = ~seed;
  double x = static_cast<double>(seed & 0xffff), y = 1.5, z = -2.25, w = 0.125, u = 3.0, v = 7.0;
  for (int i = 0; i < kMixRounds; ++i) {
    a = a * 6364136223846793005u + 1442695040888963407u;
    b ^= a >> 7;
    c += b * 31 + static_cast<std::uint64_t>(i);
    d = (d << 1) ^ c;
    x = x * 0.999 + static_cast<double>(a >> 40) * 1e-9;
    y = y * 1.0001 + x;
    z = z - y * 1e-6;
    w = w + z * 0.5;
    u = u * 0.75 + w;
    v = v + u * 1e-3;
    if constexpr (kSwitch) ctx::Switch(self, other, nullptr);
  }
  return Mix{a, b, c, d, x, y, z, w, u, v};
}

constexpr std::uint64_t kMainSeed = 0x1234567;
constexpr std::uint64_t kFibreSeed = 0x7654321;
Mix g_fibre_mix;

void MixEntry(void*, void*) {
  g_fibre_mix = Compute<true>(kFibreSeed, &g_fibre, &g_main);
  ctx::SwitchForGood(&g_fibre, &g_main, nullptr);
}

void TestValuesAcrossSwitches() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  ctx::Prepare(&g_fibre, stack.low(), stack.size(), &MixEntry, nullptr);
  Mix main_mix = Compute<true>(kMainSeed, &g_main, &g_fibre);
  ctx::Switch(&g_main, &g_fibre, nullptr);  // let the fibre finish
  CHECK(main_mix == Compute<false>(kMainSeed, nullptr, nullptr));
  CHECK(g_fibre_mix == Compute<false>(kFibreSeed, nullptr, nullptr));
  ctx::Destroy(&g_fibre);
}

// ---------------------------------------------------------------------------
// Every callee-saved register, with known values, across a switch each way.

#ifndef SMOKE_NO_PROBE
constexpr std::uint64_t kMainPattern = 0x5a5a5a5a00000000u;
constexpr std::uint64_t kFibrePattern = 0xa5a5a5a500000000u;
std::uint64_t g_main_out[kProbeRegisters];
std::uint64_t g_fibre_out[kProbeRegisters];

void CheckProbe(const std::uint64_t* out, std::uint64_t seed, const char* who) {
  for (int i = 0; i < kProbeRegisters; ++i) {
    std::uint64_t want = seed + static_cast<std::uint64_t>(i) + 1;
    if (out[i] != want) {
      std::fprintf(stderr, "%s: %s = %#llx, want %#llx\n", who, kProbeNames[i],
                   static_cast<unsigned long long>(out[i]), static_cast<unsigned long long>(want));
      ++g_failures_in_test;
    }
  }
}

void SwitchToMain(void*) { ctx::Switch(&g_fibre, &g_main, nullptr); }
void SwitchToFibre(void*) { ctx::Switch(&g_main, &g_fibre, nullptr); }

void ProbeEntry(void*, void*) {
  // Runs while the main context is suspended inside its own probe: this
  // probe overwrites every callee-saved register with other values.
  smoke_callee_saved_probe(&SwitchToMain, nullptr, g_fibre_out, kFibrePattern);
  CheckProbe(g_fibre_out, kFibrePattern, "fibre");
  ctx::SwitchForGood(&g_fibre, &g_main, nullptr);
}

void TestCalleeSavedRegisters() {
  Stack stack(kStackSize);
  for (int round = 0; round < 3; ++round) {
    ctx::InitializeThreadContext(&g_main);
    ctx::Prepare(&g_fibre, stack.low(), stack.size(), &ProbeEntry, nullptr);
    smoke_callee_saved_probe(&SwitchToFibre, nullptr, g_main_out,
                             kMainPattern + static_cast<std::uint64_t>(round));
    CheckProbe(g_main_out, kMainPattern + static_cast<std::uint64_t>(round), "main");
    ctx::Switch(&g_main, &g_fibre, nullptr);  // the fibre checks its own
  }
  ctx::Destroy(&g_fibre);
}
#endif

// ---------------------------------------------------------------------------
// FP rounding mode per context.

// The rounding mode the hardware actually applies to double arithmetic (SSE
// on x86-64, so this reads MXCSR where fegetround() reads the x87 word).
int ArithmeticRounding() {
  volatile double one = 1.0, tiny = 0x1p-60, three_quarter_ulp = 0x1.8p-53;
  double up = one + tiny;                 // > 1 only when rounding upward
  double down = -one - tiny;              // < -1 only when rounding downward
  double near = one + three_quarter_ulp;  // > 1 when to nearest (or upward)
  if (up > 1.0) return FE_UPWARD;
  if (down < -1.0) return FE_DOWNWARD;
  if (near > 1.0) return FE_TONEAREST;
  return FE_TOWARDZERO;
}

bool RoundingIs(int mode) { return fegetround() == mode && ArithmeticRounding() == mode; }

const int kModes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
constexpr int kRoundingRounds = 1000;

void RoundingEntry(void*, void*) {
  CHECK(RoundingIs(FE_TOWARDZERO));  // inherited from Prepare()'s caller
  fesetround(FE_UPWARD);
  ctx::Switch(&g_fibre, &g_main, nullptr);
  CHECK(RoundingIs(FE_UPWARD));
  feraiseexcept(FE_INEXACT);  // a sticky flag, raised here
  ctx::Switch(&g_fibre, &g_main, nullptr);
  CHECK(RoundingIs(FE_UPWARD));
  // Every pair of modes, equal ones included (the switch skips the reload
  // when they match): each side sets its own and checks it after a switch.
  for (int i = 0; i < kRoundingRounds; ++i) {
    int mine = kModes[(i * 3 + 1) % 4];
    fesetround(mine);
    if (i % 7 == 0) feraiseexcept(FE_INEXACT);
    ctx::Switch(&g_fibre, &g_main, nullptr);
    if (!RoundingIs(mine)) {
      CHECK(RoundingIs(mine));
      break;
    }
  }
  ctx::SwitchForGood(&g_fibre, &g_main, nullptr);
}

void TestRoundingModePerContext() {
  Stack stack(kStackSize);
  feclearexcept(FE_ALL_EXCEPT);
  ctx::InitializeThreadContext(&g_main);
  fesetround(FE_TOWARDZERO);
  ctx::Prepare(&g_fibre, stack.low(), stack.size(), &RoundingEntry, nullptr);
  fesetround(FE_TONEAREST);
  CHECK(RoundingIs(FE_TONEAREST));
  ctx::Switch(&g_main, &g_fibre, nullptr);  // fibre sets FE_UPWARD
  CHECK(RoundingIs(FE_TONEAREST));
  fesetround(FE_DOWNWARD);
  ctx::Switch(&g_main, &g_fibre, nullptr);  // fibre raises FE_INEXACT
  CHECK(RoundingIs(FE_DOWNWARD));
  // Whether the flag is visible here depends on the back end (flags are
  // status, not context); either way it must not have disturbed the modes.
  for (int i = 0; i < kRoundingRounds; ++i) {
    int mine = kModes[i % 4];
    fesetround(mine);
    ctx::Switch(&g_main, &g_fibre, nullptr);
    if (!RoundingIs(mine)) {
      CHECK(RoundingIs(mine));
      break;
    }
  }
  ctx::Switch(&g_main, &g_fibre, nullptr);  // the fibre leaves for good
  fesetround(FE_TONEAREST);
  CHECK(RoundingIs(FE_TONEAREST));
  feclearexcept(FE_ALL_EXCEPT);
  ctx::Destroy(&g_fibre);
}

#if !ASYNCJOB_CONTEXT_UCONTEXT
// SwitchKeepingFp: the resumed context goes on with its resumer's rounding
// mode, not the one it was suspended with; the resumer's own is saved as by
// any switch, and ordinary switches afterwards keep each side's again.

void KeepFpEntry(void*, void*) {
  fesetround(FE_UPWARD);
  ctx::Switch(&g_fibre, &g_main, nullptr);  // suspended with FE_UPWARD
  CHECK(RoundingIs(FE_DOWNWARD));           // resumed, keeping main's mode
  fesetround(FE_TOWARDZERO);
  ctx::Switch(&g_fibre, &g_main, nullptr);
  CHECK(RoundingIs(FE_TOWARDZERO));  // resumed by an ordinary switch: its own
  ctx::SwitchForGood(&g_fibre, &g_main, nullptr);
}

void TestSwitchKeepingFp() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  fesetround(FE_TONEAREST);
  ctx::Prepare(&g_fibre, stack.low(), stack.size(), &KeepFpEntry, nullptr);
  ctx::Switch(&g_main, &g_fibre, nullptr);
  CHECK(RoundingIs(FE_TONEAREST));
  fesetround(FE_DOWNWARD);
  ctx::SwitchKeepingFp(&g_main, &g_fibre, nullptr);
  CHECK(RoundingIs(FE_DOWNWARD));  // main's own, saved by the keeping switch
  fesetround(FE_UPWARD);
  ctx::Switch(&g_main, &g_fibre, nullptr);
  CHECK(RoundingIs(FE_UPWARD));
  fesetround(FE_TONEAREST);
  feclearexcept(FE_ALL_EXCEPT);
  ctx::Destroy(&g_fibre);
}
#endif

// ---------------------------------------------------------------------------
// Prepare again, on the same stack, after SwitchForGood.

constexpr std::uintptr_t kReuseRounds = 200;

void ReuseEntryA(void* transfer, void* argument) {
  std::uintptr_t i = FromPtr(transfer);
  CHECK(FromPtr(argument) == i + 100);
  void* again = ctx::Switch(&g_fibre, &g_main, ToPtr(i + 1));
  CHECK(FromPtr(again) == i + 2);
  ctx::SwitchForGood(&g_fibre, &g_main, ToPtr(i + 3));
}

void ReuseEntryB(void* transfer, void* argument) {
  std::uintptr_t i = FromPtr(transfer);
  CHECK(FromPtr(argument) == i + 100);
  ctx::SwitchForGood(&g_fibre, &g_main, ToPtr(i + 3));
}

void TestReuseAfterSwitchForGood() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  for (std::uintptr_t i = 0; i < kReuseRounds; ++i) {
    bool a = i % 3 != 2;
    // Also exercise stacks whose top is not 16-byte aligned.
    std::size_t skew = i % 16;
    ctx::Prepare(&g_fibre, stack.low(), stack.size() - skew, a ? &ReuseEntryA : &ReuseEntryB,
                 ToPtr(i + 100));
    void* got = ctx::Switch(&g_main, &g_fibre, ToPtr(i));
    if (a) {
      CHECK(FromPtr(got) == i + 1);
      got = ctx::Switch(&g_main, &g_fibre, ToPtr(i + 2));
    }
    CHECK(FromPtr(got) == i + 3);
  }
  ctx::Destroy(&g_fibre);
}

// ---------------------------------------------------------------------------
// Stack alignment inside a fibre.

bool Aligned16(const void* p) { return FromPtr(const_cast<void*>(p)) % 16 == 0; }

[[gnu::noinline]] bool NestedFrameAligned() {
  alignas(16) volatile unsigned char local[16] = {};
  local[0] = 1;
  return Aligned16(const_cast<unsigned char*>(local)) && Aligned16(__builtin_frame_address(0));
}

void AlignmentEntry(void*, void*) {
  alignas(16) volatile unsigned char local[16] = {};
  local[0] = 1;
  CHECK(Aligned16(const_cast<unsigned char*>(local)));
  CHECK(Aligned16(__builtin_frame_address(0)));
  CHECK(NestedFrameAligned());
  ctx::Switch(&g_fibre, &g_main, nullptr);
  CHECK(NestedFrameAligned());
  // A varargs call with doubles: on x86-64 this uses aligned SSE stores.
  char text[64];
  std::snprintf(text, sizeof text, "%f %f", 1.5, 2.5);
  CHECK(text[0] == '1');
  ctx::SwitchForGood(&g_fibre, &g_main, nullptr);
}

void TestStackAlignment() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  for (std::size_t skew = 0; skew < 16; skew += 8) {
    ctx::Prepare(&g_fibre, stack.low(), stack.size() - skew, &AlignmentEntry, nullptr);
    ctx::Switch(&g_main, &g_fibre, nullptr);
    ctx::Switch(&g_main, &g_fibre, nullptr);
  }
  ctx::Destroy(&g_fibre);
}

// ---------------------------------------------------------------------------
// Exceptions inside a fibre, and a backtrace that ends at its first frame.

[[gnu::noinline]] void Throw(int value) {
  throw std::runtime_error(value == 42 ? "forty-two" : "other");
}

struct Backtrace {
  int frames = 0;
};

_Unwind_Reason_Code CountFrame(struct _Unwind_Context*, void* argument) {
  auto* trace = static_cast<Backtrace*>(argument);
  return ++trace->frames > 64 ? _URC_NORMAL_STOP : _URC_NO_REASON;
}

void UnwindEntry(void*, void*) {
  bool caught = false;
  try {
    ctx::Switch(&g_fibre, &g_main, nullptr);
    Throw(42);
  } catch (const std::runtime_error& e) {
    caught = e.what()[0] == 'f';
  }
  CHECK(caught);
  Backtrace trace;
  _Unwind_Reason_Code end = _Unwind_Backtrace(&CountFrame, &trace);
  CHECK(end == _URC_END_OF_STACK);
  CHECK(trace.frames >= 2 && trace.frames <= 16);
  if (end != _URC_END_OF_STACK || trace.frames > 16)
    std::fprintf(stderr, "backtrace: %d frames, reason %d\n", trace.frames, static_cast<int>(end));
  ctx::SwitchForGood(&g_fibre, &g_main, nullptr);
}

void TestUnwindingInFibre() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  ctx::Prepare(&g_fibre, stack.low(), stack.size(), &UnwindEntry, nullptr);
  ctx::Switch(&g_main, &g_fibre, nullptr);
  bool caught = false;
  try {
    Throw(1);  // an exception on this side while the fibre is suspended
  } catch (const std::runtime_error&) {
    caught = true;
  }
  CHECK(caught);
  ctx::Switch(&g_main, &g_fibre, nullptr);
  ctx::Destroy(&g_fibre);
}

// ---------------------------------------------------------------------------
// The assembly entry points called through function pointers, so that their
// BTI landing pads are exercised where BTI is enforced (check-aarch64.sh runs
// a build in a BTI-guarded shared library). The switch is called bare, without
// the sanitizer annotations, so that part is left out of sanitizer builds.

#if !ASYNCJOB_CONTEXT_UCONTEXT
void* g_raw_main_sp = nullptr;
void* g_raw_fibre_sp = nullptr;

void RawShim(void* transfer, void* argument) {
  CHECK(transfer == ToPtr(11));
  CHECK(argument == ToPtr(22));
  void* (*volatile switch_fn)(void**, void*, void*) = &asyncjob_context_switch;
  switch_fn(&g_raw_fibre_sp, g_raw_main_sp, ToPtr(33));
  std::abort();  // never resumed
}

void TestIndirectEntryPoints() {
  Stack stack(kStackSize);
  void* (*volatile make_fn)(void*, void (*)(void*, void*), void*) = &asyncjob_context_make;
  char* top = stack.low() + stack.size();
  void* sp = make_fn(top, &RawShim, ToPtr(22));
  CHECK(sp < static_cast<void*>(top) && sp >= static_cast<void*>(top - 512) && Aligned16(sp));
#if !ASYNCJOB_ASAN && !ASYNCJOB_TSAN
  void* (*volatile switch_fn)(void**, void*, void*) = &asyncjob_context_switch;
  CHECK(switch_fn(&g_raw_main_sp, sp, ToPtr(11)) == ToPtr(33));
#endif
}
#endif

// ---------------------------------------------------------------------------
// Return-free switching: each side leaves through a tail call of the switch,
// which then returns straight into that side's caller; a suspended side can
// be diverted into a function that throws into the code it paused in.

#if ASYNCJOB_CONTEXT_RETURN_FREE
__attribute__((noinline)) int LeaveFibre(int value) {
  return ctx::SwitchAndReturn(&g_fibre, &g_main, value);
}

__attribute__((noinline)) int EnterFibre(int value) {
  return ctx::SwitchAndReturn(&g_main, &g_fibre, value);
}

constexpr int kReturnFreeRounds = 1000;
constexpr int kDivertedDone = 4321;

// Pauses in a try block: the diversion's exception lands in its handler.
__attribute__((noinline)) int PauseUntilThrown(int value, int* after) {
  try {
    *after = LeaveFibre(value);
  } catch (const std::runtime_error& e) {
    return e.what()[0] == 'd' ? 1 : 2;
  }
  return 0;
}

void ReturnFreeEntry(void* transfer, void*) {
  int received = static_cast<int>(FromPtr(transfer));
  for (int i = 0; i < kReturnFreeRounds; ++i) {
    CHECK(received == 2 * i);
    received = LeaveFibre(2 * i + 1);
  }
  CHECK(received == 2 * kReturnFreeRounds);
  int after = -1;
  int outcome = PauseUntilThrown(7, &after);
  CHECK(outcome == 1);
  CHECK(after == -1);
  ctx::SwitchForGood(&g_fibre, &g_main, ToPtr(kDivertedDone));
}

[[noreturn]] void ThrowDiverted(void* message) {
  throw std::runtime_error(static_cast<const char*>(message));
}

void TestReturnFreeSwitchAndDivert() {
  Stack stack(kStackSize);
  ctx::InitializeThreadContext(&g_main);
  ctx::Prepare(&g_fibre, stack.low(), stack.size(), &ReturnFreeEntry, nullptr);
  for (int i = 0; i < kReturnFreeRounds; ++i) CHECK(EnterFibre(2 * i) == 2 * i + 1);
  CHECK(EnterFibre(2 * kReturnFreeRounds) == 7);
  char message[] = "diverted";
  ctx::Diversion diversion{nullptr, &ThrowDiverted, message};
  ctx::Divert(&g_fibre, &diversion);
  CHECK(diversion.return_address != nullptr);
  CHECK(ctx::Switch(&g_main, &g_fibre, &diversion) == ToPtr(kDivertedDone));
  ctx::Destroy(&g_fibre);
}
#endif

// ---------------------------------------------------------------------------

struct Test {
  const char* name;
  void (*run)();
};

const Test kTests[] = {
    {"ping_pong_transfer", &TestPingPong},
    {"saved_registers", &TestSavedRegisters},
    {"values_across_switches", &TestValuesAcrossSwitches},
#ifndef SMOKE_NO_PROBE
    {"callee_saved_registers", &TestCalleeSavedRegisters},
#endif
    {"rounding_mode_per_context", &TestRoundingModePerContext},
#if !ASYNCJOB_CONTEXT_UCONTEXT
    {"switch_keeping_fp", &TestSwitchKeepingFp},
#endif
    {"reuse_after_switch_for_good", &TestReuseAfterSwitchForGood},
    {"stack_alignment", &TestStackAlignment},
    {"unwinding_in_fibre", &TestUnwindingInFibre},
#if !ASYNCJOB_CONTEXT_UCONTEXT
    {"indirect_entry_points", &TestIndirectEntryPoints},
#endif
#if ASYNCJOB_CONTEXT_RETURN_FREE
    {"return_free_switch_and_divert", &TestReturnFreeSwitchAndDivert},
#endif
};

}  // namespace

int main() {
  std::printf("context back end: %s\n", ctx::BackendName());
  int passed = 0, failed = 0;
  for (const Test& test : kTests) {
    g_failures_in_test = 0;
    test.run();
    if (g_failures_in_test == 0) {
      ++passed;
      std::printf("[  OK  ] %s\n", test.name);
    } else {
      ++failed;
      std::printf("[ FAIL ] %s (%d checks failed)\n", test.name, g_failures_in_test);
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
