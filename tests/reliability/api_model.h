// api_model.h - the API fuzzer's reference model: what the library should
// be doing, by the semantics README.md documents ("Behaviour" and its table
// of errors) and <asyncjob/async.h> states.
//
// It holds this thread's pools (their limits, counts and the kind of every
// stack), the jobs the input started (state, parent, wait context, blocks,
// cancel hooks, the script each runs), and the wait contexts (fds with their
// change tracking, callback, status, attached job); and it moves that state
// as the library's calls should move it: a job entered, finished or
// cancelled, a pool cleaned up, a new stack predicted as guarded, slab or a
// custom allocation that fails.
//
// It knows nothing of decoding inputs or of calling the library:
// api_fuzzer.cc does both, then compares what the library did with what the
// model says it should have done.
#ifndef ASYNCJOB_TESTS_RELIABILITY_API_MODEL_H_
#define ASYNCJOB_TESTS_RELIABILITY_API_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
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
  bool closing = false;
  std::size_t in_use() const { return total - idle; }
};

enum class JState { kRunning, kPaused, kFinished };

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
  int parent = -1;  // job running when it was last entered; -1: the top level
  int ctx = -1;     // wait-context slot it is attached to
  int pool = -1;
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
  int attached = -1;  // job id

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

// A job finished (or was cancelled): its context is free, its job idle or
// freed (later, if it cannot free its own stack).
void ApplyFinish(MJob& job);

// How a call on `target` from this thread fails, or 0 if it resumes it; -1
// when it must not be made at all (a finished job whose handle may now
// belong to another job or to nothing).
int ResumeVerdict(const MJob& target);

// The job is entered (resumed, or resumed to be cancelled) from self.
void Enter(MJob& target, int self, bool cancelling = false);

}  // namespace api_fuzzer

#endif  // ASYNCJOB_TESTS_RELIABILITY_API_MODEL_H_
