// detach_wait_ctx.cc - asyncjob::capi::DetachWaitCtx (see the header).
#include "capi/detach_wait_ctx.h"

#include "job/job.h"
#include "wait/wait_ctx.h"

namespace asyncjob::capi {

void DetachWaitCtx(ASYNC_WAIT_CTX* ctx) {
  wait::WaitContext* wait = wait::WaitContext::FromHandle(ctx);
  if (wait == nullptr) return;
  while (void* job = wait->AnyJob()) {
    static_cast<job::Job*>(job)->user_data = nullptr;
    wait->DetachJob(job);
  }
}

}  // namespace asyncjob::capi
