// eventfd.cc - creating, signalling and draining the eventfds of eventfd.h.
#include "base/eventfd.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace asyncjob::base {

int CreateEventFd() { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

bool SignalEventFd(int fd) {
  const std::uint64_t one = 1;
  ssize_t written;
  do {
    written = write(fd, &one, sizeof one);
  } while (written < 0 && errno == EINTR);
  return written >= 0 || errno == EAGAIN;
}

bool DrainEventFd(int fd) {
  std::uint64_t count = 0;
  ssize_t read_bytes;
  do {
    read_bytes = read(fd, &count, sizeof count);
  } while (read_bytes < 0 && errno == EINTR);
  return read_bytes >= 0 || errno == EAGAIN;
}

}  // namespace asyncjob::base
