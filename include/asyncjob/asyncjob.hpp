// asyncjob/asyncjob.hpp - the C++ API of asyncjob.
//
// A thin, header-only layer over the C API (<asyncjob/async.h>): jobs started
// from any callable with a typed result, exceptions carried out of jobs,
// cancellation that unwinds a paused job's stack, and RAII owners for wait
// contexts, fd registrations, pause blocks and cancel hooks.
//
//   asyncjob::WaitCtx ctx;
//   auto job = asyncjob::start(ctx, [&] {
//     auto registration = asyncjob::current_wait_ctx().register_fd(&key, fd);
//     asyncjob::pause();                      // until the loop resumes us
//     return std::string("done");
//   });
//   while (!job.finished()) { wait_for(ctx.fds()); job.resume(); }
//   std::string result = job.get();           // or the job's exception
//
// A job started here is an ordinary ASYNC_JOB: C code inside it (an engine)
// may call ASYNC_pause_job(), and C++ code inside a job started through the
// C API may use asyncjob::pause() and the RAII types.
//
// Thread rules are those of the C API: a job is resumed, cancelled and
// destroyed on the thread that started it.
#ifndef ASYNCJOB_ASYNCJOB_HPP_
#define ASYNCJOB_ASYNCJOB_HPP_

#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "asyncjob/async.h"

namespace asyncjob {

// ----- Errors -----

// A failed call of the C API, with the error-queue entry it left.
class Error : public std::runtime_error {
 public:
  Error(unsigned long code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  unsigned long code() const noexcept { return code_; }
  int reason() const noexcept { return ASYNCJOB_ERR_GET_REASON(code_); }

  // Pops the newest entry of this thread's error queue into an Error whose
  // message starts with `operation`.
  static Error FromQueue(const char* operation) {
    const char* text = nullptr;
    unsigned long code = asyncjob_peek_last_error(&text);
    std::string message =
        std::string(operation) + ": " + (code != 0 && text != nullptr ? text : "failed");
    asyncjob_clear_errors();
    return Error(code, message);
  }

 private:
  unsigned long code_;
};

// start() found this thread's pool at its max_size: retry once a job ends.
class PoolExhausted : public Error {
 public:
  PoolExhausted() : Error(0, "asyncjob: the job pool is exhausted (ASYNC_NO_JOBS)") {}
};

// get() on a job that was cancelled.
class JobWasCancelled : public Error {
 public:
  JobWasCancelled() : Error(0, "asyncjob: the job was cancelled") {}
};

// ----- Inside a job -----

// Returns control to whoever started or resumed the current job. Outside a
// job, or while pausing is blocked, does nothing.
inline void pause() { ASYNC_pause_job(); }

inline ASYNC_JOB* current_job() noexcept { return ASYNC_get_current_job(); }
inline bool in_job() noexcept { return ASYNC_get_current_job() != nullptr; }

// True while the current job is being cancelled. Code that must catch every
// exception inside a job writes `catch (...) { if (cancelling()) throw; ... }`.
inline bool cancelling() noexcept { return asyncjob_is_cancelling() != 0; }

// Blocks pausing of the current job for its lifetime (nestable), e.g. while
// a lock is held.
class PauseBlocker {
 public:
  PauseBlocker() noexcept { ASYNC_block_pause(); }
  ~PauseBlocker() { ASYNC_unblock_pause(); }
  PauseBlocker(const PauseBlocker&) = delete;
  PauseBlocker& operator=(const PauseBlocker&) = delete;
};

// Runs a callable if the current job is cancelled while this object lives,
// before the job's stack unwinds (e.g. to withdraw a request submitted to a
// device); also if the job, paused, is given up without an unwind (its wait
// context freed while it cannot be unwound, or its thread exiting): then
// from outside the job, before its stack is released (asyncjob_add_cancel_hook()).
// Must be created inside a job; throws Error otherwise. An action
// that throws cannot stop the cancellation: its exception is dropped and
// reported on the error queue (ASYNCJOB_R_CANCEL_HOOK_THREW), the other
// actions still run and the stack still unwinds. One created while the job
// is being cancelled (in a destructor on the unwind path) never runs.
class OnCancel {
 public:
  explicit OnCancel(std::function<void()> action) : action_(std::move(action)) {
    if (asyncjob_add_cancel_hook(&Run, this) != 1) throw Error::FromQueue("asyncjob::OnCancel");
  }
  ~OnCancel() { asyncjob_remove_cancel_hook(&Run, this); }
  OnCancel(const OnCancel&) = delete;
  OnCancel& operator=(const OnCancel&) = delete;

 private:
  static void Run(void* self) { static_cast<OnCancel*>(self)->action_(); }
  std::function<void()> action_;
};

// ----- Wait contexts -----

// A wait fd registered in a wait context; clears it (without running its
// cleanup routine, as ASYNC_WAIT_CTX_clear_fd does) when destroyed.
class FdRegistration {
 public:
  FdRegistration() = default;
  FdRegistration(ASYNC_WAIT_CTX* ctx, const void* key) noexcept : ctx_(ctx), key_(key) {}
  FdRegistration(FdRegistration&& other) noexcept
      : ctx_(std::exchange(other.ctx_, nullptr)), key_(other.key_) {}
  FdRegistration& operator=(FdRegistration&& other) noexcept {
    if (this != &other) {
      clear();
      ctx_ = std::exchange(other.ctx_, nullptr);
      key_ = other.key_;
    }
    return *this;
  }
  // Clears the fd, except while the job is being cancelled: the wait
  // context then runs the fd's cleanup routine itself (clearing it first
  // would skip that routine and leak the fd).
  ~FdRegistration() {
    if (asyncjob_is_cancelling() != 0)
      release();
    else
      clear();
  }

  bool active() const noexcept { return ctx_ != nullptr; }
  const void* key() const noexcept { return key_; }
  // Clears the fd now.
  void clear() noexcept {
    if (ctx_ != nullptr) ASYNC_WAIT_CTX_clear_fd(std::exchange(ctx_, nullptr), key_);
  }
  // Stops managing the registration: the fd stays set.
  void release() noexcept { ctx_ = nullptr; }

 private:
  ASYNC_WAIT_CTX* ctx_ = nullptr;
  const void* key_ = nullptr;
};

// Fds added and deleted since the job last resumed.
struct FdChanges {
  std::vector<OSSL_ASYNC_FD> added;
  std::vector<OSSL_ASYNC_FD> deleted;
};

// Non-owning view of an ASYNC_WAIT_CTX with C++ accessors.
class WaitCtxRef {
 public:
  WaitCtxRef() = default;
  explicit WaitCtxRef(ASYNC_WAIT_CTX* ctx) noexcept : ctx_(ctx) {}
  ASYNC_WAIT_CTX* get() const noexcept { return ctx_; }
  explicit operator bool() const noexcept { return ctx_ != nullptr; }

  using FdCleanup = void (*)(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD, void*);
  // Registers fd under key; throws Error on failure (bad fd, key in use).
  [[nodiscard]] FdRegistration register_fd(const void* key, OSSL_ASYNC_FD fd,
                                           FdCleanup cleanup = nullptr,
                                           void* custom_data = nullptr) const {
    if (ASYNC_WAIT_CTX_set_wait_fd(ctx_, key, fd, custom_data, cleanup) != 1) {
      throw Error::FromQueue("ASYNC_WAIT_CTX_set_wait_fd");
    }
    return FdRegistration(ctx_, key);
  }
  // The fd registered under key, if any.
  std::optional<OSSL_ASYNC_FD> fd(const void* key) const {
    OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
    if (ASYNC_WAIT_CTX_get_fd(ctx_, key, &fd, nullptr) != 1) return std::nullopt;
    return fd;
  }
  std::vector<OSSL_ASYNC_FD> fds() const {
    size_t count = 0;
    if (ASYNC_WAIT_CTX_get_all_fds(ctx_, nullptr, &count) != 1) {
      throw Error::FromQueue("ASYNC_WAIT_CTX_get_all_fds");
    }
    std::vector<OSSL_ASYNC_FD> result(count);
    ASYNC_WAIT_CTX_get_all_fds(ctx_, result.data(), &count);
    result.resize(count);
    return result;
  }
  FdChanges changes() const {
    size_t added = 0;
    size_t deleted = 0;
    if (ASYNC_WAIT_CTX_get_changed_fds(ctx_, nullptr, &added, nullptr, &deleted) != 1) {
      throw Error::FromQueue("ASYNC_WAIT_CTX_get_changed_fds");
    }
    FdChanges changes{std::vector<OSSL_ASYNC_FD>(added), std::vector<OSSL_ASYNC_FD>(deleted)};
    ASYNC_WAIT_CTX_get_changed_fds(ctx_, changes.added.data(), &added, changes.deleted.data(),
                                   &deleted);
    return changes;
  }
  void set_callback(ASYNC_callback_fn callback, void* argument) const {
    ASYNC_WAIT_CTX_set_callback(ctx_, callback, argument);
  }
  int status() const noexcept { return ASYNC_WAIT_CTX_get_status(ctx_); }
  void set_status(int status) const noexcept { ASYNC_WAIT_CTX_set_status(ctx_, status); }

 protected:
  ASYNC_WAIT_CTX* ctx_ = nullptr;
};

// Owns an ASYNC_WAIT_CTX (freed, with its fds' cleanup routines, on
// destruction).
class WaitCtx : public WaitCtxRef {
 public:
  WaitCtx() : WaitCtxRef(ASYNC_WAIT_CTX_new()) {
    if (ctx_ == nullptr) throw Error::FromQueue("ASYNC_WAIT_CTX_new");
  }
  WaitCtx(WaitCtx&& other) noexcept : WaitCtxRef(std::exchange(other.ctx_, nullptr)) {}
  WaitCtx& operator=(WaitCtx&& other) noexcept {
    if (this != &other) {
      ASYNC_WAIT_CTX_free(ctx_);
      ctx_ = std::exchange(other.ctx_, nullptr);
    }
    return *this;
  }
  ~WaitCtx() { ASYNC_WAIT_CTX_free(ctx_); }
  // Gives up ownership.
  ASYNC_WAIT_CTX* release() noexcept { return std::exchange(ctx_, nullptr); }
};

// The wait context of the current job (empty outside a job or for a job
// started without one).
inline WaitCtxRef current_wait_ctx() noexcept {
  ASYNC_JOB* job = ASYNC_get_current_job();
  return WaitCtxRef(job != nullptr ? ASYNC_get_wait_ctx(job) : nullptr);
}

// ----- Jobs -----

namespace detail {

template <class T>
using Stored = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

// What a job started from C++ runs: a callable, and the exception it threw.
// Enter() is the entry function handed to ASYNC_start_job(); it calls Run()
// on the job's stack. Job<T> owns one; the event loop's task
// (<asyncjob/loop.hpp>) builds on it.
struct JobTask {
  virtual ~JobTask() = default;
  // Calls the callable and keeps its value (see JobTaskFor).
  virtual void Run() = 0;
  std::exception_ptr error;
  // Set by an owner that gave up on the job while it could not be
  // cancelled (see Job<T>::~Job): the task then deletes itself when the
  // job ends, should anyone resume it.
  bool orphaned = false;
  // Set when the job has ended, however: its owner can tell that a job it
  // holds as paused was unwound by someone else (freeing its wait context
  // cancels a paused job that registered cancel hooks).
  bool ended = false;

  // The int(void*) the C API starts: its argument is a copy of a JobTask*.
  static int Enter(void* argument) {
    JobTask* task = *static_cast<JobTask**>(argument);
    try {
      task->Run();
    } catch (...) {
      if (asyncjob_is_cancelling() != 0) {  // let the unwind finish
        task->ended = true;
        if (task->orphaned) delete task;
        throw;
      }
      task->error = std::current_exception();
    }
    task->ended = true;
    if (task->orphaned) delete task;
    return 1;
  }
};

// A JobTask with its value of type T, set once the callable returned. Base
// is JobTask, or a type derived from it that adds what its owner needs.
template <class T, class Base = JobTask>
struct JobTaskOf : Base {
  std::optional<Stored<T>> value;
};

// A JobTaskOf with its callable, of the decayed type F.
template <class T, class F, class Base = JobTask>
struct JobTaskFor : JobTaskOf<T, Base> {
  template <class G>
  explicit JobTaskFor(G&& fn) : fn_(std::forward<G>(fn)) {}
  void Run() final {
    if constexpr (std::is_void_v<T>) {
      fn_();
      this->value.emplace();
    } else {
      this->value.emplace(fn_());
    }
  }
  F fn_;
};

}  // namespace detail

// A job started by asyncjob::start(), with a result of type T. Move-only.
// Destroying a paused Job cancels it (its stack unwinds). A destructor
// cannot report failure, so when the job cannot be cancelled (see cancel())
// the destructor leaves it paused for good: the error stays on the error
// queue, one line goes to stderr, and the job's stack and callable are not
// freed (they are if someone resumes the job through its handle until it
// finishes). Assigning to a paused Job does the same to the old job.
//
// A job whose wait context is destroyed while it is paused is orphaned
// (docs/teardown.md): if it registered cancel hooks and its stack can be
// unwound it is cancelled right there, and this object then reports it
// cancelled (resume() throws JobWasCancelled); otherwise (its hooks, if
// any, having run) it never runs again, resume() and cancel() throw Error
// (ASYNCJOB_R_JOB_ORPHANED), and the destructor frees the callable without
// a message.
template <class T>
class Job {
 public:
  Job() = default;
  Job(Job&& other) noexcept
      : task_(std::move(other.task_)),
        job_(std::exchange(other.job_, nullptr)),
        ctx_(other.ctx_),
        state_(std::exchange(other.state_, State::kEmpty)) {}
  Job& operator=(Job&& other) noexcept {
    if (this != &other) {
      cancel_quietly();
      task_ = std::move(other.task_);
      job_ = std::exchange(other.job_, nullptr);
      ctx_ = other.ctx_;
      state_ = std::exchange(other.state_, State::kEmpty);
    }
    return *this;
  }
  ~Job() { cancel_quietly(); }

  bool paused() const noexcept { return state_ == State::kPaused; }
  bool finished() const noexcept {
    return state_ == State::kFinished || state_ == State::kCancelled;
  }
  bool cancelled() const noexcept { return state_ == State::kCancelled; }
  ASYNC_JOB* handle() const noexcept { return job_; }

  // Runs the paused job until it pauses again or finishes. When it finishes
  // by throwing, rethrows that exception here. Throws Error when the job
  // cannot be resumed (another thread's, not paused).
  void resume() {
    if (EndedElsewhere()) throw JobWasCancelled();
    if (state_ != State::kPaused) {
      throw Error(0, "asyncjob::Job::resume: the job is not paused");
    }
    Step();
  }

  // The result of a finished job (moved out; call once). Rethrows the job's
  // exception; throws JobWasCancelled for a cancelled job.
  T get() {
    if (state_ == State::kCancelled) throw JobWasCancelled();
    if (state_ != State::kFinished) throw Error(0, "asyncjob::Job::get: the job has not finished");
    if (task_->error) std::rethrow_exception(task_->error);
    if constexpr (!std::is_void_v<T>) return std::move(*task_->value);
  }

  // Cancels a paused job: cancel hooks run, its stack unwinds (destructors
  // run), its wait context's fds are cleaned up and it returns to the pool.
  // Does nothing for a finished job. Throws Error if the job belongs to
  // another thread, or if its stack cannot be unwound (it is paused in a
  // noexcept function or a destructor, or under C code built without unwind
  // tables: reasons ASYNCJOB_R_NOEXCEPT_FRAME, ASYNCJOB_R_STACK_NOT_UNWINDABLE);
  // the job is then still paused and can be resumed, or cancelled once it
  // has left that frame.
  void cancel() {
    if (state_ != State::kPaused || EndedElsewhere()) return;
    if (asyncjob_cancel_job(&job_) != 1) throw Error::FromQueue("asyncjob_cancel_job");
    state_ = State::kCancelled;
  }

 private:
  enum class State { kEmpty, kPaused, kFinished, kCancelled };
  template <class F>
  friend auto start(WaitCtxRef ctx, F&& fn) -> Job<std::invoke_result_t<F&>>;

  void Step() {
    int ignored = 0;
    detail::JobTask* task = task_.get();
    switch (ASYNC_start_job(&job_, ctx_, &ignored, &detail::JobTask::Enter, &task, sizeof task)) {
      case ASYNC_PAUSE:
        state_ = State::kPaused;
        return;
      case ASYNC_FINISH:
        state_ = State::kFinished;
        if (task_->error) std::rethrow_exception(task_->error);
        return;
      case ASYNC_NO_JOBS:
        throw PoolExhausted();
      default:
        throw Error::FromQueue("ASYNC_start_job");
    }
  }

  // A job this object holds as paused may have ended without it: its wait
  // context was freed under it, which cancels a paused job that registered
  // cancel hooks. Its handle is then stale (the job object may already run
  // something else): it becomes a cancelled job.
  bool EndedElsewhere() noexcept {
    if (state_ != State::kPaused || !task_->ended) return false;
    state_ = State::kCancelled;
    job_ = nullptr;
    return true;
  }

  void cancel_quietly() noexcept {
    if (state_ != State::kPaused || EndedElsewhere()) return;
    if (asyncjob_cancel_job(&job_) == 1) {
      state_ = State::kCancelled;
      return;
    }
    if (ASYNCJOB_ERR_GET_REASON(asyncjob_peek_last_error(nullptr)) == ASYNCJOB_R_JOB_ORPHANED) {
      // Its wait context was freed under it (destroyed before this object):
      // it never runs again, so its task can go. The reason stays queued.
      state_ = State::kCancelled;
      job_ = nullptr;
      return;
    }
    // It stays paused: the task must outlive it, and is freed only if the
    // job is resumed until it ends. The reason stays on the error queue.
    const char* text = nullptr;
    asyncjob_peek_last_error(&text);
    std::fprintf(stderr,
                 "asyncjob: a paused asyncjob::Job was destroyed but could not be cancelled "
                 "(%s); it stays paused\n",
                 text != nullptr ? text : "unknown reason");
    task_->orphaned = true;
    static_cast<void>(task_.release());
    job_ = nullptr;
    state_ = State::kEmpty;
  }

  std::unique_ptr<detail::JobTaskOf<T>> task_;
  ASYNC_JOB* job_ = nullptr;
  ASYNC_WAIT_CTX* ctx_ = nullptr;
  State state_ = State::kEmpty;
};

// Starts a job running fn() on its own stack, with the wait context ctx
// (may be empty). Returns once the job first pauses or finishes; if it
// finished by throwing, the exception propagates from here. Throws
// PoolExhausted when the thread's pool is at its limit, Error on failure.
template <class F>
auto start(WaitCtxRef ctx, F&& fn) -> Job<std::invoke_result_t<F&>> {
  using T = std::invoke_result_t<F&>;
  Job<T> job;
  job.task_ = std::make_unique<detail::JobTaskFor<T, std::decay_t<F>>>(std::forward<F>(fn));
  job.ctx_ = ctx.get();
  job.Step();
  return job;
}

// Starts a job without a wait context.
template <class F>
auto start(F&& fn) -> Job<std::invoke_result_t<F&>> {
  return start(WaitCtxRef(), std::forward<F>(fn));
}

}  // namespace asyncjob

#endif  // ASYNCJOB_ASYNCJOB_HPP_
