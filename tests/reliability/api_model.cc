// api_model.cc - the API fuzzer's reference model (see api_model.h).
#include "api_model.h"

#include <poll.h>

#include <algorithm>
#include <tuple>

namespace api_fuzzer {

Model* g_model = nullptr;

bool CleanupCall::operator<(const CleanupCall& o) const {
  return std::tie(ctx, key, fd, data) < std::tie(o.ctx, o.key, o.fd, o.data);
}
bool CleanupCall::operator==(const CleanupCall& o) const {
  return ctx == o.ctx && key == o.key && fd == o.fd && data == o.data;
}

namespace {

// The exceptions of jobs abandoned inside a catch block (tombstones): their
// frames never end the catch, so the runtime never frees them. Kept
// reachable for the life of the process, so that leak checkers see the
// fuzzer's choice, not a leak of the library's.
std::vector<std::exception_ptr>& Graveyard() {
  static auto* graveyard = new std::vector<std::exception_ptr>;
  return *graveyard;
}

}  // namespace

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
  job.ctx = -1;
  job.detached = -1;
  job.state = JState::kFinished;
  job.hooks.clear();
  job.caught = nullptr;
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
    case JState::kTombstone:
      return ASYNCJOB_R_JOB_ORPHANED;
    case JState::kExited:
      return ASYNCJOB_R_OWNER_THREAD_EXITED;
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

// ----- Shared and freed wait contexts -----

int JobsSharing(int slot) {
  int count = g_model->ctx[slot].foreign;
  for (const auto& job : g_model->jobs) {
    if (job->ctx == slot && (job->state == JState::kRunning || job->state == JState::kPaused ||
                             job->state == JState::kExited)) {
      ++count;
    }
  }
  return count;
}

bool FdReadable(int fd) {
  const int index = EventFdIndex(fd);
  if (index >= 0) return g_model->readable[index];
  pollfd polled{fd, POLLIN, 0};
  return poll(&polled, 1, 0) > 0;
}

void LetGoOfDetached(int index, std::vector<CleanupCall>* cleanups) {
  MDetached& d = g_model->detached[static_cast<std::size_t>(index)];
  FZ_CHECK(d.holders > 0, "model: a detached context let go of once too often");
  if (--d.holders > 0) return;
  for (const MEntry& e : d.entries) {
    if (e.cleanup) cleanups->push_back(CleanupCall{d.handle, e.key, e.fd, e.data});
  }
  d.entries.clear();
}

namespace {

bool Signalled(const MDetached& d) {
  return std::any_of(d.entries.begin(), d.entries.end(),
                     [](const MEntry& e) { return FdReadable(e.fd); });
}

// A tombstone goes back to its pool as if it had finished (never on its own
// stack), and lets go of its detached context.
void ReleaseTombstone(int id, std::vector<CleanupCall>* cleanups) {
  MJob& job = JobAt(id);
  const int index = job.detached;
  --g_model->pools[static_cast<std::size_t>(job.pool)]->tombstones;
  ++g_model->counters.tombstones_released;
  job.entered_return_free = false;
  ApplyFinish(job);
  LetGoOfDetached(index, cleanups);
  auto& list = g_model->tombstones;
  list.erase(std::find(list.begin(), list.end(), id));
}

}  // namespace

void ReleaseSignalledTombstones(std::vector<CleanupCall>* cleanups) {
  const std::vector<int> tombstones = g_model->tombstones;
  for (int id : tombstones) {
    const MJob& job = JobAt(id);
    if (Signalled(g_model->detached[static_cast<std::size_t>(job.detached)])) {
      ReleaseTombstone(id, cleanups);
    }
  }
}

void ReleaseAllTombstones(std::vector<CleanupCall>* cleanups) {
  const std::vector<int> tombstones = g_model->tombstones;
  for (int id : tombstones) ReleaseTombstone(id, cleanups);
}

int FreeContext(int slot, int self, std::vector<CleanupCall>* cleanups, std::vector<Hook>* hooks) {
  ReleaseSignalledTombstones(cleanups);
  MCtx& c = g_model->ctx[slot];
  int holders = c.foreign;
  std::vector<int> abandoned;
  for (const auto& owned : g_model->jobs) {
    MJob& job = *owned;
    if (job.ctx != slot) continue;
    if (job.state == JState::kRunning || job.state == JState::kExited) {
      job.ctx = -1;  // carries on without a context, or never runs again
      continue;
    }
    if (job.state != JState::kPaused) continue;
    // A paused job of this thread: nobody can resume it any more.
    job.ctx = -1;
    ++g_model->counters.orphans;
    if (!job.hooks.empty()) {
      // Unwound at once: its hooks run (newest first), it goes back to its
      // pool, and nothing is queued.
      ++g_model->counters.orphans_unwound;
      hooks->insert(hooks->end(), job.hooks.rbegin(), job.hooks.rend());
      Enter(job, self, /*cancelling=*/true);
      ApplyFinish(job);
      continue;
    }
    job.state = JState::kTombstone;
    ++g_model->counters.tombstones;
    ++g_model->pools[static_cast<std::size_t>(job.pool)]->tombstones;
    ++holders;
    if (job.caught != nullptr) {
      Graveyard().push_back(job.caught);
      job.caught = nullptr;
    }
    abandoned.push_back(job.id);
    g_model->tombstones.push_back(job.id);
  }
  g_model->current = self;
  int index = -1;
  if (holders == 0) {
    for (const MEntry& e : c.entries) {
      if (!e.deleted && e.cleanup) cleanups->push_back(CleanupCall{c.handle, e.key, e.fd, e.data});
    }
  } else {
    MDetached d;
    d.handle = c.handle;
    for (const MEntry& e : c.entries) {
      if (!e.deleted) d.entries.push_back(e);
    }
    d.holders = holders;
    g_model->detached.push_back(d);
    index = static_cast<int>(g_model->detached.size()) - 1;
    for (int id : abandoned) JobAt(id).detached = index;
  }
  c = MCtx{};
  return index;
}

}  // namespace api_fuzzer
