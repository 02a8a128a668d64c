#include <gtest/gtest.h>

#include "asyncjob/async.h"

TEST(WaitCtx, NewHasNoFds) {
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  size_t n = 99;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, nullptr, &n), 1);
  EXPECT_EQ(n, 0u);
  ASYNC_WAIT_CTX_free(ctx);
}
