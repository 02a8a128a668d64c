// finish.cc - how a loop's jobs end (loop_core.h): finished, failed,
// cancelled, timed out; their completion callbacks, and their slots, fds and
// wake-up nodes given back.
#include <exception>
#include <memory>
#include <utility>

#include "asyncjob/async.h"
#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"
#include "loop/loop_core.h"

namespace asyncjob::detail {

// ----- Finishing and cancelling -----

void LoopCore::Finish(JobSlot& slot, JobStatus status, std::exception_ptr error) {
  bool was_queued = slot.state == SlotState::kQueued;
  ReleaseFds(slot);
  if (deadlines_.Contains(slot.index)) deadlines_.Remove(slot.index);
  ASYNC_WAIT_CTX* ctx = std::exchange(slot.ctx, nullptr);
  std::shared_ptr<LoopTask> task = std::move(slot.task);
  slot.job = nullptr;
  slot.state = SlotState::kFree;
  slot.ready = false;
  slot.reason = ReadyReason::kNone;
  slot.id = JobId::kNone;
  slot.generation = NextGeneration(slot.generation);
  free_.push_back(slot.index);
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
    case JobStatus::kSucceeded:
      ++counters_.succeeded;
      break;
    case JobStatus::kFailed:
      ++counters_.failed;
      break;
    case JobStatus::kCancelled:
      ++counters_.cancelled;
      break;
    case JobStatus::kTimedOut:
      ++counters_.timed_out;
      break;
    default:
      break;
  }
  ++finished_;
  // A job's stack went back to the pool: jobs waiting for one may start.
  if (!was_queued && !pool_waiters_.empty() && !destroying_) {
    start_queue_.insert(start_queue_.end(), pool_waiters_.begin(), pool_waiters_.end());
    pool_waiters_.clear();
  }
  if (!destroying_) task->Complete(task);
}

bool LoopCore::Cancel(JobSlot& slot, JobStatus status) {
  switch (slot.state) {
    case SlotState::kFree:
    case SlotState::kRunning:
      return false;
    case SlotState::kQueued:
      Finish(slot, status);
      return true;
    case SlotState::kPaused:
      break;
  }
  // Stop watching the fds while they are still open: the cancellation runs
  // their cleanup routines, which usually close them.
  ReleaseFds(slot);
  slot.state = SlotState::kRunning;
  slot.task->status = JobStatus::kRunning;
  ++running_depth_;
  int cancelled = asyncjob_cancel_job(&slot.job);
  --running_depth_;
  if (cancelled != 1) {
    // Only a job paused on this thread can be cancelled, and ours are.
    asyncjob_clear_errors();
    slot.state = SlotState::kPaused;
    slot.task->status = JobStatus::kPaused;
    return false;
  }
  Finish(slot, status);
  return true;
}

}  // namespace asyncjob::detail
