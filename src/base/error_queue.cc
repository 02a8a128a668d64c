// error_queue.cc - the thread-local error queue of error_queue.h and its
// mirroring into libcrypto's queue.
#include "base/error_queue.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "asyncjob/async.h"
#include "base/dcheck.h"

namespace asyncjob::base {
namespace {

struct Entry {
  unsigned long code;
  char message[kErrorMessageMax];
};

struct Queue {
  Entry entries[kErrorQueueDepth];
  std::size_t first;  // index of the oldest entry
  std::size_t count;
  char returned[kErrorMessageMax];  // the message handed out last
};

// Plain storage, zero-initialised: no constructor runs on first use.
thread_local Queue queue;
constinit thread_local int suppression_depth = 0;

std::atomic<ErrorMirror> error_mirror{nullptr};

}  // namespace

unsigned long PackErrorCode(int reason) {
  return (static_cast<unsigned long>(ASYNCJOB_ERR_LIB_ASYNC & 0xFF) << 23) |
         (static_cast<unsigned long>(reason) & 0x7FFFFFUL);
}

namespace {

void QueueAndMirror(int reason, int mirrored_reason, const char* format, va_list args) {
  ASYNCJOB_DCHECK(format != nullptr);
  if (suppression_depth > 0) [[unlikely]]
    return;
  Queue& q = queue;
  ASYNCJOB_DCHECK(q.count <= kErrorQueueDepth && q.first < kErrorQueueDepth);
  if (q.count == kErrorQueueDepth) {
    q.first = (q.first + 1) % kErrorQueueDepth;
    --q.count;
  }
  Entry& e = q.entries[(q.first + q.count) % kErrorQueueDepth];
  e.code = PackErrorCode(reason);
  std::vsnprintf(e.message, sizeof e.message, format, args);
  ++q.count;
  if (ErrorMirror mirror = error_mirror.load(std::memory_order_acquire)) {
    mirror(mirrored_reason, e.message);
  }
}

}  // namespace

void QueueError(int reason, const char* format, ...) {
  va_list args;
  va_start(args, format);
  QueueAndMirror(reason, reason, format, args);
  va_end(args);
}

void QueueAllocationFailure(int reason, const char* format, ...) {
  va_list args;
  va_start(args, format);
  QueueAndMirror(reason, ASYNCJOB_R_MALLOC_FAILURE, format, args);
  va_end(args);
}

void SetErrorMirror(ErrorMirror mirror) { error_mirror.store(mirror, std::memory_order_release); }

unsigned long ReadError(bool pop, bool newest, const char** message) {
  Queue& q = queue;
  ASYNCJOB_DCHECK(q.count <= kErrorQueueDepth && q.first < kErrorQueueDepth);
  if (q.count == 0) {
    if (message != nullptr) *message = "";
    return 0;
  }
  std::size_t index = newest ? (q.first + q.count - 1) % kErrorQueueDepth : q.first;
  const Entry& e = q.entries[index];
  unsigned long code = e.code;
  std::memcpy(q.returned, e.message, sizeof q.returned);
  if (message != nullptr) *message = q.returned;
  if (pop) {
    q.first = (q.first + 1) % kErrorQueueDepth;
    --q.count;
  }
  return code;
}

void ClearErrors() {
  queue.first = 0;
  queue.count = 0;
}

std::size_t ErrorCount() { return queue.count; }

ScopedErrorSuppression::ScopedErrorSuppression() { ++suppression_depth; }
ScopedErrorSuppression::~ScopedErrorSuppression() { --suppression_depth; }

}  // namespace asyncjob::base
