// tls_server - an asynchronous TLS echo server on one event-loop thread.
//
// Every connection runs with SSL_MODE_ASYNC, so that a handshake whose
// private-key operation goes to an asynchronous provider or engine pauses
// inside libssl's job instead of blocking the thread; the loop serves other
// connections meanwhile and resumes the operation when it is told that the
// work completed. Two ways of being told, selected with --notify:
//
//   callback  SSL_CTX_set_async_callback()/SSL_set_async_callback() and their
//             _arg setters (a third of the connections inherit the context's
//             callback and argument, a third set their own argument, a third
//             their own callback too; each callback checks the argument
//             libssl hands it). The callback runs on the provider's worker
//             thread:
//             it pushes the connection on a lock-free queue and writes the
//             loop's single eventfd only when the queue was empty, so a batch
//             of completions costs one system call. SSL_get_async_status()
//             tells a retry (ASYNC_STATUS_EAGAIN) from a submission.
//   fds       SSL_get_changed_async_fds(): the wait fds of every connection
//             are added to and removed from epoll as the provider changes
//             them (one eventfd per connection).
//
// A client that disconnects while its handshake is paused is handled as
// --on-abort says:
//
//   finish    (the default) the connection is marked closing and freed when
//             the operation completes: its job runs to its end, so that
//             nothing leaks and no stale fd stays in epoll, on any job
//             implementation.
//   free      the connection is freed at once (SSL_free, close), its job
//             still paused, as HAProxy and other proxies do when a client
//             resets. Under asyncjob the job is orphaned with its wait
//             context (docs/teardown.md): the provider's request is
//             withdrawn, or waited for if a worker is running it, and the
//             job's slot goes back to the pool; the completion callback of
//             a freed connection is never called afterwards. Under
//             libcrypto's own jobs each such teardown leaks its paused job,
//             and a late completion may reach the freed connection: run
//             this mode with asyncjob preloaded.
//
// The server is written against OpenSSL's API only. Linked with libcrypto
// alone it runs on libcrypto's job implementation; with asyncjob preloaded
// (LD_PRELOAD=libasyncjob.so) the same binary runs on asyncjob.
//
// Usage: tls_server --cert FILE --key FILE [--port N] [--notify callback|fds]
//                   [--provider-path DIR --provider NAME ... --propquery Q]
//                   [--exit-after N] [--on-abort finish|free]
// Prints "listening on PORT" once ready, and counters when it exits.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

enum class Notify { kCallback, kFds };
enum class OnAbort { kFinish, kFree };

// Set once before the loop starts: the completion callbacks read it.
OnAbort on_abort_mode = OnAbort::kFinish;

struct Options {
  std::string cert;
  std::string key;
  int port = 0;
  Notify notify = Notify::kCallback;
  std::string provider_path;
  std::vector<std::string> providers;
  std::string propquery;
  long exit_after = 0;  // 0: run until SIGTERM/SIGINT
  OnAbort on_abort = OnAbort::kFinish;
};

enum class Phase { kHandshake, kReading, kWriting, kShutdown };

class Server;

// How a connection's completion callback was set up (callback mode).
enum class CallbackSetup { kContextOnly, kConnectionArgument, kConnectionCallback };

struct Connection {
  Server* server = nullptr;
  CallbackSetup callback_setup = CallbackSetup::kContextOnly;
  SSL* ssl = nullptr;
  int socket = -1;
  Phase phase = Phase::kHandshake;
  bool waiting_for_async = false;   // an operation is paused in its job
  bool closing = false;             // peer gone or error: free once idle
  std::atomic<bool> queued{false};  // on the completion queue
  Connection* next_completed = nullptr;
  std::string pending;  // bytes read, to echo back
  std::size_t written = 0;
  std::vector<OSSL_ASYNC_FD> async_fds;  // in epoll (fds mode)
  bool socket_watched = true;            // the socket is in epoll
  bool left_mid_operation = false;       // peer hung up while it was paused
};

struct Counters {
  long accepted = 0;
  long handshakes = 0;
  long echoed_bytes = 0;
  long want_async = 0;
  long want_async_job = 0;
  long callbacks = 0;  // completion callbacks (any thread)
  long eagain_status = 0;
  long ok_status = 0;
  long left_mid_operation = 0;
  long freed_while_paused = 0;  // --on-abort free: freed with the job paused
  long errors = 0;
};

// Epoll tags: the low bit tells a connection's socket from one of its async
// fds; the listener and the eventfd have tags of their own.
constexpr std::uint64_t kListenerTag = 1;
constexpr std::uint64_t kWakeTag = 3;
std::uint64_t SocketTag(Connection* c) { return reinterpret_cast<std::uint64_t>(c); }
std::uint64_t AsyncTag(Connection* c) { return reinterpret_cast<std::uint64_t>(c) | 2; }

volatile sig_atomic_t stop_requested = 0;
void OnSignal(int) { stop_requested = 1; }

class Server {
 public:
  explicit Server(const Options& options) : options_(options) {}
  int Run();

 private:
  bool Setup();
  void Accept();
  void Drive(Connection* c);
  void Step(Connection* c);
  void TrackAsyncFds(Connection* c);
  void WatchSocket(Connection* c, bool want_write);
  void Close(Connection* c);
  void Free(Connection* c);
  void DrainCompletions();
  static int OnCompletionContextCallback(SSL* ssl, void* arg);
  static int OnCompletionConnectionCallback(SSL* ssl, void* arg);
  void PushCompleted(Connection* c);

  Options options_;
  SSL_CTX* ctx_ = nullptr;
  int epoll_ = -1;
  int listener_ = -1;
  int wake_ = -1;
  std::unordered_map<Connection*, bool> live_;
  std::vector<Connection*> retry_later_;         // SSL_ERROR_WANT_ASYNC_JOB / EAGAIN
  std::atomic<Connection*> completed_{nullptr};  // lock-free LIFO of completions
  std::atomic<long> callback_count_{0};
  // Completions by which callback and argument libssl passed: the context's
  // callback with the context's argument, the context's callback with the
  // connection's argument, the connection's own callback.
  std::atomic<long> context_callback_context_arg_{0};
  std::atomic<long> context_callback_connection_arg_{0};
  std::atomic<long> connection_callback_{0};
  Counters counters_;
  void* ctx_callback_arg_check_ = this;
  std::vector<Connection*> zombies_;  // freed; deleted once nothing refers to them
  std::size_t fds_at_start_ = 0;
  long freed_ = 0;
};

bool Server::Setup() {
  OSSL_LIB_CTX* libctx = nullptr;  // the default library context
  if (!options_.provider_path.empty()) {
    OSSL_PROVIDER_set_default_search_path(libctx, options_.provider_path.c_str());
  }
  for (const std::string& name : options_.providers) {
    if (OSSL_PROVIDER_load(libctx, name.c_str()) == nullptr) {
      std::fprintf(stderr, "cannot load provider %s\n", name.c_str());
      ERR_print_errors_fp(stderr);
      return false;
    }
  }
  ctx_ = SSL_CTX_new_ex(libctx, options_.propquery.empty() ? nullptr : options_.propquery.c_str(),
                        TLS_server_method());
  if (ctx_ == nullptr || SSL_CTX_use_certificate_chain_file(ctx_, options_.cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx_, options_.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    return false;
  }
  SSL_CTX_set_mode(ctx_, SSL_MODE_ASYNC | SSL_MODE_ENABLE_PARTIAL_WRITE);
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);  // every handshake signs
  SSL_CTX_set_num_tickets(ctx_, 0);
  if (options_.notify == Notify::kCallback) {
    // The context-wide callback and argument; each SSL then overrides the
    // argument (and, for half of them, the callback) with its own.
    if (SSL_CTX_set_async_callback(ctx_, &Server::OnCompletionContextCallback) != 1 ||
        SSL_CTX_set_async_callback_arg(ctx_, ctx_callback_arg_check_) != 1) {
      return false;
    }
  }
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int yes = 1;
  setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(options_.port));
  if (bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener_, 1024) != 0) {
    std::perror("bind/listen");
    return false;
  }
  socklen_t length = sizeof address;
  getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kListenerTag;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, listener_, &event);
  event.data.u64 = kWakeTag;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &event);
  std::printf("listening on %d (notify: %s)\n", ntohs(address.sin_port),
              options_.notify == Notify::kCallback ? "callback" : "fds");
  std::fflush(stdout);
  return true;
}

// Run on whatever thread completed the work: small, never blocking. They
// check that libssl passed the argument each connection was set up with,
// then queue the connection once (one eventfd write per batch).
int Server::OnCompletionContextCallback(SSL* ssl, void* arg) {
  auto* c = static_cast<Connection*>(SSL_get_app_data(ssl));
  // With --on-abort free, a worker that was running a freed connection's
  // signature completes while SSL_free waits for it, after libssl has
  // dropped the connection's app data: nothing is left to resume.
  if (c == nullptr && on_abort_mode == OnAbort::kFree) return 1;
  if (c == nullptr || c->server == nullptr) std::abort();
  Server* server = c->server;
  if (arg == server) {
    if (c->callback_setup != CallbackSetup::kContextOnly) std::abort();
    server->context_callback_context_arg_.fetch_add(1, std::memory_order_relaxed);
  } else {
    if (arg != c || c->callback_setup != CallbackSetup::kConnectionArgument) std::abort();
    server->context_callback_connection_arg_.fetch_add(1, std::memory_order_relaxed);
  }
  server->callback_count_.fetch_add(1, std::memory_order_relaxed);
  server->PushCompleted(c);
  return 1;
}

int Server::OnCompletionConnectionCallback(SSL* ssl, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (c == nullptr || c->ssl != ssl || c->callback_setup != CallbackSetup::kConnectionCallback) {
    std::abort();
  }
  c->server->connection_callback_.fetch_add(1, std::memory_order_relaxed);
  c->server->callback_count_.fetch_add(1, std::memory_order_relaxed);
  c->server->PushCompleted(c);
  return 1;
}

void Server::PushCompleted(Connection* c) {
  if (c->queued.exchange(true, std::memory_order_acq_rel)) return;  // already queued
  Connection* head = completed_.load(std::memory_order_relaxed);
  do {
    c->next_completed = head;
  } while (!completed_.compare_exchange_weak(head, c, std::memory_order_release,
                                             std::memory_order_relaxed));
  if (head == nullptr) {
    std::uint64_t one = 1;
    ssize_t ignored = write(wake_, &one, sizeof one);
    (void)ignored;
  }
}

void Server::DrainCompletions() {
  std::uint64_t count = 0;
  ssize_t ignored = read(wake_, &count, sizeof count);
  (void)ignored;
  Connection* c = completed_.exchange(nullptr, std::memory_order_acquire);
  while (c != nullptr) {
    Connection* next = c->next_completed;
    c->queued.store(false, std::memory_order_release);
    if (live_.count(c) == 0) {  // freed while its completion was on the way
      c = next;
      continue;
    }
    int status = ASYNC_STATUS_UNSUPPORTED;
    if (SSL_get_async_status(c->ssl, &status) == 1) {
      if (status == ASYNC_STATUS_EAGAIN) ++counters_.eagain_status;
      if (status == ASYNC_STATUS_OK) ++counters_.ok_status;
    }
    Drive(c);
    c = next;
  }
}

void Server::Accept() {
  for (;;) {
    int fd = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int yes = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    auto* c = new Connection;
    c->socket = fd;
    c->ssl = SSL_new(ctx_);
    SSL_set_fd(c->ssl, fd);
    SSL_set_accept_state(c->ssl);
    SSL_set_app_data(c->ssl, c);
    c->server = this;
    if (options_.notify == Notify::kCallback) {
      // A third of the connections inherit the context's callback and
      // argument, a third set their own argument, a third their own
      // callback and argument.
      c->callback_setup = static_cast<CallbackSetup>(counters_.accepted % 3);
      if (c->callback_setup != CallbackSetup::kContextOnly &&
          SSL_set_async_callback_arg(c->ssl, c) != 1) {
        std::abort();
      }
      if (c->callback_setup == CallbackSetup::kConnectionCallback &&
          SSL_set_async_callback(c->ssl, &Server::OnCompletionConnectionCallback) != 1) {
        std::abort();
      }
    }
    live_[c] = true;
    ++counters_.accepted;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = SocketTag(c);
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event);
    Drive(c);
  }
}

void Server::WatchSocket(Connection* c, bool want_write) {
  if (!c->socket_watched) return;
  epoll_event event{};
  event.events = want_write ? EPOLLOUT : EPOLLIN;
  event.data.u64 = SocketTag(c);
  epoll_ctl(epoll_, EPOLL_CTL_MOD, c->socket, &event);
}

// While an operation is paused, only the peer hanging up matters.
void WatchForHangUp(int epoll, Connection* c) {
  if (!c->socket_watched) return;
  epoll_event event{};
  event.events = EPOLLRDHUP;
  event.data.u64 = SocketTag(c);
  epoll_ctl(epoll, EPOLL_CTL_MOD, c->socket, &event);
}

void Server::TrackAsyncFds(Connection* c) {
  if (options_.notify != Notify::kFds) return;
  size_t added = 0, deleted = 0;
  if (SSL_get_changed_async_fds(c->ssl, nullptr, &added, nullptr, &deleted) != 1) return;
  std::vector<OSSL_ASYNC_FD> add(added), del(deleted);
  SSL_get_changed_async_fds(c->ssl, add.data(), &added, del.data(), &deleted);
  for (OSSL_ASYNC_FD fd : del) {
    epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    std::erase(c->async_fds, fd);
  }
  for (OSSL_ASYNC_FD fd : add) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = AsyncTag(c);
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) == 0) c->async_fds.push_back(fd);
  }
}

// Calls into libssl for the connection's current phase until it would block.
void Server::Drive(Connection* c) {
  for (int rounds = 0; rounds < 64; ++rounds) {
    Phase before = c->phase;
    std::size_t written_before = c->written;
    std::size_t pending_before = c->pending.size();
    Step(c);
    if (c->ssl == nullptr) return;  // freed (kept until the end of the iteration)
    TrackAsyncFds(c);
    if (c->waiting_for_async) return;
    if (c->phase == before && c->written == written_before && c->pending.size() == pending_before) {
      return;  // waiting for the socket
    }
  }
}

void Server::Step(Connection* c) {
  ERR_clear_error();
  int result = 0;
  switch (c->phase) {
    case Phase::kHandshake:
      result = SSL_do_handshake(c->ssl);
      break;
    case Phase::kReading: {
      char buffer[4096];
      result = SSL_read(c->ssl, buffer, sizeof buffer);
      if (result > 0) c->pending.append(buffer, static_cast<std::size_t>(result));
      break;
    }
    case Phase::kWriting:
      result = SSL_write(c->ssl, c->pending.data() + c->written,
                         static_cast<int>(c->pending.size() - c->written));
      break;
    case Phase::kShutdown:
      result = SSL_shutdown(c->ssl);
      if (result >= 0) {
        Free(c);
        return;
      }
      break;
  }
  c->waiting_for_async = false;
  if (result > 0) {
    if (c->phase == Phase::kHandshake) {
      ++counters_.handshakes;
      c->phase = Phase::kReading;
    } else if (c->phase == Phase::kReading) {
      c->phase = Phase::kWriting;
      c->written = 0;
    } else if (c->phase == Phase::kWriting) {
      c->written += static_cast<std::size_t>(result);
      counters_.echoed_bytes += result;
      if (c->written == c->pending.size()) {
        c->pending.clear();
        c->written = 0;
        c->phase = Phase::kReading;
      }
    }
    if (c->closing) Close(c);
    return;
  }
  switch (SSL_get_error(c->ssl, result)) {
    case SSL_ERROR_WANT_READ:
      if (c->closing) return Close(c);
      WatchSocket(c, false);
      return;
    case SSL_ERROR_WANT_WRITE:
      if (c->closing) return Close(c);
      WatchSocket(c, true);
      return;
    case SSL_ERROR_WANT_ASYNC:
      // Paused in its job: wait for the callback or the async fd.
      ++counters_.want_async;
      c->waiting_for_async = true;
      WatchForHangUp(epoll_, c);
      return;
    case SSL_ERROR_WANT_ASYNC_JOB:
      // The thread's job pool is exhausted: try again after others finish.
      ++counters_.want_async_job;
      c->waiting_for_async = true;
      WatchForHangUp(epoll_, c);
      retry_later_.push_back(c);
      return;
    case SSL_ERROR_ZERO_RETURN:
      c->phase = Phase::kShutdown;
      return Step(c);
    default:
      if (c->phase == Phase::kHandshake) ++counters_.errors;
      Close(c);
      return;
  }
}

// The peer left or the connection failed. A connection whose operation is
// paused in a job is freed when the job completes, or at once with
// --on-abort free.
void Server::Close(Connection* c) {
  c->closing = true;
  if (options_.on_abort == OnAbort::kFinish &&
      (c->waiting_for_async || SSL_waiting_for_async(c->ssl))) {
    return;
  }
  Free(c);
}

void Server::Free(Connection* c) {
  if (c->left_mid_operation) ++counters_.left_mid_operation;
  if (c->waiting_for_async || SSL_waiting_for_async(c->ssl)) ++counters_.freed_while_paused;
  for (OSSL_ASYNC_FD fd : c->async_fds) epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
  if (c->socket_watched) epoll_ctl(epoll_, EPOLL_CTL_DEL, c->socket, nullptr);
  SSL_free(c->ssl);
  c->ssl = nullptr;
  close(c->socket);
  live_.erase(c);
  std::erase(retry_later_, c);
  // Callers up the stack, events later in this batch or a queued completion
  // may still refer to it: it is deleted at the end of the loop iteration,
  // once the completion queue no longer holds it.
  zombies_.push_back(c);
  ++freed_;
}

std::size_t CountOpenFds() {
  std::size_t count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count;
}

int Server::Run() {
  fds_at_start_ = CountOpenFds();
  if (!Setup()) return 1;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, &OnSignal);
  signal(SIGINT, &OnSignal);
  std::vector<epoll_event> events(256);
  while (!stop_requested) {
    if (options_.exit_after > 0 && freed_ >= options_.exit_after && live_.empty()) break;
    int timeout = retry_later_.empty() ? 200 : 0;
    int ready = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), timeout);
    for (int i = 0; i < ready; ++i) {
      std::uint64_t tag = events[i].data.u64;
      if (tag == kListenerTag) {
        Accept();
      } else if (tag == kWakeTag) {
        DrainCompletions();
      } else {
        auto* c = reinterpret_cast<Connection*>(tag & ~std::uint64_t{3});
        if (live_.count(c) == 0) continue;  // freed earlier in this batch
        if ((tag & 2) == 0 && c->waiting_for_async) {
          if ((events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
            c->left_mid_operation = true;
            if (options_.on_abort == OnAbort::kFree) {
              Close(c);  // frees it now, its job paused
              continue;
            }
            // The peer left mid-operation: free it once the operation completes.
            c->closing = true;
            epoll_ctl(epoll_, EPOLL_CTL_DEL, c->socket, nullptr);
            c->socket_watched = false;
          }
          continue;
        }
        Drive(c);
      }
    }
    std::vector<Connection*> retry;
    retry.swap(retry_later_);
    for (Connection* c : retry) {
      if (live_.count(c) != 0) Drive(c);
    }
    // Records whose queued completion has since been drained.
    std::erase_if(zombies_, [](Connection* c) {
      if (c->queued.load(std::memory_order_acquire)) return false;
      delete c;
      return true;
    });
  }
  counters_.callbacks = callback_count_.load();
  const std::size_t still_open = live_.size();
  for (auto& [c, unused] : live_) {
    SSL_free(c->ssl);
    close(c->socket);
    delete c;
  }
  for (Connection* c : zombies_) delete c;
  SSL_CTX_free(ctx_);
  close(listener_);
  close(wake_);
  close(epoll_);
  std::printf(
      "tls_server: %ld accepted, %ld handshakes, %ld bytes echoed, %ld WANT_ASYNC, %ld "
      "WANT_ASYNC_JOB, %ld callbacks (%ld status OK, %ld EAGAIN; %ld context callback with "
      "context arg, %ld context callback with connection arg, %ld connection callback), %ld "
      "clients left mid-operation, %ld freed while paused, %ld handshake errors, %zu still "
      "open, %zu fds open at exit (%zu at start)\n",
      counters_.accepted, counters_.handshakes, counters_.echoed_bytes, counters_.want_async,
      counters_.want_async_job, counters_.callbacks, counters_.ok_status, counters_.eagain_status,
      context_callback_context_arg_.load(), context_callback_connection_arg_.load(),
      connection_callback_.load(), counters_.left_mid_operation, counters_.freed_while_paused,
      counters_.errors, still_open, CountOpenFds(), fds_at_start_);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--cert")
      options.cert = value();
    else if (arg == "--key")
      options.key = value();
    else if (arg == "--port")
      options.port = std::atoi(value().c_str());
    else if (arg == "--notify") {
      std::string mode = value();
      if (mode == "callback")
        options.notify = Notify::kCallback;
      else if (mode == "fds")
        options.notify = Notify::kFds;
      else {
        std::fprintf(stderr, "--notify is callback or fds\n");
        return 2;
      }
    } else if (arg == "--provider-path")
      options.provider_path = value();
    else if (arg == "--provider")
      options.providers.push_back(value());
    else if (arg == "--propquery")
      options.propquery = value();
    else if (arg == "--exit-after")
      options.exit_after = std::atol(value().c_str());
    else if (arg == "--on-abort") {
      std::string mode = value();
      if (mode == "finish")
        options.on_abort = OnAbort::kFinish;
      else if (mode == "free")
        options.on_abort = OnAbort::kFree;
      else {
        std::fprintf(stderr, "--on-abort is finish or free\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "unknown option %s\n", arg.c_str());
      return 2;
    }
  }
  if (options.cert.empty() || options.key.empty()) {
    std::fprintf(stderr, "usage: tls_server --cert FILE --key FILE [options]\n");
    return 2;
  }
  on_abort_mode = options.on_abort;
  Server server(options);
  return server.Run();
}
