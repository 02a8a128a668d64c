// Signatures per second through the asyncjob provider, 64 jobs on one loop
// thread, against direct signing on one thread with the default provider.
//
// Both sides sign the same 32-byte digest with the same key for the same
// time. The async side runs every signature inside a job: the provider hands
// the private-key operation to its worker threads and pauses the job; the
// loop (asyncjob::Loop) resumes each job when the provider's completion
// callback fires. The ratio async/direct is the throughput the async
// machinery keeps (1.00 = no overhead; above 1 when the workers add
// parallelism the direct side does not have). Since the workers can add
// parallelism, the hand-off's cost is also given as CPU time per signature
// (the process's user + system time over each phase, every thread): the
// async side's extra CPU time per signature over the direct side's is what
// the hand-off costs, whatever the number of cores.
//
// Usage: bench_provider_sign PROVIDER_DIR [seconds] [jobs]
// Prints one line per algorithm:
//   provider_sign rsa2048: direct 1234.5/s, async 64 jobs 1200.0/s, ratio 0.97 (N resumes);
//     cpu per signature direct 800.1 us, async 820.3 us, overhead 2.5 %
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "asyncjob/asyncjob.hpp"
#include "asyncjob/loop.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// CPU time (user + system) of every thread of the process so far, in us.
double ProcessCpuMicroseconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto us = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec);
  };
  return us(usage.ru_utime) + us(usage.ru_stime);
}

// Signatures per second, and CPU time (us) per signature.
struct Phase {
  double rate;
  double cpu_per_signature;
};

EVP_PKEY* MakeKey(const std::string& algorithm) {
  if (algorithm == "rsa2048") return EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
  return EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
}

bool SignOnce(EVP_PKEY_CTX* ctx, const unsigned char* digest) {
  unsigned char signature[512];
  size_t length = sizeof signature;
  return EVP_PKEY_sign(ctx, signature, &length, digest, 32) == 1;
}

EVP_PKEY_CTX* SignContext(OSSL_LIB_CTX* libctx, EVP_PKEY* key, const char* propq) {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(libctx, key, propq);
  if (ctx == nullptr || EVP_PKEY_sign_init(ctx) != 1 ||
      EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1) {
    ERR_print_errors_fp(stderr);
    std::exit(1);
  }
  return ctx;
}

Phase Direct(EVP_PKEY* key, const unsigned char* digest, double seconds) {
  EVP_PKEY_CTX* ctx = SignContext(nullptr, key, nullptr);
  long count = 0;
  const double cpu_start = ProcessCpuMicroseconds();
  auto start = Clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    if (!SignOnce(ctx, digest)) std::exit(1);
    ++count;
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = ProcessCpuMicroseconds() - cpu_start;
  EVP_PKEY_CTX_free(ctx);
  return {static_cast<double>(count) / elapsed, cpu / static_cast<double>(count)};
}

Phase Async(OSSL_LIB_CTX* libctx, EVP_PKEY* key, const unsigned char* digest, double seconds,
            int jobs, long* paused) {
  std::atomic<long> count{0};
  asyncjob::Loop loop;
  const double cpu_start = ProcessCpuMicroseconds();
  auto start = Clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  for (int j = 0; j < jobs; ++j) {
    loop.spawn([&] {
      EVP_PKEY_CTX* ctx = SignContext(libctx, key, "?provider=asyncjob");
      while (Clock::now() < end) {
        if (!SignOnce(ctx, digest)) std::exit(1);
        count.fetch_add(1, std::memory_order_relaxed);
      }
      EVP_PKEY_CTX_free(ctx);
    });
  }
  loop.run();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = ProcessCpuMicroseconds() - cpu_start;
  *paused = static_cast<long>(loop.counters().resumes);
  const auto signatures = static_cast<double>(count.load());
  return {signatures / elapsed, cpu / signatures};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PROVIDER_DIR [seconds] [jobs]\n", argv[0]);
    return 2;
  }
  double seconds = argc > 2 ? std::atof(argv[2]) : 3.0;
  int jobs = argc > 3 ? std::atoi(argv[3]) : 64;
  OSSL_LIB_CTX* libctx = OSSL_LIB_CTX_new();
  OSSL_PROVIDER_set_default_search_path(libctx, argv[1]);
  if (OSSL_PROVIDER_load(libctx, "asyncjob") == nullptr ||
      OSSL_PROVIDER_load(libctx, "default") == nullptr) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  unsigned char digest[32];
  for (int i = 0; i < 32; ++i) digest[i] = static_cast<unsigned char>(i * 7);
  for (const char* algorithm : {"rsa2048", "p256"}) {
    EVP_PKEY* key = MakeKey(algorithm);
    // Warm both paths (key export into the provider, worker start-up).
    Direct(key, digest, 0.2);
    long resumes = 0;
    Async(libctx, key, digest, 0.2, jobs, &resumes);
    Phase direct = Direct(key, digest, seconds);
    Phase async = Async(libctx, key, digest, seconds, jobs, &resumes);
    std::printf(
        "provider_sign %s: direct %.1f/s, async %d jobs %.1f/s, ratio %.2f (%ld resumes); "
        "cpu per signature direct %.1f us, async %.1f us, overhead %.1f %%\n",
        algorithm, direct.rate, jobs, async.rate, async.rate / direct.rate, resumes,
        direct.cpu_per_signature, async.cpu_per_signature,
        (async.cpu_per_signature / direct.cpu_per_signature - 1) * 100);
    std::fflush(stdout);
    EVP_PKEY_free(key);
  }
  OSSL_LIB_CTX_free(libctx);
  return 0;
}
