// Element mask of the sm90 GNA forward kernel, applied to a warpgroup's score fragment.
//
// Only boundary KV tiles pay for it (the branch on the tile's interior flag is uniform over
// the warpgroup). For a boundary tile each thread builds one visible-column word per row
// from the mask table in shared memory (tile_map.h: six table reads per row), then selects
// -inf for the invisible scores: about two instructions per score.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>

#include "tile_map.h"

namespace jax_gna {
namespace sm90 {

// Fragment element i is fragment column k = 2 * (i >> 2) + (i & 1) of row half (i >> 1) & 1.
template <class Frag>
__device__ __forceinline__ void apply_row_masks(Frag& s, uint32_t m0, uint32_t m1) {
  constexpr int kSize = decltype(cute::size(s))::value;
#pragma unroll
  for (int i = 0; i < kSize; ++i) {
    const int k = 2 * (i >> 2) + (i & 1);
    const uint32_t m = ((i >> 1) & 1) ? m1 : m0;
    if (!(m & (1u << k))) s(i) = -INFINITY;
  }
}

// The windows of a consumer thread's two rows for the current work item live in shared
// memory, not registers (12 values; registers are the consumers' scarcest resource): one
// column per consumer thread in a structure-of-arrays block, so the accesses are
// bank-conflict free and private to the thread (no barrier: the thread reads what it wrote).
constexpr int kRowWindowFields = 12;  // (ws, we) x 3 dims x 2 rows

__device__ __forceinline__ void store_row_window(int* col, int stride, int h, const RowWindow& w) {
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    col[(6 * h + 2 * i) * stride] = w.ws[i];
    col[(6 * h + 2 * i + 1) * stride] = w.we[i];
  }
}

__device__ __forceinline__ RowWindow load_row_window(const int* col, int stride, int h) {
  RowWindow w;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    w.ws[i] = col[(6 * h + 2 * i) * stride];
    w.we[i] = col[(6 * h + 2 * i + 1) * stride];
  }
  w.valid = true;  // not needed by row_mask
  return w;
}

template <class Frag>
__device__ __forceinline__ void mask_spatial_tile(Frag& s, const ProblemDesc& p,
                                                  const uint32_t* table, const int* rows_col,
                                                  int stride, int quad, const KVCursor& c) {
  const uint32_t m0 = row_mask(p, table, quad, load_row_window(rows_col, stride, 0), c);
  const uint32_t m1 = row_mask(p, table, quad, load_row_window(rows_col, stride, 1), c);
  apply_row_masks(s, m0, m1);
}

template <class Frag>
__device__ __forceinline__ void mask_extra_tile(Frag& s, const ProblemDesc& p, int quad, int e0) {
  const uint32_t m = extra_mask(p, quad, e0);
  apply_row_masks(s, m, m);
}

}  // namespace sm90
}  // namespace jax_gna
