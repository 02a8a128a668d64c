// tls_loadgen - many concurrent TLS handshakes from one process.
//
// Opens --connections connections to 127.0.0.1:--port, at most --concurrency
// at a time, on one epoll loop with non-blocking sockets. Each completes a
// handshake, sends a short message, checks that it comes back, and closes.
// With --abort-every K, every K-th connection is dropped right after its
// ClientHello went out, while the server's handshake is under way (the
// server must then free it without leaking). Prints a summary line:
//
//   tls_loadgen: 1000 handshakes, 0 failed, 50 aborted, 100 concurrent,
//   1234.5 handshakes/s
//
// Exits non-zero if any connection that was not aborted failed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Options {
  int port = 0;
  long connections = 1000;
  int concurrency = 100;
  long abort_every = 0;
  int timeout_seconds = 60;
};

enum class Phase { kConnecting, kHandshake, kWriting, kReading, kDone };

struct Client {
  SSL* ssl = nullptr;
  int socket = -1;
  Phase phase = Phase::kConnecting;
  bool abort_after_hello = false;
  std::string received;
};

const char kMessage[] = "ping from tls_loadgen";

class LoadGenerator {
 public:
  explicit LoadGenerator(const Options& options) : options_(options) {}
  int Run();

 private:
  bool Open();
  void Step(Client* c);
  void Finish(Client* c, bool ok);
  void Watch(Client* c, bool write);

  Options options_;
  SSL_CTX* ctx_ = nullptr;
  int epoll_ = -1;
  long started_ = 0;
  long succeeded_ = 0;
  long failed_ = 0;
  long aborted_ = 0;
  int active_ = 0;
};

bool LoadGenerator::Open() {
  auto* c = new Client;
  c->socket = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int yes = 1;
  setsockopt(c->socket, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(options_.port));
  ++started_;
  ++active_;
  c->abort_after_hello = options_.abort_every > 0 && started_ % options_.abort_every == 0;
  if (connect(c->socket, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 &&
      errno != EINPROGRESS) {
    Finish(c, false);
    return false;
  }
  c->ssl = SSL_new(ctx_);
  SSL_set_fd(c->ssl, c->socket);
  SSL_set_connect_state(c->ssl);
  epoll_event event{};
  event.events = EPOLLOUT;
  event.data.ptr = c;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, c->socket, &event);
  return true;
}

void LoadGenerator::Watch(Client* c, bool write) {
  epoll_event event{};
  event.events = write ? EPOLLOUT : EPOLLIN;
  event.data.ptr = c;
  epoll_ctl(epoll_, EPOLL_CTL_MOD, c->socket, &event);
}

void LoadGenerator::Finish(Client* c, bool ok) {
  if (c->abort_after_hello) {
    ++aborted_;
  } else if (ok) {
    ++succeeded_;
  } else {
    ++failed_;
    if (failed_ <= 3) ERR_print_errors_fp(stderr);
  }
  if (c->ssl != nullptr) SSL_free(c->ssl);
  epoll_ctl(epoll_, EPOLL_CTL_DEL, c->socket, nullptr);
  close(c->socket);
  delete c;
  --active_;
}

void LoadGenerator::Step(Client* c) {
  for (;;) {
    ERR_clear_error();
    int result = 1;
    switch (c->phase) {
      case Phase::kConnecting:
        c->phase = Phase::kHandshake;
        continue;
      case Phase::kHandshake:
        result = SSL_do_handshake(c->ssl);
        if (result <= 0 && c->abort_after_hello &&
            SSL_get_error(c->ssl, result) == SSL_ERROR_WANT_READ) {
          // The ClientHello is out and the server is working on it: leave.
          Finish(c, false);
          return;
        }
        if (result == 1) c->phase = Phase::kWriting;
        break;
      case Phase::kWriting:
        result = SSL_write(c->ssl, kMessage, sizeof kMessage - 1);
        if (result > 0) c->phase = Phase::kReading;
        break;
      case Phase::kReading: {
        char buffer[256];
        result = SSL_read(c->ssl, buffer, sizeof buffer);
        if (result > 0) {
          c->received.append(buffer, static_cast<std::size_t>(result));
          if (c->received.size() >= sizeof kMessage - 1) {
            Finish(c, c->received == kMessage);
            return;
          }
        }
        break;
      }
      case Phase::kDone:
        return;
    }
    if (result > 0) continue;
    switch (SSL_get_error(c->ssl, result)) {
      case SSL_ERROR_WANT_READ:
        Watch(c, false);
        return;
      case SSL_ERROR_WANT_WRITE:
        Watch(c, true);
        return;
      default:
        Finish(c, false);
        return;
    }
  }
}

int LoadGenerator::Run() {
  ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);  // full handshakes only
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + std::chrono::seconds(options_.timeout_seconds);
  int peak = 0;
  std::vector<epoll_event> events(256);
  while (started_ < options_.connections || active_ > 0) {
    while (active_ < options_.concurrency && started_ < options_.connections) Open();
    peak = std::max(peak, active_);
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "tls_loadgen: timed out with %d connections open\n", active_);
      failed_ += active_;
      break;
    }
    int ready = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 1000);
    for (int i = 0; i < ready; ++i) Step(static_cast<Client*>(events[i].data.ptr));
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "tls_loadgen: %ld handshakes, %ld failed, %ld aborted, %d concurrent, %.1f "
      "handshakes/s\n",
      succeeded_, failed_, aborted_, peak, static_cast<double>(succeeded_ + aborted_) / seconds);
  SSL_CTX_free(ctx_);
  close(epoll_);
  return failed_ == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    long value = std::atol(argv[i + 1]);
    if (arg == "--port")
      options.port = static_cast<int>(value);
    else if (arg == "--connections")
      options.connections = value;
    else if (arg == "--concurrency")
      options.concurrency = static_cast<int>(value);
    else if (arg == "--abort-every")
      options.abort_every = value;
    else if (arg == "--timeout")
      options.timeout_seconds = static_cast<int>(value);
    else {
      std::fprintf(stderr, "unknown option %s\n", arg.c_str());
      return 2;
    }
  }
  if (options.port == 0) {
    std::fprintf(stderr,
                 "usage: tls_loadgen --port N [--connections N] [--concurrency N] "
                 "[--abort-every K] [--timeout S]\n");
    return 2;
  }
  LoadGenerator generator(options);
  return generator.Run();
}
