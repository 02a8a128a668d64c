// load_report.cc - the line that tells a launcher where ASYNC_start_job went.
//
// When the environment names a file in ASYNCJOB_LOAD_REPORT, loading the
// library appends one line to that file, if it already exists:
//
//   asyncjob-load pid=<pid> bound=<yes|no> libcrypto=<yes|no> ASYNC_start_job=<object>
//
// bound=yes when the process-wide definition of ASYNC_start_job, the one
// libssl and OpenSSL programs bind to (unversioned or OPENSSL_3.0.0), is
// this library's; <object> names the file that defines it ("none" when
// nothing does). asyncjob-run creates the file and reads the line of the program it
// started, so that a program whose jobs would still run on libcrypto's own
// implementation is reported rather than silently measured. The file is
// never created here (a stale variable in a child's environment cannot
// litter), it is opened close-on-exec and closed at once, and every failure
// is ignored: the report is advice, never a reason to disturb the program.
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "asyncjob/async.h"
#include "openssl/libcrypto_bridge.h"

namespace {

// Any function of this library: its address names the object we are.
void Anchor() {}

const char* DefiningObject(void* address, const void** base) {
  Dl_info info{};
  if (address == nullptr || dladdr(address, &info) == 0) return nullptr;
  *base = info.dli_fbase;
  return info.dli_fname != nullptr && info.dli_fname[0] != '\0' ? info.dli_fname : "(program)";
}

__attribute__((constructor)) void WriteLoadReport() {
  const char* path = std::getenv("ASYNCJOB_LOAD_REPORT");
  if (path == nullptr || path[0] == '\0') return;
  const int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;

  const void* own_base = nullptr;
  DefiningObject(reinterpret_cast<void*>(&Anchor), &own_base);
  // A reference binds to the first definition in the lookup order that
  // accepts its version: an unversioned one (a program's own) accepts any,
  // which dlsym() sees and dlvsym() does not. Both must be ours.
  const void* resolved_base = nullptr;
  const char* object = DefiningObject(dlsym(RTLD_DEFAULT, "ASYNC_start_job"), &resolved_base);
  bool bound = object != nullptr && own_base != nullptr && resolved_base == own_base;
  const void* versioned_base = nullptr;
  const char* versioned_object =
      DefiningObject(dlvsym(RTLD_DEFAULT, "ASYNC_start_job", "OPENSSL_3.0.0"), &versioned_base);
  if (bound && versioned_object != nullptr && versioned_base != own_base) {
    bound = false;
    object = versioned_object;
  }
  // Idempotent: the bridge's own constructor may or may not have run yet.
  const bool libcrypto = asyncjob::openssl::ConnectToLibcrypto();

  char line[1024];
  const int length = std::snprintf(
      line, sizeof line, "asyncjob-load pid=%ld bound=%s libcrypto=%s ASYNC_start_job=%s\n",
      static_cast<long>(getpid()), bound ? "yes" : "no", libcrypto ? "yes" : "no",
      object != nullptr ? object : "none");
  if (length > 0) {
    // One write with O_APPEND: lines of processes sharing the file never mix.
    const size_t size =
        static_cast<size_t>(length) < sizeof line ? static_cast<size_t>(length) : sizeof line - 1;
    [[maybe_unused]] const ssize_t written = write(fd, line, size);
  }
  close(fd);
}

}  // namespace
