// The loop's deadline heap: ordering, update and removal of any entry,
// equal deadlines, and long random sequences of operations checked against
// a plain map.
#include "loop/deadline_heap.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace {

using asyncjob::detail::DeadlineHeap;
using TimePoint = DeadlineHeap::TimePoint;

TimePoint At(long long ticks) { return TimePoint(std::chrono::milliseconds(ticks)); }

// Empties the heap from the top, returning (id, deadline) in that order.
std::vector<std::pair<std::uint32_t, TimePoint>> Drain(DeadlineHeap& heap) {
  std::vector<std::pair<std::uint32_t, TimePoint>> out;
  while (!heap.empty()) {
    DeadlineHeap::Entry top = heap.Top();
    out.emplace_back(top.id, top.deadline);
    heap.Remove(top.id);
    EXPECT_FALSE(heap.Contains(top.id));
  }
  return out;
}

TEST(DeadlineHeapTest, StartsEmpty) {
  DeadlineHeap heap;
  EXPECT_TRUE(heap.empty());
  EXPECT_EQ(heap.size(), 0u);
  EXPECT_FALSE(heap.Contains(0));
  EXPECT_FALSE(heap.Contains(123456));
}

TEST(DeadlineHeapTest, TopIsTheEarliestWhateverThePushOrder) {
  DeadlineHeap heap;
  const long long deadlines[] = {50, 10, 40, 30, 20, 60, 0, 70};
  for (std::uint32_t id = 0; id < 8; ++id) heap.Push(id, At(deadlines[id]));
  EXPECT_EQ(heap.size(), 8u);
  EXPECT_EQ(heap.Top().id, 6u);
  auto drained = Drain(heap);
  ASSERT_EQ(drained.size(), 8u);
  const std::uint32_t expected[] = {6, 1, 4, 3, 2, 0, 5, 7};
  for (std::size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(drained[i].first, expected[i]) << i;
    EXPECT_EQ(drained[i].second, At(deadlines[expected[i]])) << i;
  }
}

TEST(DeadlineHeapTest, SparseIdsAreIndexed) {
  DeadlineHeap heap;
  heap.Push(1000000, At(3));
  heap.Push(7, At(1));
  heap.Push(4000000, At(2));
  EXPECT_TRUE(heap.Contains(1000000));
  EXPECT_TRUE(heap.Contains(4000000));
  EXPECT_FALSE(heap.Contains(8));
  EXPECT_FALSE(heap.Contains(999999));
  EXPECT_EQ(heap.Top().id, 7u);
  heap.Remove(7);
  EXPECT_EQ(heap.Top().id, 4000000u);
}

TEST(DeadlineHeapTest, RemovesAnyEntry) {
  for (std::uint32_t victim = 0; victim < 9; ++victim) {
    DeadlineHeap heap;
    for (std::uint32_t id = 0; id < 9; ++id) heap.Push(id, At((id * 5) % 9));
    heap.Remove(victim);
    EXPECT_FALSE(heap.Contains(victim));
    EXPECT_EQ(heap.size(), 8u);
    auto drained = Drain(heap);
    ASSERT_EQ(drained.size(), 8u);
    for (std::size_t i = 0; i < drained.size(); ++i) {
      EXPECT_NE(drained[i].first, victim);
      if (i > 0) {
        EXPECT_LE(drained[i - 1].second, drained[i].second);
      }
    }
  }
}

TEST(DeadlineHeapTest, UpdatesAnyEntryEarlierOrLater) {
  DeadlineHeap heap;
  for (std::uint32_t id = 0; id < 10; ++id) heap.Push(id, At(10 * id));
  heap.Update(9, At(-1));  // the last becomes the first
  EXPECT_EQ(heap.Top().id, 9u);
  heap.Update(9, At(1000));  // and the last again
  heap.Update(0, At(55));    // the first moves to the middle
  heap.Update(5, At(50));    // unchanged
  auto drained = Drain(heap);
  std::vector<std::uint32_t> order;
  for (const auto& entry : drained) order.push_back(entry.first);
  EXPECT_EQ(order, (std::vector<std::uint32_t>{1, 2, 3, 4, 5, 0, 6, 7, 8, 9}));
}

TEST(DeadlineHeapTest, EqualDeadlinesAllComeOutOnce) {
  DeadlineHeap heap;
  for (std::uint32_t id = 0; id < 100; ++id) heap.Push(id, At(id % 3 == 0 ? 5 : 7));
  heap.Remove(30);
  heap.Remove(31);
  auto drained = Drain(heap);
  ASSERT_EQ(drained.size(), 98u);
  std::set<std::uint32_t> seen;
  for (std::size_t i = 0; i < drained.size(); ++i) {
    EXPECT_TRUE(seen.insert(drained[i].first).second) << "twice: " << drained[i].first;
    EXPECT_EQ(drained[i].second, At(drained[i].first % 3 == 0 ? 5 : 7));
    if (i > 0) {
      EXPECT_LE(drained[i - 1].second, drained[i].second);
    }
  }
  EXPECT_EQ(seen.count(30), 0u);
  EXPECT_EQ(seen.count(31), 0u);
}

TEST(DeadlineHeapTest, AnIdCanComeBackAfterItsRemoval) {
  DeadlineHeap heap;
  heap.Push(3, At(10));
  heap.Push(4, At(20));
  heap.Remove(3);
  heap.Push(3, At(30));
  EXPECT_EQ(heap.Top().id, 4u);
  heap.Remove(4);
  EXPECT_EQ(heap.Top().id, 3u);
  EXPECT_EQ(heap.Top().deadline, At(30));
}

// Random pushes, updates, removals (of the top and of any entry) against a
// reference: a map from id to deadline. After every step the top must have
// the reference's earliest deadline, and the sizes and memberships agree.
TEST(DeadlineHeapTest, RandomOperationsMatchAReference) {
  std::mt19937 random(20240610);
  for (int round = 0; round < 20; ++round) {
    DeadlineHeap heap;
    std::map<std::uint32_t, long long> reference;
    const std::uint32_t id_range = round % 2 == 0 ? 64 : 2000;
    const long long deadline_range = round % 3 == 0 ? 4 : 1000000;  // many ties, or few
    for (int step = 0; step < 5000; ++step) {
      auto id = static_cast<std::uint32_t>(random() % id_range);
      long long deadline = static_cast<long long>(random() % deadline_range);
      switch (random() % 4) {
        case 0:
        case 1:
          if (reference.count(id) == 0) {
            heap.Push(id, At(deadline));
            reference[id] = deadline;
          } else {
            heap.Update(id, At(deadline));
            reference[id] = deadline;
          }
          break;
        case 2:
          if (reference.count(id) != 0) {
            heap.Remove(id);
            reference.erase(id);
          }
          break;
        case 3:
          if (!reference.empty()) {
            std::uint32_t top = heap.Top().id;
            ASSERT_EQ(reference.count(top), 1u);
            heap.Remove(top);
            reference.erase(top);
          }
          break;
      }
      ASSERT_EQ(heap.size(), reference.size());
      ASSERT_EQ(heap.Contains(id), reference.count(id) != 0);
      if (!reference.empty()) {
        long long earliest = reference.begin()->second;
        for (const auto& [key, value] : reference) earliest = std::min(earliest, value);
        ASSERT_EQ(heap.Top().deadline, At(earliest)) << "round " << round << " step " << step;
        ASSERT_EQ(reference.at(heap.Top().id), earliest);
      }
    }
    auto drained = Drain(heap);
    ASSERT_EQ(drained.size(), reference.size());
    for (std::size_t i = 0; i < drained.size(); ++i) {
      EXPECT_EQ(drained[i].second, At(reference.at(drained[i].first)));
      if (i > 0) {
        EXPECT_LE(drained[i - 1].second, drained[i].second);
      }
    }
  }
}

}  // namespace
