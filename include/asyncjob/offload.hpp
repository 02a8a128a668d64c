// asyncjob/offload.hpp - a worker-thread "accelerator" for async jobs.
//
// asyncjob::offload::Engine is what an async-capable engine or provider does
// with a hardware accelerator, with worker threads standing in for the
// device: code running inside a job submits a task, the job pauses, a worker
// runs the task, and the completion wakes the job through its wait context.
//
//   asyncjob::offload::Engine engine({.workers = 2, .queue_capacity = 256});
//   // inside a job (or not):
//   int signature_length = 0;
//   engine.run([&] { signature_length = expensive_sign(...); });
//
// Notification follows OpenSSL's engine conventions:
//   - If the job's wait context has a callback, the engine sets the status
//     to ASYNC_STATUS_OK when the task is accepted and calls the callback
//     (from the worker thread) when it completes, through the context
//     (asyncjob_wait_ctx_call_callback()): if the owner has freed the
//     context meanwhile, from another thread than the job's, nothing is
//     called and the job waits for its own thread to resume or cancel it.
//   - Otherwise it registers one eventfd per wait context (once, under the
//     engine's key, with a cleanup routine that closes it when the context is
//     freed), makes it readable on completion, and drains it after resume.
//   - With no wait context at all, the owner has to poll: the job simply
//     pauses until the task is done.
//   - When the submission queue is full the engine sets ASYNC_STATUS_EAGAIN,
//     wakes the job itself, pauses, and submits again when resumed.
//   - A spurious or early resume (the task not done yet) is harmless: the job
//     pauses again.
//   - If the job is cancelled while its task is queued, the task is
//     withdrawn; while it runs, cancellation waits for it to finish. The
//     same happens when the job is given up without an unwind (its wait
//     context freed while it cannot be unwound, or its thread exiting with
//     it paused): the engine lets go of the request on the job's stack
//     before that stack is released, and wakes nobody.
//   - Completion batching (Options::completion_batch_window, off by
//     default): under load, a worker may hold back the wake-ups of finished
//     tasks for a few microseconds while it runs the next queued ones, so
//     that one wake-up of the owner's event loop covers several completions,
//     as a network card coalesces its interrupts.
// Outside a job, or where the job cannot pause (pausing blocked, or the job
// is being cancelled), the task runs inline on the calling thread.
//
// fork(): the child of a process with engines gets new workers for each of
// them (a forked child has only the thread that forked), so that a server
// that loads its engine and then forks its workers (HAProxy's master-worker
// and daemon modes) keeps offloading in the children. Tasks queued at the
// fork run in the child too; a task a worker was running at that moment is
// not finished in the child. The constructor returns only once every worker
// runs (a thread still starting may hold an allocator lock that a child
// forked at that instant would inherit locked), so forking right after it
// is safe.
//
// Out of memory while queueing (the queue grows as needed), or when the job
// cannot be given a cancel hook, the task runs inline too: run() itself
// never fails.
//
// Thread rules: run() may be called from any thread. The Engine must
// outlive every run() in progress, including those of jobs left paused in
// it until they end, are cancelled or given up (their cancel hook, run when
// a thread exits with them paused or their context is freed, uses the
// engine); its destructor finishes queued tasks and joins the workers.
#ifndef ASYNCJOB_OFFLOAD_HPP_
#define ASYNCJOB_OFFLOAD_HPP_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncjob/async.h"

namespace asyncjob::offload {

struct Options {
  // Worker threads: below 1 means 1; above Engine::kMaxWorkers is refused.
  int workers = 2;
  // Submissions waiting for a worker: 0 means 1; any larger value is a
  // limit only (the queue grows as needed, never allocated up front).
  std::size_t queue_capacity = 1024;
  // How long a finished task's wake-up may be held back so that it goes out
  // with those of the tasks finishing after it. 0 (the default): every job
  // is woken as soon as its task is done. Otherwise a wake-up is held only
  // while more tasks are queued and the engine's recent tasks take less
  // than the window; the held wake-ups go out together when the queue runs
  // empty, or when the next completion is not expected within the window
  // (so a wake-up waits about the window at most, longer only when a task
  // takes much longer than the recent ones). A job that is cancelled, or
  // resumed anyway, while its wake-up is held is taken off the batch.
  // Negative values mean 0.
  std::chrono::microseconds completion_batch_window{0};
};

struct Counters {
  std::uint64_t submitted = 0;         // tasks handed to workers
  std::uint64_t completed = 0;         // of those, finished
  std::uint64_t inline_runs = 0;       // tasks run on the caller's thread
  std::uint64_t eagain_retries = 0;    // submissions refused by a full queue
  std::uint64_t spurious_resumes = 0;  // resumes before the task was done
  std::uint64_t withdrawn = 0;         // queued tasks withdrawn by cancellation
  std::uint64_t batched_wakeups = 0;   // wake-ups held back, then sent with others
  std::uint64_t in_flight = 0;         // submitted, not yet completed
};

class Engine {
 public:
  // More workers than any accelerator stand-in needs; also well below what
  // a process can start (each costs a thread and its stack).
  static constexpr int kMaxWorkers = 1024;

  // Starts the workers. Throws std::system_error when it cannot: with
  // std::errc::invalid_argument for more than kMaxWorkers workers, with the
  // thread library's error (std::errc::resource_unavailable_try_again
  // typically) when a worker thread cannot be created, with
  // std::errc::not_enough_memory when out of memory. The workers already
  // started are stopped and joined before it throws.
  explicit Engine(Options options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs task() on a worker while the calling job is paused, or inline
  // where the caller cannot pause. Returns once task() has returned. An
  // exception thrown by task() on a worker is rethrown here, in the job,
  // once it has been resumed.
  template <class F>
  void run(F&& task) {
    auto invoke = [](void* callable) { (*static_cast<std::remove_reference_t<F>*>(callable))(); };
    Run(invoke, &task);
  }

  Counters counters() const;

  // The wait-fd key this engine registers its eventfds under.
  const void* key() const noexcept { return this; }

 private:
  struct Request;
  enum class Submitted { kQueued, kQueueFull, kOutOfMemory };
  void Run(void (*invoke)(void*), void* callable);
  void RunInline(void (*invoke)(void*), void* callable);
  Submitted Submit(Request* request);
  void StopWorkers() noexcept;
  static void Withdraw(void* request);
  void WorkerLoop();
  void StartWorkers();
  // Completion batching (Options::completion_batch_window); the engine's
  // mutex is held.
  void Finish(Request* request) noexcept;
  bool ShouldHold(const Request* request, std::chrono::steady_clock::time_point now) const noexcept;
  void Hold(Request* request, std::chrono::steady_clock::time_point now) noexcept;
  void Unhold(Request* request) noexcept;
  void ReleaseHeld() noexcept;
  friend struct ForkHandlers;  // offload.cc

  Options options_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable request_done_;
  std::deque<Request*> queue_;
  std::vector<std::thread> workers_;
  // Workers that have entered their loop (StartWorkers() waits for all).
  std::size_t workers_running_ = 0;
  bool stopping_ = false;
  // Finished tasks whose wake-ups are held back, oldest first (an intrusive
  // list through the requests), and when the oldest was held.
  Request* held_first_ = nullptr;
  Request* held_last_ = nullptr;
  std::chrono::steady_clock::time_point held_since_{};
  // A moving average of how long the workers' tasks take, in nanoseconds.
  std::int64_t task_nanoseconds_ = 0;
  std::atomic<std::uint64_t> submitted_{0};
  std::atomic<std::uint64_t> completed_{0};
  std::atomic<std::uint64_t> inline_runs_{0};
  std::atomic<std::uint64_t> eagain_retries_{0};
  std::atomic<std::uint64_t> spurious_resumes_{0};
  std::atomic<std::uint64_t> withdrawn_{0};
  std::atomic<std::uint64_t> batched_wakeups_{0};
};

}  // namespace asyncjob::offload

#endif  // ASYNCJOB_OFFLOAD_HPP_
