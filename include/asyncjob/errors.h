/*
 * asyncjob/errors.h - asyncjob's thread-local error queue: how its codes are
 * packed, the reasons they carry, and the functions that read the queue.
 *
 * Both APIs report through this one queue, so both of their headers include
 * this one: <asyncjob/async.h> (OpenSSL 3's API) and <asyncjob/legacy.h> (the
 * OpenSSL 1.1.0-pre3 API). Those two refuse to share a translation unit; this
 * header takes no side and may be included with either of them, on its own,
 * or next to OpenSSL's own headers (the ASYNC_R_* values below are the same
 * as OpenSSL's, so the definitions agree). It knows nothing of jobs or wait
 * contexts.
 *
 * Every call that fails (ASYNC_ERR, a 0 that means failure) queues an entry
 * on the calling thread: a packed code in OpenSSL's layout (library in bits
 * 23..30, reason in bits 0..22) and a message. Lookups that merely find
 * nothing (ASYNC_WAIT_CTX_get_fd or _clear_fd of an unknown key,
 * _get_callback with none set) return 0 without queueing, as OpenSSL does,
 * so that they never leave stale errors behind for libssl to trip over.
 * The queue keeps the newest 16 entries.
 */
#ifndef ASYNCJOB_ERRORS_H
#define ASYNCJOB_ERRORS_H

/* Marks the functions libasyncjob exports. Every public C header of asyncjob
 * includes this one, so this is where it is defined. */
#ifndef ASYNCJOB_EXPORT
#if defined(ASYNCJOB_STATIC_DEFINE) || !defined(__GNUC__)
#define ASYNCJOB_EXPORT
#else
#define ASYNCJOB_EXPORT __attribute__((visibility("default")))
#endif
#endif

/* ----- Codes ----- */

#define ASYNCJOB_ERR_LIB_ASYNC 51
#define ASYNCJOB_ERR_GET_LIB(code) ((int)(((code) >> 23) & 0xFFL))
#define ASYNCJOB_ERR_GET_REASON(code) ((int)((code)&0x7FFFFFL))

/* Reason codes of the ASYNC library (same numbers as OpenSSL's asyncerr.h). */
#define ASYNC_R_FAILED_TO_SET_POOL 101
#define ASYNC_R_FAILED_TO_SWAP_CONTEXT 102
#define ASYNC_R_INVALID_POOL_SIZE 103
#define ASYNC_R_INIT_FAILED 105

/* Reasons beyond ASYNC_R_*: OpenSSL's common reasons (same values) ... */
#define ASYNCJOB_R_MALLOC_FAILURE (256 | (3 << 18))
#define ASYNCJOB_R_PASSED_NULL_PARAMETER (258 | (3 << 18))
#define ASYNCJOB_R_INTERNAL_ERROR (259 | (3 << 18))
#define ASYNCJOB_R_PASSED_INVALID_ARGUMENT (262 | (2 << 18))
/* ... and asyncjob's own, in the ASYNC library's range. */
#define ASYNCJOB_R_WRONG_THREAD 120
#define ASYNCJOB_R_JOB_NOT_PAUSED 121
#define ASYNCJOB_R_STACK_ALLOCATION_FAILED 122
#define ASYNCJOB_R_DUPLICATE_KEY 123
#define ASYNCJOB_R_MEM_FUNCTIONS_LOCKED 124
#define ASYNCJOB_R_JOBS_OUTSTANDING 125
#define ASYNCJOB_R_WAIT_CTX_IN_USE 126
#define ASYNCJOB_R_NOT_IN_JOB 127
#define ASYNCJOB_R_TOO_MANY_CANCEL_HOOKS 128
/* asyncjob_cancel_job: the job's stack cannot be unwound (a frame between
 * its pause and its start has no unwind information) or must not be (a
 * noexcept function or a destructor is on it); the job is left paused. */
#define ASYNCJOB_R_STACK_NOT_UNWINDABLE 129
#define ASYNCJOB_R_NOEXCEPT_FRAME 130
/* A cancel hook threw; the exception was dropped and the cancellation went
 * on (asyncjob_cancel_job still returns 1). */
#define ASYNCJOB_R_CANCEL_HOOK_THREW 131
/* The job was left paused by a thread that has since exited: no thread can
 * resume or cancel it any more. */
#define ASYNCJOB_R_OWNER_THREAD_EXITED 132
/* The job's wait context was freed while it was paused (a connection torn
 * down mid-operation): the job was orphaned and never runs again
 * (docs/teardown.md). ASYNC_WAIT_CTX_free itself queues nothing. */
#define ASYNCJOB_R_JOB_ORPHANED 133

/* ----- Reading the queue ----- */

#ifdef __cplusplus
extern "C" {
#endif

/* Removes and returns the oldest entry (0 when the queue is empty). When
 * message is not NULL it receives the entry's text, valid until the next
 * call of these functions on this thread. */
ASYNCJOB_EXPORT unsigned long asyncjob_get_error(const char **message);
/* Like asyncjob_get_error() but leaves the entry queued. */
ASYNCJOB_EXPORT unsigned long asyncjob_peek_error(const char **message);
/* The newest entry, left queued. */
ASYNCJOB_EXPORT unsigned long asyncjob_peek_last_error(const char **message);
ASYNCJOB_EXPORT void asyncjob_clear_errors(void);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCJOB_ERRORS_H */
