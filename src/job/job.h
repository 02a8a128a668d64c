// job.h - jobs, the per-thread pool, and starting, pausing and resuming them.
//
// This unit owns the job machinery under the C API: a Job is a context
// (context/) running on a stack (stack/), with the bookkeeping OpenSSL's
// semantics need. It knows nothing of wait contexts: it carries an opaque
// user_data pointer for the layer above.
//
// Memory: a Job's header lives at the top of its own stack, so creating a job
// costs one stack allocation and nothing else, and a paused job's footprint
// is the stack pages it touched. Arguments are copied onto the job's stack
// below the header (up to a quarter of the stack); larger ones go to the heap.
//
// Threads: each thread has its own Pool; a job may only be resumed on the
// thread that started it. All functions act on the calling thread.
//
//   Job* job = Pool::ForThisThread(true)->Acquire(&exhausted);
//   Outcome outcome = Start(job, func, args, size, user_data);
//   while (outcome == Outcome::kPaused) { wait...; outcome = Resume(job); }
//   int result = job->result;
//   Release(job);
#ifndef ASYNCJOB_SRC_JOB_JOB_H_
#define ASYNCJOB_SRC_JOB_JOB_H_

#include <cstddef>
#include <cstdint>

#include "context/context.h"
#include "stack/stack.h"

namespace asyncjob::job {

enum class JobState : std::uint8_t { kIdle, kRunning, kPaused };
enum class Outcome : std::uint8_t { kError, kPaused, kFinished };

// Thrown inside a job, from the pause it is parked in, when the job is
// cancelled: unwinding it runs the destructors on the job's stack. Code that
// catches it must rethrow it. It never leaves the job.
struct JobCancelled {};

// The C++ runtime's per-thread exception state (Itanium ABI layout): saved
// per job so that a job paused inside a catch block leaves the thread's
// state as it found it.
struct ExceptionState {
  void* caught_exceptions = nullptr;
  unsigned int uncaught_exceptions = 0;
};

struct CancelHook {
  void (*function)(void*);
  void* argument;
};
inline constexpr int kMaxCancelHooks = 8;

class Pool;
struct ThreadState;

struct Job {
  context::Context fibre;
  context::Context* resume_to = nullptr;  // where pausing or finishing returns
  Job* parent = nullptr;                  // job running when this one was entered
  ThreadState* owner = nullptr;           // thread that started it
  Pool* pool = nullptr;
  JobState state = JobState::kIdle;
  int block_depth = 0;                    // ASYNC_block_pause() nesting
  int result = 0;
  int (*function)(void*) = nullptr;
  void* arguments = nullptr;
  void* heap_arguments = nullptr;
  void* user_data = nullptr;              // the C API's wait context
  Job* next_idle = nullptr;
  std::byte* header_start = nullptr;      // top of the usable fibre stack
  bool cancel_requested = false;
  bool cancelled = false;                 // it finished by being cancelled
  int cancel_hook_count = 0;
  CancelHook cancel_hooks[kMaxCancelHooks] = {};
  ExceptionState exception_state;
  bool fresh = false;                     // entered for the first time next
  void* hook_state[2] = {nullptr, nullptr};  // owned by the SwitchHooks
  stack::Stack stack;
};

// Code that must follow every entry into and exit from a job (for example
// to keep libcrypto's per-thread default library context per job). Both run
// on the caller's side: entering() just before the job runs (job->fresh
// tells a start from a resume), left() just after it paused or finished.
struct SwitchHooks {
  void (*entering)(Job* job);
  void (*left)(Job* job);
};
// Installs hooks for every thread (nullptr removes them). Set them before
// jobs run: a job must see the same hooks on entry and exit.
void SetSwitchHooks(const SwitchHooks* hooks);

// How much work the job machinery did. Counted per thread without atomics;
// a thread's counts join the process totals when its pool is cleaned up.
struct Counters {
  std::uint64_t jobs_created = 0;
  std::uint64_t jobs_freed = 0;
  std::uint64_t starts = 0;
  std::uint64_t resumes = 0;
  std::uint64_t pauses = 0;
  std::uint64_t finishes = 0;
  std::uint64_t cancels = 0;
  std::uint64_t exhausted = 0;  // ASYNC_NO_JOBS answers
};
// The process totals plus the calling thread's own counts.
Counters ProcessCounters();

// Per-thread state. Plain data with constant initialisation, so that access
// compiles to a TLS load with no guard.
struct ThreadState {
  context::Context thread_context;  // the thread's own stack, while jobs run
  Job* current = nullptr;
  Pool* pool = nullptr;
  bool thread_context_ready = false;
  int live_pools = 0;  // this one and closing ones whose paused jobs remain
  ExceptionState* exceptions = nullptr;  // the C++ runtime's, for this thread
  Counters counters;
};

extern constinit thread_local ThreadState this_thread
    __attribute__((tls_model("initial-exec")));

inline Job* CurrentJob() { return this_thread.current; }

class Pool {
 public:
  // The calling thread's pool; with create, makes an unlimited one if none.
  // Returns nullptr (error queued) when it cannot be made.
  inline static Pool* ForThisThread(bool create);

  // ASYNC_init_thread(): creates or reconfigures this thread's pool.
  static bool InitThisThread(std::size_t max_size, std::size_t init_size);
  // ASYNC_cleanup_thread(): frees idle jobs, and the pool once no job is in
  // use (jobs still paused are freed when they finish).
  static void CleanupThisThread();

  // An idle job, reused or newly created. Returns nullptr either because the
  // pool is at max_size (*exhausted = true, no error) or because a job could
  // not be created (error queued).
  inline Job* Acquire(bool* exhausted);

  std::size_t max_size() const { return max_size_; }
  std::size_t total() const { return total_; }
  std::size_t idle() const { return idle_count_; }
  std::size_t in_use() const { return total_ - idle_count_; }
  std::size_t count_of(stack::StackKind kind) const {
    return kind_counts_[static_cast<int>(kind)];
  }
  void FreeIdleJobs();

 private:
  friend void Release(Job* job);
  friend void ReleaseToClosingPool(Job* job);
  friend void DeletePool(Pool* pool);
  explicit Pool(std::size_t max_size) : max_size_(max_size) {}
  ~Pool() = default;
  static Pool* CreateForThisThread();
  Job* AcquireSlow(bool* exhausted);
  Job* CreateJob();
  void FreeJob(Job* job);

  stack::StackSource stacks_;
  Job* idle_ = nullptr;
  std::size_t max_size_ = 0;
  std::size_t total_ = 0;
  std::size_t idle_count_ = 0;
  std::size_t kind_counts_[3] = {0, 0, 0};
  bool closing_ = false;  // cleaned up while jobs were still paused
};

// Runs a fresh job until it pauses or finishes. kError (error queued) when
// its arguments cannot be copied; the job is then still the caller's to
// Release().
inline Outcome Start(Job* job, int (*function)(void*), const void* arguments,
                     std::size_t size, void* user_data);

// Whether `job` is paused and belongs to this thread; queues the reason
// when not.
bool CheckResumable(const Job* job);

// Resumes a paused job. kError (error queued, job untouched) when it is not
// paused or belongs to another thread.
inline Outcome Resume(Job* job);

// Pauses the current job. Returns false without pausing when there is no
// current job or pausing is blocked; true once the job has been resumed.
// Throws JobCancelled (after running the job's cancel hooks, newest first)
// when it is resumed by Cancel().
inline bool PauseCurrent();

// Cancels a paused job: resumes it with JobCancelled thrown from its pause,
// so that its stack unwinds, until it finishes (pausing is disabled
// meanwhile). kError (error queued, job untouched) as for Resume(); else
// kFinished, with job->cancelled set. The caller then Release()s it.
Outcome Cancel(Job* job);

// Cancel hooks of the current job: run when it is cancelled. false (error
// queued) outside a job or when the job has kMaxCancelHooks already.
bool AddCancelHook(void (*function)(void*), void* argument);
// false when the current job has no such hook (nothing queued).
bool RemoveCancelHook(void (*function)(void*), void* argument);

// Returns a job that finished (or never started) to its pool.
inline void Release(Job* job);

}  // namespace asyncjob::job

// The hot paths are inline (job_inl.h), so that the C API's functions call
// the context switch directly: every function returned through after a
// switch is a return the CPU's return predictor gets wrong.
#include "job/job_inl.h"

#endif  // ASYNCJOB_SRC_JOB_JOB_H_
