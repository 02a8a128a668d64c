// gate.h - a one-shot gate for tests: opened once by one thread, waited for
// by others (a task held on a worker until the test lets it go).
//
//   asyncjob_test::Gate gate;
//   engine.run([&] { gate.Wait(); });   // on a worker: blocks
//   while (gate.waiters() == 0) ...     // the task is inside the gate
//   gate.Open();                        // every waiter goes on
#ifndef ASYNCJOB_TESTS_SUPPORT_GATE_H_
#define ASYNCJOB_TESTS_SUPPORT_GATE_H_

#include <condition_variable>
#include <mutex>

namespace asyncjob_test {

class Gate {
 public:
  // Notifies under the lock: a waiter may destroy the gate as soon as it
  // sees it open, so the notification must be over by then.
  void Open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    opened_.notify_all();
  }
  void Wait() {
    std::unique_lock lock(mutex_);
    ++waiters_;
    opened_.wait(lock, [this] { return open_; });
  }
  bool IsOpen() {
    std::lock_guard lock(mutex_);
    return open_;
  }
  // Calls of Wait() so far, returned or not.
  int waiters() {
    std::lock_guard lock(mutex_);
    return waiters_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable opened_;
  bool open_ = false;
  int waiters_ = 0;
};

}  // namespace asyncjob_test

#endif  // ASYNCJOB_TESTS_SUPPORT_GATE_H_
