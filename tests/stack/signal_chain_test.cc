// signal_chain_test.cc - asyncjob's SIGSEGV/SIGBUS handler behaves, for every
// signal that is not a stack overflow, exactly as the disposition that was
// installed before it; and a program can keep it out.
//
// A plain program (no test framework, so that no framework's own signal
// handlers are in the way): each case runs in a child process that sets a
// disposition, makes asyncjob install its handler (ASYNC_init_thread), then
// faults or raises; the parent checks how the child ended and what it
// printed. The parent itself never makes a pool, so every child starts with
// asyncjob's handler not installed.
#include <setjmp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "asyncjob/async.h"

namespace {

struct Ended {
  int status = 0;
  std::string output;
  bool KilledBy(int signal_number) const {
    return WIFSIGNALED(status) && WTERMSIG(status) == signal_number;
  }
  bool ExitedWith(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  std::string Describe() const {
    char text[64];
    if (WIFSIGNALED(status)) {
      std::snprintf(text, sizeof text, "killed by signal %d", WTERMSIG(status));
    } else {
      std::snprintf(text, sizeof text, "exited with %d", WEXITSTATUS(status));
    }
    return text;
  }
};

// Runs `body` in a child whose stderr is captured; a child still running
// after 20 s is killed by SIGALRM (which no case expects).
Ended RunInChild(const std::function<void()>& body) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) std::abort();
  std::fflush(nullptr);
  pid_t child = fork();
  if (child == 0) {
    close(pipe_fds[0]);
    dup2(pipe_fds[1], STDERR_FILENO);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    alarm(20);
    body();
    _exit(0);
  }
  close(pipe_fds[1]);
  Ended ended;
  char buffer[4096];
  ssize_t n;
  while ((n = read(pipe_fds[0], buffer, sizeof buffer)) > 0) ended.output.append(buffer, n);
  close(pipe_fds[0]);
  waitpid(child, &ended.status, 0);
  return ended;
}

void Say(const char* text) {
  ssize_t ignored = write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

int Occurrences(const std::string& text, const std::string& what) {
  int count = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

void SetDisposition(int signal_number, void (*handler)(int), int flags = 0) {
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  sigaction(signal_number, &action, nullptr);
}

// Runs `function` in a job on this thread, after making the pool (which
// installs asyncjob's handler).
int RunInJob(int (*function)(void*)) {
  if (ASYNC_init_thread(0, 1) != 1) std::abort();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int status = ASYNC_start_job(&job, nullptr, &ret, function, nullptr, 0);
  return status == ASYNC_FINISH ? ret : -1;
}

int DereferenceNull(void*) {
  volatile int* nowhere = nullptr;
  *nowhere = 1;
  return 0;
}

__attribute__((noinline, no_sanitize("address"))) int Recurse(int depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (depth > 1'000'000'000) return frame[0];
  return Recurse(depth + 1) + frame[0];
}
int Overflow(void*) { return Recurse(0); }

int RaiseSegv(void*) {
  raise(SIGSEGV);
  return 7;
}

void SayHandlerRan(int) { Say("previous handler ran\n"); }

// ----- Recovering from a fault with siglongjmp (what some hosts do) -----

sigjmp_buf recovery;
volatile sig_atomic_t seen_signal = 0;
volatile sig_atomic_t seen_siginfo_code = 0;
void* volatile seen_address = nullptr;
volatile sig_atomic_t segv_blocked_inside = -1;
volatile sig_atomic_t usr1_blocked_inside = -1;

void RecordMask() {
  sigset_t now;
  pthread_sigmask(SIG_SETMASK, nullptr, &now);
  segv_blocked_inside = sigismember(&now, SIGSEGV);
  usr1_blocked_inside = sigismember(&now, SIGUSR1);
}

void RecoverWithInfo(int signal_number, siginfo_t* info, void*) {
  seen_signal = signal_number;
  seen_siginfo_code = info->si_code;
  seen_address = info->si_addr;
  RecordMask();
  siglongjmp(recovery, 1);
}

void RecoverPlain(int signal_number) {
  seen_signal = signal_number;
  RecordMask();
  siglongjmp(recovery, 1);
}

// An unmapped address the compiler cannot see through.
int* volatile fault_address = reinterpret_cast<int*>(16);

int FaultAndRecover(void*) {
  if (sigsetjmp(recovery, 1) == 0) {
    *static_cast<volatile int*>(fault_address) = 1;
    return 0;  // not reached
  }
  return 42;  // recovered inside the job
}

// ----- Cases -----

struct Case {
  const char* name;
  std::function<bool(std::string* why)> check;
};

bool Expect(bool condition, std::string* why, const std::string& text) {
  if (!condition) *why = text;
  return condition;
}

std::vector<Case> Cases() {
  std::vector<Case> cases;

  cases.push_back(
      {"a fault with SIGSEGV ignored before us kills the process by SIGSEGV", [](std::string* why) {
         Ended ended = RunInChild([] {
           SetDisposition(SIGSEGV, SIG_IGN);
           RunInJob(&DereferenceNull);
         });
         return Expect(ended.KilledBy(SIGSEGV), why, ended.Describe());
       }});

  cases.push_back(
      {"a one-shot (SA_RESETHAND) handler runs once, then SIGSEGV kills", [](std::string* why) {
         Ended ended = RunInChild([] {
           SetDisposition(SIGSEGV, &SayHandlerRan, SA_RESETHAND);
           RunInJob(&DereferenceNull);
         });
         return Expect(ended.KilledBy(SIGSEGV), why, ended.Describe()) &&
                Expect(Occurrences(ended.output, "previous handler ran") == 1, why,
                       "handler output: " + ended.output);
       }});

  cases.push_back(
      {"a fault with the default disposition kills the process by SIGSEGV", [](std::string* why) {
         Ended ended = RunInChild([] {
           SetDisposition(SIGSEGV, SIG_DFL);
           RunInJob(&DereferenceNull);
         });
         return Expect(ended.KilledBy(SIGSEGV), why, ended.Describe()) &&
                Expect(ended.output.find("asyncjob") == std::string::npos, why,
                       "unexpected output: " + ended.output);
       }});

  cases.push_back({"raise(SIGSEGV) reaches the previous handler and ours stays installed",
                   [](std::string* why) {
                     Ended ended = RunInChild([] {
                       SetDisposition(SIGSEGV, &SayHandlerRan);
                       if (RunInJob(&RaiseSegv) != 7) _exit(10);
                       raise(SIGSEGV);
                       if (asyncjob_overflow_handler_installed() != 1) _exit(11);
                       // A real overflow is still reported.
                       ASYNC_JOB* job = nullptr;
                       int ret = 0;
                       ASYNC_start_job(&job, nullptr, &ret, &Overflow, nullptr, 0);
                     });
                     return Expect(ended.KilledBy(SIGABRT), why, ended.Describe()) &&
                            Expect(Occurrences(ended.output, "previous handler ran") == 2, why,
                                   "output: " + ended.output) &&
                            Expect(ended.output.find("asyncjob: stack overflow in job") !=
                                       std::string::npos,
                                   why, "no overflow message: " + ended.output);
                   }});

  cases.push_back(
      {"raise(SIGSEGV) with the default disposition kills by SIGSEGV", [](std::string* why) {
         Ended ended = RunInChild([] {
           SetDisposition(SIGSEGV, SIG_DFL);
           if (ASYNC_init_thread(0, 1) != 1) _exit(10);
           raise(SIGSEGV);
           _exit(12);
         });
         return Expect(ended.KilledBy(SIGSEGV), why, ended.Describe());
       }});

  cases.push_back(
      {"raise(SIGSEGV) and raise(SIGBUS) with SIG_IGN are ignored", [](std::string* why) {
         Ended ended = RunInChild([] {
           SetDisposition(SIGSEGV, SIG_IGN);
           SetDisposition(SIGBUS, SIG_IGN);
           if (ASYNC_init_thread(0, 1) != 1) _exit(10);
           raise(SIGSEGV);
           raise(SIGBUS);
           if (asyncjob_overflow_handler_installed() != 1) _exit(11);
           _exit(0);
         });
         return Expect(ended.ExitedWith(0), why, ended.Describe());
       }});

  cases.push_back({"SIGBUS goes to the previous SIGBUS handler", [](std::string* why) {
                     Ended ended = RunInChild([] {
                       SetDisposition(SIGBUS, &SayHandlerRan);
                       if (ASYNC_init_thread(0, 1) != 1) _exit(10);
                       raise(SIGBUS);
                       _exit(0);
                     });
                     return Expect(ended.ExitedWith(0), why, ended.Describe()) &&
                            Expect(Occurrences(ended.output, "previous handler ran") == 1, why,
                                   "output: " + ended.output);
                   }});

  cases.push_back(
      {"an SA_SIGINFO handler gets the fault's siginfo and its own sa_mask", [](std::string* why) {
         Ended ended = RunInChild([] {
           struct sigaction action;
           std::memset(&action, 0, sizeof action);
           action.sa_sigaction = &RecoverWithInfo;
           action.sa_flags = SA_SIGINFO;
           sigemptyset(&action.sa_mask);
           sigaddset(&action.sa_mask, SIGUSR1);
           sigaction(SIGSEGV, &action, nullptr);
           if (RunInJob(&FaultAndRecover) != 42) _exit(10);
           if (seen_signal != SIGSEGV) _exit(11);
           if (seen_siginfo_code <= 0) _exit(12);
           if (seen_address != fault_address) _exit(13);
           if (segv_blocked_inside != 1) _exit(14);
           if (usr1_blocked_inside != 1) _exit(15);
           // siglongjmp restored the mask saved by sigsetjmp.
           sigset_t now;
           pthread_sigmask(SIG_SETMASK, nullptr, &now);
           if (sigismember(&now, SIGSEGV) || sigismember(&now, SIGUSR1)) _exit(16);
           // And it works a second time: nothing was reset.
           if (RunInJob(&FaultAndRecover) != 42) _exit(17);
           _exit(0);
         });
         return Expect(ended.ExitedWith(0), why, ended.Describe());
       }});

  cases.push_back(
      {"a plain handler with SA_NODEFER runs with the signal unblocked", [](std::string* why) {
         Ended ended = RunInChild([] {
           SetDisposition(SIGSEGV, &RecoverPlain, SA_NODEFER);
           if (RunInJob(&FaultAndRecover) != 42) _exit(10);
           if (seen_signal != SIGSEGV) _exit(11);
           if (segv_blocked_inside != 0) _exit(12);
           if (usr1_blocked_inside != 0) _exit(13);
           _exit(0);
         });
         return Expect(ended.ExitedWith(0), why, ended.Describe());
       }});

  cases.push_back(
      {"a handler installed after ours that chains to ours still gets overflows "
       "reported",
       [](std::string* why) {
         Ended ended = RunInChild([] {
           if (ASYNC_init_thread(0, 1) != 1) _exit(10);
           static struct sigaction ours;
           struct sigaction mine;
           std::memset(&mine, 0, sizeof mine);
           mine.sa_sigaction = [](int signal_number, siginfo_t* info, void* context) {
             Say("later handler ran\n");
             ours.sa_sigaction(signal_number, info, context);
           };
           mine.sa_flags = SA_SIGINFO | SA_ONSTACK;
           sigemptyset(&mine.sa_mask);
           sigaction(SIGSEGV, &mine, &ours);
           if ((ours.sa_flags & SA_SIGINFO) == 0) _exit(11);
           ASYNC_JOB* job = nullptr;
           int ret = 0;
           ASYNC_start_job(&job, nullptr, &ret, &Overflow, nullptr, 0);
         });
         return Expect(ended.KilledBy(SIGABRT), why, ended.Describe()) &&
                Expect(ended.output.find("later handler ran") != std::string::npos, why,
                       "output: " + ended.output) &&
                Expect(ended.output.find("asyncjob: stack overflow in job") != std::string::npos,
                       why, "no overflow message: " + ended.output);
       }});

  cases.push_back(
      {"ASYNCJOB_OVERFLOW_HANDLER=0 keeps the handler out; the guard still stops "
       "an overflow",
       [](std::string* why) {
         Ended ended = RunInChild([] {
           setenv("ASYNCJOB_OVERFLOW_HANDLER", "0", 1);
           SetDisposition(SIGSEGV, SIG_DFL);
           if (ASYNC_init_thread(0, 1) != 1) _exit(10);
           if (asyncjob_overflow_handler_installed() != 0) _exit(11);
           struct sigaction current;
           sigaction(SIGSEGV, nullptr, &current);
           if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) {
             _exit(12);
           }
           ASYNC_JOB* job = nullptr;
           int ret = 0;
           ASYNC_start_job(&job, nullptr, &ret, &Overflow, nullptr, 0);
         });
         return Expect(ended.KilledBy(SIGSEGV), why, ended.Describe()) &&
                Expect(ended.output.find("asyncjob") == std::string::npos, why,
                       "unexpected output: " + ended.output);
       }});

  cases.push_back(
      {"asyncjob_set_overflow_handler(0) puts the previous disposition back; (1) "
       "installs ours again",
       [](std::string* why) {
         Ended ended = RunInChild([] {
           SetDisposition(SIGSEGV, &SayHandlerRan);
           SetDisposition(SIGBUS, SIG_IGN);
           if (ASYNC_init_thread(0, 1) != 1) _exit(10);
           if (asyncjob_overflow_handler_installed() != 1) _exit(11);
           if (asyncjob_set_overflow_handler(0) != 1) _exit(12);
           if (asyncjob_overflow_handler_installed() != 0) _exit(13);
           struct sigaction current;
           sigaction(SIGSEGV, nullptr, &current);
           if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != &SayHandlerRan) {
             _exit(14);
           }
           sigaction(SIGBUS, nullptr, &current);
           if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_IGN) {
             _exit(15);
           }
           // A new pool on another thread does not reinstall it.
           ASYNC_cleanup_thread();
           if (ASYNC_init_thread(0, 1) != 1) _exit(16);
           if (asyncjob_overflow_handler_installed() != 0) _exit(17);
           if (asyncjob_set_overflow_handler(1) != 1) _exit(18);
           if (asyncjob_overflow_handler_installed() != 1) _exit(19);
           raise(SIGSEGV);  // still reaches the program's handler
           _exit(0);
         });
         return Expect(ended.ExitedWith(0), why, ended.Describe()) &&
                Expect(Occurrences(ended.output, "previous handler ran") == 1, why,
                       "output: " + ended.output);
       }});

  return cases;
}

}  // namespace

int main() {
  int passed = 0;
  int failed = 0;
  for (const Case& c : Cases()) {
    std::string why;
    if (c.check(&why)) {
      ++passed;
      std::printf("[ OK ] %s\n", c.name);
    } else {
      ++failed;
      std::printf("[FAIL] %s: %s\n", c.name, why.c_str());
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
