// Epilogues: fp32 accumulator tiles -> gathered rows in global memory, and per-row
// statistics (LSE) -> the [B, *spatial, H] tensor. Output rows go through shared memory so
// that global stores are whole 16-byte chunks of contiguous rows; rows that do not exist
// (partial tiles) are never written.
#pragma once

#include <cute/tensor.hpp>

#include "gather_copy.h"
#include "mma_utils.h"

namespace jax_gna::sm80 {

using namespace cute;

// acc (a C fragment of `mma` over a kRows x kHeadDim tile) -> Element -> smem tile sO ->
// global rows base + offset(r). The caller has synchronised so that sO is free.
template <int kRows, int kHeadDim, int kNThreads, class Element, class TiledMma, class Acc,
          class SmemTensor, class RowFn>
CUTE_DEVICE void store_rows_output(TiledMma const& mma, Acc const& acc, SmemTensor& sO,
                                   Element* base, RowFn&& row_fn, int tid) {
  Tensor rO = convert_fragment<Element>(acc);
  auto copy_o =
      make_tiled_copy_C(Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<128>, Element>{}, mma);
  auto thr_copy_o = copy_o.get_thread_slice(tid);
  copy(copy_o, thr_copy_o.retile_S(rO), thr_copy_o.partition_D(sO));
  __syncthreads();
  scatter_rows<kRows, kHeadDim, kNThreads>(sO, base, row_fn, tid);
}

// One fp32 value per accumulator row (val[r] for row r of the thread's (row, column) view)
// -> base + offset(row), by the quad lane that holds column 0 (all four hold the value).
template <int kRows, int kCols, class ThrMma, int N, class RowFn>
CUTE_DEVICE void store_row_stat(ThrMma const& thr_mma, const float (&val)[N], float* base,
                                RowFn&& row_fn) {
  Tensor c = rowcol_view(
      thr_mma.partition_C(make_identity_tensor(Shape<Int<kRows>, Int<kCols>>{})));
  static_assert(decltype(size<0>(c))::value == N, "one value per row");
  if (get<1>(c(0, 0)) != 0) return;
  CUTE_UNROLL
  for (int r = 0; r < N; ++r) {
    int64_t off = 0;
    if (row_fn(get<0>(c(r, 0)), &off)) base[off] = val[r];
  }
}

}  // namespace jax_gna::sm80
