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
// behind: jobs in use back to the baseline, RSS growth below 1 KiB per
// teardown, fds back to the baseline, no healthy connection failed.
//
//   tls_teardown --provider-dir DIR [--teardowns N] [--healthy-every K]
//                [--notify fds|callback] [--key rsa|ec] [--expect-clean]
#include <dirent.h>
#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

// asyncjob's introspection, when the process runs on asyncjob.
extern "C" {
struct asyncjob_pool_stats_view {
  size_t max_size, total, idle, in_use, guarded, slab, custom;
};
int asyncjob_get_pool_stats(asyncjob_pool_stats_view* stats) __attribute__((weak));
}

namespace {

struct Options {
  const char* provider_dir = nullptr;
  int teardowns = 2000;
  int healthy_every = 4;  // one healthy connection per this many teardowns
  bool callback = false;
  bool ec = false;
  bool expect_clean = false;
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "tls_teardown: %s\n", what);
  ERR_print_errors_fp(stderr);
  std::exit(2);
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

long JobsInUse() {
  if (asyncjob_get_pool_stats == nullptr) return -1;
  asyncjob_pool_stats_view stats{};
  if (asyncjob_get_pool_stats(&stats) != 1) return 0;
  return static_cast<long>(stats.in_use);
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
    else
      Die(("unknown argument " + arg).c_str());
  }
  if (options.provider_dir == nullptr) Die("--provider-dir is required");
  if (options.healthy_every < 1) options.healthy_every = 1;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
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
  const long rss_before = ResidentKiB();
  const int fds_before = OpenFds();
  const long jobs_before = JobsInUse();

  int teardowns_paused = 0;
  int healthy = 0;
  int healthy_failed = 0;
  for (int i = 0; i < options.teardowns; ++i) {
    if (RunTeardown(server_ctx, client_ctx, options.callback)) ++teardowns_paused;
    // libssl reports whatever sits in the thread's error queue as the
    // failure of the next operation: a teardown must leave none.
    if (ERR_peek_error() != 0) {
      ++healthy_failed;
      ERR_clear_error();
    }
    if (i % options.healthy_every == options.healthy_every - 1) {
      ++healthy;
      if (!RunHealthy(server_ctx, client_ctx, options.callback)) ++healthy_failed;
    }
  }
  // Let the workers finish what the teardowns left them, then measure.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (int i = 0; i < 5; ++i) RunHealthy(server_ctx, client_ctx, options.callback);
  const long rss_after = ResidentKiB();
  const int fds_after = OpenFds();
  const long jobs_after = JobsInUse();

  const double rss_per_teardown =
      teardowns_paused > 0 ? static_cast<double>(rss_after - rss_before) * 1024.0 / teardowns_paused
                           : 0.0;
  std::printf(
      "%s, %s key, %s: %d teardowns at WANT_ASYNC, %d healthy connections (%d failed); "
      "RSS %+ld KiB (%.0f bytes per teardown); fds %d -> %d; jobs in use %s\n",
      asyncjob_get_pool_stats != nullptr ? "asyncjob" : "libcrypto",
      options.ec ? "EC P-256" : "RSA-2048", options.callback ? "callback" : "fds", teardowns_paused,
      healthy, healthy_failed, rss_after - rss_before, rss_per_teardown, fds_before, fds_after,
      jobs_before < 0
          ? "n/a"
          : (std::to_string(jobs_before) + " -> " + std::to_string(jobs_after)).c_str());

  SSL_CTX_free(server_ctx);
  SSL_CTX_free(client_ctx);
  X509_free(cert);
  EVP_PKEY_free(key);

  if (!options.expect_clean) return 0;
  bool clean = teardowns_paused == options.teardowns && healthy_failed == 0 &&
               rss_per_teardown < 1024.0 && fds_after == fds_before && jobs_after == jobs_before;
  if (!clean) std::printf("FAILED: the teardowns left something behind\n");
  return clean ? 0 : 1;
}
