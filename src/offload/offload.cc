// offload.cc - asyncjob::offload::Engine (include/asyncjob/offload.hpp):
// its queue, its workers and how a completion wakes the job.
#include "asyncjob/offload.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <vector>

#include "asyncjob/introspect.h"
#include "base/dcheck.h"
#include "base/eventfd.h"

#ifdef ASYNCJOB_OFFLOAD_WEAK_EXTENSIONS
// Built into a module that must also load where libasyncjob is absent (an
// OpenSSL provider under libcrypto's own jobs): asyncjob's extensions are
// used when the process has them, and plain <openssl/async.h> otherwise.
extern "C" {
int asyncjob_can_pause(void) __attribute__((weak));
int asyncjob_add_cancel_hook(void (*fn)(void*), void* arg) __attribute__((weak));
int asyncjob_remove_cancel_hook(void (*fn)(void*), void* arg) __attribute__((weak));
int asyncjob_count_wakeup(int how) __attribute__((weak));
int asyncjob_wait_ctx_call_callback(ASYNC_WAIT_CTX* ctx) __attribute__((weak));
}
#endif

namespace asyncjob::offload {

struct Engine::Request {
  // kHeld: the task is done and its wake-up held back for a batch
  // (Options::completion_batch_window).
  enum class State { kNew, kQueued, kRunning, kHeld, kFinished, kWithdrawn };
  void (*invoke)(void*);
  void* callable;
  Engine* engine;
  // How to wake the job: its wait context's callback, else its eventfd,
  // else nothing (the owner polls). The callback is called through the
  // context (CallCallback()), which knows whether its owner has freed it
  // since; the copy taken at submission serves only under libcrypto's jobs.
  ASYNC_WAIT_CTX* ctx = nullptr;
  ASYNC_callback_fn callback = nullptr;
  void* callback_argument = nullptr;
  int eventfd = -1;
  State state = State::kNew;  // guarded by the engine's mutex
  // Set by the cancel hook while a worker runs the request: the job is
  // being unwound (cancelled, or orphaned as its owner frees its wait
  // context, its connection half freed), so nobody is to be woken. Guarded
  // by the engine's mutex.
  bool owner_gone = false;
  std::atomic<bool> done{false};
  // Stored last by whoever finishes the request (Finish()), after its last
  // use of it: once it reads true, the job may let the request go without
  // taking the engine's mutex.
  std::atomic<bool> settled{false};
  std::exception_ptr error = nullptr;  // what the task threw on the worker
  // Links in the engine's list of held wake-ups (kHeld only).
  Request* held_previous = nullptr;
  Request* held_next = nullptr;
};

namespace {

#ifdef ASYNCJOB_OFFLOAD_WEAK_EXTENSIONS
bool CanPause() {
  if (asyncjob_can_pause != nullptr) return asyncjob_can_pause() == 1;
  return ASYNC_get_current_job() != nullptr;
}
// Without asyncjob in the process jobs are libcrypto's, which cannot be
// cancelled: no hook is needed.
bool AddCancelHook(void (*fn)(void*), void* arg) {
  if (asyncjob_add_cancel_hook != nullptr) return asyncjob_add_cancel_hook(fn, arg) == 1;
  return true;
}
void RemoveCancelHook(void (*fn)(void*), void* arg) {
  if (asyncjob_remove_cancel_hook != nullptr) asyncjob_remove_cancel_hook(fn, arg);
}
void CountWakeup(int how) {
  if (asyncjob_count_wakeup != nullptr) asyncjob_count_wakeup(how);
}
bool CallCallback(ASYNC_WAIT_CTX* ctx, ASYNC_callback_fn callback, void* argument) {
  if (asyncjob_wait_ctx_call_callback != nullptr) return asyncjob_wait_ctx_call_callback(ctx) == 1;
  // libcrypto's contexts: its callback cannot change under a paused job.
  callback(argument);
  return true;
}
#else
bool CanPause() { return asyncjob_can_pause() == 1; }
bool AddCancelHook(void (*fn)(void*), void* arg) { return asyncjob_add_cancel_hook(fn, arg) == 1; }
void RemoveCancelHook(void (*fn)(void*), void* arg) { asyncjob_remove_cancel_hook(fn, arg); }
void CountWakeup(int how) { asyncjob_count_wakeup(how); }
bool CallCallback(ASYNC_WAIT_CTX* ctx, ASYNC_callback_fn, void*) {
  return asyncjob_wait_ctx_call_callback(ctx) == 1;
}
#endif

// Wakes a paused job the way its wait context asks: its callback, else the
// engine's eventfd (neither: its owner polls). Counted for the statistics.
// A context whose owner freed it meanwhile (on another thread than the
// job's) has no callback any more: nobody is woken, and the job waits for
// its own thread to resume or cancel it.
void WakeJob(ASYNC_WAIT_CTX* ctx, ASYNC_callback_fn callback, void* callback_argument,
             int eventfd) {
  if (callback != nullptr) {
    if (CallCallback(ctx, callback, callback_argument)) CountWakeup(ASYNCJOB_WAKEUP_BY_CALLBACK);
  } else if (eventfd >= 0) {
    base::SignalEventFd(eventfd);
    CountWakeup(ASYNCJOB_WAKEUP_BY_FD);
  }
}

void CloseEventFd(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }

}  // namespace

// fork() copies an engine's memory into the child but none of its workers:
// without new ones every submission in the child would wait for ever. The
// engines of the process are listed here; around a fork each one's mutex
// is held so that no worker holds it at that instant, and the child starts
// new workers.
struct ForkHandlers {
  // Never destroyed: an engine may be destroyed at exit after the statics
  // (a provider torn down by OPENSSL_cleanup). Neither is on the heap
  // either: in a module that is unloaded (the provider), a never-freed heap
  // block would be lost; the list's own buffer is freed when it empties.
  static std::mutex& Mutex() {
    static constinit std::mutex mutex;  // trivially destructible
    return mutex;
  }
  static std::vector<Engine*>& Engines() {
    alignas(std::vector<Engine*>) static unsigned char storage[sizeof(std::vector<Engine*>)];
    static auto* engines = new (storage) std::vector<Engine*>;
    return *engines;
  }
  static void Add(Engine* engine) {
    static std::once_flag registered;
    std::call_once(registered, [] {
      if (pthread_atfork(&Prepare, &Parent, &Child) != 0) throw std::bad_alloc();
    });
    std::lock_guard lock(Mutex());
    Engines().push_back(engine);  // may throw std::bad_alloc
  }
  static void Remove(Engine* engine) noexcept {
    std::lock_guard lock(Mutex());
    auto& engines = Engines();
    engines.erase(std::find(engines.begin(), engines.end(), engine));
    if (engines.empty()) std::vector<Engine*>().swap(engines);
  }
  static void Prepare() noexcept {
    Mutex().lock();
    for (Engine* engine : Engines()) engine->mutex_.lock();
  }
  static void Parent() noexcept {
    for (Engine* engine : Engines()) engine->mutex_.unlock();
    Mutex().unlock();
  }
  static void Child() noexcept {
    for (Engine* engine : Engines()) {
      // The condition variables may count the parent's waiting workers:
      // made anew. The thread handles name threads of the parent, which
      // cannot be joined here: their storage is reused without destruction.
      new (&engine->work_ready_) std::condition_variable;
      new (&engine->request_done_) std::condition_variable;
      for (std::thread& worker : engine->workers_) new (&worker) std::thread;
      engine->workers_.clear();
      engine->workers_running_ = 0;
      // No worker of the child will finish a task to send them.
      engine->ReleaseHeld();
      engine->mutex_.unlock();
      // Without any worker the engine runs its tasks inline (Submit).
      try {
        engine->StartWorkers();
      } catch (...) {
      }
    }
    Mutex().unlock();
  }
};

// Returns once every worker runs its loop: a thread still starting may be
// inside the allocator (its stack and TLS set up by the C library, or by a
// sanitizer's runtime), and a fork() at that instant would leave the
// child's allocator locked for ever where the allocator has no fork
// handlers (AddressSanitizer's). A program that forks right after making an
// engine (a server loading the provider, then forking its workers) is safe.
void Engine::StartWorkers() {
  workers_.reserve(static_cast<std::size_t>(options_.workers));
  while (workers_.size() < static_cast<std::size_t>(options_.workers)) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  std::unique_lock lock(mutex_);  // cannot throw: see StopWorkers()
  request_done_.wait(lock, [this] { return workers_running_ == workers_.size(); });
}

// A function-try-block: the queue's first blocks are allocated before the
// body runs, and may fail too.
Engine::Engine(Options options) try : options_(options) {
  options_.workers = std::max(1, options_.workers);
  options_.completion_batch_window =
      std::max(options_.completion_batch_window, std::chrono::microseconds::zero());
  options_.queue_capacity = std::max<std::size_t>(1, options_.queue_capacity);
  const std::string wanted = std::to_string(options_.workers);
  if (options_.workers > kMaxWorkers) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "asyncjob::offload::Engine: " + wanted +
                                " workers asked for; at most " + std::to_string(kMaxWorkers));
  }
  // A constructor that throws runs no destructor: stop what was started
  // here, since a joinable std::thread destroyed would terminate.
  try {
    StartWorkers();
    ForkHandlers::Add(this);
  } catch (const std::system_error& error) {
    const std::string started = std::to_string(workers_.size());
    StopWorkers();
    throw std::system_error(error.code(), "asyncjob::offload::Engine: started " + started + " of " +
                                              wanted + " workers");
  } catch (const std::bad_alloc&) {
    StopWorkers();
    throw;
  }
} catch (const std::bad_alloc&) {
  // Every member is destroyed by now, and every worker joined.
  throw std::system_error(std::make_error_code(std::errc::not_enough_memory),
                          "asyncjob::offload::Engine: out of memory while starting");
}

Engine::~Engine() {
  ForkHandlers::Remove(this);
  StopWorkers();
}

void Engine::StopWorkers() noexcept {
  {
    // std::mutex::lock throws only for errors a default mutex cannot have
    // (EDEADLK, EAGAIN of recursive mutexes).
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  // join() throws only for a thread not joinable or joining itself; every
  // worker is joinable, and none runs this.
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  workers_running_ = 0;
}

Counters Engine::counters() const {
  Counters c;
  c.submitted = submitted_.load(std::memory_order_relaxed);
  c.completed = completed_.load(std::memory_order_relaxed);
  c.inline_runs = inline_runs_.load(std::memory_order_relaxed);
  c.eagain_retries = eagain_retries_.load(std::memory_order_relaxed);
  c.spurious_resumes = spurious_resumes_.load(std::memory_order_relaxed);
  c.withdrawn = withdrawn_.load(std::memory_order_relaxed);
  c.batched_wakeups = batched_wakeups_.load(std::memory_order_relaxed);
  c.in_flight = c.submitted - c.completed - c.withdrawn;
  return c;
}

void Engine::RunInline(void (*invoke)(void*), void* callable) {
  inline_runs_.fetch_add(1, std::memory_order_relaxed);
  invoke(callable);
}

void Engine::Run(void (*invoke)(void*), void* callable) {
  if (!CanPause()) {
    RunInline(invoke, callable);
    return;
  }
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  Request request{invoke, callable, this, ctx};
  if (ctx != nullptr &&
      ASYNC_WAIT_CTX_get_callback(ctx, &request.callback, &request.callback_argument) != 1) {
    // No callback: one eventfd per wait context, kept for the context's life.
    OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
    void* custom_data = nullptr;  // libcrypto stores through it unchecked
    if (ASYNC_WAIT_CTX_get_fd(ctx, key(), &fd, &custom_data) != 1) {
      fd = base::CreateEventFd();
      if (fd < 0 || ASYNC_WAIT_CTX_set_wait_fd(ctx, key(), fd, nullptr, &CloseEventFd) != 1) {
        if (fd >= 0) close(fd);
        // No way to be woken: do the work here rather than never finish.
        RunInline(invoke, callable);
        return;
      }
    }
    request.eventfd = fd;
  }

  // Without the hook a cancelled job would leave its request queued:
  // refuse to queue it.
  if (!AddCancelHook(&Withdraw, &request)) {
    RunInline(invoke, callable);
    return;
  }
  Submitted submitted;
  while ((submitted = Submit(&request)) == Submitted::kQueueFull) {
    // Queue full: tell the owner to resume us soon, wake ourselves, retry.
    eagain_retries_.fetch_add(1, std::memory_order_relaxed);
    if (request.callback != nullptr) ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_EAGAIN);
    WakeJob(ctx, request.callback, request.callback_argument, request.eventfd);
    ASYNC_pause_job();
    if (request.eventfd >= 0) base::DrainEventFd(request.eventfd);
  }
  if (submitted == Submitted::kOutOfMemory) {
    // Not queued, so nothing to withdraw: do the work here.
    RemoveCancelHook(&Withdraw, &request);
    if (request.callback != nullptr) ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_OK);
    RunInline(invoke, callable);
    return;
  }
  if (request.callback != nullptr) ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_OK);
  for (;;) {
    ASYNC_pause_job();
    if (request.eventfd >= 0) base::DrainEventFd(request.eventfd);
    if (request.done.load(std::memory_order_acquire)) break;
    spurious_resumes_.fetch_add(1, std::memory_order_relaxed);
  }
  // Settled: the worker has let the request go (the common case, no lock).
  // Otherwise it may still be leaving the request's critical section, or
  // the request's wake-up waits in a batch.
  if (!request.settled.load(std::memory_order_acquire)) {
    std::lock_guard lock(mutex_);
    // Resumed (by its owner's polling, or another wake-up) while its own
    // wake-up waits in a batch: no need to send it any more.
    if (request.state == Request::State::kHeld) {
      Unhold(&request);
      request.state = Request::State::kFinished;
      completed_.fetch_add(1, std::memory_order_relaxed);
    }
    ASYNCJOB_DCHECK(request.state == Request::State::kFinished);
  }
  RemoveCancelHook(&Withdraw, &request);
  if (request.error) std::rethrow_exception(request.error);
}

Engine::Submitted Engine::Submit(Request* request) {
  {
    std::lock_guard lock(mutex_);  // cannot throw: see StopWorkers()
    // No worker: a child of a fork that could start none.
    if (workers_.empty()) return Submitted::kOutOfMemory;
    if (queue_.size() >= options_.queue_capacity) return Submitted::kQueueFull;
    // New, or refused earlier by a full queue.
    ASYNCJOB_DCHECK(request->state == Request::State::kNew);
    try {
      queue_.push_back(request);  // may need a new block of the deque
    } catch (const std::bad_alloc&) {
      return Submitted::kOutOfMemory;
    }
    request->state = Request::State::kQueued;
  }
  submitted_.fetch_add(1, std::memory_order_relaxed);
  work_ready_.notify_one();
  return Submitted::kQueued;
}

// Cancel hook: the job's stack, where the request lives, is about to unwind.
void Engine::Withdraw(void* argument) {
  auto* request = static_cast<Request*>(argument);
  Engine* engine = request->engine;
  std::unique_lock lock(engine->mutex_);  // cannot throw: see StopWorkers()
  if (request->state == Request::State::kQueued) {
    // Erasing from a deque moves elements and never allocates.
    engine->queue_.erase(std::find(engine->queue_.begin(), engine->queue_.end(), request));
    request->state = Request::State::kWithdrawn;
    engine->withdrawn_.fetch_add(1, std::memory_order_relaxed);
    // Held wake-ups wait for a worker's next completion: with the queue
    // emptied here, there may be none.
    if (engine->queue_.empty()) engine->ReleaseHeld();
    return;
  }
  if (request->state == Request::State::kHeld) {
    // Done, its wake-up not sent: there is nobody to wake any more.
    engine->Unhold(request);
    request->state = Request::State::kFinished;
    engine->completed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  request->owner_gone = true;
  engine->request_done_.wait(lock,
                             [request] { return request->state != Request::State::kRunning; });
}

// A thread's function must not throw (std::terminate): the task's
// exceptions go back to the job; the rest cannot throw (locks: see
// StopWorkers(); the queue's pop_front and the notifications never do).
void Engine::WorkerLoop() {
  using Clock = std::chrono::steady_clock;
  const bool batching = options_.completion_batch_window > std::chrono::microseconds::zero();
  std::unique_lock lock(mutex_);
  ++workers_running_;
  request_done_.notify_all();  // StartWorkers() waits for every worker
  for (;;) {
    work_ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to do
    Request* request = queue_.front();
    queue_.pop_front();
    ASYNCJOB_DCHECK(request->state == Request::State::kQueued);
    request->state = Request::State::kRunning;
    lock.unlock();
    const Clock::time_point started = batching ? Clock::now() : Clock::time_point{};
    try {
      request->invoke(request->callable);
    } catch (...) {
      request->error = std::current_exception();  // never throws
    }
    const Clock::time_point finished = batching ? Clock::now() : Clock::time_point{};
    lock.lock();
    // Completion and notification happen under the lock: a cancel hook
    // waiting for this request returns only after both, so the job's stack
    // and its wait context's eventfd outlive every use here.
    request->done.store(true, std::memory_order_release);
    if (batching) {
      const std::int64_t took =
          std::chrono::duration_cast<std::chrono::nanoseconds>(finished - started).count();
      // An average over the last eight or so tasks.
      task_nanoseconds_ =
          task_nanoseconds_ == 0 ? took : task_nanoseconds_ + (took - task_nanoseconds_) / 8;
      if (ShouldHold(request, finished)) {
        Hold(request, finished);
        continue;
      }
      ReleaseHeld();  // older than this one
    }
    Finish(request);
    request_done_.notify_all();
  }
}

// Sends a finished task's wake-up (unless its owner is gone: the job is
// unwinding, its owner tearing down), marks it finished and counts it.
void Engine::Finish(Request* request) noexcept {
  if (!request->owner_gone)
    WakeJob(request->ctx, request->callback, request->callback_argument, request->eventfd);
  request->state = Request::State::kFinished;
  completed_.fetch_add(1, std::memory_order_relaxed);
  // The last use of the request: the job, perhaps already resumed by the
  // wake-up above, may return (and its stack, which holds the request, be
  // reused) as soon as it sees this.
  request->settled.store(true, std::memory_order_release);
}

// Whether the wake-up of a task finished at `now` may wait for the next
// completion: more tasks are queued, and the next one is expected to finish
// within the window that the oldest held wake-up (or this one) opened.
bool Engine::ShouldHold(const Request* request,
                        std::chrono::steady_clock::time_point now) const noexcept {
  if (stopping_ || queue_.empty() || request->owner_gone) return false;
  const auto window_opened = held_first_ != nullptr ? held_since_ : now;
  const auto next_completion = now + std::chrono::nanoseconds(task_nanoseconds_);
  return next_completion <= window_opened + options_.completion_batch_window;
}

void Engine::Hold(Request* request, std::chrono::steady_clock::time_point now) noexcept {
  if (held_first_ == nullptr) held_since_ = now;
  request->state = Request::State::kHeld;
  request->held_previous = held_last_;
  request->held_next = nullptr;
  (held_last_ != nullptr ? held_last_->held_next : held_first_) = request;
  held_last_ = request;
}

void Engine::Unhold(Request* request) noexcept {
  ASYNCJOB_DCHECK(request->state == Request::State::kHeld);
  (request->held_previous != nullptr ? request->held_previous->held_next : held_first_) =
      request->held_next;
  (request->held_next != nullptr ? request->held_next->held_previous : held_last_) =
      request->held_previous;
  request->held_previous = request->held_next = nullptr;
}

// Sends every held wake-up, oldest first. Through a loop's callback, only
// the first of them makes a system call (the loop's wake-up queue rings its
// doorbell only when it was empty).
void Engine::ReleaseHeld() noexcept {
  if (held_first_ == nullptr) return;
  while (held_first_ != nullptr) {
    Request* request = held_first_;
    Unhold(request);
    Finish(request);
    batched_wakeups_.fetch_add(1, std::memory_order_relaxed);
  }
  request_done_.notify_all();
}

}  // namespace asyncjob::offload
