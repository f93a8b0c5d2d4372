// Epilogue of the sm90 GNA forward kernel: O through shared memory to global memory, LSE
// straight from registers.
//
// Head dims 64 and 128 (two Q buffers): `store_output_tma`. Each warpgroup writes its
// normalised 64 x D tile with stmatrix into its own rows of the item's Q buffer (free once the
// item's last QK^T is done), in the TMA's 128-byte swizzle, and one thread stores each
// 64-column panel with one TMA box: its 64 rows are half of the Q tile's box (`tma_o`: the
// Q tile's box halved along its slowest dim of extent > 1), so dilation groups (traversal
// stride = dilation, as for the loads) and partial tiles (rows past a group's end lie outside
// the tensor and are not written) are the TMA's bounds. The buffer goes back to the Q
// producer once the TMA has read it (`release_staged_output`, deferred by the mainloop to the
// next item's first softmax, so the consumers do not wait for the store).
// Measured against the plain-store epilogue below (the previous kernel; self-test bench on
// the H200, 30 timed launches, three interleaved rounds): seq32k stride 2048 (16 KV
// tiles per item) 645-649 -> 670-671 TF/s, FLUX 16x16 617-627 -> 624-637, Hunyuan 16x8x8
// 607-611 -> 612-613; dense 631-633 and the stride-1 cases (FLUX, Hunyuan) within 1%.
//
// Head dim 256 (one Q buffer, staged through `o_stage` a panel at a time): `store_output`,
// 16-byte row chunks from the staging buffer with plain stores.
//
// A thread's O fragment holds, for each of its two rows, pairs of adjacent head-dim columns
// (8 * j + 2 * quad, +1). Stored straight to global memory those are 4-byte stores that touch
// 8 rows (8 cache lines) per warp instruction, D / 2 of them per thread. Staged, each
// 64-column panel of the warpgroup's 64 x D tile goes out as 16-byte chunks, a warp writing
// 4 whole 128-byte row segments per instruction: 4 stores per thread per panel.
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

#include "gmma.h"
#include "kernel_traits.h"
#include "mask.h"
#include "tile_map.h"

namespace jax_gna {
namespace sm90 {

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

// The LSE of the thread's two fragment rows (frag_row, frag_row + 8 of warpgroup wg), one
// thread of each quad; rows past a group's end are not stored.
__device__ __forceinline__ void store_lse(const KernelParams& p, const WorkCoord& wc,
                                          const QTileDim (&qd)[3], int wg, int frag_row,
                                          int quad, const float (&lse)[2]) {
  if (p.lse == nullptr || quad != 0) return;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wg * 64 + frag_row + 8 * h;
    if (row_valid(p.prob, qd, r)) {
      p.lse[token_offset(p.prob, qd, r, p.lse_stride, wc.b, wc.hq)] = lse[h];
    }
  }
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

  store_lse(p, wc, qd, wg, frag_row, quad, lse);
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

// Coordinates (TMA tensor dims 1..3: S2, S1, S0) of the first row of warpgroup wg's half of
// the Q tile.
__device__ __forceinline__ void half_tile_coords(const KernelParams& p, const QTileDim (&qd)[3],
                                                 int wg, int (&x)[3]) {
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int jj = qd[i].q0 + (i == p.o_split_dim ? wg * p.o_split_half : 0);
    x[i] = token_coord(p.prob.dim[i], qd[i].group, jj);
  }
}

// Writes the warpgroup's 64 rows of O (normalised fragment `o`) through `stage`: its own rows
// of the item's Q buffer (panel p of them at stage + p * kBlockM * 64 elements, 1024-byte
// aligned). Thread 0 of the warpgroup issues the TMA stores and commits them as one bulk
// group; `release_staged_output` waits for their reads of shared memory.
template <class Element, int kBlockM, class FragO>
__device__ __forceinline__ void store_output_tma(const KernelParams& p, const WorkCoord& wc,
                                                 const QTileDim (&qd)[3], int wg, int tid,
                                                 const FragO& o, const float (&lse)[2],
                                                 Element* stage, uint32_t bar) {
  using NamedBarrier = cutlass::arch::NamedBarrier;
  constexpr int kSize = decltype(cute::size(o))::value;  // (pair, row half, D / 8 blocks)
  constexpr int kHeadDim = 2 * kSize;                      // 4 values per 8-column block
  constexpr int kPanels = kHeadDim / 64;                   // 64-column panels
  const int lane = tid % 32;
  const int quad = lane % 4;
  const int frag_row = (tid / 32) * 16 + lane / 4;  // fragment rows: frag_row, frag_row + 8

  store_lse(p, wc, qd, wg, frag_row, quad, lse);
  // stmatrix x4 number k stores four 8x8 blocks: m = lane / 8 selects (row half m & 1,
  // column block 2k + m / 2); lane gives row lane % 8 of block m. A row is 128 bytes of
  // its panel, 16-byte chunk c at c ^ (row % 8) (Swizzle<3, 4, 3>: the TMA's 128B mode).
  const int m = lane / 8;
  const int rr = lane % 8;
  Element* row_ptr = stage + ((tid / 32) * 16 + 8 * (m & 1) + rr) * 64;
#pragma unroll
  for (int k = 0; k < kHeadDim / 16; ++k) {
    uint32_t v[4];
#pragma unroll
    for (int mm = 0; mm < 4; ++mm) {
      const int i = (2 * k + (mm >> 1)) * 4 + 2 * (mm & 1);  // (pair 0, half, block)
      v[mm] = pack2<Element>(o(i), o(i + 1));
    }
    const int chunk = ((2 * k) & 7) + (m >> 1);
    Element* dst = row_ptr + (k / 4) * (kBlockM * 64) + 8 * (chunk ^ rr);
    cute::SM90_U32x4_STSM_N::copy(v[0], v[1], v[2], v[3],
                                  *reinterpret_cast<cute::uint128_t*>(dst));
  }
  cutlass::arch::fence_view_async_shared();  // generic-proxy writes -> the TMA's reads
  NamedBarrier::sync(128, bar);
  if (tid == 0) {
    int x[3];
    half_tile_coords(p, qd, wg, x);
#pragma unroll
    for (int pnl = 0; pnl < kPanels; ++pnl) {
      cute::SM90_TMA_STORE_5D::copy(&p.tma_o, stage + pnl * (kBlockM * 64),
                                    wc.hq * kHeadDim + pnl * 64, x[2], x[1], x[0], wc.b);
    }
    cute::tma_store_arrive();
  }
}

// After store_output_tma: the TMA has read the staged O (thread 0 issued the stores and
// waits; the others have nothing in flight), so the Q buffer may be refilled.
__device__ __forceinline__ void release_staged_output(uint64_t* q_empty, int tid) {
  if (tid == 0) cute::tma_store_wait<0>();
  cutlass::arch::ClusterBarrier::arrive(q_empty);
}

}  // namespace sm90
}  // namespace jax_gna
