// asyncjob with libcrypto in the same process: each job keeps its own
// default OSSL_LIB_CTX as libcrypto's jobs do, and asyncjob's errors also
// appear in libcrypto's error queue.
#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <cstdint>
#include <string>

#include "asyncjob/async.h"

namespace {

OSSL_LIB_CTX* CurrentDefault() { return OSSL_LIB_CTX_set0_default(nullptr); }

struct LibCtxLog {
  OSSL_LIB_CTX* seen_at_start = nullptr;
  OSSL_LIB_CTX* seen_after_resume = nullptr;
  OSSL_LIB_CTX* set_by_job = nullptr;
};

int SwitchesDefault(void* arg) {
  LibCtxLog* log = *static_cast<LibCtxLog**>(arg);
  log->seen_at_start = CurrentDefault();
  OSSL_LIB_CTX_set0_default(log->set_by_job);
  ASYNC_pause_job();
  log->seen_after_resume = CurrentDefault();
  return 1;
}

}  // namespace

TEST(LibcryptoBridge, IsConnectedWhenLinkedBeforeLibcrypto) {
  asyncjob_stats stats;
  ASSERT_EQ(asyncjob_get_stats(&stats), 1);
  EXPECT_EQ(stats.libcrypto_connected, 1);
}

TEST(LibcryptoBridge, EachJobKeepsItsOwnDefaultLibraryContext) {
  OSSL_LIB_CTX* callers = OSSL_LIB_CTX_new();
  OSSL_LIB_CTX* jobs = OSSL_LIB_CTX_new();
  OSSL_LIB_CTX* later = OSSL_LIB_CTX_new();
  OSSL_LIB_CTX* original = OSSL_LIB_CTX_set0_default(callers);

  LibCtxLog log;
  log.set_by_job = jobs;
  LibCtxLog* pointer = &log;
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, &SwitchesDefault, &pointer, sizeof pointer),
            ASYNC_PAUSE);
  EXPECT_EQ(log.seen_at_start, callers) << "a job starts with its starter's default";
  EXPECT_EQ(CurrentDefault(), callers) << "the caller's default is restored at the pause";
  OSSL_LIB_CTX_set0_default(later);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(log.seen_after_resume, jobs) << "the job's own default is back after a resume";
  EXPECT_EQ(CurrentDefault(), later) << "and the caller's after it finished";

  OSSL_LIB_CTX_set0_default(original);
  OSSL_LIB_CTX_free(callers);
  OSSL_LIB_CTX_free(jobs);
  OSSL_LIB_CTX_free(later);
  ASYNC_cleanup_thread();
}

TEST(LibcryptoBridge, ErrorsAreMirroredIntoLibcryptosQueue) {
  ERR_clear_error();
  asyncjob_clear_errors();
  EXPECT_EQ(ASYNC_init_thread(1, 2), 0);
  const char* data = nullptr;
  int flags = 0;
  unsigned long code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags);
  ASSERT_NE(code, 0u);
  EXPECT_EQ(ERR_GET_LIB(code), ERR_LIB_ASYNC);
  EXPECT_EQ(ERR_GET_REASON(code), ASYNC_R_INVALID_POOL_SIZE);
  ASSERT_NE(data, nullptr);
  EXPECT_NE(std::string(data).find("init_size 2 exceeds max_size 1"), std::string::npos) << data;
  EXPECT_EQ(asyncjob_get_error(nullptr), code) << "the same packed code in both queues";
  EXPECT_EQ(ERR_get_error(), 0u);
}

// Where libcrypto raises no error, asyncjob leaves none in libcrypto's queue
// either (libssl would report it as the failure of the thread's next,
// unrelated operation); its own queue keeps the detailed entry.
TEST(LibcryptoBridge, OnlyErrorsLibcryptoWouldRaiseAreMirrored) {
  ERR_clear_error();
  asyncjob_clear_errors();
  // A refusal libcrypto answers with a bare 0: stacks already exist.
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  auto pause_once = [](void*) -> int {
    ASYNC_pause_job();
    return 3;
  };
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +pause_once, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_set_mem_functions(nullptr, nullptr), 0);
  EXPECT_EQ(ERR_peek_error(), 0u);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)), ASYNCJOB_R_MEM_FUNCTIONS_LOCKED);
  // Lookups that find nothing, and a misuse where libcrypto would crash.
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  OSSL_ASYNC_FD fd = -1;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &fd, &fd, nullptr), 0);
  EXPECT_EQ(ASYNC_WAIT_CTX_clear_fd(ctx, &fd), 0);
  EXPECT_EQ(ASYNC_get_wait_ctx(nullptr), nullptr);
  EXPECT_EQ(ERR_peek_error(), 0u);
  ASYNC_WAIT_CTX_free(ctx);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 3);
  EXPECT_EQ(ERR_peek_error(), 0u);
  asyncjob_clear_errors();
  ASYNC_cleanup_thread();
}

// Arguments too large to copy: libcrypto's malloc of that size fails, and
// its queue gets the allocation failure as libcrypto raises it (its
// allocator's library from 3.2 on, ERR_LIB_ASYNC before); asyncjob's own
// queue says what was wrong with the size.
TEST(LibcryptoBridge, AllocationFailuresAreMirroredAsLibcryptoRaisesThem) {
  ERR_clear_error();
  asyncjob_clear_errors();
  char byte = 1;
  auto never_runs = [](void*) -> int { return 1; };
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +never_runs, &byte, SIZE_MAX), ASYNC_ERR);
  EXPECT_EQ(ret, -1);
  unsigned long code = ERR_get_error();
  ASSERT_NE(code, 0u);
  int library = OpenSSL_version_num() >= 0x30200000UL ? ERR_LIB_CRYPTO : ERR_LIB_ASYNC;
  EXPECT_EQ(ERR_GET_LIB(code), library);
  EXPECT_EQ(ERR_GET_REASON(code), ERR_R_MALLOC_FAILURE);
  EXPECT_EQ(ERR_get_error(), 0u) << "exactly one entry, as libcrypto leaves";
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)),
            ASYNCJOB_R_PASSED_INVALID_ARGUMENT);
  ASYNC_cleanup_thread();
}

// Refusals of acts libcrypto accepts (it leaks instead) stay in asyncjob's
// queue only.
TEST(LibcryptoBridge, RefusalsOfActsLibcryptoAcceptsAreNotMirrored) {
  ERR_clear_error();
  asyncjob_clear_errors();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  auto pause_once = [](void*) -> int {
    ASYNC_pause_job();
    return 5;
  };
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +pause_once, nullptr, 0), ASYNC_PAUSE);
  EXPECT_EQ(ASYNC_init_thread(4, 1), 0);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)), ASYNC_R_FAILED_TO_SET_POOL);
  ASYNC_cleanup_thread();
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)), ASYNCJOB_R_JOBS_OUTSTANDING);
  EXPECT_EQ(ERR_peek_error(), 0u);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 5);
  EXPECT_EQ(ERR_peek_error(), 0u);
  // A key set twice and a negative fd, which libcrypto stores.
  ASYNC_WAIT_CTX* ctx = ASYNC_WAIT_CTX_new();
  ASSERT_NE(ctx, nullptr);
  static const int key = 0;
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, 1000, nullptr, nullptr), 1);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &key, 1001, nullptr, nullptr), 0);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)), ASYNCJOB_R_DUPLICATE_KEY);
  EXPECT_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &ret, -1, nullptr, nullptr), 0);
  EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)),
            ASYNCJOB_R_PASSED_INVALID_ARGUMENT);
  EXPECT_EQ(ERR_peek_error(), 0u);
  ASYNC_WAIT_CTX_free(ctx);
  ASYNC_cleanup_thread();
}

// Misuse where libcrypto crashes: the caller gets its error return and
// asyncjob's queue the reason; libcrypto's queue stays empty.
TEST(LibcryptoBridge, MisuseIsNotMirrored) {
  ERR_clear_error();
  asyncjob_clear_errors();
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  EXPECT_EQ(ASYNC_start_job(nullptr, nullptr, &ret, nullptr, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, nullptr, nullptr, nullptr, 0), ASYNC_ERR);
  EXPECT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_ERR);
  size_t count = 0;
  EXPECT_EQ(ASYNC_WAIT_CTX_get_all_fds(nullptr, nullptr, &count), 0);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_status(nullptr), ASYNC_STATUS_ERR);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(ASYNCJOB_ERR_GET_REASON(asyncjob_get_error(nullptr)),
              ASYNCJOB_R_PASSED_NULL_PARAMETER);
  }
  EXPECT_EQ(ERR_peek_error(), 0u);
  ASYNC_cleanup_thread();
}

// Arguments with a size of 0 reach the job as NULL, as with libcrypto.
TEST(LibcryptoBridge, ArgumentsOfSizeZeroAreNull) {
  char byte = 1;
  auto report = [](void* args) -> int { return args == nullptr ? 1 : 0; };
  ASYNC_JOB* job = nullptr;
  int ret = -1;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +report, &byte, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  ASYNC_cleanup_thread();
}

TEST(LibcryptoBridge, CryptoInsideAJobWorks) {
  auto digest = [](void*) -> int {
    unsigned char out[32];
    unsigned int length = 0;
    ASYNC_pause_job();
    return EVP_Digest("abc", 3, out, &length, EVP_sha256(), nullptr) == 1 && length == 32 &&
                   out[0] == 0xba
               ? 1
               : 0;
  };
  ASYNC_JOB* job = nullptr;
  int ret = 0;
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, +digest, nullptr, 0), ASYNC_PAUSE);
  ASSERT_EQ(ASYNC_start_job(&job, nullptr, &ret, nullptr, nullptr, 0), ASYNC_FINISH);
  EXPECT_EQ(ret, 1);
  ASYNC_cleanup_thread();
}
