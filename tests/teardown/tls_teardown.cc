// tls_teardown.cc - what a server's teardown of a connection whose
// handshake is paused in an async job costs, and whether it is safe.
//
// In-process TLS (a memory BIO pair per connection, no sockets), the
// server in SSL_MODE_ASYNC with the asyncjob provider signing on worker
// threads. Each iteration handshakes until the server's SSL_do_handshake
// answers SSL_ERROR_WANT_ASYNC (its signature is on a worker), then either
// frees both ends at once, as servers do when a client resets (teardown),
// or waits for the signature and completes the handshake and a round trip
// of application data (a healthy connection). Afterwards: RSS, open fds and
// jobs in use against the warmed-up baseline, and how many healthy
// connections failed.
//
// Built twice: on asyncjob (linked before libcrypto) and on libcrypto's own
// jobs. With --expect-clean it fails unless the teardowns left nothing
// behind: jobs in use and tombstones back to the baseline, fds back to the
// baseline, no error left in either error queue by a teardown, no healthy
// connection failed, and RSS growth below 1 KiB per teardown beyond what
// libcrypto's own heap grew by.
//
// That last figure is apart because no job implementation can give it back:
// the frames of libssl paused in the job (the handshake's digest context,
// its message buffers) hold heap blocks that only their own function frees,
// and a job that never runs again never gets there. OpenSSL's heap is
// counted through CRYPTO_set_mem_functions(), which also counts libcrypto's
// job stacks (allocated in async_posix.c) when it runs the jobs.
//
// The last line is "figures: ..." with the per-teardown costs, which
// tls_teardown_compare.sh puts side by side for both builds.
//
//   tls_teardown --provider-dir DIR [--teardowns N] [--healthy-every K]
//                [--notify fds|callback] [--key rsa|ec] [--expect-clean]
//                [--no-rss-check]
#include <dirent.h>
#include <malloc.h>
#include <openssl/async.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

// asyncjob's introspection, when the process runs on asyncjob.
extern "C" {
// Laid out as asyncjob_pool_stats in <asyncjob/async.h> (not included: its
// ASYNC_* declarations would clash with <openssl/async.h>'s).
struct asyncjob_pool_stats_view {
  size_t max_size, total, idle, in_use, guarded, slab, custom, tombstones;
};
int asyncjob_get_pool_stats(asyncjob_pool_stats_view* stats) __attribute__((weak));
unsigned long asyncjob_peek_error(const char** message) __attribute__((weak));
void asyncjob_clear_errors(void) __attribute__((weak));
}

namespace {

struct Options {
  const char* provider_dir = nullptr;
  int teardowns = 2000;
  int healthy_every = 4;  // one healthy connection per this many teardowns
  bool callback = false;
  bool ec = false;
  bool expect_clean = false;
  bool rss_check = true;  // off under sanitizers and valgrind: RSS is theirs
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "tls_teardown: %s\n", what);
  ERR_print_errors_fp(stderr);
  std::exit(2);
}

// ----- OpenSSL's heap, counted -----
// Every block libcrypto and libssl allocate carries a header with what it
// costs the heap (the allocator's usable size and its chunk header, so that
// the figure compares with RSS) and whether it is a job stack of
// libcrypto's (allocated in async_posix.c); frees and reallocations are
// counted too.
struct BlockHeader {
  std::size_t footprint;
  std::uint32_t magic;
  std::uint32_t is_job_stack;
};
static_assert(sizeof(BlockHeader) % alignof(std::max_align_t) == 0);
constexpr std::uint32_t kBlockMagic = 0x7e1a4d0b;
std::atomic<long long> openssl_heap_bytes{0};
std::atomic<long long> libcrypto_job_stacks{0};
bool heap_counted = false;

bool IsJobStackSite(const char* file) {
  if (file == nullptr) return false;
  std::size_t length = std::strlen(file);
  constexpr std::size_t kSuffix = sizeof("async_posix.c") - 1;
  return length >= kSuffix && std::strcmp(file + length - kSuffix, "async_posix.c") == 0;
}

void Count(const BlockHeader* header, int sign) {
  openssl_heap_bytes.fetch_add(sign * static_cast<long long>(header->footprint),
                               std::memory_order_relaxed);
  if (header->is_job_stack != 0) libcrypto_job_stacks.fetch_add(sign, std::memory_order_relaxed);
}

void* CountedMalloc(std::size_t size, const char* file, int) {
  auto* header = static_cast<BlockHeader*>(std::malloc(sizeof(BlockHeader) + size));
  if (header == nullptr) return nullptr;
  *header = BlockHeader{malloc_usable_size(header) + sizeof(std::size_t), kBlockMagic,
                        IsJobStackSite(file) ? 1u : 0u};
  Count(header, +1);
  return header + 1;
}

void CountedFree(void* block, const char*, int) {
  if (block == nullptr) return;
  BlockHeader* header = static_cast<BlockHeader*>(block) - 1;
  if (header->magic != kBlockMagic) std::abort();
  Count(header, -1);
  header->magic = 0;
  std::free(header);
}

void* CountedRealloc(void* block, std::size_t size, const char* file, int line) {
  if (block == nullptr) return CountedMalloc(size, file, line);
  BlockHeader* header = static_cast<BlockHeader*>(block) - 1;
  if (header->magic != kBlockMagic) std::abort();
  BlockHeader old = *header;
  auto* moved = static_cast<BlockHeader*>(std::realloc(header, sizeof(BlockHeader) + size));
  if (moved == nullptr) return nullptr;  // the old block stands, counted as it was
  Count(&old, -1);
  moved->footprint = malloc_usable_size(moved) + sizeof(std::size_t);
  Count(moved, +1);
  return moved + 1;
}

// Before anything allocates through OpenSSL; false when it is too late.
bool CountOpenSslHeap() {
  return CRYPTO_set_mem_functions(&CountedMalloc, &CountedRealloc, &CountedFree) == 1;
}

long ResidentKiB() {
  std::FILE* file = std::fopen("/proc/self/statm", "re");
  if (file == nullptr) return -1;
  long size = 0;
  long resident = 0;
  if (std::fscanf(file, "%ld %ld", &size, &resident) != 2) resident = -1;
  std::fclose(file);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int OpenFds() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  // the directory's own fd
}

// Jobs that are neither idle nor released: asyncjob's in use plus its
// tombstones, or libcrypto's job stacks not freed (idle ones included, a
// constant once warmed up). -1 when neither can be known.
long JobsHeld() {
  if (asyncjob_get_pool_stats != nullptr) {
    asyncjob_pool_stats_view stats{};
    if (asyncjob_get_pool_stats(&stats) != 1) return 0;
    return static_cast<long>(stats.in_use + stats.tombstones);
  }
  if (!heap_counted) return -1;
  return static_cast<long>(libcrypto_job_stacks.load());
}

// Whether either error queue holds an entry; clears both.
bool TakeErrorsLeft() {
  bool left = ERR_peek_error() != 0;
  ERR_clear_error();
  if (asyncjob_peek_error != nullptr && asyncjob_peek_error(nullptr) != 0) {
    left = true;
    asyncjob_clear_errors();
  }
  return left;
}

EVP_PKEY* MakeKey(bool ec) {
  EVP_PKEY* key = ec ? EVP_PKEY_Q_keygen(nullptr, "provider=default", "EC", "P-256")
                     : EVP_PKEY_Q_keygen(nullptr, "provider=default", "RSA", size_t{2048});
  if (key == nullptr) Die("key generation failed");
  return key;
}

X509* SelfSigned(EVP_PKEY* key) {
  X509* cert = X509_new();
  X509_set_version(cert, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600L * 24);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  if (X509_sign(cert, key, EVP_sha256()) == 0) Die("certificate signing failed");
  return cert;
}

// What the server keeps per connection; the async callback's argument, so
// that a callback arriving after the connection was freed touches freed
// memory (which ASan and valgrind report).
struct Connection {
  SSL* server = nullptr;
  SSL* client = nullptr;
  std::atomic<bool> signalled{false};
};

int OnAsyncReady(SSL*, void* argument) {
  static_cast<Connection*>(argument)->signalled.store(true, std::memory_order_release);
  return 1;
}

Connection* Connect(SSL_CTX* server_ctx, SSL_CTX* client_ctx, bool callback) {
  auto* connection = new Connection;
  connection->server = SSL_new(server_ctx);
  connection->client = SSL_new(client_ctx);
  if (connection->server == nullptr || connection->client == nullptr) Die("SSL_new failed");
  BIO* client_side = nullptr;
  BIO* server_side = nullptr;
  if (BIO_new_bio_pair(&client_side, 0, &server_side, 0) != 1) Die("BIO_new_bio_pair failed");
  SSL_set_bio(connection->client, client_side, client_side);
  SSL_set_bio(connection->server, server_side, server_side);
  SSL_set_connect_state(connection->client);
  SSL_set_accept_state(connection->server);
  if (callback) SSL_set_async_callback_arg(connection->server, connection);
  return connection;
}

void Free(Connection* connection) {
  SSL_free(connection->server);
  SSL_free(connection->client);
  delete connection;
}

// Waits until the server's paused job may continue: its async fds readable
// or its callback called.
bool WaitForSignature(Connection* connection, bool callback) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (callback) {
      if (connection->signalled.exchange(false, std::memory_order_acq_rel)) return true;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      continue;
    }
    size_t count = 0;
    SSL_get_all_async_fds(connection->server, nullptr, &count);
    if (count == 0) return true;  // nothing to wait on: just resume
    std::vector<OSSL_ASYNC_FD> fds(count);
    SSL_get_all_async_fds(connection->server, fds.data(), &count);
    std::vector<pollfd> polled;
    for (OSSL_ASYNC_FD fd : fds) polled.push_back({fd, POLLIN, 0});
    if (poll(polled.data(), polled.size(), 100) > 0) return true;
  }
  return false;
}

enum class Step { kPausedInJob, kDone, kFailed };

// Runs both ends' handshakes until the server pauses in a job or both are
// done.
Step Handshake(Connection* connection) {
  for (int round = 0; round < 100; ++round) {
    int client = SSL_do_handshake(connection->client);
    if (client != 1) {
      int error = SSL_get_error(connection->client, client);
      if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) return Step::kFailed;
    }
    int server = SSL_do_handshake(connection->server);
    if (server != 1) {
      int error = SSL_get_error(connection->server, server);
      if (error == SSL_ERROR_WANT_ASYNC) return Step::kPausedInJob;
      if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) return Step::kFailed;
    }
    if (client == 1 && server == 1) return Step::kDone;
  }
  return Step::kFailed;
}

// A healthy connection: handshake (resuming the server's job whenever it
// pauses), then a byte each way. false when any step failed.
bool RunHealthy(SSL_CTX* server_ctx, SSL_CTX* client_ctx, bool callback) {
  Connection* connection = Connect(server_ctx, client_ctx, callback);
  bool ok = false;
  for (int pauses = 0; pauses < 50; ++pauses) {
    Step step = Handshake(connection);
    if (step == Step::kFailed) break;
    if (step == Step::kDone) {
      char byte = 'x';
      ok = SSL_write(connection->client, &byte, 1) == 1 &&
           SSL_read(connection->server, &byte, 1) == 1 && byte == 'x' &&
           SSL_write(connection->server, &byte, 1) == 1 &&
           SSL_read(connection->client, &byte, 1) == 1;
      break;
    }
    if (!WaitForSignature(connection, callback)) break;
  }
  if (!ok) ERR_clear_error();
  Free(connection);
  return ok;
}

// A teardown: handshake until the server's job pauses, then free everything.
bool RunTeardown(SSL_CTX* server_ctx, SSL_CTX* client_ctx, bool callback) {
  Connection* connection = Connect(server_ctx, client_ctx, callback);
  Step step = Handshake(connection);
  Free(connection);
  return step == Step::kPausedInJob;
}

Options Parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) Die(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--provider-dir")
      options.provider_dir = value();
    else if (arg == "--teardowns")
      options.teardowns = std::atoi(value());
    else if (arg == "--healthy-every")
      options.healthy_every = std::atoi(value());
    else if (arg == "--notify")
      options.callback = std::string(value()) == "callback";
    else if (arg == "--key")
      options.ec = std::string(value()) == "ec";
    else if (arg == "--expect-clean")
      options.expect_clean = true;
    else if (arg == "--no-rss-check")
      options.rss_check = false;
    else
      Die(("unknown argument " + arg).c_str());
  }
  if (options.provider_dir == nullptr) Die("--provider-dir is required");
  if (options.healthy_every < 1) options.healthy_every = 1;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  heap_counted = CountOpenSslHeap();
  Options options = Parse(argc, argv);
  if (OSSL_PROVIDER_set_default_search_path(nullptr, options.provider_dir) != 1 ||
      OSSL_PROVIDER_load(nullptr, "asyncjob") == nullptr ||
      OSSL_PROVIDER_load(nullptr, "default") == nullptr ||
      EVP_set_default_properties(nullptr, "?provider=asyncjob") != 1) {
    Die("cannot load the asyncjob and default providers");
  }
  EVP_PKEY* key = MakeKey(options.ec);
  X509* cert = SelfSigned(key);

  SSL_CTX* server_ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  if (server_ctx == nullptr || client_ctx == nullptr) Die("SSL_CTX_new failed");
  if (SSL_CTX_use_certificate(server_ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey(server_ctx, key) != 1) {
    Die("cannot use the certificate");
  }
  SSL_CTX_set_mode(server_ctx, SSL_MODE_ASYNC);
  SSL_CTX_set_session_cache_mode(server_ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(server_ctx, SSL_OP_NO_TICKET);
  if (options.callback) SSL_CTX_set_async_callback(server_ctx, &OnAsyncReady);
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, nullptr);

  // Warm up: pools, slabs, the provider's workers and libssl's caches.
  for (int i = 0; i < 20; ++i) {
    if (!RunHealthy(server_ctx, client_ctx, options.callback)) Die("warm-up handshake failed");
    RunTeardown(server_ctx, client_ctx, options.callback);
  }
  for (int i = 0; i < 20; ++i) RunHealthy(server_ctx, client_ctx, options.callback);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  TakeErrorsLeft();
  const long rss_before = ResidentKiB();
  const long long heap_before = openssl_heap_bytes.load();
  const int fds_before = OpenFds();
  const long jobs_before = JobsHeld();

  int teardowns_paused = 0;
  int errors_left = 0;  // teardowns that left an entry in an error queue
  int healthy = 0;
  int healthy_failed = 0;
  for (int i = 0; i < options.teardowns; ++i) {
    if (RunTeardown(server_ctx, client_ctx, options.callback)) ++teardowns_paused;
    // libssl reports whatever sits in the thread's error queue as the
    // failure of the next operation: a teardown must leave none.
    if (TakeErrorsLeft()) ++errors_left;
    if (i % options.healthy_every == options.healthy_every - 1) {
      ++healthy;
      if (!RunHealthy(server_ctx, client_ctx, options.callback)) ++healthy_failed;
    }
  }
  // Let the workers finish what the teardowns left them, then measure.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (int i = 0; i < 5; ++i) RunHealthy(server_ctx, client_ctx, options.callback);
  const long rss_after = ResidentKiB();
  const long long heap_after = openssl_heap_bytes.load();
  const int fds_after = OpenFds();
  const long jobs_after = JobsHeld();

  const double teardowns = teardowns_paused > 0 ? teardowns_paused : 1;
  const double rss_per_teardown = static_cast<double>(rss_after - rss_before) * 1024.0 / teardowns;
  const double heap_per_teardown =
      heap_counted ? static_cast<double>(heap_after - heap_before) / teardowns : 0.0;
  // What the teardowns cost beyond OpenSSL's own heap: the job layer's.
  const double beyond_heap_per_teardown = rss_per_teardown - heap_per_teardown;
  const char* implementation = asyncjob_get_pool_stats != nullptr ? "asyncjob" : "libcrypto";
  const char* mode = options.callback ? "callback" : "fds";
  const std::string jobs = jobs_before < 0
                               ? std::string("n/a")
                               : std::to_string(jobs_before) + " -> " + std::to_string(jobs_after);
  std::printf(
      "%s, %s key, %s: %d teardowns at WANT_ASYNC (%d left an error queued), %d healthy "
      "connections (%d failed); RSS %+ld KiB (%.0f bytes per teardown; OpenSSL's heap %s); "
      "fds %d -> %d; jobs held %s\n",
      implementation, options.ec ? "EC P-256" : "RSA-2048", mode, teardowns_paused, errors_left,
      healthy, healthy_failed, rss_after - rss_before, rss_per_teardown,
      heap_counted
          ? (std::to_string(static_cast<long long>(heap_per_teardown)) + " bytes per teardown")
                .c_str()
          : "not counted",
      fds_before, fds_after, jobs.c_str());
  char jobs_per_teardown[32] = "n/a";
  if (jobs_before >= 0) {
    std::snprintf(jobs_per_teardown, sizeof jobs_per_teardown, "%.3f",
                  static_cast<double>(jobs_after - jobs_before) / teardowns);
  }
  std::printf(
      "figures: %s %s teardowns=%d rss_bytes=%.0f heap_bytes=%s jobs=%s fds=%.3f\n", implementation,
      mode, teardowns_paused, rss_per_teardown,
      heap_counted ? std::to_string(static_cast<long long>(heap_per_teardown)).c_str() : "n/a",
      jobs_per_teardown, static_cast<double>(fds_after - fds_before) / teardowns);
  std::fflush(stdout);

  SSL_CTX_free(server_ctx);
  SSL_CTX_free(client_ctx);
  X509_free(cert);
  EVP_PKEY_free(key);

  if (!options.expect_clean) return 0;
  bool clean = true;
  auto require = [&clean](bool ok, const char* what) {
    if (ok) return;
    std::printf("FAILED: %s\n", what);
    clean = false;
  };
  require(teardowns_paused == options.teardowns, "not every teardown found its job paused");
  require(errors_left == 0, "teardowns left errors queued");
  require(healthy_failed == 0, "healthy connections failed");
  if (options.rss_check) {
    require(beyond_heap_per_teardown < 1024.0,
            "RSS grew by 1 KiB or more per teardown beyond OpenSSL's heap");
  }
  require(fds_after == fds_before, "fds not back to the baseline");
  require(jobs_before >= 0 && jobs_after == jobs_before, "jobs not back to the baseline");
  return clean ? 0 : 1;
}
