// loop_public.cc - the public asyncjob::Loop (include/asyncjob/loop.hpp):
// each method hands over to the LoopCore it owns.
#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

#include "asyncjob/loop.hpp"
#include "loop/loop_core.h"

namespace asyncjob {

const char* to_string(JobStatus status) noexcept {
  switch (status) {
    case JobStatus::kQueued:
      return "queued";
    case JobStatus::kRunning:
      return "running";
    case JobStatus::kPaused:
      return "paused";
    case JobStatus::kSucceeded:
      return "succeeded";
    case JobStatus::kFailed:
      return "failed";
    case JobStatus::kCancelled:
      return "cancelled";
    case JobStatus::kTimedOut:
      return "timed out";
  }
  return "unknown";
}

Loop::Loop() : core_(std::make_unique<detail::LoopCore>(this)) {}
Loop::~Loop() { detail::LoopCore::Destroy(core_); }

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
