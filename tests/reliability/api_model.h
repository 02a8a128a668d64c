// api_model.h - the API fuzzer's reference model: what the library should
// be doing, by the semantics README.md documents ("Behaviour" and its table
// of errors) and <asyncjob/async.h> states.
//
// It holds this thread's pools (their limits, counts and the kind of every
// stack), the jobs the input started (state, parent, wait context, blocks,
// cancel hooks, the script each runs), and the wait contexts (fds with their
// change tracking, callback, status, the jobs sharing each); and it moves
// that state as the library's calls should move it: a job entered, finished
// or cancelled, a pool cleaned up, a new stack predicted as guarded, slab or
// a custom allocation that fails.
//
// Teardown (a wait context freed under its jobs, threads that exit with
// jobs paused) is modelled too:
//   - A context serves any number of jobs; cancelling one cleans up the
//     context's fds only when it is the context's only job.
//   - Freeing a context: its running jobs (and jobs left by an exited
//     thread) carry on without one; this thread's paused jobs with cancel
//     hooks are unwound at once (hooks run, back to the pool); the others
//     become tombstones (out of in_use, refused with ASYNCJOB_R_JOB_ORPHANED)
//     that keep the detached context, whose cleanup routines run only when
//     its last holder lets go. A tombstone is released when one of its
//     context's fds is readable (looked at by ASYNC_WAIT_CTX_new,
//     ASYNC_WAIT_CTX_free and ASYNC_init_thread), or by
//     ASYNC_cleanup_thread. Freeing queues no error.
//   - Jobs left paused by a thread that exited are refused with
//     ASYNCJOB_R_OWNER_THREAD_EXITED for good, and keep their stacks for
//     the life of the process.
//   - The orphan and tombstone counters of asyncjob_get_stats().
//
// It knows nothing of decoding inputs or of calling the library:
// api_fuzzer.cc does both, then compares what the library did with what the
// model says it should have done.
#ifndef ASYNCJOB_TESTS_RELIABILITY_API_MODEL_H_
#define ASYNCJOB_TESTS_RELIABILITY_API_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "asyncjob/async.h"
#include "fuzz_support.h"

namespace api_fuzzer {

constexpr int kMaxCtx = 4;  // wait-context slots

// ----- State -----

struct MPool {
  std::size_t max = 0;
  std::size_t total = 0;
  std::size_t idle = 0;
  std::size_t kinds[3] = {0, 0, 0};       // every job of the pool
  std::size_t idle_kinds[3] = {0, 0, 0};  // the idle ones
  std::size_t tombstones = 0;             // of total: neither idle nor in use
  bool closing = false;
  std::size_t in_use() const { return total - idle - tombstones; }
};

// kTombstone: paused when its wait context was freed, and had no cancel
// hooks: it never runs again, and holds its detached context until released.
// kExited: left paused by a thread that exited (not this thread's job).
enum class JState { kRunning, kPaused, kFinished, kTombstone, kExited };

// Job arguments are a window of a fixed pseudo-random pattern, filled and
// checked with memcpy/memcmp (byte loops would cost the fuzzer more than the
// library does).
constexpr std::size_t kPatternWindows = 4096;
std::vector<std::uint8_t>& Pattern();

struct ArgsSpec {
  int mode = 0;  // 0 NULL, 1 NULL with a size, 2 size 0, 3 small, 4 quarter stack, 5 heap
  std::size_t size = 0;
  unsigned seed = 0;
  const std::uint8_t* Bytes() const { return Pattern().data() + (seed * 97u) % kPatternWindows; }
};

struct Hook {
  int which;
  void* arg;
};

struct MJob {
  int id = 0;
  ASYNC_JOB* handle = nullptr;
  JState state = JState::kRunning;
  int parent = -1;    // job running when it was last entered; -1: the top level
  int ctx = -1;       // wait-context slot it is attached to
  int detached = -1;  // a tombstone: the detached context it holds (Model::detached)
  int pool = -1;      // -1: another thread's (kExited)
  Kind kind = kGuarded;
  bool created = false;              // acquired by making a new stack, not reused
  bool paused_last = false;          // its last segment ended in a pause
  bool entered_return_free = false;  // its current run cannot free its own stack
  bool cancelling = false;
  int block = 0;
  int entries = 0;  // times started or resumed
  int ret_value = 0;
  Reader script;
  ArgsSpec args;
  std::vector<Hook> hooks;
  // Paused in a catch block: the message, and the exception held, so that a
  // job abandoned there (a tombstone) leaves them reachable, not leaked.
  std::string catch_what;
  std::exception_ptr caught;
};

// A cleanup routine call, as the library makes it.
struct CleanupCall {
  ASYNC_WAIT_CTX* ctx;
  const void* key;
  int fd;
  void* data;
  bool operator<(const CleanupCall& o) const;
  bool operator==(const CleanupCall& o) const;
};

struct MEntry {
  const void* key;
  int fd;
  void* data;
  bool cleanup;
  bool added;
  bool deleted;
};

struct MCtx {
  ASYNC_WAIT_CTX* handle = nullptr;  // nullptr: slot empty
  std::vector<MEntry> entries;
  ASYNC_callback_fn callback = nullptr;
  void* callback_arg = nullptr;
  int status = ASYNC_STATUS_UNSUPPORTED;
  int foreign = 0;  // jobs of the helper thread started with it and not ended

  MEntry* Live(const void* key) {
    for (MEntry& e : entries) {
      if (e.key == key && !e.deleted) return &e;
    }
    return nullptr;
  }
  void NewRound() {
    std::vector<MEntry> kept;
    for (MEntry e : entries) {
      if (e.deleted) continue;
      e.added = false;
      kept.push_back(e);
    }
    entries = kept;
  }
  bool Clear(const void* key) {
    for (auto it = entries.begin(); it != entries.end(); ++it) {
      if (it->key != key || it->deleted) continue;
      if (it->added)
        entries.erase(it);
      else
        it->deleted = true;
      return true;
    }
    return false;
  }
  std::vector<int> AllFds() const {
    std::vector<int> fds;
    for (const MEntry& e : entries) {
      if (!e.deleted) fds.push_back(e.fd);
    }
    return fds;
  }
  std::vector<int> AddedFds() const {
    std::vector<int> fds;
    for (const MEntry& e : entries) {
      if (e.added && !e.deleted) fds.push_back(e.fd);
    }
    return fds;
  }
  std::vector<int> DeletedFds() const {
    std::vector<int> fds;
    for (const MEntry& e : entries) {
      if (e.deleted && !e.added) fds.push_back(e.fd);
    }
    return fds;
  }
};

// A context freed while jobs still held it: kept, detached, until the last
// holder (a tombstone, or a job paused on another thread) lets go; then the
// cleanup routines of its fds run.
struct MDetached {
  ASYNC_WAIT_CTX* handle = nullptr;
  std::vector<MEntry> entries;  // its live fds
  int holders = 0;
};

// The counters of asyncjob_get_stats() the model follows, counted from the
// start of the input.
struct MCounters {
  unsigned long long orphans = 0;
  unsigned long long orphans_unwound = 0;
  unsigned long long tombstones = 0;
  unsigned long long tombstones_released = 0;
};

struct Model {
  std::vector<std::unique_ptr<MPool>> pools;
  int pool = -1;  // this thread's pool; -1: none
  std::vector<std::unique_ptr<MJob>> jobs;
  MCtx ctx[kMaxCtx];
  int current = -1;                      // running job
  std::vector<ASYNC_JOB*> idle_handles;  // handles known to be idle jobs of the pool
  std::vector<int> deferred;             // finished jobs of closing pools not freed yet
  std::size_t budget = 0;
  std::size_t guarded_live = 0;  // guarded stacks in the process
  std::size_t custom_live = 0;   // custom blocks the library holds
  std::vector<MDetached> detached;
  std::vector<int> tombstones;    // ids, oldest first
  bool readable[kEventFds] = {};  // the fuzzer's eventfds (fuzz_support.h)
  MCounters counters;
  bool kept_orphans = false;  // a thread exited with jobs of this input paused
};

// The model of the input being run (nullptr between inputs).
extern Model* g_model;

// ----- Pool bookkeeping -----

// This thread's pool, nullptr when it has none.
MPool* CurrentPool();
// This thread's pool, made empty first if it has none (ASYNC_start_job and
// ASYNC_init_thread make one).
MPool* EnsurePool();
// A stack of `kind` was allocated (+1) or freed (-1) in the process.
void CountStack(Kind kind, int delta);

struct NewStack {
  bool ok;
  Kind kind;
};

// What the next stack allocation gives; `plan_index` counts the custom
// allocator's planned outcomes this call will already have used.
NewStack PredictNewStack(std::size_t plan_index, std::size_t guarded_extra);

// Frees the pool's idle jobs and their stacks.
void FreeIdle(MPool* pool);
void RemoveIdleHandle(ASYNC_JOB* handle);
// Whether handle is that of an idle job of the pool.
bool KnownIdle(ASYNC_JOB* handle);

// Frees the jobs that finished in a closing pool on their own stacks.
void FlushDeferred();

// ----- Jobs -----

inline MJob& JobAt(int id) { return *g_model->jobs[static_cast<std::size_t>(id)]; }

// A job finished (or was cancelled): it leaves its context, and is idle or
// freed (later, if it cannot free its own stack).
void ApplyFinish(MJob& job);

// How a call on `target` from this thread fails, or 0 if it resumes it; -1
// when it must not be made at all (a finished job whose handle may now
// belong to another job or to nothing).
int ResumeVerdict(const MJob& target);

// The job is entered (resumed, or resumed to be cancelled) from self.
void Enter(MJob& target, int self, bool cancelling = false);

// ----- Shared and freed wait contexts -----

// Jobs that have not ended and were started with the context in `slot`
// (running, paused, or left by an exited thread), and the helper's.
int JobsSharing(int slot);

// Whether `fd` polls readable: the fuzzer's eventfds as the model has
// signalled them; any other (fd 0) as poll() says now.
bool FdReadable(int fd);

// One holder of a detached context lets go; the last one runs the cleanup
// routines of its fds (appended to `cleanups`).
void LetGoOfDetached(int index, std::vector<CleanupCall>* cleanups);

// What freeing the context in `slot` does before its call returns, from
// `self`: tombstones whose contexts were signalled are released, the
// context's jobs are orphaned (the hooks of those unwound appended to
// `hooks`, newest first for each), and the context is deleted (its cleanup
// routines appended) or kept detached (its index returned; -1 if deleted).
int FreeContext(int slot, int self, std::vector<CleanupCall>* cleanups, std::vector<Hook>* hooks);

// Tombstones released where the library looks at their contexts' fds
// (ASYNC_WAIT_CTX_new, ASYNC_WAIT_CTX_free, ASYNC_init_thread), or all of
// them (ASYNC_cleanup_thread).
void ReleaseSignalledTombstones(std::vector<CleanupCall>* cleanups);
void ReleaseAllTombstones(std::vector<CleanupCall>* cleanups);

}  // namespace api_fuzzer

#endif  // ASYNCJOB_TESTS_RELIABILITY_API_MODEL_H_
