/*
 * asyncjob/legacy.h - the asynchronous job API of OpenSSL 1.1.0-pre3, for
 * programs written against that pre-release.
 *
 * ONE API PER TRANSLATION UNIT. The pre-release's ASYNC_start_job() has no
 * wait-context parameter, so it cannot share a name with the current one. A
 * translation unit (a .c or .cc file with everything it includes) uses either
 * this header or <asyncjob/async.h> / <openssl/async.h>, never both: including
 * them together is a compile error, in either order. One program may mix both
 * kinds of translation units; they link against the same libasyncjob and
 * share its jobs, pools and error queue.
 *
 * Symbol mapping. The names whose meaning changed, or which the current API
 * lacks, are macros for functions of their own:
 *
 *   ASYNC_init         -> asyncjob_legacy_init
 *   ASYNC_cleanup      -> asyncjob_legacy_cleanup
 *   ASYNC_start_job    -> asyncjob_legacy_start_job
 *   ASYNC_in_job       -> asyncjob_legacy_in_job
 *   ASYNC_get_wait_fd  -> asyncjob_legacy_get_wait_fd
 *   ASYNC_wake         -> asyncjob_legacy_wake
 *   ASYNC_clear_wake   -> asyncjob_legacy_clear_wake
 *
 * ASYNC_init_thread, ASYNC_cleanup_thread, ASYNC_pause_job,
 * ASYNC_get_current_job, ASYNC_block_pause and ASYNC_unblock_pause have the
 * same signature and behaviour in both APIs and are the very same functions.
 *
 * Jobs. Each job started by this header's ASYNC_start_job runs with a wait
 * context of its own (an ASYNC_WAIT_CTX of the current API, created when the
 * job starts and freed when it ends). Code inside the job that was written
 * for the current API sees that context through ASYNC_get_wait_ctx(); its
 * callback is set to wake the job (as ASYNC_wake() does), which is how such
 * code tells the program a legacy job may resume. That code must not
 * replace the callback or free the context.
 *
 * Ends. A legacy job ends when it finishes, resumed by this header's
 * ASYNC_start_job or by the current API's, or when it is cancelled with
 * asyncjob_cancel_job() of <asyncjob/async.h> (from a translation unit of
 * the current API; the job unwinds as any job does). Either way its context
 * is freed, which runs the cleanup routines of the fds still set there, and
 * its wait fd is closed. ASYNC_get_wait_fd(), ASYNC_wake() and
 * ASYNC_clear_wake() work on a job being cancelled, from its cancel hooks
 * and destructors; the cleanup routines run last, inside the job, when it is
 * no longer tied to the context: there they can wake it through the
 * context's callback, but those three functions report an error and
 * ASYNC_pause_job() does nothing.
 *
 * Wait fds. A job's wait fd is an eventfd (O_CLOEXEC, O_NONBLOCK), created
 * the first time ASYNC_get_wait_fd() or ASYNC_wake() needs it; a job that
 * never asks costs no descriptor. It stays the same for the job's life and is
 * readable from ASYNC_wake() until ASYNC_clear_wake() (any number of wakes are
 * cleared by one ASYNC_clear_wake()). It is closed when the job ends.
 * A job still paused when its thread's pool is cleaned up lives on, and so
 * does its fd, until it ends; when its thread exits, the fd is closed and
 * the context freed (the job itself can never run again). Wait on the fd
 * only: do not read from or write to it.
 *
 * Threads. As with the current API a job is resumed only on the thread that
 * started it. ASYNC_get_wait_fd(), ASYNC_wake() and ASYNC_clear_wake() may be
 * called on a job from any thread, as long as the job cannot end during the
 * call (it is running, or paused and not being resumed or cancelled, and its
 * thread does not exit).
 *
 * Errors are queued on asyncjob's thread-local error queue; read them with
 * asyncjob_get_error() and friends, declared with the reason codes in
 * <asyncjob/errors.h>, which this header includes (as <asyncjob/async.h>
 * does).
 */
#ifndef ASYNCJOB_LEGACY_H
#define ASYNCJOB_LEGACY_H

/* Only libasyncjob's own implementation of this API includes both headers:
 * it defines ASYNCJOB_LEGACY_IMPLEMENTATION and gets the asyncjob_legacy_*
 * declarations alone. */
#ifndef ASYNCJOB_LEGACY_IMPLEMENTATION

/* <asyncjob/async.h> or <openssl/async.h> (OpenSSL's own, or asyncjob's
 * stand-in for it) came first. */
#if defined(ASYNCJOB_ASYNC_H) || defined(OPENSSL_ASYNC_H) || defined(HEADER_ASYNC_H)
#error \
    "<asyncjob/legacy.h> (the OpenSSL 1.1.0-pre3 API) cannot be combined with <asyncjob/async.h> or <openssl/async.h> in one translation unit: use one API per file"
#endif

/* <asyncjob/async.h> or <openssl/async.h> comes later: both declare
 * ASYNC_WAIT_CTX (which the pre-release API does not have) in a typedef, which
 * this macro turns into a failed static assertion that says why. */
#ifdef __cplusplus
#define ASYNCJOB_LEGACY_STATIC_ASSERT static_assert
#else
#define ASYNCJOB_LEGACY_STATIC_ASSERT _Static_assert
#endif
#define ASYNC_WAIT_CTX                                                            \
  asyncjob_legacy_conflict;                                                       \
  ASYNCJOB_LEGACY_STATIC_ASSERT(                                                  \
      0,                                                                          \
      "<asyncjob/legacy.h> (the OpenSSL 1.1.0-pre3 API) cannot be combined with " \
      "<asyncjob/async.h> or <openssl/async.h> in one translation unit: use one API per file")

#endif /* !ASYNCJOB_LEGACY_IMPLEMENTATION */

#include <stddef.h>

/* The error queue (asyncjob_get_error() and friends), its reason codes
 * (ASYNC_R_*, ASYNCJOB_R_*) and ASYNCJOB_EXPORT: shared with
 * <asyncjob/async.h>, and no cause of conflict with it. */
#include "asyncjob/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct async_job_st ASYNC_JOB;

/* ----- The functions behind the legacy names (see the mapping above) ----- */

/* ASYNC_init: with init_thread non-zero, ASYNC_init_thread(max_size,
 * init_size) and its result (0, error queued, for sizes it refuses);
 * otherwise 1 (there is no process-wide state to set up; the sizes are not
 * used, as in the pre-release). */
ASYNCJOB_EXPORT int asyncjob_legacy_init(int init_thread, size_t max_size, size_t init_size);
/* ASYNC_cleanup: with cleanupthread non-zero, ASYNC_cleanup_thread();
 * otherwise nothing. */
ASYNCJOB_EXPORT void asyncjob_legacy_cleanup(int cleanupthread);
/* ASYNC_start_job: as the current API's with a wait context of the job's own
 * (see "Jobs" above). Starts (*job == NULL) or resumes a job; returns
 * ASYNC_PAUSE (*job set), ASYNC_FINISH (*ret set, *job NULL, the job's wait
 * fd closed), ASYNC_NO_JOBS (pool exhausted, nothing changed, no error
 * queued) or ASYNC_ERR (error queued, nothing left behind). */
ASYNCJOB_EXPORT int asyncjob_legacy_start_job(ASYNC_JOB **job, int *ret, int (*func)(void *),
                                              void *args, size_t size);
/* ASYNC_in_job: 1 when called from code running inside a job, else 0. */
ASYNCJOB_EXPORT int asyncjob_legacy_in_job(void);
/* ASYNC_get_wait_fd: the job's wait fd (created now if need be), or -1 with
 * an error queued when job is NULL, is not a running or paused job started by
 * this API's ASYNC_start_job, or the eventfd cannot be created (reason
 * ASYNC_R_INIT_FAILED). */
ASYNCJOB_EXPORT int asyncjob_legacy_get_wait_fd(ASYNC_JOB *job);
/* ASYNC_wake: makes the job's wait fd readable (creating it if need be).
 * Errors as for ASYNC_get_wait_fd. */
ASYNCJOB_EXPORT void asyncjob_legacy_wake(ASYNC_JOB *job);
/* ASYNC_clear_wake: makes the job's wait fd unreadable again; nothing to do
 * when it was never woken. Errors as for ASYNC_get_wait_fd. */
ASYNCJOB_EXPORT void asyncjob_legacy_clear_wake(ASYNC_JOB *job);

#ifndef ASYNCJOB_LEGACY_IMPLEMENTATION

/* ----- The API of the 1.1.0 pre-release ----- */

#define ASYNC_init asyncjob_legacy_init
#define ASYNC_cleanup asyncjob_legacy_cleanup
#define ASYNC_start_job asyncjob_legacy_start_job
#define ASYNC_in_job asyncjob_legacy_in_job
#define ASYNC_get_wait_fd asyncjob_legacy_get_wait_fd
#define ASYNC_wake asyncjob_legacy_wake
#define ASYNC_clear_wake asyncjob_legacy_clear_wake

/* Return values of ASYNC_start_job(). */
#define ASYNC_ERR 0
#define ASYNC_NO_JOBS 1
#define ASYNC_PAUSE 2
#define ASYNC_FINISH 3

/* The same functions as in <asyncjob/async.h>. */

/* Creates this thread's pool: at most max_size jobs (0: no limit), init_size
 * of them created now. Returns 1, or 0 with an error queued. */
ASYNCJOB_EXPORT int ASYNC_init_thread(size_t max_size, size_t init_size);
/* Frees this thread's idle jobs and its pool; jobs still paused are freed
 * when they finish. */
ASYNCJOB_EXPORT void ASYNC_cleanup_thread(void);
/* Returns control to the code that started or last resumed the current job.
 * Returns 1; outside a job or while pausing is blocked it does nothing. */
ASYNCJOB_EXPORT int ASYNC_pause_job(void);
/* The job running on this thread, or NULL. */
ASYNCJOB_EXPORT ASYNC_JOB *ASYNC_get_current_job(void);
/* Nestable; the count belongs to the current job and dies with it. */
ASYNCJOB_EXPORT void ASYNC_block_pause(void);
ASYNCJOB_EXPORT void ASYNC_unblock_pause(void);

#endif /* !ASYNCJOB_LEGACY_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* ASYNCJOB_LEGACY_H */
