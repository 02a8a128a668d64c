// loop_core.h - the machinery behind asyncjob::Loop (include/asyncjob/loop.hpp):
// scheduling jobs on the loop thread.
//
// LoopCore owns the jobs' slots, the queues of jobs to start and to resume,
// the epoll instance and the iteration that waits on it. It delegates three
// mechanisms, each in a unit of its own:
//   - WakeQueue (wake_queue.h): everything other threads hand to the loop
//     (callback wake-ups, posted functions, stop) and the doorbell eventfd.
//     It is the only code other threads run; LoopCore itself belongs to the
//     loop thread, and learns of wake-ups by draining the queue;
//   - FdTable (fd_table.h): the wait fds in the epoll set and their waiters;
//   - DeadlineHeap (deadline_heap.h): the jobs' timeouts.
//
// Jobs live in slots that never move and are reused: a slot's generation
// changes every time its job ends, so that anything still naming the old job
// (a wake-up token, a ready-list entry, an fd waiter: see job_ref.h) is
// recognised as stale.
//
// An iteration (Iterate()): run posted functions, start queued jobs, wait
// in epoll_wait (not at all when a job is ready; at most until the next
// deadline), note which waiters of ready fds to resume, drain the doorbell
// and then the wake-up queue, run posted functions again, cancel the jobs
// whose timeout expired, resume the ready jobs. A job made ready while the
// ready list is being worked through waits for the next iteration, and a
// wake-up that arrived while its job was still running is still in the
// queue when the loop next drains it.
//
// Re-entrance: user code (jobs, the destructors their cancellation runs,
// completion callbacks, posted functions) runs inside Run(), RunOnce(),
// CancelById() and CancelAll(); each counts itself in `entered_` (see
// Entry). Destroy() called while that count is not zero, i.e. the Loop
// destroyed by that user code, cannot free the core under the frames still
// using it: it tears the loop down at once (TearDown(): callbacks
// unregistered, posted functions dropped, every job not executing
// cancelled) and leaves the core to the outermost of those frames, which
// deletes it as it returns. Each step of an iteration checks `destroying_`
// and goes no further; a job still executing at that moment is cancelled
// when it next pauses.
//
// Thread rules: the loop thread only (the thread that constructed it), as
// the public class documents; Wake-ups, Post() and RequestStop() go through
// the WakeQueue. Destroy() on another thread is allowed only while no job
// has started (none can be cancelled there); otherwise it aborts with a
// message.
#ifndef ASYNCJOB_SRC_LOOP_LOOP_CORE_H_
#define ASYNCJOB_SRC_LOOP_LOOP_CORE_H_

#include <sys/epoll.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <atomic>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "asyncjob/async.h"
#include "asyncjob/loop.hpp"
#include "loop/deadline_heap.h"
#include "loop/fd_table.h"
#include "loop/job_ref.h"
#include "loop/wake_queue.h"

namespace asyncjob::detail {

using Clock = std::chrono::steady_clock;

inline constexpr unsigned kSlotChunkBits = 10;  // slots allocated 1,024 at a time
inline constexpr std::uint32_t kSlotChunkSize = 1u << kSlotChunkBits;
inline constexpr std::uint32_t kMaxSlotChunks = kMaxJobSlots >> kSlotChunkBits;

enum class SlotState : std::uint8_t { kFree, kQueued, kRunning, kPaused };
// Why a paused job was put on the ready list (the first reason wins).
enum class ReadyReason : std::uint8_t { kNone, kFd, kCallback, kEagain, kPoll };

// A wait fd of a job, as the loop knows it.
struct FdUse {
  int fd;
  bool watched;  // in the epoll set (false: epoll refused it; the job is polled)
};

// The loop's place for one job (free when no job is in it).
struct JobSlot {
  std::uint32_t index = 0;
  std::uint32_t generation = 1;  // never 0
  SlotState state = SlotState::kFree;
  bool ready = false;  // on the ready list
  ReadyReason reason = ReadyReason::kNone;
  std::uint32_t unwatched_fds = 0;
  JobId id = JobId::kNone;
  ASYNC_JOB* job = nullptr;
  ASYNC_WAIT_CTX* ctx = nullptr;
  std::shared_ptr<LoopTask> task;
  std::vector<FdUse> fds;  // wait fds the loop knows of
};

class LoopCore {
 public:
  // Throws std::system_error when the epoll instance or the doorbell cannot
  // be created, Error when too many loops exist.
  explicit LoopCore(Loop* owner);
  LoopCore(const LoopCore&) = delete;
  LoopCore& operator=(const LoopCore&) = delete;

  // What ~Loop does with its core (see the file comment): destroys it now,
  // or, when user code called by the core destroyed the Loop, tears it down
  // and leaves it to be deleted when that call returns. On a thread other
  // than the loop's, aborts with a message if a job has started or the loop
  // is running.
  static void Destroy(std::unique_ptr<LoopCore>& core) noexcept;
  // Any thread (through the wake queue).
  void RequestStop() noexcept { wake_queue_.RequestStop(); }
  void Post(std::function<void()> fn) { wake_queue_.Post(std::move(fn)); }

  // Loop thread.
  void CheckThread(const char* operation) const;
  void Submit(std::shared_ptr<LoopTask> task, const SpawnOptions& options);
  bool CancelById(JobId id);
  std::size_t CancelAll();
  std::size_t Run(bool until_stopped);
  bool RunOnce(std::chrono::milliseconds max_wait);
  std::size_t Alive() const noexcept { return alive_; }
  LoopCounters Counters() const noexcept;

 private:
  friend struct std::default_delete<LoopCore>;
  class Entry;
  class AwakeScope;
  ~LoopCore();

  // Cancels every job not executing (without completion callbacks), stops
  // callbacks and drops posted functions. Idempotent.
  void TearDown() noexcept;
  // Destroy() on a thread other than the loop's: aborts unless no job has
  // started and the loop is not running.
  void CheckDestroyableElsewhere() const noexcept;

  JobSlot& At(std::uint32_t index) const noexcept {
    return slot_chunks_[index >> kSlotChunkBits][index & (kSlotChunkSize - 1)];
  }
  std::uint32_t SlotCount() const noexcept {
    return static_cast<std::uint32_t>(slot_chunks_.size()) * kSlotChunkSize;
  }
  JobSlot& Allocate();
  bool HasWork() const noexcept;
  void CheckRunnable(const char* operation) const;
  void Iterate(int timeout_ms, bool wait_when_idle);
  int ComputeTimeout(int max_wait_ms) const;

  void StartQueued();
  void Start(JobSlot& slot);
  void Resume(JobSlot& slot);
  void AfterRun(JobSlot& slot, int outcome);
  void DecideWait(JobSlot& slot);
  void MakeReady(JobSlot& slot, ReadyReason reason);
  void RunReady();
  void DrainWakeups();
  void HandleFdEvent(int fd);
  void ExpireTimeouts();
  bool Cancel(JobSlot& slot, JobStatus status);
  void Finish(JobSlot& slot, JobStatus status, std::exception_ptr error = nullptr);

  // A job's wait fds (the fd table holds the other side).
  void ApplyFdChanges(JobSlot& slot);
  void Watch(JobSlot& slot, int fd);
  void Unwatch(JobSlot& slot, int fd);
  void ReleaseFds(JobSlot& slot);

  Loop* const owner_;
  const std::thread::id thread_;
  const pid_t thread_tid_;  // the same thread, as messages name it
  WakeQueue wake_queue_;    // first: the epoll set below watches its doorbell
  const int epoll_fd_;
  FdTable fd_table_;
  DeadlineHeap deadlines_;  // of the slots whose job has a timeout

  // Slots: chunks that never move, so that references to a slot stay valid
  // while jobs are spawned.
  std::vector<std::unique_ptr<JobSlot[]>> slot_chunks_;
  std::vector<std::uint32_t> free_;
  std::uint64_t next_sequence_ = 1;

  std::vector<JobRef> start_queue_;
  std::vector<JobRef> starting_;
  std::vector<JobRef> pool_waiters_;  // queued jobs the pool had no room for
  std::vector<JobRef> ready_;
  std::vector<JobRef> resuming_;
  std::vector<OSSL_ASYNC_FD> added_scratch_;
  std::vector<OSSL_ASYNC_FD> deleted_scratch_;
  static constexpr int kMaxEvents = 256;
  epoll_event events_[kMaxEvents];

  std::size_t alive_ = 0;    // slots not free
  std::size_t queued_ = 0;   // of which not started
  std::size_t started_ = 0;  // of which started (paused or running)
  int running_depth_ = 0;    // jobs of this loop executing (nested by cancellation)
  bool in_run_ = false;      // inside Run() or RunOnce() (see RunningScope)
  // Calls of Run(), RunOnce(), CancelById() and CancelAll() in progress
  // (see Entry). Written by the loop thread only; atomic so that Destroy()
  // on another thread may read it.
  std::atomic<int> entered_{0};
  bool destroying_ = false;     // TearDown() has begun
  bool orphaned_ = false;       // the Loop is gone: the last Entry deletes the core
  std::uint64_t finished_ = 0;  // every final state
  LoopCounters counters_;
};

}  // namespace asyncjob::detail

#endif  // ASYNCJOB_SRC_LOOP_LOOP_CORE_H_
