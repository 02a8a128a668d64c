// loop_core.h - the machinery behind asyncjob::Loop (include/asyncjob/loop.hpp).
//
// Jobs live in records that never move and are reused: a record's generation
// changes every time its job ends, so that anything still naming the old job
// (a wake-up token, a ready-list entry, an fd waiter) is recognised as stale.
//
// Wake-up path for callbacks (the part other threads touch):
//   - Every job's wait context gets the same callback, WakeCallback, whose
//     argument is not a pointer but a 64-bit token:
//       [loop slot:10][slot incarnation:10][record index:22][generation:22]
//     The slot names this loop in a process-wide registry, so that a callback
//     arriving after the loop was destroyed finds the slot empty (or taken by
//     a loop of another incarnation) and does nothing.
//   - The record is the queue node (intrusive, no allocation). Its
//     wake_pending word holds 0 (not queued) or the newest generation that
//     asked to be woken. The caller that moves it from 0 pushes the record on
//     a lock-free LIFO (a CAS on the head); any other caller only updates the
//     word (always with a read-modify-write, so the loop thread synchronises
//     with every waker) and counts as coalesced. So a record is never in the
//     queue twice.
//   - The push that finds the queue empty writes the loop's eventfd: one
//     system call per batch of wake-ups, however many threads take part.
//   - The loop thread reads the eventfd first, then takes the whole list with
//     one exchange, restores FIFO order, and for each record swaps
//     wake_pending back to 0 (after reading its link: from then on a waker
//     may push it again). A generation other than the job's current one is a
//     stale wake-up and is dropped. The job is resumed once it is paused;
//     a wake-up that arrived while it was still running is simply still in
//     the queue when the loop next drains it.
#ifndef ASYNCJOB_SRC_LOOP_LOOP_CORE_H_
#define ASYNCJOB_SRC_LOOP_LOOP_CORE_H_

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "asyncjob/loop.hpp"

namespace asyncjob::detail {

using Clock = std::chrono::steady_clock;

inline constexpr unsigned kGenerationBits = 22;
inline constexpr unsigned kIndexBits = 22;
inline constexpr unsigned kIncarnationBits = 10;
inline constexpr unsigned kSlotBits = 10;
static_assert(kGenerationBits + kIndexBits + kIncarnationBits + kSlotBits == 64);
inline constexpr std::uint32_t kGenerationMask = (1u << kGenerationBits) - 1;
inline constexpr std::uint32_t kMaxRecords = 1u << kIndexBits;
inline constexpr unsigned kChunkBits = 10;  // records allocated 1,024 at a time
inline constexpr std::uint32_t kChunkSize = 1u << kChunkBits;
inline constexpr std::uint32_t kChunkCount = kMaxRecords >> kChunkBits;
inline constexpr std::uint32_t kLoopSlots = 1u << kSlotBits;
inline constexpr std::uint32_t kNotInHeap = UINT32_MAX;

// The argument of a job's wait-context callback.
struct WakeToken {
  std::uint32_t slot;
  std::uint32_t incarnation;
  std::uint32_t index;
  std::uint32_t generation;

  void* Encode() const noexcept;
  static WakeToken Decode(const void* argument) noexcept;
};

// The callback installed in every job's wait context. Any thread.
int WakeCallback(void* argument);

enum class RecordState : std::uint8_t { kFree, kQueued, kRunning, kPaused };
// Why a paused job was put on the ready list (the first reason wins).
enum class ReadyReason : std::uint8_t { kNone, kFd, kCallback, kEagain, kPoll };

// A job and generation, as stored in lists that may outlive the job.
struct RecordRef {
  std::uint32_t index;
  std::uint32_t generation;
};

struct FdUse {
  int fd;
  bool watched;  // in the epoll set (false: epoll refused it; the job is polled)
};

struct Record {
  // --- Shared with wakers (see the file comment). ---
  Record* wake_next = nullptr;                // link while queued
  std::atomic<std::uint32_t> wake_pending{0};  // 0 or a generation

  // --- Loop thread only. ---
  std::uint32_t index = 0;
  std::uint32_t generation = 1;  // never 0
  RecordState state = RecordState::kFree;
  bool ready = false;  // on the ready list
  ReadyReason reason = ReadyReason::kNone;
  std::uint32_t heap_position = kNotInHeap;  // in the timeout heap
  std::uint32_t unwatched_fds = 0;
  JobId id = JobId::kNone;
  ASYNC_JOB* job = nullptr;
  ASYNC_WAIT_CTX* ctx = nullptr;
  std::shared_ptr<LoopTask> task;
  std::vector<FdUse> fds;  // wait fds the loop knows of
  Clock::time_point deadline{};
};

// One fd watched by epoll and the jobs waiting on it (nearly always one).
struct FdEntry {
  std::vector<RecordRef> waiters;
};

class LoopCore {
 public:
  explicit LoopCore(Loop* owner);
  ~LoopCore();
  LoopCore(const LoopCore&) = delete;
  LoopCore& operator=(const LoopCore&) = delete;

  // Any thread: a callback asked to wake the job (index, generation).
  void Wake(std::uint32_t index, std::uint32_t generation) noexcept;
  // Any thread.
  void RequestStop() noexcept;
  void Post(std::function<void()> fn);

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
  Record& At(std::uint32_t index) const noexcept {
    return chunks_[index >> kChunkBits].load(std::memory_order_relaxed)[index & (kChunkSize - 1)];
  }
  Record& Allocate();
  bool HasWork() const noexcept;
  void CheckRunnable(const char* operation) const;
  void Iterate(int timeout_ms, bool wait_when_idle);
  int ComputeTimeout(int max_wait_ms) const;

  void RunPosted();
  void StartQueued();
  void Start(Record& record);
  void Resume(Record& record);
  void AfterRun(Record& record, int outcome);
  void DecideWait(Record& record);
  void MakeReady(Record& record, ReadyReason reason);
  void RunReady();
  void DrainWakeups();
  void DrainEventfd();
  void HandleFdEvent(int fd);
  void ExpireTimeouts();
  bool Cancel(Record& record, JobStatus status);
  void Finish(Record& record, JobStatus status, std::exception_ptr error = nullptr);

  // Wait fds.
  void ApplyFdChanges(Record& record);
  void Watch(Record& record, int fd);
  void Unwatch(Record& record, int fd);
  void ReleaseFds(Record& record);
  bool AddWaiter(int fd, const Record& record);
  void RemoveWaiter(int fd, const Record& record);

  // Timeout heap (a binary min-heap of record indices by deadline).
  void HeapPush(Record& record);
  void HeapRemove(Record& record);
  void HeapSwap(std::size_t a, std::size_t b);
  void HeapUp(std::size_t position);
  void HeapDown(std::size_t position);

  void SignalEventfd() noexcept;
  void Unregister() noexcept;

  Loop* const owner_;
  const std::thread::id thread_;
  int epoll_fd_ = -1;
  int event_fd_ = -1;
  std::uint32_t slot_ = 0;
  std::uint32_t incarnation_ = 0;
  bool registered_ = false;

  // Records: a fixed directory of chunks, so wakers can find a record by
  // index while the loop thread adds chunks.
  std::unique_ptr<std::atomic<Record*>[]> chunks_;
  std::uint32_t chunk_count_ = 0;
  std::vector<std::uint32_t> free_;
  std::uint64_t next_sequence_ = 1;

  // Wake-up queue (see the file comment).
  std::atomic<Record*> wake_head_{nullptr};
  std::atomic<std::uint64_t> coalesced_{0};
  std::atomic<std::uint64_t> eventfd_signals_{0};
  std::atomic<bool> stop_{false};

  std::mutex post_mutex_;
  std::vector<std::function<void()>> posted_;
  std::atomic<bool> has_posted_{false};

  std::vector<RecordRef> start_queue_;
  std::vector<RecordRef> starting_;
  std::vector<RecordRef> pool_waiters_;  // queued jobs the pool had no room for
  std::vector<RecordRef> ready_;
  std::vector<RecordRef> resuming_;
  std::vector<std::uint32_t> heap_;
  std::vector<FdEntry> fd_table_;
  std::vector<OSSL_ASYNC_FD> added_scratch_;
  std::vector<OSSL_ASYNC_FD> deleted_scratch_;
  static constexpr int kMaxEvents = 256;
  epoll_event events_[kMaxEvents];

  std::size_t alive_ = 0;   // records not free
  std::size_t queued_ = 0;  // of which not started
  std::size_t started_ = 0; // of which started (paused or running)
  int running_depth_ = 0;   // jobs of this loop executing (nested by cancellation)
  bool in_run_ = false;
  bool destroying_ = false;
  std::uint64_t finished_ = 0;  // every final state
  LoopCounters counters_;
};

}  // namespace asyncjob::detail

#endif  // ASYNCJOB_SRC_LOOP_LOOP_CORE_H_
