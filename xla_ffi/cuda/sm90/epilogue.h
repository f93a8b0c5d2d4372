// Epilogue of the sm90 GNA forward kernel: O through a per-warpgroup shared-memory staging
// buffer to global memory with 16-byte row chunks, LSE straight from registers.
//
// A thread's O fragment holds, for each of its two rows, pairs of adjacent head-dim columns
// (8 * j + 2 * quad, +1). Stored straight to global memory those are 4-byte stores that touch
// 8 rows (8 cache lines) per warp instruction, D / 2 of them per thread. Staged, each
// 64-column panel of the warpgroup's 64 x D tile goes out as 16-byte chunks, a warp writing
// 4 whole 128-byte row segments per instruction: 4 stores per thread per panel. (Measured on
// the H200 together with the lazy rescale, in one step: seq32k 0.88 -> 0.90 and FLUX 16x16
// 0.96 -> 0.98 of cuDNN. The epilogue also runs while the next item's first GEMM is on the
// tensor cores: mainloop.h.)
// Rows keep their int64 token offsets (x = g + d * jj per dim), so dilation groups, partial
// tiles (rows past the group's end are skipped) and any output strides that are multiples of
// 8 elements take this one path.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include <cute/tensor.hpp>

#include <cutlass/arch/barrier.h>
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

// Writes the warpgroup's 64 rows of O (normalised fragment `o`) and their LSE. `tid`: thread
// index in the warpgroup; `stage`: the warpgroup's kStageElems buffer (16-byte aligned);
// `bar`: a named barrier id owned by the warpgroup (128 threads).
//
// Staging layout: row r is 128 bytes (one 64-column panel), its 16-byte chunk c at chunk
// position c ^ (r % 8). A warp's fragment writes (rows r0 + lane / 4, 4 bytes at column
// 8 * blk + 2 * quad) then hit 32 distinct banks, and the 8 threads reading one row's chunks
// read 128 contiguous bytes.
template <class Element, class FragO>
__device__ __forceinline__ void store_output(const KernelParams& p, const WorkCoord& wc,
                                             const QTileDim (&qd)[3], int wg, int tid,
                                             const FragO& o, const float (&lse)[2],
                                             Element* stage, uint32_t bar) {
  using NamedBarrier = cutlass::arch::NamedBarrier;
  constexpr int kSize = decltype(cute::size(o))::value;  // (pair, row half, D / 8 blocks)
  constexpr int kPanels = kSize / 32;                      // 64-column panels: D / 64
  constexpr int kChunksPerThread = 64 * 8 / 128;           // 16-byte chunks of a panel
  const int lane = tid % 32;
  const int quad = lane % 4;
  const int frag_row = (tid / 32) * 16 + lane / 4;  // fragment rows: frag_row, frag_row + 8

  if (p.lse != nullptr && quad == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wg * 64 + frag_row + 8 * h;
      if (row_valid(p.prob, qd, r)) {
        p.lse[token_offset(p.prob, qd, r, p.lse_stride, wc.b, wc.hq)] = lse[h];
      }
    }
  }
  // The rows this thread copies out: chunk c = tid + 128 k is row c / 8, 16-byte column c % 8.
  Element* dst[kChunksPerThread];
#pragma unroll
  for (int k = 0; k < kChunksPerThread; ++k) {
    const int r = wg * 64 + tid / 8 + 16 * k;
    dst[k] = row_valid(p.prob, qd, r)
                 ? static_cast<Element*>(p.out) +
                       token_offset(p.prob, qd, r, p.out_stride, wc.b, wc.hq) + 8 * (tid % 8)
                 : nullptr;
  }
#pragma unroll
  for (int pnl = 0; pnl < kPanels; ++pnl) {
    NamedBarrier::sync(128, bar);  // the buffer's previous readers (last panel or item) are done
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int blk = 0; blk < 8; ++blk) {
        const int i = (pnl * 8 + blk) * 4 + 2 * h;  // (pair 0, row half h, block pnl * 8 + blk)
        const int r = frag_row + 8 * h;
        *reinterpret_cast<uint32_t*>(stage + r * 64 + 8 * (blk ^ (r & 7)) + 2 * quad) =
            pack2<Element>(o(i), o(i + 1));
      }
    }
    NamedBarrier::sync(128, bar);
#pragma unroll
    for (int k = 0; k < kChunksPerThread; ++k) {
      if (dst[k] == nullptr) continue;
      const int r = tid / 8 + 16 * k;
      const uint4 v = *reinterpret_cast<const uint4*>(stage + r * 64 + 8 * ((tid % 8) ^ (r & 7)));
      *reinterpret_cast<uint4*>(dst[k] + 64 * pnl) = v;
    }
  }
}

}  // namespace sm90
}  // namespace jax_gna
