// fatal.cc - FatalMessage (fatal.h): an async-signal-safe message, then abort.
#include "base/fatal.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

namespace asyncjob::base {
namespace {

void WriteToStderr(const char* text, std::size_t length) {
  std::size_t done = 0;
  while (done < length) {
    ssize_t written = write(STDERR_FILENO, text + done, length - done);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return;
    done += static_cast<std::size_t>(written);
  }
}

}  // namespace

FatalMessage& FatalMessage::Add(const char* text) {
  while (*text != '\0' && length_ < kCapacity) Append(*text++);
  return *this;
}

FatalMessage& FatalMessage::AddPointer(const void* pointer) {
  auto value = reinterpret_cast<std::uintptr_t>(pointer);
  char digits[2 * sizeof value];
  std::size_t count = 0;
  do {
    digits[count++] = "0123456789abcdef"[value & 0xF];
    value >>= 4;
  } while (value != 0);
  Add("0x");
  while (count > 0) Append(digits[--count]);
  return *this;
}

FatalMessage& FatalMessage::AddDecimal(unsigned long long value) {
  char digits[20];  // 2^64 - 1 has 20 digits
  std::size_t count = 0;
  do {
    digits[count++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (count > 0) Append(digits[--count]);
  return *this;
}

void FatalMessage::WriteAndAbort() const {
  WriteToStderr(text_, length_);
  std::abort();
}

}  // namespace asyncjob::base
