// Persistent tile scheduler of the sm90 GNA forward kernel, host and device.
//
// The grid has min(num_sms, total_work) CTAs. CTA b starts with work item b; afterwards
// each CTA takes the next item either from a global atomic counter (dynamic: greedy list
// scheduling, so a CTA that drew cheap items simply takes more; the tail is at most one
// item) or, without workspace, round-robin (item b + k * grid). Every item in
// [0, total_work) is processed exactly once in both modes (test/host_check.cc checks it).
//
// Only the producer thread talks to the scheduler; it hands each item to the consumer
// warpgroups through shared memory together with the item's Q tile (see mainloop.h), so the
// consumers never touch the counter. The atomic for item i+1 is issued when item i starts,
// so its latency hides behind item i's loads.
//
// The counter (one int in FwdParams::workspace) must be zero at launch; the launch function
// zeroes it with cudaMemsetAsync on the launch stream (stream-ordered, graph-capturable).
#pragma once

#include "jax_gna/window.h"

namespace jax_gna {
namespace sm90 {

struct SchedulerParams {
  int total_work;
  int* counter;  // nullptr: static round-robin
};

// `fetch_add(counter)` returns the old value and adds 1 (atomicAdd on device; a plain
// counter in the host check).
template <class FetchAdd>
GNA_HD int scheduler_next(const SchedulerParams& s, int current, int grid, FetchAdd&& fetch_add) {
  if (s.counter != nullptr) return grid + fetch_add(s.counter);
  return current + grid;
}

GNA_HD int scheduler_first(int block) { return block; }

#if defined(__CUDACC__)
struct DeviceFetchAdd {
  __device__ __forceinline__ int operator()(int* counter) const { return atomicAdd(counter, 1); }
};
#endif

}  // namespace sm90
}  // namespace jax_gna
