// asyncjob::Loop: many jobs on one thread, woken by wait fds (epoll) and by
// wait-context callbacks (the wake queue). The design is described in
// loop_core.h; the wake-up path in wake_queue.h.
#include <errno.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "asyncjob/async.h"
#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"
#include "base/fatal.h"
#include "loop/loop_core.h"

namespace asyncjob {
namespace detail {
namespace {

[[noreturn]] void ThrowSystemError(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// epoll_wait's timeout for the time left until `deadline`: 0 once it has
// passed, INT_MAX (about 24 days; the loop then looks again) when further.
// No subtraction that could overflow, whatever the two time points.
int MillisecondsUntil(Clock::time_point deadline, Clock::time_point now) {
  if (deadline <= now) return 0;
  Clock::duration::rep later = deadline.time_since_epoch().count();
  Clock::duration::rep earlier = now.time_since_epoch().count();
  if (earlier < 0 && later > Clock::duration::max().count() + earlier) return INT_MAX;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// A run_once() wait in epoll_wait's terms: negative waits without limit.
int ClampWait(std::chrono::milliseconds max_wait) {
  auto ms = max_wait.count();
  if (ms < 0) return -1;
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// When a job spawned at `now` with `timeout` (not zero) times out: a
// negative timeout has already expired (the job times out without running);
// one that takes the deadline past the clock's range never expires (no
// deadline, nullopt).
std::optional<Clock::time_point> DeadlineFor(Clock::time_point now, Clock::duration timeout) {
  if (timeout < Clock::duration::zero()) return Clock::time_point::min();
  if (now.time_since_epoch() > Clock::duration::zero() &&
      timeout > Clock::time_point::max() - now) {
    return std::nullopt;
  }
  return now + timeout;
}

// The calling thread's id as the kernel knows it (for messages).
pid_t CurrentTid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// A new epoll instance watching doorbell_fd.
int CreateEpollWatching(int doorbell_fd) {
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) ThrowSystemError("asyncjob::Loop: epoll_create1");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = doorbell_fd;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, doorbell_fd, &event) != 0) {
    int saved = errno;
    close(epoll_fd);
    errno = saved;
    ThrowSystemError("asyncjob::Loop: epoll_ctl");
  }
  return epoll_fd;
}

// Sets a loop's in_run_ flag for its lifetime: until run() or run_once()
// returns or an exception (from a completion callback, a posted function)
// leaves it.
class RunningScope {
 public:
  explicit RunningScope(bool& in_run) noexcept : in_run_(in_run) { in_run_ = true; }
  ~RunningScope() { in_run_ = false; }
  RunningScope(const RunningScope&) = delete;
  RunningScope& operator=(const RunningScope&) = delete;

 private:
  bool& in_run_;
};

}  // namespace

// Counts a call that may run user code (see the file comment of
// loop_core.h) for its lifetime; the last one out deletes an orphaned core.
// Declared before anything else in the function, so that it goes last.
class LoopCore::Entry {
 public:
  explicit Entry(LoopCore* core) noexcept : core_(core) {
    core_->entered_.store(core_->entered_.load(std::memory_order_relaxed) + 1,
                          std::memory_order_relaxed);
  }
  ~Entry() {
    int left = core_->entered_.load(std::memory_order_relaxed) - 1;
    core_->entered_.store(left, std::memory_order_relaxed);
    if (left == 0 && core_->orphaned_) delete core_;
  }
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;

 private:
  LoopCore* const core_;
};

// While the loop thread is in Run() or RunOnce(), callbacks need not ring
// the doorbell (WakeQueue::SetAwake()). Destroyed before the Entry that
// keeps the core alive.
class LoopCore::AwakeScope {
 public:
  explicit AwakeScope(WakeQueue& queue) noexcept : queue_(queue) { queue_.SetAwake(); }
  ~AwakeScope() { queue_.SetAway(); }
  AwakeScope(const AwakeScope&) = delete;
  AwakeScope& operator=(const AwakeScope&) = delete;

 private:
  WakeQueue& queue_;
};

// ----- Construction and destruction -----

LoopCore::LoopCore(Loop* owner)
    : owner_(owner),
      thread_(std::this_thread::get_id()),
      thread_tid_(CurrentTid()),
      epoll_fd_(CreateEpollWatching(wake_queue_.doorbell_fd())),
      fd_table_(epoll_fd_, wake_queue_.doorbell_fd()) {}

LoopCore::~LoopCore() {
  TearDown();
  slot_chunks_.clear();
  close(epoll_fd_);
}

void LoopCore::TearDown() noexcept {
  // From here on callbacks do nothing; wake-ups still queued and functions
  // still posted are dropped.
  wake_queue_.Unregister();
  destroying_ = true;
  for (std::uint32_t i = 0; i < SlotCount(); ++i) {
    JobSlot& slot = At(i);
    if (slot.state == SlotState::kFree) continue;
    // A job executing right now (the one that destroyed the loop, or one
    // that did it from a job it cancelled) is cancelled by AfterRun() when
    // it pauses; its handle can no longer reach the loop.
    if (!Cancel(slot, JobStatus::kCancelled) && slot.task) slot.task->loop = nullptr;
  }
}

void LoopCore::Destroy(std::unique_ptr<LoopCore>& core) noexcept {
  if (std::this_thread::get_id() != core->thread_) core->CheckDestroyableElsewhere();
  // With the Loop still pointing to the core: the destructors that the
  // cancellations run may call it (spawn() is refused, cancel() finds
  // nothing).
  core->TearDown();
  if (core->entered_.load(std::memory_order_relaxed) > 0) {
    // User code called by the core destroyed the Loop: the core goes when
    // that call returns (Entry).
    core->orphaned_ = true;
    core.release();
    return;
  }
  core.reset();
}

void LoopCore::CheckDestroyableElsewhere() const noexcept {
  bool running = entered_.load(std::memory_order_relaxed) > 0;
  if (!running && started_ == 0) return;  // only queued jobs: nothing is tied to the thread
  base::FatalMessage message;
  message.Add("asyncjob: asyncjob::Loop destroyed on thread ")
      .AddDecimal(static_cast<unsigned long long>(CurrentTid()));
  if (running) {
    message.Add(" while its own thread ")
        .AddDecimal(static_cast<unsigned long long>(thread_tid_))
        .Add(" is running it\n");
  } else {
    message.Add(" but ")
        .AddDecimal(started_)
        .Add(" of its jobs are paused on thread ")
        .AddDecimal(static_cast<unsigned long long>(thread_tid_))
        .Add(", the only thread that can cancel them (cancel_all() there first)\n");
  }
  message.WriteAndAbort();
}

// ----- Slots -----

JobSlot& LoopCore::Allocate() {
  if (free_.empty()) {
    if (slot_chunks_.size() == kMaxSlotChunks) {
      throw Error(0, "asyncjob::Loop::spawn: too many jobs alive at once (at most 4,194,304)");
    }
    std::uint32_t base = SlotCount();
    wake_queue_.Reserve(base + kSlotChunkSize);
    auto chunk = std::make_unique<JobSlot[]>(kSlotChunkSize);
    for (std::uint32_t i = 0; i < kSlotChunkSize; ++i) chunk[i].index = base + i;
    free_.reserve(free_.size() + kSlotChunkSize);
    slot_chunks_.push_back(std::move(chunk));
    for (std::uint32_t i = kSlotChunkSize; i-- > 0;) free_.push_back(base + i);
  }
  JobSlot& slot = At(free_.back());
  free_.pop_back();
  return slot;
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
  if (destroying_) throw Error(0, "asyncjob::Loop::spawn: the loop is being destroyed");
  std::optional<Clock::time_point> deadline;
  if (options.timeout != Clock::duration::zero()) {
    deadline = DeadlineFor(Clock::now(), options.timeout);
  }
  // Everything that allocates comes before the slot is taken, so that a
  // failure leaves the loop as it was.
  JobSlot* slot = nullptr;
  try {
    if (start_queue_.size() == start_queue_.capacity()) {
      start_queue_.reserve(std::max<std::size_t>(64, 2 * start_queue_.capacity()));
    }
    slot = &Allocate();
    if (deadline) deadlines_.Push(slot->index, *deadline);
  } catch (const std::bad_alloc&) {
    if (slot != nullptr) free_.push_back(slot->index);  // within the capacity reserved
    throw Error(0, "asyncjob::Loop::spawn: out of memory");
  }
  slot->id = static_cast<JobId>((next_sequence_++ << kSlotIndexBits) | slot->index);
  slot->state = SlotState::kQueued;
  slot->reason = ReadyReason::kNone;
  task->id = slot->id;
  task->status = JobStatus::kQueued;
  task->loop = owner_;
  slot->task = std::move(task);
  start_queue_.push_back(JobRef{slot->index, slot->generation});
  ++alive_;
  ++queued_;
  ++counters_.spawned;
}

namespace {
// Puts back the entries of `batch` after `done` (a completion callback
// threw while the batch was being worked through), ahead of newer ones.
void Requeue(std::vector<JobRef>& batch, std::size_t done, std::vector<JobRef>& queue) {
  queue.insert(queue.begin(), batch.begin() + static_cast<std::ptrdiff_t>(done + 1), batch.end());
  batch.clear();
}
}  // namespace

void LoopCore::StartQueued() {
  if (start_queue_.empty()) return;
  starting_.swap(start_queue_);
  for (std::size_t i = 0; i < starting_.size(); ++i) {
    JobSlot& slot = At(starting_[i].index);
    if (destroying_) break;
    if (slot.generation != starting_[i].generation || slot.state != SlotState::kQueued) {
      continue;
    }
    try {
      Start(slot);
    } catch (...) {
      Requeue(starting_, i, start_queue_);
      throw;
    }
  }
  starting_.clear();
}

void LoopCore::Start(JobSlot& slot) {
  if (slot.ctx == nullptr) {
    slot.ctx = ASYNC_WAIT_CTX_new();
    if (slot.ctx == nullptr) {
      Finish(slot, JobStatus::kFailed,
             std::make_exception_ptr(Error::FromQueue("ASYNC_WAIT_CTX_new")));
      return;
    }
    ASYNC_WAIT_CTX_set_callback(slot.ctx, &WakeQueue::Callback,
                                wake_queue_.TokenFor(slot.index, slot.generation));
  }
  LoopTask* task = slot.task.get();
  slot.state = SlotState::kRunning;
  task->status = JobStatus::kRunning;
  --queued_;
  ++started_;
  ++running_depth_;
  int ignored = 0;
  JobTask* entry_argument = task;  // what JobTask::Enter expects
  int outcome = ASYNC_start_job(&slot.job, slot.ctx, &ignored, &JobTask::Enter, &entry_argument,
                                sizeof entry_argument);
  --running_depth_;
  if (outcome == ASYNC_NO_JOBS) {
    slot.state = SlotState::kQueued;
    task->status = JobStatus::kQueued;
    ++queued_;
    --started_;
    if (started_ == 0) {
      // No job of ours will finish to make room: waiting would never end.
      Finish(slot, JobStatus::kFailed, std::make_exception_ptr(PoolExhausted()));
    } else {
      pool_waiters_.push_back(JobRef{slot.index, slot.generation});
    }
    return;
  }
  AfterRun(slot, outcome);
}

void LoopCore::Resume(JobSlot& slot) {
  slot.state = SlotState::kRunning;
  slot.task->status = JobStatus::kRunning;
  ++counters_.resumes;
  if (slot.reason == ReadyReason::kEagain) ++counters_.eagain_resumes;
  if (slot.reason == ReadyReason::kPoll) ++counters_.poll_resumes;
  slot.reason = ReadyReason::kNone;
  ++running_depth_;
  int ignored = 0;
  int outcome = ASYNC_start_job(&slot.job, slot.ctx, &ignored, nullptr, nullptr, 0);
  --running_depth_;
  AfterRun(slot, outcome);
}

void LoopCore::AfterRun(JobSlot& slot, int outcome) {
  switch (outcome) {
    case ASYNC_PAUSE:
      slot.state = SlotState::kPaused;
      slot.task->status = JobStatus::kPaused;
      if (destroying_) {
        // The loop was destroyed while this job ran: it goes like the others.
        Cancel(slot, JobStatus::kCancelled);
        return;
      }
      ApplyFdChanges(slot);
      DecideWait(slot);
      return;
    case ASYNC_FINISH:
      slot.job = nullptr;
      Finish(slot, slot.task->error ? JobStatus::kFailed : JobStatus::kSucceeded, slot.task->error);
      return;
    default: {
      // The job could not be started or resumed (no memory for a stack, or
      // an error the thread rules should have prevented).
      std::exception_ptr error = std::make_exception_ptr(Error::FromQueue("ASYNC_start_job"));
      if (slot.job != nullptr) {
        ReleaseFds(slot);
        ++running_depth_;
        asyncjob_cancel_job(&slot.job);
        --running_depth_;
        asyncjob_clear_errors();
        slot.job = nullptr;
      }
      Finish(slot, JobStatus::kFailed, error);
      return;
    }
  }
}

void LoopCore::DecideWait(JobSlot& slot) {
  int status = ASYNC_WAIT_CTX_get_status(slot.ctx);
  if (status == ASYNC_STATUS_EAGAIN) {
    // The async-aware code asks to be resumed soon; the request is consumed.
    ASYNC_WAIT_CTX_set_status(slot.ctx, ASYNC_STATUS_UNSUPPORTED);
    MakeReady(slot, ReadyReason::kEagain);
    return;
  }
  if (slot.unwatched_fds > 0) {
    MakeReady(slot, ReadyReason::kPoll);
    return;
  }
  if (status == ASYNC_STATUS_OK || !slot.fds.empty()) return;  // a wake-up will come
  MakeReady(slot, ReadyReason::kPoll);
}

void LoopCore::MakeReady(JobSlot& slot, ReadyReason reason) {
  if (slot.ready) return;
  slot.ready = true;
  slot.reason = reason;
  ready_.push_back(JobRef{slot.index, slot.generation});
}

void LoopCore::RunReady() {
  if (ready_.empty()) return;
  resuming_.swap(ready_);  // jobs made ready from now on wait for the next iteration
  for (std::size_t i = 0; i < resuming_.size(); ++i) {
    JobSlot& slot = At(resuming_[i].index);
    if (destroying_) break;
    if (slot.generation != resuming_[i].generation || slot.state != SlotState::kPaused) {
      continue;
    }
    slot.ready = false;
    try {
      Resume(slot);
    } catch (...) {
      Requeue(resuming_, i, ready_);
      throw;
    }
  }
  resuming_.clear();
}

// ----- Cancelling from the public class -----

bool LoopCore::CancelById(JobId id) {
  CheckThread("cancel");
  Entry entry(this);
  auto value = static_cast<std::uint64_t>(id);
  auto index = static_cast<std::uint32_t>(value & (kMaxJobSlots - 1));
  if (id == JobId::kNone || index >= SlotCount()) return false;
  JobSlot& slot = At(index);
  if (slot.id != id) return false;
  return Cancel(slot, JobStatus::kCancelled);
}

std::size_t LoopCore::CancelAll() {
  CheckThread("cancel_all");
  Entry entry(this);
  std::size_t count = 0;
  for (std::uint32_t i = 0; i < SlotCount() && !destroying_; ++i) {
    JobSlot& slot = At(i);
    if (slot.state != SlotState::kFree && Cancel(slot, JobStatus::kCancelled)) ++count;
  }
  return count;
}

// ----- Wait fds -----

void LoopCore::ApplyFdChanges(JobSlot& slot) {
  std::size_t added = 0;
  std::size_t deleted = 0;
  if (ASYNC_WAIT_CTX_get_changed_fds(slot.ctx, nullptr, &added, nullptr, &deleted) != 1) return;
  if (added == 0 && deleted == 0) return;
  added_scratch_.resize(added);
  deleted_scratch_.resize(deleted);
  ASYNC_WAIT_CTX_get_changed_fds(slot.ctx, added_scratch_.data(), &added, deleted_scratch_.data(),
                                 &deleted);
  // Deleted first: a job may close an fd and register a new one that got
  // the same number.
  for (std::size_t i = 0; i < deleted; ++i) Unwatch(slot, deleted_scratch_[i]);
  for (std::size_t i = 0; i < added; ++i) Watch(slot, added_scratch_[i]);
}

void LoopCore::Watch(JobSlot& slot, int fd) {
  for (const FdUse& use : slot.fds) {
    if (use.fd == fd) return;
  }
  bool watched = fd_table_.AddWaiter(fd, JobRef{slot.index, slot.generation});
  slot.fds.push_back(FdUse{fd, watched});
  if (!watched) ++slot.unwatched_fds;
}

void LoopCore::Unwatch(JobSlot& slot, int fd) {
  for (std::size_t i = 0; i < slot.fds.size(); ++i) {
    if (slot.fds[i].fd != fd) continue;
    if (slot.fds[i].watched) {
      fd_table_.RemoveWaiter(fd, slot.index);
    } else {
      --slot.unwatched_fds;
    }
    slot.fds[i] = slot.fds.back();
    slot.fds.pop_back();
    return;
  }
}

void LoopCore::ReleaseFds(JobSlot& slot) {
  for (const FdUse& use : slot.fds) {
    if (use.watched) fd_table_.RemoveWaiter(use.fd, slot.index);
  }
  slot.fds.clear();
  slot.unwatched_fds = 0;
}

void LoopCore::HandleFdEvent(int fd) {
  for (const JobRef& waiter : fd_table_.Waiters(fd)) {
    JobSlot& slot = At(waiter.index);
    if (slot.generation != waiter.generation || slot.state != SlotState::kPaused) continue;
    ++counters_.wakeups_fd;
    MakeReady(slot, ReadyReason::kFd);
  }
}

// ----- Callback wake-ups -----

void LoopCore::DrainWakeups() {
  wake_queue_.DrainWakeups([this](std::uint32_t index, std::uint32_t generation) {
    JobSlot& slot = At(index);
    ++counters_.wakeups_callback;
    if (slot.state == SlotState::kFree || slot.generation != generation) {
      ++counters_.wakeups_stale;
      return;
    }
    if (slot.state == SlotState::kPaused) MakeReady(slot, ReadyReason::kCallback);
  });
}

// ----- Timeouts -----

void LoopCore::ExpireTimeouts() {
  if (deadlines_.empty()) return;
  Clock::time_point now = Clock::now();
  while (!deadlines_.empty() && !destroying_) {
    const DeadlineHeap::Entry& earliest = deadlines_.Top();
    if (earliest.deadline > now) return;
    JobSlot& slot = At(earliest.id);
    deadlines_.Remove(slot.index);
    Cancel(slot, JobStatus::kTimedOut);
  }
}

// ----- Iterations -----

bool LoopCore::HasWork() const noexcept { return alive_ > 0 || wake_queue_.has_posted(); }

int LoopCore::ComputeTimeout(int max_wait_ms) const {
  if (!ready_.empty() || !start_queue_.empty() || wake_queue_.has_posted() ||
      wake_queue_.stop_requested()) {
    return 0;
  }
  if (deadlines_.empty()) return max_wait_ms;
  int until_deadline = MillisecondsUntil(deadlines_.Top().deadline, Clock::now());
  return max_wait_ms < 0 ? until_deadline : std::min(max_wait_ms, until_deadline);
}

void LoopCore::Iterate(int timeout_ms, bool wait_when_idle) {
  // Every step may run user code that destroys the loop (destroying_):
  // then nothing more is done.
  ++counters_.iterations;
  wake_queue_.RunPosted();
  if (destroying_) return;
  // Before starting queued jobs: one whose deadline has passed (a negative
  // timeout, or a loop that got to it late) times out without running.
  ExpireTimeouts();
  if (destroying_) return;
  StartQueued();
  if (destroying_) return;
  if (!wait_when_idle && alive_ == 0) timeout_ms = 0;  // nothing left to wait for
  int timeout = ComputeTimeout(timeout_ms);
  // Blocking needs the doorbell: wakers ring it from now on, unless a
  // wake-up came already.
  const bool blocking = timeout != 0 && wake_queue_.PrepareToBlock();
  int ready = 0;
  // Busy (something to run now) with no wait fd to look at: no system call.
  // The doorbell rung meanwhile stays readable for the next blocking wait.
  if (blocking || fd_table_.watching()) {
    ready = epoll_wait(epoll_fd_, events_, kMaxEvents, blocking ? timeout : 0);
    if (blocking) wake_queue_.SetAwake();
    if (ready < 0) {
      if (errno != EINTR) ThrowSystemError("asyncjob::Loop: epoll_wait");
      ready = 0;
    }
  }
  for (int i = 0; i < ready; ++i) {
    int fd = events_[i].data.fd;
    if (fd == wake_queue_.doorbell_fd()) {
      // Before taking the queue: a wake-up pushed after the read rings
      // again, so none is left behind with the doorbell quiet.
      wake_queue_.DrainDoorbell();
    } else {
      HandleFdEvent(fd);
    }
  }
  DrainWakeups();
  wake_queue_.RunPosted();
  if (destroying_) return;
  ExpireTimeouts();
  if (destroying_) return;
  RunReady();
}

std::size_t LoopCore::Run(bool until_stopped) {
  CheckRunnable(until_stopped ? "run_until_stopped" : "run");
  Entry entry(this);
  RunningScope running(in_run_);
  AwakeScope awake(wake_queue_);
  std::uint64_t finished_before = finished_;
  while (!destroying_ && !wake_queue_.TakeStopRequest()) {
    if (!until_stopped && !HasWork()) break;
    Iterate(-1, until_stopped);
  }
  return static_cast<std::size_t>(finished_ - finished_before);
}

bool LoopCore::RunOnce(std::chrono::milliseconds max_wait) {
  CheckRunnable("run_once");
  Entry entry(this);
  RunningScope running(in_run_);
  AwakeScope awake(wake_queue_);
  Iterate(ClampWait(max_wait), true);
  return alive_ > 0;
}

LoopCounters LoopCore::Counters() const noexcept {
  LoopCounters counters = counters_;
  counters.queued = queued_;
  counters.running = running_depth_ > 0 ? 1 : 0;
  counters.paused = started_ - static_cast<std::size_t>(running_depth_ > 0 ? running_depth_ : 0);
  counters.wakeups_coalesced = wake_queue_.coalesced();
  counters.wakeups_callback += counters.wakeups_coalesced;
  counters.eventfd_signals = wake_queue_.wake_signals();
  return counters;
}

}  // namespace detail

}  // namespace asyncjob
