// detach_wait_ctx.h - for layers built on the C API that own the wait
// context of each job they start (src/legacy): ending the tie between a
// context and its job quietly, so that the context can be freed while the
// job is still running or paused.
//
// ASYNC_WAIT_CTX_free() under a paused job orphans the job instead (it never
// runs again: docs/teardown.md), since an application that frees the
// context has dropped the job too. A layer that frees its context on purpose as the job ends (from
// inside the job, where the C API still holds the context until the job has
// returned) or at its thread's exit (under a job that can never run again)
// detaches it first. Nothing of this runs on the C API's own paths.
#ifndef ASYNCJOB_SRC_CAPI_DETACH_WAIT_CTX_H_
#define ASYNCJOB_SRC_CAPI_DETACH_WAIT_CTX_H_

#include "asyncjob/async.h"

namespace asyncjob::capi {

// Every job started with ctx that has not ended carries on without a wait
// context (ASYNC_get_wait_ctx() gives NULL, and its end and
// cancellation leave ctx alone); ctx can then be started with again or
// freed. Nothing is queued. NULL does nothing. Call it on the job's thread.
void DetachWaitCtx(ASYNC_WAIT_CTX* ctx);

}  // namespace asyncjob::capi

#endif  // ASYNCJOB_SRC_CAPI_DETACH_WAIT_CTX_H_
