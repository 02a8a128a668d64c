// wait_ctx.h - ASYNC_WAIT_CTX: how a paused job tells its owner when to
// resume it.
//
// This unit owns the wait context's state: the wait fds registered by
// async-aware code (each under a key, with custom data and a cleanup
// routine), the record of fds added and deleted since the job last resumed,
// and the callback and status pair shared between engines and applications.
// It knows nothing of jobs beyond opaque pointers to those sharing it; the
// C API tells it when a round ends.
//
// Change tracking follows OpenSSL exactly:
//   - SetWaitFd adds an entry marked "added this round".
//   - ClearFd on an entry added this round removes it outright (reported
//     neither as added nor deleted); on an older one marks it deleted
//     (reported as deleted, no longer listed by GetFd/GetAllFds). It never
//     calls the cleanup routine.
//   - StartNewRound (when a paused job is resumed) drops deleted entries and
//     forgets which were added.
//   - The destructor calls the cleanup routine of every entry not deleted,
//     exactly once each, whatever those routines do to the context.
//
// The callback may be called from other threads (an engine's worker
// completing the job) through CallCallback(), which the owner's Detach()
// and the destructor wait for: once a context is freed, its callback is
// never called again, and no call is still running. Callback and argument
// are atomics, so that such a call may read them while the owner's thread
// works with the context.
#ifndef ASYNCJOB_SRC_WAIT_WAIT_CTX_H_
#define ASYNCJOB_SRC_WAIT_WAIT_CTX_H_

#include <atomic>
#include <cstddef>
#include <vector>

#include "asyncjob/async.h"
#include "base/dcheck.h"

namespace asyncjob::wait {

using FdCleanup = void (*)(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD, void*);

class WaitContext {
 public:
  WaitContext();
  ~WaitContext();  // runs the cleanup routines
  // Deletes the context, or, when this thread is inside CallCallback() for
  // it (its callback freed it), marks it to be deleted as that call
  // returns. Use instead of delete.
  static void Destroy(WaitContext* wait);
  WaitContext(const WaitContext&) = delete;
  WaitContext& operator=(const WaitContext&) = delete;

  ASYNC_WAIT_CTX* handle() { return reinterpret_cast<ASYNC_WAIT_CTX*>(this); }
  static WaitContext* FromHandle(ASYNC_WAIT_CTX* ctx) {
    return reinterpret_cast<WaitContext*>(ctx);
  }

  // false (error queued) for a negative fd or a key already registered.
  bool SetWaitFd(const void* key, OSSL_ASYNC_FD fd, void* custom_data, FdCleanup cleanup);
  // false (nothing queued) when no live entry has this key.
  bool GetFd(const void* key, OSSL_ASYNC_FD* fd, void** custom_data) const;
  bool ClearFd(const void* key);
  // Fills fds (when not null) and returns the count of live entries.
  std::size_t GetAllFds(OSSL_ASYNC_FD* fds) const;
  void GetChangedFds(OSSL_ASYNC_FD* added, std::size_t* added_count, OSSL_ASYNC_FD* deleted,
                     std::size_t* deleted_count) const;
  // Ends a round of change tracking. Inline: the common case (nothing
  // added or deleted since the last round) costs two loads.
  void StartNewRound() {
    if (added_count_ != 0 || deleted_count_ != 0) [[unlikely]]
      DropRoundChanges();
  }
  // Runs the cleanup routine of every entry not deleted, exactly once each,
  // and empties the context (what the destructor does).
  void RunEveryCleanupOnce();
  // Runs the cleanup routine of every live entry and clears it (reported as
  // deleted unless it was added this round): for a job being cancelled.
  void CleanUpAllFds();

  void SetCallback(ASYNC_callback_fn callback, void* argument) {
    callback_.store(callback, std::memory_order_relaxed);
    callback_argument_.store(argument, std::memory_order_relaxed);
  }
  bool GetCallback(ASYNC_callback_fn* callback, void** argument) const;
  // Any thread: calls the callback and returns true; returns false, calling
  // nothing, when there is none or the context is detached. Detach() and
  // the destructor wait for a call in progress on another thread (not for
  // one this thread is making: a callback may free its own context).
  bool CallCallback();
  void set_status(int status) { status_ = status; }
  int status() const { return status_; }

  // ----- The jobs started with this context -----
  // Any number of jobs may share a context, as with libcrypto: its fds are
  // those of all of them, and its change tracking is the context's (a round
  // ends when any of its jobs is resumed). The jobs are opaque here. The
  // first is kept inline, so that the common case of one job per context
  // attaches and detaches without allocating.

  // false (error queued) when there is no memory for one more job.
  bool AttachJob(void* job) {
    if (only_job_ == nullptr) [[likely]] {
      only_job_ = job;
      return true;
    }
    return AttachAnotherJob(job);
  }
  // Detaches `job`, which is attached, or refers to this context after it
  // was detached.
  void DetachJob(void* job) {
    if (!unusual_) [[likely]] {
      ASYNCJOB_DCHECK(only_job_ == job);
      only_job_ = nullptr;
      return;
    }
    DetachJobUnusual(job);
  }
  // The common case: one job, the context not detached. DetachJob() is
  // then one store, and the caller has nothing else to do.
  bool usual() const { return !unusual_; }
  // Whether `job` is the one job attached (no other shares the context).
  // The inline slot is refilled when its job leaves while others remain,
  // so a context's last job is always found there.
  bool OnlyJobIs(const void* job) const { return only_job_ == job && more_jobs_.empty(); }
  bool HasJobs() const { return only_job_ != nullptr || !more_jobs_.empty(); }
  // One of the attached jobs (nullptr when none): callers that detach each
  // job they handle go through all of them with it.
  void* AnyJob() const {
    if (only_job_ != nullptr) return only_job_;
    return more_jobs_.empty() ? nullptr : more_jobs_.back();
  }

  // ----- Detached contexts -----
  // A context its owner freed while jobs it cannot free yet still refer to
  // it stays alive, detached: its callback is cleared at once (a late
  // completion must never call into the owner's freed object) and its fds
  // stay open until the last such job lets go (the C API decides when;
  // docs/teardown.md).
  void Detach() {
    detached_ = true;
    unusual_ = true;
    StopCallbackCalls();
    callback_.store(nullptr, std::memory_order_relaxed);
    callback_argument_.store(nullptr, std::memory_order_relaxed);
  }
  bool detached() const { return detached_; }
  // Jobs that still refer to this detached context. Atomic: a job of
  // another thread may let go of it while this thread releases a tombstone.
  std::atomic<int> holders{0};
  // Set while the C API frees this context, so that a cleanup routine or an
  // unwinding job that frees it again is ignored.
  bool being_freed = false;

 private:
  struct Entry {
    const void* key;
    OSSL_ASYNC_FD fd;
    void* custom_data;
    FdCleanup cleanup;
    bool added_this_round;
    bool deleted;
  };
  const Entry* FindLive(const void* key) const;
  // From now on CallCallback() calls nothing; returns once no other thread
  // is inside it for this context.
  void StopCallbackCalls();
  bool AttachAnotherJob(void* job);
  void DetachJobUnusual(void* job);
  void DropRoundChanges();

  std::vector<Entry> entries_;
  std::size_t added_count_ = 0;
  std::size_t deleted_count_ = 0;
  std::atomic<ASYNC_callback_fn> callback_{nullptr};
  std::atomic<void*> callback_argument_{nullptr};
  // CallCallback()s in progress, and whether new ones may call (see there).
  std::atomic<unsigned> callback_calls_{0};
  std::atomic<bool> callback_off_{false};
  // Destroy() was called from inside a CallCallback() of this thread.
  bool destroy_when_called_back_ = false;
  int status_ = ASYNC_STATUS_UNSUPPORTED;
  void* only_job_ = nullptr;
  std::vector<void*> more_jobs_;  // the others sharing it, in no order
  bool detached_ = false;
  bool unusual_ = false;  // shared by several jobs, or detached
};

}  // namespace asyncjob::wait

#endif  // ASYNCJOB_SRC_WAIT_WAIT_CTX_H_
