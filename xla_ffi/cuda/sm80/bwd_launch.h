// Host-side launcher of the sm80 backward and the registration macro of its instantiation
// files (one dtype x head dim per .cu file, generated from jax_gna/kernel_manifest.py).
//
// Sequence on the stream (the FFI handler has zeroed dq_accum unless deterministic):
//   1. bwd_delta_kernel     delta = rowsum(dO * O) - dlse
//   2. bwd_dkdv_kernel      dK, dV (+ dQ atomics into dq_accum), extra-token partials
//   3. deterministic ? bwd_dq_kernel (dQ Q-tile-major, no atomics)
//                    : bwd_dq_convert_kernel (dq_accum -> dq)
//   4. bwd_extra_reduce_kernel (E > 0): sum the extra-token partials over splits, in order
// BwdParams::parts (params.h) selects the steps of a call split with another family:
// delta -> 1; extra_tokens / spatial_tiles -> the extra-token CTAs (first in the grid) / the
// spatial ones of 2; dq_final -> 3; extra_tokens -> 4.
#pragma once

#include <cuda_runtime.h>

#include "../common/launch_utils.h"
#include "../common/bwd_aux_kernels.h"
#include "../common/registry.h"
#include "bwd_dq_kernel.h"
#include "bwd_kernel.h"

namespace jax_gna::sm80 {

template <class Traits, class DqTraitsT>
cudaError_t launch_bwd(const BwdParams& p, cudaStream_t stream) {
  static_assert(Traits::kSmemBytes <= kPortableSmemBytes, "fits every sm80+ part");
  static_assert(DqTraitsT::kSmemBytes <= kPortableSmemBytes, "fits every sm80+ part");
  static_assert(Traits::kBlockM == DqTraitsT::kBlockM && Traits::kBlockN == DqTraitsT::kBlockN,
                "both kernels walk the same tile boxes");
  using Element = typename Traits::Element;
  constexpr int kHeadDim = Traits::kHeadDim;
  const FwdParams& f = p.fwd;
  const ProblemShape& s = f.shape;
  if (s.batch == 0) return cudaSuccess;
  const BwdParams::Parts& parts = p.parts;
  // The spatial CTAs follow the extra-token ones in the grid: no launch of them alone.
  if (parts.spatial_tiles && !parts.extra_tokens) return cudaErrorInvalidValue;
  if (parts.delta) {
    if (cudaError_t err = launch_bwd_delta<Element, kHeadDim>(p, stream); err != cudaSuccess)
      return err;
  }

  {
    const int64_t kv_tiles = tile_grid(s, f.tiles.kv).total();
    const int64_t extra_ctas =
        int64_t(ceil_div(s.num_extra, Traits::kBlockN)) * p.num_extra_splits;
    auto kernel = &bwd_dkdv_kernel<Traits>;
    if (cudaError_t err = set_max_dynamic_smem(kernel, Traits::kSmemBytes); err != cudaSuccess) {
      return err;
    }
    const int64_t ctas = (parts.extra_tokens ? extra_ctas : 0) +
                         (parts.spatial_tiles ? kv_tiles : 0);
    if (ctas > 0) {
      const dim3 grid(unsigned(ctas), unsigned(s.heads_kv), unsigned(s.batch));
      kernel<<<grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(p);
      if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    }
  }

  if (!parts.dq_final) {
    // Another family's launch adds its dQ parts into dq_accum and converts it.
  } else if (p.deterministic) {
    auto kernel = &bwd_dq_kernel<DqTraitsT>;
    if (cudaError_t err = set_max_dynamic_smem(kernel, DqTraitsT::kSmemBytes);
        err != cudaSuccess) {
      return err;
    }
    const dim3 grid(unsigned(q_tile_grid(s, f.tiles.q).total() * (s.heads_q / s.heads_kv)),
                    unsigned(s.heads_kv), unsigned(s.batch));
    kernel<<<grid, DqTraitsT::kNThreads, DqTraitsT::kSmemBytes, stream>>>(p);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  } else if (cudaError_t err = launch_dq_convert<Element, kHeadDim>(p, stream);
             err != cudaSuccess) {
    return err;
  }

  if (s.num_extra > 0 && parts.extra_tokens) {
    const int64_t per_split = int64_t(s.batch) * s.num_extra * s.heads_kv * kHeadDim;
    bwd_extra_reduce_kernel<Element>
        <<<ceil_div_u(per_split, kAuxThreads), kAuxThreads, 0, stream>>>(
            p.dextra_accum, static_cast<Element*>(p.dextra_k),
            static_cast<Element*>(p.dextra_v), per_split, p.num_extra_splits);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace jax_gna::sm80

// One backward instantiation: element type, head dim, Q and KV tile tokens (both backward
// kernels), warps of the dK/dV kernel and their split (S/dP: WARPS_M_SDP along queries;
// dK/dV/dQ: WARPS_M_DKV along rows); the deterministic dQ kernel uses 4 warps.
#define JAX_GNA_SM80_BWD_INSTANCE(ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, WARPS, WARPS_M_SDP,        \
                                  WARPS_M_DKV)                                                   \
  namespace jax_gna::sm80 {                                                                      \
  using BwdInstance =                                                                            \
      BwdTraits<ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, WARPS, WARPS_M_SDP, WARPS_M_DKV>;           \
  using DqInstance = DqTraits<ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, 4>;                           \
  JAX_GNA_REGISTER_BWD(KernelKey{"sm80", dtype_of<ELEMENT>(), HEAD_DIM, HEAD_DIM}, BLOCK_M,      \
                       BLOCK_N, &launch_bwd<BwdInstance, DqInstance>);                           \
  }
