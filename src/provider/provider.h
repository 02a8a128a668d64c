// provider.h - the asyncjob OpenSSL provider: shared state of one instance.
//
// The provider offers RSA (PKCS#1 v1.5 and PSS) and ECDSA signatures whose
// private-key operation runs on an asyncjob::offload::Engine: a signing job
// pauses while a worker thread signs. The arithmetic itself is libcrypto's:
// each instance keeps an inner library context with only the default
// provider loaded, and its keys and signature contexts wrap objects of that
// inner context.
#ifndef ASYNCJOB_SRC_PROVIDER_PROVIDER_H_
#define ASYNCJOB_SRC_PROVIDER_PROVIDER_H_

#include <openssl/core.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <openssl/proverr.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "asyncjob/offload.hpp"

namespace asyncjob::provider {

// The key types the provider manages; an index into per-type tables.
enum class KeyType { kRsa = 0, kEc = 1 };
constexpr int kKeyTypes = 2;

// The type's name in the inner context ("RSA", "EC").
const char* KeyTypeName(KeyType type);

// Errors raised on a worker thread, carried back to the thread that asked.
class ErrorTransfer {
 public:
  // Moves this thread's error queue into the transfer.
  void TakeFromThisThread();
  // Raises the collected errors, oldest first, on this thread.
  void RaiseOnThisThread() const;

 private:
  struct Entry {
    unsigned long code;
    const char* file;  // libcrypto's static strings
    int line;
    const char* function;
    std::string data;
  };
  std::vector<Entry> entries_;
};

class Provider {
 public:
  struct Counters {
    std::uint64_t submitted;        // signatures handed to a worker
    std::uint64_t paused;           // times the engine paused a job
    std::uint64_t inline_runs;      // signatures run on the caller's thread
    std::uint64_t batched_wakeups;  // wake-ups held back, then sent with others
  };

  // Reads the configuration ("workers"), creates the inner context and the
  // engine. Returns nullptr, with an error raised, on failure.
  static Provider* Create(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in);
  ~Provider();
  Provider(const Provider&) = delete;
  Provider& operator=(const Provider&) = delete;

  // The inner library context: the default provider only.
  OSSL_LIB_CTX* libctx() const { return libctx_; }
  // The default provider's implementations in the inner context, whose
  // parameter tables the provider's own answer with.
  const EVP_KEYMGMT* keymgmt(KeyType type) const { return keymgmt_[static_cast<int>(type)]; }
  const EVP_SIGNATURE* signature(KeyType type) const { return signature_[static_cast<int>(type)]; }

  // Runs operation() (a private-key operation returning libcrypto's 1 for
  // success) on the engine: on a worker while the calling job pauses, or
  // inline outside a job. Errors the worker raised are raised again on the
  // calling thread. Returns operation()'s result, or 0 with an error raised
  // when carrying the errors back ran out of memory. Called from libcrypto:
  // only a cancelled asyncjob job's unwinding (not a std::exception) passes.
  template <class Operation>
  int Offload(Operation&& operation) {
    const std::thread::id caller = std::this_thread::get_id();
    ErrorTransfer errors;
    int result = 0;
    try {
      engine_->run([&] {
        if (std::this_thread::get_id() == caller) {
          result = operation();
          return;
        }
        ERR_clear_error();
        result = operation();
        errors.TakeFromThisThread();
      });
    } catch (const std::exception& error) {
      errors.RaiseOnThisThread();
      ERR_raise_data(ERR_LIB_PROV, ERR_R_MALLOC_FAILURE, "asyncjob: %s", error.what());
      return 0;
    }
    errors.RaiseOnThisThread();
    return result;
  }

  Counters counters() const;
  int workers() const { return workers_; }
  std::chrono::microseconds completion_batch_window() const { return completion_batch_window_; }

 private:
  Provider(int workers, std::chrono::microseconds completion_batch_window);
  bool LoadInnerContext();

  int workers_;
  std::chrono::microseconds completion_batch_window_;
  OSSL_LIB_CTX* libctx_ = nullptr;
  OSSL_PROVIDER* default_provider_ = nullptr;
  EVP_KEYMGMT* keymgmt_[kKeyTypes] = {};
  EVP_SIGNATURE* signature_[kKeyTypes] = {};
  std::unique_ptr<offload::Engine> engine_;  // reset before the inner context goes
};

// Dispatch tables (keymgmt.cc, signature.cc).
extern const OSSL_DISPATCH* const kRsaKeymgmtFunctions;
extern const OSSL_DISPATCH* const kEcKeymgmtFunctions;
extern const OSSL_DISPATCH* const kRsaSignatureFunctions;
extern const OSSL_DISPATCH* const kEcdsaSignatureFunctions;

// Casts a provider function to the type OSSL_DISPATCH stores.
template <class F>
inline void (*DispatchFunction(F* function))(void) {
  return reinterpret_cast<void (*)(void)>(function);
}

}  // namespace asyncjob::provider

#endif  // ASYNCJOB_SRC_PROVIDER_PROVIDER_H_
