/*
 * asyncjob/introspect.h - seeing inside: which jobs exist, which are paused,
 * where, for how long and on how much stack.
 *
 * What it is for: a server with thousands of jobs paused is otherwise a
 * black box (a debugger shows the thread's stack, never the jobs'). These
 * functions list the jobs of the calling thread or of the whole process,
 * give the backtrace of a paused job, count what the job machinery did, and
 * dump all of it to a FILE. They take no lock on the start, pause and
 * resume paths and mostly read what the library keeps anyway (a whole
 * start/pause/resume/finish cycle costs 4 instructions more for them).
 * C++: <asyncjob/introspect.hpp>.
 *
 * How to use it:
 *
 *   struct asyncjob_stats_ex stats;
 *   stats.size = sizeof stats;                       // always, first
 *   asyncjob_get_stats_ex(&stats, ASYNCJOB_SCOPE_PROCESS);
 *
 *   static int show(const asyncjob_job_info *job, void *arg) {
 *     printf("%p %s in %s\n", job->job, asyncjob_job_state_name(job->state),
 *            job->function_name ? job->function_name : "?");
 *     return 1;                                      // 0 stops the walk
 *   }
 *   asyncjob_for_each_job(show, NULL);
 *
 *   asyncjob_dump(stderr);                           // everything
 *
 * Without touching the program: ASYNCJOB_DUMP=exit dumps at exit,
 * ASYNCJOB_DUMP_ON_FILE=path dumps (to stderr) whenever that file appears,
 * and the gdb extension installed with the library (asyncjob jobs,
 * asyncjob bt, asyncjob stats) reads the same data from a live process or
 * a core file. docs/debugging.md explains each figure.
 */
#ifndef ASYNCJOB_INTROSPECT_H
#define ASYNCJOB_INTROSPECT_H

#include <stddef.h>
#include <stdio.h>

#include "asyncjob/async.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scopes of asyncjob_get_stats_ex(). */
#define ASYNCJOB_SCOPE_THREAD 0  /* the calling thread's counts and jobs */
#define ASYNCJOB_SCOPE_PROCESS 1 /* every thread's, finished ones included */

/* Versioned: set size to sizeof(struct asyncjob_stats_ex) before the call.
 * The library fills the fields that fit in size (later versions only add
 * fields at the end) and refuses a size below that of the first version. */
typedef struct asyncjob_stats_ex {
  size_t size;
  /* Counts since the start (the thread's, or the process's). */
  unsigned long long jobs_created; /* stacks allocated for jobs */
  unsigned long long jobs_freed;
  unsigned long long starts;
  unsigned long long pauses;
  unsigned long long resumes;
  unsigned long long finishes;
  unsigned long long cancels;
  unsigned long long no_jobs;
  unsigned long long orphans; /* see asyncjob_get_stats(3) */
  unsigned long long orphans_unwound;
  unsigned long long tombstones;
  unsigned long long tombstones_released;
  /* Now, from a walk over the jobs of the scope. */
  unsigned long long jobs_live;   /* created and not freed: idle or not */
  unsigned long long jobs_paused; /* paused now */
  unsigned long long jobs_running;
  unsigned long long stacks_guarded; /* live jobs by kind of stack */
  unsigned long long stacks_slab;
  unsigned long long stacks_custom;
  unsigned long long stack_bytes_reserved; /* usable bytes of their stacks */
  unsigned long long stack_bytes_resident; /* of those, in memory now */
  unsigned long long deepest_stack_bytes;  /* largest high-water mark */
  unsigned long long stack_size;           /* asyncjob_get_stack_size() */
  /* The most jobs paused at once on one thread (the thread's own, or the
   * highest of any thread in the process). */
  unsigned long long peak_paused;
  /* Wake-ups of paused jobs that engines reported with
   * asyncjob_count_wakeup() (asyncjob's offload engine and provider report
   * every one of theirs), by the way they woke the job; process-wide in
   * both scopes, since the waking thread is rarely the job's. */
  unsigned long long wakeups_by_callback;
  unsigned long long wakeups_by_fd;
  /* Stack overflows caught (guard page or canary), process-wide. Each
   * stops the process after its message: a live process reads 0; a core
   * file shows the count (gdb: asyncjob stats). */
  unsigned long long stack_overflows;
} asyncjob_stats_ex;

/* Fills *out for scope ASYNCJOB_SCOPE_THREAD or ASYNCJOB_SCOPE_PROCESS.
 * Returns 1, or 0 with an error queued (ASYNCJOB_R_PASSED_NULL_PARAMETER,
 * ASYNCJOB_R_PASSED_INVALID_ARGUMENT for a size too small or a bad
 * scope). */
ASYNCJOB_EXPORT int asyncjob_get_stats_ex(asyncjob_stats_ex *out, int scope);

/* States of a job, as in asyncjob_job_info.state. */
#define ASYNCJOB_JOB_IDLE 0      /* in its pool, waiting to be started */
#define ASYNCJOB_JOB_RUNNING 1   /* running, or has a nested job running */
#define ASYNCJOB_JOB_PAUSED 2    /* paused, to be resumed */
#define ASYNCJOB_JOB_ORPHANED 3  /* left paused by a thread that exited */
#define ASYNCJOB_JOB_TOMBSTONE 4 /* abandoned when its wait context was freed */

/* Kinds of stack, as in asyncjob_job_info.stack_kind. */
#define ASYNCJOB_STACK_GUARDED 0
#define ASYNCJOB_STACK_SLAB 1
#define ASYNCJOB_STACK_CUSTOM 2

/* One job, as the visitors of asyncjob_for_each_job() see it. Valid only
 * during the call. */
typedef struct asyncjob_job_info {
  ASYNC_JOB *job;
  int state;                 /* ASYNCJOB_JOB_* */
  unsigned long thread_id;   /* kernel thread id of the pool's thread */
  void *function;            /* what it was last started with (NULL: never) */
  const char *function_name; /* its symbol (dladdr), or NULL */
  ASYNC_WAIT_CTX *wait_ctx;  /* NULL when none */
  size_t num_fds;            /* fds registered in wait_ctx */
  /* Nanoseconds since it paused, when pause timestamps are on
   * (asyncjob_set_pause_timestamps()); else 0. */
  unsigned long long paused_for_ns;
  void *pause_caller; /* the code that called ASYNC_pause_job() last */
  void *stack_low;    /* usable stack: [stack_low, stack_low + stack_size) */
  size_t stack_size;
  int stack_kind; /* ASYNCJOB_STACK_* */
  /* How deep this stack has ever been used, in bytes from its top: the
   * lowest resident page (mincore). Guarded stacks: since the stack was
   * mapped (a cached stack remembers the jobs that used it before); slab
   * stacks: since the slab was mapped; custom stacks and orphans: 0
   * (unknown). */
  size_t stack_high_water;
} asyncjob_job_info;

/* Returns nonzero to go on, 0 to stop. */
typedef int (*asyncjob_job_visitor)(const asyncjob_job_info *info, void *arg);

/* Calls visit for each job of the calling thread (idle ones too). Returns
 * the number of calls, or -1 with an error queued for a NULL visit. */
ASYNCJOB_EXPORT int asyncjob_for_each_job(asyncjob_job_visitor visit, void *arg);
/* The same for every job of the process, from any thread. The registry of
 * pools and each pool's job list are locked meanwhile: visit must not
 * create or free jobs, pools or threads' pools (no ASYNC_start_job,
 * ASYNC_init_thread, ASYNC_cleanup_thread), and the states of other
 * threads' jobs are a snapshot that may already have changed. */
ASYNCJOB_EXPORT int asyncjob_for_each_job_in_process(asyncjob_job_visitor visit, void *arg);

/* Return addresses of a paused job of the calling thread, innermost first:
 * the code that called ASYNC_pause_job(), then its callers found by the
 * frame-pointer chain saved with its registers (complete for code built
 * with frame pointers; the walk stops at the first frame pointer outside
 * the job's stack). Returns how many were stored (at most max), or -1 with
 * an error queued: NULL job or frames, max < 1
 * (ASYNCJOB_R_PASSED_NULL_PARAMETER, _PASSED_INVALID_ARGUMENT), a job that
 * is not paused (ASYNCJOB_R_JOB_NOT_PAUSED) or not this thread's
 * (ASYNCJOB_R_WRONG_THREAD). */
ASYNCJOB_EXPORT int asyncjob_job_backtrace(ASYNC_JOB *job, void **frames, int max);
/* Prints that backtrace to out, a line a frame with its symbol (dladdr).
 * Returns the number of frames, or -1 as asyncjob_job_backtrace(). */
ASYNCJOB_EXPORT int asyncjob_print_backtrace(ASYNC_JOB *job, FILE *out);

/* Writes the process's counters and every job to out. Returns 1, or 0 with
 * an error queued for a NULL out. */
ASYNCJOB_EXPORT int asyncjob_dump(FILE *out);

/* With on != 0 every pause records when it happened (a coarse monotonic
 * clock read), so that asyncjob_job_info.paused_for_ns is known; off by
 * default (ASYNCJOB_PAUSE_TIMES=1 turns it on at load). Returns the
 * previous setting. */
ASYNCJOB_EXPORT int asyncjob_set_pause_timestamps(int on);

/* How an engine woke a paused job, for asyncjob_count_wakeup(). */
#define ASYNCJOB_WAKEUP_BY_CALLBACK 0 /* the wait context's callback */
#define ASYNCJOB_WAKEUP_BY_FD 1       /* a write to a wait fd */
/* For engines: counts one wake-up of a paused job in the process's
 * wakeups_by_callback or wakeups_by_fd (asyncjob_get_stats_ex()). The
 * library cannot see an engine call a callback or write an fd; an engine
 * that calls this after each wake-up makes its traffic visible. Safe from
 * any thread. Returns 1, or 0 with an error queued
 * (ASYNCJOB_R_PASSED_INVALID_ARGUMENT) for another value of how. */
ASYNCJOB_EXPORT int asyncjob_count_wakeup(int how);
/* "idle", "running", "paused", "orphaned", "tombstone", or "?". */
ASYNCJOB_EXPORT const char *asyncjob_job_state_name(int state);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCJOB_INTROSPECT_H */
