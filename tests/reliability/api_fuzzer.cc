// api_fuzzer.cc - an API-sequence fuzzer for asyncjob: the operation
// interpreter, checked against the reference model of api_model.h.
//
// The input is a program. Each op is a byte (modulo the number of ops)
// followed by its operands; ops run at the top level or inside jobs, and a job
// runs a script that is a slice of the input, so that the fuzzer decides what
// happens inside jobs too:
//
//   START ctx args argbyte len <len bytes: the new job's script>
//   RESUME target flavour       PAUSE   BLOCK   UNBLOCK   ...
//
// This file decodes each op, predicts with the model what the call should do,
// makes the call and compares. The semantics are those of README.md
// ("Behaviour": the pool, wait-fd change tracking, the table of errors) and
// of <asyncjob/async.h>: the pool's counts and ASYNC_NO_JOBS, *ret written
// only at ASYNC_FINISH, who a pause returns to, fd change tracking (an fd
// added and cleared in one round is reported neither as added nor deleted;
// a round of a context ends when any of its paused jobs is resumed) and
// cleanup calls, callbacks and status, and the exact error-queue entries
// (reason, library, non-empty message) every call leaves. A mismatch prints
// what differed and aborts, which libFuzzer reports as a crash. Set
// ASYNCJOB_FUZZ_TRACE=1 to print each op as it runs when reproducing one.
//
// Teardown is covered as api_model.h describes it: any number of jobs per
// wait context; freeing a context under its jobs (running ones carry on
// without it, paused ones with cancel hooks are unwound, the rest become
// tombstones, refused with ASYNCJOB_R_JOB_ORPHANED, that hold the detached
// context until one of its fds is readable or the thread cleans up; nothing
// queued); the orphan and tombstone counters of asyncjob_get_stats() and
// the pool's live tombstones, checked after every op. The fds an input sets
// are eventfds of the fuzzer's (fd 0 aside), which an op signals or drains,
// so that when a tombstone is released is known.
//
// Stacks come from one of two sources for the whole process, chosen at start
// by ASYNCJOB_FUZZ_STACKS (custom stack allocators are process-wide and lock
// once a stack exists, so they cannot change per input):
//   - "library" (default): the library's guarded and slab stacks. An op moves
//     the guarded-stack budget so that both kinds are used; the model predicts
//     the kind of every new stack.
//   - "custom": an ASYNC_set_mem_functions() allocator installed before the
//     first stack (fuzz_support.h). An op plans its next outcomes: NULL, too
//     small, a bigger or misaligned block, so allocation failure is covered in
//     ASYNC_start_job and ASYNC_init_thread, and every block handed out must
//     come back.
//
// A helper thread makes the calls that must come from another thread:
// resuming or cancelling a job of this thread (ASYNCJOB_R_WRONG_THREAD, the
// job stays resumable), running a job of its own that this thread then fails
// to resume (possibly sharing one of this thread's contexts, which this
// thread may free while that job is paused: the job then holds it until it
// ends there), and using a wait context from another thread. Another op
// runs a thread that starts jobs (sharing this thread's contexts or not,
// setting fds in them) and exits with them paused, the last possibly ending
// the thread from inside with pthread_exit() (not under ASan's fake stacks;
// by cancellation under TSan); those jobs are refused with
// ASYNCJOB_R_OWNER_THREAD_EXITED for good, and keep their stacks for the
// life of the process (a bounded number per process).
//
// Each input starts from no pool and ends with every paused job resumed to
// its end, every wait context freed and the pool cleaned up (which releases
// the tombstones); then no stack may be left but those of exited threads'
// jobs (custom mode: every other block freed; where mapping counts are
// exact, /proc/self/fd is as it was, and /proc/self/maps too unless a thread
// exited with jobs of the input paused).
//
// The one internal the fuzzer reads is which kind of stack a job runs on (the
// API has no way to ask which idle job a start reused); it is used to keep the
// kind counts of asyncjob_get_pool_stats() predictable, and for a new stack
// the model's prediction is checked against it. It also knows, from the
// build, whether jobs are entered "return-free" (the assembly back end
// without sanitizers): such a job cannot free its own stack, so if its pool
// was cleaned up while it ran, it is freed once it has left its stack, by the
// thread's next job entry or ASYNC_cleanup_thread.
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "api_model.h"
#include "asyncjob/async.h"
#include "base/sanitizers.h"
#include "fuzz_support.h"
#include "job/job.h"
#include "support/test_support.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

#if ASYNCJOB_ASAN
// AddressSanitizer's option: frames moved to a heap "fake stack".
extern "C" int __asan_option_detect_stack_use_after_return;
#endif

namespace api_fuzzer {
namespace {

// ----- Limits that keep one input cheap -----

constexpr std::size_t kMaxJobs = 48;  // jobs started per input
constexpr int kRetSentinel = 0x5eed5eed;
constexpr std::size_t kMaxCancelHooks = 8;

// ----- Stack sources -----

ASYNC_stack_alloc_fn g_library_alloc = nullptr;
ASYNC_stack_free_fn g_library_free = nullptr;
std::size_t g_default_budget = 0;
std::size_t g_default_stack_size = 0;

// The kind of stack a job runs on: the one internal the fuzzer reads.
Kind KindOf(ASYNC_JOB* handle) {
  using asyncjob::stack::StackKind;
  switch (reinterpret_cast<const asyncjob::job::Job*>(handle)->stack.kind) {
    case StackKind::kGuarded:
      return kGuarded;
    case StackKind::kSlab:
      return kSlab;
    case StackKind::kCustom:
      return kCustom;
  }
  return kCustom;
}

// ----- The helper thread -----

class Helper {
 public:
  Helper() : thread_([this] { Loop(); }) { thread_.detach(); }
  // Runs task on the helper thread and waits for it.
  void Run(const std::function<void()>& task) {
    std::unique_lock lock(mutex_);
    task_ = &task;
    done_ = false;
    cv_.notify_all();
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  void Loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return task_ != nullptr; });
      const std::function<void()>* task = task_;
      lock.unlock();
      (*task)();
      lock.lock();
      task_ = nullptr;
      done_ = true;
      cv_.notify_all();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  const std::function<void()>* task_ = nullptr;
  bool done_ = false;
  std::thread thread_;
};

Helper* g_helper = nullptr;

std::vector<int> PopAllReasons() {
  std::vector<int> reasons;
  const char* message = nullptr;
  while (unsigned long code = asyncjob_get_error(&message)) {
    FZ_CHECK(ASYNCJOB_ERR_GET_LIB(code) == ASYNCJOB_ERR_LIB_ASYNC, "error %lx: library %d", code,
             ASYNCJOB_ERR_GET_LIB(code));
    FZ_CHECK(message != nullptr && *message != '\0', "error %lx has no message", code);
    reasons.push_back(ASYNCJOB_ERR_GET_REASON(code));
  }
  return reasons;
}

std::string ReasonList(const std::vector<int>& reasons) {
  std::string text = "[";
  for (int reason : reasons) text += " " + std::to_string(reason);
  return text + " ]";
}

// ----- Starting a job -----

int g_starting_job = -1;  // the job the next ASYNC_start_job call runs
// Allocator calls before that start, and how many it should make: checked
// when the job begins, before its script can allocate more.
std::size_t g_start_calls_before = 0;
std::size_t g_start_calls_expected = 0;

// ----- What the library calls back -----

std::vector<CleanupCall> g_cleanups;
std::vector<Hook> g_callback_log;
std::vector<Hook> g_hook_log;
int g_hook_cancelling_seen = -1;

void RecordCleanup(ASYNC_WAIT_CTX* ctx, const void* key, OSSL_ASYNC_FD fd, void* data) {
  g_cleanups.push_back(CleanupCall{ctx, key, fd, data});
}
int CallbackA(void* arg) {
  g_callback_log.push_back(Hook{0, arg});
  return 1;
}
int CallbackB(void* arg) {
  g_callback_log.push_back(Hook{1, arg});
  return 0;
}
void HookA(void* arg) {
  g_hook_log.push_back(Hook{0, arg});
  g_hook_cancelling_seen = asyncjob_is_cancelling();
}
void HookB(void* arg) {
  g_hook_log.push_back(Hook{1, arg});
  g_hook_cancelling_seen = asyncjob_is_cancelling();
  // Pausing is disabled while a job is being cancelled.
  FZ_CHECK(ASYNC_pause_job() == 1, "ASYNC_pause_job in a cancel hook");
}

char g_keys[4];
char g_datas[3];
const void* KeyOf(std::uint8_t b) { return b % 5 == 4 ? nullptr : &g_keys[b % 5]; }
void* DataOf(std::uint8_t b) { return b % 4 == 3 ? nullptr : &g_datas[b % 4]; }
// An fd operand: invalid, 0 (valid, but not the fuzzer's to signal), or one
// of the fuzzer's eventfds.
int FdOf(std::uint8_t b) {
  if (b == 0xff) return -1;
  if (b == 0xfe) return 0;
  return EventFd(b % kEventFds);
}

// ----- Expected errors -----

struct Expect {
  std::vector<int> reasons;
  void Add(int reason) { reasons.push_back(reason); }
};

void CheckErrors(Expect& expect, const char* where) {
  std::vector<int> got = PopAllReasons();
  FZ_CHECK(got == expect.reasons, "%s: errors queued %s, expected %s", where,
           ReasonList(got).c_str(), ReasonList(expect.reasons).c_str());
  expect.reasons.clear();
}

// ----- Checks after every op -----

asyncjob_stats g_stats_before{};  // at the start of the input

void CheckState(int self, const char* where) {
  ASYNC_JOB* expected = self >= 0 ? g_model->jobs[static_cast<std::size_t>(self)]->handle : nullptr;
  FZ_CHECK(ASYNC_get_current_job() == expected, "%s: current job %p, expected %p", where,
           static_cast<void*>(ASYNC_get_current_job()), static_cast<void*>(expected));
  asyncjob_pool_stats stats;
  int has_pool = asyncjob_get_pool_stats(&stats);
  MPool* pool = CurrentPool();
  if (pool == nullptr) {
    FZ_CHECK(has_pool == 0, "%s: a pool exists where the model has none (total %zu)", where,
             stats.total);
  } else {
    FZ_CHECK(has_pool == 1, "%s: no pool where the model has one", where);
    FZ_CHECK(stats.max_size == pool->max && stats.total == pool->total &&
                 stats.idle == pool->idle && stats.in_use == pool->in_use() &&
                 stats.tombstones == pool->tombstones,
             "%s: pool max/total/idle/in_use/tombstones %zu/%zu/%zu/%zu/%zu, model "
             "%zu/%zu/%zu/%zu/%zu",
             where, stats.max_size, stats.total, stats.idle, stats.in_use, stats.tombstones,
             pool->max, pool->total, pool->idle, pool->in_use(), pool->tombstones);
    FZ_CHECK(stats.guarded == pool->kinds[kGuarded] && stats.slab == pool->kinds[kSlab] &&
                 stats.custom == pool->kinds[kCustom],
             "%s: stack kinds guarded/slab/custom %zu/%zu/%zu, model %zu/%zu/%zu", where,
             stats.guarded, stats.slab, stats.custom, pool->kinds[kGuarded], pool->kinds[kSlab],
             pool->kinds[kCustom]);
  }
  if (g_mode == Mode::kCustom) {
    FZ_CHECK(LiveBlocks() == g_model->custom_live, "%s: %zu stack blocks live, model %zu", where,
             LiveBlocks(), g_model->custom_live);
  }
  asyncjob_stats now{};
  FZ_CHECK(asyncjob_get_stats(&now) == 1, "asyncjob_get_stats failed");
  const MCounters& want = g_model->counters;
  FZ_CHECK(
      now.orphans - g_stats_before.orphans == want.orphans &&
          now.orphans_unwound - g_stats_before.orphans_unwound == want.orphans_unwound &&
          now.tombstones - g_stats_before.tombstones == want.tombstones &&
          now.tombstones_released - g_stats_before.tombstones_released == want.tombstones_released,
      "%s: orphans/unwound/tombstones/released %llu/%llu/%llu/%llu this input, model "
      "%llu/%llu/%llu/%llu",
      where, now.orphans - g_stats_before.orphans,
      now.orphans_unwound - g_stats_before.orphans_unwound,
      now.tombstones - g_stats_before.tombstones,
      now.tombstones_released - g_stats_before.tombstones_released, want.orphans,
      want.orphans_unwound, want.tombstones, want.tombstones_released);
  Expect none;
  CheckErrors(none, where);
}

// ----- Contexts -----

int SlotOf(std::uint8_t b) { return b % kMaxCtx; }

// Resolves a context operand: a slot (NULL when empty), NULL itself, or the
// running job's own context as a job would find it.
struct CtxRef {
  ASYNC_WAIT_CTX* handle;
  int slot;
};

CtxRef ResolveCtx(std::uint8_t b, int self, Expect& expect) {
  const int n = b % (kMaxCtx + 2);
  if (n < kMaxCtx) {
    return g_model->ctx[n].handle != nullptr ? CtxRef{g_model->ctx[n].handle, n}
                                             : CtxRef{nullptr, -1};
  }
  if (n == kMaxCtx) return {nullptr, -1};
  ASYNC_WAIT_CTX* own = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  if (self < 0) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);  // ASYNC_get_wait_ctx(NULL)
    FZ_CHECK(own == nullptr, "ASYNC_get_wait_ctx(NULL) returned %p", static_cast<void*>(own));
    return {nullptr, -1};
  }
  const int slot = g_model->jobs[static_cast<std::size_t>(self)]->ctx;
  ASYNC_WAIT_CTX* want = slot >= 0 ? g_model->ctx[slot].handle : nullptr;
  FZ_CHECK(own == want, "the job's wait context is %p, expected %p", static_cast<void*>(own),
           static_cast<void*>(want));
  return {own, slot};
}

std::vector<int> Sorted(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Compares the cleanup routines run since g_cleanups was last cleared with
// `want`, in any order.
void CheckCleanups(std::vector<CleanupCall> want, const char* where) {
  std::sort(want.begin(), want.end());
  std::vector<CleanupCall> got = g_cleanups;
  std::sort(got.begin(), got.end());
  FZ_CHECK(got == want, "%s ran %zu cleanup routines, expected %zu", where, got.size(),
           want.size());
  g_cleanups.clear();
}

// The fds of a context whose only job ended (cancelled, or ended by its
// thread's exit): each live one's cleanup routine runs, and it is cleared.
void CleanUpAllFds(MCtx& c, std::vector<CleanupCall>* cleanups) {
  std::vector<const void*> keys;
  for (const MEntry& e : c.entries) {
    if (e.deleted) continue;
    if (e.cleanup) cleanups->push_back(CleanupCall{c.handle, e.key, e.fd, e.data});
    keys.push_back(e.key);
  }
  for (const void* key : keys) c.Clear(key);
}

bool HookLess(const Hook& a, const Hook& b) {
  return std::tie(a.which, a.arg) < std::tie(b.which, b.arg);
}

// Frees the context in `slot` from `self` (legal even with jobs in it, and
// never an error); returns the index of the detached context its holders
// keep, or -1 if it was deleted at once.
int FreeCtx(int slot, int self) {
  ASYNC_WAIT_CTX* handle = g_model->ctx[slot].handle;
  std::vector<CleanupCall> want;
  std::vector<Hook> want_hooks;
  const int detached = FreeContext(slot, self, &want, &want_hooks);
  Trace(self, "ASYNC_WAIT_CTX_free slot %d: %zu hooks, %s", slot, want_hooks.size(),
        detached >= 0 ? "kept detached" : "deleted");
  g_cleanups.clear();
  g_hook_log.clear();
  g_hook_cancelling_seen = -1;
  ASYNC_WAIT_CTX_free(handle);
  CheckCleanups(want, "ASYNC_WAIT_CTX_free");
  // The hooks of each job unwound run newest first; the jobs in any order.
  std::vector<Hook> got_hooks = g_hook_log;
  std::sort(got_hooks.begin(), got_hooks.end(), &HookLess);
  std::sort(want_hooks.begin(), want_hooks.end(), &HookLess);
  FZ_CHECK(got_hooks.size() == want_hooks.size() &&
               std::equal(got_hooks.begin(), got_hooks.end(), want_hooks.begin(),
                          [](const Hook& a, const Hook& b) {
                            return a.which == b.which && a.arg == b.arg;
                          }),
           "ASYNC_WAIT_CTX_free ran %zu cancel hooks, expected %zu", got_hooks.size(),
           want_hooks.size());
  if (!want_hooks.empty()) {
    FZ_CHECK(g_hook_cancelling_seen == 1, "asyncjob_is_cancelling() was 0 in a cancel hook");
  }
  g_hook_log.clear();
  return detached;
}

// ----- Jobs -----

int JobMain(void* args);

void CheckArgs(const MJob& job, const void* args) {
  const ArgsSpec& spec = job.args;
  if (spec.mode <= 1) {
    FZ_CHECK(args == nullptr, "job %d: NULL args arrived as %p", job.id, args);
    return;
  }
  if (spec.mode == 2) return;  // a zero-size copy: any pointer will do
  FZ_CHECK(args != nullptr, "job %d: args arrived as NULL", job.id);
  FZ_CHECK(reinterpret_cast<std::uintptr_t>(args) % alignof(std::max_align_t) == 0,
           "job %d: args copy %p is not aligned", job.id, args);
  FZ_CHECK(std::memcmp(args, spec.Bytes(), spec.size) == 0, "job %d: its %zu bytes of args differ",
           job.id, spec.size);
}

// After a start or resume returned: did the job pause or finish as it did?
void AfterEnter(MJob& job, int self, int status, ASYNC_JOB* handle, int ret) {
  FZ_CHECK(g_model->current == self, "model: current %d after entering job %d from %d",
           g_model->current, job.id, self);
  if (job.paused_last) {
    FZ_CHECK(status == ASYNC_PAUSE, "job %d paused but ASYNC_start_job returned %d", job.id,
             status);
    FZ_CHECK(handle == job.handle, "job %d paused: *job is %p, expected %p", job.id,
             static_cast<void*>(handle), static_cast<void*>(job.handle));
    FZ_CHECK(ret == kRetSentinel, "job %d paused: *ret was written (%d)", job.id, ret);
  } else {
    FZ_CHECK(status == ASYNC_FINISH, "job %d finished but ASYNC_start_job returned %d", job.id,
             status);
    FZ_CHECK(handle == nullptr, "job %d finished: *job is %p, not NULL", job.id,
             static_cast<void*>(handle));
    FZ_CHECK(ret == job.ret_value, "job %d finished: *ret %d, expected %d", job.id, ret,
             job.ret_value);
    ApplyFinish(job);
  }
}

// The model's side of a job being entered at its start.
void OnJobEntry(MJob& job, ASYNC_JOB* handle) {
  for (const auto& other : g_model->jobs) {
    if (other->id != job.id && other->state != JState::kFinished) {
      FZ_CHECK(other->handle != handle, "job %d got handle %p, which job %d still uses", job.id,
               static_cast<void*>(handle), other->id);
    }
  }
  job.handle = handle;
  const Kind kind = KindOf(handle);
  MPool* pool = g_model->pools[static_cast<std::size_t>(job.pool)].get();
  if (job.created) {
    FZ_CHECK(kind == job.kind, "job %d: new stack of kind %d, model predicted %d", job.id,
             static_cast<int>(kind), static_cast<int>(job.kind));
    FZ_CHECK(!KnownIdle(handle), "job %d: a new job has the handle of an idle one", job.id);
  } else {
    FZ_CHECK(pool->idle_kinds[kind] > 0, "job %d reused a job of kind %d; none is idle", job.id,
             static_cast<int>(kind));
    --pool->idle_kinds[kind];
    job.kind = kind;
    RemoveIdleHandle(handle);
  }
}

void DoOps(Reader& r, int self);

int JobMain(void* args) {
  const int id = g_starting_job;
  g_starting_job = -1;
  FZ_CHECK(id >= 0, "a job function ran where the model expected no job to start (%d)", id);
  MJob& job = *g_model->jobs[static_cast<std::size_t>(id)];
  ASYNC_JOB* handle = ASYNC_get_current_job();
  FZ_CHECK(handle != nullptr, "job %d: ASYNC_get_current_job() is NULL inside it", id);
  FZ_CHECK(AllocCalls() - g_start_calls_before == g_start_calls_expected,
           "start: the allocator was called %zu times, expected %zu",
           AllocCalls() - g_start_calls_before, g_start_calls_expected);
  OnJobEntry(job, handle);
  CheckArgs(job, args);
  ASYNC_WAIT_CTX* want = job.ctx >= 0 ? g_model->ctx[job.ctx].handle : nullptr;
  FZ_CHECK(ASYNC_get_wait_ctx(handle) == want, "job %d: wait context %p, expected %p", id,
           static_cast<void*>(ASYNC_get_wait_ctx(handle)), static_cast<void*>(want));
  Reader script = job.script;
  DoOps(script, id);
  CheckArgs(job, args);
  FZ_CHECK(g_model->current == id, "model: job %d finishing while %d is current", id,
           g_model->current);
  job.paused_last = false;
  g_model->current = job.parent;
  return job.ret_value;
}

// ----- Ops -----

enum Op : std::uint8_t {
  kStart,
  kResume,
  kPause,
  kBlock,
  kUnblock,
  kHelperResume,
  kInitThread,
  kCleanupThread,
  kCtxNew,
  kCtxFree,
  kSetFd,
  kClearFd,
  kGetFd,
  kGetAllFds,
  kGetChangedFds,
  kSetCallback,
  kCallCallback,
  kSetStatus,
  kGetStatus,
  kCheckSelf,
  kNullArgs,
  kSetBudget,
  kSetStackSize,
  kAllocPlan,
  kHelperJob,
  kHelperCtx,
  kMemFunctions,
  kCancel,
  kAddHook,
  kRemoveHook,
  kErrorFlood,
  kPauseInCatch,
  kResumeInCatch,
  kSignalFd,
  kThreadExit,
  kOpCount
};

void OpStart(Reader& r, int self) {
  const std::uint8_t ctx_byte = r.Byte();
  const std::uint8_t args_byte = r.Byte();
  const std::uint8_t args_n = r.Byte();
  const std::uint8_t length = r.Byte();
  Reader script = r.Sub(length);
  if (g_model->jobs.size() >= kMaxJobs) return;
  Expect expect;
  CtxRef ctx = ResolveCtx(ctx_byte, self, expect);
  CheckErrors(expect, "resolving the context of a start");

  ArgsSpec spec;
  spec.mode = args_byte % 6;
  spec.seed = static_cast<unsigned>(g_model->jobs.size());
  const std::size_t quarter = asyncjob_get_stack_size() / 4;
  switch (spec.mode) {
    case 0:
      spec.size = 0;
      break;
    case 1:
      spec.size = 1 + args_n;
      break;
    case 2:
      spec.size = 0;
      break;
    case 3:
      spec.size = 1 + args_n % 64;
      break;
    case 4:
      spec.size = quarter - 2048;
      break;
    default:
      spec.size = quarter + 1 + args_n;
      break;
  }
  std::vector<std::uint8_t> buffer(spec.size + 1);
  std::memcpy(buffer.data(), spec.Bytes(), spec.size);
  void* args = spec.mode <= 1 ? nullptr : buffer.data();

  enum { kRuns, kError, kNoJobs } predicted = kRuns;
  NewStack stack{true, kGuarded};
  bool reuse = false;
  std::size_t plan_used = 0;
  // A context may serve any number of jobs.
  MPool* pool = EnsurePool();
  if (pool->idle > 0) {
    reuse = true;
  } else if (pool->max != 0 && pool->total - pool->tombstones >= pool->max) {
    predicted = kNoJobs;  // tombstones do not count towards the maximum
  } else {
    stack = PredictNewStack(0, 0);
    plan_used = g_mode == Mode::kCustom ? 1 : 0;
    if (!stack.ok) {
      predicted = kError;
      expect.Add(ASYNCJOB_R_STACK_ALLOCATION_FAILED);
    }
  }
  Trace(self, "start ctx %p args mode %d size %zu script %zu -> %s", static_cast<void*>(ctx.handle),
        spec.mode, spec.size, script.size,
        predicted == kRuns     ? (reuse ? "runs (reused)" : "runs (new stack)")
        : predicted == kNoJobs ? "NO_JOBS"
                               : "ERR");

  MJob* job = nullptr;
  if (predicted == kRuns) {
    auto fresh = std::make_unique<MJob>();
    job = fresh.get();
    job->id = static_cast<int>(g_model->jobs.size());
    job->parent = self;
    job->ctx = ctx.slot;
    job->pool = g_model->pool;
    job->created = !reuse;
    job->kind = stack.kind;
    job->entries = 1;
    job->ret_value = 1000 + job->id * 7 + (args_n & 3);
    job->script = script;
    job->args = spec;
    g_model->jobs.push_back(std::move(fresh));
    if (reuse) {
      --pool->idle;
    } else {
      ++pool->total;
      ++pool->kinds[stack.kind];
      CountStack(stack.kind, +1);
    }
    job->entered_return_free = kReturnFreeBuild;  // the current pool is never closing
    FlushDeferred();  // entering a job frees them, once its stack is found
    g_model->current = job->id;
    g_starting_job = job->id;
  }
  const std::size_t calls_before = AllocCalls();
  g_start_calls_before = calls_before;
  g_start_calls_expected = plan_used;
  ASYNC_JOB* handle = nullptr;
  int ret = kRetSentinel;
  const int status = ASYNC_start_job(&handle, ctx.handle, &ret, &JobMain, args, spec.size);
  g_starting_job = -1;
  std::memset(buffer.data(), 0xee, buffer.size());  // the job has its own copy
  if (predicted == kRuns) {
    AfterEnter(*job, self, status, handle, ret);
  } else {
    FZ_CHECK(AllocCalls() - calls_before == plan_used,
             "start: the allocator was called %zu times, expected %zu", AllocCalls() - calls_before,
             plan_used);
    FZ_CHECK(status == (predicted == kNoJobs ? ASYNC_NO_JOBS : ASYNC_ERR),
             "start returned %d, expected %s", status, predicted == kNoJobs ? "NO_JOBS" : "ERR");
    FZ_CHECK(handle == nullptr && ret == kRetSentinel, "a start that failed wrote *job or *ret");
  }
  CheckErrors(expect, "start");
}

// What ASYNC_get_wait_ctx says of a job that never runs again: a
// tombstone's is its detached context (still readable: its fds, no
// callback); an exited thread's job keeps its context until that is freed.
void CheckContextOfEnded(const MJob& job) {
  if (job.state == JState::kTombstone) {
    const MDetached& d = g_model->detached[static_cast<std::size_t>(job.detached)];
    ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(job.handle);
    FZ_CHECK(ctx == d.handle, "tombstone %d's wait context is %p, expected the detached %p", job.id,
             static_cast<void*>(ctx), static_cast<void*>(d.handle));
    std::size_t n = 9999;
    FZ_CHECK(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &n) == 1 && n == d.entries.size(),
             "tombstone %d's detached context lists %zu fds, expected %zu", job.id, n,
             d.entries.size());
    FZ_CHECK(ASYNC_WAIT_CTX_get_callback(ctx, nullptr, nullptr) == 0,
             "tombstone %d's detached context still has a callback", job.id);
  } else if (job.state == JState::kExited) {
    ASYNC_WAIT_CTX* want = job.ctx >= 0 ? g_model->ctx[job.ctx].handle : nullptr;
    FZ_CHECK(ASYNC_get_wait_ctx(job.handle) == want,
             "exited thread's job %d: wait context %p, expected %p", job.id,
             static_cast<void*>(ASYNC_get_wait_ctx(job.handle)), static_cast<void*>(want));
  }
  Expect none;
  CheckErrors(none, "the wait context of an ended job");
}

// A job of the table chosen by b; nullptr when there is none.
MJob* Target(std::uint8_t b) {
  if (g_model->jobs.empty()) return nullptr;
  return g_model->jobs[b % g_model->jobs.size()].get();
}

// How a call on `target` from this thread fails, or 0 if it resumes it; -1

void ResumeJob(MJob& target, int self, std::uint8_t flavour) {
  const int verdict = ResumeVerdict(target);
  if (verdict < 0) return;
  Trace(self, "resume job %d (%s)", target.id, verdict == 0 ? "paused" : "not paused");
  // Whatever else is passed is ignored on resume.
  ASYNC_WAIT_CTX* other_ctx = g_model->ctx[flavour % kMaxCtx].handle;
  int (*func)(void*) = (flavour & 4) != 0 ? &JobMain : nullptr;
  char garbage[8] = {};
  ASYNC_JOB* handle = target.handle;
  int ret = kRetSentinel;
  if (verdict == 0) {
    // A paused job's context, seen from outside it.
    ASYNC_WAIT_CTX* want = target.ctx >= 0 ? g_model->ctx[target.ctx].handle : nullptr;
    FZ_CHECK(ASYNC_get_wait_ctx(handle) == want, "paused job %d's wait context is not the model's",
             target.id);
    Enter(target, self);
  }
  const int status = ASYNC_start_job(&handle, other_ctx, &ret, func,
                                     (flavour & 8) != 0 ? garbage : nullptr, sizeof garbage);
  Expect expect;
  if (verdict == 0) {
    AfterEnter(target, self, status, handle, ret);
  } else {
    FZ_CHECK(status == ASYNC_ERR, "resuming job %d (not paused) returned %d", target.id, status);
    FZ_CHECK(handle == target.handle && ret == kRetSentinel,
             "a failed resume changed *job or *ret");
    expect.Add(verdict);
    CheckErrors(expect, "resume");
    CheckContextOfEnded(target);
  }
  CheckErrors(expect, "resume");
}

void OpPause(int self) {
  Expect none;
  if (self < 0) {
    FZ_CHECK(ASYNC_pause_job() == 1, "ASYNC_pause_job outside a job must return 1");
    return;
  }
  MJob& job = *g_model->jobs[static_cast<std::size_t>(self)];
  if (job.block > 0) {
    Trace(self, "pause (blocked)");
    const int entries = job.entries;
    FZ_CHECK(ASYNC_pause_job() == 1, "a blocked pause must return 1");
    FZ_CHECK(job.entries == entries && g_model->current == self, "a blocked pause paused job %d",
             self);
    return;
  }
  Trace(self, "pause");
  CheckErrors(none, "before a pause");
  job.state = JState::kPaused;
  job.paused_last = true;
  g_model->current = job.parent;
  const int entries = job.entries;
  const int result = ASYNC_pause_job();
  // Resumed.
  FZ_CHECK(result == 1, "ASYNC_pause_job returned %d", result);
  FZ_CHECK(job.entries == entries + 1 && job.state == JState::kRunning && g_model->current == self,
           "job %d came back from a pause without being resumed (entries %d -> %d)", self, entries,
           job.entries);
  job.paused_last = false;
  if (job.ctx >= 0) g_model->ctx[job.ctx].NewRound();
}

void OpHelperResume(std::uint8_t b, bool cancel) {
  MJob* target = Target(b);
  if (target == nullptr) return;
  int verdict = ResumeVerdict(*target);
  if (verdict < 0) return;
  // A job that never runs again is refused as such to every thread; a live
  // one, as this thread's.
  if (target->state == JState::kRunning || target->state == JState::kPaused) {
    verdict = ASYNCJOB_R_WRONG_THREAD;
  }
  Trace(-1, "helper %s job %d", cancel ? "cancels" : "resumes", target->id);
  ASYNC_JOB* copy = target->handle;
  int ret = kRetSentinel;
  int status = -1;
  ASYNC_JOB* current = nullptr;
  std::vector<int> reasons;
  g_helper->Run([&] {
    if (cancel)
      status = asyncjob_cancel_job(&copy);
    else
      status = ASYNC_start_job(&copy, nullptr, &ret, &JobMain, nullptr, 0);
    current = ASYNC_get_current_job();
    reasons = PopAllReasons();
  });
  FZ_CHECK(status == 0, "another thread's %s of job %d returned %d", cancel ? "cancel" : "resume",
           target->id, status);
  FZ_CHECK(copy == target->handle && ret == kRetSentinel, "a failed call changed *job or *ret");
  FZ_CHECK(current == nullptr, "the helper thread has a current job");
  FZ_CHECK(reasons == std::vector<int>{verdict}, "the helper's errors %s, expected [ %d ]",
           ReasonList(reasons).c_str(), verdict);
}

void OpInitThread(std::uint8_t a, std::uint8_t b, int self) {
  const std::size_t max = a % 5;
  const std::size_t init = b % 6;
  Trace(self, "ASYNC_init_thread(%zu, %zu)", max, init);
  Expect expect;
  int want = 1;
  std::size_t plan_used = 0;
  // Whatever else it does, it first releases the tombstones whose contexts
  // were signalled.
  std::vector<CleanupCall> want_cleanups;
  ReleaseSignalledTombstones(&want_cleanups);
  MPool* pool = CurrentPool();
  if (max != 0 && init > max) {
    want = 0;
    expect.Add(ASYNC_R_INVALID_POOL_SIZE);
  } else if (pool != nullptr && pool->in_use() > 0) {
    want = 0;
    expect.Add(ASYNC_R_FAILED_TO_SET_POOL);
  } else {
    pool = EnsurePool();
    FreeIdle(pool);
    pool->max = max;
    for (std::size_t i = 0; i < init; ++i) {
      NewStack stack = PredictNewStack(plan_used, 0);
      if (g_mode == Mode::kCustom) ++plan_used;
      if (!stack.ok) {
        FreeIdle(pool);
        expect.Add(ASYNCJOB_R_STACK_ALLOCATION_FAILED);
        expect.Add(ASYNC_R_INIT_FAILED);
        want = 0;
        break;
      }
      ++pool->total;
      ++pool->idle;
      ++pool->kinds[stack.kind];
      ++pool->idle_kinds[stack.kind];
      CountStack(stack.kind, +1);
    }
  }
  const std::size_t calls_before = AllocCalls();
  g_cleanups.clear();
  const int got = ASYNC_init_thread(max, init);
  CheckCleanups(want_cleanups, "ASYNC_init_thread");
  FZ_CHECK(got == want, "ASYNC_init_thread(%zu, %zu) returned %d, expected %d", max, init, got,
           want);
  FZ_CHECK(AllocCalls() - calls_before == plan_used,
           "init: the allocator was called %zu times, expected %zu", AllocCalls() - calls_before,
           plan_used);
  CheckErrors(expect, "ASYNC_init_thread");
}

void OpCleanupThread(int self) {
  Trace(self, "ASYNC_cleanup_thread");
  Expect expect;
  FlushDeferred();
  // Every tombstone is released, before the pool's idle jobs are freed.
  std::vector<CleanupCall> want_cleanups;
  ReleaseAllTombstones(&want_cleanups);
  if (MPool* pool = CurrentPool()) {
    FreeIdle(pool);
    if (pool->in_use() > 0) {
      pool->closing = true;
      expect.Add(ASYNCJOB_R_JOBS_OUTSTANDING);
    }
    g_model->pool = -1;
  }
  g_cleanups.clear();
  ASYNC_cleanup_thread();
  CheckCleanups(want_cleanups, "ASYNC_cleanup_thread");
  CheckErrors(expect, "ASYNC_cleanup_thread");
}

void OpCtxNew(int self) {
  for (int slot = 0; slot < kMaxCtx; ++slot) {
    MCtx& c = g_model->ctx[slot];
    if (c.handle != nullptr) continue;
    std::vector<CleanupCall> want_cleanups;
    ReleaseSignalledTombstones(&want_cleanups);
    c = MCtx{};
    g_cleanups.clear();
    c.handle = ASYNC_WAIT_CTX_new();
    Trace(self, "ASYNC_WAIT_CTX_new -> slot %d %p", slot, static_cast<void*>(c.handle));
    CheckCleanups(want_cleanups, "ASYNC_WAIT_CTX_new");
    FZ_CHECK(c.handle != nullptr, "ASYNC_WAIT_CTX_new returned NULL");
    for (int other = 0; other < kMaxCtx; ++other) {
      FZ_CHECK(other == slot || g_model->ctx[other].handle != c.handle,
               "two live contexts share %p", static_cast<void*>(c.handle));
    }
    FZ_CHECK(ASYNC_WAIT_CTX_get_status(c.handle) == ASYNC_STATUS_UNSUPPORTED,
             "a new context's status is not UNSUPPORTED");
    return;
  }
}

void OpCtxFree(std::uint8_t b, int self) {
  const int slot = SlotOf(b);
  if (g_model->ctx[slot].handle == nullptr) {
    ASYNC_WAIT_CTX_free(nullptr);  // does nothing, not even release tombstones
  } else {
    FreeCtx(slot, self);
  }
  Expect none;
  CheckErrors(none, "ASYNC_WAIT_CTX_free");
}

void OpSetFd(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const std::uint8_t key_byte = r.Byte();
  const std::uint8_t fd_byte = r.Byte();
  const std::uint8_t extra = r.Byte();
  const void* key = KeyOf(key_byte);
  const int fd = FdOf(fd_byte);
  void* data = DataOf(extra);
  const bool cleanup = (extra & 0x10) != 0;
  int want = 1;
  if (ctx.handle == nullptr) {
    want = 0;
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
  } else if (fd < 0) {
    want = 0;
    expect.Add(ASYNCJOB_R_PASSED_INVALID_ARGUMENT);
  } else if (g_model->ctx[ctx.slot].Live(key) != nullptr) {
    want = 0;
    expect.Add(ASYNCJOB_R_DUPLICATE_KEY);
  } else {
    g_model->ctx[ctx.slot].entries.push_back(MEntry{key, fd, data, cleanup, true, false});
  }
  Trace(self, "set_wait_fd(%p, key %p, fd %d) -> %d", static_cast<void*>(ctx.handle), key, fd,
        want);
  const int got =
      ASYNC_WAIT_CTX_set_wait_fd(ctx.handle, key, fd, data, cleanup ? &RecordCleanup : nullptr);
  FZ_CHECK(got == want, "set_wait_fd returned %d, expected %d", got, want);
  CheckErrors(expect, "set_wait_fd");
}

void OpClearFd(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const void* key = KeyOf(r.Byte());
  int want = 0;
  if (ctx.handle == nullptr)
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
  else
    want = g_model->ctx[ctx.slot].Clear(key) ? 1 : 0;
  Trace(self, "clear_fd(%p, key %p) -> %d", static_cast<void*>(ctx.handle), key, want);
  g_cleanups.clear();
  const int got = ASYNC_WAIT_CTX_clear_fd(ctx.handle, key);
  FZ_CHECK(got == want, "clear_fd returned %d, expected %d", got, want);
  FZ_CHECK(g_cleanups.empty(), "clear_fd ran a cleanup routine");
  CheckErrors(expect, "clear_fd");
}

void OpGetFd(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const std::uint8_t key_byte = r.Byte();
  const void* key = KeyOf(key_byte);
  const bool null_outputs = (key_byte & 0x80) != 0;
  int fd = -12345;
  void* data = &fd;
  const int got = ASYNC_WAIT_CTX_get_fd(ctx.handle, key, null_outputs ? nullptr : &fd,
                                        null_outputs ? nullptr : &data);
  if (ctx.handle == nullptr) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    FZ_CHECK(got == 0, "get_fd(NULL) returned %d", got);
  } else if (const MEntry* e = g_model->ctx[ctx.slot].Live(key)) {
    FZ_CHECK(got == 1, "get_fd of a live key returned %d", got);
    if (!null_outputs) {
      FZ_CHECK(fd == e->fd && data == e->data, "get_fd gave fd %d data %p, expected %d %p", fd,
               data, e->fd, e->data);
    }
  } else {
    FZ_CHECK(got == 0, "get_fd of an unknown key returned %d", got);
    FZ_CHECK(fd == -12345 && data == &fd, "get_fd of an unknown key wrote its outputs");
  }
  CheckErrors(expect, "get_fd");
}

void OpGetAllFds(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const bool count_only = (r.Byte() & 1) != 0;
  int fds[64];
  std::size_t n = 9999;
  const int got = ASYNC_WAIT_CTX_get_all_fds(ctx.handle, count_only ? nullptr : fds, &n);
  if (ctx.handle == nullptr) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    FZ_CHECK(got == 0, "get_all_fds(NULL) returned %d", got);
  } else {
    std::vector<int> want = Sorted(g_model->ctx[ctx.slot].AllFds());
    FZ_CHECK(got == 1 && n == want.size(), "get_all_fds: %d, %zu fds; expected %zu", got, n,
             want.size());
    if (!count_only) {
      FZ_CHECK(Sorted(std::vector<int>(fds, fds + n)) == want, "get_all_fds listed other fds");
    }
  }
  CheckErrors(expect, "get_all_fds");
}

void OpGetChangedFds(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const std::uint8_t variant = r.Byte() % 5;
  int added[64];
  int deleted[64];
  std::size_t n_added = 9999;
  std::size_t n_deleted = 9999;
  const bool null_added_list = variant == 1;
  const bool null_deleted_list = variant == 2;
  const bool null_added_count = variant == 3;
  const bool null_deleted_count = variant == 4;
  const int got = ASYNC_WAIT_CTX_get_changed_fds(
      ctx.handle, null_added_list ? nullptr : added, null_added_count ? nullptr : &n_added,
      null_deleted_list ? nullptr : deleted, null_deleted_count ? nullptr : &n_deleted);
  if (ctx.handle == nullptr || null_added_count || null_deleted_count) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    FZ_CHECK(got == 0, "get_changed_fds with a NULL argument returned %d", got);
  } else {
    const MCtx& c = g_model->ctx[ctx.slot];
    std::vector<int> want_added = Sorted(c.AddedFds());
    std::vector<int> want_deleted = Sorted(c.DeletedFds());
    Trace(self, "get_changed_fds: %zu added, %zu deleted (model %zu, %zu)", n_added, n_deleted,
          want_added.size(), want_deleted.size());
    FZ_CHECK(got == 1 && n_added == want_added.size() && n_deleted == want_deleted.size(),
             "get_changed_fds: %d, %zu added, %zu deleted; expected %zu, %zu", got, n_added,
             n_deleted, want_added.size(), want_deleted.size());
    if (!null_added_list) {
      FZ_CHECK(Sorted(std::vector<int>(added, added + n_added)) == want_added,
               "get_changed_fds listed other added fds");
    }
    if (!null_deleted_list) {
      FZ_CHECK(Sorted(std::vector<int>(deleted, deleted + n_deleted)) == want_deleted,
               "get_changed_fds listed other deleted fds");
    }
  }
  CheckErrors(expect, "get_changed_fds");
}

ASYNC_callback_fn CallbackOf(std::uint8_t b) {
  switch (b % 3) {
    case 0:
      return nullptr;
    case 1:
      return &CallbackA;
    default:
      return &CallbackB;
  }
}

void OpSetCallback(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const std::uint8_t b = r.Byte();
  ASYNC_callback_fn callback = CallbackOf(b);
  void* arg = DataOf(static_cast<std::uint8_t>(b >> 2));
  const int got = ASYNC_WAIT_CTX_set_callback(ctx.handle, callback, arg);
  if (ctx.handle == nullptr) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    FZ_CHECK(got == 0, "set_callback(NULL) returned %d", got);
  } else {
    FZ_CHECK(got == 1, "set_callback returned %d", got);
    g_model->ctx[ctx.slot].callback = callback;
    g_model->ctx[ctx.slot].callback_arg = arg;
  }
  CheckErrors(expect, "set_callback");
}

// What an engine does on completion: find the callback and call it.
void OpCallCallback(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  ASYNC_callback_fn callback = &CallbackB;
  void* arg = &callback;
  const int got = ASYNC_WAIT_CTX_get_callback(ctx.handle, &callback, &arg);
  if (ctx.handle == nullptr) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    FZ_CHECK(got == 0, "get_callback(NULL) returned %d", got);
  } else if (g_model->ctx[ctx.slot].callback == nullptr) {
    FZ_CHECK(got == 0, "get_callback with none set returned %d", got);
    FZ_CHECK(callback == &CallbackB && arg == &callback,
             "get_callback with none set wrote its outputs");
  } else {
    const MCtx& c = g_model->ctx[ctx.slot];
    FZ_CHECK(got == 1 && callback == c.callback && arg == c.callback_arg,
             "get_callback returned %d with another callback or argument", got);
    g_callback_log.clear();
    const int result = callback(arg);
    FZ_CHECK(g_callback_log.size() == 1 && g_callback_log[0].arg == arg &&
                 result == (g_callback_log[0].which == 0 ? 1 : 0),
             "the callback did not run as set");
  }
  CheckErrors(expect, "get_callback");
}

void OpSetStatus(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const int status = static_cast<int>(r.Byte()) % 6 - 1;  // -1..4: beyond the four named values too
  const int got = ASYNC_WAIT_CTX_set_status(ctx.handle, status);
  if (ctx.handle == nullptr) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    FZ_CHECK(got == 0, "set_status(NULL) returned %d", got);
  } else {
    FZ_CHECK(got == 1, "set_status returned %d", got);
    g_model->ctx[ctx.slot].status = status;
  }
  CheckErrors(expect, "set_status");
}

void OpGetStatus(Reader& r, int self) {
  Expect expect;
  CtxRef ctx = ResolveCtx(r.Byte(), self, expect);
  const int got = ASYNC_WAIT_CTX_get_status(ctx.handle);
  if (ctx.handle == nullptr) {
    expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    FZ_CHECK(got == ASYNC_STATUS_ERR, "get_status(NULL) returned %d", got);
  } else {
    FZ_CHECK(got == g_model->ctx[ctx.slot].status, "get_status returned %d, expected %d", got,
             g_model->ctx[ctx.slot].status);
  }
  CheckErrors(expect, "get_status");
}

void OpCheckSelf(int self) {
  ASYNC_JOB* current = ASYNC_get_current_job();
  if (self < 0) {
    FZ_CHECK(current == nullptr, "a current job at the top level");
    return;
  }
  const MJob& job = *g_model->jobs[static_cast<std::size_t>(self)];
  FZ_CHECK(current == job.handle, "current job %p, expected %p", static_cast<void*>(current),
           static_cast<void*>(job.handle));
  ASYNC_WAIT_CTX* want = job.ctx >= 0 ? g_model->ctx[job.ctx].handle : nullptr;
  FZ_CHECK(ASYNC_get_wait_ctx(current) == want, "job %d's wait context is not the model's", self);
  FZ_CHECK(asyncjob_is_cancelling() == (job.cancelling ? 1 : 0), "asyncjob_is_cancelling is wrong");
}

void OpNullArgs(Reader& r, int self) {
  const std::uint8_t variant = r.Byte() % 19;
  const std::uint8_t operand = r.Byte();
  Expect expect;
  expect.Add(ASYNCJOB_R_PASSED_NULL_PARAMETER);
  ASYNC_WAIT_CTX* some_ctx = g_model->ctx[SlotOf(operand)].handle;
  int ret = kRetSentinel;
  ASYNC_JOB* job = nullptr;
  std::size_t n = 0;
  Trace(self, "NULL-argument call %d", variant);
  switch (variant) {
    case 0:
      FZ_CHECK(ASYNC_start_job(nullptr, nullptr, &ret, &JobMain, nullptr, 0) == ASYNC_ERR,
               "NULL job");
      break;
    case 1:
      FZ_CHECK(ASYNC_start_job(&job, nullptr, nullptr, &JobMain, nullptr, 0) == ASYNC_ERR,
               "NULL ret");
      break;
    case 2:
      FZ_CHECK(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0) == ASYNC_ERR, "NULL func");
      break;
    case 3:
      FZ_CHECK(ASYNC_get_wait_ctx(nullptr) == nullptr, "get_wait_ctx(NULL)");
      break;
    case 4:
      FZ_CHECK(ASYNC_WAIT_CTX_set_wait_fd(nullptr, &g_keys[0], 5, nullptr, nullptr) == 0,
               "set_wait_fd");
      break;
    case 5:
      FZ_CHECK(ASYNC_WAIT_CTX_get_fd(nullptr, &g_keys[0], nullptr, nullptr) == 0, "get_fd");
      break;
    case 6:
      FZ_CHECK(ASYNC_WAIT_CTX_get_all_fds(nullptr, nullptr, &n) == 0, "get_all_fds");
      break;
    case 7:
      FZ_CHECK(ASYNC_WAIT_CTX_get_all_fds(some_ctx, nullptr, nullptr) == 0, "numfds NULL");
      break;
    case 8:
      FZ_CHECK(ASYNC_WAIT_CTX_get_changed_fds(nullptr, nullptr, &n, nullptr, &n) == 0, "changed");
      break;
    case 9:
      FZ_CHECK(ASYNC_WAIT_CTX_clear_fd(nullptr, &g_keys[0]) == 0, "clear_fd");
      break;
    case 10:
      FZ_CHECK(ASYNC_WAIT_CTX_set_callback(nullptr, &CallbackA, nullptr) == 0, "set_callback");
      break;
    case 11:
      FZ_CHECK(ASYNC_WAIT_CTX_get_callback(nullptr, nullptr, nullptr) == 0, "get_callback");
      break;
    case 12:
      FZ_CHECK(ASYNC_WAIT_CTX_set_status(nullptr, 2) == 0, "set_status");
      break;
    case 13:
      FZ_CHECK(ASYNC_WAIT_CTX_get_status(nullptr) == ASYNC_STATUS_ERR, "get_status");
      break;
    case 14:
      FZ_CHECK(asyncjob_get_pool_stats(nullptr) == 0, "pool stats");
      break;
    case 15:
      ASYNC_WAIT_CTX_free(nullptr);
      expect.reasons.clear();
      break;
    case 16: {
      // Resuming with ret NULL: refused before the job is touched.
      MJob* target = Target(operand);
      if (target == nullptr || ResumeVerdict(*target) < 0) {
        expect.reasons.clear();
        break;
      }
      job = target->handle;
      FZ_CHECK(ASYNC_start_job(&job, nullptr, nullptr, &JobMain, nullptr, 0) == ASYNC_ERR,
               "resume with NULL ret");
      FZ_CHECK(job == target->handle, "a refused resume changed *job");
      break;
    }
    case 17:
      expect.reasons = {ASYNCJOB_R_PASSED_INVALID_ARGUMENT};
      FZ_CHECK(asyncjob_set_stack_size(1000) == 0, "a 1000-byte stack size was accepted");
      break;
    default: {
      job = nullptr;
      FZ_CHECK(asyncjob_cancel_job(nullptr) == 0 && asyncjob_cancel_job(&job) == 0,
               "cancel of NULL");
      FZ_CHECK(asyncjob_add_cancel_hook(nullptr, nullptr) == 0, "a NULL hook was accepted");
      expect.reasons = {ASYNCJOB_R_PASSED_NULL_PARAMETER, ASYNCJOB_R_PASSED_NULL_PARAMETER,
                        ASYNCJOB_R_PASSED_NULL_PARAMETER};
      break;
    }
  }
  FZ_CHECK(ret == kRetSentinel, "a refused call wrote *ret");
  CheckErrors(expect, "NULL-argument call");
}

void OpSetBudget(std::uint8_t b, int self) {
  static constexpr std::size_t kChoices[] = {0, 1, 3};
  g_model->budget = b % 4 == 3 ? g_default_budget : kChoices[b % 4];
  Trace(self, "guarded budget %zu", g_model->budget);
  asyncjob_set_guarded_stack_budget(g_model->budget);
  FZ_CHECK(asyncjob_get_guarded_stack_budget() == g_model->budget, "the budget did not stick");
}

void OpSetStackSize(std::uint8_t b, int self) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t size = b % 3 == 0   ? g_default_stack_size
                           : b % 3 == 1 ? g_default_stack_size + page
                                        : g_default_stack_size * 2;
  Trace(self, "stack size %zu", size);
  FZ_CHECK(asyncjob_set_stack_size(size) == 1, "stack size %zu refused", size);
  FZ_CHECK(asyncjob_get_stack_size() == size, "the stack size did not stick");
}

void OpAllocPlan(std::uint8_t b, int self) {
  if (g_mode != Mode::kCustom) return;
  std::vector<AllocOutcome> outcomes;
  for (int i = 0; i < 1 + (b >> 6); ++i) {
    outcomes.push_back(static_cast<AllocOutcome>((b >> (2 * i)) % 5));
  }
  const std::size_t planned = ExtendAllocPlan(outcomes);
  Trace(self, "allocator plan now %zu outcomes", planned);
}

int HelperJobFunction(void*) {
  ASYNC_pause_job();
  return 77;
}

// The helper starts a job of its own that pauses, possibly with one of this
// thread's contexts (shared with this thread's jobs); this thread must fail
// to resume or cancel it, and may free that context meanwhile (the helper's
// paused job then holds it, detached, until it ends there); the helper then
// finishes it and cleans up.
void OpHelperJob(std::uint8_t b, int self) {
  const int ctx_mode = (b >> 1) % 4;  // 1: with a context; 2: and free it meanwhile
  const int slot = SlotOf(static_cast<std::uint8_t>(b >> 3));
  ASYNC_WAIT_CTX* ctx = ctx_mode == 1 || ctx_mode == 2 ? g_model->ctx[slot].handle : nullptr;
  Trace(self, "helper runs a job of its own (context %p%s)", static_cast<void*>(ctx),
        ctx != nullptr && ctx_mode == 2 ? ", freed meanwhile" : "");
  const NewStack stack = PredictNewStack(0, 0);
  const std::size_t calls_before = AllocCalls();
  int status = -1;
  ASYNC_JOB* job = nullptr;
  int ret = kRetSentinel;
  std::vector<int> reasons;
  asyncjob_pool_stats stats{};
  int has_pool = 0;
  g_helper->Run([&] {
    status = ASYNC_start_job(&job, ctx, &ret, &HelperJobFunction, nullptr, 0);
    has_pool = asyncjob_get_pool_stats(&stats);
    reasons = PopAllReasons();
  });
  FZ_CHECK(AllocCalls() - calls_before == (g_mode == Mode::kCustom ? 1u : 0u),
           "the helper's start called the allocator %zu times", AllocCalls() - calls_before);
  FZ_CHECK(has_pool == 1, "the helper thread has no pool after a start");
  if (!stack.ok) {
    FZ_CHECK(status == ASYNC_ERR && job == nullptr && ret == kRetSentinel,
             "the helper's start with a failing allocator returned %d", status);
    FZ_CHECK(reasons == std::vector<int>{ASYNCJOB_R_STACK_ALLOCATION_FAILED},
             "the helper's errors %s", ReasonList(reasons).c_str());
    FZ_CHECK(stats.total == 0, "a failed stack counts in the helper's pool");
  } else {
    FZ_CHECK(status == ASYNC_PAUSE && job != nullptr && ret == kRetSentinel && reasons.empty(),
             "the helper's job did not pause (%d)", status);
    FZ_CHECK(stats.total == 1 && stats.in_use == 1, "the helper's pool: total %zu in use %zu",
             stats.total, stats.in_use);
    const std::size_t want_kind[3] = {stats.guarded, stats.slab, stats.custom};
    FZ_CHECK(want_kind[stack.kind] == 1, "the helper's stack is not of kind %d",
             static_cast<int>(stack.kind));
    CountStack(stack.kind, +1);
    if (ctx != nullptr) ++g_model->ctx[slot].foreign;
    CheckState(self, "helper job paused");
    // This thread may neither resume nor cancel it.
    ASYNC_JOB* copy = job;
    int mine = kRetSentinel;
    const int resumed = (b & 1) != 0 ? asyncjob_cancel_job(&copy)
                                     : ASYNC_start_job(&copy, nullptr, &mine, &JobMain, nullptr, 0);
    FZ_CHECK(resumed == ((b & 1) != 0 ? 0 : ASYNC_ERR) && copy == job && mine == kRetSentinel,
             "this thread resumed or cancelled the helper's job (%d)", resumed);
    Expect expect;
    expect.Add(ASYNCJOB_R_WRONG_THREAD);
    CheckErrors(expect, "resuming another thread's job");
    int detached = -1;
    if (ctx != nullptr && ctx_mode == 2) {
      detached = FreeCtx(slot, self);
      FZ_CHECK(detached >= 0, "model: the helper's paused job does not hold its context");
      CheckState(self, "context freed under the helper's job");
    }
    // Its end lets go of the context: a detached one is deleted (its
    // cleanup routines run, on the helper) when no tombstone holds it.
    std::vector<CleanupCall> want_cleanups;
    if (detached >= 0) {
      LetGoOfDetached(detached, &want_cleanups);
    } else if (ctx != nullptr) {
      g_model->ctx[slot].NewRound();  // resumed
      --g_model->ctx[slot].foreign;
    }
    g_cleanups.clear();
    g_helper->Run([&] {
      status = ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0);
      reasons = PopAllReasons();
    });
    FZ_CHECK(status == ASYNC_FINISH && ret == 77 && job == nullptr && reasons.empty(),
             "the helper could not finish its own job (%d, ret %d)", status, ret);
    CheckCleanups(want_cleanups, "the end of the helper's job");
    CountStack(stack.kind, -1);
  }
  g_helper->Run([&] {
    ASYNC_cleanup_thread();
    has_pool = asyncjob_get_pool_stats(&stats);
    reasons = PopAllReasons();
  });
  FZ_CHECK(has_pool == 0 && reasons.empty(), "the helper's cleanup left a pool or errors");
}

// A wait context may be used from any thread, one at a time: the helper
// reads it, and sets or clears an fd in it.
void OpHelperCtx(std::uint8_t b, std::uint8_t fd_byte, int self) {
  const int slot = SlotOf(b);
  MCtx& c = g_model->ctx[slot];
  if (c.handle == nullptr) return;
  const void* key = KeyOf(static_cast<std::uint8_t>(b >> 2));
  const int fd = FdOf(fd_byte);
  const int change = (b >> 6) % 3;  // 0 none, 1 set, 2 clear
  Trace(self, "helper uses context slot %d (change %d)", slot, change);
  int want = 1;
  std::vector<int> want_reasons;
  if (change == 1) {
    if (fd < 0) {
      want = 0;
      want_reasons.push_back(ASYNCJOB_R_PASSED_INVALID_ARGUMENT);
    } else if (c.Live(key) != nullptr) {
      want = 0;
      want_reasons.push_back(ASYNCJOB_R_DUPLICATE_KEY);
    } else {
      c.entries.push_back(MEntry{key, fd, nullptr, false, true, false});
    }
  } else if (change == 2) {
    want = c.Clear(key) ? 1 : 0;
  }
  std::size_t n = 0;
  int fds[64];
  int status = -1;
  int got = 0;
  int changed = -1;
  std::vector<int> reasons;
  g_helper->Run([&] {
    if (change == 1) changed = ASYNC_WAIT_CTX_set_wait_fd(c.handle, key, fd, nullptr, nullptr);
    if (change == 2) changed = ASYNC_WAIT_CTX_clear_fd(c.handle, key);
    got = ASYNC_WAIT_CTX_get_all_fds(c.handle, fds, &n);
    status = ASYNC_WAIT_CTX_get_status(c.handle);
    reasons = PopAllReasons();
  });
  FZ_CHECK(change == 0 || changed == want, "the helper's fd change returned %d, expected %d",
           changed, want);
  FZ_CHECK(got == 1 && reasons == want_reasons && status == c.status,
           "the helper's view of a context (errors %s)", ReasonList(reasons).c_str());
  FZ_CHECK(Sorted(std::vector<int>(fds, fds + n)) == Sorted(c.AllFds()),
           "the helper saw other fds");
}

// Makes one of the fuzzer's eventfds readable, or drains it: what a
// completion does to a wait fd (a tombstone whose detached context has a
// readable fd is released at the library's next look).
void OpSignalFd(std::uint8_t b, int self) {
  const int index = b % kEventFds;
  const bool drain = (b & 0x80) != 0;
  Trace(self, "%s eventfd %d", drain ? "drain" : "signal", EventFd(index));
  if (drain) {
    DrainEventFd(index);
  } else {
    SignalEventFd(index);
  }
  g_model->readable[index] = !drain;
}

// ----- A thread that exits with jobs paused, or inside one -----

// Jobs left paused by an exited thread keep their stacks (a header page
// each, the address space and its mappings) for the life of the process. A
// process leaves at most this many, so that a long fuzzing run stays within
// its memory and its mapping count (read twice an input) stays small; past
// it, the exiting thread leaves none paused.
std::size_t MaxKeptOrphans() { return g_mode == Mode::kCustom ? 32 : 128; }
std::size_t g_kept_orphans = 0;
std::size_t g_kept_stacks[3] = {0, 0, 0};  // their stacks, by kind

// One job of the exiting thread: what it does, and what happened.
struct ExitingJob {
  ASYNC_WAIT_CTX* ctx = nullptr;
  bool set_fd = false;
  const void* key = nullptr;
  int fd = -1;
  void* data = nullptr;
  bool cleanup = false;
  bool ends_thread = false;  // its thread exits inside it
  bool pause_first = false;  // ... once it has paused and been resumed
  int status = -1;
  ASYNC_JOB* handle = nullptr;
  int set_result = -1;
  std::vector<int> reasons;  // queued on the thread while it started or ran
};

// Whether a thread may exit inside a job here: not with ASan's fake stacks
// (docs/safety.md, "Threads that exit or are cancelled").
bool ExitInsideJobSupported() {
#if ASYNCJOB_ASAN
  return __asan_option_detect_stack_use_after_return == 0;
#else
  return true;
#endif
}

[[noreturn]] void EndThisThread() {
#if ASYNCJOB_TSAN
  // TSan's pthread_exit() refuses to run on a fibre; cancellation takes
  // the same forced unwind.
  pthread_cancel(pthread_self());
  pthread_testcancel();
#endif
  pthread_exit(nullptr);
}

// Runs on the exiting thread. Nothing it leaves on its stack owns memory:
// its frames are never unwound when it stays paused.
int ExitingJobMain(void* args) {
  ExitingJob* job = *static_cast<ExitingJob**>(args);
  if (job->set_fd) {
    ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    job->set_result = ASYNC_WAIT_CTX_set_wait_fd(ctx, job->key, job->fd, job->data,
                                                 job->cleanup ? &RecordCleanup : nullptr);
  }
  job->reasons = PopAllReasons();
  if (job->ends_thread) {
    if (job->pause_first) ASYNC_pause_job();
    EndThisThread();
  }
  ASYNC_pause_job();
  return 0;  // never: its thread exits with it paused
}

void* ExitingThreadMain(void* argument) {
  auto* jobs = static_cast<std::vector<ExitingJob>*>(argument);
  for (ExitingJob& job : *jobs) {
    ExitingJob* pointer = &job;
    int ret = kRetSentinel;
    job.status =
        ASYNC_start_job(&job.handle, job.ctx, &ret, &ExitingJobMain, &pointer, sizeof pointer);
    if (job.status != ASYNC_PAUSE) {
      job.reasons = PopAllReasons();
      continue;
    }
    if (job.ends_thread && job.pause_first) {
      // Resumed, it ends the thread from inside.
      ASYNC_start_job(&job.handle, nullptr, &ret, &ExitingJobMain, nullptr, 0);
    }
  }
  return nullptr;
}

// A thread starts jobs (with this thread's contexts, shared with its jobs,
// or none), each possibly setting an fd, and exits with them paused, the
// last possibly ending the thread from inside (pthread_exit). Afterwards
// every call on the paused ones is refused with
// ASYNCJOB_R_OWNER_THREAD_EXITED; their contexts keep them attached (a
// cancelled job of this thread sharing one is not its only job) until freed,
// which lets go of them at once.
void OpThreadExit(Reader& r, int self) {
  const std::uint8_t plan = r.Byte();
  std::size_t paused = plan % 4;
  const std::size_t count = paused + ((plan & 4) != 0 ? 1 : 0);
  const bool exit_in_job = (plan & 4) != 0 && ExitInsideJobSupported();
  std::vector<std::uint8_t> bytes(2 * count);
  for (std::uint8_t& b : bytes) b = r.Byte();
  if (g_kept_orphans + paused > MaxKeptOrphans() || g_model->jobs.size() + paused > kMaxJobs) {
    paused = 0;
  }
  std::vector<ExitingJob> jobs;
  std::vector<std::vector<int>> want_reasons;
  std::vector<int> want_set;
  std::vector<int> ids;  // the model's jobs for those left paused; -1 for the others
  std::vector<CleanupCall> want_cleanups;
  std::size_t plan_used = 0;
  const std::size_t total = paused + (exit_in_job ? 1 : 0);
  for (std::size_t i = 0; i < total; ++i) {
    const std::size_t from = i < paused ? i : count - 1;
    const std::uint8_t a = bytes[2 * from];
    const std::uint8_t k = bytes[2 * from + 1];
    ExitingJob job;
    const int choice = a % (kMaxCtx + 1);
    const int slot = choice < kMaxCtx && g_model->ctx[choice].handle != nullptr ? choice : -1;
    job.ctx = slot >= 0 ? g_model->ctx[slot].handle : nullptr;
    job.set_fd = (a & 8) != 0;
    job.cleanup = (a & 16) != 0;
    job.key = KeyOf(static_cast<std::uint8_t>(a >> 5));
    job.fd = FdOf(k);
    job.data = DataOf(static_cast<std::uint8_t>(k >> 4));
    job.ends_thread = i >= paused;
    job.pause_first = (plan & 8) != 0;
    std::vector<int> reasons;
    int set = -1;
    const NewStack stack = PredictNewStack(plan_used, 0);
    if (g_mode == Mode::kCustom) ++plan_used;
    if (!stack.ok) {
      reasons.push_back(ASYNCJOB_R_STACK_ALLOCATION_FAILED);
      ids.push_back(-1);
    } else {
      CountStack(stack.kind, +1);
      if (job.set_fd) {
        set = 0;
        if (slot < 0) {
          reasons.push_back(ASYNCJOB_R_PASSED_NULL_PARAMETER);
        } else if (job.fd < 0) {
          reasons.push_back(ASYNCJOB_R_PASSED_INVALID_ARGUMENT);
        } else if (g_model->ctx[slot].Live(job.key) != nullptr) {
          reasons.push_back(ASYNCJOB_R_DUPLICATE_KEY);
        } else {
          g_model->ctx[slot].entries.push_back(
              MEntry{job.key, job.fd, job.data, job.cleanup, true, false});
          set = 1;
        }
      }
      if (job.ends_thread) {
        // Resumed (a new round), then ended by the exit: as if cancelled,
        // its context's fds are cleaned up if it is the context's only job.
        // Its stack goes with the thread's pool.
        if (slot >= 0) {
          if (job.pause_first) g_model->ctx[slot].NewRound();
          g_model->ctx[slot].NewRound();
          if (JobsSharing(slot) == 0) CleanUpAllFds(g_model->ctx[slot], &want_cleanups);
        }
        CountStack(stack.kind, -1);
        ids.push_back(-1);
      } else {
        auto orphan = std::make_unique<MJob>();
        orphan->id = static_cast<int>(g_model->jobs.size());
        orphan->state = JState::kExited;
        orphan->ctx = slot;
        orphan->kind = stack.kind;
        ids.push_back(orphan->id);
        g_model->jobs.push_back(std::move(orphan));
        ++g_kept_stacks[stack.kind];
        ++g_kept_orphans;
        g_model->kept_orphans = true;
      }
    }
    want_reasons.push_back(reasons);
    want_set.push_back(set);
    jobs.push_back(job);
  }
  Trace(self, "a thread starts %zu jobs, leaves %zu paused%s", jobs.size(), paused,
        exit_in_job ? ", exits inside the last" : "");
  g_cleanups.clear();
  const std::size_t calls_before = AllocCalls();
  pthread_t thread;
  FZ_CHECK(pthread_create(&thread, nullptr, &ExitingThreadMain, &jobs) == 0,
           "pthread_create failed");
  FZ_CHECK(pthread_join(thread, nullptr) == 0, "pthread_join failed");
  FZ_CHECK(AllocCalls() - calls_before == plan_used,
           "the exiting thread's starts called the allocator %zu times, expected %zu",
           AllocCalls() - calls_before, plan_used);
  CheckCleanups(want_cleanups, "the exit inside a job");
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const ExitingJob& job = jobs[i];
    FZ_CHECK(job.reasons == want_reasons[i], "the exiting thread's job %zu: errors %s, expected %s",
             i, ReasonList(job.reasons).c_str(), ReasonList(want_reasons[i]).c_str());
    if (want_reasons[i] == std::vector<int>{ASYNCJOB_R_STACK_ALLOCATION_FAILED}) {
      FZ_CHECK(job.status == ASYNC_ERR && job.handle == nullptr,
               "the exiting thread's start %zu with a failing allocator returned %d", i,
               job.status);
      continue;
    }
    FZ_CHECK(job.set_result == want_set[i], "the exiting thread's set_wait_fd returned %d, not %d",
             job.set_result, want_set[i]);
    if (!job.ends_thread || job.pause_first) {
      FZ_CHECK(job.status == ASYNC_PAUSE && job.handle != nullptr,
               "the exiting thread's job %zu did not pause (%d)", i, job.status);
    }
    if (ids[i] >= 0) {
      MJob& orphan = JobAt(ids[i]);
      orphan.handle = job.handle;
      for (const auto& other : g_model->jobs) {
        FZ_CHECK(other->id == orphan.id || other->state == JState::kFinished ||
                     other->handle != orphan.handle,
                 "the exited thread's job %d has the handle of job %d", orphan.id, other->id);
      }
    }
  }
  for (int id : ids) {
    if (id >= 0) CheckContextOfEnded(JobAt(id));
  }
}

void OpMemFunctions(int self) {
  Trace(self, "ASYNC_set_mem_functions (locked)");
  FZ_CHECK(ASYNC_set_mem_functions(&FuzzAlloc, &FuzzFree) == 0,
           "allocators changed after stacks were allocated");
  Expect expect;
  expect.Add(ASYNCJOB_R_MEM_FUNCTIONS_LOCKED);
  CheckErrors(expect, "ASYNC_set_mem_functions");
  ASYNC_stack_alloc_fn alloc_fn = nullptr;
  ASYNC_stack_free_fn free_fn = nullptr;
  ASYNC_get_mem_functions(&alloc_fn, &free_fn);
  if (g_mode == Mode::kCustom) {
    FZ_CHECK(alloc_fn == &FuzzAlloc && free_fn == &FuzzFree, "the allocators changed");
  } else {
    FZ_CHECK(alloc_fn == g_library_alloc && free_fn == g_library_free, "the allocators changed");
  }
}

void OpCancel(MJob& target, int self) {
  const int verdict = ResumeVerdict(target);
  if (verdict < 0) return;
  Trace(self, "cancel job %d (%s)", target.id, verdict == 0 ? "paused" : "not paused");
  ASYNC_JOB* handle = target.handle;
  Expect expect;
  if (verdict != 0) {
    FZ_CHECK(asyncjob_cancel_job(&handle) == 0, "cancel of job %d (not paused) succeeded",
             target.id);
    FZ_CHECK(handle == target.handle, "a refused cancel changed *job");
    expect.Add(verdict);
    CheckErrors(expect, "refused cancel");
    CheckContextOfEnded(target);
    return;
  }
  // Cancelling resumes the job (a new round of fd changes), runs its hooks
  // newest first, unwinds it, then cleans up and clears every live fd,
  // unless other jobs share the context (whose fds are whose is unknown).
  std::vector<Hook> want_hooks(target.hooks.rbegin(), target.hooks.rend());
  std::vector<CleanupCall> want_cleanups;
  if (target.ctx >= 0) {
    MCtx& c = g_model->ctx[target.ctx];
    c.NewRound();
    if (JobsSharing(target.ctx) == 1) CleanUpAllFds(c, &want_cleanups);
  }
  target.cancelling = true;
  Enter(target, self, /*cancelling=*/true);
  g_hook_log.clear();
  g_cleanups.clear();
  g_hook_cancelling_seen = -1;
  const int result = asyncjob_cancel_job(&handle);
  // The job's frames unwound: it never got back to the model's code.
  g_model->current = self;
  target.cancelling = false;
  FZ_CHECK(result == 1 && handle == nullptr, "cancel of paused job %d returned %d", target.id,
           result);
  FZ_CHECK(g_hook_log.size() == want_hooks.size(), "cancel ran %zu hooks, expected %zu",
           g_hook_log.size(), want_hooks.size());
  for (std::size_t i = 0; i < want_hooks.size(); ++i) {
    FZ_CHECK(g_hook_log[i].which == want_hooks[i].which && g_hook_log[i].arg == want_hooks[i].arg,
             "cancel hook %zu ran out of order", i);
  }
  if (!want_hooks.empty()) {
    FZ_CHECK(g_hook_cancelling_seen == 1, "asyncjob_is_cancelling() was 0 in a cancel hook");
  }
  std::sort(want_cleanups.begin(), want_cleanups.end());
  std::vector<CleanupCall> got = g_cleanups;
  std::sort(got.begin(), got.end());
  FZ_CHECK(got == want_cleanups, "cancel ran %zu cleanup routines, expected %zu", got.size(),
           want_cleanups.size());
  g_cleanups.clear();
  ApplyFinish(target);
  CheckErrors(expect, "cancel");
}

void OpAddHook(std::uint8_t b, int self) {
  void (*fn)(void*) = (b & 1) != 0 ? &HookB : &HookA;
  void* arg = DataOf(static_cast<std::uint8_t>(b >> 1));
  Expect expect;
  int want = 1;
  if (self < 0) {
    want = 0;
    expect.Add(ASYNCJOB_R_NOT_IN_JOB);
  } else {
    MJob& job = *g_model->jobs[static_cast<std::size_t>(self)];
    if (job.hooks.size() == kMaxCancelHooks) {
      want = 0;
      expect.Add(ASYNCJOB_R_TOO_MANY_CANCEL_HOOKS);
    } else {
      job.hooks.push_back(Hook{(b & 1) != 0 ? 1 : 0, arg});
    }
  }
  Trace(self, "add cancel hook -> %d", want);
  FZ_CHECK(asyncjob_add_cancel_hook(fn, arg) == want, "add_cancel_hook did not return %d", want);
  CheckErrors(expect, "add_cancel_hook");
}

void OpRemoveHook(std::uint8_t b, int self) {
  void (*fn)(void*) = (b & 1) != 0 ? &HookB : &HookA;
  void* arg = DataOf(static_cast<std::uint8_t>(b >> 1));
  int want = 0;
  if (self >= 0) {
    MJob& job = *g_model->jobs[static_cast<std::size_t>(self)];
    for (auto it = job.hooks.rbegin(); it != job.hooks.rend(); ++it) {
      if (it->which == ((b & 1) != 0 ? 1 : 0) && it->arg == arg) {
        job.hooks.erase(std::next(it).base());
        want = 1;
        break;
      }
    }
  }
  Trace(self, "remove cancel hook -> %d", want);
  FZ_CHECK(asyncjob_remove_cancel_hook(fn, arg) == want, "remove_cancel_hook did not return %d",
           want);
  Expect none;
  CheckErrors(none, "remove_cancel_hook");
}

// Queues up to 23 errors at once: the queue keeps the newest 16, peeks
// leave them queued, clearing empties it.
void OpErrorFlood(std::uint8_t b, int self) {
  const int n = b % 24;
  Trace(self, "queue %d errors", n);
  std::vector<int> queued;
  for (int i = 0; i < n; ++i) {
    if (((b >> (i % 8)) & 1) != 0) {
      FZ_CHECK(asyncjob_set_stack_size(1000) == 0, "a 1000-byte stack size was accepted");
      queued.push_back(ASYNCJOB_R_PASSED_INVALID_ARGUMENT);
    } else {
      FZ_CHECK(ASYNC_get_wait_ctx(nullptr) == nullptr, "get_wait_ctx(NULL)");
      queued.push_back(ASYNCJOB_R_PASSED_NULL_PARAMETER);
    }
  }
  Expect expect;
  const std::size_t keep = std::min<std::size_t>(queued.size(), 16);
  expect.reasons.assign(queued.end() - static_cast<std::ptrdiff_t>(keep), queued.end());
  const unsigned long first = asyncjob_peek_error(nullptr);
  const unsigned long last = asyncjob_peek_last_error(nullptr);
  if (expect.reasons.empty()) {
    FZ_CHECK(first == 0 && last == 0, "peek on an empty queue returned an error");
  } else {
    FZ_CHECK(ASYNCJOB_ERR_GET_REASON(first) == expect.reasons.front() &&
                 ASYNCJOB_ERR_GET_REASON(last) == expect.reasons.back(),
             "peek found reasons %d and %d, expected %d and %d", ASYNCJOB_ERR_GET_REASON(first),
             ASYNCJOB_ERR_GET_REASON(last), expect.reasons.front(), expect.reasons.back());
  }
  if ((b & 0x80) != 0) {
    asyncjob_clear_errors();
    expect.reasons.clear();
  }
  CheckErrors(expect, "error flood");
}

// A job may pause inside a catch block, and be resumed by code inside a catch
// block of its own: each side must find its exception as it left it.
void CheckHandling(const std::string& what, const char* where) {
  std::exception_ptr current = std::current_exception();
  FZ_CHECK(current != nullptr, "%s: the exception being handled is gone", where);
  try {
    std::rethrow_exception(current);
  } catch (const std::runtime_error& again) {
    FZ_CHECK(what == again.what(), "%s: handling \"%s\", expected \"%s\"", where, again.what(),
             what.c_str());
  } catch (...) {
    Fail(__FILE__, __LINE__, "rethrow", "%s: another kind of exception is being handled", where);
  }
  FZ_CHECK(std::uncaught_exceptions() == 0, "%s: %d uncaught exceptions", where,
           std::uncaught_exceptions());
}

void OpPauseInCatch(int self) {
  // A job paused here may never come back (a tombstone): what it holds
  // lives in the model, not on its stack.
  std::string top_level_what;
  std::string& what = self >= 0 ? JobAt(self).catch_what : top_level_what;
  what = "pause in catch, " + std::to_string(self);
  try {
    throw std::runtime_error(what);
  } catch (const std::runtime_error&) {
    if (self >= 0) JobAt(self).caught = std::current_exception();
    OpPause(self);  // a cancel unwinds from here, through this handler
    if (self >= 0) JobAt(self).caught = nullptr;
    CheckHandling(what, "after a pause in a catch block");
  }
  FZ_CHECK(std::current_exception() == nullptr, "an exception is still being handled");
}

void OpResumeInCatch(Reader& r, int self) {
  MJob* target = Target(r.Byte());
  const std::uint8_t flavour = r.Byte();
  const std::string what = "resume in catch, " + std::to_string(self);
  try {
    throw std::runtime_error(what);
  } catch (const std::runtime_error&) {
    if (target != nullptr) ResumeJob(*target, self, flavour);
    CheckHandling(what, "after a resume in a catch block");
  }
  FZ_CHECK(std::current_exception() == nullptr, "an exception is still being handled");
}

void DoOp(Reader& r, int self) {
  ++g_op_count;
  const auto op = static_cast<Op>(r.Byte() % kOpCount);
  switch (op) {
    case kStart:
      OpStart(r, self);
      break;
    case kResume: {
      MJob* target = Target(r.Byte());
      const std::uint8_t flavour = r.Byte();
      if (target != nullptr) ResumeJob(*target, self, flavour);
      break;
    }
    case kPause:
      OpPause(self);
      break;
    case kBlock:
      Trace(self, "block");
      if (self >= 0) ++g_model->jobs[static_cast<std::size_t>(self)]->block;
      ASYNC_block_pause();
      break;
    case kUnblock: {
      Trace(self, "unblock");
      if (self >= 0) {
        int& block = g_model->jobs[static_cast<std::size_t>(self)]->block;
        if (block > 0) --block;
      }
      ASYNC_unblock_pause();
      break;
    }
    case kHelperResume:
      OpHelperResume(r.Byte(), false);
      break;
    case kInitThread: {
      const std::uint8_t a = r.Byte();
      OpInitThread(a, r.Byte(), self);
      break;
    }
    case kCleanupThread:
      OpCleanupThread(self);
      break;
    case kCtxNew:
      OpCtxNew(self);
      break;
    case kCtxFree:
      OpCtxFree(r.Byte(), self);
      break;
    case kSetFd:
      OpSetFd(r, self);
      break;
    case kClearFd:
      OpClearFd(r, self);
      break;
    case kGetFd:
      OpGetFd(r, self);
      break;
    case kGetAllFds:
      OpGetAllFds(r, self);
      break;
    case kGetChangedFds:
      OpGetChangedFds(r, self);
      break;
    case kSetCallback:
      OpSetCallback(r, self);
      break;
    case kCallCallback:
      OpCallCallback(r, self);
      break;
    case kSetStatus:
      OpSetStatus(r, self);
      break;
    case kGetStatus:
      OpGetStatus(r, self);
      break;
    case kCheckSelf:
      OpCheckSelf(self);
      break;
    case kNullArgs:
      OpNullArgs(r, self);
      break;
    case kSetBudget:
      OpSetBudget(r.Byte(), self);
      break;
    case kSetStackSize:
      OpSetStackSize(r.Byte(), self);
      break;
    case kAllocPlan:
      OpAllocPlan(r.Byte(), self);
      break;
    case kHelperJob:
      OpHelperJob(r.Byte(), self);
      break;
    case kHelperCtx: {
      const std::uint8_t b = r.Byte();
      OpHelperCtx(b, r.Byte(), self);
      break;
    }
    case kMemFunctions:
      OpMemFunctions(self);
      break;
    case kCancel: {
      const std::uint8_t b = r.Byte();
      if ((b & 0x80) != 0) {
        OpHelperResume(b, true);
      } else if (MJob* target = Target(b)) {
        OpCancel(*target, self);
      }
      break;
    }
    case kAddHook:
      OpAddHook(r.Byte(), self);
      break;
    case kRemoveHook:
      OpRemoveHook(r.Byte(), self);
      break;
    case kErrorFlood:
      OpErrorFlood(r.Byte(), self);
      break;
    case kPauseInCatch:
      OpPauseInCatch(self);
      break;
    case kResumeInCatch:
      OpResumeInCatch(r, self);
      break;
    case kSignalFd:
      OpSignalFd(r.Byte(), self);
      break;
    case kThreadExit:
      OpThreadExit(r, self);
      break;
    case kOpCount:
      break;
  }
  CheckState(self, "after an op");
}

void DoOps(Reader& r, int self) {
  while (!r.empty()) DoOp(r, self);
}

// ----- One input -----

std::vector<std::string> g_maps_before;  // the lines of /proc/self/maps
std::size_t g_fds_before = 0;

std::vector<std::string> ReadMaps() {
  std::vector<std::string> lines;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) lines.push_back(line);
  return lines;
}

// Prints the mappings that are in only one of the two lists, so that a
// mismatch says what changed.
void PrintMapsDifference(const std::vector<std::string>& before,
                         const std::vector<std::string>& after) {
  for (const std::string& line : before) {
    if (std::find(after.begin(), after.end(), line) == after.end()) {
      std::fprintf(stderr, "  only before: %s\n", line.c_str());
    }
  }
  for (const std::string& line : after) {
    if (std::find(before.begin(), before.end(), line) == before.end()) {
      std::fprintf(stderr, "  only after:  %s\n", line.c_str());
    }
  }
}

void BeginInput() {
  g_op_count = 0;
  g_model = new Model;
  // The stacks of earlier inputs' thread-exit orphans stay for good.
  g_model->guarded_live = g_kept_stacks[kGuarded];
  g_model->custom_live = g_kept_stacks[kCustom];
  for (int i = 0; i < kEventFds; ++i) DrainEventFd(i);
  FZ_CHECK(asyncjob_get_stats(&g_stats_before) == 1, "asyncjob_get_stats failed");
  g_model->budget = g_default_budget;
  asyncjob_set_guarded_stack_budget(g_default_budget);
  FZ_CHECK(asyncjob_set_stack_size(g_default_stack_size) == 1, "default stack size refused");
  ClearAllocPlan();
  CheckState(-1, "start of input");
  if (asyncjob_test::MappingCountsAreExact()) {
    g_maps_before = ReadMaps();
    g_fds_before = asyncjob_test::CountOpenFds();
  }
}

void EndInput() {
  // Finish every paused job, oldest first; their scripts may start more.
  for (;;) {
    MJob* paused = nullptr;
    for (const auto& job : g_model->jobs) {
      if (job->state == JState::kPaused) {
        paused = job.get();
        break;
      }
    }
    if (paused == nullptr) break;
    ++g_op_count;
    ResumeJob(*paused, -1, 0);
    CheckState(-1, "draining");
  }
  for (int slot = 0; slot < kMaxCtx; ++slot) {
    if (g_model->ctx[slot].handle != nullptr) FreeCtx(slot, -1);
  }
  CheckState(-1, "freeing the contexts at the end");
  OpCleanupThread(-1);  // releases every tombstone
  CheckState(-1, "end of input");
  for (const auto& pool : g_model->pools) {
    FZ_CHECK(pool->total == 0 || pool.get() == CurrentPool(), "model: a pool kept jobs");
  }
  for (const MDetached& d : g_model->detached) {
    FZ_CHECK(d.holders == 0, "model: a detached context is still held at the end");
  }
  FZ_CHECK(g_model->counters.tombstones == g_model->counters.tombstones_released,
           "model: tombstones left at the end");
  FZ_CHECK(g_model->guarded_live == g_kept_stacks[kGuarded] &&
               g_model->custom_live == g_kept_stacks[kCustom],
           "model: stacks left at the end");
  FZ_CHECK(LiveBlocks() == g_kept_stacks[kCustom], "%zu stack blocks were never freed",
           LiveBlocks() - g_kept_stacks[kCustom]);
  if (asyncjob_test::MappingCountsAreExact()) {
    // Jobs a thread left paused when it exited keep their stacks (and the
    // slabs these are in) for good: the mappings are not back to where they
    // were after such an input.
    const std::vector<std::string> maps = ReadMaps();
    const std::size_t fds = asyncjob_test::CountOpenFds();
    if (!g_model->kept_orphans && maps.size() != g_maps_before.size()) {
      PrintMapsDifference(g_maps_before, maps);
    }
    FZ_CHECK(g_model->kept_orphans || maps.size() == g_maps_before.size(),
             "%zu mappings before the input, %zu after", g_maps_before.size(), maps.size());
    FZ_CHECK(fds == g_fds_before, "%zu fds before the input, %zu after", g_fds_before, fds);
  }
  for (int i = 0; i < kEventFds; ++i) DrainEventFd(i);
  delete g_model;
  g_model = nullptr;
  asyncjob_set_guarded_stack_budget(g_default_budget);
  asyncjob_set_stack_size(g_default_stack_size);
}

int LockAllocators(void*) { return 1; }

void* RunOneJobAndExit(void*) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASYNC_start_job(&job, nullptr, &ret, &HelperJobFunction, nullptr, 0);
  ASYNC_start_job(&job, nullptr, &ret, &HelperJobFunction, nullptr, 0);
  asyncjob_clear_errors();
  return nullptr;
}

// ----- The process -----

int Initialize() {
  const char* trace = std::getenv("ASYNCJOB_FUZZ_TRACE");
  g_trace = trace != nullptr && *trace != '\0' && *trace != '0';
  const char* stacks = std::getenv("ASYNCJOB_FUZZ_STACKS");
  g_mode = stacks != nullptr && std::strcmp(stacks, "custom") == 0 ? Mode::kCustom : Mode::kLibrary;
  // The model counts guarded stacks against the budget and expects
  // /proc/self/maps back to where it was after each input: it does not
  // model the stack caches (on by default), so they are turned off here.
  asyncjob_set_stack_cache_limits(0, 0);
  ASYNC_get_mem_functions(&g_library_alloc, &g_library_free);
  OpenEventFds();
  if (g_mode == Mode::kCustom && ASYNC_set_mem_functions(&FuzzAlloc, &FuzzFree) != 1) {
    std::fprintf(stderr,
                 "api_fuzzer: a stack was allocated before the custom allocator could be set\n");
    std::abort();
  }
  // One job locks the allocators for good, so that the fuzzer's
  // ASYNC_set_mem_functions op meets the same answer in every input.
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  if (ASYNC_start_job(&job, nullptr, &ret, &LockAllocators, nullptr, 0) != ASYNC_FINISH) {
    std::fprintf(stderr, "api_fuzzer: the first job did not run\n");
    std::abort();
  }
  ASYNC_cleanup_thread();
  Pattern();  // made now, not in the first input that counts mappings
  g_default_budget = asyncjob_get_guarded_stack_budget();
  g_default_stack_size = asyncjob_get_stack_size();
  g_helper = new Helper;
  // The helper's first calls set up what its thread keeps for good (its
  // malloc arena, its error queue), before any input counts mappings.
  g_helper->Run([] {
    ASYNC_JOB* helper_job = nullptr;
    int helper_ret = 0;
    ASYNC_start_job(&helper_job, nullptr, &helper_ret, &LockAllocators, nullptr, 0);
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  });
  // Threads that run a job to its end: the C library's first-use mappings
  // for later threads (cached thread stacks, a malloc arena) are made now.
  // Several live at once, so that several stacks are cached: libFuzzer
  // starts a thread of its own after this (its RSS watcher), which takes
  // one of them for good, and the input that first creates a thread must
  // still find one.
  constexpr int kWarmUpThreads = 3;
  pthread_t warm_up[kWarmUpThreads];
  for (pthread_t& thread : warm_up) {
    if (pthread_create(&thread, nullptr, &RunOneJobAndExit, nullptr) != 0) {
      std::fprintf(stderr, "api_fuzzer: a warm-up thread failed to start\n");
      std::abort();
    }
  }
  for (pthread_t& thread : warm_up) {
    if (pthread_join(thread, nullptr) != 0) {
      std::fprintf(stderr, "api_fuzzer: a warm-up thread failed\n");
      std::abort();
    }
  }
  std::fprintf(stderr, "api_fuzzer: stacks from the %s\n",
               g_mode == Mode::kCustom ? "custom allocator" : "library (guarded and slab)");
  return 0;
}

int RunOneInput(const std::uint8_t* data, std::size_t size) {
  BeginInput();
  Reader reader{data, size, 0};
  DoOps(reader, -1);
  EndInput();
  return 0;
}

}  // namespace
}  // namespace api_fuzzer

extern "C" int LLVMFuzzerInitialize(int*, char***) { return api_fuzzer::Initialize(); }

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return api_fuzzer::RunOneInput(data, size);
}
