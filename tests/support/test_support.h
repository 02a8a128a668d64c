// test_support.h - helpers shared by asyncjob's tests: reading the error
// queue, counting fds and mappings, and running a job to completion.
#ifndef ASYNCJOB_TESTS_SUPPORT_TEST_SUPPORT_H_
#define ASYNCJOB_TESTS_SUPPORT_TEST_SUPPORT_H_

#include <dirent.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "asyncjob/async.h"
#include "base/sanitizers.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define ASYNCJOB_TEST_UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define ASYNCJOB_TEST_UNDER_VALGRIND() false
#endif

namespace asyncjob_test {

struct QueuedError {
  unsigned long code = 0;
  std::string message;
  int library() const { return ASYNCJOB_ERR_GET_LIB(code); }
  int reason() const { return ASYNCJOB_ERR_GET_REASON(code); }
};

// Pops the oldest queued error (code 0 when none).
inline QueuedError PopError() {
  const char* message = nullptr;
  QueuedError error;
  error.code = asyncjob_get_error(&message);
  error.message = message != nullptr ? message : "";
  return error;
}

inline bool ErrorQueueEmpty() { return asyncjob_peek_error(nullptr) == 0; }

inline std::size_t CountOpenFds() {
  std::size_t count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count;
}

// Whether /proc/self/maps and VmRSS describe the program alone: ASan and TSan
// map and unmap memory of their own at any time, and under valgrind they
// describe valgrind's process. Exact mapping and RSS figures are checked in
// the other runs only.
inline bool MappingCountsAreExact() {
  return !ASYNCJOB_ASAN && !ASYNCJOB_TSAN && !ASYNCJOB_TEST_UNDER_VALGRIND();
}

inline std::size_t CountMappings() {
  std::ifstream maps("/proc/self/maps");
  std::size_t count = 0;
  std::string line;
  while (std::getline(maps, line)) ++count;
  return count;
}

// The protection string ("rw-p", "---p", ...) and bounds of the mapping that
// contains `address`; empty when none does.
struct Mapping {
  std::uintptr_t low = 0;
  std::uintptr_t high = 0;
  std::string protection;
};

inline Mapping MappingContaining(const void* address) {
  auto target = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    Mapping m;
    std::size_t dash = line.find('-');
    std::size_t space = line.find(' ');
    m.low = std::stoull(line.substr(0, dash), nullptr, 16);
    m.high = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
    m.protection = line.substr(space + 1, 4);
    if (target >= m.low && target < m.high) return m;
  }
  return {};
}

inline std::size_t ResidentKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

}  // namespace asyncjob_test

#endif  // ASYNCJOB_TESTS_SUPPORT_TEST_SUPPORT_H_
