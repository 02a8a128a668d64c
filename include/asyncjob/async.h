/*
 * asyncjob/async.h - the C API of asyncjob.
 *
 * asyncjob implements OpenSSL's asynchronous job API (<openssl/async.h>,
 * OpenSSL 3.5) with the same names, types, constants and behaviour, on its own
 * context switch and guard-paged stacks. A program written for OpenSSL's API
 * builds unchanged against this header (or against the <openssl/async.h>
 * shim installed with the asyncjob-openssl pkg-config module).
 *
 * This header may be included in the same translation unit as the real
 * <openssl/async.h>, in either order: every declaration below is identical to
 * OpenSSL's.
 *
 * Beyond OpenSSL's functions it declares a few asyncjob_* extensions: reading
 * asyncjob's thread-local error queue (declared in <asyncjob/errors.h>, which
 * this header includes), cancelling jobs, tuning stacks, and introspection.
 *
 * Thread rules: a job belongs to the thread that started it and may only be
 * resumed there; each thread has its own job pool. An ASYNC_WAIT_CTX may be
 * used from any thread but not from two threads at once.
 */
#ifndef ASYNCJOB_ASYNC_H
#define ASYNCJOB_ASYNC_H

#include <stddef.h>
#include <stdlib.h>

/* The error queue (asyncjob_get_error() and friends), its reason codes
 * (ASYNC_R_*, ASYNCJOB_R_*) and ASYNCJOB_EXPORT. */
#include "asyncjob/errors.h"

/* ----- Types and constants shared with OpenSSL's <openssl/async.h> ----- */

#ifndef OSSL_ASYNC_FD
#define OSSL_ASYNC_FD int
#define OSSL_BAD_ASYNC_FD -1
#endif

/* Return values of ASYNC_start_job(). */
#define ASYNC_ERR 0
#define ASYNC_NO_JOBS 1
#define ASYNC_PAUSE 2
#define ASYNC_FINISH 3

/* Values of ASYNC_WAIT_CTX_get_status()/ASYNC_WAIT_CTX_set_status(). */
#define ASYNC_STATUS_UNSUPPORTED 0
#define ASYNC_STATUS_ERR 1
#define ASYNC_STATUS_OK 2
#define ASYNC_STATUS_EAGAIN 3

#ifdef __cplusplus
extern "C" {
#endif

typedef struct async_job_st ASYNC_JOB;
typedef struct async_wait_ctx_st ASYNC_WAIT_CTX;
typedef int (*ASYNC_callback_fn)(void *arg);
typedef void *(*ASYNC_stack_alloc_fn)(size_t *num);
typedef void (*ASYNC_stack_free_fn)(void *addr);

/* ----- Jobs and the per-thread pool (see ASYNC_start_job(3)) ----- */

/* Creates this thread's pool: at most max_size jobs (0: no limit), init_size
 * of them created now. Returns 1, or 0 with an error queued when init_size
 * exceeds a non-zero max_size, when jobs of the current pool are still paused,
 * or when the jobs cannot be created. */
ASYNCJOB_EXPORT int ASYNC_init_thread(size_t max_size, size_t init_size);
/* Frees this thread's idle jobs and its pool. Jobs still paused are freed when
 * they finish (an error is queued to say so). Thread exit does this too. */
ASYNCJOB_EXPORT void ASYNC_cleanup_thread(void);

/* Starts (*job == NULL) or resumes (*job != NULL) a job. Returns ASYNC_PAUSE
 * (*job set), ASYNC_FINISH (*ret set, *job NULL), ASYNC_NO_JOBS (pool
 * exhausted, nothing changed) or ASYNC_ERR (error queued). func, args and
 * size are ignored on resume; ctx too (the job keeps the context it was
 * started with). ctx may be NULL. Called inside a job it starts a nested job
 * whose pauses return to the enclosing job. */
ASYNCJOB_EXPORT int ASYNC_start_job(ASYNC_JOB **job, ASYNC_WAIT_CTX *ctx, int *ret,
                                    int (*func)(void *), void *args, size_t size);
/* Returns control to the code that started or last resumed the current job.
 * Returns 1; outside a job or while pausing is blocked it does nothing. */
ASYNCJOB_EXPORT int ASYNC_pause_job(void);

/* The job running on this thread (the innermost, for nested jobs), or NULL. */
ASYNCJOB_EXPORT ASYNC_JOB *ASYNC_get_current_job(void);
/* The wait context job was started with (NULL if none, or if it was freed
 * under the job). NULL job: NULL with an error queued. */
ASYNCJOB_EXPORT ASYNC_WAIT_CTX *ASYNC_get_wait_ctx(ASYNC_JOB *job);
/* Nestable; the count belongs to the current job and dies with it. */
ASYNCJOB_EXPORT void ASYNC_block_pause(void);
ASYNCJOB_EXPORT void ASYNC_unblock_pause(void);

/* 1: this platform runs jobs. */
ASYNCJOB_EXPORT int ASYNC_is_capable(void);

/* Custom stack allocators. Returns 0 once any job stack has been allocated
 * in the process. A NULL argument keeps the current function of that kind. */
ASYNCJOB_EXPORT int ASYNC_set_mem_functions(ASYNC_stack_alloc_fn alloc_fn,
                                            ASYNC_stack_free_fn free_fn);
ASYNCJOB_EXPORT void ASYNC_get_mem_functions(ASYNC_stack_alloc_fn *alloc_fn,
                                             ASYNC_stack_free_fn *free_fn);

/* ----- Wait contexts (see ASYNC_WAIT_CTX_new(3)) ----- */

/* A new context: no fds, no callback, status ASYNC_STATUS_UNSUPPORTED.
 * NULL (error queued) when out of memory. */
ASYNCJOB_EXPORT ASYNC_WAIT_CTX *ASYNC_WAIT_CTX_new(void);
/* Runs the cleanup routine of every fd still set, then frees ctx. NULL does
 * nothing. Freeing a context under a paused job detaches the job (it goes on
 * without a context) and queues ASYNCJOB_R_WAIT_CTX_IN_USE. */
ASYNCJOB_EXPORT void ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX *ctx);
/* Registers fd under key (any pointer unique to the caller), with custom
 * data and a cleanup routine run only by ASYNC_WAIT_CTX_free (or when a job
 * is cancelled). Reported as added by _get_changed_fds until the job is next
 * resumed. Returns 1, or 0 with an error queued: NULL ctx, negative fd, or
 * a key already registered (clear it first). */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_set_wait_fd(ASYNC_WAIT_CTX *ctx, const void *key,
                                               OSSL_ASYNC_FD fd, void *custom_data,
                                               void (*cleanup)(ASYNC_WAIT_CTX *, const void *,
                                                               OSSL_ASYNC_FD, void *));
/* The fd and custom data registered under key (either output may be NULL).
 * Returns 1, or 0 when there is none (nothing queued) or ctx is NULL. */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_get_fd(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD *fd,
                                          void **custom_data);
/* Stores the count of registered fds in *numfds and, when fd is not NULL,
 * the fds themselves (the caller provides room for *numfds of them: call
 * once with fd NULL to learn the count). Returns 1, or 0 with an error
 * queued for a NULL ctx or numfds. */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_get_all_fds(ASYNC_WAIT_CTX *ctx, OSSL_ASYNC_FD *fd,
                                               size_t *numfds);
/* The callback and argument set with _set_callback. Returns 0, leaving the
 * outputs alone, when none is set (nothing queued). */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_get_callback(ASYNC_WAIT_CTX *ctx, ASYNC_callback_fn *callback,
                                                void **callback_arg);
/* Stores a callback for async-aware code to call when its work completes
 * (asyncjob itself never calls it). A NULL callback removes it. */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_set_callback(ASYNC_WAIT_CTX *ctx, ASYNC_callback_fn callback,
                                                void *callback_arg);
/* Status shared between async-aware code and the application:
 * ASYNC_STATUS_UNSUPPORTED, _ERR, _OK or _EAGAIN (stored as given). */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_set_status(ASYNC_WAIT_CTX *ctx, int status);
/* The status; ASYNC_STATUS_ERR (error queued) for a NULL ctx. */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_get_status(ASYNC_WAIT_CTX *ctx);
/* The fds added and deleted since the job using ctx was last resumed
 * (counts in *numaddfds / *numdelfds, fds in addfd / delfd when not NULL).
 * An fd added and cleared within that time appears in neither list. The
 * lists start afresh only when a paused job is resumed, so changes made by
 * a job's last segment are still reported after it finished. Returns 1, or
 * 0 with an error queued for NULL ctx or counts. */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_get_changed_fds(ASYNC_WAIT_CTX *ctx, OSSL_ASYNC_FD *addfd,
                                                   size_t *numaddfds, OSSL_ASYNC_FD *delfd,
                                                   size_t *numdelfds);
/* Forgets the fd under key without running its cleanup routine; it is
 * reported as deleted unless it was added since the last resume. Returns 1,
 * or 0 when there is none (nothing queued) or ctx is NULL. */
ASYNCJOB_EXPORT int ASYNC_WAIT_CTX_clear_fd(ASYNC_WAIT_CTX *ctx, const void *key);

/* ----- asyncjob extensions ----- */

/* The error queue, read with asyncjob_get_error() and friends: see
 * <asyncjob/errors.h>, included above. */

/* ----- Cancellation (OpenSSL has none) ----- */

/* Cancels a paused job: it is resumed with its pause turned into an unwind
 * of its stack (C++ destructors and catch(...){ throw; } blocks run; C frames
 * are passed through), after the cancel hooks it registered ran, newest
 * first. Pausing is disabled while it unwinds. Then the cleanup routine of
 * every fd still set in its wait context runs and those fds are reported as
 * deleted by ASYNC_WAIT_CTX_get_changed_fds(), and the job returns to the
 * pool. On success returns 1 and sets *job to NULL. Returns 0 (error queued,
 * *job untouched) when *job is not a job paused on this thread: finished
 * (ASYNCJOB_R_JOB_NOT_PAUSED), running, or another thread's
 * (ASYNCJOB_R_WRONG_THREAD). May be called from anywhere on the job's thread,
 * including from destructors and cancel hooks of another job being
 * cancelled. */
ASYNCJOB_EXPORT int asyncjob_cancel_job(ASYNC_JOB **job);

/* Registers fn(arg) to run if the current job is cancelled, e.g. to withdraw
 * a request submitted to an accelerator before pausing. Up to 8 per job;
 * forgotten when the job finishes. The hooks also run when a paused job is
 * given up without being unwound: its wait context freed while its stack
 * cannot be unwound (it becomes a tombstone), or its thread exiting. They
 * run then outside the job, on the thread giving it up, before the job's
 * stack is released, so that whoever holds pointers into that stack lets
 * go of them. Returns 1, or 0 with an error queued outside a job
 * (ASYNCJOB_R_NOT_IN_JOB) or when 8 are registered. */
ASYNCJOB_EXPORT int asyncjob_add_cancel_hook(void (*fn)(void *arg), void *arg);
/* 1 when ASYNC_pause_job() would pause right now: inside a job, pausing not
 * blocked, the job not being cancelled. Async-aware code checks it before
 * offloading work, and runs the work inline when it is 0 (a pause that does
 * nothing would leave it spinning). */
ASYNCJOB_EXPORT int asyncjob_can_pause(void);

/* 1 while the current job is being cancelled (its stack unwinding), else 0.
 * Code that catches every exception inside a job checks it and rethrows. */
ASYNCJOB_EXPORT int asyncjob_is_cancelling(void);
/* Removes the newest hook registered with the same fn and arg. Returns 1, or
 * 0 (nothing queued) when there is none. */
ASYNCJOB_EXPORT int asyncjob_remove_cancel_hook(void (*fn)(void *arg), void *arg);

/* ----- Waking a job from another thread ----- */

/* For an engine completing a paused job's work on another thread: calls the
 * callback set in ctx (ASYNC_WAIT_CTX_set_callback) with its argument, both
 * as they are now, and returns 1. Returns 0, calling and queueing nothing,
 * when ctx has no callback, or none any more because its owner freed it
 * (ASYNC_WAIT_CTX_free) while the job was paused: a free on another thread
 * waits for a call in progress to return, so the callback's argument (the
 * owner's connection) is never used once the owner has freed it, which a
 * copy of the callback taken when the work was submitted cannot promise.
 * The callback must therefore not wait for the thread that frees ctx. It
 * may free ctx itself (which is then deleted as the outermost call for it
 * returns). ctx must be the context of a job that is still paused: a freed
 * context stays allocated while a paused job of another thread refers to
 * it, and the jobs of the freeing thread are given up after their cancel
 * hooks ran (asyncjob_add_cancel_hook). Returns 0 with an error queued for
 * a NULL ctx. */
ASYNCJOB_EXPORT int asyncjob_wait_ctx_call_callback(ASYNC_WAIT_CTX *ctx);

/* Usable stack size of jobs created from now on (default 64 KiB, 256 KiB
 * under AddressSanitizer). Rounded up to whole pages; at least 16 KiB, at
 * most 1 GiB. Returns 1, or 0 with an error queued (and the size kept) for
 * a size outside those bounds. Ignored for stacks from
 * ASYNC_set_mem_functions() allocators, whose *num must also lie within
 * them. */
ASYNCJOB_EXPORT int asyncjob_set_stack_size(size_t bytes);
ASYNCJOB_EXPORT size_t asyncjob_get_stack_size(void);

/* How many stacks in the process may have a guard region (each costs memory
 * mappings, of which Linux allows about 65,530). Past the budget, stacks come
 * from shared slabs and are checked by a canary at every pause and finish
 * instead. The default is a quarter of vm.max_map_count; 0 gives every stack
 * a slab, SIZE_MAX puts no limit. */
ASYNCJOB_EXPORT void asyncjob_set_guarded_stack_budget(size_t stacks);
ASYNCJOB_EXPORT size_t asyncjob_get_guarded_stack_budget(void);

/* Stack caches, on by default (64 per thread, 1024 process-wide). Freed
 * guarded stacks are kept mapped, guard in place, for later jobs instead of
 * being unmapped, and fresh ones are mapped several at a time: up to
 * per_thread stacks wait in each thread's cache and process in a
 * process-wide one, which receives a thread's cache when its last pool goes
 * (ASYNC_cleanup_thread, thread exit); so those calls leave up to `process`
 * stacks mapped (2 mappings each), of which at most 256 keep their pages.
 * At most 64 and 16384 (larger values are clamped). Lowering the limits
 * unmaps the excess of the calling thread's cache and of the process-wide
 * one at once; 0, 0 turns the caches off, and cleanup then leaves no
 * mapping behind. Cached stacks count against the guarded budget. The
 * environment variable ASYNCJOB_STACK_CACHE=per_thread,process sets them
 * when the library loads. */
ASYNCJOB_EXPORT void asyncjob_set_stack_cache_limits(size_t per_thread, size_t process);
ASYNCJOB_EXPORT void asyncjob_get_stack_cache_limits(size_t *per_thread, size_t *process);
/* Unmaps the stacks cached by the calling thread and by the process;
 * returns how many. */
ASYNCJOB_EXPORT size_t asyncjob_trim_stack_cache(void);

/* Counters of this thread's pool. */
typedef struct asyncjob_pool_stats {
  size_t max_size; /* 0: unlimited */
  size_t total;    /* jobs owned by the pool: idle + in use */
  size_t idle;     /* jobs ready for reuse */
  size_t in_use;   /* jobs running or paused */
  size_t guarded;  /* of total: stacks with a guard region */
  size_t slab;     /* of total: canary-checked slab stacks */
  size_t custom;   /* of total: stacks from ASYNC_set_mem_functions */
  /* of total, and neither idle nor in use: jobs orphaned when their wait
   * context was freed while they were paused, kept as tombstones until
   * released (docs/teardown.md). They do not count towards max_size. */
  size_t tombstones;
} asyncjob_pool_stats;
/* Fills *stats for the calling thread; returns 0 when it has no pool. */
ASYNCJOB_EXPORT int asyncjob_get_pool_stats(asyncjob_pool_stats *stats);

/* What the job machinery did in this process: the totals of threads whose
 * pools were cleaned up plus the calling thread's own counts. Setting the
 * environment variable ASYNCJOB_STATS=1 prints them to stderr at exit, so
 * that anyone can confirm which implementation ran a program's jobs. */
typedef struct asyncjob_stats {
  unsigned long long jobs_created; /* stacks allocated for jobs */
  unsigned long long jobs_freed;
  unsigned long long starts;  /* ASYNC_start_job with a new job */
  unsigned long long resumes; /* ASYNC_start_job resuming a paused job */
  unsigned long long pauses;  /* ASYNC_pause_job calls that paused */
  unsigned long long finishes;
  unsigned long long cancels;
  unsigned long long no_jobs; /* ASYNC_NO_JOBS answers */
  int libcrypto_connected;    /* 1: libctx switching and error mirroring */
  /* Paused jobs whose wait context was freed under them (a connection torn
   * down mid-operation; docs/teardown.md): of those, unwound and reused at
   * once (the code that paused them registered cancel hooks), the rest kept
   * as tombstones until their context is signalled. */
  unsigned long long orphans;
  unsigned long long orphans_unwound;
  unsigned long long tombstones;          /* made */
  unsigned long long tombstones_released; /* made - released: still kept */
} asyncjob_stats;
ASYNCJOB_EXPORT int asyncjob_get_stats(asyncjob_stats *stats);

/* The name of the context-switch back end compiled in: "x86_64-sysv",
 * "aarch64-aapcs" or "ucontext". */
ASYNCJOB_EXPORT const char *asyncjob_context_backend(void);

/* asyncjob reports a stack overflow into a guard region from a SIGSEGV/SIGBUS
 * handler installed when the first pool is made. Every other signal is
 * passed on exactly as the disposition installed before it would have
 * handled it. A program that owns its signals keeps the handler out with
 * asyncjob_set_overflow_handler(0) (or ASYNCJOB_OVERFLOW_HANDLER=0 in the
 * environment): the previous dispositions are put back where asyncjob's is
 * still installed, and an overflow then still stops at the guard, by
 * SIGSEGV, without the message. asyncjob_set_overflow_handler(1) installs it
 * now. Returns 1, or 0 with an error queued when sigaction() refused. */
ASYNCJOB_EXPORT int asyncjob_set_overflow_handler(int enabled);
/* 1 when asyncjob's handler is the current SIGSEGV disposition. */
ASYNCJOB_EXPORT int asyncjob_overflow_handler_installed(void);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCJOB_ASYNC_H */
