// Epilogue of the sm90 GNA forward kernel: O and LSE straight from registers.
//
// Each thread owns two rows of its warpgroup's 64 x D output tile and, per row, pairs of
// adjacent head-dim columns (8 * j + 2 * quad, +1): one 32-bit store per pair, with int64
// offsets from the token's tensor coordinates (x = g + d * jj per dim), so dilation groups,
// partial tiles (rows past the group's end are skipped) and any output strides need no
// special path. Output traffic is ~2% of the K/V traffic of a typical item, so the direct
// stores cost little next to the mainloop; no shared memory is spent on an O staging buffer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include <cute/tensor.hpp>

#include <cutlass/numeric_types.h>

#include "kernel_traits.h"
#include "mask.h"
#include "tile_map.h"

namespace jax_gna {
namespace sm90 {

// Two floats -> one 32-bit word of two 16-bit values (first in the low half).
template <class Element>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<Element, cutlass::bfloat16_t>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    static_assert(std::is_same_v<Element, cutlass::half_t>, "bf16 or fp16 only");
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// Element offset of group-local row r of the Q tile in a [B, S0, S1, S2, H(, D)] tensor.
__device__ __forceinline__ int64_t token_offset(const ProblemDesc& prob, const QTileDim (&qd)[3],
                                                int r, const int64_t (&stride)[5], int b, int h) {
  int t[3];
  split_row(r, prob.dim[0].q_log2, prob.dim[1].q_log2, prob.dim[2].q_log2, t);
  int64_t off = static_cast<int64_t>(b) * stride[0] + static_cast<int64_t>(h) * stride[4];
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    off += static_cast<int64_t>(token_coord(prob.dim[i], qd[i].group, qd[i].q0 + t[i])) *
           stride[1 + i];
  }
  return off;
}

template <class Element, class FragO>
__device__ __forceinline__ void store_output(const KernelParams& p, const WorkCoord& wc,
                                             const QTileDim (&qd)[3], int row0, int quad,
                                             const FragO& o,
                                             const float (&lse)[2]) {
  constexpr int kSize = decltype(cute::size(o))::value;  // 2 rows x D/4 columns
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = row0 + 8 * h;
    if (!row_valid(p.prob, qd, r)) continue;
    Element* out = static_cast<Element*>(p.out) +
                   token_offset(p.prob, qd, r, p.out_stride, wc.b, wc.hq) + 2 * quad;
#pragma unroll
    for (int i = 2 * h; i < kSize; i += 4) {  // elements (pair 0/1, row half h, block i / 4)
      *reinterpret_cast<uint32_t*>(out + 8 * (i >> 2)) = pack2<Element>(o(i), o(i + 1));
    }
    if (p.lse != nullptr && quad == 0) {
      p.lse[token_offset(p.prob, qd, r, p.lse_stride, wc.b, wc.hq)] = lse[h];
    }
  }
}

}  // namespace sm90
}  // namespace jax_gna
