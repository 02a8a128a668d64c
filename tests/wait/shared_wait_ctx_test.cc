// Several jobs paused at once on one ASYNC_WAIT_CTX, as libcrypto allows
// (the context is a set of fds; its change tracking is the context's, not a
// job's): starting, the fds of all jobs, change rounds, cancelling one of
// them, and freeing the context under all of them.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "asyncjob/async.h"
#include "support/test_support.h"

namespace {

using asyncjob_test::ErrorQueueEmpty;
using asyncjob_test::PopError;

using Fds = std::vector<OSSL_ASYNC_FD>;

// What each job does: sets an eventfd under its own key, pauses, clears it
// after the first resume (closing it itself), pauses again, then returns.
struct FdJob {
  int key_storage = 0;  // its address is the key
  int fd = -1;
  int pauses_left = 2;
  bool set_fd = true;
};

std::vector<int> closed_by_cleanup;

void CloseFdCleanup(ASYNC_WAIT_CTX*, const void*, OSSL_ASYNC_FD fd, void*) {
  closed_by_cleanup.push_back(fd);
  close(fd);
}

int RunFdJob(void* arg) {
  FdJob* self = *static_cast<FdJob**>(arg);
  ASYNC_WAIT_CTX* ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  if (self->set_fd) {
    self->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASYNC_WAIT_CTX_set_wait_fd(ctx, &self->key_storage, self->fd, nullptr, &CloseFdCleanup);
  }
  ASYNC_pause_job();
  if (self->set_fd) {
    ASYNC_WAIT_CTX_clear_fd(ctx, &self->key_storage);
    close(self->fd);
  }
  ASYNC_pause_job();
  return 7;
}

ASYNC_JOB* Start(ASYNC_WAIT_CTX* ctx, FdJob* job) {
  ASYNC_JOB* handle = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(&handle, ctx, &ret, &RunFdJob, &job, sizeof job), ASYNC_PAUSE);
  return handle;
}

int Resume(ASYNC_JOB** handle, int* ret) {
  return ASYNC_start_job(handle, nullptr, ret, nullptr, nullptr, 0);
}

Fds AllFds(ASYNC_WAIT_CTX* ctx) {
  size_t count = 0;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &count), 1);
  Fds fds(count);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, fds.data(), &count), 1);
  std::sort(fds.begin(), fds.end());
  return fds;
}

struct Changes {
  Fds added;
  Fds deleted;
};

Changes ChangedFds(ASYNC_WAIT_CTX* ctx) {
  size_t added = 0;
  size_t deleted = 0;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, nullptr, &added, nullptr, &deleted), 1);
  Changes changes{Fds(added), Fds(deleted)};
  EXPECT_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, changes.added.data(), &added,
                                           changes.deleted.data(), &deleted),
            1);
  std::sort(changes.added.begin(), changes.added.end());
  std::sort(changes.deleted.begin(), changes.deleted.end());
  return changes;
}

Fds SortedFds(std::initializer_list<int> fds) {
  Fds sorted(fds);
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

class SharedWaitCtx : public ::testing::Test {
 protected:
  void SetUp() override {
    asyncjob_clear_errors();
    closed_by_cleanup.clear();
    fds_before_ = asyncjob_test::CountOpenFds();
  }
  void TearDown() override {
    EXPECT_TRUE(ErrorQueueEmpty());
    EXPECT_EQ(asyncjob_test::CountOpenFds(), fds_before_);
    ASYNC_cleanup_thread();
    asyncjob_clear_errors();
  }
  std::size_t fds_before_ = 0;
};

TEST_F(SharedWaitCtx, ThreeJobsPauseOnOneContextAndItListsAllTheirFds) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  FdJob a, b, c;
  ASYNC_JOB* ja = Start(ctx, &a);
  ASYNC_JOB* jb = Start(ctx, &b);
  ASYNC_JOB* jc = Start(ctx, &c);
  ASSERT_NE(ja, nullptr);
  ASSERT_NE(jb, nullptr);
  ASSERT_NE(jc, nullptr);
  EXPECT_EQ(ASYNC_get_wait_ctx(ja), ctx);
  EXPECT_EQ(ASYNC_get_wait_ctx(jb), ctx);
  EXPECT_EQ(ASYNC_get_wait_ctx(jc), ctx);
  EXPECT_EQ(AllFds(ctx), SortedFds({a.fd, b.fd, c.fd}));
  // All three were added in the context's current round.
  EXPECT_EQ(ChangedFds(ctx).added, SortedFds({a.fd, b.fd, c.fd}));
  EXPECT_TRUE(ChangedFds(ctx).deleted.empty());

  // Resuming any one of them ends the context's round (libcrypto tracks
  // changes per context): a clears its fd in the new round.
  int ret = 0;
  const int a_fd = a.fd;
  ASSERT_EQ(Resume(&ja, &ret), ASYNC_PAUSE);
  EXPECT_EQ(AllFds(ctx), SortedFds({b.fd, c.fd}));
  EXPECT_TRUE(ChangedFds(ctx).added.empty());
  EXPECT_EQ(ChangedFds(ctx).deleted, Fds{a_fd});

  // b's resume starts another round: a's deletion is forgotten.
  const int b_fd = b.fd;
  ASSERT_EQ(Resume(&jb, &ret), ASYNC_PAUSE);
  EXPECT_EQ(ChangedFds(ctx).deleted, Fds{b_fd});
  EXPECT_EQ(AllFds(ctx), Fds{c.fd});

  for (ASYNC_JOB** job : {&ja, &jb}) {
    ASSERT_EQ(Resume(job, &ret), ASYNC_FINISH);
    EXPECT_EQ(ret, 7);
  }
  ASSERT_EQ(Resume(&jc, &ret), ASYNC_PAUSE);
  ASSERT_EQ(Resume(&jc, &ret), ASYNC_FINISH);
  EXPECT_TRUE(AllFds(ctx).empty());
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(closed_by_cleanup.empty()) << "each job closed its own fd";
}

TEST_F(SharedWaitCtx, JobsFinishingInAnyOrderLeaveTheOthersAttached) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  constexpr int kJobs = 6;
  FdJob jobs[kJobs];
  ASYNC_JOB* handles[kJobs];
  for (int i = 0; i < kJobs; ++i) {
    jobs[i].set_fd = false;
    handles[i] = Start(ctx, &jobs[i]);
  }
  asyncjob_pool_stats stats{};
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, static_cast<size_t>(kJobs));
  // Finish them middle-out; the others still see the context.
  int ret = 0;
  for (int i : {3, 0, 5, 1, 4, 2}) {
    ASSERT_EQ(Resume(&handles[i], &ret), ASYNC_PAUSE);
    ASSERT_EQ(Resume(&handles[i], &ret), ASYNC_FINISH);
    for (int j = 0; j < kJobs; ++j) {
      if (handles[j] != nullptr) {
        EXPECT_EQ(ASYNC_get_wait_ctx(handles[j]), ctx);
      }
    }
  }
  ASSERT_EQ(asyncjob_get_pool_stats(&stats), 1);
  EXPECT_EQ(stats.in_use, 0u);
  ASYNC_WAIT_CTX_free(ctx);
}

// Which fds of a shared context belong to which job is not known, so
// cancelling one job leaves the context's fds to their owners; cancelling
// the context's only job cleans them up, as before.
TEST_F(SharedWaitCtx, CancellingOneJobLeavesTheOthersFdsAlone) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  FdJob a, b;
  ASYNC_JOB* ja = Start(ctx, &a);
  ASYNC_JOB* jb = Start(ctx, &b);
  ASSERT_EQ(asyncjob_cancel_job(&ja), 1);
  EXPECT_EQ(ja, nullptr);
  EXPECT_TRUE(closed_by_cleanup.empty());
  EXPECT_EQ(AllFds(ctx), SortedFds({a.fd, b.fd}));
  // b is now the only job: cancelling it cleans up every fd of the context.
  ASSERT_EQ(asyncjob_cancel_job(&jb), 1);
  EXPECT_EQ(closed_by_cleanup.size(), 2u);
  EXPECT_TRUE(AllFds(ctx).empty());
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_EQ(closed_by_cleanup.size(), 2u) << "each cleanup ran once";
}

// Freeing a shared context under several paused jobs orphans each of them;
// the context and its fds live until the last one lets go.
TEST_F(SharedWaitCtx, FreeingItUnderSeveralPausedJobsOrphansEachOnce) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  FdJob a, b, c;
  ASYNC_JOB* ja = Start(ctx, &a);
  ASYNC_JOB* jb = Start(ctx, &b);
  ASYNC_JOB* jc = Start(ctx, &c);
  asyncjob_stats before{};
  ASSERT_EQ(asyncjob_get_stats(&before), 1);
  ASYNC_WAIT_CTX_free(ctx);
  EXPECT_TRUE(ErrorQueueEmpty()) << "freeing a context is a legal act";
  asyncjob_stats after{};
  ASSERT_EQ(asyncjob_get_stats(&after), 1);
  EXPECT_EQ(after.orphans - before.orphans, 3u);
  EXPECT_EQ(after.tombstones - before.tombstones, 3u);
  asyncjob_pool_stats pool{};
  ASSERT_EQ(asyncjob_get_pool_stats(&pool), 1);
  EXPECT_EQ(pool.in_use, 0u);
  EXPECT_EQ(pool.tombstones, 3u);
  EXPECT_TRUE(closed_by_cleanup.empty()) << "the fds may still be signalled";
  for (ASYNC_JOB* job : {ja, jb, jc}) EXPECT_EQ(ASYNC_get_wait_ctx(job), ctx);

  // Signalling any fd of the detached context releases every tombstone
  // that holds it; the last one frees it, running each cleanup once.
  const std::uint64_t one = 1;
  ASSERT_EQ(write(b.fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  ASYNC_WAIT_CTX* next = ASYNC_WAIT_CTX_new();  // a check point
  ASSERT_EQ(asyncjob_get_pool_stats(&pool), 1);
  EXPECT_EQ(pool.tombstones, 0u);
  EXPECT_EQ(pool.idle, 3u);
  std::sort(closed_by_cleanup.begin(), closed_by_cleanup.end());
  EXPECT_EQ(Fds(closed_by_cleanup.begin(), closed_by_cleanup.end()), SortedFds({a.fd, b.fd, c.fd}));
  ASSERT_EQ(asyncjob_get_stats(&after), 1);
  EXPECT_EQ(after.tombstones_released - before.tombstones_released, 3u);
  ASYNC_WAIT_CTX_free(next);
}

}  // namespace
