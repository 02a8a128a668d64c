// deadline_heap.h - an indexed binary min-heap of deadlines, for the loop's
// job timeouts.
//
// Owns a set of entries (id, deadline), at most one per id, ordered so that
// the earliest deadline is at the top, and a position index by id so that
// any entry can be updated or removed in O(log n), not only the top. Ids are
// small dense integers (the loop uses job slot indices): the index takes 4
// bytes per id up to the largest one pushed. Entries with equal deadlines
// come out in no particular order.
//
// Knows nothing of jobs, clocks being read or the loop; no system calls.
//
// Thread rules: none of its own; the loop uses it on its thread only.
//
//   DeadlineHeap heap;
//   heap.Push(7, now + 5s);
//   heap.Push(3, now + 1s);
//   heap.Remove(7);                       // the job finished first
//   while (!heap.empty() && heap.Top().deadline <= now) {
//     std::uint32_t expired = heap.Top().id;
//     heap.Remove(expired);
//     ...
//   }
#ifndef ASYNCJOB_SRC_LOOP_DEADLINE_HEAP_H_
#define ASYNCJOB_SRC_LOOP_DEADLINE_HEAP_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace asyncjob::detail {

class DeadlineHeap {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Entry {
    std::uint32_t id;
    TimePoint deadline;
  };

  bool empty() const noexcept { return entries_.empty(); }
  std::size_t size() const noexcept { return entries_.size(); }
  bool Contains(std::uint32_t id) const noexcept {
    return id < positions_.size() && positions_[id] != kAbsent;
  }
  // The entry with the earliest deadline. Not when empty.
  const Entry& Top() const noexcept { return entries_.front(); }

  // Adds id, which must not be in the heap. Throws std::bad_alloc (and then
  // leaves the heap as it was).
  void Push(std::uint32_t id, TimePoint deadline);
  // Moves id, which must be in the heap, to a new deadline.
  void Update(std::uint32_t id, TimePoint deadline) noexcept;
  // Takes out id, which must be in the heap.
  void Remove(std::uint32_t id) noexcept;

 private:
  static constexpr std::uint32_t kAbsent = UINT32_MAX;

  void Swap(std::size_t a, std::size_t b) noexcept;
  void SiftUp(std::size_t position) noexcept;
  void SiftDown(std::size_t position) noexcept;

  std::vector<Entry> entries_;            // the heap, in array form
  std::vector<std::uint32_t> positions_;  // by id: where in entries_, or kAbsent
};

}  // namespace asyncjob::detail

#endif  // ASYNCJOB_SRC_LOOP_DEADLINE_HEAP_H_
