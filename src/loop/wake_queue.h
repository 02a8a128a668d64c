// wake_queue.h - what other threads hand to a Loop: job wake-ups, posted
// functions and stop requests, and the doorbell that tells the loop thread.
//
// This is the only code of the loop that other threads run; everything
// else in src/loop/ belongs to the loop thread. It knows jobs only as slot
// indices and generations (see job_ref.h), and nothing of their state.
// docs/design.md ("The event loop's wake token") explains the scheme.
//
// Owns:
//   - the doorbell: an eventfd the loop thread watches with epoll; written
//     when something arrives for the loop, read (drained) by the loop thread;
//   - one wake node per job slot, in a fixed directory of chunks that only
//     grows, so that wakers find a node by index while the loop thread adds
//     chunks (nodes never move and are freed with the queue);
//   - the loop's entry in a process-wide registry of loops, which wake-up
//     tokens name, so that a callback arriving after the loop was destroyed
//     finds the entry empty (or taken by a loop of another incarnation) and
//     does nothing;
//   - the posted functions (a mutex and a vector) and the stop flag.
//
// Wake-ups:
//   - Every job's wait context gets the same callback, WakeQueue::Callback,
//     whose argument is not a pointer but a 64-bit token (WakeToken):
//       [registry slot:10][incarnation:10][job slot index:22][generation:22]
//   - A node's `pending` word holds 0 (not queued) or the newest generation
//     that asked to be woken. The waker that moves it from 0 pushes the node
//     on a lock-free LIFO (a CAS on the head); any other waker only updates
//     the word (always with a read-modify-write, so that the loop thread
//     synchronises with every waker) and counts as coalesced. So a node is
//     never in the queue twice, and waking costs no allocation.
//   - The push that finds the queue empty rings the doorbell, unless the
//     loop thread is awake (see below): at most one system call per batch
//     of wake-ups, however many threads take part.
//   - While the loop thread runs an iteration it is "awake": it will drain
//     the queue before it blocks or returns, so a push needs no doorbell.
//     Only a loop about to block in epoll_wait (or leaving its run) needs
//     one: it clears `awake_` and then looks at the queue, while a waker
//     pushes and then looks at `awake_` (both sequentially consistent), so
//     at least one of them sees the other: either the loop finds the
//     wake-up and does not block, or the waker rings. Under load, when
//     wake-ups arrive while the loop is busy resuming jobs, they cost no
//     system call at all.
//   - The loop thread drains the doorbell first, then takes the whole list
//     with one exchange, restores FIFO order, and for each node swaps
//     `pending` back to 0 (after reading its link: from then on a waker may
//     push it again) and reports (index, generation). Deciding whether that
//     generation is still the job's (or stale), and whether the job can be
//     resumed now, is the loop's business.
//
// Thread rules: Callback(), Wake(), RequestStop() and Post() may be called
// from any thread. Everything else belongs to the owner's (loop) thread.
// The destructor (or Unregister()) waits for callbacks already looking at
// this queue to finish; callbacks arriving later do nothing. The destructor
// also waits for a RequestStop() or Post() still ringing the doorbell, so
// the loop thread may destroy the queue as soon as it has seen either.
//
//   WakeQueue queue;                               // eventfd + registry slot
//   queue.Reserve(1024);                           // nodes for slots 0..1023
//   ASYNC_WAIT_CTX_set_callback(ctx, &WakeQueue::Callback,
//                               queue.TokenFor(index, generation));
//   // ... the doorbell fd (doorbell_fd()) became readable:
//   queue.DrainDoorbell();
//   queue.DrainWakeups([&](std::uint32_t index, std::uint32_t generation) {
//     /* resume the job of slot `index` if `generation` is still its own */
//   });
//   queue.RunPosted();
#ifndef ASYNCJOB_SRC_LOOP_WAKE_QUEUE_H_
#define ASYNCJOB_SRC_LOOP_WAKE_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace asyncjob::detail {

// The layout of a wake-up token (see the file comment).
inline constexpr unsigned kGenerationBits = 22;
inline constexpr unsigned kSlotIndexBits = 22;
inline constexpr unsigned kIncarnationBits = 10;
inline constexpr unsigned kRegistryBits = 10;
static_assert(kGenerationBits + kSlotIndexBits + kIncarnationBits + kRegistryBits == 64);
inline constexpr std::uint32_t kGenerationMask = (1u << kGenerationBits) - 1;
inline constexpr std::uint32_t kIncarnationMask = (1u << kIncarnationBits) - 1;
// Job slots a loop may have, and loops that may exist at once.
inline constexpr std::uint32_t kMaxJobSlots = 1u << kSlotIndexBits;
inline constexpr std::uint32_t kMaxLoops = 1u << kRegistryBits;

// The generation a job slot takes when its job ends: never 0, which the
// wake queue uses for "no wake-up pending".
inline std::uint32_t NextGeneration(std::uint32_t generation) noexcept {
  generation = (generation + 1) & kGenerationMask;
  return generation == 0 ? 1 : generation;
}

// Whether generation a was issued after b (serial-number arithmetic: a slot
// is reused at most 2^21 times while a wake-up is in flight).
inline bool IsNewerGeneration(std::uint32_t a, std::uint32_t b) noexcept {
  std::uint32_t distance = (a - b) & kGenerationMask;
  return distance != 0 && distance < (1u << (kGenerationBits - 1));
}

// The argument of a job's wait-context callback, packed into a pointer.
struct WakeToken {
  std::uint32_t registry_slot;
  std::uint32_t incarnation;
  std::uint32_t index;  // the job's slot
  std::uint32_t generation;

  void* Encode() const noexcept;
  static WakeToken Decode(const void* argument) noexcept;
};

class WakeQueue {
 public:
  // Creates the doorbell and takes an entry in the registry. Throws
  // std::system_error when the eventfd cannot be created, Error when
  // kMaxLoops queues exist already.
  WakeQueue();
  // Unregisters, then frees the nodes and closes the doorbell. Wake-ups
  // still queued are dropped.
  ~WakeQueue();
  WakeQueue(const WakeQueue&) = delete;
  WakeQueue& operator=(const WakeQueue&) = delete;

  // ----- Any thread -----

  // The callback installed in every job's wait context: wakes the job its
  // token names, if that queue still exists. Returns 1.
  static int Callback(void* token);
  // Queues a wake-up of slot `index` for `generation` (see the file comment).
  void Wake(std::uint32_t index, std::uint32_t generation) noexcept;
  // Asks the loop to stop, and rings the doorbell.
  void RequestStop() noexcept;
  // Queues fn to run on the loop thread (RunPosted()), and rings the doorbell.
  void Post(std::function<void()> fn);

  // ----- Owner thread -----

  // The fd for the loop to watch (readable once something arrived).
  int doorbell_fd() const noexcept { return doorbell_fd_; }
  // Makes sure slots 0 .. slot_count - 1 have a node (callbacks for other
  // slots are ignored). Throws std::bad_alloc.
  void Reserve(std::uint32_t slot_count);
  // The callback argument that wakes slot `index` for `generation`.
  void* TokenFor(std::uint32_t index, std::uint32_t generation) const noexcept;
  // Leaves the registry (waiting for callbacks in flight): from then on
  // callbacks do nothing. Drops the posted functions not run yet, and makes
  // a RunPosted() in progress (a posted function calling this) stop after
  // the current one. Idempotent; the destructor calls it too.
  void Unregister() noexcept;

  // The loop thread is running (it will drain the queue before it blocks
  // or leaves): wakers need not ring the doorbell.
  void SetAwake() noexcept { awake_.store(true, std::memory_order_relaxed); }
  // Before blocking on the doorbell: from now on wakers ring. Returns false,
  // the loop staying awake, when a wake-up is queued already: then do not
  // block.
  bool PrepareToBlock() noexcept;
  // The loop thread leaves its run: wakers ring from now on, and if a
  // wake-up is queued already the doorbell is rung for it.
  void SetAway() noexcept;

  // Consumes the doorbell's readiness. Call before DrainWakeups(): a wake-up
  // pushed after this rings again, so none is left with the doorbell quiet.
  void DrainDoorbell() noexcept;
  // Calls on_wakeup(index, generation) for each queued wake-up, oldest
  // first, emptying the queue. A wake-up that arrives meanwhile waits for
  // the next call.
  template <class OnWakeup>
  void DrainWakeups(OnWakeup&& on_wakeup);

  // Whether stop was requested (and not yet taken).
  bool stop_requested() const noexcept { return stop_.load(std::memory_order_acquire); }
  // Returns whether stop was requested, and clears the request.
  bool TakeStopRequest() noexcept { return stop_.exchange(false, std::memory_order_acq_rel); }

  // Whether posted functions are waiting.
  bool has_posted() const noexcept { return has_posted_.load(std::memory_order_acquire); }
  // Runs the functions posted so far, in order. When one throws, those after
  // it stay queued (ahead of newer ones) and the exception propagates.
  void RunPosted();

  // Wake() calls merged into a wake-up already queued.
  std::uint64_t coalesced() const noexcept { return coalesced_.load(std::memory_order_relaxed); }
  // Doorbell rings made by Wake() (at most one per batch).
  std::uint64_t wake_signals() const noexcept {
    return wake_signals_.load(std::memory_order_relaxed);
  }

 private:
  // The queue entry of one job slot.
  struct Node {
    Node* next = nullptr;                   // link while queued
    std::atomic<std::uint32_t> pending{0};  // 0 or a generation
    std::uint32_t index = 0;                // the slot's
  };
  static constexpr unsigned kChunkBits = 10;  // nodes allocated 1,024 at a time
  static constexpr std::uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr std::uint32_t kChunkCount = kMaxJobSlots >> kChunkBits;

  // The doorbell's write (DrainDoorbell() is its read).
  void RingDoorbell() noexcept;

  int doorbell_fd_ = -1;
  std::uint32_t registry_slot_ = 0;
  std::uint32_t incarnation_ = 0;
  bool registered_ = false;

  std::unique_ptr<std::atomic<Node*>[]> chunks_;
  std::uint32_t chunk_count_ = 0;  // owner thread

  std::atomic<Node*> head_{nullptr};
  std::atomic<std::uint64_t> coalesced_{0};
  std::atomic<std::uint64_t> wake_signals_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> awake_{false};  // see SetAwake()

  std::mutex post_mutex_;
  std::vector<std::function<void()>> posted_;  // guarded by post_mutex_
  std::atomic<bool> has_posted_{false};
};

template <class OnWakeup>
void WakeQueue::DrainWakeups(OnWakeup&& on_wakeup) {
  if (head_.load(std::memory_order_relaxed) == nullptr) return;
  Node* list = head_.exchange(nullptr, std::memory_order_acquire);
  // Pushed newest first; report in arrival order.
  Node* fifo = nullptr;
  while (list != nullptr) {
    Node* next = list->next;
    list->next = fifo;
    fifo = list;
    list = next;
  }
  while (fifo != nullptr) {
    Node& node = *fifo;
    fifo = node.next;  // read before the node may be pushed again
    std::uint32_t generation = node.pending.exchange(0, std::memory_order_acq_rel);
    on_wakeup(node.index, generation);
  }
}

}  // namespace asyncjob::detail

#endif  // ASYNCJOB_SRC_LOOP_WAKE_QUEUE_H_
