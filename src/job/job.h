// job.h - jobs, the per-thread pool, and starting, pausing and resuming them.
//
// This unit owns the job machinery under the C API: a Job is a context
// (context/) running on a stack (stack/), with the bookkeeping OpenSSL's
// semantics need. It knows nothing of wait contexts: it carries an opaque
// user_data pointer for the layer above, and keeps the slots that the C
// API's return-free entries and the libcrypto bridge's switch hooks fill in
// (Job::outcome, Job::default_libctx).
//
// Memory: a Job's header lives at the top of its own stack, so creating a job
// costs one stack allocation and nothing else, and a paused job's footprint
// is the stack pages it touched. Arguments are copied onto the job's stack
// below the header (up to a quarter of the stack); larger ones go to the heap.
//
// Threads: each thread has its own Pool; a job may only be resumed on the
// thread that started it, which is recognised by a generation number never
// reused within the process (ThreadState::id), not by the address of its
// thread-local block, which the C library hands to the next thread it
// creates. All functions act on the calling thread.
//
// Thread exit: a thread that exits (pthread_exit(), or cancellation) while
// inside a job ends that job and every job it was nested in: the forced
// unwind passes from each job's stack on to the stack that entered it, and
// the jobs go back to their pool. Jobs the thread left paused become
// orphans (JobState::kOrphaned): their stack pages go back to the kernel,
// their header page stays, so that any later resume or cancel of them is
// refused (ASYNCJOB_R_OWNER_THREAD_EXITED). docs/safety.md ("Threads that
// exit or are cancelled") says what callers see.
//
//   Job* job = Pool::ForThisThread(true)->Acquire(&exhausted);
//   Outcome outcome = Start(job, func, args, size, user_data);
//   while (outcome == Outcome::kPaused) { wait...; outcome = Resume(job); }
//   int result = job->entry.result;
//   Release(job);
//
// Return-free entries (ASYNCJOB_CONTEXT_RETURN_FREE builds): the C API
// enters a job with EnterReturnFree() as its own last step instead of
// Start()/Resume(), so that the job's pause or end returns straight into the
// C API's caller. docs/design.md ("Return-free switching") explains it.
#ifndef ASYNCJOB_SRC_JOB_JOB_H_
#define ASYNCJOB_SRC_JOB_JOB_H_

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "context/context.h"
#include "stack/stack.h"

namespace asyncjob::job {

// kOrphaned: left paused (or running) by a thread that has exited; it never
// runs again, and only its header remains.
// kTombstone: a paused job its owner can never resume, abandoned by the
// layer above (see Abandon()); it never runs again, and waits on its
// thread's tombstone list to be released.
enum class JobState : std::uint8_t { kIdle, kRunning, kPaused, kOrphaned, kTombstone };
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
  bool empty() const { return caught_exceptions == nullptr && uncaught_exceptions == 0; }
};

struct CancelHook {
  void (*function)(void*);
  void* argument;
};
inline constexpr int kMaxCancelHooks = 8;

class Pool;
struct ThreadState;

// Bytes below a job's header kept for small arguments: a start with at most
// this many bytes of arguments can reuse a parked context (Job::parked).
inline constexpr std::size_t kSmallArgumentRoom = 256;

// A job's header. It sits at the top of the job's own stack, aligned to a
// cache line: the fields an entry into the job or an exit from it touches
// come first (the context, the links, the run state, the entry, the
// exception states, the C API's outcome slots, the stack), so that a whole
// start-pause-resume-finish cycle touches the header's first four cache
// lines; the cancel hooks and the switch hooks' state come last.
struct Job {
  // How the job is tied to the code around it: who resumes it, whose it is.
  struct Links {
    context::Context* resume_to = nullptr;  // where pausing or finishing returns
    Job* parent = nullptr;                  // job running when this one was entered
    std::uint64_t owner = 0;  // ThreadState::id of the thread that started it; 0 when idle
    Pool* pool = nullptr;
    Job* next_idle = nullptr;  // in its pool's idle list
  };

  // The C++ exception states the job and its caller swap at every entry and
  // exit: each one's is saved while the other runs.
  struct ExceptionStates {
    ExceptionState inside;   // the job's, while it is not running
    ExceptionState outside;  // the caller's, while the job runs (if swapped)
  };

  // Owned by the C API, for return-free entries: where its caller wants the
  // job's handle and result, and what finishes the job on its own stack
  // (returns the value handed to the caller).
  struct ReturnFreeOutcome {
    void* handle_slot = nullptr;  // the caller's ASYNC_JOB** as void*
    int* result_slot = nullptr;
    int (*finish)(Job* job) = nullptr;
  };

  // What the job runs, and what came of it.
  struct Entry {
    int result = 0;      // what function returned
    bool fresh = false;  // not entered yet: the next entry starts it
    int (*function)(void*) = nullptr;
    void* arguments = nullptr;       // on the job's stack, or heap_arguments
    void* heap_arguments = nullptr;  // a copy too large for the stack
  };

  struct Cancellation {
    bool requested = false;  // Cancel() is unwinding it: pausing is disabled
    bool unwound = false;    // it finished by being cancelled
    int hook_count = 0;
    CancelHook hooks[kMaxCancelHooks] = {};
  };

  // Owned by the SwitchHooks, that is by the libcrypto bridge (openssl/):
  // libcrypto's per-thread default library context (an OSSL_LIB_CTX*) that
  // the job runs with, and its caller's, swapped at every entry and exit.
  struct DefaultLibraryContexts {
    void* job = nullptr;
    void* caller = nullptr;
  };

  context::Context fibre;
  Links links;
  JobState state = JobState::kIdle;
  // Entered by EnterReturnFree(): its pause and its end switch straight back
  // to the code that called the C API, and do the caller's work themselves.
  bool return_free = false;
  // Idle, and its context is parked in JobEntry(), which runs the next
  // function it is started with: no fresh context to prepare (return-free
  // builds; see docs/design.md, "Parked contexts").
  bool parked = false;
  // Whether its last entry swapped the C++ exception states. The common
  // case, no exception state on either side (nothing caught or in flight),
  // swaps nothing: the thread's empty state is then the job's too.
  bool exceptions_swapped = false;
  int block_depth = 0;        // ASYNC_block_pause() nesting
  Entry entry;                // entry.result right after block_depth: a start resets both at once
  void* user_data = nullptr;  // the C API's wait context
  ExceptionStates exceptions;
  ReturnFreeOutcome outcome;
  std::byte* header_start = nullptr;  // top of the usable fibre stack
  stack::Stack stack;
  Cancellation cancellation;
  DefaultLibraryContexts default_libctx;
  // Every job of a pool, idle or not, so that the jobs a thread leaves
  // paused can be found when it exits.
  struct PoolMembership {
    Job* next = nullptr;
    Job* previous = nullptr;
  } membership;
  // Introspection (capi/introspect.cc): where its last pause was called
  // from (the return address of ASYNC_pause_job(); stored only by pauses
  // that do not leave through the switch, whose saved pc is that address
  // already, see PauseCaller()), and when it paused (CLOCK_MONOTONIC_COARSE, in ns; 0 unless pause
  // timestamps are on, see SetPauseObserver()).
  struct PauseRecord {
    const void* caller = nullptr;
    // Builds without return-free pauses (ucontext, sanitizers): the frame
    // of ASYNC_pause_job(), whose saved frame pointer leads to the pausing
    // code's frames even when the switch's saved one does not.
    const void* frame = nullptr;
    std::uint64_t at_ns = 0;
  } last_pause;
};

// Code that must follow every entry into and exit from a job (for example
// to keep libcrypto's per-thread default library context per job).
// entering() runs on the caller's side just before the job runs
// (job->entry.fresh tells a start from a resume); left() once it paused or
// finished, with CurrentJob() its parent again: on the caller's side after
// the switch, or, for return-free entries, on the job's stack just before
// the switch. Their per-job state is Job::default_libctx.
struct SwitchHooks {
  void (*entering)(Job* job);
  void (*left)(Job* job);
};
// Installs hooks for every thread (nullptr removes them). Set them before
// jobs run: a job must see the same hooks on entry and exit.
void SetSwitchHooks(const SwitchHooks* hooks);

// Called for a job that its thread's exit (pthread_exit() or cancellation
// inside it) has ended, on the thread's way out and just before the job
// goes back to its pool, so that the layer above drops what it ties to the
// job (the C API: its wait context). Set once, before jobs run.
void SetThreadExitObserver(void (*observer)(Job* job));

// Introspection support (capi/introspect.cc is the layer that uses it).

// The code that called ASYNC_pause_job() for a paused job: the saved pc of
// a return-free pause, else what the pause recorded.
const void* PauseCaller(const Job* job);
//
// A process-wide registry of every live pool (including closing pools and
// the pools that hold a dead thread's orphans), so that any thread, or a
// debugger reading memory, can find every job. It is touched only when a
// pool is created or deleted; a pool's own job list is guarded by the
// pool's mutex, taken only when a job is created or freed. Starting,
// pausing and resuming take no lock.
struct PoolView {
  const Pool* pool;
  std::uint64_t owner;      // ThreadState::id of the thread that made it
  unsigned long owner_tid;  // its kernel thread id
  bool closing;
};
// Calls visit(pool, job, argument) for every job of the calling thread's
// pools (current and closing). No lock: only this thread changes them.
void ForEachJobOfThisThread(void (*visit)(const PoolView& pool, const Job* job, void* argument),
                            void* argument);
// The same for every pool of the process, under the registry's mutex and
// each pool's. visit must not create or free jobs or pools.
void ForEachJobInProcess(void (*visit)(const PoolView& pool, const Job* job, void* argument),
                         void* argument);
// Run (when set) by every pause, on the thread that paused, after the switch
// hooks: records pause times, checks for a dump request. Off by default: the
// only cost of a pause is then one load and an untaken branch.
void SetPauseObserver(void (*observer)(Job* job));
// Run (when set) for every job about to be freed, its stack still mapped.
void SetJobFreeObserver(void (*observer)(const Job* job));

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
  // Paused jobs their owner can no longer resume (the C API: their wait
  // context was freed under them): unwound at once (the code that paused
  // them registered cancel hooks), or kept as tombstones until released.
  std::uint64_t orphans = 0;
  std::uint64_t orphans_unwound = 0;
  std::uint64_t tombstones = 0;  // made
  std::uint64_t tombstones_released = 0;
  // The most jobs paused at once on the thread (merged as a maximum, not a
  // sum: in the process totals, the highest of any thread).
  std::uint64_t peak_paused = 0;
};
// The process totals plus the calling thread's own counts.
Counters ProcessCounters();

// Per-thread state. Plain data with constant initialisation, so that access
// compiles to a TLS load with no guard. A new thread gets it zeroed, often
// at the address an exited thread's had: hence ThreadState::id.
struct ThreadState {
  // This thread's generation: unique within the process, never reused,
  // given with its first pool (0 until then). Jobs record it as their owner.
  std::uint64_t id = 0;
  context::Context thread_context;  // the thread's own stack, while jobs run
  Job* current = nullptr;
  Pool* pool = nullptr;
  bool thread_context_ready = false;
  int live_pools = 0;                    // this one and closing ones whose paused jobs remain
  Pool* closing_pools = nullptr;         // the closing ones, through Pool::next_closing_
  ExceptionState* exceptions = nullptr;  // the C++ runtime's, for this thread
  // Return-free jobs of closing pools that finished on their own stacks,
  // which they could not free: freed at the next entry or cleanup.
  Job* finished_unfreed = nullptr;
  // Tombstones (see Abandon()), newest first, through links.next_idle.
  Job* tombstones = nullptr;
  std::size_t tombstone_count = 0;
  std::uint64_t tombstone_releases = 0;  // never reset: see TombstoneReleases()
  // Jobs of this thread paused now: up at each pause, down at each resume,
  // cancellation or abandonment of a paused job (for counters.peak_paused).
  std::uint64_t paused_now = 0;
  Counters counters;
};

extern constinit thread_local ThreadState this_thread __attribute__((tls_model("initial-exec")));

inline Job* CurrentJob() { return this_thread.current; }

// Whether `job` (started, not idle) was started by the calling thread.
inline bool OwnedByThisThread(const Job* job) {
  return job->links.owner != 0 && job->links.owner == this_thread.id;
}

class Pool {
 public:
  // The calling thread's pool; with create, makes an unlimited one if none.
  // Returns nullptr (error queued) when it cannot be made.
  inline static Pool* ForThisThread(bool create);

  // Most jobs ASYNC_init_thread() creates up front (2^20): as many as the
  // scale test keeps paused on one thread, a few GiB of stacks' first pages.
  // More can still be created on demand; asking for more up front is
  // refused at once rather than run the machine out of memory.
  static constexpr std::size_t kMaxInitSize = std::size_t{1} << 20;

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
  // Jobs running or paused. Tombstones count neither here nor towards
  // max_size: a pool with a maximum never runs dry because of them.
  std::size_t in_use() const { return total_ - idle_count_ - tombstones_; }
  std::size_t tombstones() const { return tombstones_; }
  std::size_t count_of(stack::StackKind kind) const { return kind_counts_[static_cast<int>(kind)]; }
  // Cleaned up while jobs were still paused: each is freed when it finishes.
  bool closing() const { return closing_; }
  void FreeIdleJobs();

  // Takes back one of its jobs, which Release() has reset. A job released
  // as it finishes on its own stack says so: if the pool is closing, the
  // job is freed later, since it cannot free the stack it runs on. A
  // closing pool is freed with its last job.
  inline void TakeBack(Job* job, bool on_its_own_stack);

  // Frees the jobs of this thread's closing pools that finished on their
  // own stacks (ThreadState::finished_unfreed), and the pools they empty.
  static void FreeFinishedUnfreedJobs();

  // At thread exit (the pthread key destructor): frees the idle jobs of the
  // thread's pools and makes orphans of the others (see the top of this
  // file). The pools holding orphans are kept for the life of the process.
  static void OrphanThisThreadsJobs();

 private:
  explicit Pool(std::size_t max_size) : max_size_(max_size) {}
  ~Pool() = default;
  static Pool* CreateForThisThread();
  // Frees a pool with no jobs left (see job.cc).
  static void Delete(Pool* pool);
  // Queues a job of a closing pool, finishing on its own stack, on
  // ThreadState::finished_unfreed.
  static void DeferFreeToClosingPool(Job* job);
  Job* AcquireSlow(bool* exhausted);
  Job* CreateJob();
  void FreeJob(Job* job);
  // Frees a job of this closing pool, and the pool with its last job.
  void FreeJobOfClosingPool(Job* job);
  // Marks this pool closing and lists it on the thread's closing pools.
  void MarkClosing();
  // Gives up the paused jobs of the thread's closing pools: marks them all
  // orphaned, then runs their cancel hooks; see OrphanThisThreadsJobs().
  static void GiveUpPausedJobs();
  // Makes orphans of this closing pool's remaining jobs; see OrphanThisThreadsJobs().
  void Orphan();

  stack::StackSource stacks_;
  Job* idle_ = nullptr;
  Job* jobs_ = nullptr;  // all of them, through Job::membership
  Pool* next_closing_ = nullptr;
  std::size_t max_size_ = 0;
  std::size_t total_ = 0;
  std::size_t idle_count_ = 0;
  std::size_t kind_counts_[3] = {0, 0, 0};
  std::size_t tombstones_ = 0;  // of total_: abandoned jobs not yet released
  bool closing_ = false;        // cleaned up while jobs were still paused
  // Introspection: the process-wide registry of pools, and what guards
  // jobs_ against a reader on another thread (taken only to link or unlink
  // a job).
  Pool* registry_next_ = nullptr;
  Pool* registry_previous_ = nullptr;
  std::uint64_t owner_ = 0;
  unsigned long owner_tid_ = 0;
  std::mutex jobs_mutex_;
  static void Register(Pool* pool);
  static void Unregister(Pool* pool);

  friend struct DebugLayout;
  friend void ForEachJobOfThisThread(void (*)(const PoolView&, const Job*, void*), void*);
  friend void ForEachJobInProcess(void (*)(const PoolView&, const Job*, void*), void*);
  friend void Abandon(Job* job);
  friend void ReleaseTombstone(Job* job);
};

// Makes a fresh job ready to run (Run() or EnterReturnFree() then runs it).
// false (error queued) when its arguments cannot be copied; the job is then
// still the caller's to Release().
inline bool PrepareStart(Job* job, int (*function)(void*), const void* arguments, std::size_t size,
                         void* user_data);

// Whether `job` is paused and belongs to this thread; queues the reason
// when not (ASYNCJOB_R_OWNER_THREAD_EXITED for an orphan).
bool CheckResumable(const Job* job);

// The same, inline for the common case, and counts the resume to come.
inline bool PrepareResume(Job* job);

// Runs a started or resumed job until it pauses or finishes.
inline Outcome Run(Job* job);

// Start: PrepareStart() and Run(). kError (error queued) as PrepareStart().
inline Outcome Start(Job* job, int (*function)(void*), const void* arguments, std::size_t size,
                     void* user_data);

// Resume: PrepareResume() and Run(). kError (error queued, job untouched)
// when it is not paused or belongs to another thread.
inline Outcome Resume(Job* job);

// Whether the current job (may be nullptr) can pause now: not blocked, not
// being cancelled.
inline bool CanPause(const Job* job);

// Pauses the current job, which CanPause(); returns once it has been
// resumed. Throws JobCancelled (after running the job's cancel hooks,
// newest first) when it is resumed by Cancel() and its stack can be
// unwound; when it cannot, pauses again (see Cancel()).
inline void PauseCurrent(Job* job);

#if ASYNCJOB_CONTEXT_RETURN_FREE
// Whether `job` may be entered by EnterReturnFree(): not if its pool is
// closing, since the job must then be freed when it finishes, which it
// cannot do on its own stack.
inline bool CanReturnFree(const Job* job);

// Runs a started or resumed job (see PrepareStart(), PrepareResume()), as
// the caller's last step: `return EnterReturnFree(job);`. The job's next
// PauseReturnFree(job, value) returns `value` to the caller's caller; its
// end returns job->outcome.finish(job), which the C API sets.
inline int EnterReturnFree(Job* job);

// Pauses the current job, which CanPause() and was entered by
// EnterReturnFree(), as the caller's last step: `return
// PauseReturnFree(job, value);`. Returns `value` to the code that called
// the function that entered the job; returns 1 to the caller's caller when
// the job is resumed. Cancel() resumes it by throwing JobCancelled from
// there instead.
inline int PauseReturnFree(Job* job, int value);
#endif

// Cancels a paused job: resumes it with JobCancelled thrown from its pause,
// so that its stack unwinds, until it finishes (pausing is disabled
// meanwhile). kError (error queued, job untouched) as for Resume().
//
// Before throwing, the job walks its own stack from the pause to its entry
// (unwind_check.h): if the exception would meet a frame the C++ runtime
// cannot unwind (no unwind information) or must not leave (noexcept, a
// destructor), std::terminate would follow, so instead nothing runs, an
// error naming the frame is queued (ASYNCJOB_R_STACK_NOT_UNWINDABLE or
// ASYNCJOB_R_NOEXCEPT_FRAME) and the job pauses again where it was: kPaused,
// and it can still be resumed or cancelled. Otherwise before_unwind(job) (if
// not nullptr) runs on the job's stack, then the cancel hooks (newest
// first; one that throws has its exception dropped and reported as
// ASYNCJOB_R_CANCEL_HOOK_THREW, and the others still run), then the unwind:
// kFinished, with job->cancellation.unwound set. The caller then Release()s it.
Outcome Cancel(Job* job, void (*before_unwind)(Job* job) = nullptr);

// Cancel hooks of the current job: run when it is cancelled. false (error
// queued) outside a job or when the job has kMaxCancelHooks already. While
// the job is being cancelled (its hooks have run or are running) a hook is
// accepted but never runs: the hooks run once, before the unwind.
bool AddCancelHook(void (*function)(void*), void* argument);
// false when the current job has no such hook (nothing queued).
bool RemoveCancelHook(void (*function)(void*), void* argument);

// ----- Tombstones -----
// A paused job whose owner can never resume it (the C API: its wait context
// was freed under it) must never run again. The layer above either cancels
// it (when the code that paused it registered cancel hooks, which withdraw
// what it handed out) or, when code it knows nothing of may still hold the
// job or write into its stack, abandons it:

// Turns a paused job of this thread into a tombstone: it can no longer be
// resumed or cancelled (CheckResumable() refuses it with
// ASYNCJOB_R_JOB_ORPHANED), it leaves its pool's in_use() count, its cancel
// hooks run (from here, with errors suppressed: what registered them
// withdraws what it handed out), and then the resident pages of its stack
// below the header page go back to the kernel (its frames are never run
// nor unwound). Its memory stays mapped and its header keeps user_data, so
// that whatever still holds the job or points into its stack touches
// memory that is ours, until ReleaseTombstone().
void Abandon(Job* job);
// Returns a tombstone of this thread to its pool, as if it had finished.
void ReleaseTombstone(Job* job);
// Counts an orphan the layer above handled: unwound, or abandoned.
void CountOrphan(bool unwound);
// Run for each tombstone left when the thread's pool is cleaned up
// (ASYNC_cleanup_thread(), thread exit), so that the layer above lets go of
// what it ties to it; it must end with ReleaseTombstone(job). Set once.
void SetTombstoneReleaser(void (*release)(Job* job));
// This thread's tombstones, newest first (the next: job->links.next_idle).
inline Job* FirstTombstone() { return this_thread.tombstones; }
inline std::size_t TombstoneCount() { return this_thread.tombstone_count; }
// How many tombstones this thread has released so far: a caller holding
// tombstones across code it does not control (cleanup routines) compares it
// to tell whether any were released behind its back.
inline std::uint64_t TombstoneReleases() { return this_thread.tombstone_releases; }

// Returns a job that finished (or never started) to its pool: frees what
// the run left and hands the job to Pool::TakeBack().
inline void Release(Job* job, bool on_its_own_stack = false);

}  // namespace asyncjob::job

// The hot paths are inline (job_inl.h), so that the C API's functions call
// the context switch directly: every function returned through after a
// switch is a return the CPU's return predictor gets wrong.
#include "job/job_inl.h"

#endif  // ASYNCJOB_SRC_JOB_JOB_H_
