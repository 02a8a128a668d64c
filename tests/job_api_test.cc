#include <gtest/gtest.h>

#include "asyncjob/async.h"

namespace {
int AddOne(void* arg) { return *static_cast<int*>(arg) + 1; }
}  // namespace

TEST(JobApi, StartToFinish) {
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  int input = 41;
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, &AddOne, &input, sizeof input), ASYNC_FINISH);
  EXPECT_EQ(ret, 42);
  EXPECT_EQ(job, nullptr);
  ASYNC_cleanup_thread();
}
