// fd_table.h - the wait fds a loop watches, and the jobs waiting on each.
//
// Owns the membership of wait fds in the loop's epoll set (not the epoll
// instance itself, nor the fds: jobs register and close them) and, per fd,
// the jobs waiting on it (nearly always one). The first waiter of an fd adds
// it to the set; the last one to leave takes it out. Fds are watched
// level-triggered for readability (EPOLLIN), and epoll reports them by
// number (event.data.fd), which Waiters() turns back into jobs.
//
// Knows jobs only as JobRefs; whether a waiter is still alive and paused is
// the loop's business.
//
// Thread rules: the loop thread only.
//
//   FdTable fds(epoll_fd, doorbell_fd);
//   bool watched = fds.AddWaiter(fd, JobRef{index, generation});
//   // ... epoll_wait() reported fd:
//   for (const JobRef& waiter : fds.Waiters(fd)) { /* wake it */ }
//   fds.RemoveWaiter(fd, index);
#ifndef ASYNCJOB_SRC_LOOP_FD_TABLE_H_
#define ASYNCJOB_SRC_LOOP_FD_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "loop/job_ref.h"

namespace asyncjob::detail {

class FdTable {
 public:
  // epoll_fd: the loop's epoll instance. doorbell_fd: the loop's own fd in
  // that set, which a job may not wait on. Neither is owned.
  FdTable(int epoll_fd, int doorbell_fd) noexcept
      : epoll_fd_(epoll_fd), doorbell_fd_(doorbell_fd) {}

  // Adds `waiter` to the jobs waiting on fd, adding fd to the epoll set if
  // it is the first. Returns false, changing nothing, when epoll refuses the
  // fd (a regular file, a closed fd, one of the loop's own): the job must
  // then be polled. Throws std::bad_alloc.
  bool AddWaiter(int fd, JobRef waiter);
  // Removes the job of slot `index` from the waiters of fd; the last one
  // out takes fd out of the epoll set.
  void RemoveWaiter(int fd, std::uint32_t index) noexcept;
  // The jobs waiting on fd (empty when none).
  std::span<const JobRef> Waiters(int fd) const noexcept;
  // Whether any fd is in the epoll set (besides the loop's doorbell).
  bool watching() const noexcept { return watched_ != 0; }

 private:
  const int epoll_fd_;
  const int doorbell_fd_;
  std::vector<std::vector<JobRef>> waiters_;  // by fd
  std::size_t watched_ = 0;                   // fds with waiters
};

}  // namespace asyncjob::detail

#endif  // ASYNCJOB_SRC_LOOP_FD_TABLE_H_
