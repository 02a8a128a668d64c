// wait_ctx_test.cc - the wait context (ASYNC_WAIT_CTX) against its
// specification: ASYNC_WAIT_CTX_new(3), ASYNC_start_job(3), libcrypto's exact
// fd change tracking (README.md, "Wait-fd change tracking": an fd added and
// cleared in the same round is reported neither as added nor as deleted, an
// older fd cleared is reported deleted, and a round ends only when a paused
// job is resumed) and asyncjob's documented safety behaviour (argument checks
// with error-queue entries, detaching a job from a context freed under it).
//
// Change tracking is driven through real jobs: a Script is a list of segments
// run by one job, with an ASYNC_pause_job() between consecutive segments, so
// a test can act on the context before a pause, inspect it from the caller
// while the job is paused, and resume it.
//
// The fds given to contexts are plain integers where nothing reads them (the
// context never touches its fds, and those tests register no cleanup that
// would close them), and real pipes where a test checks that nothing leaks.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "asyncjob/async.h"

#include "base/sanitizers.h"

// WaitCtxJob.FailedStartLeavesContextDetached makes the library's copy of the
// job arguments fail with an impossible size; the sanitizers' allocators must
// let malloc return NULL for that instead of aborting the process. Options
// from ASAN_OPTIONS / TSAN_OPTIONS still apply on top of these.
#if ASYNCJOB_ASAN
extern "C" const char* __asan_default_options();
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }
#endif
#if ASYNCJOB_TSAN
extern "C" const char* __tsan_default_options();
extern "C" const char* __tsan_default_options() { return "allocator_may_return_null=1"; }
#endif

namespace {

constexpr int kSentinel = -7777;

// Distinct keys: the context compares them by address only.
char key_storage[8];
const void* const k1 = &key_storage[0];
const void* const k2 = &key_storage[1];
const void* const k3 = &key_storage[2];
const void* const k4 = &key_storage[3];

// ----- Error queue -----

::testing::AssertionResult PoppedError(int reason) {
  const char* message = nullptr;
  const unsigned long code = asyncjob_get_error(&message);
  if (code == 0) return ::testing::AssertionFailure() << "no error queued";
  if (ASYNCJOB_ERR_GET_LIB(code) != ASYNCJOB_ERR_LIB_ASYNC) {
    return ::testing::AssertionFailure()
           << "library " << ASYNCJOB_ERR_GET_LIB(code) << ", want " << ASYNCJOB_ERR_LIB_ASYNC;
  }
  if (ASYNCJOB_ERR_GET_REASON(code) != reason) {
    return ::testing::AssertionFailure()
           << "reason " << ASYNCJOB_ERR_GET_REASON(code) << ", want " << reason << " (message: \""
           << (message != nullptr ? message : "(null)") << "\")";
  }
  if (message == nullptr || *message == '\0') {
    return ::testing::AssertionFailure() << "empty message";
  }
  return ::testing::AssertionSuccess() << "reason " << reason << ": " << message;
}

::testing::AssertionResult NoErrorQueued() {
  const char* message = nullptr;
  const unsigned long code = asyncjob_peek_error(&message);
  if (code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "error queued: reason " << ASYNCJOB_ERR_GET_REASON(code) << ": " << message;
}

// ----- Contexts -----

struct CtxFree {
  void operator()(ASYNC_WAIT_CTX* ctx) const { ASYNC_WAIT_CTX_free(ctx); }
};
using CtxPtr = std::unique_ptr<ASYNC_WAIT_CTX, CtxFree>;

CtxPtr NewCtx() {
  CtxPtr ctx(ASYNC_WAIT_CTX_new());
  EXPECT_NE(ctx.get(), nullptr);
  return ctx;
}

// The fds of get_all_fds, sorted (the order is not specified). Checks that
// the count-only call agrees with the filled one and that the filled call
// writes no more than the count.
std::vector<OSSL_ASYNC_FD> AllFds(ASYNC_WAIT_CTX* ctx) {
  std::size_t count = 12345;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &count), 1);
  if (count == 12345) return {};
  std::vector<OSSL_ASYNC_FD> fds(count + 2, kSentinel);
  std::size_t filled = 54321;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, fds.data(), &filled), 1);
  EXPECT_EQ(filled, count);
  EXPECT_EQ(fds[count], kSentinel) << "get_all_fds wrote past *numfds";
  EXPECT_EQ(fds[count + 1], kSentinel) << "get_all_fds wrote past *numfds";
  fds.resize(count);
  std::sort(fds.begin(), fds.end());
  return fds;
}

struct Changes {
  std::vector<OSSL_ASYNC_FD> added;
  std::vector<OSSL_ASYNC_FD> deleted;
};

// get_changed_fds, sorted; the count-only call must agree with the filled one.
Changes ChangedFds(ASYNC_WAIT_CTX* ctx) {
  std::size_t num_added = 12345;
  std::size_t num_deleted = 12345;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, nullptr, &num_added, nullptr, &num_deleted), 1);
  if (num_added == 12345 || num_deleted == 12345) return {};
  Changes changes;
  changes.added.assign(num_added + 2, kSentinel);
  changes.deleted.assign(num_deleted + 2, kSentinel);
  std::size_t filled_added = 54321;
  std::size_t filled_deleted = 54321;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, changes.added.data(), &filled_added,
                                           changes.deleted.data(), &filled_deleted),
            1);
  EXPECT_EQ(filled_added, num_added);
  EXPECT_EQ(filled_deleted, num_deleted);
  EXPECT_EQ(changes.added[num_added], kSentinel) << "wrote past *numaddfds";
  EXPECT_EQ(changes.added[num_added + 1], kSentinel) << "wrote past *numaddfds";
  EXPECT_EQ(changes.deleted[num_deleted], kSentinel) << "wrote past *numdelfds";
  EXPECT_EQ(changes.deleted[num_deleted + 1], kSentinel) << "wrote past *numdelfds";
  changes.added.resize(num_added);
  changes.deleted.resize(num_deleted);
  std::sort(changes.added.begin(), changes.added.end());
  std::sort(changes.deleted.begin(), changes.deleted.end());
  return changes;
}

using Fds = std::vector<OSSL_ASYNC_FD>;

// get_fd's fd for key, or kSentinel when get_fd returns 0.
OSSL_ASYNC_FD FdOf(ASYNC_WAIT_CTX* ctx, const void* key) {
  OSSL_ASYNC_FD fd = kSentinel;
  const int found = ASYNC_WAIT_CTX_get_fd(ctx, key, &fd, nullptr);
  EXPECT_EQ(found == 0, fd == kSentinel) << "get_fd returned " << found << " and fd " << fd;
  return found != 0 ? fd : kSentinel;
}

// ----- Cleanup routines -----

struct CleanupCall {
  ASYNC_WAIT_CTX* ctx;
  const void* key;
  OSSL_ASYNC_FD fd;
  void* custom_data;
};
std::vector<CleanupCall> cleanup_calls;

void RecordCleanup(ASYNC_WAIT_CTX* ctx, const void* key, OSSL_ASYNC_FD fd, void* custom_data) {
  cleanup_calls.push_back(CleanupCall{ctx, key, fd, custom_data});
}

bool Called(const void* key, OSSL_ASYNC_FD fd) {
  return std::any_of(cleanup_calls.begin(), cleanup_calls.end(),
                     [&](const CleanupCall& c) { return c.key == key && c.fd == fd; });
}

// ----- Jobs -----

using Segment = std::function<void(ASYNC_WAIT_CTX* job_ctx)>;

// Segments run in one job with a pause between consecutive ones; each gets
// ASYNC_get_wait_ctx() of the current job as it is at that moment.
struct Script {
  std::vector<Segment> segments;
  int result = 0;
  std::size_t segments_run = 0;
};

int RunScript(void* arg) {
  Script* script = *static_cast<Script**>(arg);
  for (std::size_t i = 0; i < script->segments.size(); ++i) {
    if (i != 0) {
      EXPECT_EQ(ASYNC_pause_job(), 1);
    }
    ASYNC_JOB* self = ASYNC_get_current_job();
    EXPECT_NE(self, nullptr);
    script->segments[i](self != nullptr ? ASYNC_get_wait_ctx(self) : nullptr);
    ++script->segments_run;
  }
  return script->result;
}

int StartScript(ASYNC_JOB** job, ASYNC_WAIT_CTX* ctx, Script* script, int* ret) {
  EXPECT_EQ(*job, nullptr);
  return ASYNC_start_job(job, ctx, ret, &RunScript, &script, sizeof script);
}

// Resumes *job; func, args and size are ignored on resume, ctx too.
int Resume(ASYNC_JOB** job, int* ret, ASYNC_WAIT_CTX* ctx = nullptr) {
  EXPECT_NE(*job, nullptr);
  return ASYNC_start_job(job, ctx, ret, nullptr, nullptr, 0);
}

std::size_t JobsInUse() {
  asyncjob_pool_stats stats{};
  if (asyncjob_get_pool_stats(&stats) == 0) return 0;
  return stats.in_use;
}

std::size_t OpenFdCount() {
  std::size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++count;
  }
  return count;
}

class WaitCtx : public ::testing::Test {
 protected:
  void SetUp() override {
    asyncjob_clear_errors();
    cleanup_calls.clear();
  }
};

// Tests that run jobs: no job may be left paused, and the thread's pool is
// released at the end.
class WaitCtxJob : public WaitCtx {
 protected:
  void TearDown() override {
    EXPECT_EQ(JobsInUse(), 0u) << "a job was left paused";
    ASYNC_cleanup_thread();
  }
};

// ===== A new context =====

TEST_F(WaitCtx, NewHasNoFds) {
  CtxPtr ctx = NewCtx();
  size_t n = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx.get(), nullptr, &n), 1);
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(FdOf(ctx.get(), k1), kSentinel);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NewContextsAreDistinctAndIndependent) {
  CtxPtr a = NewCtx();
  CtxPtr b = NewCtx();
  EXPECT_NE(a.get(), b.get());
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(a.get(), k1, 10, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_status(a.get(), ASYNC_STATUS_OK), 1);
  EXPECT_EQ(AllFds(a.get()), Fds{10});
  EXPECT_EQ(AllFds(b.get()), Fds{});
  EXPECT_EQ(FdOf(b.get(), k1), kSentinel);
  EXPECT_EQ(ChangedFds(b.get()).added, Fds{});
  EXPECT_EQ(ASYNC_WAIT_CTX_get_status(b.get()), ASYNC_STATUS_UNSUPPORTED);
}

TEST_F(WaitCtx, NewHasStatusUnsupported) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_STATUS_UNSUPPORTED, 0);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_status(ctx.get()), ASYNC_STATUS_UNSUPPORTED);
  EXPECT_TRUE(NoErrorQueued());
}

int callback_calls = 0;
int CountingCallback(void* arg) {
  ++callback_calls;
  return arg != nullptr ? 1 : 0;
}
int OtherCallback(void*) { return 2; }

TEST_F(WaitCtx, NewHasNoCallbackAndGetLeavesOutputsUntouched) {
  CtxPtr ctx = NewCtx();
  ASYNC_callback_fn callback = &OtherCallback;
  int marker = 0;
  void* arg = &marker;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(ctx.get(), &callback, &arg), 0);
  EXPECT_EQ(callback, &OtherCallback);
  EXPECT_EQ(arg, &marker);
  // Finding no callback is not an error.
  EXPECT_TRUE(NoErrorQueued());
}

// ===== Callback and status =====

TEST_F(WaitCtx, SetCallbackThenGetReturnsCallbackAndArg) {
  CtxPtr ctx = NewCtx();
  callback_calls = 0;
  int data = 5;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_callback(ctx.get(), &CountingCallback, &data), 1);
  ASYNC_callback_fn callback = nullptr;
  void* arg = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(ctx.get(), &callback, &arg), 1);
  EXPECT_EQ(callback, &CountingCallback);
  EXPECT_EQ(arg, &data);
  // The context only stores the callback: it never calls it.
  EXPECT_EQ(callback_calls, 0);
  // Setting again replaces both.
  EXPECT_EQ(ASYNC_WAIT_CTX_set_callback(ctx.get(), &OtherCallback, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(ctx.get(), &callback, &arg), 1);
  EXPECT_EQ(callback, &OtherCallback);
  EXPECT_EQ(arg, nullptr);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, SetNullCallbackRemovesIt) {
  CtxPtr ctx = NewCtx();
  int data = 5;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_callback(ctx.get(), &CountingCallback, &data), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_callback(ctx.get(), nullptr, &data), 1);
  ASYNC_callback_fn callback = &OtherCallback;
  void* arg = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(ctx.get(), &callback, &arg), 0);
  EXPECT_EQ(callback, &OtherCallback);
  EXPECT_EQ(arg, nullptr);
}

TEST_F(WaitCtx, SetStatusThenGetForAllFourValues) {
  CtxPtr ctx = NewCtx();
  for (int status : {ASYNC_STATUS_ERR, ASYNC_STATUS_OK, ASYNC_STATUS_EAGAIN,
                     ASYNC_STATUS_UNSUPPORTED, ASYNC_STATUS_OK}) {
    EXPECT_EQ(ASYNC_WAIT_CTX_set_status(ctx.get(), status), 1);
    EXPECT_EQ(ASYNC_WAIT_CTX_get_status(ctx.get()), status);
  }
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, StatusValuesMatchOpenSsl) {
  EXPECT_EQ(ASYNC_STATUS_UNSUPPORTED, 0);
  EXPECT_EQ(ASYNC_STATUS_ERR, 1);
  EXPECT_EQ(ASYNC_STATUS_OK, 2);
  EXPECT_EQ(ASYNC_STATUS_EAGAIN, 3);
}

// ===== set_wait_fd / get_fd / get_all_fds =====

TEST_F(WaitCtx, SetWaitFdThenGetFdReturnsFdAndCustomData) {
  CtxPtr ctx = NewCtx();
  int data1 = 1;
  int data2 = 2;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, &data1, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k2, 11, &data2, nullptr), 1);
  OSSL_ASYNC_FD fd = kSentinel;
  void* custom = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k1, &fd, &custom), 1);
  EXPECT_EQ(fd, 10);
  EXPECT_EQ(custom, &data1);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k2, &fd, &custom), 1);
  EXPECT_EQ(fd, 11);
  EXPECT_EQ(custom, &data2);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, GetFdAcceptsNullOutParams) {
  CtxPtr ctx = NewCtx();
  int data = 1;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, &data, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k1, nullptr, nullptr), 1);
  OSSL_ASYNC_FD fd = kSentinel;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k1, &fd, nullptr), 1);
  EXPECT_EQ(fd, 10);
  void* custom = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k1, nullptr, &custom), 1);
  EXPECT_EQ(custom, &data);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, GetFdOfUnknownKeyReturnsZeroWithoutError) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  OSSL_ASYNC_FD fd = kSentinel;
  void* custom = &fd;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k2, &fd, &custom), 0);
  EXPECT_EQ(fd, kSentinel);
  EXPECT_EQ(custom, &fd);
  // Nothing stale is left behind for libssl to trip over.
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, GetAllFdsCountOnlyThenFilled) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k2, 11, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k3, 12, nullptr, nullptr), 1);
  std::size_t count = 0;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx.get(), nullptr, &count), 1);
  EXPECT_EQ(count, 3u);
  std::vector<OSSL_ASYNC_FD> fds(count + 1, kSentinel);
  std::size_t filled = 0;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx.get(), fds.data(), &filled), 1);
  EXPECT_EQ(filled, 3u);
  EXPECT_EQ(fds[3], kSentinel);
  fds.resize(3);
  std::sort(fds.begin(), fds.end());
  EXPECT_EQ(fds, (Fds{10, 11, 12}));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, FdZeroIsAccepted) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 0, nullptr, nullptr), 1);
  EXPECT_EQ(FdOf(ctx.get(), k1), 0);
  EXPECT_EQ(AllFds(ctx.get()), Fds{0});
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullKeyIsAnOrdinaryKey) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), nullptr, 10, nullptr, nullptr), 1);
  EXPECT_EQ(FdOf(ctx.get(), nullptr), 10);
  EXPECT_EQ(FdOf(ctx.get(), k1), kSentinel);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), nullptr), 1);
  EXPECT_EQ(AllFds(ctx.get()), Fds{});
}

TEST_F(WaitCtx, ManyFds) {
  CtxPtr ctx = NewCtx();
  constexpr int kCount = 100;
  static char keys[kCount];
  Fds expected;
  for (int i = 0; i < kCount; ++i) {
    EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), &keys[i], 1000 + i, &keys[i], nullptr), 1);
    expected.push_back(1000 + i);
  }
  EXPECT_EQ(AllFds(ctx.get()), expected);
  EXPECT_EQ(ChangedFds(ctx.get()).added, expected);
  // Clear every odd key: added this round, so they simply vanish.
  Fds kept;
  for (int i = 0; i < kCount; ++i) {
    if (i % 2 == 1) {
      EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), &keys[i]), 1);
    } else {
      kept.push_back(1000 + i);
    }
  }
  EXPECT_EQ(AllFds(ctx.get()), kept);
  EXPECT_EQ(ChangedFds(ctx.get()).added, kept);
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  for (int i = 0; i < kCount; ++i) {
    OSSL_ASYNC_FD fd = kSentinel;
    void* custom = nullptr;
    if (i % 2 == 0) {
      EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), &keys[i], &fd, &custom), 1) << i;
      EXPECT_EQ(fd, 1000 + i);
      EXPECT_EQ(custom, &keys[i]);
    } else {
      EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), &keys[i], &fd, &custom), 0) << i;
    }
  }
}

// ===== clear_fd =====

TEST_F(WaitCtx, ClearFdOfUnknownKeyReturnsZeroWithoutError) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k1), 0);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k2), 0);
  EXPECT_EQ(AllFds(ctx.get()), Fds{10});
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, ClearFdTwiceReturnsZeroTheSecondTime) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k1), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k1), 0);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, ClearFdRemovesTheEntry) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k2, 11, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k1), 1);
  EXPECT_EQ(FdOf(ctx.get(), k1), kSentinel);
  EXPECT_EQ(FdOf(ctx.get(), k2), 11);
  EXPECT_EQ(AllFds(ctx.get()), Fds{11});
}

TEST_F(WaitCtx, ClearFdNeverCallsCleanup) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, &RecordCleanup), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k1), 1);
  EXPECT_TRUE(cleanup_calls.empty());
  ctx.reset();
  // Nor does freeing the context call it afterwards.
  EXPECT_TRUE(cleanup_calls.empty());
}

TEST_F(WaitCtx, KeyCanBeSetAgainAfterClear) {
  CtxPtr ctx = NewCtx();
  int data = 3;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, &RecordCleanup), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k1), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 20, &data, &RecordCleanup), 1);
  OSSL_ASYNC_FD fd = kSentinel;
  void* custom = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k1, &fd, &custom), 1);
  EXPECT_EQ(fd, 20);
  EXPECT_EQ(custom, &data);
  EXPECT_EQ(AllFds(ctx.get()), Fds{20});
  ASYNC_WAIT_CTX* raw = ctx.get();
  ctx.reset();
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].ctx, raw);
  EXPECT_EQ(cleanup_calls[0].fd, 20);
  EXPECT_TRUE(NoErrorQueued());
}

// ===== ASYNC_WAIT_CTX_free =====

TEST_F(WaitCtx, FreeCallsCleanupOfEveryFdStillSet) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  int data1 = 1;
  int data3 = 3;
  int data4 = 4;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, k1, 10, &data1, &RecordCleanup), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, k2, 11, nullptr, &RecordCleanup), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, k3, 12, &data3, &RecordCleanup), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, k4, 13, &data4, &RecordCleanup), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx, k2), 1);
  EXPECT_TRUE(cleanup_calls.empty());
  ASYNC_WAIT_CTX_free(ctx);
  ASSERT_EQ(cleanup_calls.size(), 3u);
  std::sort(cleanup_calls.begin(), cleanup_calls.end(),
            [](const CleanupCall& a, const CleanupCall& b) { return a.fd < b.fd; });
  EXPECT_EQ(cleanup_calls[0].ctx, ctx);
  EXPECT_EQ(cleanup_calls[0].key, k1);
  EXPECT_EQ(cleanup_calls[0].fd, 10);
  EXPECT_EQ(cleanup_calls[0].custom_data, &data1);
  EXPECT_EQ(cleanup_calls[1].ctx, ctx);
  EXPECT_EQ(cleanup_calls[1].key, k3);
  EXPECT_EQ(cleanup_calls[1].fd, 12);
  EXPECT_EQ(cleanup_calls[1].custom_data, &data3);
  EXPECT_EQ(cleanup_calls[2].ctx, ctx);
  EXPECT_EQ(cleanup_calls[2].key, k4);
  EXPECT_EQ(cleanup_calls[2].fd, 13);
  EXPECT_EQ(cleanup_calls[2].custom_data, &data4);
  EXPECT_FALSE(Called(k2, 11));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, FreeWithNullCleanupIsAllowed) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, k1, 10, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, k2, 11, nullptr, &RecordCleanup), 1);
  ASYNC_WAIT_CTX_free(ctx);
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].key, k2);
  EXPECT_EQ(cleanup_calls[0].fd, 11);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, FreeOfEmptyContextCallsNothing) {
  ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX_new());
  EXPECT_TRUE(cleanup_calls.empty());
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, FreeNullIsNoOp) {
  ASYNC_WAIT_CTX_free(nullptr);
  EXPECT_TRUE(NoErrorQueued());
}

// ===== Changes made directly on the context, before any job =====

TEST_F(WaitCtx, ChangesBeforeAnyJobAreReported) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 40, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k2, 41, nullptr, nullptr), 1);
  EXPECT_EQ(ChangedFds(ctx.get()).added, (Fds{40, 41}));
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  // Reading the changes does not consume them.
  EXPECT_EQ(ChangedFds(ctx.get()).added, (Fds{40, 41}));
  // Cleared in the same round as it was added: neither added nor deleted.
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx.get(), k2), 1);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{40});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), Fds{40});
}

TEST_F(WaitCtx, ChangedFdsCountOnly) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 40, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k2, 41, nullptr, nullptr), 1);
  std::size_t num_added = 99;
  std::size_t num_deleted = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), nullptr, &num_added, nullptr, &num_deleted),
            1);
  EXPECT_EQ(num_added, 2u);
  EXPECT_EQ(num_deleted, 0u);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, ChangedFdsOnNewContextIsEmpty) {
  CtxPtr ctx = NewCtx();
  std::size_t num_added = 99;
  std::size_t num_deleted = 99;
  OSSL_ASYNC_FD added[2] = {kSentinel, kSentinel};
  OSSL_ASYNC_FD deleted[2] = {kSentinel, kSentinel};
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), added, &num_added, deleted, &num_deleted), 1);
  EXPECT_EQ(num_added, 0u);
  EXPECT_EQ(num_deleted, 0u);
  EXPECT_EQ(added[0], kSentinel);
  EXPECT_EQ(deleted[0], kSentinel);
}

// ===== Argument checks (asyncjob's documented safety behaviour) =====

void TestCleanupNeverCalled(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD, void*) {
  ADD_FAILURE() << "cleanup called with a NULL context";
}

TEST_F(WaitCtx, NullCtxSetWaitFd) {
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(nullptr, k1, 10, nullptr, &TestCleanupNeverCalled), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxGetFd) {
  OSSL_ASYNC_FD fd = kSentinel;
  void* custom = &fd;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(nullptr, k1, &fd, &custom), 0);
  EXPECT_EQ(fd, kSentinel);
  EXPECT_EQ(custom, &fd);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxGetAllFds) {
  std::size_t count = 99;
  OSSL_ASYNC_FD fds[1] = {kSentinel};
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(nullptr, fds, &count), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(nullptr, nullptr, &count), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(fds[0], kSentinel);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxGetChangedFds) {
  std::size_t num_added = 99;
  std::size_t num_deleted = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(nullptr, nullptr, &num_added, nullptr, &num_deleted), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxClearFd) {
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(nullptr, k1), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxSetCallback) {
  EXPECT_EQ(ASYNC_WAIT_CTX_set_callback(nullptr, &CountingCallback, nullptr), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxGetCallback) {
  ASYNC_callback_fn callback = &OtherCallback;
  void* arg = &callback;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(nullptr, &callback, &arg), 0);
  EXPECT_EQ(callback, &OtherCallback);
  EXPECT_EQ(arg, &callback);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxSetStatus) {
  EXPECT_EQ(ASYNC_WAIT_CTX_set_status(nullptr, ASYNC_STATUS_OK), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullCtxGetStatusReturnsErr) {
  EXPECT_EQ(ASYNC_WAIT_CTX_get_status(nullptr), ASYNC_STATUS_ERR);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NegativeFdIsRejected) {
  CtxPtr ctx = NewCtx();
  for (OSSL_ASYNC_FD bad : {OSSL_BAD_ASYNC_FD, -2, INT_MIN}) {
    EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, bad, nullptr, &RecordCleanup), 0) << bad;
    EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_INVALID_ARGUMENT)) << bad;
  }
  EXPECT_TRUE(NoErrorQueued());
  // Nothing was registered: the key is free and nothing is reported.
  EXPECT_EQ(FdOf(ctx.get(), k1), kSentinel);
  EXPECT_EQ(AllFds(ctx.get()), Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  ctx.reset();
  EXPECT_TRUE(cleanup_calls.empty());
}

TEST_F(WaitCtx, DuplicateLiveKeyIsRejected) {
  CtxPtr ctx = NewCtx();
  int data1 = 1;
  int data2 = 2;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, &data1, &RecordCleanup), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 20, &data2, &RecordCleanup), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_DUPLICATE_KEY));
  EXPECT_TRUE(NoErrorQueued());
  // The first registration is untouched.
  OSSL_ASYNC_FD fd = kSentinel;
  void* custom = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx.get(), k1, &fd, &custom), 1);
  EXPECT_EQ(fd, 10);
  EXPECT_EQ(custom, &data1);
  EXPECT_EQ(AllFds(ctx.get()), Fds{10});
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{10});
  ctx.reset();
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].fd, 10);
  EXPECT_EQ(cleanup_calls[0].custom_data, &data1);
}

TEST_F(WaitCtx, SameFdUnderTwoKeysIsAllowed) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k2, 10, nullptr, nullptr), 1);
  EXPECT_EQ(AllFds(ctx.get()), (Fds{10, 10}));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullNumFdsIsRejected) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  OSSL_ASYNC_FD fds[1] = {kSentinel};
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx.get(), fds, nullptr), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx.get(), nullptr, nullptr), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullNumAddFdsIsRejected) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  OSSL_ASYNC_FD added[1] = {kSentinel};
  std::size_t num_deleted = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), added, nullptr, nullptr, &num_deleted), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), nullptr, nullptr, nullptr, &num_deleted), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtx, NullNumDelFdsIsRejected) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 10, nullptr, nullptr), 1);
  std::size_t num_added = 99;
  OSSL_ASYNC_FD deleted[1] = {kSentinel};
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), nullptr, &num_added, deleted, nullptr), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), nullptr, nullptr, nullptr, nullptr), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_PASSED_NULL_PARAMETER));
  EXPECT_TRUE(NoErrorQueued());
}

// ===== Change tracking through real jobs =====

// One job over three rounds, covering every rule of the change tracking:
// fds added in the first round; in the second, an older fd cleared (deleted),
// an fd added and cleared within the round (not reported) and a new one
// added; in the job's last segment an fd set again under a cleared key,
// still reported after ASYNC_FINISH.
TEST_F(WaitCtxJob, WorkedExample) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.result = 42;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 10, nullptr, nullptr), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, 11, nullptr, nullptr), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k3, 12, nullptr, nullptr), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k3), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k4, 13, nullptr, nullptr), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 14, nullptr, nullptr), 1);
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(AllFds(ctx.get()), (Fds{10, 11}));
  EXPECT_EQ(ChangedFds(ctx.get()).added, (Fds{10, 11}));
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});

  ASSERT_EQ(Resume(&job, &ret), ASYNC_PAUSE);
  EXPECT_EQ(AllFds(ctx.get()), (Fds{11, 13}));
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{13});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{10});
  EXPECT_EQ(FdOf(ctx.get(), k1), kSentinel);
  EXPECT_EQ(FdOf(ctx.get(), k2), 11);
  EXPECT_EQ(FdOf(ctx.get(), k3), kSentinel);
  EXPECT_EQ(FdOf(ctx.get(), k4), 13);

  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(ret, 42);
  EXPECT_EQ(AllFds(ctx.get()), (Fds{11, 13, 14}));
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{14});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(FdOf(ctx.get(), k1), 14);
  EXPECT_EQ(FdOf(ctx.get(), k2), 11);
  EXPECT_EQ(FdOf(ctx.get(), k3), kSentinel);
  EXPECT_EQ(FdOf(ctx.get(), k4), 13);
  EXPECT_EQ(script.segments_run, 3u);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtxJob, FdAddedAndClearedInSameRoundIsNotReported) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 20, nullptr, &RecordCleanup), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, 21, nullptr, &RecordCleanup), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k2), 1);
      },
      [](ASYNC_WAIT_CTX*) {},
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), Fds{20});
  EXPECT_EQ(FdOf(ctx.get(), k2), kSentinel);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_TRUE(cleanup_calls.empty());
  ctx.reset();
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].fd, 20);
}

TEST_F(WaitCtxJob, OlderFdClearedIsReportedDeleted) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 30, nullptr, &RecordCleanup), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, 31, nullptr, &RecordCleanup), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
        // Already deleted: a second clear finds nothing.
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 0);
        EXPECT_EQ(FdOf(c, k1), kSentinel);
      },
      [](ASYNC_WAIT_CTX* c) {
        // The deleted entry has been dropped at this resume.
        EXPECT_EQ(ChangedFds(c).deleted, Fds{});
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 0);
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{30});
  EXPECT_EQ(AllFds(ctx.get()), Fds{31});
  EXPECT_EQ(FdOf(ctx.get(), k1), kSentinel);
  EXPECT_EQ(FdOf(ctx.get(), k2), 31);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), Fds{31});
  ctx.reset();
  // The cleared fd's cleanup is not called, at clear nor at free.
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].key, k2);
  EXPECT_EQ(cleanup_calls[0].fd, 31);
  EXPECT_TRUE(NoErrorQueued());
}

// An older entry is cleared and its key set again in the same round: the old
// fd is deleted, the new one added; clearing the new one removes it outright.
TEST_F(WaitCtxJob, OlderKeyClearedThenSetAgainInSameRound) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 30, nullptr, &RecordCleanup), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 32, nullptr, &RecordCleanup), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 33, nullptr, &RecordCleanup), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{32});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{30});
  EXPECT_EQ(AllFds(ctx.get()), Fds{32});
  EXPECT_EQ(FdOf(ctx.get(), k1), 32);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{32});
  EXPECT_EQ(AllFds(ctx.get()), Fds{});
  EXPECT_EQ(FdOf(ctx.get(), k1), kSentinel);
  ctx.reset();
  EXPECT_TRUE(cleanup_calls.empty());
}

TEST_F(WaitCtxJob, DuplicateOfOlderKeyIsRejected) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 30, nullptr, nullptr), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 31, nullptr, nullptr), 0);
        EXPECT_TRUE(PoppedError(ASYNCJOB_R_DUPLICATE_KEY));
        EXPECT_EQ(FdOf(c, k1), 30);
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), Fds{30});
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtxJob, ChangesAreNotResetAtStart) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 50, nullptr, nullptr), 1);
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        // Starting the job did not end the round.
        EXPECT_EQ(ChangedFds(c).added, Fds{50});
      },
      [](ASYNC_WAIT_CTX* c) {
        // Resuming it did.
        EXPECT_EQ(ChangedFds(c).added, Fds{});
        EXPECT_EQ(AllFds(c), Fds{50});
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{50});
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(script.segments_run, 2u);
}

TEST_F(WaitCtxJob, JobThatFinishesWithoutPausingResetsNothing) {
  CtxPtr ctx = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k1, 50, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx.get(), k2, 51, nullptr, nullptr), 1);
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k2), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k3, 52, nullptr, nullptr), 1);
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_FINISH);
  // All of it is one round: 51 was added and cleared in it.
  EXPECT_EQ(ChangedFds(ctx.get()).added, (Fds{50, 52}));
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), (Fds{50, 52}));
}

TEST_F(WaitCtxJob, ChangesInLastSegmentAreReportedAfterFinish) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.result = 9;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 60, nullptr, nullptr), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, 61, nullptr, nullptr), 1);
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{60});
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 9);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{61});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{60});
  EXPECT_EQ(AllFds(ctx.get()), Fds{61});
  // Still reported later: nothing but a resume ends the round.
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{60});
}

TEST_F(WaitCtxJob, ResumeWithoutChangesKeepsFds) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 70, nullptr, nullptr), 1);
      },
      [](ASYNC_WAIT_CTX*) {},
      [](ASYNC_WAIT_CTX*) {},
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{70});
  ASSERT_EQ(Resume(&job, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), Fds{70});
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), Fds{70});
  EXPECT_EQ(FdOf(ctx.get(), k1), 70);
}

// A pause that does not pause (pausing blocked) does not end the round.
TEST_F(WaitCtxJob, BlockedPauseDoesNotResetChanges) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 80, nullptr, nullptr), 1);
        ASYNC_block_pause();
        EXPECT_EQ(ASYNC_pause_job(), 1);
        ASYNC_unblock_pause();
        EXPECT_EQ(ChangedFds(c).added, Fds{80});
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_FINISH);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{80});
}

// Compaction at the end of a round keeps every surviving key with its own fd
// and custom data.
TEST_F(WaitCtxJob, RoundResetKeepsKeysMatchedToTheirFds) {
  constexpr int kCount = 10;
  static char keys[kCount];
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        for (int i = 0; i < kCount; ++i) {
          EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, &keys[i], 100 + i, &keys[i], &RecordCleanup), 1);
        }
      },
      [](ASYNC_WAIT_CTX* c) {
        for (int i = 0; i < kCount; i += 2) {
          EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, &keys[i]), 1);
        }
      },
      [](ASYNC_WAIT_CTX*) {},
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, (Fds{100, 101, 102, 103, 104, 105, 106, 107, 108, 109}));
  ASSERT_EQ(Resume(&job, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx.get()).added, Fds{});
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, (Fds{100, 102, 104, 106, 108}));
  EXPECT_EQ(AllFds(ctx.get()), (Fds{101, 103, 105, 107, 109}));
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ChangedFds(ctx.get()).deleted, Fds{});
  EXPECT_EQ(AllFds(ctx.get()), (Fds{101, 103, 105, 107, 109}));
  for (int i = 0; i < kCount; ++i) {
    OSSL_ASYNC_FD fd = kSentinel;
    void* custom = nullptr;
    const int found = ASYNC_WAIT_CTX_get_fd(ctx.get(), &keys[i], &fd, &custom);
    if (i % 2 == 0) {
      EXPECT_EQ(found, 0) << i;
    } else {
      EXPECT_EQ(found, 1) << i;
      EXPECT_EQ(fd, 100 + i);
      EXPECT_EQ(custom, &keys[i]);
    }
  }
  ASYNC_WAIT_CTX* raw = ctx.get();
  ctx.reset();
  ASSERT_EQ(cleanup_calls.size(), 5u);
  for (const CleanupCall& call : cleanup_calls) {
    EXPECT_EQ(call.ctx, raw);
    EXPECT_EQ(call.fd % 2, 1);
    EXPECT_EQ(call.key, &keys[call.fd - 100]);
    EXPECT_EQ(call.custom_data, &keys[call.fd - 100]);
  }
}

// ===== get_changed_fds with one list NULL =====

TEST_F(WaitCtxJob, ChangedFdsWithOneListNull) {
  CtxPtr ctx = NewCtx();
  Script script;
  script.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 90, nullptr, nullptr), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, 91, nullptr, nullptr), 1);
      },
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k2), 1);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k3, 92, nullptr, nullptr), 1);
      },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  // added {92}, deleted {90, 91}.
  std::size_t num_added = 99;
  std::size_t num_deleted = 99;
  OSSL_ASYNC_FD added[3] = {kSentinel, kSentinel, kSentinel};
  OSSL_ASYNC_FD deleted[4] = {kSentinel, kSentinel, kSentinel, kSentinel};

  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), added, &num_added, nullptr, &num_deleted), 1);
  EXPECT_EQ(num_added, 1u);
  EXPECT_EQ(num_deleted, 2u);
  EXPECT_EQ(added[0], 92);
  EXPECT_EQ(added[1], kSentinel);

  num_added = 99;
  num_deleted = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), nullptr, &num_added, deleted, &num_deleted),
            1);
  EXPECT_EQ(num_added, 1u);
  EXPECT_EQ(num_deleted, 2u);
  EXPECT_EQ(std::min(deleted[0], deleted[1]), 90);
  EXPECT_EQ(std::max(deleted[0], deleted[1]), 91);
  EXPECT_EQ(deleted[2], kSentinel);

  num_added = 99;
  num_deleted = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx.get(), nullptr, &num_added, nullptr, &num_deleted),
            1);
  EXPECT_EQ(num_added, 1u);
  EXPECT_EQ(num_deleted, 2u);
  EXPECT_TRUE(NoErrorQueued());
}

// ===== Jobs and their wait context =====

TEST_F(WaitCtxJob, GetWaitCtxInsideJobReturnsTheStartCtx) {
  CtxPtr ctx = NewCtx();
  ASYNC_WAIT_CTX* raw = ctx.get();
  std::vector<ASYNC_WAIT_CTX*> seen;
  Script script;
  script.segments = {
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, raw, &script, &ret), ASYNC_PAUSE);
  // Outside the job too, through its handle.
  EXPECT_EQ(ASYNC_get_wait_ctx(job), raw);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(seen, (std::vector<ASYNC_WAIT_CTX*>{raw, raw}));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtxJob, ResumeIgnoresCtxArgument) {
  CtxPtr ctx = NewCtx();
  CtxPtr other = NewCtx();
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(other.get(), k4, 99, nullptr, &RecordCleanup), 1);
  ASYNC_WAIT_CTX* raw = ctx.get();
  std::vector<ASYNC_WAIT_CTX*> seen;
  Script script;
  script.segments = {
      [&](ASYNC_WAIT_CTX* c) {
        seen.push_back(c);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 10, nullptr, nullptr), 1);
      },
      [&](ASYNC_WAIT_CTX* c) {
        seen.push_back(c);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, 11, nullptr, nullptr), 1);
      },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, raw, &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret, other.get()), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_get_wait_ctx(job), raw);
  // The job's changes went to its own context, whose round was the one reset.
  EXPECT_EQ(AllFds(raw), (Fds{10, 11}));
  EXPECT_EQ(ChangedFds(raw).added, Fds{11});
  EXPECT_EQ(AllFds(other.get()), Fds{99});
  EXPECT_EQ(ChangedFds(other.get()).added, Fds{99});
  // The job is not attached to the context passed on resume: freeing that
  // one while the job is paused is an ordinary free.
  other.reset();
  EXPECT_TRUE(NoErrorQueued());
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].fd, 99);
  ASSERT_EQ(Resume(&job, &ret, nullptr), ASYNC_FINISH);
  EXPECT_EQ(seen, (std::vector<ASYNC_WAIT_CTX*>{raw, raw, raw}));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtxJob, JobWithNullCtxCanPauseAndResume) {
  std::vector<ASYNC_WAIT_CTX*> seen;
  Script script;
  script.result = 17;
  script.segments = {
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, nullptr, &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_get_wait_ctx(job), nullptr);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 17);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(seen, (std::vector<ASYNC_WAIT_CTX*>{nullptr, nullptr, nullptr}));
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtxJob, CallbackAndStatusAreNeverTouchedByJobs) {
  CtxPtr ctx = NewCtx();
  callback_calls = 0;
  int data = 1;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_callback(ctx.get(), &CountingCallback, &data), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_status(ctx.get(), ASYNC_STATUS_EAGAIN), 1);
  Script script;
  script.segments = {
      [&](ASYNC_WAIT_CTX* c) {
        // Async-aware code sees what the application stored ...
        ASYNC_callback_fn callback = nullptr;
        void* arg = nullptr;
        EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(c, &callback, &arg), 1);
        EXPECT_EQ(callback, &CountingCallback);
        EXPECT_EQ(arg, &data);
        EXPECT_EQ(ASYNC_WAIT_CTX_get_status(c), ASYNC_STATUS_EAGAIN);
        // ... and the application sees what it stores.
        EXPECT_EQ(ASYNC_WAIT_CTX_set_status(c, ASYNC_STATUS_OK), 1);
      },
      [](ASYNC_WAIT_CTX*) {},
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_status(ctx.get()), ASYNC_STATUS_OK);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_status(ctx.get()), ASYNC_STATUS_OK);
  ASYNC_callback_fn callback = nullptr;
  void* arg = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(ctx.get(), &callback, &arg), 1);
  EXPECT_EQ(callback, &CountingCallback);
  EXPECT_EQ(arg, &data);
  EXPECT_EQ(callback_calls, 0);
}

TEST_F(WaitCtxJob, ContextReusedForSecondJobAfterFirstFinished) {
  CtxPtr ctx = NewCtx();
  ASYNC_WAIT_CTX* raw = ctx.get();
  Script first;
  first.result = 1;
  first.segments = {
      [](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 10, nullptr, &RecordCleanup), 1);
      },
      [](ASYNC_WAIT_CTX*) {},
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, raw, &first, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);

  std::vector<ASYNC_WAIT_CTX*> seen;
  Script second;
  second.result = 2;
  second.segments = {
      [&](ASYNC_WAIT_CTX* c) {
        seen.push_back(c);
        // The fds registered by the first job are still there.
        EXPECT_EQ(FdOf(c, k1), 10);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, 11, nullptr, &RecordCleanup), 1);
      },
      [&](ASYNC_WAIT_CTX* c) {
        seen.push_back(c);
        EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k1), 1);
      },
  };
  ASSERT_EQ(StartScript(&job, raw, &second, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_get_wait_ctx(job), raw);
  EXPECT_EQ(ChangedFds(raw).added, Fds{11});
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 2);
  EXPECT_EQ(seen, (std::vector<ASYNC_WAIT_CTX*>{raw, raw}));
  EXPECT_EQ(ChangedFds(raw).added, Fds{});
  EXPECT_EQ(ChangedFds(raw).deleted, Fds{10});
  EXPECT_EQ(AllFds(raw), Fds{11});
  // No job uses the context any more: freeing it is an ordinary free.
  ctx.reset();
  EXPECT_TRUE(NoErrorQueued());
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].ctx, raw);
  EXPECT_EQ(cleanup_calls[0].key, k2);
  EXPECT_EQ(cleanup_calls[0].fd, 11);
}

TEST_F(WaitCtxJob, FreeAfterJobFinishedQueuesNoError) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  Script script;
  script.segments = {[](ASYNC_WAIT_CTX*) {}, [](ASYNC_WAIT_CTX*) {}};
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx, &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(NoErrorQueued());
}

// ===== Freeing a context a paused job still uses =====

// Freeing the context of a paused job orphans the job (docs/teardown.md):
// nobody can legally resume it. Its code registered no cancel hook, so it
// becomes a tombstone: no error is queued, its fds stay open (whatever was
// to complete it may still signal them) and its callback is cleared, until
// one of its fds is signalled; then the cleanup routines run, once.
TEST_F(WaitCtxJob, FreeWhileJobPausedOrphansTheJob) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  int data = 4;
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(fd, 0);
  std::vector<ASYNC_WAIT_CTX*> seen;
  Script script;
  script.result = 5;
  script.segments = {
      [&](ASYNC_WAIT_CTX* c) {
        seen.push_back(c);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, fd, &data, &RecordCleanup), 1);
      },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx, &script, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_callback(ctx, &CountingCallback, &data), 1);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(NoErrorQueued());
  EXPECT_TRUE(cleanup_calls.empty()) << "the fd could still be signalled";
  EXPECT_EQ(JobsInUse(), 0u) << "an orphan leaves its pool's count";
  // Whatever holds the job can still look at it: its detached context
  // answers, without the owner's callback.
  ASYNC_WAIT_CTX* detached = ASYNC_get_wait_ctx(job);
  EXPECT_EQ(detached, ctx);
  ASYNC_callback_fn callback = nullptr;
  void* argument = nullptr;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_callback(detached, &callback, &argument), 0);
  EXPECT_EQ(FdOf(detached, k1), fd);
  // The job never runs again.
  EXPECT_EQ(Resume(&job, &ret), ASYNC_ERR);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_JOB_ORPHANED));
  EXPECT_EQ(asyncjob_cancel_job(&job), 0);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_JOB_ORPHANED));
  // Nothing signalled yet: a check leaves it alone.
  CtxPtr unrelated = NewCtx();
  EXPECT_TRUE(cleanup_calls.empty());
  // Signalled: the next check releases it and runs the cleanup, once.
  const std::uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  CtxPtr another = NewCtx();
  ASSERT_EQ(cleanup_calls.size(), 1u);
  EXPECT_EQ(cleanup_calls[0].ctx, ctx);
  EXPECT_EQ(cleanup_calls[0].key, k1);
  EXPECT_EQ(cleanup_calls[0].fd, fd);
  EXPECT_EQ(cleanup_calls[0].custom_data, &data);
  EXPECT_EQ(seen, (std::vector<ASYNC_WAIT_CTX*>{ctx}));
  close(fd);
  EXPECT_TRUE(NoErrorQueued());
}

TEST_F(WaitCtxJob, FreeFromInsideTheRunningJobDetachesIt) {
  std::vector<ASYNC_WAIT_CTX*> seen;
  Script script;
  script.result = 6;
  script.segments = {
      [&](ASYNC_WAIT_CTX* c) {
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 10, nullptr, &RecordCleanup), 1);
        // A running job is no orphan: it carries on without a context, which
        // is freed at once (freeing is no error).
        ASYNC_WAIT_CTX_free(c);
        EXPECT_TRUE(NoErrorQueued());
        EXPECT_EQ(cleanup_calls.size(), 1u);
        EXPECT_EQ(ASYNC_get_wait_ctx(ASYNC_get_current_job()), nullptr);
      },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
  };
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&job, ctx, &script, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 6);
  EXPECT_EQ(seen, std::vector<ASYNC_WAIT_CTX*>{nullptr});
  EXPECT_TRUE(NoErrorQueued());
}

// A context freed under a paused job must not affect another job started
// afterwards (possibly with a context at the same address, or on a pooled
// job object), and the orphan stays refused.
TEST_F(WaitCtxJob, OrphanedJobDoesNotDisturbLaterJobs) {
  ASYNC_WAIT_CTX* first_ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(first_ctx, nullptr);
  Script first;
  first.result = 1;
  first.segments = {[](ASYNC_WAIT_CTX*) {}, [](ASYNC_WAIT_CTX*) {}};
  ASYNC_JOB* first_job = nullptr;
  int ret = 0;
  ASSERT_EQ(StartScript(&first_job, first_ctx, &first, &ret), ASYNC_PAUSE);
  ASYNC_WAIT_CTX_free(first_ctx);
  EXPECT_TRUE(NoErrorQueued());

  CtxPtr second_ctx = NewCtx();
  std::vector<ASYNC_WAIT_CTX*> seen;
  Script second;
  second.result = 2;
  second.segments = {
      [&](ASYNC_WAIT_CTX* c) {
        seen.push_back(c);
        EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, 10, nullptr, nullptr), 1);
      },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
  };
  ASYNC_JOB* second_job = nullptr;
  ASSERT_EQ(StartScript(&second_job, second_ctx.get(), &second, &ret), ASYNC_PAUSE);
  EXPECT_NE(second_job, first_job) << "an orphan's job object is not reused";
  // Trying to resume the orphan changes nothing for the new job.
  ret = 99;
  EXPECT_EQ(Resume(&first_job, &ret), ASYNC_ERR);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_JOB_ORPHANED));
  EXPECT_EQ(ret, 99);
  EXPECT_EQ(ASYNC_get_wait_ctx(second_job), second_ctx.get());
  EXPECT_EQ(ChangedFds(second_ctx.get()).added, Fds{10});
  ASSERT_EQ(Resume(&second_job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 2);
  EXPECT_EQ(seen, (std::vector<ASYNC_WAIT_CTX*>{second_ctx.get(), second_ctx.get()}));
  second_ctx.reset();
  EXPECT_TRUE(NoErrorQueued());
}

// A start that fails (here: the copy of the job arguments cannot be
// allocated) must leave the context not in use by any job: freeing it later
// is an ordinary free and must not touch whatever job next reuses the pooled
// job object.
TEST_F(WaitCtxJob, FailedStartLeavesContextDetached) {
  ASYNC_WAIT_CTX* failed_ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(failed_ctx, nullptr);
  Script unused;
  Script* unused_ptr = &unused;
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  ASSERT_EQ(ASYNC_start_job(&job, failed_ctx, &ret, &RunScript, &unused_ptr,
                            std::numeric_limits<std::size_t>::max() / 2),
            ASYNC_ERR);
  EXPECT_EQ(job, nullptr);
  EXPECT_EQ(ret, -1);
  EXPECT_EQ(unused.segments_run, 0u);
  EXPECT_TRUE(PoppedError(ASYNCJOB_R_MALLOC_FAILURE));
  EXPECT_EQ(JobsInUse(), 0u);

  // The next job takes the pooled job object the failed start released.
  CtxPtr ctx = NewCtx();
  std::vector<ASYNC_WAIT_CTX*> seen;
  Script script;
  script.result = 3;
  script.segments = {
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
      [&](ASYNC_WAIT_CTX* c) { seen.push_back(c); },
  };
  ASSERT_EQ(StartScript(&job, ctx.get(), &script, &ret), ASYNC_PAUSE);
  ASYNC_WAIT_CTX_free(failed_ctx);
  EXPECT_TRUE(NoErrorQueued()) << "freeing a context no job uses reported it in use";
  EXPECT_EQ(ASYNC_get_wait_ctx(job), ctx.get()) << "freeing another context detached this job";
  ASSERT_EQ(Resume(&job, &ret), ASYNC_FINISH);
  EXPECT_EQ(ret, 3);
  EXPECT_EQ(seen, (std::vector<ASYNC_WAIT_CTX*>{ctx.get(), ctx.get()}));
  asyncjob_clear_errors();
}

// ===== Real fds: the application waits on them, nothing leaks =====

struct PipeEnds {
  int read_end;
  int write_end;
};
int pipe_cleanups = 0;

void ClosePipe(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD read_end, void* custom_data) {
  auto* ends = static_cast<PipeEnds*>(custom_data);
  EXPECT_EQ(ends->read_end, read_end);
  EXPECT_EQ(close(ends->read_end), 0);
  EXPECT_EQ(close(ends->write_end), 0);
  delete ends;
  ++pipe_cleanups;
}

// Like an engine: creates a pipe on first use, kept for the context's life
// and closed by the cleanup routine; waits for it to become readable.
void WaitOnPipe(ASYNC_WAIT_CTX* c) {
  OSSL_ASYNC_FD fd = kSentinel;
  void* custom = nullptr;
  if (ASYNC_WAIT_CTX_get_fd(c, k1, &fd, &custom) == 0) {
    int ends[2];
    ASSERT_EQ(pipe(ends), 0);
    auto* pair = new PipeEnds{ends[0], ends[1]};
    ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k1, ends[0], pair, &ClosePipe), 1);
    fd = ends[0];
  }
  EXPECT_EQ(ASYNC_pause_job(), 1);
  char byte = 0;
  EXPECT_EQ(read(fd, &byte, 1), 1);  // clear the wake signal
  EXPECT_EQ(byte, 'W');
}

// A second, short-lived fd that the job clears and closes itself, since
// clear_fd does not call the cleanup routine.
void UseTemporaryPipe(ASYNC_WAIT_CTX* c) {
  int ends[2];
  ASSERT_EQ(pipe(ends), 0);
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, k2, ends[0], nullptr, &ClosePipe), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(c, k2), 1);
  EXPECT_EQ(close(ends[0]), 0);
  EXPECT_EQ(close(ends[1]), 0);
}

TEST_F(WaitCtxJob, RealPipesAreWaitedOnAndNotLeaked) {
  pipe_cleanups = 0;
  const std::size_t fds_before = OpenFdCount();
  constexpr int kContexts = 20;
  for (int i = 0; i < kContexts; ++i) {
    ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
    ASSERT_NE(ctx, nullptr);
    Script script;
    script.result = i;
    script.segments = {
        [](ASYNC_WAIT_CTX* c) {
          UseTemporaryPipe(c);
          WaitOnPipe(c);
          WaitOnPipe(c);  // the same fd again
        },
    };
    ASYNC_JOB* job = nullptr;
    int ret = -1;
    ASSERT_EQ(StartScript(&job, ctx, &script, &ret), ASYNC_PAUSE);
    for (int wait = 0; wait < 2; ++wait) {
      std::vector<OSSL_ASYNC_FD> fds = AllFds(ctx);
      ASSERT_EQ(fds.size(), 1u);
      if (wait == 0) {
        EXPECT_EQ(ChangedFds(ctx).added, fds);
      } else {
        EXPECT_EQ(ChangedFds(ctx).added, Fds{});
      }
      EXPECT_EQ(ChangedFds(ctx).deleted, Fds{});
      pollfd p{fds[0], POLLIN, 0};
      EXPECT_EQ(poll(&p, 1, 0), 0) << "readable before the wake signal";
      // Wake the job up, as the engine's completion would.
      void* custom = nullptr;
      ASSERT_EQ(ASYNC_WAIT_CTX_get_fd(ctx, k1, nullptr, &custom), 1);
      const char byte = 'W';
      EXPECT_EQ(write(static_cast<PipeEnds*>(custom)->write_end, &byte, 1), 1);
      EXPECT_EQ(poll(&p, 1, 1000), 1);
      EXPECT_TRUE((p.revents & POLLIN) != 0);
      ASSERT_EQ(Resume(&job, &ret), wait == 0 ? ASYNC_PAUSE : ASYNC_FINISH);
    }
    EXPECT_EQ(ret, i);
    EXPECT_EQ(pipe_cleanups, i);
    ASYNC_WAIT_CTX_free(ctx);
    EXPECT_EQ(pipe_cleanups, i + 1);
  }
  EXPECT_EQ(OpenFdCount(), fds_before);
  EXPECT_TRUE(NoErrorQueued());
}

}  // namespace
