// asyncjob/loop.hpp - an event loop that runs many asyncjob jobs on one thread.
//
//   asyncjob::Loop loop;
//   auto handle = loop.spawn([] {
//     // ... register an fd with asyncjob::current_wait_ctx(), or hand
//     // asyncjob::prepare_wakeup() to another thread, then:
//     asyncjob::pause();
//     return 42;
//   }, asyncjob::SpawnOptions{.timeout = std::chrono::seconds(5)});
//   loop.run();                      // until every job has finished
//   int answer = handle.get();       // or the job's exception
//
// Each job gets a wait context of its own (ASYNC_WAIT_CTX) and is resumed
// when
//   - one of the fds registered in that context becomes readable (the loop
//     watches them with epoll, following ASYNC_WAIT_CTX_get_changed_fds()
//     after every start and resume), or
//   - the context's callback is called, from any thread: the loop installs a
//     callback in every job's context (ASYNC_WAIT_CTX_set_callback()). It
//     costs no allocation and at most one write to the loop's own eventfd for
//     a whole batch of wake-ups. A wake-up that arrives before the job has
//     paused resumes it once it pauses; one that arrives for a job that has
//     since finished is ignored, and so is one that arrives after the loop
//     was destroyed.
//
// After each pause the loop reads the context's status, as OpenSSL's
// async-aware code (engines) expects:
//   ASYNC_STATUS_OK      the code will call the callback: wait for it (and for
//                        the fds, if any);
//   ASYNC_STATUS_EAGAIN  the code asks to be resumed soon: the loop sets the
//                        status back to ASYNC_STATUS_UNSUPPORTED and resumes
//                        the job once it has looked at fds and wake-ups
//                        again (without waiting);
//   anything else        wait for the fds; with none, nothing will wake the
//                        job, so it is polled: resumed in the same way (the
//                        manual's rule for code without wait fds). Code
//                        waiting for its callback sets ASYNC_STATUS_OK first
//                        (prepare_wakeup() does) to avoid being polled.
//
// A woken job is resumed once, however many wake-ups arrived since it last
// ran. Write job code as engines do: after each pause, check whether what it
// waits for has happened and pause again if not. Fds are watched
// level-triggered, so a job consumes the readiness it was woken for (reads
// its eventfd, say) or is resumed again. An fd registered by several jobs
// wakes them all; an fd that epoll cannot watch (a regular file) makes the
// job polled.
//
// Cancellation (cancel(), a timeout, the loop's destruction) unwinds the
// job's stack: destructors and OnCancel actions run, then the cleanup
// routines of fds still set in its wait context. An FdRegistration being
// unwound by a cancellation leaves its fd set, so that this cleanup routine
// runs (and can close it).
//
// Jobs come from the loop thread's asyncjob pool (ASYNC_init_thread limits
// apply). At most 1,024 loops exist in a process at once, each with at most
// 4,194,304 jobs alive.
//
// Thread rules. A Loop belongs to the thread that constructed it: run(),
// spawn(), cancel() and everything else not marked "any thread" must be
// called there (they throw asyncjob::Error otherwise), and the jobs run on
// that thread; the destructor has rules of its own (see ~Loop). stop(), post() and the wait-context
// callbacks may be called from any thread. A JobHandle is used on the loop's thread too; another
// thread may read it only after it has synchronised with the loop thread
// (e.g. after joining it).
//
// Linux only (epoll, eventfd). Link asyncjob::asyncjob_loop.
#ifndef ASYNCJOB_LOOP_HPP_
#define ASYNCJOB_LOOP_HPP_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "asyncjob/async.h"
#include "asyncjob/asyncjob.hpp"

namespace asyncjob {

class Loop;

// Identifies a job spawned on a Loop; never reused by that loop. kNone is
// never the id of a job.
enum class JobId : std::uint64_t { kNone = 0 };

enum class JobStatus : std::uint8_t {
  kQueued,     // spawned; it starts on the loop's next iteration
  kRunning,    // executing right now (seen only from inside the loop thread)
  kPaused,     // started and waiting to be woken
  kSucceeded,  // returned
  kFailed,     // threw: the exception is in its result
  kCancelled,  // cancelled by cancel(), cancel_all() or the loop's destruction
  kTimedOut,   // cancelled by the loop because its timeout expired
};

// True for the final states (succeeded, failed, cancelled, timed out).
constexpr bool is_done(JobStatus status) noexcept { return status >= JobStatus::kSucceeded; }
const char* to_string(JobStatus status) noexcept;

// get() on a job whose timeout expired.
class JobTimedOut : public Error {
 public:
  JobTimedOut() : Error(0, "asyncjob: the job timed out and was cancelled") {}
};

struct SpawnOptions {
  // When non-zero, the loop cancels the job (its stack unwinds, as with
  // cancel()) if it has not finished this long after spawn(), and reports it
  // as kTimedOut. Checked by the loop with millisecond granularity, before
  // it starts queued jobs too: a job whose deadline passed before the loop
  // got to start it times out without running. A negative timeout has
  // expired already: the job times out on the loop's next iteration, never
  // running. A timeout so long that the deadline would lie beyond
  // steady_clock's range (duration::max()) never expires.
  std::chrono::steady_clock::duration timeout{};
};

// Counters of a Loop, from its construction (the first three: right now).
struct LoopCounters {
  std::size_t queued = 0;   // spawned, not started yet
  std::size_t paused = 0;   // started, waiting to be woken
  std::size_t running = 0;  // 1 while one of the loop's jobs executes, else 0

  std::uint64_t spawned = 0;
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;     // finished by throwing
  std::uint64_t cancelled = 0;  // by cancel(), cancel_all() or destruction
  std::uint64_t timed_out = 0;  // cancelled by their timeout

  // Calls of the wait contexts' callbacks that reached the loop, including
  // coalesced and stale ones.
  std::uint64_t wakeups_callback = 0;
  // Readiness events of wait fds that woke a paused job.
  std::uint64_t wakeups_fd = 0;
  // Callback calls that found a wake-up of the same job already queued and
  // were merged into it.
  std::uint64_t wakeups_coalesced = 0;
  // Callback wake-ups for jobs that had finished (or were cancelled) by the
  // time the loop saw them: ignored.
  std::uint64_t wakeups_stale = 0;
  // Writes to the loop's eventfd made by callbacks (at most one per batch:
  // only when the wake-up queue was empty).
  std::uint64_t eventfd_signals = 0;

  std::uint64_t resumes = 0;         // every resume of a paused job
  std::uint64_t eagain_resumes = 0;  // of which asked for by ASYNC_STATUS_EAGAIN
  std::uint64_t poll_resumes = 0;    // of which polls of jobs with nothing to wait on
  std::uint64_t iterations = 0;      // loop iterations
};

// Inside a job: wakes that job from any thread by calling its wait
// context's callback. Copyable; calling it after the job finished, or after
// its loop was destroyed, does nothing.
class Waker {
 public:
  Waker() = default;
  Waker(ASYNC_callback_fn callback, void* argument) noexcept
      : callback_(callback), argument_(argument) {}
  // Any thread. Returns the callback's result (1 for a Loop's callback).
  int operator()() const { return callback_ != nullptr ? callback_(argument_) : 0; }
  explicit operator bool() const noexcept { return callback_ != nullptr; }

 private:
  ASYNC_callback_fn callback_ = nullptr;
  void* argument_ = nullptr;
};

// Inside a job whose wait context has a callback (every job of a Loop):
// announces that the job will be woken by its callback (sets the status to
// ASYNC_STATUS_OK, as engines do) and returns a Waker for it. Hand the waker
// to whoever completes the work, then pause(). Throws Error outside a job or
// when the context has no callback.
inline Waker prepare_wakeup() {
  WaitCtxRef ctx = current_wait_ctx();
  ASYNC_callback_fn callback = nullptr;
  void* argument = nullptr;
  if (!ctx || ASYNC_WAIT_CTX_get_callback(ctx.get(), &callback, &argument) != 1) {
    throw Error(0, "asyncjob::prepare_wakeup: the current job's wait context has no callback");
  }
  ctx.set_status(ASYNC_STATUS_OK);
  return Waker(callback, argument);
}

namespace detail {

// A job of a Loop: a JobTask (its callable and exception, see
// <asyncjob/asyncjob.hpp>) with its id, state and completion callback.
// Shared by the loop and the job's handles.
struct LoopTask : JobTask {
  // Calls the completion callback, if any (loop thread, job finished).
  virtual void Complete(const std::shared_ptr<LoopTask>& self) = 0;

  JobId id = JobId::kNone;
  JobStatus status = JobStatus::kQueued;
  Loop* loop = nullptr;  // while the job is alive
};

// A LoopTask with its value: what a JobHandle<T> refers to.
template <class T>
using LoopTaskOf = JobTaskOf<T, LoopTask>;

template <class T, class F, class Done>
struct LoopTaskFor;

}  // namespace detail

// The caller's view of a job spawned on a Loop. Copyable (copies refer to
// the same job); empty when default-constructed. Loop thread only (see the
// thread rules above). A handle may outlive the job and the loop.
template <class T>
class JobHandle {
 public:
  JobHandle() = default;

  // An empty handle has id kNone and reports kCancelled.
  explicit operator bool() const noexcept { return task_ != nullptr; }
  JobId id() const noexcept { return task_ ? task_->id : JobId::kNone; }
  JobStatus status() const noexcept { return task_ ? task_->status : JobStatus::kCancelled; }
  bool done() const noexcept { return is_done(status()); }

  // The result of a finished job: its value (moved out: call once), or its
  // exception rethrown; JobTimedOut or JobWasCancelled for a job that was
  // cancelled. Throws Error when the job has not finished (or the handle is
  // empty).
  T get() {
    if (!task_) throw Error(0, "asyncjob::JobHandle::get: empty handle");
    switch (task_->status) {
      case JobStatus::kSucceeded:
        if constexpr (std::is_void_v<T>) {
          return;
        } else {
          return std::move(*task_->value);
        }
      case JobStatus::kFailed:
        std::rethrow_exception(task_->error);
      case JobStatus::kTimedOut:
        throw JobTimedOut();
      case JobStatus::kCancelled:
        throw JobWasCancelled();
      default:
        throw Error(0, "asyncjob::JobHandle::get: the job has not finished");
    }
  }

  // The exception a failed job threw; null in every other state.
  std::exception_ptr exception() const noexcept {
    return task_ && task_->status == JobStatus::kFailed ? task_->error : nullptr;
  }

  // Cancels the job if it has not finished: a queued job never starts, a
  // paused one unwinds its stack (destructors and cancel hooks run, its fds'
  // cleanup routines run). Its completion callback runs before this
  // returns. Returns true when this call cancelled it; false when it had
  // finished, or when it is the job calling this (a job cannot cancel
  // itself while it runs). Loop thread only.
  bool cancel();

 private:
  friend class Loop;
  template <class, class, class>
  friend struct detail::LoopTaskFor;
  explicit JobHandle(std::shared_ptr<detail::LoopTaskOf<T>> task) : task_(std::move(task)) {}
  std::shared_ptr<detail::LoopTaskOf<T>> task_;
};

namespace detail {

// A LoopTaskOf with its callable and completion callback (Done is
// std::nullptr_t when there is none).
template <class T, class F, class Done>
struct LoopTaskFor final : JobTaskFor<T, F, LoopTask> {
  LoopTaskFor(F&& fn, Done&& done)
      : JobTaskFor<T, F, LoopTask>(std::move(fn)), done_(std::move(done)) {}
  void Complete([[maybe_unused]] const std::shared_ptr<LoopTask>& self) override {
    if constexpr (!std::is_same_v<Done, std::nullptr_t>) {
      JobHandle<T> handle(std::static_pointer_cast<LoopTaskOf<T>>(self));
      done_(handle);
    }
  }
  Done done_;
};

class LoopCore;

template <class F>
struct IsStdFunction : std::false_type {};
template <class R, class... Args>
struct IsStdFunction<std::function<R(Args...)>> : std::true_type {};

// Whether a callable (decayed) is a null function pointer or an empty
// std::function: calling it would crash or throw inside the job.
template <class F>
bool IsNullCallable(const F& fn) noexcept {
  if constexpr (std::is_pointer_v<F> || IsStdFunction<F>::value) {
    return fn == nullptr;
  } else {
    return false;
  }
}

}  // namespace detail

// The event loop. Not copyable or movable.
class Loop {
 public:
  // Creates the loop's epoll instance and eventfd; the calling thread
  // becomes the loop's thread. Throws std::system_error when they cannot be
  // created, Error when 1024 loops already exist in the process.
  Loop();
  // Cancels every job that has not finished (paused ones unwind their
  // stacks; completion callbacks are NOT called, handles report
  // kCancelled), drops the functions still posted, frees the wait contexts
  // and closes the loop's fds. Wait-context callbacks called afterwards do
  // nothing.
  //
  // The loop may be destroyed by code it runs: a completion callback, a
  // posted function, a job, or a destructor run by a job's cancellation.
  // Then every job is cancelled at once except the ones executing (the job
  // that destroyed it, and a job that cancelled that one), which are
  // cancelled as soon as they pause (or end when they return); the loop
  // calls nothing more of the user's, and its memory and fds are released
  // when the run(), run_once(), cancel() or cancel_all() call in progress
  // returns (or throws). That call must not touch the Loop afterwards, and
  // neither may the code that destroyed it.
  //
  // Thread rules: on the loop's thread, always. On another thread only when
  // no job has started (queued ones are cancelled, as above) and the loop
  // is not running: a started job can only be cancelled on the loop's
  // thread, so destroying the loop elsewhere with one paused (or while it
  // runs) prints "asyncjob: asyncjob::Loop destroyed on thread N but M of
  // its jobs are paused on thread T, ..." and aborts rather than leak the
  // jobs, their fds and that thread's pool. Call cancel_all() on the loop's
  // thread before handing the loop to another thread to destroy.
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Spawns a job running fn() (a callable taking no arguments, copied or
  // moved into the job) and returns its handle. The job starts on the
  // loop's next iteration, with a wait context of its own. When `on_done`
  // is given it is called as on_done(JobHandle<T>&) on the loop thread as
  // soon as the job has finished, whatever the outcome (except when the
  // loop is destroyed); exceptions it throws propagate out of run() (the
  // loop stays consistent: run it again to go on).
  // May be called from inside a job or a completion callback. Loop thread
  // only (throws Error elsewhere); throws Error beyond 4,194,304 jobs alive
  // at once, when memory for the loop's books runs out (nothing changed),
  // while the loop is being destroyed, and for a null or empty fn or
  // on_done (a null function pointer, an empty std::function). If the
  // thread's job pool is limited (ASYNC_init_thread) and exhausted, the job
  // stays queued until another job finishes; with no job alive to finish,
  // it fails with PoolExhausted.
  template <class F>
  auto spawn(F&& fn, SpawnOptions options = {})
      -> JobHandle<std::invoke_result_t<std::decay_t<F>&>> {
    return spawn(std::forward<F>(fn), nullptr, options);
  }
  template <class F, class Done>
  requires(!std::is_same_v<std::remove_cvref_t<Done>, SpawnOptions>) auto spawn(
      F&& fn, Done&& on_done, SpawnOptions options = {})
      -> JobHandle<std::invoke_result_t<std::decay_t<F>&>> {
    using T = std::invoke_result_t<std::decay_t<F>&>;
    static_assert(!std::is_reference_v<T>,
                  "a job's result is kept until get(): return a value, a pointer or a "
                  "std::reference_wrapper, not a reference");
    static_assert(std::is_null_pointer_v<std::decay_t<Done>> ||
                      std::is_invocable_v<std::decay_t<Done>&, JobHandle<T>&>,
                  "on_done must be callable as on_done(asyncjob::JobHandle<T>&)");
    if (detail::IsNullCallable<std::decay_t<F>>(fn)) {
      throw Error(0, "asyncjob::Loop::spawn: the job's function is null or empty");
    }
    if constexpr (!std::is_null_pointer_v<std::decay_t<Done>>) {
      if (detail::IsNullCallable<std::decay_t<Done>>(on_done)) {
        throw Error(0, "asyncjob::Loop::spawn: on_done is null or empty");
      }
    }
    using Task = detail::LoopTaskFor<T, std::decay_t<F>, std::decay_t<Done>>;
    auto task = std::make_shared<Task>(std::decay_t<F>(std::forward<F>(fn)),
                                       std::decay_t<Done>(std::forward<Done>(on_done)));
    Submit(task, options);
    return JobHandle<T>(std::move(task));
  }

  // Cancels the job with this id if it is alive (see JobHandle::cancel()).
  // Returns true when this call cancelled it. Loop thread.
  bool cancel(JobId id);
  // Cancels every job alive (except one calling this); their completion
  // callbacks run. Returns how many were cancelled. Loop thread.
  std::size_t cancel_all();

  // Runs iterations until no job is left (queued or paused) and nothing
  // posted is pending, or until stop() is called, or until the loop is
  // destroyed by code it runs (see ~Loop). Returns the number of jobs
  // that finished meanwhile. A paused job nothing will wake keeps it waiting:
  // give jobs a timeout, or stop() or cancel from elsewhere. Loop thread, not
  // from inside a job or reentrantly, e.g. from a completion callback or a
  // posted function of the running loop (throws Error); std::system_error if
  // epoll_wait fails.
  std::size_t run();
  // Like run(), but keeps waiting while no job is alive, until stop() is
  // called (for servers fed by post()).
  void run_until_stopped();
  // Runs one iteration: starts queued jobs, waits up to max_wait (negative:
  // without limit) for an fd, a callback wake-up, a timeout or a post (not
  // at all when a job is ready to resume), then resumes every job that was
  // woken and cancels those whose timeout expired. Returns whether any job
  // is still alive. Same rules as run().
  bool run_once(std::chrono::milliseconds max_wait = std::chrono::milliseconds::zero());

  // Any thread: makes run() or run_until_stopped() return once its current
  // iteration ends (when neither is running, the next call returns at
  // once). run_once() does not wait while a stop is pending. Jobs stay
  // paused; running the loop again continues them. The loop's thread may
  // destroy the loop as soon as run() returns, even while the stop() that
  // ended it has not returned yet on its own thread.
  void stop() noexcept;
  // Any thread: runs fn on the loop thread during its next iteration (and
  // wakes the loop to do so). fn may spawn jobs. Exceptions thrown by fn
  // propagate out of run(). Functions still pending when the loop is
  // destroyed are discarded. As with stop(), fn may end the run or destroy
  // the loop while the post() that queued it has not returned yet.
  void post(std::function<void()> fn);

  // Jobs alive: queued plus started and unfinished. Loop thread.
  std::size_t size() const noexcept;
  // A snapshot of the counters. Loop thread.
  LoopCounters counters() const noexcept;

 private:
  void Submit(std::shared_ptr<detail::LoopTask> task, const SpawnOptions& options);
  std::unique_ptr<detail::LoopCore> core_;
};

template <class T>
bool JobHandle<T>::cancel() {
  if (!task_ || task_->loop == nullptr) return false;
  return task_->loop->cancel(task_->id);
}

}  // namespace asyncjob

#endif  // ASYNCJOB_LOOP_HPP_
