// cpp_api: the header-only C++ API (<asyncjob/asyncjob.hpp>) without a loop.
//
//   1. start() a job that waits on an eventfd, drive it with poll() and
//      resume(), take its typed result with get();
//   2. an exception thrown inside a job comes out of resume()/get();
//   3. cancel() a paused job: its OnCancel action runs, then its stack
//      unwinds (destructors run) and its fd registration is cleaned up;
//   4. PauseBlocker keeps a job from pausing while it is held.
// Exits 0 when everything behaved as described.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "asyncjob/asyncjob.hpp"

namespace {

const int key = 0;
int failures = 0;

void Check(bool condition, const char* what) {
  std::printf("  %-58s %s\n", what, condition ? "ok" : "FAILED");
  if (!condition) ++failures;
}

// Blocks until one of the wait context's fds is readable.
void WaitForFds(const asyncjob::WaitCtxRef& ctx) {
  std::vector<OSSL_ASYNC_FD> fds = ctx.fds();
  std::vector<pollfd> polls;
  for (OSSL_ASYNC_FD fd : fds) polls.push_back(pollfd{fd, POLLIN, 0});
  poll(polls.data(), polls.size(), 5000);
}

}  // namespace

int main() {
  std::printf("1. start, resume, get\n");
  {
    asyncjob::WaitCtx ctx;
    int event = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    auto job = asyncjob::start(ctx, [event] {
      auto registration = asyncjob::current_wait_ctx().register_fd(&key, event);
      std::uint64_t value = 0;
      while (read(event, &value, sizeof value) != sizeof value) asyncjob::pause();
      return "woken with " + std::to_string(value);
    });
    Check(job.paused(), "the job paused waiting for its fd");
    Check(ctx.changes().added.size() == 1, "its fd is reported as added");
    std::uint64_t three = 3;
    if (write(event, &three, sizeof three) != sizeof three) return 1;
    while (!job.finished()) {
      WaitForFds(ctx);
      job.resume();
    }
    Check(job.get() == "woken with 3", "get() returns the job's value");
    close(event);
  }

  std::printf("2. exceptions\n");
  {
    auto job = asyncjob::start([]() -> int {
      asyncjob::pause();
      throw std::runtime_error("no such key");
    });
    bool from_resume = false;
    try {
      job.resume();
    } catch (const std::runtime_error& error) {
      from_resume = std::string(error.what()) == "no such key";
    }
    Check(from_resume, "resume() rethrows the job's exception");
    bool from_get = false;
    try {
      job.get();
    } catch (const std::runtime_error&) {
      from_get = true;
    }
    Check(from_get, "so does get()");
  }

  std::printf("3. cancellation\n");
  {
    bool withdrawn = false;
    bool unwound = false;
    int fd_closed = 0;
    asyncjob::WaitCtx ctx;
    struct Unwound {
      bool* flag;
      ~Unwound() { *flag = true; }
    };
    auto job = asyncjob::start(ctx, [&] {
      Unwound guard{&unwound};
      asyncjob::OnCancel withdraw([&] { withdrawn = true; });
      int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      asyncjob::current_wait_ctx()
          .register_fd(
              &key, fd,
              [](ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD owned, void* counter) {
                close(owned);
                ++*static_cast<int*>(counter);
              },
              &fd_closed)
          .release();
      for (;;) asyncjob::pause();
    });
    job.cancel();
    Check(job.cancelled(), "the job is cancelled");
    Check(withdrawn, "its OnCancel action ran");
    Check(unwound, "its stack unwound");
    Check(fd_closed == 1, "its fd's cleanup routine ran");
    bool threw = false;
    try {
      job.get();
    } catch (const asyncjob::JobWasCancelled&) {
      threw = true;
    }
    Check(threw, "get() throws JobWasCancelled");
  }

  std::printf("4. blocking pauses\n");
  {
    int pauses_skipped = 0;
    auto job = asyncjob::start([&] {
      {
        asyncjob::PauseBlocker hold;  // e.g. while a lock is held
        asyncjob::pause();            // does nothing
        ++pauses_skipped;
      }
      asyncjob::pause();  // pauses
      return pauses_skipped;
    });
    Check(job.paused() && pauses_skipped == 1, "a blocked pause returns at once");
    job.resume();
    Check(job.finished() && job.get() == 1, "the job finishes after one real pause");
  }

  std::printf("%s\n", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
