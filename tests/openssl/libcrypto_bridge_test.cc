// asyncjob with libcrypto in the same process: each job keeps its own
// default OSSL_LIB_CTX as libcrypto's jobs do, and asyncjob's errors also
// appear in libcrypto's error queue.
#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

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
