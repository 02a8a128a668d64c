// Signatures through the asyncjob provider, 64 jobs on one loop thread,
// against direct signing on one thread with the default provider.
//
// Both sides sign the same 32-byte digest with the same key for the same
// time. The async side runs every signature inside a job: the provider hands
// the private-key operation to its worker threads and pauses the job; the
// loop (asyncjob::Loop) resumes each job when the provider's completion
// callback fires.
//
// The hand-off's cost is measured as CPU time per signature (the process's
// user + system time over each phase, every thread included) with a
// provider of ONE worker thread: the signing is then serialized as on the
// direct side, and the extra CPU time per signature is what the hand-off
// costs (the loop's wake-ups, the switches, the queue). The two-worker phase
// is compared with two threads signing directly, since two cores busy at
// once each run slower (shared caches, the host's frequency); there the loop
// thread competes with both workers for the cores. The phases alternate for
// `rounds` rounds and the best of each is kept: interference from the rest
// of the machine only slows a phase down.
//
// Usage: bench_provider_sign PROVIDER_DIR [seconds] [jobs] [rounds] [algorithm]
// (algorithm: rsa2048 or p256; both when absent). Prints two lines per
// algorithm, one per worker count:
//   provider_sign p256: 1 worker: direct 54000.0/s, async 64 jobs 49000.0/s (N pauses,
//     M wake-ups batched); cpu per signature direct 18.4 us, async 19.0 us, overhead 3.3 %;
//     inline through the provider 18.4 us
//   provider_sign p256: 2 workers: direct 2 threads 104000.0/s, async 64 jobs 95000.0/s,
//     ratio 0.91; cpu per signature direct 19.2 us, async 20.0 us, overhead 4.2 %
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
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

// Signing on this thread, outside any job: with the default provider, or
// (libctx, propq) with the asyncjob provider, which then signs inline.
Phase Direct(EVP_PKEY* key, const unsigned char* digest, double seconds,
             OSSL_LIB_CTX* libctx = nullptr, const char* propq = nullptr) {
  EVP_PKEY_CTX* ctx = SignContext(libctx, key, propq);
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

// Direct() on `threads` threads at once: signatures per second summed over
// them, CPU time per signature of the whole process.
Phase DirectParallel(EVP_PKEY* key, const unsigned char* digest, double seconds, int threads) {
  std::atomic<long> count{0};
  const double cpu_start = ProcessCpuMicroseconds();
  auto start = Clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> signers;
  for (int t = 0; t < threads; ++t) {
    signers.emplace_back([&] {
      EVP_PKEY_CTX* ctx = SignContext(nullptr, key, nullptr);
      long mine = 0;
      while (Clock::now() < end) {
        if (!SignOnce(ctx, digest)) std::exit(1);
        ++mine;
      }
      EVP_PKEY_CTX_free(ctx);
      count.fetch_add(mine);
    });
  }
  for (std::thread& signer : signers) signer.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = ProcessCpuMicroseconds() - cpu_start;
  const auto signatures = static_cast<double>(count.load());
  return {signatures / elapsed, cpu / signatures};
}

Phase Async(OSSL_LIB_CTX* libctx, EVP_PKEY* key, const unsigned char* digest, double seconds,
            int jobs) {
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
  const auto signatures = static_cast<double>(count.load());
  return {signatures / elapsed, cpu / signatures};
}

// A library context with the asyncjob provider (with `workers` worker
// threads) and the default provider.
OSSL_LIB_CTX* LoadProviders(const char* directory, const char* workers) {
  OSSL_LIB_CTX* libctx = OSSL_LIB_CTX_new();
  OSSL_PROVIDER_set_default_search_path(libctx, directory);
  // Read by the provider instance as it is created.
  setenv("ASYNCJOB_PROVIDER_WORKERS", workers, 1);
  if (OSSL_PROVIDER_load(libctx, "asyncjob") == nullptr ||
      OSSL_PROVIDER_load(libctx, "default") == nullptr) {
    ERR_print_errors_fp(stderr);
    std::exit(1);
  }
  return libctx;
}

// A counter of the asyncjob provider loaded in libctx.
std::uint64_t ProviderCounter(OSSL_LIB_CTX* libctx, const char* name) {
  OSSL_PROVIDER* provider = OSSL_PROVIDER_load(libctx, "asyncjob");  // one more reference
  std::uint64_t value = 0;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_uint64(name, &value), OSSL_PARAM_construct_end()};
  OSSL_PROVIDER_get_params(provider, params);
  OSSL_PROVIDER_unload(provider);
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PROVIDER_DIR [seconds] [jobs] [rounds] [algorithm]\n", argv[0]);
    return 2;
  }
  double seconds = argc > 2 ? std::atof(argv[2]) : 2.0;
  int jobs = argc > 3 ? std::atoi(argv[3]) : 64;
  int rounds = argc > 4 ? std::max(1, std::atoi(argv[4])) : 3;
  const std::string only = argc > 5 ? argv[5] : "";
  OSSL_LIB_CTX* one_worker = LoadProviders(argv[1], "1");
  OSSL_LIB_CTX* two_workers = LoadProviders(argv[1], "2");
  unsigned char digest[32];
  for (int i = 0; i < 32; ++i) digest[i] = static_cast<unsigned char>(i * 7);
  for (const char* algorithm : {"rsa2048", "p256"}) {
    if (!only.empty() && only != algorithm) continue;
    EVP_PKEY* key = MakeKey(algorithm);
    // Warm every path (key export into the providers, worker start-up).
    Direct(key, digest, 0.2);
    Async(one_worker, key, digest, 0.2, jobs);
    Async(two_workers, key, digest, 0.2, jobs);
    const std::uint64_t resumes_before = ProviderCounter(one_worker, "asyncjob-jobs-paused");
    const std::uint64_t batched_before = ProviderCounter(one_worker, "asyncjob-wakeups-batched");
    Phase direct{0, 1e300}, inline_run{0, 1e300}, async{0, 1e300};
    Phase direct_two{0, 1e300}, async_two{0, 1e300};
    auto keep_best = [](Phase& best, const Phase& phase) {
      best.rate = std::max(best.rate, phase.rate);
      best.cpu_per_signature = std::min(best.cpu_per_signature, phase.cpu_per_signature);
    };
    for (int round = 0; round < rounds; ++round) {
      keep_best(direct, Direct(key, digest, seconds));
      keep_best(inline_run, Direct(key, digest, seconds, one_worker, "?provider=asyncjob"));
      keep_best(async, Async(one_worker, key, digest, seconds, jobs));
      keep_best(direct_two, DirectParallel(key, digest, seconds, 2));
      keep_best(async_two, Async(two_workers, key, digest, seconds, jobs));
    }
    const std::uint64_t resumes =
        ProviderCounter(one_worker, "asyncjob-jobs-paused") - resumes_before;
    const std::uint64_t batched =
        ProviderCounter(one_worker, "asyncjob-wakeups-batched") - batched_before;
    auto overhead = [](const Phase& through, const Phase& baseline) {
      return (through.cpu_per_signature / baseline.cpu_per_signature - 1) * 100;
    };
    std::printf(
        "provider_sign %s: 1 worker: direct %.1f/s, async %d jobs %.1f/s (%llu pauses, %llu "
        "wake-ups batched); cpu per signature direct %.1f us, async %.1f us, overhead %.1f %%; "
        "inline through the provider %.1f us\n",
        algorithm, direct.rate, jobs, async.rate, static_cast<unsigned long long>(resumes),
        static_cast<unsigned long long>(batched), direct.cpu_per_signature, async.cpu_per_signature,
        overhead(async, direct), inline_run.cpu_per_signature);
    std::printf(
        "provider_sign %s: 2 workers: direct 2 threads %.1f/s, async %d jobs %.1f/s, ratio "
        "%.2f; cpu per signature direct %.1f us, async %.1f us, overhead %.1f %%\n",
        algorithm, direct_two.rate, jobs, async_two.rate, async_two.rate / direct_two.rate,
        direct_two.cpu_per_signature, async_two.cpu_per_signature, overhead(async_two, direct_two));
    std::fflush(stdout);
    EVP_PKEY_free(key);
  }
  OSSL_LIB_CTX_free(one_worker);
  OSSL_LIB_CTX_free(two_workers);
  return 0;
}
