// The offload engine across fork(): a forked child has only the thread that
// forked, so the engine must give the child workers of its own, or every
// task submitted there waits for ever (a server that loads the asyncjob
// provider and then forks its worker processes, as HAProxy's master-worker
// mode does, hung on its first handshake). Also: an engine destroyed at
// exit after the library's own statics.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/offload.hpp"
#include "base/sanitizers.h"

namespace {

using asyncjob::offload::Engine;

// One task through the engine inside a job woken by the engine's eventfd.
// True when it ran on another thread and the job finished.
bool OffloadOnce(Engine& engine) {
  asyncjob::WaitCtx ctx;
  const std::thread::id caller = std::this_thread::get_id();
  auto job = asyncjob::start(ctx, [&] {
    std::thread::id ran_on;
    engine.run([&] { ran_on = std::this_thread::get_id(); });
    return ran_on != caller;
  });
  if (!job.paused() || ctx.fds().size() != 1) return false;
  pollfd p{ctx.fds().at(0), POLLIN, 0};
  if (poll(&p, 1, 20000) != 1) return false;  // never woken: no worker
  job.resume();
  return job.finished() && job.get();
}

TEST(OffloadFork, TheChildOfAForkOffloadsToWorkersOfItsOwn) {
#if ASYNCJOB_TSAN
  GTEST_SKIP() << "ThreadSanitizer ends a child that starts threads after a multi-threaded fork";
#endif
  Engine engine({.workers = 2, .queue_capacity = 8});
  ASSERT_TRUE(OffloadOnce(engine)) << "the workers are up before the fork";

  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(60);  // a hang must not outlive the test
    bool ok = OffloadOnce(engine) && OffloadOnce(engine);
    ok = ok && engine.counters().submitted == 3 && engine.counters().inline_runs == 0;
    {
      // Destroying it in the child joins the child's workers.
      Engine second({.workers = 1});
      ok = ok && OffloadOnce(second);
    }
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed by signal "
                                 << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                 << " (SIGALRM: its tasks were never run)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child could not offload";

  // The parent's engine is untouched by the fork.
  EXPECT_TRUE(OffloadOnce(engine));
  EXPECT_EQ(engine.counters().submitted, 2u);
}

// The engine's constructor returns only once its workers run their loop: a
// thread still starting may hold the allocator's lock (AddressSanitizer's
// runtime has no fork handlers for it), and a child forked at that instant
// would never allocate again. Forking right after the constructor, as a
// server does after loading the provider, must leave the child able to
// offload.
TEST(OffloadFork, AForkRightAfterTheEngineIsMadeLeavesTheChildWorking) {
#if ASYNCJOB_TSAN
  GTEST_SKIP() << "ThreadSanitizer ends a child that starts threads after a multi-threaded fork";
#endif
  for (int round = 0; round < 20; ++round) {
    Engine engine({.workers = 4, .queue_capacity = 8});
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      alarm(30);  // a hang must not outlive the test
      _exit(OffloadOnce(engine) ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status))
        << "round " << round << ": the child was killed by signal "
        << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << " (SIGALRM: it hung)";
    ASSERT_EQ(WEXITSTATUS(status), 0) << "round " << round << ": the child could not offload";
  }
}

Engine* engine_at_exit = nullptr;

TEST(OffloadForkDeathTest, AnEngineDestroyedAtExitAfterTheStatics) {
  // A fresh process: its first engine is made below, after the exit
  // handler that destroys it was registered, so the handler runs after
  // every static the engine's construction created (as a provider torn
  // down by OPENSSL_cleanup at exit is).
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::atexit([] { delete engine_at_exit; });
        engine_at_exit = new Engine({.workers = 1});
        std::exit(OffloadOnce(*engine_at_exit) ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
