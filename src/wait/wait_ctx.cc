// wait_ctx.cc - WaitContext (wait_ctx.h): wait fds, change tracking, the
// callback and status.
#include "wait/wait_ctx.h"

#include <sched.h>

#include <algorithm>
#include <new>

#include "base/dcheck.h"
#include "base/error_queue.h"

namespace asyncjob::wait {

namespace {
// Room for the common case (one engine, an fd or two) without a later
// allocation on the set/clear path.
constexpr std::size_t kInitialEntries = 4;

// The CallCallback() calls open on this thread, innermost first: a
// callback that frees its own context (directly, or from a callback of
// another context it calls) must neither wait for itself nor delete the
// context under the call that is still to return.
struct CallbackFrame {
  const WaitContext* context;
  CallbackFrame* outer;
};
constinit thread_local CallbackFrame* innermost_call = nullptr;

unsigned OpenCallsOnThisThread(const WaitContext* context) {
  unsigned open = 0;
  for (const CallbackFrame* frame = innermost_call; frame != nullptr; frame = frame->outer) {
    if (frame->context == context) ++open;
  }
  return open;
}
}  // namespace

WaitContext::WaitContext() { entries_.reserve(kInitialEntries); }

WaitContext::~WaitContext() {
  StopCallbackCalls();
  RunEveryCleanupOnce();
}

void WaitContext::Destroy(WaitContext* wait) {
  if (OpenCallsOnThisThread(wait) > 0) {
    // Its callback freed it: the outermost call deletes it as it returns.
    // No callback is called meanwhile.
    wait->callback_off_.store(true, std::memory_order_seq_cst);
    wait->destroy_when_called_back_ = true;
    return;
  }
  delete wait;
}

bool WaitContext::CallCallback() {
  // Counted before looking at callback_off_, both sequentially consistent:
  // either Detach() sees this call and waits for it, or this call sees the
  // context detached and calls nothing.
  callback_calls_.fetch_add(1, std::memory_order_seq_cst);
  bool called = false;
  if (!callback_off_.load(std::memory_order_seq_cst)) {
    ASYNC_callback_fn callback = callback_.load(std::memory_order_relaxed);
    void* argument = callback_argument_.load(std::memory_order_relaxed);
    if (callback != nullptr) {
      CallbackFrame frame{this, innermost_call};
      innermost_call = &frame;
      callback(argument);
      innermost_call = frame.outer;
      called = true;
    }
  }
  // Freed by its callback on this thread, and this is the outermost call:
  // delete it now (the destructor waits for calls on other threads). Only
  // this thread sets the flag, so it is read before the count drops.
  const bool destroy = destroy_when_called_back_ && OpenCallsOnThisThread(this) == 0;
  callback_calls_.fetch_sub(1, std::memory_order_release);
  if (destroy) delete this;
  return called;
}

void WaitContext::StopCallbackCalls() {
  callback_off_.store(true, std::memory_order_seq_cst);
  // Sequentially consistent, like the store before it (see CallCallback()).
  const unsigned own = OpenCallsOnThisThread(this);
  while (callback_calls_.load(std::memory_order_seq_cst) > own) sched_yield();
}

void WaitContext::RunEveryCleanupOnce() {
  // The entries leave the context before their routines run, so that a
  // routine that clears, sets or lists fds of this context sees a context
  // without them and every routine runs exactly once. Entries a routine
  // sets meanwhile get their turn in the next round; a bounded number of
  // rounds keeps a routine that always sets another from looping for ever.
  constexpr int kMaxRounds = 8;
  for (int round = 0; round < kMaxRounds && !entries_.empty(); ++round) {
    std::vector<Entry> pending;
    pending.swap(entries_);
    added_count_ = 0;
    deleted_count_ = 0;
    for (const Entry& entry : pending) {
      if (!entry.deleted && entry.cleanup != nullptr) {
        entry.cleanup(handle(), entry.key, entry.fd, entry.custom_data);
      }
    }
  }
  entries_.clear();
}

const WaitContext::Entry* WaitContext::FindLive(const void* key) const {
  for (const Entry& entry : entries_) {
    if (entry.key == key && !entry.deleted) return &entry;
  }
  return nullptr;
}

bool WaitContext::SetWaitFd(const void* key, OSSL_ASYNC_FD fd, void* custom_data,
                            FdCleanup cleanup) {
  if (fd < 0) {
    base::QueueError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT,
                     "ASYNC_WAIT_CTX_set_wait_fd: fd %d is not a valid descriptor", fd);
    return false;
  }
  if (FindLive(key) != nullptr) {
    base::QueueError(ASYNCJOB_R_DUPLICATE_KEY,
                     "ASYNC_WAIT_CTX_set_wait_fd: key %p already has a wait fd; "
                     "clear it first",
                     key);
    return false;
  }
  try {
    entries_.push_back(Entry{key, fd, custom_data, cleanup, true, false});
  } catch (const std::bad_alloc&) {
    base::QueueError(ASYNCJOB_R_MALLOC_FAILURE, "ASYNC_WAIT_CTX_set_wait_fd: out of memory");
    return false;
  }
  ++added_count_;
  return true;
}

bool WaitContext::GetFd(const void* key, OSSL_ASYNC_FD* fd, void** custom_data) const {
  const Entry* entry = FindLive(key);
  if (entry == nullptr) return false;
  if (fd != nullptr) *fd = entry->fd;
  if (custom_data != nullptr) *custom_data = entry->custom_data;
  return true;
}

bool WaitContext::ClearFd(const void* key) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->key != key || it->deleted) continue;
    if (it->added_this_round) {
      ASYNCJOB_DCHECK(added_count_ > 0);
      entries_.erase(it);
      --added_count_;
    } else {
      it->deleted = true;
      ++deleted_count_;
    }
    return true;
  }
  return false;
}

std::size_t WaitContext::GetAllFds(OSSL_ASYNC_FD* fds) const {
  std::size_t count = 0;
  for (const Entry& entry : entries_) {
    if (entry.deleted) continue;
    if (fds != nullptr) fds[count] = entry.fd;
    ++count;
  }
  return count;
}

void WaitContext::GetChangedFds(OSSL_ASYNC_FD* added, std::size_t* added_count,
                                OSSL_ASYNC_FD* deleted, std::size_t* deleted_count) const {
  if (added_count != nullptr) *added_count = added_count_;
  if (deleted_count != nullptr) *deleted_count = deleted_count_;
  std::size_t a = 0;
  std::size_t d = 0;
  for (const Entry& entry : entries_) {
    if (entry.deleted) {
      if (deleted != nullptr) deleted[d] = entry.fd;
      ++d;
    } else if (entry.added_this_round) {
      if (added != nullptr) added[a] = entry.fd;
      ++a;
    }
  }
  // An entry added and cleared in the same round was removed outright.
  ASYNCJOB_DCHECK(a == added_count_ && d == deleted_count_);
}

void WaitContext::DropRoundChanges() {
  std::size_t kept = 0;
  for (Entry& entry : entries_) {
    if (entry.deleted) continue;
    entry.added_this_round = false;
    entries_[kept++] = entry;
  }
  entries_.resize(kept);
  added_count_ = 0;
  deleted_count_ = 0;
}

void WaitContext::CleanUpAllFds() {
  // Copy first: a cleanup routine may call back into this context.
  std::vector<Entry> live;
  for (const Entry& entry : entries_) {
    if (!entry.deleted) live.push_back(entry);
  }
  for (const Entry& entry : live) {
    ClearFd(entry.key);
    if (entry.cleanup != nullptr) entry.cleanup(handle(), entry.key, entry.fd, entry.custom_data);
  }
}

bool WaitContext::AttachAnotherJob(void* job) {
  try {
    more_jobs_.push_back(job);
    unusual_ = true;
  } catch (const std::bad_alloc&) {
    base::QueueError(ASYNCJOB_R_MALLOC_FAILURE,
                     "ASYNC_start_job: out of memory sharing the wait context with one more job");
    return false;
  }
  return true;
}

void WaitContext::DetachJobUnusual(void* job) {
  if (only_job_ == job) {
    // Another job takes the inline place, so that only_job_ is never empty
    // while jobs remain (OnlyJobIs()).
    if (more_jobs_.empty()) {
      only_job_ = nullptr;
    } else {
      only_job_ = more_jobs_.back();
      more_jobs_.pop_back();
    }
  } else {
    auto found = std::find(more_jobs_.begin(), more_jobs_.end(), job);
    if (found != more_jobs_.end()) {
      *found = more_jobs_.back();
      more_jobs_.pop_back();
    }
  }
  unusual_ = detached_ || !more_jobs_.empty();
}

bool WaitContext::GetCallback(ASYNC_callback_fn* callback, void** argument) const {
  ASYNC_callback_fn current = callback_.load(std::memory_order_relaxed);
  if (current == nullptr) return false;
  if (callback != nullptr) *callback = current;
  if (argument != nullptr) *argument = callback_argument_.load(std::memory_order_relaxed);
  return true;
}

}  // namespace asyncjob::wait
