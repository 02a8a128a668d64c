/* no_unwind_tables.c - C code built without unwind tables, for the tests of
 * cancelling jobs paused beneath it (tests/job/CMakeLists.txt compiles it
 * with -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-exceptions).
 * The unwinder cannot step through its frames, so an exception thrown from
 * the callback would end in std::terminate. */
#include "no_unwind_tables.h"

static volatile int sink;

int CallWithoutUnwindTables(int (*callback)(void *), void *argument) {
  int result = callback(argument);
  sink += result; /* work after the call: it is not a tail call */
  return result + 1;
}
