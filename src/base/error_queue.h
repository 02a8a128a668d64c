// error_queue.h - asyncjob's thread-local error queue.
//
// Every layer reports a failure by queueing an entry here before it returns
// its error value; the C API exposes the queue through asyncjob_get_error()
// and friends (see <asyncjob/async.h>). Entries use OpenSSL's packed layout
// (library 51, ASYNC, in bits 23..30; reason in bits 0..22) so that they can
// be mirrored into libcrypto's queue unchanged.
//
//   if (stack == nullptr) {
//     base::QueueError(ASYNCJOB_R_STACK_ALLOCATION_FAILED,
//                      "mmap of %zu bytes failed: %s", size, strerror(errno));
//     return nullptr;
//   }
#ifndef ASYNCJOB_SRC_BASE_ERROR_QUEUE_H_
#define ASYNCJOB_SRC_BASE_ERROR_QUEUE_H_

#include <cstddef>

namespace asyncjob::base {

inline constexpr std::size_t kErrorQueueDepth = 16;
inline constexpr std::size_t kErrorMessageMax = 192;

// Queues an error with a printf-style message. Never allocates; the oldest
// entry is dropped when the queue is full.
void QueueError(int reason, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Like QueueError(), for a failure that is, in libcrypto's terms, an
// allocation that failed (a stack that cannot be mapped, arguments too
// large to copy): asyncjob's queue gets `reason`, the mirror is handed
// ASYNCJOB_R_MALLOC_FAILURE, the reason libcrypto's queue gets when
// libcrypto's own allocation fails in the same place.
void QueueAllocationFailure(int reason, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

// Packs a reason code of the ASYNC library as OpenSSL does.
unsigned long PackErrorCode(int reason);

// Pops (pop = true) or peeks the oldest entry, or peeks the newest
// (newest = true). Returns 0 when the queue is empty. *message, if given,
// points into a per-thread buffer valid until the next call.
unsigned long ReadError(bool pop, bool newest, const char** message);
void ClearErrors();

// Number of entries queued on this thread.
std::size_t ErrorCount();

// While one exists on this thread, QueueError() queues (and mirrors)
// nothing: for an attempt made on the caller's behalf whose failure is not
// the caller's error (the C API unwinding the orphans of a context being
// freed). Nests.
class ScopedErrorSuppression {
 public:
  ScopedErrorSuppression();
  ~ScopedErrorSuppression();
  ScopedErrorSuppression(const ScopedErrorSuppression&) = delete;
  ScopedErrorSuppression& operator=(const ScopedErrorSuppression&) = delete;
};

// Also hands every queued error to `mirror` (e.g. to libcrypto's own error
// queue when libcrypto is in the process), which decides what, if anything,
// to raise there. `reason` is the entry's, or ASYNCJOB_R_MALLOC_FAILURE for
// QueueAllocationFailure(). nullptr stops mirroring.
using ErrorMirror = void (*)(int reason, const char* message);
void SetErrorMirror(ErrorMirror mirror);

}  // namespace asyncjob::base

#endif  // ASYNCJOB_SRC_BASE_ERROR_QUEUE_H_
