// Host checks shared by the sm90 launch functions (forward and backward).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "support.h"

namespace jax_gna {
namespace sm90 {

// The consumers' setmaxnreg.inc can only take registers the producer's setmaxnreg.dec gave
// back to the CTA pool; if ptxas assigned fewer registers at entry than the split of Traits
// assumes, the kernel would spin forever in USETMAXREG.TRY_ALLOC. Empty when the split fits,
// else the reason (checked once per kernel).
template <class Traits, class Kernel>
std::string register_split_problem(Kernel kernel, const char* name) {
  static const int entry_regs = [kernel] {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, kernel) == cudaSuccess ? attr.numRegs : -1;
  }();
  if (entry_regs >= 0 &&
      static_cast<int64_t>(entry_regs) * Traits::kNumThreads >= Traits::kRegBudgetNeeded) {
    return std::string();
  }
  return fmt("%s: kernel has %d registers per thread at entry; the setmaxnreg split %d/%d "
             "needs %d per thread (it would hang)", name, entry_regs, Traits::kProducerRegs,
             Traits::kConsumerRegs,
             (Traits::kRegBudgetNeeded + Traits::kNumThreads - 1) / Traits::kNumThreads);
}

}  // namespace sm90
}  // namespace jax_gna
