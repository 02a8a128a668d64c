// job_ref.h - how the loop names one job in lists that may outlive it.
//
// A loop keeps its jobs in slots that are reused; a slot's generation
// changes every time its job ends. A JobRef (slot index and generation) is
// therefore recognised as stale once its job has ended: the loop compares
// the generation with the slot's before acting on it. Knows nothing else.
#ifndef ASYNCJOB_SRC_LOOP_JOB_REF_H_
#define ASYNCJOB_SRC_LOOP_JOB_REF_H_

#include <cstdint>

namespace asyncjob::detail {

struct JobRef {
  std::uint32_t index;       // the job's slot
  std::uint32_t generation;  // the slot's generation while the job lives
};

}  // namespace asyncjob::detail

#endif  // ASYNCJOB_SRC_LOOP_JOB_REF_H_
