/*
 * header_conflict.c - <asyncjob/legacy.h> alone, or next to a header of the
 * current API, which must not compile (see tests/legacy/CMakeLists.txt).
 *   OTHER        0: none, 1: <asyncjob/async.h>, 2: <openssl/async.h>
 *   LEGACY_FIRST 1: legacy.h before the other header, 0: after it
 */
#if LEGACY_FIRST
#include <asyncjob/legacy.h>
#endif

#if OTHER == 1
#include <asyncjob/async.h>
#elif OTHER == 2
#include <openssl/async.h>
#endif

#if !LEGACY_FIRST
#include <asyncjob/legacy.h>
#endif

int legacy_header_probe(void) {
  ASYNC_JOB *job = NULL;
  int ret = 0;
  return ASYNC_start_job(&job, &ret, NULL, NULL, 0) + ASYNC_get_wait_fd(job);
}
