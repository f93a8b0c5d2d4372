// Small host-side launch helpers shared by the kernel backends.
#pragma once

#include <cuda_runtime.h>

namespace jax_gna {

// Opt a kernel into more than 48 KiB of dynamic shared memory. Cheap (no device work) and
// legal during stream capture, so it is called before every launch instead of caching a
// per-device flag.
template <class Kernel>
cudaError_t set_max_dynamic_smem(Kernel kernel, int bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                              cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

inline unsigned ceil_div_u(long long a, long long b) { return unsigned((a + b - 1) / b); }

}  // namespace jax_gna
