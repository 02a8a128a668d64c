// loop_test_support.h - helpers for the event loop's tests: owned fds, a
// thread that does something later, waiting for a condition without
// asserting how long it takes.
#ifndef ASYNCJOB_TESTS_LOOP_LOOP_TEST_SUPPORT_H_
#define ASYNCJOB_TESTS_LOOP_LOOP_TEST_SUPPORT_H_

#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>
#include <utility>

#include "asyncjob/async.h"

namespace loop_test {

// An eventfd owned by the test.
class EventFd {
 public:
  EventFd() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~EventFd() {
    if (fd_ >= 0) close(fd_);
  }
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  int fd() const { return fd_; }
  void Signal() const {
    std::uint64_t one = 1;
    while (write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
  // Consumes the counter; false when it was zero.
  bool Consume() const {
    std::uint64_t value = 0;
    return read(fd_, &value, sizeof value) == static_cast<ssize_t>(sizeof value);
  }

 private:
  int fd_;
};

// Runs `action` on a thread of its own after `delay`; joins on destruction.
class Later {
 public:
  Later(std::chrono::milliseconds delay, std::function<void()> action)
      : thread_([delay, action = std::move(action)] {
          std::this_thread::sleep_for(delay);
          action();
        }) {}
  ~Later() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  Later(const Later&) = delete;
  Later& operator=(const Later&) = delete;

 private:
  std::thread thread_;
};

// Inside a job: pauses until `done()` holds (resumes that find it false
// pause again, as engines do on a spurious wake-up).
template <class Predicate>
void PauseUntil(Predicate done) {
  while (!done()) ASYNC_pause_job();
}

// Cleanup routine for wait fds the job owns.
inline void CloseFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }

// Raises the soft limit on open fds towards `wanted` (never above the hard
// limit); returns the soft limit now in force.
inline rlim_t RaiseFdLimit(rlim_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < wanted) {
    limit.rlim_cur = wanted < limit.rlim_max ? wanted : limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

}  // namespace loop_test

#endif  // ASYNCJOB_TESTS_LOOP_LOOP_TEST_SUPPORT_H_
