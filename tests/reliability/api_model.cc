// api_model.cc - the API fuzzer's reference model (see api_model.h).
#include "api_model.h"

#include <algorithm>

namespace api_fuzzer {

Model* g_model = nullptr;

std::vector<std::uint8_t>& Pattern() {
  static std::vector<std::uint8_t>* pattern = [] {
    auto* bytes = new std::vector<std::uint8_t>(1 << 20);
    std::uint32_t x = 0x9e3779b9u;
    for (std::uint8_t& b : *bytes) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      b = static_cast<std::uint8_t>(x);
    }
    return bytes;
  }();
  return *pattern;
}

// ----- Pool bookkeeping -----

MPool* CurrentPool() {
  return g_model->pool >= 0 ? g_model->pools[static_cast<std::size_t>(g_model->pool)].get()
                            : nullptr;
}

MPool* EnsurePool() {
  if (g_model->pool < 0) {
    g_model->pools.push_back(std::make_unique<MPool>());
    g_model->pool = static_cast<int>(g_model->pools.size()) - 1;
  }
  return CurrentPool();
}

void CountStack(Kind kind, int delta) {
  std::size_t* counter = kind == kGuarded  ? &g_model->guarded_live
                         : kind == kCustom ? &g_model->custom_live
                                           : nullptr;
  if (counter == nullptr) return;
  if (delta > 0)
    ++*counter;
  else
    --*counter;
}

NewStack PredictNewStack(std::size_t plan_index, std::size_t guarded_extra) {
  if (g_mode == Mode::kCustom) {
    AllocOutcome outcome = PlanAt(plan_index);
    bool ok = outcome != AllocOutcome::kNull && outcome != AllocOutcome::kTooSmall;
    return {ok, kCustom};
  }
  return {true, g_model->guarded_live + guarded_extra < g_model->budget ? kGuarded : kSlab};
}

void FreeIdle(MPool* pool) {
  FZ_CHECK(pool->idle_kinds[0] + pool->idle_kinds[1] + pool->idle_kinds[2] == pool->idle,
           "model: idle kinds do not add up");
  for (int k = 0; k < 3; ++k) {
    pool->kinds[k] -= pool->idle_kinds[k];
    pool->total -= pool->idle_kinds[k];
    for (std::size_t i = 0; i < pool->idle_kinds[k]; ++i) CountStack(static_cast<Kind>(k), -1);
    pool->idle_kinds[k] = 0;
  }
  pool->idle = 0;
  g_model->idle_handles.clear();
}

void RemoveIdleHandle(ASYNC_JOB* handle) {
  auto it = std::find(g_model->idle_handles.begin(), g_model->idle_handles.end(), handle);
  if (it != g_model->idle_handles.end()) g_model->idle_handles.erase(it);
}

bool KnownIdle(ASYNC_JOB* handle) {
  return std::find(g_model->idle_handles.begin(), g_model->idle_handles.end(), handle) !=
         g_model->idle_handles.end();
}

void FlushDeferred() {
  for (int id : g_model->deferred) {
    const MJob& job = *g_model->jobs[static_cast<std::size_t>(id)];
    MPool* pool = g_model->pools[static_cast<std::size_t>(job.pool)].get();
    --pool->total;
    --pool->kinds[job.kind];
    CountStack(job.kind, -1);
  }
  g_model->deferred.clear();
}

// ----- Jobs -----

void ApplyFinish(MJob& job) {
  if (job.ctx >= 0) g_model->ctx[job.ctx].attached = -1;
  job.ctx = -1;
  job.state = JState::kFinished;
  job.hooks.clear();
  MPool* pool = g_model->pools[static_cast<std::size_t>(job.pool)].get();
  if (pool->closing && job.entered_return_free) {
    g_model->deferred.push_back(job.id);
  } else if (pool->closing) {
    --pool->total;
    --pool->kinds[job.kind];
    CountStack(job.kind, -1);
  } else {
    ++pool->idle;
    ++pool->idle_kinds[job.kind];
    g_model->idle_handles.push_back(job.handle);
  }
}

int ResumeVerdict(const MJob& target) {
  switch (target.state) {
    case JState::kPaused:
      return 0;
    case JState::kRunning:
      return ASYNCJOB_R_JOB_NOT_PAUSED;
    case JState::kFinished:
      return KnownIdle(target.handle) ? ASYNCJOB_R_JOB_NOT_PAUSED : -1;
  }
  return -1;
}

void Enter(MJob& target, int self, bool cancelling) {
  target.state = JState::kRunning;
  target.parent = self;
  ++target.entries;
  target.entered_return_free = kReturnFreeBuild && !cancelling &&
                               !g_model->pools[static_cast<std::size_t>(target.pool)]->closing;
  FlushDeferred();
  g_model->current = target.id;
}

}  // namespace api_fuzzer
