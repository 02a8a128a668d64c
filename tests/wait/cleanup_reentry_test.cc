// Cleanup routines that act on the context being freed: whatever a routine
// does to the context (clearing its own or another entry, setting a new one,
// listing fds), every routine of an fd still set runs exactly once, so that
// no fd is leaked and none is closed twice.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <map>
#include <vector>

#include "asyncjob/async.h"
#include "support/test_support.h"

namespace {

const char kKeys[4] = {};
const void* Key(int i) { return &kKeys[i]; }

std::map<const void*, int> runs;  // cleanup runs per key
std::vector<int> closed_fds;

void CountAndClose(ASYNC_WAIT_CTX*, const void* key, OSSL_ASYNC_FD fd, void*) {
  ++runs[key];
  closed_fds.push_back(fd);
  close(fd);
}

// Clears the entry named by custom_data, then closes its own fd.
void ClearAnotherThenClose(ASYNC_WAIT_CTX* ctx, const void* key, OSSL_ASYNC_FD fd,
                           void* custom_data) {
  ASYNC_WAIT_CTX_clear_fd(ctx, custom_data);
  ASYNC_WAIT_CTX_clear_fd(ctx, key);
  size_t count = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &count), 1);
  CountAndClose(ctx, key, fd, nullptr);
}

// Sets one more fd on the context being freed, then closes its own.
void SetAnotherThenClose(ASYNC_WAIT_CTX* ctx, const void* key, OSSL_ASYNC_FD fd, void*) {
  int extra = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(extra, 0);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, Key(3), extra, nullptr, &CountAndClose), 1);
  CountAndClose(ctx, key, fd, nullptr);
}

class CleanupReentryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runs.clear();
    closed_fds.clear();
    fds_before_ = asyncjob_test::CountOpenFds();
  }
  void TearDown() override { EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before_); }
  std::size_t fds_before_ = 0;
};

TEST_F(CleanupReentryTest, ARoutineClearingAnotherEntryDoesNotSkipOrRepeatAny) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  int fds[3];
  for (int i = 0; i < 3; ++i) {
    fds[i] = eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(fds[i], 0);
  }
  // Key 0's routine clears key 1 (set after it) on the context being freed.
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, Key(0), fds[0], const_cast<void*>(Key(1)),
                                       &ClearAnotherThenClose),
            1);
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, Key(1), fds[1], nullptr, &CountAndClose), 1);
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, Key(2), fds[2], nullptr, &CountAndClose), 1);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(runs[Key(0)], 1);
  EXPECT_EQ(runs[Key(1)], 1);
  EXPECT_EQ(runs[Key(2)], 1);
  EXPECT_EQ(closed_fds.size(), 3u);
  EXPECT_EQ(asyncjob_peek_error(nullptr), 0u);
}

TEST_F(CleanupReentryTest, ARoutineClearingAnEarlierEntryStillLetsItRunOnce) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  int first = eventfd(0, EFD_CLOEXEC);
  int second = eventfd(0, EFD_CLOEXEC);
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, Key(0), first, nullptr, &CountAndClose), 1);
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, Key(1), second, const_cast<void*>(Key(0)),
                                       &ClearAnotherThenClose),
            1);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(runs[Key(0)], 1);
  EXPECT_EQ(runs[Key(1)], 1);
}

TEST_F(CleanupReentryTest, AnFdSetByARoutineDuringTheFreeIsCleanedUpToo) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  int fd = eventfd(0, EFD_CLOEXEC);
  ASSERT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, Key(0), fd, nullptr, &SetAnotherThenClose), 1);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(runs[Key(0)], 1);
  EXPECT_EQ(runs[Key(3)], 1);
  EXPECT_EQ(closed_fds.size(), 2u);
}

}  // namespace
