// The deadline heap of the loop's timeouts (see deadline_heap.h).
#include "loop/deadline_heap.h"

#include <utility>

namespace asyncjob::detail {

void DeadlineHeap::Swap(std::size_t a, std::size_t b) noexcept {
  std::swap(entries_[a], entries_[b]);
  positions_[entries_[a].id] = static_cast<std::uint32_t>(a);
  positions_[entries_[b].id] = static_cast<std::uint32_t>(b);
}

void DeadlineHeap::SiftUp(std::size_t position) noexcept {
  while (position > 0) {
    std::size_t parent = (position - 1) / 2;
    if (entries_[parent].deadline <= entries_[position].deadline) return;
    Swap(parent, position);
    position = parent;
  }
}

void DeadlineHeap::SiftDown(std::size_t position) noexcept {
  for (;;) {
    std::size_t smallest = position;
    for (std::size_t child = 2 * position + 1; child <= 2 * position + 2; ++child) {
      if (child < entries_.size() && entries_[child].deadline < entries_[smallest].deadline) {
        smallest = child;
      }
    }
    if (smallest == position) return;
    Swap(position, smallest);
    position = smallest;
  }
}

void DeadlineHeap::Push(std::uint32_t id, TimePoint deadline) {
  if (id >= positions_.size()) positions_.resize(std::size_t{id} + 1, kAbsent);
  entries_.push_back(Entry{id, deadline});
  positions_[id] = static_cast<std::uint32_t>(entries_.size() - 1);
  SiftUp(entries_.size() - 1);
}

void DeadlineHeap::Update(std::uint32_t id, TimePoint deadline) noexcept {
  std::size_t position = positions_[id];
  entries_[position].deadline = deadline;
  SiftUp(position);
  SiftDown(position);
}

void DeadlineHeap::Remove(std::uint32_t id) noexcept {
  std::size_t position = positions_[id];
  std::size_t last = entries_.size() - 1;
  if (position != last) Swap(position, last);
  entries_.pop_back();
  positions_[id] = kAbsent;
  if (position < entries_.size()) {
    SiftUp(position);
    SiftDown(position);
  }
}

}  // namespace asyncjob::detail
