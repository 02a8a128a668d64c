// The asyncjob demo, in two parts.
//
// Part 1: several jobs, each waiting on real timers, driven by one epoll loop
// written against the OpenSSL-style API.
//
// Each job plays a "request" that needs three slow steps. For each step it
// arms a timerfd (standing in for an accelerator or a network reply),
// registers it with its ASYNC_WAIT_CTX, and pauses. The loop learns of new
// and removed fds through ASYNC_WAIT_CTX_get_changed_fds(), waits with
// epoll, and resumes whichever job's fd became readable.
//
// Part 2: the same idea at scale with asyncjob::Loop: 20,000 requests in
// flight at once on one thread. Most steps go to a simulated accelerator
// (worker threads) that completes them after a random latency and wakes the
// job through its wait context's callback; some requests also wait on a
// timerfd. A progress line follows the run; a summary ends it.
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <queue>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"

namespace {

constexpr int kJobs = 5;
constexpr int kSteps = 3;

struct Request {
  int id;
  int delay_ms[kSteps];
};

std::chrono::steady_clock::time_point start_time;

double Elapsed() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_time)
      .count();
}

// The key under which this "engine" registers its fd in a wait context.
const int timer_key = 0;

void CloseTimer(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }

// Waits `ms` milliseconds without blocking the thread: arm a timer, hand its
// fd to whoever runs the job, pause until they resume us.
bool SlowStep(int ms) {
  ASYNC_JOB* job = ASYNC_get_current_job();
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(job);
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return false;
  itimerspec when{};
  when.it_value.tv_sec = ms / 1000;
  when.it_value.tv_nsec = (ms % 1000) * 1000000L;
  timerfd_settime(fd, 0, &when, nullptr);
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &timer_key, fd, nullptr, &CloseTimer);
  ASYNC_pause_job();
  uint64_t expirations = 0;
  ssize_t got = read(fd, &expirations, sizeof expirations);
  ASYNC_WAIT_CTX_clear_fd(ctx, &timer_key);
  close(fd);
  return got == sizeof expirations;
}

int RunRequest(void* argument) {
  const Request* request = static_cast<const Request*>(argument);
  std::printf("%7.1f ms  job %d: started on its own stack\n", Elapsed(), request->id);
  for (int step = 0; step < kSteps; ++step) {
    std::printf("%7.1f ms  job %d: step %d waits %d ms, pausing\n", Elapsed(), request->id,
                step + 1, request->delay_ms[step]);
    if (!SlowStep(request->delay_ms[step])) return -1;
    std::printf("%7.1f ms  job %d: step %d done, resumed\n", Elapsed(), request->id, step + 1);
  }
  return request->id * 100;
}

struct Slot {
  ASYNC_JOB* job = nullptr;
  ASYNC_WAIT_CTX* ctx = nullptr;
  int result = 0;
  bool done = false;
};

int RunOpenSslApiPart() {
  start_time = std::chrono::steady_clock::now();
  std::printf("asyncjob demo: %d jobs x %d timed steps, one epoll loop (context switch: %s)\n\n",
              kJobs, kSteps, asyncjob_context_backend());
  if (!ASYNC_init_thread(kJobs, kJobs)) {
    std::printf("ASYNC_init_thread failed\n");
    return 1;
  }
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Slot> slots(kJobs);
  int remaining = kJobs;

  // Applies a job's fd changes to the epoll set, then records the outcome.
  auto after_run = [&](int index, int status) {
    Slot& slot = slots[index];
    if (status == ASYNC_ERR || status == ASYNC_NO_JOBS) {
      std::printf("job %d could not run: %s\n", index, status == ASYNC_ERR ? "error" : "no jobs");
      slot.done = true;
      --remaining;
      return;
    }
    size_t added = 0, deleted = 0;
    ASYNC_WAIT_CTX_get_changed_fds(slot.ctx, nullptr, &added, nullptr, &deleted);
    std::vector<OSSL_ASYNC_FD> add(added), del(deleted);
    ASYNC_WAIT_CTX_get_changed_fds(slot.ctx, add.data(), &added, del.data(), &deleted);
    for (OSSL_ASYNC_FD fd : del) epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
    for (OSSL_ASYNC_FD fd : add) {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u32 = static_cast<uint32_t>(index);
      epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
    }
    if (status == ASYNC_FINISH) {
      std::printf("%7.1f ms  job %d: finished, returned %d\n", Elapsed(), index, slot.result);
      slot.done = true;
      --remaining;
    }
  };

  for (int i = 0; i < kJobs; ++i) {
    Request request{i, {30 + 17 * ((i * 7) % 5), 20 + 11 * ((i * 3) % 4), 10 + 9 * i}};
    slots[i].ctx = ASYNC_WAIT_CTX_new();
    int status = ASYNC_start_job(&slots[i].job, slots[i].ctx, &slots[i].result, &RunRequest,
                                 &request, sizeof request);
    after_run(i, status);
  }

  int wakeups = 0;
  while (remaining > 0) {
    epoll_event events[kJobs];
    int ready = epoll_wait(epoll, events, kJobs, 5000);
    if (ready <= 0) {
      std::printf("epoll_wait timed out\n");
      break;
    }
    for (int e = 0; e < ready; ++e) {
      int index = static_cast<int>(events[e].data.u32);
      Slot& slot = slots[index];
      if (slot.done) continue;
      ++wakeups;
      std::printf("%7.1f ms  loop: fd of job %d is readable, resuming it\n", Elapsed(), index);
      // The old timer is closed by the job; drop it from epoll first.
      int status = ASYNC_start_job(&slot.job, slot.ctx, &slot.result, nullptr, nullptr, 0);
      after_run(index, status);
    }
  }

  asyncjob_pool_stats stats;
  asyncjob_get_pool_stats(&stats);
  std::printf(
      "\nsummary: %d jobs finished after %d wake-ups in %.1f ms; pool holds %zu idle jobs "
      "(%zu with guard pages)\n",
      kJobs - remaining, wakeups, Elapsed(), stats.idle, stats.guarded);
  for (Slot& slot : slots) ASYNC_WAIT_CTX_free(slot.ctx);
  close(epoll);
  ASYNC_cleanup_thread();
  return remaining == 0 ? 0 : 1;
}

// ----- Part 2: asyncjob::Loop with 20,000 requests in flight -----
namespace at_scale {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ThreadSanitizer keeps a large shadow per fibre: run fewer under it.
#if defined(__SANITIZE_THREAD__)
constexpr int kRequests = 1'000;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr int kRequests = 1'000;
#else
constexpr int kRequests = 20'000;
#endif
#else
constexpr int kRequests = 20'000;
#endif
constexpr int kSteps = 3;
constexpr int kTimerEvery = 10;  // every tenth request also waits on a timerfd

struct Request {
  std::atomic<std::uint32_t> completed{0};  // steps the accelerator finished
  std::uint32_t answer = 0;                 // written by the accelerator
};

// A simulated accelerator: worker threads complete each submitted operation
// once its latency has passed, then call the job's wake-up callback (the
// way an engine does in callback mode).
class Accelerator {
 public:
  explicit Accelerator(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~Accelerator() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }
  Accelerator(const Accelerator&) = delete;
  Accelerator& operator=(const Accelerator&) = delete;

  void Submit(Clock::time_point due, Request* request, std::uint32_t input, asyncjob::Waker wake) {
    bool earliest;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      earliest = queue_.empty() || due < queue_.top().due;
      queue_.push(Operation{due, request, input, wake});
    }
    if (earliest) changed_.notify_one();
  }

 private:
  struct Operation {
    Clock::time_point due;
    Request* request;
    std::uint32_t input;
    asyncjob::Waker wake;
    bool operator>(const Operation& other) const { return due > other.due; }
  };

  void Work() {
    std::vector<Operation> done;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
          if (stopping_) return;
          if (!queue_.empty() && queue_.top().due <= Clock::now()) break;
          if (queue_.empty()) {
            changed_.wait(lock);
          } else {
            const Clock::time_point due = queue_.top().due;  // the queue may grow meanwhile
            changed_.wait_until(lock, due);
          }
        }
        Clock::time_point now = Clock::now();
        while (!queue_.empty() && queue_.top().due <= now && done.size() < 256) {
          done.push_back(queue_.top());
          queue_.pop();
        }
      }
      for (Operation& operation : done) {
        operation.request->answer = operation.input * 2654435761u;
        operation.request->completed.fetch_add(1, std::memory_order_release);
        operation.wake();  // any thread: queued for the loop, one eventfd write per batch
      }
      done.clear();
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::priority_queue<Operation, std::vector<Operation>, std::greater<Operation>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

const int timer_key = 0;

// An fd closed when the job's stack unwinds, whether it finishes or is
// cancelled (by its timeout, say).
struct OwnedFd {
  int fd;
  ~OwnedFd() {
    if (fd >= 0) close(fd);
  }
};

// Inside a job: waits `ms` on a timerfd registered in the job's wait context.
void TimerWait(int ms) {
  OwnedFd timer{timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)};
  if (timer.fd < 0) throw std::runtime_error("timerfd_create failed");
  itimerspec when{};
  when.it_value.tv_sec = ms / 1000;
  when.it_value.tv_nsec = (ms % 1000) * 1'000'000L;
  timerfd_settime(timer.fd, 0, &when, nullptr);
  // Declared after the fd: cleared from the wait context before it closes.
  auto registration = asyncjob::current_wait_ctx().register_fd(&timer_key, timer.fd);
  std::uint64_t expirations = 0;
  while (read(timer.fd, &expirations, sizeof expirations) != sizeof expirations) {
    asyncjob::pause();
  }
}

// Inside a job: one operation on the accelerator; returns its answer.
std::uint32_t Offload(Accelerator& accelerator, Request& request, std::uint32_t input,
                      std::chrono::milliseconds latency) {
  std::uint32_t target = request.completed.load(std::memory_order_relaxed) + 1;
  asyncjob::Waker wake = asyncjob::prepare_wakeup();  // status OK: "I will call back"
  accelerator.Submit(Clock::now() + latency, &request, input, wake);
  while (request.completed.load(std::memory_order_acquire) < target) asyncjob::pause();
  return request.answer;
}

std::uint32_t Expected(int id) {
  std::uint32_t value = static_cast<std::uint32_t>(id);
  for (int step = 0; step < kSteps; ++step) {
    if (step == 1 && id % kTimerEvery == 0) continue;
    value = (value + static_cast<std::uint32_t>(step)) * 2654435761u;
  }
  return value;
}

std::string Thousands(unsigned long long value) {
  char digits[32];
  int length = std::snprintf(digits, sizeof digits, "%llu", value);
  std::string grouped;
  for (int i = 0; i < length; ++i) {
    if (i > 0 && (length - i) % 3 == 0) grouped.push_back(',');
    grouped.push_back(digits[i]);
  }
  return grouped;
}

double ThreadCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

int Run() {
  // Every timer request holds an fd while it waits: make room if needed.
  int timer_every = kTimerEvery;
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  const rlim_t wanted = kRequests / kTimerEvery + 256;
  if (limit.rlim_cur < wanted) {
    limit.rlim_cur = std::min(limit.rlim_max, wanted);
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur < wanted) timer_every = kRequests;  // a few timers only

  std::printf("\n== Part 2: asyncjob::Loop, %s requests on one thread ==\n\n",
              Thousands(kRequests).c_str());
  std::printf(
      "Each request makes %d steps. Steps go to a simulated accelerator (2 worker\n"
      "threads; 20-700 ms latency) that wakes the job through its wait context's\n"
      "callback; every %dth request waits on a timerfd instead for its middle step.\n\n",
      kSteps, timer_every);

  const bool tty = isatty(STDOUT_FILENO) != 0;
  std::vector<Request> requests(kRequests);
  std::vector<asyncjob::JobHandle<std::uint32_t>> handles;
  handles.reserve(kRequests);
  Accelerator accelerator(2);
  asyncjob::Loop loop;
  std::mt19937 random(7);
  std::uniform_int_distribution<int> latency_ms(20, 700);

  const Clock::time_point started = Clock::now();
  const double cpu_started = ThreadCpuSeconds();
  for (int id = 0; id < kRequests; ++id) {
    int latencies[kSteps];
    for (int& latency : latencies) latency = latency_ms(random);
    handles.push_back(loop.spawn(
        [&accelerator, &request = requests[static_cast<std::size_t>(id)], id, timer_every,
         latencies] {
          std::uint32_t value = static_cast<std::uint32_t>(id);
          for (int step = 0; step < kSteps; ++step) {
            if (step == 1 && id % timer_every == 0) {
              TimerWait(latencies[step]);
            } else {
              value = Offload(accelerator, request, value + static_cast<std::uint32_t>(step),
                              std::chrono::milliseconds(latencies[step]));
            }
          }
          return value;
        },
        asyncjob::SpawnOptions{.timeout = 30s}));
  }

  std::size_t peak_paused = 0;
  Clock::time_point last_report = started;
  auto report = [&](bool final_line) {
    asyncjob::LoopCounters stats = loop.counters();
    double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    unsigned long long finished =
        stats.succeeded + stats.failed + stats.cancelled + stats.timed_out;
    std::printf(
        "%s%5.2f s  finished %6s/%s  paused %6s  wake-ups: %7s callback, %6s fd  "
        "(%s eventfd writes)%s",
        tty ? "\r" : "", seconds, Thousands(finished).c_str(), Thousands(kRequests).c_str(),
        Thousands(stats.paused).c_str(), Thousands(stats.wakeups_callback).c_str(),
        Thousands(stats.wakeups_fd).c_str(), Thousands(stats.eventfd_signals).c_str(),
        tty && !final_line ? "" : "\n");
    std::fflush(stdout);
  };
  const auto interval = tty ? 100ms : 500ms;
  while (loop.run_once(50ms)) {
    peak_paused = std::max(peak_paused, loop.counters().paused);
    if (Clock::now() - last_report >= interval) {
      last_report = Clock::now();
      report(false);
    }
  }
  report(true);
  const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  const double cpu = ThreadCpuSeconds() - cpu_started;

  int wrong = 0;
  for (int id = 0; id < kRequests; ++id) {
    asyncjob::JobHandle<std::uint32_t>& handle = handles[static_cast<std::size_t>(id)];
    if (handle.status() != asyncjob::JobStatus::kSucceeded || handle.get() != Expected(id)) {
      ++wrong;
    }
  }
  asyncjob::LoopCounters stats = loop.counters();
  std::printf(
      "\nsummary: %s requests, %s succeeded, %d wrong or failed, in %.2f s "
      "(%s requests/s)\n",
      Thousands(stats.spawned).c_str(), Thousands(stats.succeeded).c_str(), wrong, elapsed,
      Thousands(static_cast<unsigned long long>(kRequests / elapsed)).c_str());
  std::printf("         up to %s jobs paused at once; %s resumes\n", Thousands(peak_paused).c_str(),
              Thousands(stats.resumes).c_str());
  std::printf("         wake-ups: %s by callback (%s coalesced, %s stale), %s by fd\n",
              Thousands(stats.wakeups_callback).c_str(), Thousands(stats.wakeups_coalesced).c_str(),
              Thousands(stats.wakeups_stale).c_str(), Thousands(stats.wakeups_fd).c_str());
  std::printf(
      "         the callbacks needed %s eventfd writes (%.0f wake-ups per write); "
      "one eventfd per job would need %s\n",
      Thousands(stats.eventfd_signals).c_str(),
      stats.eventfd_signals > 0
          ? static_cast<double>(stats.wakeups_callback) / static_cast<double>(stats.eventfd_signals)
          : 0.0,
      Thousands(stats.wakeups_callback).c_str());
  std::printf("         loop thread busy %.2f s of CPU (%.1f us per request)\n", cpu,
              cpu * 1e6 / kRequests);
  return wrong == 0 && stats.succeeded == static_cast<std::uint64_t>(kRequests) ? 0 : 1;
}

}  // namespace at_scale

}  // namespace

int main() {
  std::printf("== Part 1: the OpenSSL-style API with one epoll loop ==\n\n");
  int status = RunOpenSslApiPart();
  if (status != 0) return status;
  status = at_scale::Run();
  ASYNC_cleanup_thread();  // the main thread's pool is not freed at exit
  return status;
}
