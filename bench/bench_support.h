// bench_support.h - helpers shared by the benchmark programs: process memory
// figures and the FP status-flag tricks of the FP benchmark.
//
// Uses only the OpenSSL API and the C library, so that it compiles in both
// builds of each program (against asyncjob's <openssl/async.h> and against
// libcrypto's).
#ifndef ASYNCJOB_BENCH_BENCH_SUPPORT_H_
#define ASYNCJOB_BENCH_BENCH_SUPPORT_H_

#include <cstddef>
#include <cstdio>
#include <cstring>

// Each build must have seen the <openssl/async.h> it claims to measure
// (include this after it).
#if !defined(BENCH_EXPECT_ASYNCJOB)
#error "BENCH_EXPECT_ASYNCJOB must be 1 (asyncjob's header) or 0 (libcrypto's)"
#elif BENCH_EXPECT_ASYNCJOB && !defined(ASYNCJOB_ASYNC_H)
#error "the asyncjob build included libcrypto's <openssl/async.h>"
#elif !BENCH_EXPECT_ASYNCJOB && defined(ASYNCJOB_ASYNC_H)
#error "the libcrypto build included asyncjob's <openssl/async.h>"
#endif

namespace bench {

// A "Name:   123 kB" field of /proc/self/status, in KiB (0 if absent).
inline std::size_t StatusKiB(const char* field) {
  const std::size_t length = std::strlen(field);
  std::size_t kib = 0;
  if (std::FILE* file = std::fopen("/proc/self/status", "re")) {
    char line[256];
    while (std::fgets(line, sizeof line, file) != nullptr) {
      if (std::strncmp(line, field, length) == 0 && line[length] == ':') {
        std::sscanf(line + length + 1, "%zu", &kib);
        break;
      }
    }
    std::fclose(file);
  }
  return kib;
}

// Resident set size of this process, in KiB.
inline std::size_t ResidentKiB() { return StatusKiB("VmRSS"); }

// Memory taken by this process's page tables, in KiB (not part of VmRSS).
inline std::size_t PageTableKiB() { return StatusKiB("VmPTE"); }

// Number of memory mappings of this process (lines of /proc/self/maps).
inline std::size_t CountMappings() {
  std::size_t lines = 0;
  if (std::FILE* file = std::fopen("/proc/self/maps", "re")) {
    int c;
    while ((c = std::fgetc(file)) != EOF) lines += c == '\n';
    std::fclose(file);
  }
  return lines;
}

// Clears the sticky FP exception flags of the calling context (MXCSR bits
// 0-5 on x86-64, FPSR on AArch64) and nothing else. One ldmxcsr / msr: the
// cheapest way there is, and the same in both builds.
inline void ClearFpStatusFlags() {
#if defined(__x86_64__)
  unsigned csr;
  __asm__ volatile("stmxcsr %0" : "=m"(csr));
  csr &= ~0x3fu;
  __asm__ volatile("ldmxcsr %0" : : "m"(csr));
#elif defined(__aarch64__)
  unsigned long fpsr;
  __asm__ volatile("mrs %0, fpsr" : "=r"(fpsr));
  fpsr &= ~0x9ful;
  __asm__ volatile("msr fpsr, %0" : : "r"(fpsr));
#endif
}

// A division the compiler cannot fold: 1.0 / 3.0 raises the "inexact"
// sticky flag, 1.0 / 2.0 raises none.
inline double Divide(double numerator, double denominator) {
  volatile double n = numerator, d = denominator;
  return n / d;
}

}  // namespace bench

#endif  // ASYNCJOB_BENCH_BENCH_SUPPORT_H_
