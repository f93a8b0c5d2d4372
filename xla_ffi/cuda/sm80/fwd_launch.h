// Host-side launcher of the forward kernel and the registration macro of its instantiation
// files (one dtype x head dim per .cu file, generated from jax_gna/kernel_manifest.py).
#pragma once

#include <cuda_runtime.h>

#include "../common/launch_utils.h"
#include "../common/registry.h"
#include "fwd_kernel.h"

namespace jax_gna::sm80 {

// Grid (Q tiles over all dilation-group combinations x query heads per KV head, heads_kv,
// batch): one CTA per (Q tile, query head); see fwd_kernel.h for the order and
// tile_scheduler.h for the heavy-first Q-tile order. A persistent grid would only pay off for
// strongly unbalanced causal problems; the reversed order already issues long CTAs first.
template <class Traits>
cudaError_t launch_fwd(const FwdParams& p, cudaStream_t stream) {
  static_assert(Traits::kSmemBytes <= kPortableSmemBytes, "fits every sm80+ part");
  const int64_t num_q_tiles = q_tile_grid(p.shape, p.tiles.q).total();
  if (num_q_tiles == 0 || p.shape.batch == 0 || p.shape.heads_q == 0) return cudaSuccess;
  auto kernel = &fwd_kernel<Traits>;
  if (cudaError_t err = set_max_dynamic_smem(kernel, Traits::kSmemBytes); err != cudaSuccess) {
    return err;
  }
  const int group = p.shape.heads_q / p.shape.heads_kv;
  const dim3 grid(unsigned(num_q_tiles * group), unsigned(p.shape.heads_kv),
                  unsigned(p.shape.batch));
  kernel<<<grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace jax_gna::sm80

// One forward instantiation: element type, head dim, Q tile tokens, KV tile tokens, warps,
// K/V buffers (kernel_traits.h kStages), ldmatrix prefetch in the S and P.V GEMMs.
#define JAX_GNA_SM80_FWD_INSTANCE(ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, WARPS, STAGES,        \
                                  PREFETCH_S, PREFETCH_PV)                                   \
  namespace jax_gna::sm80 {                                                                   \
  using FwdInstance = FwdTraits<ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, WARPS, STAGES,          \
                                PREFETCH_S, PREFETCH_PV>;                                     \
  JAX_GNA_REGISTER_FWD(KernelKey{"sm80", dtype_of<ELEMENT>(), HEAD_DIM, HEAD_DIM}, BLOCK_M,  \
                       BLOCK_N, &launch_fwd<FwdInstance>);                                    \
  }
