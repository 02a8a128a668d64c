// asyncjob::Loop: many jobs on one thread, woken by wait fds (epoll) and by
// wait-context callbacks (a lock-free queue and one eventfd per loop). The
// design of the wake-up path is described in loop_core.h.
#include <errno.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <system_error>
#include <utility>

#include "asyncjob/async.h"
#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"
#include "loop/loop_core.h"

namespace asyncjob {
namespace detail {
namespace {

static_assert(sizeof(void*) == 8, "the loop's wake-up tokens need 64-bit pointers");

// ----- The registry of loops, for callbacks that carry a token -----

// A callback holds `users` while it looks at the slot's loop, so that the
// loop's destructor, which empties the slot and then waits for users to
// reach 0, never frees a loop a callback is using.
struct alignas(64) RegistrySlot {
  std::atomic<std::uint32_t> users{0};
  std::atomic<std::uint32_t> incarnation{0};
  std::atomic<LoopCore*> core{nullptr};
  bool in_use = false;  // guarded by registry_mutex
};

RegistrySlot registry[kLoopSlots];
std::mutex registry_mutex;
std::uint32_t registry_cursor = 0;  // next slot to try: slots are reused late

std::uint32_t NextGeneration(std::uint32_t generation) {
  generation = (generation + 1) & kGenerationMask;
  return generation == 0 ? 1 : generation;
}

// Whether generation a was issued after b (serial-number arithmetic: a
// record is reused at most 2^21 times while a wake-up is in flight).
bool Newer(std::uint32_t a, std::uint32_t b) {
  std::uint32_t distance = (a - b) & kGenerationMask;
  return distance != 0 && distance < (1u << (kGenerationBits - 1));
}

[[noreturn]] void ThrowSystemError(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

int ToMilliseconds(Clock::duration duration) {
  if (duration <= Clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(duration).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

}  // namespace

void* WakeToken::Encode() const noexcept {
  std::uint64_t value = (std::uint64_t{slot} << (kIncarnationBits + kIndexBits + kGenerationBits)) |
                        (std::uint64_t{incarnation} << (kIndexBits + kGenerationBits)) |
                        (std::uint64_t{index} << kGenerationBits) | generation;
  return reinterpret_cast<void*>(static_cast<std::uintptr_t>(value));
}

WakeToken WakeToken::Decode(const void* argument) noexcept {
  auto value = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(argument));
  WakeToken token;
  token.generation = static_cast<std::uint32_t>(value & kGenerationMask);
  token.index = static_cast<std::uint32_t>((value >> kGenerationBits) & (kMaxRecords - 1));
  token.incarnation = static_cast<std::uint32_t>((value >> (kIndexBits + kGenerationBits)) &
                                                 ((1u << kIncarnationBits) - 1));
  token.slot = static_cast<std::uint32_t>(value >> (kIncarnationBits + kIndexBits + kGenerationBits));
  return token;
}

int WakeCallback(void* argument) {
  WakeToken token = WakeToken::Decode(argument);
  RegistrySlot& slot = registry[token.slot];
  slot.users.fetch_add(1, std::memory_order_seq_cst);
  LoopCore* core = slot.core.load(std::memory_order_seq_cst);
  if (core != nullptr && slot.incarnation.load(std::memory_order_acquire) == token.incarnation) {
    core->Wake(token.index, token.generation);
  }
  slot.users.fetch_sub(1, std::memory_order_release);
  return 1;
}

// ----- Construction and destruction -----

LoopCore::LoopCore(Loop* owner)
    : owner_(owner),
      thread_(std::this_thread::get_id()),
      chunks_(new std::atomic<Record*>[kChunkCount]()) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) ThrowSystemError("asyncjob::Loop: epoll_create1");
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) {
    int saved = errno;
    close(epoll_fd_);
    errno = saved;
    ThrowSystemError("asyncjob::Loop: eventfd");
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = event_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &event) != 0) {
    int saved = errno;
    close(event_fd_);
    close(epoll_fd_);
    errno = saved;
    ThrowSystemError("asyncjob::Loop: epoll_ctl");
  }

  std::lock_guard<std::mutex> lock(registry_mutex);
  for (std::uint32_t i = 0; i < kLoopSlots; ++i) {
    std::uint32_t candidate = (registry_cursor + i) % kLoopSlots;
    RegistrySlot& slot = registry[candidate];
    if (slot.in_use) continue;
    slot.in_use = true;
    slot_ = candidate;
    incarnation_ = (slot.incarnation.load(std::memory_order_relaxed) + 1) &
                   ((1u << kIncarnationBits) - 1);
    slot.incarnation.store(incarnation_, std::memory_order_relaxed);
    slot.core.store(this, std::memory_order_seq_cst);
    registry_cursor = (candidate + 1) % kLoopSlots;
    registered_ = true;
    return;
  }
  close(event_fd_);
  close(epoll_fd_);
  throw Error(0, "asyncjob::Loop: too many loops exist at once (at most 1024)");
}

void LoopCore::Unregister() noexcept {
  if (!registered_) return;
  RegistrySlot& slot = registry[slot_];
  slot.core.store(nullptr, std::memory_order_seq_cst);
  // Callbacks that saw this loop finish their few instructions.
  while (slot.users.load(std::memory_order_seq_cst) != 0) sched_yield();
  std::lock_guard<std::mutex> lock(registry_mutex);
  slot.in_use = false;
  registered_ = false;
}

LoopCore::~LoopCore() {
  // From here on callbacks do nothing; wake-ups still queued are dropped.
  Unregister();
  destroying_ = true;
  for (std::uint32_t c = 0; c < chunk_count_; ++c) {
    for (std::uint32_t i = 0; i < kChunkSize; ++i) {
      Record& record = At(c * kChunkSize + i);
      if (record.state != RecordState::kFree) Cancel(record, JobStatus::kCancelled);
    }
  }
  for (std::uint32_t c = 0; c < chunk_count_; ++c) {
    delete[] chunks_[c].load(std::memory_order_relaxed);
  }
  close(event_fd_);
  close(epoll_fd_);
}

// ----- Records -----

Record& LoopCore::Allocate() {
  if (free_.empty()) {
    if (chunk_count_ == kChunkCount) {
      throw Error(0, "asyncjob::Loop::spawn: too many jobs alive at once (at most 4,194,304)");
    }
    Record* chunk = new Record[kChunkSize];
    std::uint32_t base = chunk_count_ * kChunkSize;
    for (std::uint32_t i = 0; i < kChunkSize; ++i) chunk[i].index = base + i;
    chunks_[chunk_count_].store(chunk, std::memory_order_release);
    ++chunk_count_;
    free_.reserve(free_.size() + kChunkSize);
    for (std::uint32_t i = kChunkSize; i-- > 0;) free_.push_back(base + i);
  }
  Record& record = At(free_.back());
  free_.pop_back();
  return record;
}

void LoopCore::CheckThread(const char* operation) const {
  if (std::this_thread::get_id() != thread_) {
    throw Error(0, std::string("asyncjob::Loop::") + operation +
                       ": called from a thread other than the loop's");
  }
}

void LoopCore::CheckRunnable(const char* operation) const {
  CheckThread(operation);
  if (ASYNC_get_current_job() != nullptr) {
    throw Error(0, std::string("asyncjob::Loop::") + operation + ": called from inside a job");
  }
  if (in_run_) {
    throw Error(0, std::string("asyncjob::Loop::") + operation + ": the loop is already running");
  }
}

// ----- Spawning, starting, resuming -----

void LoopCore::Submit(std::shared_ptr<LoopTask> task, const SpawnOptions& options) {
  CheckThread("spawn");
  Record& record = Allocate();
  record.id = static_cast<JobId>((next_sequence_++ << kIndexBits) | record.index);
  record.state = RecordState::kQueued;
  record.reason = ReadyReason::kNone;
  task->id = record.id;
  task->status = JobStatus::kQueued;
  task->loop = owner_;
  record.task = std::move(task);
  if (options.timeout > Clock::duration::zero()) {
    record.deadline = Clock::now() + options.timeout;
    HeapPush(record);
  }
  start_queue_.push_back(RecordRef{record.index, record.generation});
  ++alive_;
  ++queued_;
  ++counters_.spawned;
}

namespace {
// Puts back the entries of `batch` after `done` (a completion callback
// threw while the batch was being worked through), ahead of newer ones.
void Requeue(std::vector<RecordRef>& batch, std::size_t done, std::vector<RecordRef>& queue) {
  queue.insert(queue.begin(), batch.begin() + static_cast<std::ptrdiff_t>(done + 1), batch.end());
  batch.clear();
}
}  // namespace

void LoopCore::StartQueued() {
  if (start_queue_.empty()) return;
  starting_.swap(start_queue_);
  for (std::size_t i = 0; i < starting_.size(); ++i) {
    Record& record = At(starting_[i].index);
    if (record.generation != starting_[i].generation || record.state != RecordState::kQueued) {
      continue;
    }
    try {
      Start(record);
    } catch (...) {
      Requeue(starting_, i, start_queue_);
      throw;
    }
  }
  starting_.clear();
}

void LoopCore::Start(Record& record) {
  if (record.ctx == nullptr) {
    record.ctx = ASYNC_WAIT_CTX_new();
    if (record.ctx == nullptr) {
      Finish(record, JobStatus::kFailed,
             std::make_exception_ptr(Error::FromQueue("ASYNC_WAIT_CTX_new")));
      return;
    }
    WakeToken token{slot_, incarnation_, record.index, record.generation};
    ASYNC_WAIT_CTX_set_callback(record.ctx, &WakeCallback, token.Encode());
  }
  LoopTask* task = record.task.get();
  record.state = RecordState::kRunning;
  task->status = JobStatus::kRunning;
  --queued_;
  ++started_;
  ++running_depth_;
  int ignored = 0;
  JobTask* entry_argument = task;  // what JobTask::Enter expects
  int outcome = ASYNC_start_job(&record.job, record.ctx, &ignored, &JobTask::Enter,
                                &entry_argument, sizeof entry_argument);
  --running_depth_;
  if (outcome == ASYNC_NO_JOBS) {
    record.state = RecordState::kQueued;
    task->status = JobStatus::kQueued;
    ++queued_;
    --started_;
    if (started_ == 0) {
      // No job of ours will finish to make room: waiting would never end.
      Finish(record, JobStatus::kFailed, std::make_exception_ptr(PoolExhausted()));
    } else {
      pool_waiters_.push_back(RecordRef{record.index, record.generation});
    }
    return;
  }
  AfterRun(record, outcome);
}

void LoopCore::Resume(Record& record) {
  record.state = RecordState::kRunning;
  record.task->status = JobStatus::kRunning;
  ++counters_.resumes;
  if (record.reason == ReadyReason::kEagain) ++counters_.eagain_resumes;
  if (record.reason == ReadyReason::kPoll) ++counters_.poll_resumes;
  record.reason = ReadyReason::kNone;
  ++running_depth_;
  int ignored = 0;
  int outcome = ASYNC_start_job(&record.job, record.ctx, &ignored, nullptr, nullptr, 0);
  --running_depth_;
  AfterRun(record, outcome);
}

void LoopCore::AfterRun(Record& record, int outcome) {
  switch (outcome) {
    case ASYNC_PAUSE:
      record.state = RecordState::kPaused;
      record.task->status = JobStatus::kPaused;
      ApplyFdChanges(record);
      DecideWait(record);
      return;
    case ASYNC_FINISH:
      record.job = nullptr;
      Finish(record, record.task->error ? JobStatus::kFailed : JobStatus::kSucceeded,
             record.task->error);
      return;
    default: {
      // The job could not be started or resumed (no memory for a stack, or
      // an error the thread rules should have prevented).
      std::exception_ptr error = std::make_exception_ptr(Error::FromQueue("ASYNC_start_job"));
      if (record.job != nullptr) {
        ReleaseFds(record);
        ++running_depth_;
        asyncjob_cancel_job(&record.job);
        --running_depth_;
        asyncjob_clear_errors();
        record.job = nullptr;
      }
      Finish(record, JobStatus::kFailed, error);
      return;
    }
  }
}

void LoopCore::DecideWait(Record& record) {
  int status = ASYNC_WAIT_CTX_get_status(record.ctx);
  if (status == ASYNC_STATUS_EAGAIN) {
    // The async-aware code asks to be resumed soon; the request is consumed.
    ASYNC_WAIT_CTX_set_status(record.ctx, ASYNC_STATUS_UNSUPPORTED);
    MakeReady(record, ReadyReason::kEagain);
    return;
  }
  if (record.unwatched_fds > 0) {
    MakeReady(record, ReadyReason::kPoll);
    return;
  }
  if (status == ASYNC_STATUS_OK || !record.fds.empty()) return;  // a wake-up will come
  MakeReady(record, ReadyReason::kPoll);
}

void LoopCore::MakeReady(Record& record, ReadyReason reason) {
  if (record.ready) return;
  record.ready = true;
  record.reason = reason;
  ready_.push_back(RecordRef{record.index, record.generation});
}

void LoopCore::RunReady() {
  if (ready_.empty()) return;
  resuming_.swap(ready_);  // jobs made ready from now on wait for the next iteration
  for (std::size_t i = 0; i < resuming_.size(); ++i) {
    Record& record = At(resuming_[i].index);
    if (record.generation != resuming_[i].generation || record.state != RecordState::kPaused) {
      continue;
    }
    record.ready = false;
    try {
      Resume(record);
    } catch (...) {
      Requeue(resuming_, i, ready_);
      throw;
    }
  }
  resuming_.clear();
}

// ----- Finishing and cancelling -----

void LoopCore::Finish(Record& record, JobStatus status, std::exception_ptr error) {
  bool was_queued = record.state == RecordState::kQueued;
  ReleaseFds(record);
  if (record.heap_position != kNotInHeap) HeapRemove(record);
  ASYNC_WAIT_CTX* ctx = std::exchange(record.ctx, nullptr);
  std::shared_ptr<LoopTask> task = std::move(record.task);
  record.job = nullptr;
  record.state = RecordState::kFree;
  record.ready = false;
  record.reason = ReadyReason::kNone;
  record.id = JobId::kNone;
  record.generation = NextGeneration(record.generation);
  free_.push_back(record.index);
  --alive_;
  if (was_queued) {
    --queued_;
  } else {
    --started_;
  }
  // The cleanup routines of fds still set run here (they usually close them).
  if (ctx != nullptr) ASYNC_WAIT_CTX_free(ctx);

  task->status = status;
  task->loop = nullptr;
  if (error) task->error = error;
  switch (status) {
    case JobStatus::kSucceeded: ++counters_.succeeded; break;
    case JobStatus::kFailed: ++counters_.failed; break;
    case JobStatus::kCancelled: ++counters_.cancelled; break;
    case JobStatus::kTimedOut: ++counters_.timed_out; break;
    default: break;
  }
  ++finished_;
  // A job's stack went back to the pool: jobs waiting for one may start.
  if (!was_queued && !pool_waiters_.empty()) {
    start_queue_.insert(start_queue_.end(), pool_waiters_.begin(), pool_waiters_.end());
    pool_waiters_.clear();
  }
  if (!destroying_) task->Complete(task);
}

bool LoopCore::Cancel(Record& record, JobStatus status) {
  switch (record.state) {
    case RecordState::kFree:
    case RecordState::kRunning:
      return false;
    case RecordState::kQueued:
      Finish(record, status);
      return true;
    case RecordState::kPaused:
      break;
  }
  // Stop watching the fds while they are still open: the cancellation runs
  // their cleanup routines, which usually close them.
  ReleaseFds(record);
  record.state = RecordState::kRunning;
  record.task->status = JobStatus::kRunning;
  ++running_depth_;
  int cancelled = asyncjob_cancel_job(&record.job);
  --running_depth_;
  if (cancelled != 1) {
    // Only a job paused on this thread can be cancelled, and ours are.
    asyncjob_clear_errors();
    record.state = RecordState::kPaused;
    record.task->status = JobStatus::kPaused;
    return false;
  }
  Finish(record, status);
  return true;
}

bool LoopCore::CancelById(JobId id) {
  CheckThread("cancel");
  auto value = static_cast<std::uint64_t>(id);
  auto index = static_cast<std::uint32_t>(value & (kMaxRecords - 1));
  if (id == JobId::kNone || index >= chunk_count_ * kChunkSize) return false;
  Record& record = At(index);
  if (record.id != id) return false;
  return Cancel(record, JobStatus::kCancelled);
}

std::size_t LoopCore::CancelAll() {
  CheckThread("cancel_all");
  std::size_t count = 0;
  for (std::uint32_t c = 0; c < chunk_count_; ++c) {
    for (std::uint32_t i = 0; i < kChunkSize; ++i) {
      Record& record = At(c * kChunkSize + i);
      if (record.state != RecordState::kFree && Cancel(record, JobStatus::kCancelled)) ++count;
    }
  }
  return count;
}

// ----- Wait fds -----

void LoopCore::ApplyFdChanges(Record& record) {
  std::size_t added = 0;
  std::size_t deleted = 0;
  if (ASYNC_WAIT_CTX_get_changed_fds(record.ctx, nullptr, &added, nullptr, &deleted) != 1) return;
  if (added == 0 && deleted == 0) return;
  added_scratch_.resize(added);
  deleted_scratch_.resize(deleted);
  ASYNC_WAIT_CTX_get_changed_fds(record.ctx, added_scratch_.data(), &added,
                                 deleted_scratch_.data(), &deleted);
  // Deleted first: a job may close an fd and register a new one that got
  // the same number.
  for (std::size_t i = 0; i < deleted; ++i) Unwatch(record, deleted_scratch_[i]);
  for (std::size_t i = 0; i < added; ++i) Watch(record, added_scratch_[i]);
}

void LoopCore::Watch(Record& record, int fd) {
  for (const FdUse& use : record.fds) {
    if (use.fd == fd) return;
  }
  bool watched = AddWaiter(fd, record);
  record.fds.push_back(FdUse{fd, watched});
  if (!watched) ++record.unwatched_fds;
}

void LoopCore::Unwatch(Record& record, int fd) {
  for (std::size_t i = 0; i < record.fds.size(); ++i) {
    if (record.fds[i].fd != fd) continue;
    if (record.fds[i].watched) {
      RemoveWaiter(fd, record);
    } else {
      --record.unwatched_fds;
    }
    record.fds[i] = record.fds.back();
    record.fds.pop_back();
    return;
  }
}

void LoopCore::ReleaseFds(Record& record) {
  for (const FdUse& use : record.fds) {
    if (use.watched) RemoveWaiter(use.fd, record);
  }
  record.fds.clear();
  record.unwatched_fds = 0;
}

bool LoopCore::AddWaiter(int fd, const Record& record) {
  if (fd < 0 || fd == event_fd_ || fd == epoll_fd_) return false;
  auto slot = static_cast<std::size_t>(fd);
  if (slot >= fd_table_.size()) fd_table_.resize(std::max(slot + 1, fd_table_.size() * 2));
  FdEntry& entry = fd_table_[slot];
  if (entry.waiters.empty()) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      // EEXIST: a closed fd's file is still open elsewhere and so still in
      // the set under this number; take it over.
      if (errno != EEXIST || epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event) != 0) return false;
    }
  }
  entry.waiters.push_back(RecordRef{record.index, record.generation});
  return true;
}

void LoopCore::RemoveWaiter(int fd, const Record& record) {
  auto slot = static_cast<std::size_t>(fd);
  if (slot >= fd_table_.size()) return;
  std::vector<RecordRef>& waiters = fd_table_[slot].waiters;
  for (std::size_t i = 0; i < waiters.size(); ++i) {
    if (waiters[i].index == record.index) {
      waiters[i] = waiters.back();
      waiters.pop_back();
      break;
    }
  }
  // The job may have closed it already (then the kernel dropped it).
  if (waiters.empty()) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

void LoopCore::HandleFdEvent(int fd) {
  auto slot = static_cast<std::size_t>(fd);
  if (slot >= fd_table_.size()) return;
  for (const RecordRef& waiter : fd_table_[slot].waiters) {
    Record& record = At(waiter.index);
    if (record.generation != waiter.generation || record.state != RecordState::kPaused) continue;
    ++counters_.wakeups_fd;
    MakeReady(record, ReadyReason::kFd);
  }
}

// ----- Callback wake-ups -----

void LoopCore::Wake(std::uint32_t index, std::uint32_t generation) noexcept {
  Record* chunk = chunks_[index >> kChunkBits].load(std::memory_order_acquire);
  if (chunk == nullptr) return;
  Record& record = chunk[index & (kChunkSize - 1)];
  // Always a read-modify-write, so that what this thread did before the
  // wake-up is visible to the job when the loop resumes it.
  std::uint32_t pending = record.wake_pending.load(std::memory_order_relaxed);
  std::uint32_t desired;
  do {
    desired = (pending == 0 || Newer(generation, pending)) ? generation : pending;
  } while (!record.wake_pending.compare_exchange_weak(pending, desired, std::memory_order_acq_rel,
                                                      std::memory_order_relaxed));
  if (pending != 0) {
    coalesced_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Record* head = wake_head_.load(std::memory_order_relaxed);
  do {
    record.wake_next = head;
  } while (!wake_head_.compare_exchange_weak(head, &record, std::memory_order_release,
                                             std::memory_order_relaxed));
  if (head == nullptr) {
    eventfd_signals_.fetch_add(1, std::memory_order_relaxed);
    SignalEventfd();
  }
}

void LoopCore::SignalEventfd() noexcept {
  std::uint64_t one = 1;
  while (write(event_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void LoopCore::DrainEventfd() {
  std::uint64_t count = 0;
  while (read(event_fd_, &count, sizeof count) < 0 && errno == EINTR) {
  }
}

void LoopCore::DrainWakeups() {
  if (wake_head_.load(std::memory_order_relaxed) == nullptr) return;
  Record* list = wake_head_.exchange(nullptr, std::memory_order_acquire);
  // Pushed newest first; resume in arrival order.
  Record* fifo = nullptr;
  while (list != nullptr) {
    Record* next = list->wake_next;
    list->wake_next = fifo;
    fifo = list;
    list = next;
  }
  while (fifo != nullptr) {
    Record& record = *fifo;
    fifo = record.wake_next;  // read before the record may be pushed again
    std::uint32_t generation = record.wake_pending.exchange(0, std::memory_order_acq_rel);
    ++counters_.wakeups_callback;
    if (record.state == RecordState::kFree || record.generation != generation) {
      ++counters_.wakeups_stale;
      continue;
    }
    if (record.state == RecordState::kPaused) MakeReady(record, ReadyReason::kCallback);
  }
}

void LoopCore::RequestStop() noexcept {
  stop_.store(true, std::memory_order_release);
  SignalEventfd();
}

void LoopCore::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    posted_.push_back(std::move(fn));
    has_posted_.store(true, std::memory_order_release);
  }
  SignalEventfd();
}

void LoopCore::RunPosted() {
  if (!has_posted_.load(std::memory_order_acquire)) return;
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    batch.swap(posted_);
    has_posted_.store(false, std::memory_order_relaxed);
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    try {
      batch[i]();
    } catch (...) {
      // Keep the rest for the next iteration, in order.
      std::lock_guard<std::mutex> lock(post_mutex_);
      posted_.insert(posted_.begin(), std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(i) + 1),
                     std::make_move_iterator(batch.end()));
      if (!posted_.empty()) has_posted_.store(true, std::memory_order_release);
      throw;
    }
  }
}

// ----- Timeouts -----

void LoopCore::HeapSwap(std::size_t a, std::size_t b) {
  std::swap(heap_[a], heap_[b]);
  At(heap_[a]).heap_position = static_cast<std::uint32_t>(a);
  At(heap_[b]).heap_position = static_cast<std::uint32_t>(b);
}

void LoopCore::HeapUp(std::size_t position) {
  while (position > 0) {
    std::size_t parent = (position - 1) / 2;
    if (At(heap_[parent]).deadline <= At(heap_[position]).deadline) return;
    HeapSwap(parent, position);
    position = parent;
  }
}

void LoopCore::HeapDown(std::size_t position) {
  for (;;) {
    std::size_t smallest = position;
    for (std::size_t child = 2 * position + 1; child <= 2 * position + 2; ++child) {
      if (child < heap_.size() && At(heap_[child]).deadline < At(heap_[smallest]).deadline) {
        smallest = child;
      }
    }
    if (smallest == position) return;
    HeapSwap(position, smallest);
    position = smallest;
  }
}

void LoopCore::HeapPush(Record& record) {
  record.heap_position = static_cast<std::uint32_t>(heap_.size());
  heap_.push_back(record.index);
  HeapUp(heap_.size() - 1);
}

void LoopCore::HeapRemove(Record& record) {
  std::size_t position = record.heap_position;
  std::size_t last = heap_.size() - 1;
  if (position != last) HeapSwap(position, last);
  heap_.pop_back();
  record.heap_position = kNotInHeap;
  if (position < heap_.size()) {
    HeapUp(position);
    HeapDown(position);
  }
}

void LoopCore::ExpireTimeouts() {
  if (heap_.empty()) return;
  Clock::time_point now = Clock::now();
  while (!heap_.empty()) {
    Record& record = At(heap_.front());
    if (record.deadline > now) return;
    HeapRemove(record);
    Cancel(record, JobStatus::kTimedOut);
  }
}

// ----- Iterations -----

bool LoopCore::HasWork() const noexcept {
  return alive_ > 0 || has_posted_.load(std::memory_order_acquire);
}

int LoopCore::ComputeTimeout(int max_wait_ms) const {
  if (!ready_.empty() || !start_queue_.empty() || has_posted_.load(std::memory_order_acquire) ||
      stop_.load(std::memory_order_acquire)) {
    return 0;
  }
  if (heap_.empty()) return max_wait_ms;
  int until_deadline = ToMilliseconds(At(heap_.front()).deadline - Clock::now());
  return max_wait_ms < 0 ? until_deadline : std::min(max_wait_ms, until_deadline);
}

void LoopCore::Iterate(int timeout_ms, bool wait_when_idle) {
  ++counters_.iterations;
  RunPosted();
  StartQueued();
  if (!wait_when_idle && alive_ == 0) timeout_ms = 0;  // nothing left to wait for
  int ready = epoll_wait(epoll_fd_, events_, kMaxEvents, ComputeTimeout(timeout_ms));
  if (ready < 0) {
    if (errno != EINTR) ThrowSystemError("asyncjob::Loop: epoll_wait");
    ready = 0;
  }
  for (int i = 0; i < ready; ++i) {
    int fd = events_[i].data.fd;
    if (fd == event_fd_) {
      // Before taking the queue: a wake-up pushed after the read signals
      // again, so none is left behind with the eventfd cleared.
      DrainEventfd();
    } else {
      HandleFdEvent(fd);
    }
  }
  DrainWakeups();
  RunPosted();
  ExpireTimeouts();
  RunReady();
}

std::size_t LoopCore::Run(bool until_stopped) {
  CheckRunnable(until_stopped ? "run_until_stopped" : "run");
  in_run_ = true;
  std::uint64_t finished_before = finished_;
  try {
    while (!stop_.exchange(false, std::memory_order_acq_rel)) {
      if (!until_stopped && !HasWork()) break;
      Iterate(-1, until_stopped);
    }
  } catch (...) {
    in_run_ = false;
    throw;
  }
  in_run_ = false;
  return static_cast<std::size_t>(finished_ - finished_before);
}

bool LoopCore::RunOnce(std::chrono::milliseconds max_wait) {
  CheckRunnable("run_once");
  in_run_ = true;
  try {
    auto ms = max_wait.count();
    Iterate(ms < 0 ? -1 : (ms > INT_MAX ? INT_MAX : static_cast<int>(ms)), true);
  } catch (...) {
    in_run_ = false;
    throw;
  }
  in_run_ = false;
  return alive_ > 0;
}

LoopCounters LoopCore::Counters() const noexcept {
  LoopCounters counters = counters_;
  counters.queued = queued_;
  counters.running = running_depth_ > 0 ? 1 : 0;
  counters.paused = started_ - static_cast<std::size_t>(running_depth_ > 0 ? running_depth_ : 0);
  counters.wakeups_coalesced = coalesced_.load(std::memory_order_relaxed);
  counters.wakeups_callback += counters.wakeups_coalesced;
  counters.eventfd_signals = eventfd_signals_.load(std::memory_order_relaxed);
  return counters;
}

}  // namespace detail

// ----- The public class -----

const char* to_string(JobStatus status) noexcept {
  switch (status) {
    case JobStatus::kQueued: return "queued";
    case JobStatus::kRunning: return "running";
    case JobStatus::kPaused: return "paused";
    case JobStatus::kSucceeded: return "succeeded";
    case JobStatus::kFailed: return "failed";
    case JobStatus::kCancelled: return "cancelled";
    case JobStatus::kTimedOut: return "timed out";
  }
  return "unknown";
}

Loop::Loop() : core_(std::make_unique<detail::LoopCore>(this)) {}
Loop::~Loop() = default;

void Loop::Submit(std::shared_ptr<detail::LoopTask> task, const SpawnOptions& options) {
  core_->Submit(std::move(task), options);
}
bool Loop::cancel(JobId id) { return core_->CancelById(id); }
std::size_t Loop::cancel_all() { return core_->CancelAll(); }
std::size_t Loop::run() { return core_->Run(false); }
void Loop::run_until_stopped() { core_->Run(true); }
bool Loop::run_once(std::chrono::milliseconds max_wait) { return core_->RunOnce(max_wait); }
void Loop::stop() noexcept { core_->RequestStop(); }
void Loop::post(std::function<void()> fn) { core_->Post(std::move(fn)); }
std::size_t Loop::size() const noexcept { return core_->Alive(); }
LoopCounters Loop::counters() const noexcept { return core_->Counters(); }

}  // namespace asyncjob
