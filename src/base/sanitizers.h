// sanitizers.h - which dynamic-analysis tools this build is compiled for.
//
// Defines ASYNCJOB_ASAN, ASYNCJOB_TSAN and ASYNCJOB_VALGRIND to 0 or 1 and
// includes the tools' client headers when they are in use, so that the rest
// of the code can write `#if ASYNCJOB_ASAN` without repeating the detection.
// Part of base/ because every layer asks; it knows nothing of what they do
// with the answer.
#ifndef ASYNCJOB_SRC_BASE_SANITIZERS_H_
#define ASYNCJOB_SRC_BASE_SANITIZERS_H_

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASYNCJOB_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define ASYNCJOB_TSAN 1
#endif
#endif
#if !defined(ASYNCJOB_ASAN) && defined(__SANITIZE_ADDRESS__)
#define ASYNCJOB_ASAN 1
#endif
#if !defined(ASYNCJOB_TSAN) && defined(__SANITIZE_THREAD__)
#define ASYNCJOB_TSAN 1
#endif
#ifndef ASYNCJOB_ASAN
#define ASYNCJOB_ASAN 0
#endif
#ifndef ASYNCJOB_TSAN
#define ASYNCJOB_TSAN 0
#endif
// Valgrind client requests cost a few instructions when not under valgrind;
// the build enables them whenever <valgrind/valgrind.h> is available.
#ifndef ASYNCJOB_VALGRIND
#define ASYNCJOB_VALGRIND 0
#endif

#if ASYNCJOB_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if ASYNCJOB_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if ASYNCJOB_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

#endif  // ASYNCJOB_SRC_BASE_SANITIZERS_H_
