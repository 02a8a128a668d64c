// The asyncjob provider through EVP, in a library context that loads it
// beside the default provider: RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256 and
// P-384 signatures made inside a job pause it while a worker signs and
// verify with the default provider; outside a job they run inline.
//
// Built twice from this file: linked with libasyncjob before libcrypto (the
// jobs are asyncjob's, PROVIDER_TEST_ON_ASYNCJOB defined) and with libcrypto
// alone (its own jobs). The provider module is the same file in both.
#include <gtest/gtest.h>
#include <openssl/async.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <poll.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#ifdef PROVIDER_TEST_ON_ASYNCJOB
#include "asyncjob/async.h"
#endif

namespace {

constexpr char kPreferAsyncjob[] = "?provider=asyncjob";
constexpr char kDefaultOnly[] = "provider=default";
constexpr int kWaitMs = 20000;

struct Counters {
  std::uint64_t submitted = 0;
  std::uint64_t paused = 0;
  std::uint64_t inline_runs = 0;
};

// How a signature is made (and checked).
struct Scheme {
  const char* name;
  const char* key;  // "rsa", "p256", "p384"
  const char* digest;
  bool pss = false;
  const char* mgf1_digest = nullptr;  // PSS only; NULL: the message digest
};

void PrintTo(const Scheme& scheme, std::ostream* os) { *os << scheme.name; }

std::string Errors() {
  std::string text;
  unsigned long code;
  while ((code = ERR_get_error()) != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    text += buffer;
    text += '\n';
  }
  return text;
}

class ProviderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    libctx_ = OSSL_LIB_CTX_new();
    ASSERT_NE(libctx_, nullptr);
    ASSERT_EQ(OSSL_PROVIDER_set_default_search_path(libctx_, ASYNCJOB_PROVIDER_DIR), 1);
    asyncjob_ = OSSL_PROVIDER_load(libctx_, "asyncjob");
    ASSERT_NE(asyncjob_, nullptr) << Errors();
    default_ = OSSL_PROVIDER_load(libctx_, "default");
    ASSERT_NE(default_, nullptr) << Errors();
    // Keys of the default provider: libcrypto exports them to the
    // provider's key management when its signature is fetched.
    rsa_ = EVP_PKEY_Q_keygen(libctx_, kDefaultOnly, "RSA", static_cast<size_t>(2048));
    p256_ = EVP_PKEY_Q_keygen(libctx_, kDefaultOnly, "EC", "P-256");
    p384_ = EVP_PKEY_Q_keygen(libctx_, kDefaultOnly, "EC", "P-384");
    ASSERT_TRUE(rsa_ != nullptr && p256_ != nullptr && p384_ != nullptr) << Errors();
  }

  static void TearDownTestSuite() {
    EVP_PKEY_free(rsa_);
    EVP_PKEY_free(p256_);
    EVP_PKEY_free(p384_);
    OSSL_PROVIDER_unload(asyncjob_);
    OSSL_PROVIDER_unload(default_);
    OSSL_LIB_CTX_free(libctx_);
  }

  void SetUp() override { ERR_clear_error(); }

  static EVP_PKEY* Key(const Scheme& scheme) {
    std::string name = scheme.key;
    return name == "rsa" ? rsa_ : name == "p256" ? p256_ : p384_;
  }

  static Counters ReadCounters() {
    Counters c;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_uint64("asyncjob-signatures-submitted", &c.submitted),
        OSSL_PARAM_construct_uint64("asyncjob-jobs-paused", &c.paused),
        OSSL_PARAM_construct_uint64("asyncjob-signatures-inline", &c.inline_runs),
        OSSL_PARAM_construct_end()};
    EXPECT_EQ(OSSL_PROVIDER_get_params(asyncjob_, params), 1);
    return c;
  }

  static bool SetPadding(EVP_PKEY_CTX* pctx, const Scheme& scheme) {
    if (!scheme.pss) return true;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0 &&
           (scheme.mgf1_digest == nullptr ||
            EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, scheme.mgf1_digest, nullptr) > 0);
  }

  struct Signed {
    bool ok = false;
    std::string provider;  // whose signature implementation signed
    std::vector<unsigned char> signature;
  };

  // Digest-sign the way libssl does: EVP_DigestSignInit_ex with a property
  // query that prefers the provider, then parameters on the EVP_PKEY_CTX.
  static Signed Sign(EVP_PKEY* key, const Scheme& scheme, const std::string& message,
                     int pss_saltlen = RSA_PSS_SALTLEN_DIGEST) {
    Signed result;
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    EVP_PKEY_CTX* pctx = nullptr;
    const auto* data = reinterpret_cast<const unsigned char*>(message.data());
    size_t length = 0;
    if (md != nullptr &&
        EVP_DigestSignInit_ex(md, &pctx, scheme.digest, libctx_, kPreferAsyncjob, key, nullptr) ==
            1 &&
        SetPadding(pctx, scheme) &&
        (!scheme.pss || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, pss_saltlen) > 0) &&
        EVP_DigestSign(md, nullptr, &length, data, message.size()) == 1) {
      result.provider = OSSL_PROVIDER_get0_name(EVP_PKEY_CTX_get0_provider(pctx));
      result.signature.resize(length);
      result.ok = EVP_DigestSign(md, result.signature.data(), &length, data, message.size()) == 1;
      result.signature.resize(length);
    }
    EVP_MD_CTX_free(md);
    return result;
  }

  // Checked by the default provider alone.
  static bool Verify(EVP_PKEY* key, const Scheme& scheme, const std::string& message,
                     const std::vector<unsigned char>& signature) {
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    EVP_PKEY_CTX* pctx = nullptr;
    bool ok = md != nullptr &&
              EVP_DigestVerifyInit_ex(md, &pctx, scheme.digest, libctx_, kDefaultOnly, key,
                                      nullptr) == 1 &&
              std::string(OSSL_PROVIDER_get0_name(EVP_PKEY_CTX_get0_provider(pctx))) == "default" &&
              SetPadding(pctx, scheme) &&
              EVP_DigestVerify(md, signature.data(), signature.size(),
                               reinterpret_cast<const unsigned char*>(message.data()),
                               message.size()) == 1;
    EVP_MD_CTX_free(md);
    return ok;
  }

  // A job that signs once; what it saw is left in the Job.
  struct Job {
    Job(EVP_PKEY* key_, Scheme scheme_, std::string message_,
        int pss_saltlen_ = RSA_PSS_SALTLEN_DIGEST)
        : key(key_), scheme(scheme_), message(std::move(message_)), pss_saltlen(pss_saltlen_) {}
    Job(const Job&) = delete;
    Job& operator=(const Job&) = delete;

    EVP_PKEY* key;
    Scheme scheme;
    std::string message;
    int pss_saltlen;
    Signed result;
    bool was_in_job = false;
    unsigned long first_error = 0;  // the oldest error queued in the job, if any
    unsigned long error = 0;        // the newest
    ASYNC_WAIT_CTX* wait_ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB* job = nullptr;
    int pauses = 0;
    bool finished = false;
    int ret = 0;

    ~Job() { ASYNC_WAIT_CTX_free(wait_ctx); }

    static int Run(void* argument) {
      Job* self = *static_cast<Job**>(argument);
      self->was_in_job = ASYNC_get_current_job() != nullptr;
      ERR_clear_error();
      self->result = Sign(self->key, self->scheme, self->message, self->pss_saltlen);
      self->error = ERR_peek_last_error();
      self->first_error = ERR_peek_error();
      return self->result.ok ? 1 : 0;
    }

    // Starts or resumes the job; false on ASYNC_ERR or ASYNC_NO_JOBS.
    bool Step() {
      Job* self = this;
      int status = ASYNC_start_job(&job, wait_ctx, &ret, &Run, &self, sizeof self);
      if (status == ASYNC_PAUSE) {
        ++pauses;
        return true;
      }
      finished = status == ASYNC_FINISH;
      return finished;
    }

    std::vector<int> WaitFds() const {
      size_t count = 0;
      ASYNC_WAIT_CTX_get_all_fds(wait_ctx, nullptr, &count);
      std::vector<int> fds(count);
      if (count > 0) ASYNC_WAIT_CTX_get_all_fds(wait_ctx, fds.data(), &count);
      return fds;
    }
  };

  // Runs jobs to completion, each resumed when its wait fd becomes readable.
  static void RunJobs(std::vector<Job*> jobs) {
    for (Job* job : jobs) ASSERT_TRUE(job->Step()) << Errors();
    for (;;) {
      std::vector<pollfd> polled;
      std::vector<Job*> owners;
      for (Job* job : jobs) {
        if (job->finished) continue;
        std::vector<int> fds = job->WaitFds();
        ASSERT_EQ(fds.size(), 1u) << "the engine registers one eventfd per wait context";
        polled.push_back(pollfd{fds[0], POLLIN, 0});
        owners.push_back(job);
      }
      if (polled.empty()) return;
      ASSERT_GT(poll(polled.data(), polled.size(), kWaitMs), 0) << "no completion in time";
      for (size_t i = 0; i < polled.size(); ++i) {
        if ((polled[i].revents & POLLIN) != 0) {
          ASSERT_TRUE(owners[i]->Step()) << Errors();
        }
      }
    }
  }

  static OSSL_LIB_CTX* libctx_;
  static OSSL_PROVIDER* asyncjob_;
  static OSSL_PROVIDER* default_;
  static EVP_PKEY* rsa_;
  static EVP_PKEY* p256_;
  static EVP_PKEY* p384_;
};

OSSL_LIB_CTX* ProviderTest::libctx_ = nullptr;
OSSL_PROVIDER* ProviderTest::asyncjob_ = nullptr;
OSSL_PROVIDER* ProviderTest::default_ = nullptr;
EVP_PKEY* ProviderTest::rsa_ = nullptr;
EVP_PKEY* ProviderTest::p256_ = nullptr;
EVP_PKEY* ProviderTest::p384_ = nullptr;

const Scheme kSchemes[] = {
    {"RsaPkcs1Sha256", "rsa", "SHA256"},
    {"RsaPkcs1Sha512", "rsa", "SHA512"},
    {"RsaPssSha256", "rsa", "SHA256", true},
    {"RsaPssSha384Mgf1Sha256", "rsa", "SHA384", true, "SHA256"},
    {"EcdsaP256Sha256", "p256", "SHA256"},
    {"EcdsaP384Sha384", "p384", "SHA384"},
};

class SchemeTest : public ProviderTest, public ::testing::WithParamInterface<Scheme> {};

TEST_P(SchemeTest, InsideAJobTheJobPausesWhileAWorkerSigns) {
  const Scheme& scheme = GetParam();
  Counters before = ReadCounters();
#ifdef PROVIDER_TEST_ON_ASYNCJOB
  asyncjob_stats jobs_before{};
  ASSERT_EQ(asyncjob_get_stats(&jobs_before), 1);
#endif
  Job job{Key(scheme), scheme, "a message signed in a job"};
  RunJobs({&job});
  ASSERT_TRUE(job.finished);
  EXPECT_TRUE(job.was_in_job);
  ASSERT_EQ(job.ret, 1) << Errors();
  EXPECT_EQ(job.result.provider, "asyncjob");
  EXPECT_GE(job.pauses, 1);
  EXPECT_TRUE(Verify(Key(scheme), scheme, job.message, job.result.signature)) << Errors();

  Counters after = ReadCounters();
  EXPECT_EQ(after.submitted - before.submitted, 1u);
  EXPECT_GE(after.paused - before.paused, 1u);
  EXPECT_EQ(after.inline_runs, before.inline_runs);
#ifdef PROVIDER_TEST_ON_ASYNCJOB
  asyncjob_stats jobs_after{};
  ASSERT_EQ(asyncjob_get_stats(&jobs_after), 1);
  EXPECT_EQ(jobs_after.pauses - jobs_before.pauses, static_cast<unsigned long long>(job.pauses))
      << "the jobs are asyncjob's";
#endif
}

TEST_P(SchemeTest, OutsideAJobItSignsInline) {
  const Scheme& scheme = GetParam();
  Counters before = ReadCounters();
  Signed result = Sign(Key(scheme), scheme, "a message signed inline");
  ASSERT_TRUE(result.ok) << Errors();
  EXPECT_EQ(result.provider, "asyncjob");
  EXPECT_TRUE(Verify(Key(scheme), scheme, "a message signed inline", result.signature));
  Counters after = ReadCounters();
  EXPECT_EQ(after.inline_runs - before.inline_runs, 1u);
  EXPECT_EQ(after.submitted, before.submitted);
  EXPECT_EQ(after.paused, before.paused);
}

INSTANTIATE_TEST_SUITE_P(Schemes, SchemeTest, ::testing::ValuesIn(kSchemes),
                         [](const ::testing::TestParamInfo<Scheme>& param_info) {
                           return std::string(param_info.param.name);
                         });

TEST_F(ProviderTest, ManyJobsPausedAtOnceAllFinishWithValidSignatures) {
  constexpr int kJobs = 32;
  Counters before = ReadCounters();
  std::vector<std::unique_ptr<Job>> jobs;
  std::vector<Job*> pointers;
  for (int i = 0; i < kJobs; ++i) {
    const Scheme& scheme = kSchemes[static_cast<size_t>(i) % std::size(kSchemes)];
    jobs.push_back(std::make_unique<Job>(Key(scheme), scheme, "message " + std::to_string(i)));
    pointers.push_back(jobs.back().get());
  }
  RunJobs(pointers);
  for (const auto& job : jobs) {
    ASSERT_EQ(job->ret, 1) << job->scheme.name << "\n" << Errors();
    EXPECT_TRUE(Verify(job->key, job->scheme, job->message, job->result.signature))
        << job->scheme.name;
  }
  Counters after = ReadCounters();
  EXPECT_EQ(after.submitted - before.submitted, static_cast<std::uint64_t>(kJobs));
  EXPECT_EQ(after.inline_runs, before.inline_runs);
}

// The application's callback instead of an fd (SSL_set_async_callback):
// called from the worker when the signature is ready.
TEST_F(ProviderTest, WithACallbackTheWorkerCallsIt) {
  struct Wakeup {
    std::atomic<int> calls{0};
    static int Call(void* self) {
      static_cast<Wakeup*>(self)->calls.fetch_add(1);
      return 1;
    }
  } wakeup;
  const Scheme& scheme = kSchemes[4];
  Job job{Key(scheme), scheme, "called back"};
  ASSERT_EQ(ASYNC_WAIT_CTX_set_callback(job.wait_ctx, &Wakeup::Call, &wakeup), 1);
  ASSERT_TRUE(job.Step());
  ASSERT_FALSE(job.finished);
  EXPECT_EQ(ASYNC_WAIT_CTX_get_status(job.wait_ctx), ASYNC_STATUS_OK);
  EXPECT_TRUE(job.WaitFds().empty()) << "no fd when the application gave a callback";
  for (int i = 0; i < kWaitMs && wakeup.calls.load() == 0; ++i) {
    poll(nullptr, 0, 1);
  }
  ASSERT_EQ(wakeup.calls.load(), 1);
  while (!job.finished) ASSERT_TRUE(job.Step());
  ASSERT_EQ(job.ret, 1) << Errors();
  EXPECT_TRUE(Verify(job.key, scheme, job.message, job.result.signature));
}

// An error raised on the worker thread reaches the job's error queue.
TEST_F(ProviderTest, AFailureOnTheWorkerIsReportedInTheJob) {
  const Scheme& scheme = kSchemes[2];  // RSA-PSS
  Counters before = ReadCounters();
  // A salt longer than a 2048-bit modulus can hold: accepted as a
  // parameter, refused when signing.
  Job job{Key(scheme), scheme, "too much salt", 400};
  RunJobs({&job});
  ASSERT_TRUE(job.finished);
  EXPECT_EQ(job.ret, 0);
  // Raised by the default provider's RSA code on the worker thread.
  EXPECT_EQ(ERR_GET_LIB(job.first_error), ERR_LIB_RSA)
      << "the worker's errors were not carried back";
  EXPECT_EQ(ERR_GET_REASON(job.first_error), RSA_R_DATA_TOO_LARGE_FOR_KEY_SIZE);
  EXPECT_EQ(ERR_GET_LIB(job.error), ERR_LIB_PROV);
  EXPECT_EQ(ReadCounters().submitted - before.submitted, 1u);
  ERR_clear_error();
}

// What a digest-sign context answers after libssl's settings, with the
// given property query.
struct ContextAnswers {
  std::string provider;
  bool settable_complete = false;  // pad mode, salt length, MGF1 digest
  bool algorithm_id_gettable = false;
  int padding = 0;
  int saltlen = 0;
  std::string mgf1;
  bool digest_changeable = false;

  bool operator==(const ContextAnswers&) const = default;
};

void PrintTo(const ContextAnswers& a, std::ostream* os) {
  *os << a.provider << ": settable " << a.settable_complete << ", algorithm-id "
      << a.algorithm_id_gettable << ", padding " << a.padding << ", saltlen " << a.saltlen
      << ", mgf1 " << a.mgf1 << ", digest changeable " << a.digest_changeable;
}

TEST_F(ProviderTest, SignatureContextsAnswerLibsslsParametersAsTheDefaultProviderDoes) {
  auto answers = [](const char* propq) {
    ContextAnswers a;
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    EVP_PKEY_CTX* pctx = nullptr;
    EXPECT_EQ(EVP_DigestSignInit_ex(md, &pctx, "SHA256", libctx_, propq, rsa_, nullptr), 1);
    if (pctx == nullptr) return a;
    a.provider = OSSL_PROVIDER_get0_name(EVP_PKEY_CTX_get0_provider(pctx));
    const OSSL_PARAM* settable = EVP_PKEY_CTX_settable_params(pctx);
    a.settable_complete =
        OSSL_PARAM_locate_const(settable, OSSL_SIGNATURE_PARAM_PAD_MODE) != nullptr &&
        OSSL_PARAM_locate_const(settable, OSSL_SIGNATURE_PARAM_PSS_SALTLEN) != nullptr &&
        OSSL_PARAM_locate_const(settable, OSSL_SIGNATURE_PARAM_MGF1_DIGEST) != nullptr;
    a.algorithm_id_gettable = OSSL_PARAM_locate_const(EVP_PKEY_CTX_gettable_params(pctx),
                                                      OSSL_SIGNATURE_PARAM_ALGORITHM_ID) != nullptr;
    EXPECT_GT(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 0);
    EXPECT_GT(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32), 0);
    EXPECT_GT(EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA384", nullptr), 0);
    EXPECT_GT(EVP_PKEY_CTX_get_rsa_padding(pctx, &a.padding), 0);
    EXPECT_GT(EVP_PKEY_CTX_get_rsa_pss_saltlen(pctx, &a.saltlen), 0);
    char mgf1[32] = "";
    EXPECT_GT(EVP_PKEY_CTX_get_rsa_mgf1_md_name(pctx, mgf1, sizeof mgf1), 0);
    a.mgf1 = mgf1;
    a.digest_changeable = EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha512()) > 0;
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    return a;
  };
  ContextAnswers ours = answers(kPreferAsyncjob);
  ContextAnswers theirs = answers(kDefaultOnly);
  EXPECT_EQ(ours.provider, "asyncjob");
  EXPECT_EQ(theirs.provider, "default");
  theirs.provider = ours.provider;
  EXPECT_EQ(ours, theirs);
  EXPECT_TRUE(ours.settable_complete);
  EXPECT_TRUE(ours.algorithm_id_gettable);
  EXPECT_EQ(ours.padding, RSA_PKCS1_PSS_PADDING);
  EXPECT_EQ(ours.saltlen, 32);
}

// A key of the provider's own key management (generated through it):
// parameters, export to the default provider, comparison, and signing.
TEST_F(ProviderTest, KeysOfItsOwnKeyManagementBehaveLikeDefaultKeys) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(libctx_, kPreferAsyncjob, "EC", "P-384");
  ASSERT_NE(key, nullptr) << Errors();
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(key)), "asyncjob");
  EXPECT_TRUE(EVP_PKEY_is_a(key, "EC"));
  EXPECT_EQ(EVP_PKEY_get_bits(key), 384);
  EXPECT_EQ(EVP_PKEY_get_security_bits(key), 192);
  EXPECT_EQ(EVP_PKEY_get_size(key), EVP_PKEY_get_size(p384_));
  char group[32] = "";
  EXPECT_EQ(EVP_PKEY_get_group_name(key, group, sizeof group, nullptr), 1);
  EXPECT_STREQ(group, "secp384r1");

  // Written out (exported to the default provider's encoder) and read back
  // by the default provider: the same key.
  BIO* pem = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PrivateKey(pem, key, nullptr, nullptr, 0, nullptr, nullptr), 1)
      << Errors();
  EVP_PKEY* copy =
      PEM_read_bio_PrivateKey_ex(pem, nullptr, nullptr, nullptr, libctx_, kDefaultOnly);
  BIO_free(pem);
  ASSERT_NE(copy, nullptr) << Errors();
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(copy)), "default");
  EXPECT_EQ(EVP_PKEY_eq(key, copy), 1);
  EVP_PKEY* other = EVP_PKEY_Q_keygen(libctx_, kPreferAsyncjob, "EC", "P-384");
  EXPECT_NE(EVP_PKEY_eq(key, other), 1);
  EXPECT_EQ(EVP_PKEY_parameters_eq(key, other), 1);

  const Scheme scheme{"own", "p384", "SHA384"};
  Job job{key, scheme, "signed with the provider's own key"};
  RunJobs({&job});
  ASSERT_EQ(job.ret, 1) << Errors();
  EXPECT_TRUE(Verify(copy, scheme, job.message, job.result.signature));

  EVP_PKEY_free(other);
  EVP_PKEY_free(copy);
  EVP_PKEY_free(key);
}

// ECDHE the way libssl does it with a query that prefers the provider: its
// key share generated by the provider's EC key management, the peer's share
// set as an encoded point on a key made from the group alone, and the
// secret derived by the default provider's ECDH (the keys exported to it).
TEST_F(ProviderTest, EcdheKeysOfItsKeyManagementDeriveTheSameSecret) {
  auto derive = [](EVP_PKEY* own, EVP_PKEY* peer) {
    std::vector<unsigned char> secret;
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(libctx_, own, kPreferAsyncjob);
    size_t length = 0;
    if (ctx != nullptr && EVP_PKEY_derive_init(ctx) == 1 &&
        EVP_PKEY_derive_set_peer(ctx, peer) == 1 && EVP_PKEY_derive(ctx, nullptr, &length) == 1) {
      secret.resize(length);
      if (EVP_PKEY_derive(ctx, secret.data(), &length) != 1) secret.clear();
    }
    EVP_PKEY_CTX_free(ctx);
    return secret;
  };
  EVP_PKEY* server = EVP_PKEY_Q_keygen(libctx_, kPreferAsyncjob, "EC", "P-256");
  EVP_PKEY* client = EVP_PKEY_Q_keygen(libctx_, kDefaultOnly, "EC", "P-256");
  ASSERT_TRUE(server != nullptr && client != nullptr) << Errors();
  ASSERT_STREQ(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(server)), "asyncjob");

  // The client's share as the server receives it: a point on the group.
  unsigned char* point = nullptr;
  size_t point_length = EVP_PKEY_get1_encoded_public_key(client, &point);
  ASSERT_GT(point_length, 0u);
  EVP_PKEY_CTX* paramgen = EVP_PKEY_CTX_new_from_name(libctx_, "EC", kPreferAsyncjob);
  EVP_PKEY* share = nullptr;
  ASSERT_EQ(EVP_PKEY_paramgen_init(paramgen), 1) << Errors();
  ASSERT_GT(EVP_PKEY_CTX_set_group_name(paramgen, "P-256"), 0);
  ASSERT_EQ(EVP_PKEY_paramgen(paramgen, &share), 1) << Errors();
  EVP_PKEY_CTX_free(paramgen);
  ASSERT_STREQ(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(share)), "asyncjob");
  EXPECT_EQ(EVP_PKEY_set1_encoded_public_key(share, point, point_length), 1) << Errors();
  OPENSSL_free(point);

  std::vector<unsigned char> server_secret = derive(server, share);
  std::vector<unsigned char> client_secret = derive(client, server);
  ASSERT_FALSE(server_secret.empty()) << Errors();
  EXPECT_EQ(server_secret, client_secret);

  EVP_PKEY_free(share);
  EVP_PKEY_free(client);
  EVP_PKEY_free(server);
}

TEST_F(ProviderTest, ProviderParametersNameItAndCountItsWorkers) {
  const char* name = nullptr;
  int workers = 0;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_ptr(OSSL_PROV_PARAM_NAME, const_cast<char**>(&name), 0),
      OSSL_PARAM_construct_int("asyncjob-workers", &workers), OSSL_PARAM_construct_end()};
  ASSERT_EQ(OSSL_PROVIDER_get_params(asyncjob_, params), 1);
  EXPECT_STREQ(name, "asyncjob provider");
  EXPECT_GE(workers, 1);
}

TEST_F(ProviderTest, ProviderParametersGiveTheCompletionBatchWindowAndItsCount) {
  int window = -1;
  std::uint64_t batched = ~std::uint64_t{0};
  OSSL_PARAM params[] = {OSSL_PARAM_construct_int("asyncjob-completion-batch-us", &window),
                         OSSL_PARAM_construct_uint64("asyncjob-wakeups-batched", &batched),
                         OSSL_PARAM_construct_end()};
  ASSERT_EQ(OSSL_PROVIDER_get_params(asyncjob_, params), 1);
  // The default, unless the environment of the test run sets another.
  const char* configured = std::getenv("ASYNCJOB_PROVIDER_COMPLETION_BATCH_US");
  EXPECT_EQ(window, configured != nullptr ? std::atoi(configured) : 250);
  EXPECT_NE(batched, ~std::uint64_t{0}) << "answered";
  // Every parameter asked for is one the provider says it has.
  const OSSL_PARAM* gettable = OSSL_PROVIDER_gettable_params(asyncjob_);
  EXPECT_NE(OSSL_PARAM_locate_const(gettable, "asyncjob-completion-batch-us"), nullptr);
  EXPECT_NE(OSSL_PARAM_locate_const(gettable, "asyncjob-wakeups-batched"), nullptr);
}

}  // namespace
