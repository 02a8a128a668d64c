// wait_ctx.h - ASYNC_WAIT_CTX: how a paused job tells its owner when to
// resume it.
//
// This unit owns the wait context's state: the wait fds registered by
// async-aware code (each under a key, with custom data and a cleanup
// routine), the record of fds added and deleted since the job last resumed,
// and the callback and status pair shared between engines and applications.
// It knows nothing of jobs; the C API tells it when a round ends.
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
#ifndef ASYNCJOB_SRC_WAIT_WAIT_CTX_H_
#define ASYNCJOB_SRC_WAIT_WAIT_CTX_H_

#include <cstddef>
#include <vector>

#include "asyncjob/async.h"

namespace asyncjob::wait {

using FdCleanup = void (*)(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD, void*);

class WaitContext {
 public:
  WaitContext();
  ~WaitContext();  // runs the cleanup routines
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
  void StartNewRound();
  // Runs the cleanup routine of every entry not deleted, exactly once each,
  // and empties the context (what the destructor does).
  void RunEveryCleanupOnce();
  // Runs the cleanup routine of every live entry and clears it (reported as
  // deleted unless it was added this round): for a job being cancelled.
  void CleanUpAllFds();

  void SetCallback(ASYNC_callback_fn callback, void* argument) {
    callback_ = callback;
    callback_argument_ = argument;
  }
  bool GetCallback(ASYNC_callback_fn* callback, void** argument) const;
  void set_status(int status) { status_ = status; }
  int status() const { return status_; }

  // The job currently started with this context (opaque here), so that
  // freeing the context can detach it.
  void* attached_job = nullptr;

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

  std::vector<Entry> entries_;
  std::size_t added_count_ = 0;
  std::size_t deleted_count_ = 0;
  ASYNC_callback_fn callback_ = nullptr;
  void* callback_argument_ = nullptr;
  int status_ = ASYNC_STATUS_UNSUPPORTED;
};

}  // namespace asyncjob::wait

#endif  // ASYNCJOB_SRC_WAIT_WAIT_CTX_H_
