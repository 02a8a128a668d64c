// The loop's wake queue, alone: tokens, wake-ups in arrival order, one
// doorbell ring per batch, coalescing by generation, wake-ups arriving while
// the queue is drained, tokens of destroyed queues and of earlier
// incarnations of a registry slot, wake-ups from many threads (none lost,
// none delivered twice), posted functions and stop requests.
#include "loop/wake_queue.h"

#include <errno.h>
#include <poll.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace {

using asyncjob::detail::IsNewerGeneration;
using asyncjob::detail::kGenerationMask;
using asyncjob::detail::kMaxJobSlots;
using asyncjob::detail::kMaxLoops;
using asyncjob::detail::NextGeneration;
using asyncjob::detail::WakeQueue;
using asyncjob::detail::WakeToken;

struct Wakeup {
  std::uint32_t index;
  std::uint32_t generation;
  bool operator==(const Wakeup&) const = default;
};

std::vector<Wakeup> Drain(WakeQueue& queue) {
  std::vector<Wakeup> out;
  queue.DrainWakeups([&](std::uint32_t index, std::uint32_t generation) {
    out.push_back(Wakeup{index, generation});
  });
  return out;
}

bool DoorbellRung(const WakeQueue& queue) {
  pollfd entry{queue.doorbell_fd(), POLLIN, 0};
  return poll(&entry, 1, 0) == 1;
}

std::uint32_t RegistrySlotOf(const WakeQueue& queue) {
  return WakeToken::Decode(queue.TokenFor(0, 1)).registry_slot;
}

TEST(WakeQueueTest, TokensRoundTrip) {
  const WakeToken tokens[] = {
      {0, 0, 0, 1},
      {kMaxLoops - 1, (1u << asyncjob::detail::kIncarnationBits) - 1, kMaxJobSlots - 1,
       kGenerationMask},
      {517, 3, 1234567, 42},
  };
  for (const WakeToken& token : tokens) {
    WakeToken decoded = WakeToken::Decode(token.Encode());
    EXPECT_EQ(decoded.registry_slot, token.registry_slot);
    EXPECT_EQ(decoded.incarnation, token.incarnation);
    EXPECT_EQ(decoded.index, token.index);
    EXPECT_EQ(decoded.generation, token.generation);
  }
}

TEST(WakeQueueTest, GenerationsSkipZeroAndCompareAcrossTheWrap) {
  EXPECT_EQ(NextGeneration(1), 2u);
  EXPECT_EQ(NextGeneration(kGenerationMask), 1u);
  EXPECT_TRUE(IsNewerGeneration(2, 1));
  EXPECT_FALSE(IsNewerGeneration(1, 2));
  EXPECT_FALSE(IsNewerGeneration(7, 7));
  EXPECT_TRUE(IsNewerGeneration(1, kGenerationMask));  // after the wrap
  EXPECT_FALSE(IsNewerGeneration(kGenerationMask, 1));
}

TEST(WakeQueueTest, DeliversWakeupsInArrivalOrderWithOneRingPerBatch) {
  WakeQueue queue;
  queue.Reserve(3000);
  EXPECT_FALSE(DoorbellRung(queue));
  EXPECT_TRUE(Drain(queue).empty());

  EXPECT_EQ(WakeQueue::Callback(queue.TokenFor(5, 1)), 1);
  EXPECT_TRUE(DoorbellRung(queue));
  WakeQueue::Callback(queue.TokenFor(2999, 7));
  WakeQueue::Callback(queue.TokenFor(0, 3));
  EXPECT_EQ(queue.wake_signals(), 1u);  // the queue was not empty any more

  queue.DrainDoorbell();
  EXPECT_FALSE(DoorbellRung(queue));
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{5, 1}, {2999, 7}, {0, 3}}));
  EXPECT_TRUE(Drain(queue).empty());
  EXPECT_EQ(queue.coalesced(), 0u);

  // Emptied: the next wake-up rings again, and a slot can be woken again.
  WakeQueue::Callback(queue.TokenFor(5, 2));
  EXPECT_EQ(queue.wake_signals(), 2u);
  EXPECT_TRUE(DoorbellRung(queue));
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{5, 2}}));
}

TEST(WakeQueueTest, WakeupsOfOneSlotCoalesceToTheNewestGeneration) {
  WakeQueue queue;
  queue.Reserve(1);
  WakeQueue::Callback(queue.TokenFor(0, 4));
  WakeQueue::Callback(queue.TokenFor(0, 4));
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 4}}));
  EXPECT_EQ(queue.coalesced(), 1u);

  // A stale (older) token does not replace the newer generation ...
  WakeQueue::Callback(queue.TokenFor(0, 6));
  WakeQueue::Callback(queue.TokenFor(0, 5));
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 6}}));
  // ... and a newer one replaces an older one, also across the wrap.
  WakeQueue::Callback(queue.TokenFor(0, kGenerationMask));
  WakeQueue::Callback(queue.TokenFor(0, NextGeneration(kGenerationMask)));
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 1}}));
  EXPECT_EQ(queue.coalesced(), 3u);
  EXPECT_EQ(queue.wake_signals(), 3u);
}

TEST(WakeQueueTest, AWakeupArrivingDuringADrainWaitsForTheNextOne) {
  WakeQueue queue;
  queue.Reserve(2);
  WakeQueue::Callback(queue.TokenFor(0, 1));
  WakeQueue::Callback(queue.TokenFor(1, 1));
  queue.DrainDoorbell();
  std::vector<Wakeup> first;
  queue.DrainWakeups([&](std::uint32_t index, std::uint32_t generation) {
    first.push_back(Wakeup{index, generation});
    // Slot 0 is woken again once taken off the queue (it may be pushed
    // again); slot 1, still to come in this drain, coalesces.
    if (index == 0) {
      WakeQueue::Callback(queue.TokenFor(0, 2));
      WakeQueue::Callback(queue.TokenFor(1, 2));
    }
  });
  EXPECT_EQ(first, (std::vector<Wakeup>{{0, 1}, {1, 2}}));
  EXPECT_TRUE(DoorbellRung(queue));  // rung for the new batch
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 2}}));
  EXPECT_EQ(queue.coalesced(), 1u);
}

TEST(WakeQueueTest, AWakeupBetweenDoorbellAndQueueIsDeliveredNow) {
  WakeQueue queue;
  queue.Reserve(1);
  queue.DrainDoorbell();  // nothing there: does not block
  WakeQueue::Callback(queue.TokenFor(0, 1));
  queue.DrainDoorbell();
  WakeQueue::Callback(queue.TokenFor(0, 2));  // after the doorbell was read
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 2}}));
}

TEST(WakeQueueTest, SlotsWithoutANodeAreIgnored) {
  WakeQueue queue;
  queue.Reserve(1);  // one chunk of nodes
  WakeQueue::Callback(queue.TokenFor(kMaxJobSlots - 1, 1));
  queue.Wake(kMaxJobSlots + 5, 1);
  EXPECT_TRUE(Drain(queue).empty());
  EXPECT_FALSE(DoorbellRung(queue));
}

TEST(WakeQueueTest, TokensOfADestroyedQueueDoNothing) {
  auto queue = std::make_unique<WakeQueue>();
  queue->Reserve(1);
  void* token = queue->TokenFor(0, 1);
  queue.reset();
  EXPECT_EQ(WakeQueue::Callback(token), 1);

  WakeQueue unregistered;
  unregistered.Reserve(1);
  token = unregistered.TokenFor(0, 1);
  unregistered.Unregister();
  unregistered.Unregister();  // idempotent
  WakeQueue::Callback(token);
  EXPECT_TRUE(Drain(unregistered).empty());
}

TEST(WakeQueueTest, TokensOfAnEarlierIncarnationOfTheSlotDoNothing) {
  void* old_token = nullptr;
  std::uint32_t old_slot = 0;
  {
    WakeQueue first;
    first.Reserve(1);
    old_token = first.TokenFor(0, 1);
    old_slot = RegistrySlotOf(first);
  }
  // Registry slots are reused late: go round until the same one comes back.
  for (std::uint32_t attempt = 0; attempt <= kMaxLoops; ++attempt) {
    WakeQueue queue;
    queue.Reserve(1);
    if (RegistrySlotOf(queue) != old_slot) continue;
    WakeQueue::Callback(old_token);
    EXPECT_TRUE(Drain(queue).empty());
    EXPECT_FALSE(DoorbellRung(queue));
    WakeQueue::Callback(queue.TokenFor(0, 1));
    EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 1}}));
    return;
  }
  FAIL() << "registry slot " << old_slot << " never came back";
}

// Threads wake overlapping slots while another thread drains whenever the
// doorbell rings. Every wake-up is either delivered once or coalesced into
// one queued already, none is delivered twice in a drain, and none is left
// in the queue with the doorbell quiet (the drainer would wait forever).
TEST(WakeQueueTest, WakeupsFromManyThreadsAreNeitherLostNorDuplicated) {
  constexpr std::uint32_t kSlots = 2500;  // three chunks of nodes
  constexpr int kThreads = 6;
  constexpr int kWakeupsPerThread = 20000;
  WakeQueue queue;
  queue.Reserve(kSlots);
  std::vector<std::vector<void*>> tokens(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (std::uint32_t index = 0; index < kSlots; ++index) {
      tokens[t].push_back(queue.TokenFor(index, static_cast<std::uint32_t>(t) + 1));
    }
  }

  std::atomic<std::uint64_t> delivered{0};
  std::atomic<bool> duplicate{false};
  std::atomic<bool> bad_generation{false};
  std::thread drainer([&] {
    pollfd entry{queue.doorbell_fd(), POLLIN, 0};
    std::vector<char> in_batch(kSlots, 0);
    for (;;) {
      if (poll(&entry, 1, -1) < 0 && errno != EINTR) return;
      queue.DrainDoorbell();
      std::vector<std::uint32_t> batch;
      queue.DrainWakeups([&](std::uint32_t index, std::uint32_t generation) {
        if (in_batch[index] != 0) duplicate = true;
        in_batch[index] = 1;
        batch.push_back(index);
        if (generation < 1 || generation > kThreads) bad_generation = true;
        delivered.fetch_add(1, std::memory_order_relaxed);
      });
      for (std::uint32_t index : batch) in_batch[index] = 0;
      if (queue.TakeStopRequest()) return;
    }
  });

  std::vector<std::thread> wakers;
  for (int t = 0; t < kThreads; ++t) {
    wakers.emplace_back([&, t] {
      for (int i = 0; i < kWakeupsPerThread; ++i) {
        std::uint32_t index = static_cast<std::uint32_t>(i * 7 + t * 13) % kSlots;
        WakeQueue::Callback(tokens[t][index]);
      }
    });
  }
  for (std::thread& waker : wakers) waker.join();

  constexpr std::uint64_t kTotal = std::uint64_t{kThreads} * kWakeupsPerThread;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (delivered.load() + queue.coalesced() != kTotal &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(delivered.load() + queue.coalesced(), kTotal);
  queue.RequestStop();
  drainer.join();
  EXPECT_FALSE(duplicate.load());
  EXPECT_FALSE(bad_generation.load());
  EXPECT_LE(queue.wake_signals(), delivered.load());
  EXPECT_TRUE(Drain(queue).empty());
}

TEST(WakeQueueTest, StopRequestsRingAndAreTakenOnce) {
  WakeQueue queue;
  EXPECT_FALSE(queue.stop_requested());
  EXPECT_FALSE(queue.TakeStopRequest());
  std::thread([&] { queue.RequestStop(); }).join();
  EXPECT_TRUE(DoorbellRung(queue));
  EXPECT_TRUE(queue.stop_requested());
  EXPECT_TRUE(queue.TakeStopRequest());
  EXPECT_FALSE(queue.TakeStopRequest());
  EXPECT_EQ(queue.wake_signals(), 0u);  // counts wake-ups only
}

TEST(WakeQueueTest, PostedFunctionsRunInOrderAndSurviveAThrow) {
  WakeQueue queue;
  std::vector<int> ran;
  EXPECT_FALSE(queue.has_posted());
  std::thread([&] {
    queue.Post([&] { ran.push_back(1); });
    queue.Post([] { throw std::runtime_error("posted"); });
    queue.Post([&] { ran.push_back(3); });
  }).join();
  EXPECT_TRUE(DoorbellRung(queue));
  EXPECT_TRUE(queue.has_posted());
  EXPECT_THROW(queue.RunPosted(), std::runtime_error);
  EXPECT_EQ(ran, (std::vector<int>{1}));
  EXPECT_TRUE(queue.has_posted());  // the one after the throw is kept
  queue.Post([&] { ran.push_back(4); });
  queue.RunPosted();
  EXPECT_EQ(ran, (std::vector<int>{1, 3, 4}));
  EXPECT_FALSE(queue.has_posted());
}

}  // namespace

TEST(WakeQueueTest, AnAwakeLoopNeedsNoDoorbell) {
  WakeQueue queue;
  queue.Reserve(2);
  queue.SetAwake();
  WakeQueue::Callback(queue.TokenFor(0, 1));
  EXPECT_FALSE(DoorbellRung(queue)) << "the loop drains before it blocks";
  EXPECT_EQ(queue.wake_signals(), 0u);
  // Something is queued: the loop must not block, and stays awake.
  EXPECT_FALSE(queue.PrepareToBlock());
  WakeQueue::Callback(queue.TokenFor(1, 1));
  EXPECT_FALSE(DoorbellRung(queue));
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 1}, {1, 1}}));
  // Nothing queued: the loop may block, and from now on a wake-up rings.
  EXPECT_TRUE(queue.PrepareToBlock());
  WakeQueue::Callback(queue.TokenFor(0, 2));
  EXPECT_TRUE(DoorbellRung(queue));
  EXPECT_EQ(queue.wake_signals(), 1u);
  queue.SetAwake();
  queue.DrainDoorbell();
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 2}}));
}

TEST(WakeQueueTest, ALoopLeavingWithAWakeupQueuedRingsForIt) {
  WakeQueue queue;
  queue.Reserve(1);
  queue.SetAwake();
  queue.SetAway();
  EXPECT_FALSE(DoorbellRung(queue)) << "nothing queued";
  queue.SetAwake();
  WakeQueue::Callback(queue.TokenFor(0, 1));
  EXPECT_FALSE(DoorbellRung(queue));
  queue.SetAway();
  EXPECT_TRUE(DoorbellRung(queue));
  queue.DrainDoorbell();
  // Away: wake-ups ring again.
  EXPECT_EQ(Drain(queue), (std::vector<Wakeup>{{0, 1}}));
  WakeQueue::Callback(queue.TokenFor(0, 2));
  EXPECT_TRUE(DoorbellRung(queue));
}

// A loop thread that is awake between its blocking waits, as the Loop's
// is, against wakers on other threads: every wake-up arrives, whichever
// side wins each race between "about to block" and "pushed".
TEST(WakeQueueTest, ALoopThatBlocksOnlyAfterLookingLosesNoWakeup) {
  constexpr std::uint32_t kSlots = 64;
  constexpr int kThreads = 4;
  constexpr int kWakeupsPerThread = 20000;
  WakeQueue queue;
  queue.Reserve(kSlots);
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> blocked{0};
  std::atomic<std::uint64_t> drains{0};
  std::thread loop([&] {
    pollfd entry{queue.doorbell_fd(), POLLIN, 0};
    queue.SetAwake();
    for (;;) {
      queue.DrainWakeups(
          [&](std::uint32_t, std::uint32_t) { delivered.fetch_add(1, std::memory_order_relaxed); });
      drains.fetch_add(1, std::memory_order_relaxed);
      if (queue.TakeStopRequest()) break;
      if (!queue.PrepareToBlock()) continue;
      blocked.fetch_add(1, std::memory_order_relaxed);
      // Without a ring for a wake-up pushed meanwhile, this never returns
      // (the test times out).
      if (poll(&entry, 1, -1) < 0 && errno != EINTR) break;
      queue.SetAwake();
      queue.DrainDoorbell();
    }
    queue.SetAway();
  });
  std::vector<std::thread> wakers;
  for (int t = 0; t < kThreads; ++t) {
    wakers.emplace_back([&, t] {
      for (int i = 0; i < kWakeupsPerThread; ++i) {
        auto index = static_cast<std::uint32_t>(i + t * 16) % kSlots;
        WakeQueue::Callback(queue.TokenFor(index, static_cast<std::uint32_t>(i % 1000) + 1));
        if (i % 64 == 0) std::this_thread::yield();  // let the loop block now and then
      }
    });
  }
  for (std::thread& waker : wakers) waker.join();
  constexpr std::uint64_t kTotal = std::uint64_t{kThreads} * kWakeupsPerThread;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (delivered.load() + queue.coalesced() != kTotal &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(delivered.load() + queue.coalesced(), kTotal);
  queue.RequestStop();
  loop.join();
  // Only the first push after a drain may ring (a waker may still see the
  // loop asleep just after it woke up: a harmless extra ring, which makes
  // the next wait return at once): one ring per drain at most, plus one
  // before the first drain and one as the loop left.
  EXPECT_LE(queue.wake_signals(), drains.load() + 2);
  EXPECT_GT(blocked.load(), 0u);
}
