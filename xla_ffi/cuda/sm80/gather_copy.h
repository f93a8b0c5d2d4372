// Row-gathered global <-> shared copies. Tile rows are tokens scattered over the
// [B, *spatial, H, D] tensor (one box of a dilation group), so each row has its own address;
// within a row the D elements are contiguous. Loads use cp.async (16 bytes, L2 only) with
// zero fill for rows that do not exist (partial tiles at a group's end): no padding copies,
// no permutation pass. Stores write only rows that exist.
//
// Thread layout: kHeadDim / 8 consecutive threads cover one row (16-byte chunks), so a warp
// reads whole 128-byte lines; the block covers kNThreads / (kHeadDim / 8) rows per pass.
#pragma once

#include <cute/tensor.hpp>

#include <cstdint>

namespace jax_gna::sm80 {

using namespace cute;

// The thread index through an empty asm: the compiler cannot see that two copies of the
// same tile shape use the same shared-memory addresses, so it recomputes them (a few integer
// ops) at each copy instead of keeping them live across the main loop, where the
// accumulators need every register.
CUTE_DEVICE int opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

template <int kHeadDim, int kNThreads>
struct RowCopyShape {
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static_assert(kNThreads % kChunks == 0, "whole rows per pass");
  static constexpr int kRowsPerPass = kNThreads / kChunks;
};

// Issue cp.async loads of kRows rows into the swizzled smem tile sX. row_src(r) returns row
// r's first element, or nullptr for a row that does not exist: it is zero filled (its
// source address is then `fallback`, a valid address that is never read).
template <int kRows, int kHeadDim, int kNThreads, class Element, class SmemTensor, class RowSrc>
CUTE_DEVICE void gather_row_ptrs_async(SmemTensor&& sX, RowSrc&& row_src,
                                       const Element* fallback, int tid) {
  using Shape_ = RowCopyShape<kHeadDim, kNThreads>;
  static_assert(kRows % Shape_::kRowsPerPass == 0, "whole passes");
  tid = opaque(tid);
  const int chunk = tid % Shape_::kChunks;
  const int r0 = tid / Shape_::kChunks;
  // The swizzle permutes 16-byte chunks within 8-row blocks only, so with passes of whole
  // 8-row blocks row r0 + pass * kRowsPerPass sits a compile-time distance from row r0: one
  // swizzled address per thread instead of one per pass (tests/cpp/sm80_layout_check.cc
  // checks this property of every row layout).
  constexpr bool kBlockPasses = Shape_::kRowsPerPass % 8 == 0;
  constexpr int kPasses = kRows / Shape_::kRowsPerPass;
  // Two phases: every row's address first, then the copies. The copies write shared
  // memory, so shared-memory reads inside row_src (row tables) cannot move above an earlier
  // copy; with the addresses first their latencies overlap instead of adding up per pass.
  const Element* src[kPasses];
  bool valid[kPasses];
  CUTE_UNROLL
  for (int pass = 0; pass < kPasses; ++pass) {
    const Element* row = row_src(r0 + pass * Shape_::kRowsPerPass);
    valid[pass] = row != nullptr;
    src[pass] = valid[pass] ? row + chunk * 8 : fallback;
  }
  Element* dst0 = &sX(r0, chunk * 8);
  CUTE_UNROLL
  for (int pass = 0; pass < kPasses; ++pass) {
    const int r = r0 + pass * Shape_::kRowsPerPass;
    Element* dst = kBlockPasses ? dst0 + int(sX.layout()(pass * Shape_::kRowsPerPass, 0))
                                : &sX(r, chunk * 8);
    SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<uint128_t>::copy(
        *reinterpret_cast<const uint128_t*>(src[pass]), *reinterpret_cast<uint128_t*>(dst),
        valid[pass]);
  }
}

// The same with rows of one tensor: row_fn(r, &offset) returns whether row r exists and its
// element offset from `base`.
template <int kRows, int kHeadDim, int kNThreads, class Element, class SmemTensor, class RowFn>
CUTE_DEVICE void gather_rows_async(SmemTensor&& sX, const Element* base, RowFn&& row_fn,
                                   int tid) {
  gather_row_ptrs_async<kRows, kHeadDim, kNThreads>(
      sX,
      [&](int r) -> const Element* {
        int64_t offset = 0;
        return row_fn(r, &offset) ? base + offset : nullptr;
      },
      base, tid);
}

// Store kRows rows of the swizzled smem tile sX to global memory, rows that exist only.
template <int kRows, int kHeadDim, int kNThreads, class Element, class SmemTensor, class RowFn>
CUTE_DEVICE void scatter_rows(SmemTensor&& sX, Element* base, RowFn&& row_fn, int tid) {
  using Shape_ = RowCopyShape<kHeadDim, kNThreads>;
  static_assert(kRows % Shape_::kRowsPerPass == 0, "whole passes");
  tid = opaque(tid);
  const int chunk = tid % Shape_::kChunks;
  CUTE_UNROLL
  for (int pass = 0; pass < kRows / Shape_::kRowsPerPass; ++pass) {
    const int r = tid / Shape_::kChunks + pass * Shape_::kRowsPerPass;
    int64_t offset = 0;
    if (row_fn(r, &offset)) {
      *reinterpret_cast<uint128_t*>(base + offset + chunk * 8) =
          *reinterpret_cast<const uint128_t*>(&sX(r, chunk * 8));
    }
  }
}

// cp.async of one fp32 per row (LSE, delta) into dst[r]; rows that do not exist read 0.
template <int kRows, int kNThreads, class RowFn>
CUTE_DEVICE void gather_row_floats_async(float* dst, const float* base, RowFn&& row_fn,
                                         int tid) {
  for (int r = tid; r < kRows; r += kNThreads) {
    int64_t offset = 0;
    const bool valid = row_fn(r, &offset);
    SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(
        *reinterpret_cast<const uint32_t*>(valid ? base + offset : base),
        *reinterpret_cast<uint32_t*>(dst + r), valid);
  }
}

CUTE_DEVICE void cp_async_fence() { cute::cp_async_fence(); }

template <int N>
CUTE_DEVICE void cp_async_wait() {
  cute::cp_async_wait<N>();
}

}  // namespace jax_gna::sm80
