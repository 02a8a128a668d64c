// libcrypto_bridge.cc - finding libcrypto in the process and keeping its
// per-job default library context and error queue (libcrypto_bridge.h).
#include "openssl/libcrypto_bridge.h"

#include <dlfcn.h>

#include <atomic>
#include <mutex>

#include "asyncjob/async.h"
#include "base/error_queue.h"
#include "job/job.h"

namespace asyncjob::openssl {
namespace {

// The libcrypto functions used, by their C signatures.
using SetDefaultLibCtx = void* (*)(void*);                    // OSSL_LIB_CTX_set0_default
using ErrNew = void (*)();                                    // ERR_new
using ErrSetDebug = void (*)(const char*, int, const char*);  // ERR_set_debug
using ErrSetError = void (*)(int, int, const char*, ...);     // ERR_set_error
using VersionNum = unsigned long (*)();                       // OpenSSL_version_num

SetDefaultLibCtx set_default_libctx = nullptr;
ErrNew err_new = nullptr;
ErrSetDebug err_set_debug = nullptr;
ErrSetError err_set_error = nullptr;
// The library libcrypto reports a failed allocation in: its allocator's
// (ERR_LIB_CRYPTO, 15) from 3.2 on, the caller's (ERR_LIB_ASYNC) before.
int malloc_failure_library = ASYNCJOB_ERR_LIB_ASYNC;
std::atomic<bool> connected{false};
std::mutex connect_mutex;

// Each job keeps its default library context in job->default_libctx.job,
// and its caller's in job->default_libctx.caller while it runs.
void EnteringJob(job::Job* job) {
  job::Job::DefaultLibraryContexts& contexts = job->default_libctx;
  if (job->entry.fresh) {
    // A NULL argument changes nothing and returns the current default: the
    // job starts with its caller's.
    contexts.caller = set_default_libctx(nullptr);
    contexts.job = contexts.caller;
  } else {
    contexts.caller = set_default_libctx(contexts.job);
  }
}

void LeftJob(job::Job* job) {
  job->default_libctx.job = set_default_libctx(job->default_libctx.caller);
}

const job::SwitchHooks libctx_hooks{&EnteringJob, &LeftJob};

// The entry libcrypto itself leaves in its queue where asyncjob queues
// `reason` (ERR_LIB_ASYNC's or the allocator's failure for
// ASYNCJOB_R_MALLOC_FAILURE, see base::QueueAllocationFailure()); false
// where it leaves none. libssl reports whatever sits in libcrypto's queue as
// the failure of the thread's next operation, so an entry there where
// libcrypto leaves none (a lookup that finds nothing, a refusal libcrypto
// answers with a bare 0, a misuse where libcrypto would crash, a legal act
// such as freeing a context) would fail an unrelated connection. asyncjob's
// own queue keeps every entry with its detailed message. docs/safety.md,
// "Errors in libcrypto's queue", has the table of every case.
bool LibcryptoRaises(int reason, int* library) {
  switch (reason) {
    case ASYNC_R_INVALID_POOL_SIZE:       // ASYNC_init_thread(max, init > max)
    case ASYNC_R_FAILED_TO_SWAP_CONTEXT:  // a switch that failed
      *library = ASYNCJOB_ERR_LIB_ASYNC;
      return true;
    case ASYNCJOB_R_MALLOC_FAILURE:  // an allocation that failed
      *library = malloc_failure_library;
      return true;
    default:
      return false;
  }
}

void MirrorError(int reason, const char* message) {
  int library = 0;
  if (!LibcryptoRaises(reason, &library)) return;
  err_new();
  err_set_debug("asyncjob", 0, "asyncjob");
  err_set_error(library, reason, "%s", message);
}

template <class F>
F Lookup(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

bool ConnectToLibcrypto() {
  std::lock_guard lock(connect_mutex);
  if (connected.load(std::memory_order_acquire)) return true;
  set_default_libctx = Lookup<SetDefaultLibCtx>("OSSL_LIB_CTX_set0_default");
  err_new = Lookup<ErrNew>("ERR_new");
  err_set_debug = Lookup<ErrSetDebug>("ERR_set_debug");
  err_set_error = Lookup<ErrSetError>("ERR_set_error");
  auto version_num = Lookup<VersionNum>("OpenSSL_version_num");
  constexpr unsigned long kOpenSsl32 = 0x30200000UL;
  constexpr int kErrLibCrypto = 15;
  if (version_num != nullptr && version_num() >= kOpenSsl32) malloc_failure_library = kErrLibCrypto;
  if (set_default_libctx != nullptr) job::SetSwitchHooks(&libctx_hooks);
  if (err_new != nullptr && err_set_debug != nullptr && err_set_error != nullptr) {
    base::SetErrorMirror(&MirrorError);
  }
  bool found = set_default_libctx != nullptr;
  connected.store(found, std::memory_order_release);
  return found;
}

bool LibcryptoConnected() { return connected.load(std::memory_order_acquire); }

namespace {
// Loading the library is the moment libcrypto, if the program uses it, is
// already mapped (as a dependency or because asyncjob was preloaded).
__attribute__((constructor)) void ConnectAtLoad() { ConnectToLibcrypto(); }
}  // namespace

}  // namespace asyncjob::openssl
