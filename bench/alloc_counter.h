// alloc_counter.h - heap allocations made by the calling thread so far
// (malloc, calloc, realloc and the aligned variants; operator new goes
// through malloc). See alloc_counter.cc.
#ifndef ASYNCJOB_BENCH_ALLOC_COUNTER_H_
#define ASYNCJOB_BENCH_ALLOC_COUNTER_H_

namespace bench {

extern thread_local unsigned long allocations_on_this_thread
    __attribute__((tls_model("initial-exec")));

inline unsigned long AllocationsSoFar() { return allocations_on_this_thread; }

}  // namespace bench

#endif  // ASYNCJOB_BENCH_ALLOC_COUNTER_H_
