// async_api.cc - the C API: OpenSSL's <openssl/async.h> functions and the
// asyncjob_* extensions, mapped onto the job and wait-context layers.
//
// This file owns argument checking (every bad input gets an error-queue
// entry and an error return, never a crash) and the glue between jobs and
// wait contexts: which context a job was started with, when a round of fd
// changes ends (a paused job resumed), and what becomes of the jobs of a
// context freed under them (docs/teardown.md).
#include <poll.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

#include "asyncjob/async.h"
#include "base/error_queue.h"
#include "context/context.h"
#include "job/job.h"
#include "openssl/libcrypto_bridge.h"
#include "stack/overflow_guard.h"
#include "stack/stack.h"
#include "stack/stack_cache.h"
#include "wait/wait_ctx.h"

using asyncjob::base::QueueError;
using asyncjob::job::Job;
using asyncjob::job::Outcome;
using asyncjob::job::Pool;
using asyncjob::wait::WaitContext;

namespace {

Job* FromHandle(ASYNC_JOB* job) { return reinterpret_cast<Job*>(job); }
ASYNC_JOB* ToHandle(Job* job) { return reinterpret_cast<ASYNC_JOB*>(job); }

WaitContext* WaitContextOf(Job* job) { return static_cast<WaitContext*>(job->user_data); }

WaitContext* CheckedWaitContext(ASYNC_WAIT_CTX* ctx, const char* function) {
  if (ctx == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "%s: ctx is NULL", function);
  }
  return WaitContext::FromHandle(ctx);
}

// ----- Wait contexts freed under their jobs (docs/teardown.md) -----

// At most this many tombstones per thread: past it the oldest are released
// (each keeps a page of memory, its stack's address space and its
// context's fds until then).
constexpr std::size_t kMaxTombstonesPerThread = 1024;

// One job fewer refers to a detached context; the last one frees it, which
// runs the cleanup routines of its fds.
void LetGoOfDetachedContext(WaitContext* wait) {
  if (wait->holders.fetch_sub(1, std::memory_order_acq_rel) == 1) WaitContext::Destroy(wait);
}

// A job no longer refers to its context (it finished, was cancelled, or
// its thread's exit ended it).
// Out of line, so that the common case below needs no saved registers: it
// runs as every job finishes.
__attribute__((noinline)) void DetachFromSharedOrDetachedContext(Job* job, WaitContext* wait) {
  wait->DetachJob(job);
  if (wait->detached()) LetGoOfDetachedContext(wait);
}

inline void DetachFromItsContext(Job* job, WaitContext* wait) {
  if (wait->usual()) [[likely]] {
    wait->DetachJob(job);
    return;
  }
  DetachFromSharedOrDetachedContext(job, wait);
}

// Releases a tombstone and lets go of its detached context.
void ReleaseTombstoneAndContext(Job* job) {
  WaitContext* wait = WaitContextOf(job);
  asyncjob::job::ReleaseTombstone(job);
  if (wait != nullptr) LetGoOfDetachedContext(wait);
}

// Past this many tombstones, a check runs only every count/kTombstonesPerCheck
// calls, so that its cost (one poll() over every tombstone's fds) stays a
// bounded amount per call however many tombstones wait.
constexpr std::size_t kTombstonesPerCheck = 32;

struct TombstoneChecks {
  std::size_t calls_since_check = 0;
  bool running = false;  // a release runs cleanup routines, which may call us
};
constinit thread_local TombstoneChecks tombstone_checks;

// Releases this thread's tombstones whose contexts were signalled (one of
// their fds is readable, or was closed under them: whatever was to complete
// the job has done all it will do with it), and the oldest past the
// per-thread bound. Runs where an application calls asyncjob anyway as
// connections begin and end (a context made or freed, a pool set up), never
// on the start/pause/resume path.
void ReleaseSignalledTombstones() {
  Job* newest = asyncjob::job::FirstTombstone();
  if (newest == nullptr) [[likely]]
    return;
  TombstoneChecks& checks = tombstone_checks;
  if (checks.running) return;
  const std::size_t count = asyncjob::job::TombstoneCount();
  if (count <= kMaxTombstonesPerThread &&
      ++checks.calls_since_check < count / kTombstonesPerCheck) {
    return;
  }
  checks.calls_since_check = 0;
  // Every tombstone and the fds of its context, in one poll().
  std::vector<Job*> jobs;
  std::vector<std::size_t> first_fd;  // jobs[i]'s fds: [first_fd[i], first_fd[i + 1])
  std::vector<pollfd> fds;
  try {
    jobs.reserve(count);
    first_fd.reserve(count + 1);
    std::vector<OSSL_ASYNC_FD> scratch;
    for (Job* job = newest; job != nullptr; job = job->links.next_idle) {
      jobs.push_back(job);
      first_fd.push_back(fds.size());
      if (WaitContext* wait = WaitContextOf(job)) {
        scratch.resize(wait->GetAllFds(nullptr));
        wait->GetAllFds(scratch.data());
        for (OSSL_ASYNC_FD fd : scratch) fds.push_back(pollfd{fd, POLLIN, 0});
      }
    }
    first_fd.push_back(fds.size());
  } catch (const std::bad_alloc&) {
    return;  // looked at again at the next check
  }
  if (!fds.empty() && poll(fds.data(), fds.size(), 0) < 0) return;
  checks.running = true;
  std::uint64_t releases = asyncjob::job::TombstoneReleases();
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    // A cleanup routine run by an earlier release may have cleaned the
    // thread's pool up, releasing (and freeing) every tombstone: the list
    // is stale then.
    if (asyncjob::job::TombstoneReleases() != releases) break;
    bool release = i >= kMaxTombstonesPerThread || WaitContextOf(jobs[i]) == nullptr;
    for (std::size_t f = first_fd[i]; !release && f < first_fd[i + 1]; ++f) {
      release = fds[f].revents != 0;
    }
    if (!release) continue;
    ReleaseTombstoneAndContext(jobs[i]);
    ++releases;
  }
  checks.running = false;
}

// A job of a context its owner is freeing (the context is detached, the job
// detached from it). A running job (the context is freed from inside it,
// or from a job it started) carries on without a context. A paused job of
// another thread keeps the detached context until it ends there. A paused
// job of this thread is an orphan: its owner has dropped it with the
// context, and nobody can legally resume it. If the code that paused it
// registered cancel hooks, it knows how to withdraw what it handed out: the
// job is cancelled now (hooks, then its stack unwinds) and goes back to the
// pool. Otherwise code we know nothing of may still hold the job, write into
// its stack or signal its fds: it becomes a tombstone, which holds the
// context until one of its fds is signalled (or the bound, or the thread's
// cleanup, releases it).
void Orphan(Job* job, WaitContext* wait) {
  if (job->state != asyncjob::job::JobState::kPaused) {
    job->user_data = nullptr;
    return;
  }
  if (!asyncjob::job::OwnedByThisThread(job)) {
    ++wait->holders;
    return;
  }
  if (job->cancellation.hook_count > 0) {
    // Freeing a context is no error of the caller's: the attempt queues
    // nothing, whether it succeeds or not. (The hooks run with errors
    // suppressed too; what they do is their own business.)
    bool unwound;
    {
      asyncjob::base::ScopedErrorSuppression quiet;
      unwound = asyncjob::job::Cancel(job) == Outcome::kFinished;
    }
    if (unwound) {
      asyncjob::job::CountOrphan(/*unwound=*/true);
      asyncjob::job::Release(job);
      return;
    }
  }
  asyncjob::job::CountOrphan(/*unwound=*/false);
  ++wait->holders;
  asyncjob::job::Abandon(job);
}

// Called once a job has finished: hands back its result and its pool slot.
int FinishJob(Job* job) {
  if (WaitContext* wait = WaitContextOf(job)) DetachFromItsContext(job, wait);
  int result = job->entry.result;
  asyncjob::job::Release(job);
  return result;
}

// A fresh job from this thread's pool, attached to `wait` and ready to run;
// nullptr with *status (error queued unless ASYNC_NO_JOBS) when there is none.
Job* PrepareNewJob(WaitContext* wait, int (*func)(void*), void* args, size_t size, int* status) {
  *status = ASYNC_ERR;
  Pool* pool = Pool::ForThisThread(true);
  if (pool == nullptr) return nullptr;
  bool exhausted = false;
  Job* job = pool->Acquire(&exhausted);
  if (job == nullptr) {
    if (exhausted) *status = ASYNC_NO_JOBS;
    return nullptr;
  }
  if (wait != nullptr && !wait->AttachJob(job)) [[unlikely]] {
    asyncjob::job::Release(job);
    return nullptr;
  }
  if (!asyncjob::job::PrepareStart(job, func, args, size, wait)) {
    FinishJob(job);
    return nullptr;
  }
  return job;
}

// Run by the job layer once a job's cancellation is sure to go ahead,
// before its cancel hooks: cancelling resumes the job, so the fds its owner
// has seen start a new round (as in ASYNC_pause_job), and clearing them
// reports them deleted.
void StartNewRoundOfCancelledJob(Job* job) {
  if (WaitContext* wait = WaitContextOf(job)) wait->StartNewRound();
}

// The fds of a cancelled job's context are cleaned up (their routines run,
// they are reported deleted), unless other jobs share the context: whose
// fds are whose is not known, so they stay until the context is freed.
void CleanUpFdsOfEndedJob(Job* job, WaitContext* wait, const char* function) {
  if (wait->detached() || !wait->OnlyJobIs(job)) return;
  try {
    wait->CleanUpAllFds();  // copies the fd list first
  } catch (const std::bad_alloc&) {
    // Nothing was cleaned up yet: the fds stay set, and their cleanup
    // routines run when the context is freed. The job has ended.
    QueueError(ASYNCJOB_R_MALLOC_FAILURE,
               "%s: out of memory; the wait context's fds are cleaned up when it is freed",
               function);
  }
}

// A job its thread's exit ended (pthread_exit() or cancellation inside it):
// as for a cancelled job, the cleanup routines of its fds run and its wait
// context lets go of it; the thread's unwind then goes on.
void EndedByThreadExit(Job* job) {
  if (WaitContext* wait = WaitContextOf(job)) {
    wait->StartNewRound();
    CleanUpFdsOfEndedJob(job, wait, "thread exit inside a job");
    DetachFromItsContext(job, wait);
    job->user_data = nullptr;
  }
}

__attribute__((constructor)) void ObserveThreadExits() {
  asyncjob::job::SetThreadExitObserver(&EndedByThreadExit);
}

#if ASYNCJOB_CONTEXT_RETURN_FREE
// Return-free entries (docs/design.md): the job itself does, before
// switching back, what ASYNC_start_job would do after the switch. This is its end,
// run on its own stack: FinishJob() (the job layer then releases it) and
// the caller's outcome.
int FinishOnItsOwnStack(Job* job) {
  if (WaitContext* wait = WaitContextOf(job)) DetachFromItsContext(job, wait);
  *job->outcome.result_slot = job->entry.result;
  *static_cast<ASYNC_JOB**>(job->outcome.handle_slot) = nullptr;
  return ASYNC_FINISH;
}
#endif

}  // namespace

extern "C" {

// ----- Jobs and pools -----

int ASYNC_init_thread(size_t max_size, size_t init_size) {
  ReleaseSignalledTombstones();
  return Pool::InitThisThread(max_size, init_size) ? 1 : 0;
}

void ASYNC_cleanup_thread(void) { Pool::CleanupThisThread(); }

int ASYNC_start_job(ASYNC_JOB** job, ASYNC_WAIT_CTX* ctx, int* ret, int (*func)(void*), void* args,
                    size_t size) {
  if (job == nullptr || ret == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_start_job: %s is NULL",
               job == nullptr ? "job" : "ret");
    return ASYNC_ERR;
  }
  Job* running = FromHandle(*job);
  if (running != nullptr) {
    if (!asyncjob::job::PrepareResume(running)) return ASYNC_ERR;
    // Resuming: the fds changed in the previous round have been seen.
    if (WaitContext* wait = WaitContextOf(running)) wait->StartNewRound();
  } else {
    if (func == nullptr) {
      QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_start_job: func is NULL");
      return ASYNC_ERR;
    }
    WaitContext* wait = WaitContext::FromHandle(ctx);
    if (wait != nullptr && wait->detached()) [[unlikely]] {
      // Only reachable through a stale pointer: the owner freed it, and it
      // lives on only for the orphans that still hold it.
      QueueError(ASYNCJOB_R_WAIT_CTX_IN_USE,
                 "ASYNC_start_job: the wait context was freed (it is kept only for the "
                 "orphaned jobs that still refer to it)");
      return ASYNC_ERR;
    }
    int status;
    running = PrepareNewJob(wait, func, args, size, &status);
    if (running == nullptr) return status;
  }
#if ASYNCJOB_CONTEXT_RETURN_FREE
  if (asyncjob::job::CanReturnFree(running)) [[likely]] {
    // Leave through the switch: the job's pause (ASYNC_pause_job) or end
    // (FinishOnItsOwnStack) stores the outcome and returns to our caller.
    running->outcome.handle_slot = job;
    running->outcome.result_slot = ret;
    running->outcome.finish = &FinishOnItsOwnStack;
    return asyncjob::job::EnterReturnFree(running);
  }
#endif
  if (asyncjob::job::Run(running) == Outcome::kPaused) {
    *job = ToHandle(running);
    return ASYNC_PAUSE;
  }
  *ret = FinishJob(running);
  *job = nullptr;
  return ASYNC_FINISH;
}

int ASYNC_pause_job(void) {
  Job* job = asyncjob::job::CurrentJob();
  if (!asyncjob::job::CanPause(job)) return 1;
#if ASYNCJOB_CONTEXT_RETURN_FREE
  if (job->return_free) [[likely]] {
    // ASYNC_start_job's part of the pause, then leave through the switch:
    // ASYNC_PAUSE goes to the code that called ASYNC_start_job, and the
    // resume returns 1 straight to our caller. For introspection, our
    // caller: optimized, the switch saves our return address as the job's
    // pc anyway, but in a build without inlining (Debug) the saved pc is
    // inside the library's own pause path.
    job->last_pause.caller = __builtin_return_address(0);
    *static_cast<ASYNC_JOB**>(job->outcome.handle_slot) = ToHandle(job);
    return asyncjob::job::PauseReturnFree(job, ASYNC_PAUSE);
  }
#endif
  // For introspection: the code that paused, which the saved registers of
  // a pause from inside the library do not show.
  job->last_pause.caller = __builtin_return_address(0);
#if !ASYNCJOB_CONTEXT_RETURN_FREE
  // Gives this function a frame (not where pauses are return-free: their
  // path must stay frameless), the start of the frame-pointer chain.
  job->last_pause.frame = __builtin_frame_address(0);
#endif
  asyncjob::job::PauseCurrent(job);
  return 1;
}

ASYNC_JOB* ASYNC_get_current_job(void) { return ToHandle(asyncjob::job::CurrentJob()); }

ASYNC_WAIT_CTX* ASYNC_get_wait_ctx(ASYNC_JOB* job) {
  if (job == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_get_wait_ctx: job is NULL");
    return nullptr;
  }
  WaitContext* wait = WaitContextOf(FromHandle(job));
  return wait != nullptr ? wait->handle() : nullptr;
}

void ASYNC_block_pause(void) {
  if (Job* job = asyncjob::job::CurrentJob()) ++job->block_depth;
}

void ASYNC_unblock_pause(void) {
  Job* job = asyncjob::job::CurrentJob();
  if (job != nullptr && job->block_depth > 0) --job->block_depth;
}

int ASYNC_is_capable(void) { return 1; }

int ASYNC_set_mem_functions(ASYNC_stack_alloc_fn alloc_fn, ASYNC_stack_free_fn free_fn) {
  return asyncjob::stack::SetMemFunctions(alloc_fn, free_fn) ? 1 : 0;
}

void ASYNC_get_mem_functions(ASYNC_stack_alloc_fn* alloc_fn, ASYNC_stack_free_fn* free_fn) {
  asyncjob::stack::GetMemFunctions(alloc_fn, free_fn);
}

// ----- Wait contexts -----

ASYNC_WAIT_CTX* ASYNC_WAIT_CTX_new(void) {
  ReleaseSignalledTombstones();
  // The nothrow new covers the object; its constructor reserves room for
  // fds, whose bad_alloc must not leave this C function either.
  WaitContext* wait = nullptr;
  try {
    wait = new (std::nothrow) WaitContext;
  } catch (const std::bad_alloc&) {
    wait = nullptr;
  }
  if (wait == nullptr) {
    QueueError(ASYNCJOB_R_MALLOC_FAILURE, "ASYNC_WAIT_CTX_new: out of memory");
    return nullptr;
  }
  return wait->handle();
}

void ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX* ctx) {
  WaitContext* wait = WaitContext::FromHandle(ctx);
  if (wait == nullptr) return;
  // Freed again by one of its own cleanup routines or unwinding jobs, or
  // through a stale pointer after its owner freed it: nothing to do.
  if (wait->being_freed || wait->detached()) return;
  ReleaseSignalledTombstones();
  if (!wait->HasJobs()) [[likely]] {
    WaitContext::Destroy(wait);
    return;
  }
  // Jobs still refer to it. From here on nothing can call into the owner's
  // objects through it (its callback is gone), and freeing it queues no
  // error: it is a legal act, and an entry left in the queue would fail the
  // thread's next, unrelated operation.
  wait->being_freed = true;
  wait->Detach();
  while (void* any = wait->AnyJob()) {
    auto* job = static_cast<Job*>(any);
    wait->DetachJob(job);
    Orphan(job, wait);
  }
  wait->being_freed = false;
  if (wait->holders.load(std::memory_order_acquire) == 0) WaitContext::Destroy(wait);
}

int ASYNC_WAIT_CTX_set_wait_fd(ASYNC_WAIT_CTX* ctx, const void* key, OSSL_ASYNC_FD fd,
                               void* custom_data,
                               void (*cleanup)(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD,
                                               void*)) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_set_wait_fd");
  if (wait == nullptr) return 0;
  return wait->SetWaitFd(key, fd, custom_data, cleanup) ? 1 : 0;
}

int ASYNC_WAIT_CTX_get_fd(ASYNC_WAIT_CTX* ctx, const void* key, OSSL_ASYNC_FD* fd,
                          void** custom_data) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_get_fd");
  if (wait == nullptr) return 0;
  return wait->GetFd(key, fd, custom_data) ? 1 : 0;
}

int ASYNC_WAIT_CTX_get_all_fds(ASYNC_WAIT_CTX* ctx, OSSL_ASYNC_FD* fd, size_t* numfds) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_get_all_fds");
  if (wait == nullptr) return 0;
  if (numfds == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_WAIT_CTX_get_all_fds: numfds is NULL");
    return 0;
  }
  *numfds = wait->GetAllFds(fd);
  return 1;
}

int ASYNC_WAIT_CTX_get_changed_fds(ASYNC_WAIT_CTX* ctx, OSSL_ASYNC_FD* addfd, size_t* numaddfds,
                                   OSSL_ASYNC_FD* delfd, size_t* numdelfds) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_get_changed_fds");
  if (wait == nullptr) return 0;
  if (numaddfds == nullptr || numdelfds == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "ASYNC_WAIT_CTX_get_changed_fds: %s is NULL",
               numaddfds == nullptr ? "numaddfds" : "numdelfds");
    return 0;
  }
  wait->GetChangedFds(addfd, numaddfds, delfd, numdelfds);
  return 1;
}

int ASYNC_WAIT_CTX_clear_fd(ASYNC_WAIT_CTX* ctx, const void* key) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_clear_fd");
  if (wait == nullptr) return 0;
  return wait->ClearFd(key) ? 1 : 0;
}

int ASYNC_WAIT_CTX_set_callback(ASYNC_WAIT_CTX* ctx, ASYNC_callback_fn callback,
                                void* callback_arg) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_set_callback");
  if (wait == nullptr) return 0;
  wait->SetCallback(callback, callback_arg);
  return 1;
}

int ASYNC_WAIT_CTX_get_callback(ASYNC_WAIT_CTX* ctx, ASYNC_callback_fn* callback,
                                void** callback_arg) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_get_callback");
  if (wait == nullptr) return 0;
  return wait->GetCallback(callback, callback_arg) ? 1 : 0;
}

int asyncjob_wait_ctx_call_callback(ASYNC_WAIT_CTX* ctx) {
  WaitContext* wait = CheckedWaitContext(ctx, "asyncjob_wait_ctx_call_callback");
  if (wait == nullptr) return 0;
  return wait->CallCallback() ? 1 : 0;
}

int ASYNC_WAIT_CTX_set_status(ASYNC_WAIT_CTX* ctx, int status) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_set_status");
  if (wait == nullptr) return 0;
  wait->set_status(status);
  return 1;
}

int ASYNC_WAIT_CTX_get_status(ASYNC_WAIT_CTX* ctx) {
  WaitContext* wait = CheckedWaitContext(ctx, "ASYNC_WAIT_CTX_get_status");
  if (wait == nullptr) return ASYNC_STATUS_ERR;
  return wait->status();
}

// ----- Extensions -----

unsigned long asyncjob_get_error(const char** message) {
  return asyncjob::base::ReadError(/*pop=*/true, /*newest=*/false, message);
}

unsigned long asyncjob_peek_error(const char** message) {
  return asyncjob::base::ReadError(/*pop=*/false, /*newest=*/false, message);
}

unsigned long asyncjob_peek_last_error(const char** message) {
  return asyncjob::base::ReadError(/*pop=*/false, /*newest=*/true, message);
}

void asyncjob_clear_errors(void) { asyncjob::base::ClearErrors(); }

int asyncjob_set_stack_size(size_t bytes) {
  return asyncjob::stack::SetDefaultStackSize(bytes) ? 1 : 0;
}

int asyncjob_cancel_job(ASYNC_JOB** job) {
  if (job == nullptr || *job == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_cancel_job: %s is NULL",
               job == nullptr ? "job" : "*job");
    return 0;
  }
  Job* target = FromHandle(*job);
  if (!asyncjob::job::CheckResumable(target)) return 0;
  // kPaused: the job's stack cannot be unwound; it is paused as it was, its
  // wait context untouched, and the reason is queued.
  if (asyncjob::job::Cancel(target, &StartNewRoundOfCancelledJob) != Outcome::kFinished) {
    return 0;
  }
  if (WaitContext* wait = WaitContextOf(target)) {
    CleanUpFdsOfEndedJob(target, wait, "asyncjob_cancel_job");
  }
  FinishJob(target);
  *job = nullptr;
  return 1;
}

int asyncjob_add_cancel_hook(void (*fn)(void*), void* arg) {
  if (fn == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_add_cancel_hook: fn is NULL");
    return 0;
  }
  return asyncjob::job::AddCancelHook(fn, arg) ? 1 : 0;
}

int asyncjob_can_pause(void) {
  return asyncjob::job::CanPause(asyncjob::job::CurrentJob()) ? 1 : 0;
}

int asyncjob_is_cancelling(void) {
  Job* job = asyncjob::job::CurrentJob();
  return job != nullptr && job->cancellation.requested ? 1 : 0;
}

int asyncjob_remove_cancel_hook(void (*fn)(void*), void* arg) {
  return asyncjob::job::RemoveCancelHook(fn, arg) ? 1 : 0;
}

size_t asyncjob_get_stack_size(void) { return asyncjob::stack::DefaultStackSize(); }

void asyncjob_set_guarded_stack_budget(size_t stacks) { asyncjob::stack::SetGuardedBudget(stacks); }

size_t asyncjob_get_guarded_stack_budget(void) { return asyncjob::stack::GuardedBudget(); }

void asyncjob_set_stack_cache_limits(size_t per_thread, size_t process) {
  asyncjob::stack::SetCacheLimits(per_thread, process);
}

void asyncjob_get_stack_cache_limits(size_t* per_thread, size_t* process) {
  asyncjob::stack::GetCacheLimits(per_thread, process);
}

size_t asyncjob_trim_stack_cache(void) { return asyncjob::stack::TrimCaches(); }

int asyncjob_get_pool_stats(asyncjob_pool_stats* stats) {
  if (stats == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_get_pool_stats: stats is NULL");
    return 0;
  }
  *stats = asyncjob_pool_stats{};
  Pool* pool = Pool::ForThisThread(false);
  if (pool == nullptr) return 0;
  using asyncjob::stack::StackKind;
  stats->max_size = pool->max_size();
  stats->total = pool->total();
  stats->idle = pool->idle();
  stats->in_use = pool->in_use();
  stats->guarded = pool->count_of(StackKind::kGuarded);
  stats->slab = pool->count_of(StackKind::kSlab);
  stats->custom = pool->count_of(StackKind::kCustom);
  stats->tombstones = pool->tombstones();
  return 1;
}

const char* asyncjob_context_backend(void) { return asyncjob::context::BackendName(); }

int asyncjob_set_overflow_handler(int enabled) {
  if (!asyncjob::stack::SetOverflowHandlerEnabled(enabled != 0)) {
    QueueError(ASYNCJOB_R_INTERNAL_ERROR,
               "asyncjob_set_overflow_handler: sigaction() refused to install the handler");
    return 0;
  }
  return 1;
}

int asyncjob_overflow_handler_installed(void) {
  return asyncjob::stack::OverflowHandlerInstalled() ? 1 : 0;
}

int asyncjob_get_stats(asyncjob_stats* stats) {
  if (stats == nullptr) {
    QueueError(ASYNCJOB_R_PASSED_NULL_PARAMETER, "asyncjob_get_stats: stats is NULL");
    return 0;
  }
  asyncjob::job::Counters counters = asyncjob::job::ProcessCounters();
  stats->jobs_created = counters.jobs_created;
  stats->jobs_freed = counters.jobs_freed;
  stats->starts = counters.starts;
  stats->resumes = counters.resumes;
  stats->pauses = counters.pauses;
  stats->finishes = counters.finishes;
  stats->cancels = counters.cancels;
  stats->no_jobs = counters.exhausted;
  stats->orphans = counters.orphans;
  stats->orphans_unwound = counters.orphans_unwound;
  stats->tombstones = counters.tombstones;
  stats->tombstones_released = counters.tombstones_released;
  stats->libcrypto_connected = asyncjob::openssl::LibcryptoConnected() ? 1 : 0;
  return 1;
}

}  // extern "C"

namespace {

void PrintStatsAtExit() {
  asyncjob_stats stats;
  asyncjob_get_stats(&stats);
  std::fprintf(stderr,
               "asyncjob: %llu jobs started, %llu resumes, %llu pauses, %llu finished, "
               "%llu cancelled, %llu no-jobs; %llu stacks created; %llu orphaned (%llu "
               "unwound, %llu tombstones, %llu released); context switch %s; libcrypto %s\n",
               stats.starts, stats.resumes, stats.pauses, stats.finishes, stats.cancels,
               stats.no_jobs, stats.jobs_created, stats.orphans, stats.orphans_unwound,
               stats.tombstones, stats.tombstones_released, asyncjob_context_backend(),
               stats.libcrypto_connected ? "connected (per-job libctx, errors mirrored)"
                                         : "not in the process");
}

// Tombstones left when a thread's pool is cleaned up let go of their
// contexts too.
__attribute__((constructor)) void RegisterTombstoneReleaser() {
  asyncjob::job::SetTombstoneReleaser(&ReleaseTombstoneAndContext);
}

__attribute__((constructor)) void RegisterStatsPrinter() {
  const char* wanted = std::getenv("ASYNCJOB_STATS");
  if (wanted != nullptr && *wanted != '\0' && *wanted != '0') std::atexit(&PrintStatsAtExit);
}

}  // namespace
