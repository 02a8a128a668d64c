// The provider's entry point, its parameters and its algorithm tables.
#include "provider/provider.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/prov_ssl.h>
#include <openssl/proverr.h>
#include <openssl/provider.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <exception>
#include <mutex>
#include <new>
#include <system_error>
#include <vector>

namespace asyncjob::provider {

const char* KeyTypeName(KeyType type) { return type == KeyType::kRsa ? "RSA" : "EC"; }

void ErrorTransfer::TakeFromThisThread() {
  const char* file = nullptr;
  const char* function = nullptr;
  const char* data = nullptr;
  int line = 0;
  int flags = 0;
  unsigned long code;
  while ((code = ERR_get_error_all(&file, &line, &function, &data, &flags)) != 0) {
    bool has_text = (flags & ERR_TXT_STRING) != 0 && data != nullptr;
    entries_.push_back({code, file, line, function, has_text ? data : ""});
  }
}

void ErrorTransfer::RaiseOnThisThread() const {
  for (const Entry& entry : entries_) {
    ERR_new();
    ERR_set_debug(entry.file, entry.line, entry.function);
    if (entry.data.empty()) {
      ERR_set_error(ERR_GET_LIB(entry.code), ERR_GET_REASON(entry.code), nullptr);
    } else {
      ERR_set_error(ERR_GET_LIB(entry.code), ERR_GET_REASON(entry.code), "%s", entry.data.c_str());
    }
  }
}

namespace {

constexpr int kDefaultWorkers = 2;
constexpr int kMaxWorkers = 256;
// How long a signature's wake-up may wait to go out with others
// (offload::Options::completion_batch_window): a quarter of a millisecond,
// about a dozen P-256 signatures on one worker, less than one RSA-2048
// signature (whose wake-ups are then never held).
constexpr long kDefaultCompletionBatchMicroseconds = 250;
constexpr long kMaxCompletionBatchMicroseconds = 1000000;

// A numeric setting: `name` from the provider's configuration section, else
// the environment variable `variable`, else `fallback`. Returns -1 for text
// that is not a number from `min` to `max`.
long ConfiguredNumber(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in, const char* name,
                      const char* variable, long min, long max, long fallback) {
  OSSL_FUNC_core_get_params_fn* core_get_params = nullptr;
  for (; in != nullptr && in->function_id != 0; ++in) {
    if (in->function_id == OSSL_FUNC_CORE_GET_PARAMS)
      core_get_params = OSSL_FUNC_core_get_params(in);
  }
  const char* text = nullptr;
  if (core_get_params != nullptr) {
    char* configured = nullptr;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_ptr(name, &configured, 0),
                           OSSL_PARAM_construct_end()};
    if (core_get_params(handle, params) == 1) text = configured;
  }
  if (text == nullptr) text = std::getenv(variable);
  if (text == nullptr) return fallback;
  char* end = nullptr;
  errno = 0;
  long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno == ERANGE || value < min || value > max) return -1;
  return value;
}

}  // namespace

Provider::Provider(int workers, std::chrono::microseconds completion_batch_window)
    : workers_(workers),
      completion_batch_window_(completion_batch_window),
      engine_(std::make_unique<offload::Engine>(
          offload::Options{.workers = workers,
                           .queue_capacity = 1024,
                           .completion_batch_window = completion_batch_window})) {}

Provider* Provider::Create(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in) {
  long workers = ConfiguredNumber(handle, in, "workers", "ASYNCJOB_PROVIDER_WORKERS", 1,
                                  kMaxWorkers, kDefaultWorkers);
  if (workers < 0) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_CONFIG_DATA,
                   "asyncjob: workers must be a number from 1 to %d", kMaxWorkers);
    return nullptr;
  }
  long batch =
      ConfiguredNumber(handle, in, "completion_batch_us", "ASYNCJOB_PROVIDER_COMPLETION_BATCH_US",
                       0, kMaxCompletionBatchMicroseconds, kDefaultCompletionBatchMicroseconds);
  if (batch < 0) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_CONFIG_DATA,
                   "asyncjob: completion_batch_us must be a number from 0 to %ld",
                   kMaxCompletionBatchMicroseconds);
    return nullptr;
  }
  // The engine's constructor throws when its workers cannot start (see
  // offload.hpp); nothing may leave OSSL_provider_init but a return value.
  std::unique_ptr<Provider> provider;
  try {
    provider.reset(new Provider(static_cast<int>(workers), std::chrono::microseconds(batch)));
  } catch (const std::system_error& error) {
    ERR_raise_data(ERR_LIB_PROV, ERR_R_INIT_FAIL, "asyncjob: could not start %d worker threads: %s",
                   workers, error.what());
    return nullptr;
  } catch (const std::exception& error) {
    ERR_raise_data(ERR_LIB_PROV, ERR_R_MALLOC_FAILURE, "asyncjob: %s", error.what());
    return nullptr;
  }
  if (!provider->LoadInnerContext()) return nullptr;
  return provider.release();
}

bool Provider::LoadInnerContext() {
  libctx_ = OSSL_LIB_CTX_new();
  if (libctx_ == nullptr) return false;
  default_provider_ = OSSL_PROVIDER_load(libctx_, "default");
  if (default_provider_ == nullptr) return false;
  keymgmt_[static_cast<int>(KeyType::kRsa)] = EVP_KEYMGMT_fetch(libctx_, "RSA", nullptr);
  keymgmt_[static_cast<int>(KeyType::kEc)] = EVP_KEYMGMT_fetch(libctx_, "EC", nullptr);
  signature_[static_cast<int>(KeyType::kRsa)] = EVP_SIGNATURE_fetch(libctx_, "RSA", nullptr);
  signature_[static_cast<int>(KeyType::kEc)] = EVP_SIGNATURE_fetch(libctx_, "ECDSA", nullptr);
  for (int i = 0; i < kKeyTypes; ++i) {
    if (keymgmt_[i] == nullptr || signature_[i] == nullptr) return false;
  }
  return true;
}

Provider::~Provider() {
  // Workers first: they may hold per-thread state of the inner context.
  engine_.reset();
  for (int i = 0; i < kKeyTypes; ++i) {
    EVP_KEYMGMT_free(keymgmt_[i]);
    EVP_SIGNATURE_free(signature_[i]);
  }
  if (default_provider_ != nullptr) OSSL_PROVIDER_unload(default_provider_);
  OSSL_LIB_CTX_free(libctx_);
}

Provider::Counters Provider::counters() const {
  offload::Counters engine = engine_->counters();
  // Each submission pauses the job until its task is done; a full queue or
  // an early resume costs one more pause each.
  return Counters{engine.submitted,
                  engine.submitted + engine.eagain_retries + engine.spurious_resumes,
                  engine.inline_runs, engine.batched_wakeups};
}

namespace {

// ----- Provider parameters -----

// Counters readable with OSSL_PROVIDER_get_params().
constexpr char kParamSubmitted[] = "asyncjob-signatures-submitted";
constexpr char kParamPaused[] = "asyncjob-jobs-paused";
constexpr char kParamInline[] = "asyncjob-signatures-inline";
constexpr char kParamWorkers[] = "asyncjob-workers";
constexpr char kParamCompletionBatch[] = "asyncjob-completion-batch-us";
constexpr char kParamBatchedWakeups[] = "asyncjob-wakeups-batched";

const OSSL_PARAM kGettableParams[] = {OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, nullptr, 0),
                                      OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, nullptr, 0),
                                      OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_BUILDINFO, nullptr, 0),
                                      OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, nullptr),
                                      OSSL_PARAM_uint64(kParamSubmitted, nullptr),
                                      OSSL_PARAM_uint64(kParamPaused, nullptr),
                                      OSSL_PARAM_uint64(kParamInline, nullptr),
                                      OSSL_PARAM_int(kParamWorkers, nullptr),
                                      OSSL_PARAM_int(kParamCompletionBatch, nullptr),
                                      OSSL_PARAM_uint64(kParamBatchedWakeups, nullptr),
                                      OSSL_PARAM_END};

const OSSL_PARAM* GettableParams(void*) { return kGettableParams; }

int GetParams(void* provctx, OSSL_PARAM params[]) {
  auto* provider = static_cast<Provider*>(provctx);
  Provider::Counters counters = provider->counters();
  // Sets the parameter called name, if asked for, with set(p, value).
  auto answer = [params](const char* name, auto set, auto value) {
    OSSL_PARAM* p = OSSL_PARAM_locate(params, name);
    return p == nullptr || set(p, value) == 1;
  };
  return answer(OSSL_PROV_PARAM_NAME, &OSSL_PARAM_set_utf8_ptr, "asyncjob provider") &&
         answer(OSSL_PROV_PARAM_VERSION, &OSSL_PARAM_set_utf8_ptr, ASYNCJOB_PROVIDER_VERSION) &&
         answer(OSSL_PROV_PARAM_BUILDINFO, &OSSL_PARAM_set_utf8_ptr,
                "asyncjob " ASYNCJOB_PROVIDER_VERSION " built with " OPENSSL_VERSION_TEXT) &&
         answer(OSSL_PROV_PARAM_STATUS, &OSSL_PARAM_set_int, 1) &&
         answer(kParamSubmitted, &OSSL_PARAM_set_uint64, counters.submitted) &&
         answer(kParamPaused, &OSSL_PARAM_set_uint64, counters.paused) &&
         answer(kParamInline, &OSSL_PARAM_set_uint64, counters.inline_runs) &&
         answer(kParamWorkers, &OSSL_PARAM_set_int, provider->workers()) &&
         answer(kParamCompletionBatch, &OSSL_PARAM_set_int,
                static_cast<int>(provider->completion_batch_window().count())) &&
         answer(kParamBatchedWakeups, &OSSL_PARAM_set_uint64, counters.batched_wakeups);
}

// ----- Algorithms -----

constexpr char kProperties[] = "provider=asyncjob";
constexpr char kRsaNames[] = "RSA:rsaEncryption:1.2.840.113549.1.1.1";
constexpr char kEcNames[] = "EC:id-ecPublicKey:1.2.840.10045.2.1";

const OSSL_ALGORITHM kKeymgmtAlgorithms[] = {
    {kRsaNames, kProperties, kRsaKeymgmtFunctions, "RSA keys held for asyncjob signing"},
    {kEcNames, kProperties, kEcKeymgmtFunctions, "EC keys held for asyncjob signing"},
    {nullptr, nullptr, nullptr, nullptr}};

const OSSL_ALGORITHM kSignatureAlgorithms[] = {
    {kRsaNames, kProperties, kRsaSignatureFunctions,
     "RSA PKCS#1 v1.5 and PSS signing on asyncjob's offload engine"},
    {"ECDSA", kProperties, kEcdsaSignatureFunctions, "ECDSA signing on asyncjob's offload engine"},
    {nullptr, nullptr, nullptr, nullptr}};

const OSSL_ALGORITHM* QueryOperation(void*, int operation_id, int* no_cache) {
  *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT:
      return kKeymgmtAlgorithms;
    case OSSL_OP_SIGNATURE:
      return kSignatureAlgorithms;
    default:
      return nullptr;
  }
}

// ----- TLS groups -----
//
// libssl keeps a group offered by a provider only when its property query
// fetches the group's key management from that same provider. With a query
// that prefers asyncjob, "EC" resolves here, so the default provider's
// NIST curves would be dropped (and with them ECDHE on those curves and,
// in TLS 1.2, every ECDSA certificate). The provider therefore offers them
// itself; their keys are generated and used by the default provider through
// this provider's EC key management.
struct TlsGroup {
  const char* name;           // the TLS name
  const char* internal_name;  // the EC group name
  unsigned int id;            // the TLS NamedGroup code point
  unsigned int security_bits;
};

constexpr TlsGroup kTlsGroups[] = {
    {"secp256r1", "prime256v1", 23, 128},
    {"secp384r1", "secp384r1", 24, 192},
    {"secp521r1", "secp521r1", 25, 256},
};

int GetCapabilities(void*, const char* capability, OSSL_CALLBACK* callback, void* argument) {
  if (std::strcmp(capability, "TLS-GROUP") != 0) return 0;
  for (const TlsGroup& group : kTlsGroups) {
    unsigned int id = group.id;
    unsigned int security_bits = group.security_bits;
    unsigned int is_kem = 0;
    int min_tls = TLS1_VERSION;
    int max_tls = 0;  // no maximum
    int min_dtls = DTLS1_VERSION;
    int max_dtls = 0;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME,
                                         const_cast<char*>(group.name), 0),
        OSSL_PARAM_construct_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME_INTERNAL,
                                         const_cast<char*>(group.internal_name), 0),
        OSSL_PARAM_construct_utf8_string(OSSL_CAPABILITY_TLS_GROUP_ALG, const_cast<char*>("EC"), 0),
        OSSL_PARAM_construct_uint(OSSL_CAPABILITY_TLS_GROUP_ID, &id),
        OSSL_PARAM_construct_uint(OSSL_CAPABILITY_TLS_GROUP_SECURITY_BITS, &security_bits),
        OSSL_PARAM_construct_uint(OSSL_CAPABILITY_TLS_GROUP_IS_KEM, &is_kem),
        OSSL_PARAM_construct_int(OSSL_CAPABILITY_TLS_GROUP_MIN_TLS, &min_tls),
        OSSL_PARAM_construct_int(OSSL_CAPABILITY_TLS_GROUP_MAX_TLS, &max_tls),
        OSSL_PARAM_construct_int(OSSL_CAPABILITY_TLS_GROUP_MIN_DTLS, &min_dtls),
        OSSL_PARAM_construct_int(OSSL_CAPABILITY_TLS_GROUP_MAX_DTLS, &max_dtls),
        OSSL_PARAM_construct_end()};
    if (callback(params, argument) == 0) return 0;
  }
  return 1;
}

// ----- Counters of the whole process, for ASYNCJOB_STATS=1 -----
//
// One line when the module goes: at its unloading after the last instance
// was torn down, or at process exit when some instance never was (a
// program that leaks a key or context of the provider keeps it alive).
//
// Its locks cannot throw: std::mutex::lock fails only with errors a default
// mutex never has (EDEADLK, EAGAIN of recursive mutexes).
class Census {
 public:
  // false when out of memory.
  bool Enter(const Provider* provider) {
    std::lock_guard lock(mutex_);
    try {
      live_.push_back(provider);
    } catch (const std::bad_alloc&) {
      return false;
    }
    ++instances_;
    return true;
  }
  void Leave(const Provider* provider) {
    std::lock_guard lock(mutex_);
    Add(retired_, provider->counters());
    live_.erase(std::find(live_.begin(), live_.end(), provider));  // never allocates
  }
  bool Idle() {
    std::lock_guard lock(mutex_);
    return live_.empty();
  }
  void Print() {
    std::lock_guard lock(mutex_);
    if (instances_ == 0) return;
    Provider::Counters total = retired_;
    for (const Provider* provider : live_) Add(total, provider->counters());
    std::fprintf(stderr,
                 "asyncjob provider: %llu signatures submitted to the engine, %llu job pauses, "
                 "%llu signatures run inline, %llu wake-ups sent in batches "
                 "(%zu provider instance%s)\n",
                 static_cast<unsigned long long>(total.submitted),
                 static_cast<unsigned long long>(total.paused),
                 static_cast<unsigned long long>(total.inline_runs),
                 static_cast<unsigned long long>(total.batched_wakeups), instances_,
                 instances_ == 1 ? "" : "s");
  }

 private:
  static void Add(Provider::Counters& total, const Provider::Counters& more) {
    total.submitted += more.submitted;
    total.paused += more.paused;
    total.inline_runs += more.inline_runs;
    total.batched_wakeups += more.batched_wakeups;
  }

  std::mutex mutex_;
  std::vector<const Provider*> live_;
  Provider::Counters retired_{};
  std::size_t instances_ = 0;
};

// Not a static object: libcrypto tears instances down in its exit handler,
// which may run after this module's static destructors.
Census* TheCensus() {
  static Census* const census = new (std::nothrow) Census;
  return census;
}

// An ELF destructor runs after every exit handler (libcrypto's cleanup
// among them), or when the module is unloaded, which libcrypto does after
// tearing down the last instance.
__attribute__((destructor)) void PrintCensus() {
  Census* census = TheCensus();
  if (census == nullptr) return;
  const char* wanted = std::getenv("ASYNCJOB_STATS");
  if (wanted != nullptr && *wanted != '\0' && *wanted != '0') census->Print();
  if (census->Idle()) delete census;  // kept while leaked instances refer to it
}

void Teardown(void* provctx) {
  auto* provider = static_cast<Provider*>(provctx);
  TheCensus()->Leave(provider);  // there: OSSL_provider_init entered it
  delete provider;
}

const OSSL_DISPATCH kProviderFunctions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, DispatchFunction(&Teardown)},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, DispatchFunction(&GettableParams)},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, DispatchFunction(&GetParams)},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, DispatchFunction(&QueryOperation)},
    {OSSL_FUNC_PROVIDER_GET_CAPABILITIES, DispatchFunction(&GetCapabilities)},
    {0, nullptr}};

}  // namespace
}  // namespace asyncjob::provider

extern "C" __attribute__((visibility("default"))) int OSSL_provider_init(
    const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in, const OSSL_DISPATCH** out,
    void** provctx) {
  asyncjob::provider::Provider* provider = asyncjob::provider::Provider::Create(handle, in);
  if (provider == nullptr) return 0;
  asyncjob::provider::Census* census = asyncjob::provider::TheCensus();
  if (census == nullptr || !census->Enter(provider)) {
    delete provider;
    ERR_raise_data(ERR_LIB_PROV, ERR_R_MALLOC_FAILURE, "asyncjob: out of memory");
    return 0;
  }
  *provctx = provider;
  *out = asyncjob::provider::kProviderFunctions;
  return 1;
}
