// fatal.h - the last words of a process that cannot go on.
//
// This unit owns how asyncjob dies on purpose: a one-line message written
// straight to stderr with write(2), then abort(). Everything here is safe in
// a signal handler and on a stack with little room left: no allocation, no
// stdio, no locks. The message is built in a fixed buffer of the object
// (cut short if it does not fit) from the pieces the callers need: text,
// pointers in hexadecimal and sizes in decimal. It knows nothing of jobs,
// stacks or the error queue.
//
//   base::FatalMessage message;
//   message.Add("asyncjob: job ").AddPointer(job).Add(" used ")
//       .AddDecimal(bytes).Add(" bytes\n");
//   message.WriteAndAbort();
#ifndef ASYNCJOB_SRC_BASE_FATAL_H_
#define ASYNCJOB_SRC_BASE_FATAL_H_

#include <cstddef>

namespace asyncjob::base {

class FatalMessage {
 public:
  // Longest message kept, in bytes; the rest is dropped.
  static constexpr std::size_t kCapacity = 512;

  FatalMessage() = default;
  FatalMessage(const FatalMessage&) = delete;
  FatalMessage& operator=(const FatalMessage&) = delete;

  FatalMessage& Add(const char* text);
  // "0x" and lower-case hexadecimal digits, as printf's %p prints a
  // non-null pointer ("0x0" for null).
  FatalMessage& AddPointer(const void* pointer);
  FatalMessage& AddDecimal(unsigned long long value);

  const char* data() const { return text_; }
  std::size_t size() const { return length_; }

  // Writes the message to stderr (retrying short writes), then aborts.
  [[noreturn]] void WriteAndAbort() const;

 private:
  void Append(char c) {
    if (length_ < kCapacity) text_[length_++] = c;
  }

  char text_[kCapacity];
  std::size_t length_ = 0;
};

}  // namespace asyncjob::base

#endif  // ASYNCJOB_SRC_BASE_FATAL_H_
