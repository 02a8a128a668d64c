// Threads under stress. Worker threads each run many jobs with random pauses
// through one event loop per thread, the way an application drives the API:
//   - a job is woken from another thread, either through its wait context's
//     callback (as an engine's completion would) or through an eventfd it
//     registered as a wait fd (the owner adds and removes fds from its epoll
//     set as ASYNC_WAIT_CTX_get_changed_fds reports them);
//   - some jobs pause with nothing to wait for and are resumed at once, some
//     start and resume a nested job of their own;
//   - some are lent to other worker threads, which must fail to resume or
//     cancel them (ASYNC_ERR / 0, reason ASYNCJOB_R_WRONG_THREAD, *job left
//     alone) and hand them back, after which their owner resumes them;
//   - every job checks, each time it runs, that it runs on its own thread and
//     sees its own handle and wait context; its result must come back intact;
//   - each thread's pool is limited, so starts meet ASYNC_NO_JOBS exactly
//     when every pooled job is in use.
// Everything handed between threads goes through a mutex or an eventfd, so
// the test is clean under ThreadSanitizer. It ends when every job has
// finished (or fails at a deadline, rather than hang), with no fd left open,
// no job in use and no error left in any thread's queue.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/async.h"
#include "base/sanitizers.h"
#include "support/test_support.h"

namespace {

#if ASYNCJOB_TSAN
// Each paused job's fibre costs ThreadSanitizer memory of its own: a hundred
// or so at once per thread.
constexpr int kJobsPerThreadBuilt = 3000;
constexpr std::size_t kPoolMax = 100;
#elif ASYNCJOB_ASAN
constexpr int kJobsPerThreadBuilt = 2500;
constexpr std::size_t kPoolMax = 128;
#else
constexpr int kJobsPerThreadBuilt = 6000;
constexpr std::size_t kPoolMax = 200;
#endif
// valgrind runs one thread at a time, each many times slower.
int kJobsPerThread = kJobsPerThreadBuilt;
constexpr int kWorkers = 4;
constexpr int kWakers = 2;
constexpr int kMaxPauses = 6;
// More jobs wanted at once than the pool holds: starts meet ASYNC_NO_JOBS.
constexpr std::size_t kWantedAtOnce = kPoolMax + 8;
constexpr auto kDeadline = std::chrono::seconds(120);

// ----- Failures seen off the main thread -----

std::mutex failures_mutex;
std::vector<std::string> failures;

void Failure(const std::string& message) {
  std::lock_guard lock(failures_mutex);
  if (failures.size() < 20) failures.push_back(message);
}

#define STRESS_CHECK(cond, message)                              \
  do {                                                           \
    if (!(cond)) Failure(std::string(message) + " (" #cond ")"); \
  } while (false)

std::string PopReasons() {
  std::string reasons;
  while (unsigned long code = asyncjob_get_error(nullptr)) {
    reasons += std::to_string(ASYNCJOB_ERR_GET_REASON(code)) + " ";
  }
  return reasons;
}

// ----- Wakers: other threads that complete "requests" -----

struct WakeRequest {
  ASYNC_callback_fn callback = nullptr;  // call callback(arg) ...
  void* arg = nullptr;
  int fd = -1;  // ... or write to fd
};

class Wakers {
 public:
  void Start() {
    for (int i = 0; i < kWakers; ++i) {
      threads_.emplace_back([this, i] { Loop(static_cast<unsigned>(i)); });
    }
  }
  void Submit(const WakeRequest& request) {
    std::lock_guard lock(mutex_);
    queue_.push_back(request);
    cv_.notify_one();
  }
  void Stop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
      cv_.notify_all();
    }
    for (std::thread& t : threads_) t.join();
    STRESS_CHECK(queue_.empty(), "wake requests were left over");
  }

 private:
  void Loop(unsigned seed) {
    std::mt19937 rng(1000 + seed);
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      WakeRequest request = queue_.front();
      queue_.pop_front();
      lock.unlock();
      // A completion takes a little while, or none at all.
      if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
      if (request.callback != nullptr) {
        STRESS_CHECK(request.callback(request.arg) == 1, "the wake callback failed");
      } else {
        const std::uint64_t one = 1;
        STRESS_CHECK(write(request.fd, &one, sizeof one) == sizeof one, "eventfd write failed");
      }
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<WakeRequest> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

Wakers* wakers = nullptr;

// ----- Jobs and the threads that own them -----

enum class Wake { kNone, kCallback, kStableFd, kTemporaryFd, kLend };

class Worker;

struct JobRecord {
  Worker* owner = nullptr;
  int index = 0;
  ASYNC_JOB* handle = nullptr;
  ASYNC_WAIT_CTX* ctx = nullptr;
  std::uint32_t seed = 0;
  int pauses = 0;
  Wake wake = Wake::kNone;  // what the job waits for in its current pause
  int stable_fd = -1;       // an engine-style fd kept for the context's life
  int temporary_fd = -1;    // an fd for one wait only
  int cleared_fd = -1;      // cleared by the job; closed once its owner saw it deleted
  bool waiting = false;     // paused and not yet woken
  int expected_result() const { return index * 3 + pauses; }
};

const char kStableKey = 0;
const char kTemporaryKey = 0;

void CloseFdCleanup(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) { close(fd); }

int WakeCallback(void* arg);

// Jobs lent to other threads, which must fail to resume them.
std::mutex lend_mutex;
std::deque<JobRecord*> lent;
std::atomic<int> workers_done{0};
std::atomic<long> refused_resumes{0};
std::atomic<long> no_jobs_seen{0};
std::atomic<long> wakes_by_callback{0};
std::atomic<long> wakes_by_fd{0};

int NestedJob(void*) {
  ASYNC_pause_job();
  return 5;
}

class Worker {
 public:
  explicit Worker(int id) : id_(id) {}

  void Run() {
    thread_ = pthread_self();
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    notify_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    STRESS_CHECK(epoll_ >= 0 && notify_ >= 0, "epoll or eventfd creation failed");
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = nullptr;  // the notification fd
    epoll_ctl(epoll_, EPOLL_CTL_ADD, notify_, &event);
    STRESS_CHECK(ASYNC_init_thread(kPoolMax, 8) == 1, "ASYNC_init_thread failed");
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;

    while (finished_ < kJobsPerThread) {
      if (std::chrono::steady_clock::now() > deadline) {
        Failure("worker " + std::to_string(id_) + " missed the deadline");
        break;
      }
      StartJobs();
      WaitForEvents();
      ResumeReadyJobs();
      RefuseLentJobs();
    }
    ++workers_done;
    // Others may still lend jobs to this thread until every worker is done.
    while (workers_done.load() < kWorkers) {
      if (!RefuseLentJobs()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }

    asyncjob_pool_stats stats{};
    STRESS_CHECK(
        asyncjob_get_pool_stats(&stats) == 1 && stats.in_use == 0 && stats.total <= kPoolMax,
        "the pool still has jobs in use, or more than its maximum");
    ASYNC_cleanup_thread();
    STRESS_CHECK(asyncjob_get_pool_stats(&stats) == 0, "the pool outlived ASYNC_cleanup_thread");
    const std::string leftover = PopReasons();
    STRESS_CHECK(leftover.empty(),
                 "errors left on worker " + std::to_string(id_) + ": " + leftover);
    close(notify_);
    close(epoll_);
  }

  // From any thread: this job may be resumed now.
  // The notification is written under the lock: once the worker can see the
  // record, this call has stopped using notify_, so a worker that resumes the
  // job, finishes its last one and closes notify_ never races the write.
  void MakeReady(JobRecord* record) {
    std::lock_guard lock(ready_mutex_);
    ready_.push_back(record);
    const std::uint64_t one = 1;
    STRESS_CHECK(write(notify_, &one, sizeof one) == sizeof one, "notify write failed");
  }

  pthread_t thread() const { return thread_; }

 private:
  void StartJobs() {
    while (active_ < kWantedAtOnce && started_ < kJobsPerThread) {
      auto* record = new JobRecord;
      record->owner = this;
      record->index = id_ * 100000 + started_;
      record->seed = static_cast<std::uint32_t>(record->index) * 2654435761u;
      record->pauses = static_cast<int>(record->seed % (kMaxPauses + 1));
      record->ctx = ASYNC_WAIT_CTX_new();
      ASYNC_WAIT_CTX_set_callback(record->ctx, &WakeCallback, record);
      int ret = -1;
      JobRecord* argument = record;
      const int status =
          ASYNC_start_job(&record->handle, record->ctx, &ret, &JobBody, &argument, sizeof argument);
      if (status == ASYNC_NO_JOBS) {
        asyncjob_pool_stats stats{};
        asyncjob_get_pool_stats(&stats);
        STRESS_CHECK(stats.in_use == kPoolMax && stats.total == kPoolMax,
                     "ASYNC_NO_JOBS while the pool had room");
        STRESS_CHECK(record->handle == nullptr && ret == -1, "ASYNC_NO_JOBS changed *job or *ret");
        ++no_jobs_seen;
        ASYNC_WAIT_CTX_free(record->ctx);
        delete record;
        return;
      }
      ++started_;
      ++active_;
      Handle(record, status, ret);
    }
  }

  void WaitForEvents() {
    epoll_event events[64];
    const int n = epoll_wait(epoll_, events, 64, ready_empty() ? 2 : 0);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        std::uint64_t count = 0;
        ssize_t ignored = read(notify_, &count, sizeof count);
        (void)ignored;
        continue;
      }
      auto* record = static_cast<JobRecord*>(events[i].data.ptr);
      // Level-triggered: reported until the job reads its fd after resuming.
      if (record->waiting) {
        record->waiting = false;
        ++wakes_by_fd;
        local_ready_.push_back(record);
      }
    }
  }

  bool ready_empty() {
    std::lock_guard lock(ready_mutex_);
    return ready_.empty() && local_ready_.empty();
  }

  void ResumeReadyJobs() {
    {
      std::lock_guard lock(ready_mutex_);
      for (JobRecord* record : ready_) local_ready_.push_back(record);
      ready_.clear();
    }
    std::vector<JobRecord*> batch;
    batch.swap(local_ready_);
    for (JobRecord* record : batch) {
      record->waiting = false;
      int ret = -1;
      const int status = ASYNC_start_job(&record->handle, record->ctx, &ret, &JobBody, nullptr, 0);
      Handle(record, status, ret);
    }
  }

  // Jobs of other threads: resuming or cancelling them here must fail.
  bool RefuseLentJobs() {
    JobRecord* record = nullptr;
    {
      std::lock_guard lock(lend_mutex);
      for (auto it = lent.begin(); it != lent.end(); ++it) {
        if ((*it)->owner != this) {
          record = *it;
          lent.erase(it);
          break;
        }
      }
    }
    if (record == nullptr) return false;
    ASYNC_JOB* copy = record->handle;
    int ret = -1;
    STRESS_CHECK(ASYNC_start_job(&copy, nullptr, &ret, &JobBody, nullptr, 0) == ASYNC_ERR,
                 "another thread resumed a job");
    STRESS_CHECK(copy == record->handle && ret == -1, "a refused resume changed *job or *ret");
    std::string reasons = PopReasons();
    STRESS_CHECK(reasons == std::to_string(ASYNCJOB_R_WRONG_THREAD) + " ",
                 "a wrong-thread resume queued: " + reasons);
    STRESS_CHECK(asyncjob_cancel_job(&copy) == 0 && copy == record->handle,
                 "another thread cancelled a job");
    reasons = PopReasons();
    STRESS_CHECK(reasons == std::to_string(ASYNCJOB_R_WRONG_THREAD) + " ",
                 "a wrong-thread cancel queued: " + reasons);
    ++refused_resumes;
    record->owner->MakeReady(record);
    return true;
  }

  void Handle(JobRecord* record, int status, int ret) {
    if (status == ASYNC_PAUSE || status == ASYNC_FINISH) {
      // Changes of a job's last segment are reported after it finished too.
      FollowFdChanges(record);
      if (record->cleared_fd >= 0) {
        close(record->cleared_fd);
        record->cleared_fd = -1;
      }
    }
    if (status == ASYNC_FINISH) {
      STRESS_CHECK(ret == record->expected_result(), "a job's result came back wrong");
      STRESS_CHECK(record->handle == nullptr, "*job is not NULL after ASYNC_FINISH");
      ASYNC_WAIT_CTX_free(record->ctx);  // closes the stable fd, if any
      delete record;
      --active_;
      ++finished_;
      return;
    }
    if (status != ASYNC_PAUSE) {
      Failure("ASYNC_start_job returned " + std::to_string(status) + ", errors " + PopReasons());
      return;
    }
    STRESS_CHECK(ret == -1, "*ret was written at a pause");
    switch (record->wake) {
      case Wake::kNone:
        local_ready_.push_back(record);
        break;
      case Wake::kCallback:
        break;  // the waker calls the context's callback
      case Wake::kStableFd:
      case Wake::kTemporaryFd:
        record->waiting = true;
        break;
      case Wake::kLend: {
        std::lock_guard lock(lend_mutex);
        lent.push_back(record);
        break;
      }
    }
  }

  // What an event loop does after every pause (and at the finish): watch the
  // fds added since the job last resumed and stop watching the deleted ones.
  // Jobs keep an fd they clear open until then, so a deleted fd is always
  // still registered here (closing it first would let another thread reuse
  // its number before this loop drops it).
  void FollowFdChanges(JobRecord* record) {
    std::size_t n_added = 0;
    std::size_t n_deleted = 0;
    STRESS_CHECK(
        ASYNC_WAIT_CTX_get_changed_fds(record->ctx, nullptr, &n_added, nullptr, &n_deleted) == 1,
        "get_changed_fds failed");
    std::vector<OSSL_ASYNC_FD> added(n_added);
    std::vector<OSSL_ASYNC_FD> deleted(n_deleted);
    ASYNC_WAIT_CTX_get_changed_fds(record->ctx, added.data(), &n_added, deleted.data(), &n_deleted);
    for (OSSL_ASYNC_FD fd : deleted) {
      STRESS_CHECK(epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr) == 0,
                   "a deleted fd was not being watched");
    }
    for (OSSL_ASYNC_FD fd : added) {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.ptr = record;
      STRESS_CHECK(epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) == 0, "EPOLL_CTL_ADD failed");
    }
  }

  static int JobBody(void* arg);

  int id_;
  pthread_t thread_{};
  int epoll_ = -1;
  int notify_ = -1;
  std::size_t active_ = 0;
  int started_ = 0;
  int finished_ = 0;
  std::mutex ready_mutex_;
  std::vector<JobRecord*> ready_;        // woken from other threads
  std::vector<JobRecord*> local_ready_;  // woken on this thread
};

int WakeCallback(void* arg) {
  auto* record = static_cast<JobRecord*>(arg);
  ++wakes_by_callback;
  record->owner->MakeReady(record);
  return 1;
}

// Checks that the job runs where and as it should; called each time it runs.
void CheckWhereIRun(JobRecord* record) {
  STRESS_CHECK(pthread_equal(pthread_self(), record->owner->thread()) != 0,
               "a job ran on another thread than its own");
  STRESS_CHECK(ASYNC_get_current_job() == record->handle || record->handle == nullptr,
               "a job saw another job's handle");
  STRESS_CHECK(ASYNC_get_wait_ctx(ASYNC_get_current_job()) == record->ctx,
               "a job saw another wait context");
}

int Worker::JobBody(void* arg) {
  JobRecord* record = *static_cast<JobRecord**>(arg);
  CheckWhereIRun(record);
  std::minstd_rand rng(record->seed);
  for (int pause = 0; pause < record->pauses; ++pause) {
    if (rng() % 8 == 0) {
      // A nested job, paused and resumed by this one; it needs a job of
      // the pool too, which may have none left.
      ASYNC_JOB* inner = nullptr;
      int inner_ret = 0;
      const int status = ASYNC_start_job(&inner, nullptr, &inner_ret, &NestedJob, nullptr, 0);
      if (status == ASYNC_NO_JOBS) {
        asyncjob_pool_stats stats{};
        asyncjob_get_pool_stats(&stats);
        STRESS_CHECK(stats.in_use == kPoolMax && inner == nullptr,
                     "ASYNC_NO_JOBS inside a job while the pool had room");
      } else {
        STRESS_CHECK(status == ASYNC_PAUSE, "a nested job did not pause");
        STRESS_CHECK(
            ASYNC_start_job(&inner, nullptr, &inner_ret, nullptr, nullptr, 0) == ASYNC_FINISH &&
                inner_ret == 5,
            "a nested job did not finish");
      }
    }
    const auto wake = static_cast<Wake>(rng() % 5);
    record->wake = wake;
    switch (wake) {
      case Wake::kNone:
      case Wake::kLend:
        break;
      case Wake::kCallback: {
        // As an engine does: take the callback from the context, submit.
        ASYNC_callback_fn callback = nullptr;
        void* callback_arg = nullptr;
        STRESS_CHECK(ASYNC_WAIT_CTX_get_callback(record->ctx, &callback, &callback_arg) == 1 &&
                         callback == &WakeCallback && callback_arg == record,
                     "the context's callback is not the one set");
        ASYNC_WAIT_CTX_set_status(record->ctx, ASYNC_STATUS_OK);
        wakers->Submit(WakeRequest{callback, callback_arg, -1});
        break;
      }
      case Wake::kStableFd:
        if (record->stable_fd < 0) {
          record->stable_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
          STRESS_CHECK(record->stable_fd >= 0, "eventfd failed");
          STRESS_CHECK(ASYNC_WAIT_CTX_set_wait_fd(record->ctx, &kStableKey, record->stable_fd,
                                                  record, &CloseFdCleanup) == 1,
                       "set_wait_fd failed");
        }
        wakers->Submit(WakeRequest{nullptr, nullptr, record->stable_fd});
        break;
      case Wake::kTemporaryFd:
        record->temporary_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        STRESS_CHECK(record->temporary_fd >= 0, "eventfd failed");
        STRESS_CHECK(ASYNC_WAIT_CTX_set_wait_fd(record->ctx, &kTemporaryKey, record->temporary_fd,
                                                nullptr, nullptr) == 1,
                     "set_wait_fd failed");
        wakers->Submit(WakeRequest{nullptr, nullptr, record->temporary_fd});
        break;
    }
    ASYNC_pause_job();
    CheckWhereIRun(record);
    switch (wake) {
      case Wake::kCallback:
        STRESS_CHECK(ASYNC_WAIT_CTX_get_status(record->ctx) == ASYNC_STATUS_OK,
                     "the status changed under the job");
        break;
      case Wake::kStableFd:
      case Wake::kTemporaryFd: {
        const int fd = wake == Wake::kStableFd ? record->stable_fd : record->temporary_fd;
        std::uint64_t count = 0;
        STRESS_CHECK(read(fd, &count, sizeof count) == sizeof count && count == 1,
                     "resumed before its fd was signalled");
        if (wake == Wake::kTemporaryFd) {
          // clear_fd never closes; it is closed once the owner has seen it
          // reported deleted, at the next pause or the finish.
          STRESS_CHECK(ASYNC_WAIT_CTX_clear_fd(record->ctx, &kTemporaryKey) == 1,
                       "clear_fd failed");
          record->cleared_fd = record->temporary_fd;
          record->temporary_fd = -1;
        }
        break;
      }
      default:
        break;
    }
  }
  return record->expected_result();
}

}  // namespace

TEST(ThreadStress, JobsWokenFromOtherThreadsResumeOnlyOnTheirOwn) {
  asyncjob_clear_errors();
  failures.clear();
  if (ASYNCJOB_TEST_UNDER_VALGRIND()) kJobsPerThread = kJobsPerThreadBuilt / 6;
  workers_done = 0;
  refused_resumes = 0;
  no_jobs_seen = 0;
  wakes_by_callback = 0;
  wakes_by_fd = 0;
  const std::size_t fds_before = asyncjob_test::CountOpenFds();
  Wakers waker_threads;
  wakers = &waker_threads;
  waker_threads.Start();
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < kWorkers; ++i) workers.push_back(std::make_unique<Worker>(i));
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (auto& worker : workers) threads.emplace_back([&worker] { worker->Run(); });
  for (std::thread& t : threads) t.join();
  waker_threads.Stop();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  for (const std::string& failure : failures) ADD_FAILURE() << failure;
  EXPECT_TRUE(failures.empty());
  EXPECT_GT(refused_resumes.load(), 0) << "no job was lent to another thread";
  EXPECT_GT(no_jobs_seen.load(), 0) << "the pools never ran out";
  EXPECT_GT(wakes_by_callback.load(), 0);
  EXPECT_GT(wakes_by_fd.load(), 0);
  EXPECT_TRUE(lent.empty());
  EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before) << "an eventfd was left open";
  EXPECT_EQ(asyncjob_get_error(nullptr), 0u);
  std::printf(
      "%d threads x %d jobs in %.2f s: %ld wrong-thread resumes refused, %ld NO_JOBS, "
      "%ld callback and %ld fd wake-ups\n",
      kWorkers, kJobsPerThread, seconds, refused_resumes.load(), no_jobs_seen.load(),
      wakes_by_callback.load(), wakes_by_fd.load());
}
