// eventfd.h - an eventfd used as a wake-up flag.
//
// This unit owns the three things every layer that wakes someone through an
// eventfd does with it: create one (non-blocking, close-on-exec), signal it
// (the fd becomes readable) and drain it (it stops being readable). The fd
// belongs to the caller, who closes it. It knows nothing of jobs, wait
// contexts or loops.
//
//   int fd = base::CreateEventFd();
//   if (fd < 0) return Fail(errno);
//   base::SignalEventFd(fd);  // from any thread: poll() now reports fd readable
//   base::DrainEventFd(fd);   // by the waiter, before it waits again
//   close(fd);
#ifndef ASYNCJOB_SRC_BASE_EVENTFD_H_
#define ASYNCJOB_SRC_BASE_EVENTFD_H_

namespace asyncjob::base {

// A new eventfd with a zero counter, non-blocking and close-on-exec; -1 with
// errno set when none can be created.
int CreateEventFd();

// Adds one to the counter, retrying when interrupted. Returns true once the
// fd is readable: also when the counter is already at its maximum (EAGAIN).
// Returns false, errno set, when fd cannot be written.
bool SignalEventFd(int fd);

// Reads the counter back to zero, retrying when interrupted. Returns true
// once the fd is not readable: also when it was not signalled (EAGAIN).
// Returns false, errno set, when fd cannot be read.
bool DrainEventFd(int fd);

}  // namespace asyncjob::base

#endif  // ASYNCJOB_SRC_BASE_EVENTFD_H_
