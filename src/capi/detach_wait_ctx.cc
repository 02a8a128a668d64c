// detach_wait_ctx.cc - asyncjob::capi::DetachWaitCtx (see the header).
#include "capi/detach_wait_ctx.h"

#include "job/job.h"
#include "wait/wait_ctx.h"

namespace asyncjob::capi {

void DetachWaitCtx(ASYNC_WAIT_CTX* ctx) {
  wait::WaitContext* wait = wait::WaitContext::FromHandle(ctx);
  if (wait == nullptr || wait->attached_job == nullptr) return;
  static_cast<job::Job*>(wait->attached_job)->user_data = nullptr;
  wait->attached_job = nullptr;
}

}  // namespace asyncjob::capi
