// The loop's table of wait fds (see fd_table.h).
#include "loop/fd_table.h"

#include <errno.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cstddef>

namespace asyncjob::detail {

bool FdTable::AddWaiter(int fd, JobRef waiter) {
  if (fd < 0 || fd == doorbell_fd_ || fd == epoll_fd_) return false;
  auto slot = static_cast<std::size_t>(fd);
  if (slot >= waiters_.size()) waiters_.resize(std::max(slot + 1, waiters_.size() * 2));
  std::vector<JobRef>& waiters = waiters_[slot];
  if (waiters.empty()) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      // EEXIST: a closed fd's file is still open elsewhere and so still in
      // the set under this number; take it over.
      if (errno != EEXIST || epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event) != 0) return false;
    }
    ++watched_;
  }
  waiters.push_back(waiter);
  return true;
}

void FdTable::RemoveWaiter(int fd, std::uint32_t index) noexcept {
  auto slot = static_cast<std::size_t>(fd);
  if (slot >= waiters_.size()) return;
  std::vector<JobRef>& waiters = waiters_[slot];
  bool removed = false;
  for (std::size_t i = 0; i < waiters.size(); ++i) {
    if (waiters[i].index == index) {
      waiters[i] = waiters.back();
      waiters.pop_back();
      removed = true;
      break;
    }
  }
  // The job may have closed it already (then the kernel dropped it).
  if (removed && waiters.empty()) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    --watched_;
  }
}

std::span<const JobRef> FdTable::Waiters(int fd) const noexcept {
  auto slot = static_cast<std::size_t>(fd);
  if (slot >= waiters_.size()) return {};
  return waiters_[slot];
}

}  // namespace asyncjob::detail
