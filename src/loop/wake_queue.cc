// The cross-thread half of asyncjob::Loop: wake-up tokens, the registry of
// loops, the lock-free wake-up queue, posted functions and the doorbell.
// The design is described in wake_queue.h.
#include "loop/wake_queue.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>

#include <cstddef>
#include <iterator>
#include <system_error>
#include <utility>

#include "asyncjob/asyncjob.hpp"
#include "base/eventfd.h"

namespace asyncjob::detail {
namespace {

static_assert(sizeof(void*) == 8, "the loop's wake-up tokens need 64-bit pointers");

// ----- The registry of loops, for callbacks that carry a token -----

// A callback holds `users` while it looks at the slot's queue, so that
// Unregister(), which empties the slot and then waits for users to reach 0,
// never returns while a callback is using the queue.
struct alignas(64) RegistrySlot {
  std::atomic<std::uint32_t> users{0};
  std::atomic<std::uint32_t> incarnation{0};
  std::atomic<WakeQueue*> queue{nullptr};
  bool in_use = false;  // guarded by registry_mutex
};

RegistrySlot registry[kMaxLoops];
std::mutex registry_mutex;
std::uint32_t registry_cursor = 0;  // next slot to try: slots are reused late

}  // namespace

// ----- Tokens -----

void* WakeToken::Encode() const noexcept {
  std::uint64_t value =
      (std::uint64_t{registry_slot} << (kIncarnationBits + kSlotIndexBits + kGenerationBits)) |
      (std::uint64_t{incarnation} << (kSlotIndexBits + kGenerationBits)) |
      (std::uint64_t{index} << kGenerationBits) | generation;
  return reinterpret_cast<void*>(static_cast<std::uintptr_t>(value));
}

WakeToken WakeToken::Decode(const void* argument) noexcept {
  auto value = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(argument));
  WakeToken token;
  token.generation = static_cast<std::uint32_t>(value & kGenerationMask);
  token.index = static_cast<std::uint32_t>((value >> kGenerationBits) & (kMaxJobSlots - 1));
  token.incarnation =
      static_cast<std::uint32_t>((value >> (kSlotIndexBits + kGenerationBits)) & kIncarnationMask);
  token.registry_slot =
      static_cast<std::uint32_t>(value >> (kIncarnationBits + kSlotIndexBits + kGenerationBits));
  return token;
}

void* WakeQueue::TokenFor(std::uint32_t index, std::uint32_t generation) const noexcept {
  return WakeToken{registry_slot_, incarnation_, index, generation}.Encode();
}

int WakeQueue::Callback(void* token_argument) {
  WakeToken token = WakeToken::Decode(token_argument);
  RegistrySlot& slot = registry[token.registry_slot];
  slot.users.fetch_add(1, std::memory_order_seq_cst);
  WakeQueue* queue = slot.queue.load(std::memory_order_seq_cst);
  if (queue != nullptr && slot.incarnation.load(std::memory_order_acquire) == token.incarnation) {
    queue->Wake(token.index, token.generation);
  }
  slot.users.fetch_sub(1, std::memory_order_release);
  return 1;
}

// ----- Construction and destruction -----

WakeQueue::WakeQueue() : chunks_(new std::atomic<Node*>[kChunkCount]()) {
  doorbell_fd_ = base::CreateEventFd();
  if (doorbell_fd_ < 0) {
    throw std::system_error(errno, std::generic_category(), "asyncjob::Loop: eventfd");
  }
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (std::uint32_t i = 0; i < kMaxLoops; ++i) {
    std::uint32_t candidate = (registry_cursor + i) % kMaxLoops;
    RegistrySlot& slot = registry[candidate];
    if (slot.in_use) continue;
    slot.in_use = true;
    registry_slot_ = candidate;
    incarnation_ = (slot.incarnation.load(std::memory_order_relaxed) + 1) & kIncarnationMask;
    slot.incarnation.store(incarnation_, std::memory_order_relaxed);
    slot.queue.store(this, std::memory_order_seq_cst);
    registry_cursor = (candidate + 1) % kMaxLoops;
    registered_ = true;
    return;
  }
  close(doorbell_fd_);
  throw Error(0, "asyncjob::Loop: too many loops exist at once (at most 1024)");
}

void WakeQueue::Unregister() noexcept {
  if (!registered_) return;
  RegistrySlot& slot = registry[registry_slot_];
  slot.queue.store(nullptr, std::memory_order_seq_cst);
  // Callbacks that saw this queue finish their few instructions.
  while (slot.users.load(std::memory_order_seq_cst) != 0) sched_yield();
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    slot.in_use = false;
    registered_ = false;
  }
  // Functions posted from now on are dropped with the queue; those pending
  // now are dropped here (RunPosted() stops at once if one of them is
  // running and unregistered us).
  std::vector<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    dropped.swap(posted_);
    has_posted_.store(false, std::memory_order_relaxed);
  }
}

WakeQueue::~WakeQueue() {
  Unregister();
  // A RequestStop() or Post() that the loop thread has seen may still be
  // ringing: wait for it (see RequestStop()).
  { std::lock_guard<std::mutex> lock(post_mutex_); }
  for (std::uint32_t c = 0; c < chunk_count_; ++c) {
    delete[] chunks_[c].load(std::memory_order_relaxed);
  }
  close(doorbell_fd_);
}

void WakeQueue::Reserve(std::uint32_t slot_count) {
  while (chunk_count_ * kChunkSize < slot_count && chunk_count_ < kChunkCount) {
    Node* chunk = new Node[kChunkSize];
    std::uint32_t base = chunk_count_ * kChunkSize;
    for (std::uint32_t i = 0; i < kChunkSize; ++i) chunk[i].index = base + i;
    chunks_[chunk_count_].store(chunk, std::memory_order_release);
    ++chunk_count_;
  }
}

// ----- Wake-ups -----

void WakeQueue::Wake(std::uint32_t index, std::uint32_t generation) noexcept {
  if (index >= kMaxJobSlots) return;
  Node* chunk = chunks_[index >> kChunkBits].load(std::memory_order_acquire);
  if (chunk == nullptr) return;
  Node& node = chunk[index & (kChunkSize - 1)];
  // Always a read-modify-write, so that what this thread did before the
  // wake-up is visible to the job when the loop resumes it.
  std::uint32_t pending = node.pending.load(std::memory_order_relaxed);
  std::uint32_t desired;
  do {
    desired = (pending == 0 || IsNewerGeneration(generation, pending)) ? generation : pending;
  } while (!node.pending.compare_exchange_weak(pending, desired, std::memory_order_acq_rel,
                                               std::memory_order_relaxed));
  if (pending != 0) {
    coalesced_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Node* head = head_.load(std::memory_order_relaxed);
  do {
    node.next = head;
  } while (!head_.compare_exchange_weak(head, &node, std::memory_order_seq_cst,
                                        std::memory_order_relaxed));
  // Pushed before looking at awake_ (see SetAsleep()). Only the push onto
  // an empty queue may need to ring: the others follow one that did, or
  // one that saw the loop awake.
  if (head == nullptr && !awake_.load(std::memory_order_seq_cst)) {
    wake_signals_.fetch_add(1, std::memory_order_relaxed);
    RingDoorbell();
  }
}

bool WakeQueue::PrepareToBlock() noexcept {
  awake_.store(false, std::memory_order_seq_cst);
  // Looked at after clearing awake_: a waker that saw the loop awake pushed
  // before this load.
  if (head_.load(std::memory_order_seq_cst) == nullptr) return true;
  awake_.store(true, std::memory_order_relaxed);
  return false;
}

void WakeQueue::SetAway() noexcept {
  awake_.store(false, std::memory_order_seq_cst);
  if (head_.load(std::memory_order_seq_cst) != nullptr) {
    wake_signals_.fetch_add(1, std::memory_order_relaxed);
    RingDoorbell();
  }
}

// ----- The doorbell -----

// A failure other than "already rung" / "nothing to drain" cannot happen on
// an eventfd we own; there is nobody to report it to.
void WakeQueue::RingDoorbell() noexcept { base::SignalEventFd(doorbell_fd_); }

void WakeQueue::DrainDoorbell() noexcept { base::DrainEventFd(doorbell_fd_); }

// ----- Stop requests and posted functions -----

// RequestStop() and Post() ring the doorbell while holding post_mutex_, and
// the destructor takes that mutex before it frees anything: the loop thread
// may act on the request (return from its run, be destroyed) as soon as it
// sees it, while the requesting thread has yet to ring. Without the mutex
// that ring would read a freed queue and write to a closed fd, whose number
// may belong to someone else by then.
void WakeQueue::RequestStop() noexcept {
  std::lock_guard<std::mutex> lock(post_mutex_);
  stop_.store(true, std::memory_order_release);
  RingDoorbell();
}

void WakeQueue::Post(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(post_mutex_);
  posted_.push_back(std::move(fn));
  has_posted_.store(true, std::memory_order_release);
  RingDoorbell();
}

void WakeQueue::RunPosted() {
  if (!has_posted_.load(std::memory_order_acquire)) return;
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    batch.swap(posted_);
    has_posted_.store(false, std::memory_order_relaxed);
  }
  for (std::size_t i = 0; i < batch.size() && registered_; ++i) {
    try {
      batch[i]();
    } catch (...) {
      // Keep the rest for the next call, in order.
      std::lock_guard<std::mutex> lock(post_mutex_);
      posted_.insert(posted_.begin(),
                     std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(i) + 1),
                     std::make_move_iterator(batch.end()));
      if (!posted_.empty()) has_posted_.store(true, std::memory_order_release);
      throw;
    }
  }
}

}  // namespace asyncjob::detail
