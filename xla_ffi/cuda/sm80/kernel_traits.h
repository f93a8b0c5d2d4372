// Compile-time configuration of the sm80 kernels: element type, tile sizes, warps, the CuTe
// tiled MMAs, swizzled shared-memory layouts and the shared-memory copy atoms. Everything a
// kernel needs to know at compile time is here; the run-time problem is in params.h.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include <type_traits>

#include "jax_gna/params.h"
#include "tile_scheduler.h"

namespace jax_gna::sm80 {

using namespace cute;

// mma.sync m16n8k16 with fp32 accumulation, the one MMA of every sm80 kernel.
template <class Element>
struct MmaAtomFor;
template <>
struct MmaAtomFor<cutlass::half_t> {
  using type = MMA_Atom<SM80_16x8x16_F32F16F16F32_TN>;
};
template <>
struct MmaAtomFor<cutlass::bfloat16_t> {
  using type = MMA_Atom<SM80_16x8x16_F32BF16BF16F32_TN>;
};

template <class Element>
constexpr DType dtype_of() {
  return std::is_same_v<Element, cutlass::half_t> ? DType::kFloat16 : DType::kBFloat16;
}

// A tiled MMA of kWarpsM x kWarpsN warps. The N extent of one MMA tile is 16 per warp (two
// n8 atoms) so that one ldmatrix.x4 feeds a B operand slice.
template <class Element, int kWarpsM, int kWarpsN>
using TiledMmaFor = TiledMMA<typename MmaAtomFor<Element>::type,
                             Layout<Shape<Int<kWarpsM>, Int<kWarpsN>, _1>>,
                             Tile<Int<16 * kWarpsM>, Int<16 * kWarpsN>, _16>>;

// Shared-memory tiles of rows of kHeadDim elements: 8-row atoms of 64 (or 32) columns with an
// XOR swizzle of the 16-byte chunks, so that both the row-wise cp.async writes and the
// ldmatrix reads (row-wise or transposed) are bank-conflict free.
template <class Element, int kHeadDim>
struct RowTileSmem {
  static constexpr int kBlockKSmem = kHeadDim % 64 == 0 ? 64 : 32;
  static constexpr int kSwizzleBits = kBlockKSmem == 64 ? 3 : 2;
  using Atom = decltype(composition(
      Swizzle<kSwizzleBits, 3, 3>{},
      Layout<Shape<_8, Int<kBlockKSmem>>, Stride<Int<kBlockKSmem>, _1>>{}));
  template <int kRows>
  using RowsLayout = decltype(tile_to_shape(Atom{}, Shape<Int<kRows>, Int<kHeadDim>>{}));
  // The transposed view (kHeadDim x kRows) of a kRows x kHeadDim tile, for operands that
  // need the tile as K-major the other way round (V in P.V, Q in dS^T.Q, ...).
  template <int kRows>
  using TransposedTile = decltype(composition(
      RowsLayout<kRows>{}, make_layout(Shape<Int<kHeadDim>, Int<kRows>>{}, GenRowMajor{})));
  template <int kRows>
  using TransposedTileNoSwizzle = decltype(get_nonswizzle_portion(TransposedTile<kRows>{}));
};

// A kRows x kCols tile of a score-like matrix (P, dS) in shared memory, kCols a multiple of 64.
template <int kRows, int kCols>
struct ScoreTileSmem {
  static_assert(kCols % 64 == 0, "score tiles are 64-column aligned");
  using Atom = decltype(composition(Swizzle<3, 3, 3>{},
                                    Layout<Shape<_8, _64>, Stride<_64, _1>>{}));
  using ScoreLayout = decltype(tile_to_shape(Atom{}, Shape<Int<kRows>, Int<kCols>>{}));
  using TransposedTile = decltype(composition(
      ScoreLayout{}, make_layout(Shape<Int<kCols>, Int<kRows>>{}, GenRowMajor{})));
  using TransposedTileNoSwizzle = decltype(get_nonswizzle_portion(TransposedTile{}));
};

template <class Element>
struct CopyAtoms {
  using LdsmN = Copy_Atom<SM75_U32x4_LDSM_N, Element>;    // row-major operand
  using LdsmT = Copy_Atom<SM75_U16x8_LDSM_T, Element>;    // transposed operand
  using Store = Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<128>, Element>;  // R2S
};

// ---- Forward ------------------------------------------------------------------------------
// One KV tile of the forward's visit list as every thread of the CTA uses it, published in
// shared memory by warp 0's lanes, a batch of tiles ahead (fwd_kernel.h).
struct FwdKvStep {
  const void* k;          // spatial: token of box row 0 (row r: + kv_rel_k[r]); extra: the
  const void* v;          //   chunk's first token (row r: + r * token stride)
  BoxInterval valid;      // spatial: box rows that exist (partial tiles at a group's end)
  int origin[kMaxRank];   // spatial: group-local origin of the tile (element mask)
  int extra_count;        // extra: tokens in the chunk (rows r < extra_count exist)
  bool extra;
  bool interior;          // no element mask
  bool full;              // spatial and every row exists (no per-row test)
};

// kBlockM query rows (one Q tile) x kBlockN key rows (one KV tile), warps along M: each warp
// owns 16 rows per MMA tile, so row statistics stay inside a warp (quad shuffles only).
// K and V are single or double buffered (kStages).
template <class Element_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_,
          int kStages_, bool kPrefetchS_ = true, bool kPrefetchPV_ = true>
struct FwdTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  // K/V buffers (fwd_kernel.h): 2 = K and V double buffered, tile it + 1 loads during tile
  // it; 1 = one K and one V buffer, V of tile it loads during S = Q K^T and K of tile it + 1
  // during softmax and P V (two barriers per tile; half the K/V shared memory, which is what
  // lets head dim 128 take 64-token KV tiles within the portable 99 KiB).
  static constexpr int kStages = kStages_;
  static_assert(kStages == 1 || kStages == 2, "K/V buffering");
  // Visit-list tiles are published kStepBatch at a time (one per lane of warp 0) into a ring
  // of two batches (fwd_kernel.h).
  static constexpr int kStepBatch = 8;
  static constexpr int kStepRing = 2 * kStepBatch;
  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole 16-row MMA tiles");
  static_assert(kBlockN % 16 == 0 && kHeadDim % 32 == 0, "tile shapes");
  // Prefetch the next ldmatrix k-slice in the S = Q K^T GEMM (see gemm_ss).
  static constexpr bool kPrefetchS = kPrefetchS_;
  // Same for O += P V (off for head dim 256: one V^T k-slice is already 64 registers).
  static constexpr bool kPrefetchPV = kPrefetchPV_;

  using TiledMma = TiledMmaFor<Element, kNWarps, 1>;
  using Rows = RowTileSmem<Element, kHeadDim>;
  using SmemLayoutQ = typename Rows::template RowsLayout<kBlockM>;
  using SmemLayoutKV = typename Rows::template RowsLayout<kBlockN>;
  using SmemLayoutVt = typename Rows::template TransposedTile<kBlockN>;
  using SmemLayoutVtNoSwizzle = typename Rows::template TransposedTileNoSwizzle<kBlockN>;
  using Atoms = CopyAtoms<Element>;

  static constexpr int kKVTileElems = cosize_v<SmemLayoutKV>;

  struct SharedStorage {
    alignas(128) Element q[cosize_v<SmemLayoutQ>];  // also the output staging tile
    alignas(128) Element k[kStages * kKVTileElems];  // stage s at k + s * kKVTileElems
    alignas(128) Element v[kStages * kKVTileElems];
    // Per Q row: group-local window [begin, end) per dim (x, y, z; w unused).
    int4 q_win_begin[kBlockM];
    int4 q_win_end[kBlockM];
    uint32_t q_code[kBlockM];   // box coordinate of each Q row (index_math.h)
    uint32_t kv_code[kBlockN];  // box coordinate of each KV row (= score column)
    // Element offset of Q row r's token from this (batch, head)'s base in Q, O and LSE; -1
    // for rows past the group's end (never loaded, never stored; real offsets are >= 0).
    // One thread computes each row once: the row copies spread a row over kHeadDim / 8
    // threads, which otherwise each recomputed its int64 offset.
    int64_t q_row_off[kBlockM];
    int64_t o_row_off[kBlockM];
    int64_t lse_row_off[kBlockM];
    // Element offset of KV row r from row 0 of any spatial KV tile (K and V strides).
    int64_t kv_rel_k[kBlockN];
    int64_t kv_rel_v[kBlockN];
    // The CTA's schedule, read from shared memory where needed rather than held in
    // registers across the main loop (the accumulators need nearly all 255).
    FwdSchedule sched;
    FwdTileCursor cursor[2];    // warp 0's walk of the visit list: next tile to publish
                                // (batch k reads cursor[k % 2], fwd_kernel.h)
    FwdKvStep step[kStepRing];  // tile it in step[it % kStepRing]
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
};

// ---- Backward ------------------------------------------------------------------------------
// KV-tile-major kernel: one KV tile of kBlockN keys per CTA, Q tiles of kBlockM queries
// iterated. Scores S, dP (kBlockM x kBlockN) use warps kWarpsMSdP x (kNWarps / kWarpsMSdP);
// dK, dV (kBlockN x D) and dQ (kBlockM x D) use warps kWarpsMdKV x (kNWarps / kWarpsMdKV).
template <class Element_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_,
          int kWarpsMSdP_, int kWarpsMdKV_>
struct BwdTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;

  using TiledMmaSdP = TiledMmaFor<Element, kWarpsMSdP_, kNWarps / kWarpsMSdP_>;
  using TiledMmadKV = TiledMmaFor<Element, kWarpsMdKV_, kNWarps / kWarpsMdKV_>;
  using TiledMmadQ = TiledMmaFor<Element, kWarpsMdKV_, kNWarps / kWarpsMdKV_>;
  static_assert(kBlockM % (16 * kWarpsMSdP_) == 0 &&
                kBlockN % (16 * (kNWarps / kWarpsMSdP_)) == 0, "S/dP tiling");
  static_assert(kBlockN % (16 * kWarpsMdKV_) == 0 && kBlockM % (16 * kWarpsMdKV_) == 0 &&
                kHeadDim % (16 * (kNWarps / kWarpsMdKV_)) == 0, "dK/dV/dQ tiling");

  using Rows = RowTileSmem<Element, kHeadDim>;
  using SmemLayoutQ = typename Rows::template RowsLayout<kBlockM>;      // Q, dO
  using SmemLayoutQt = typename Rows::template TransposedTile<kBlockM>;
  using SmemLayoutQtNoSwizzle = typename Rows::template TransposedTileNoSwizzle<kBlockM>;
  using SmemLayoutKV = typename Rows::template RowsLayout<kBlockN>;     // K, V
  using SmemLayoutKt = typename Rows::template TransposedTile<kBlockN>;
  using SmemLayoutKtNoSwizzle = typename Rows::template TransposedTileNoSwizzle<kBlockN>;
  using Scores = ScoreTileSmem<kBlockM, kBlockN>;
  using SmemLayoutP = typename Scores::ScoreLayout;                     // P, dS: kBlockM x kBlockN
  using SmemLayoutPt = typename Scores::TransposedTile;
  using SmemLayoutPtNoSwizzle = typename Scores::TransposedTileNoSwizzle;
  using Atoms = CopyAtoms<Element>;

  struct SharedStorage {
    alignas(128) Element q[cosize_v<SmemLayoutQ>];
    alignas(128) Element dout[cosize_v<SmemLayoutQ>];
    alignas(128) Element k[cosize_v<SmemLayoutKV>];   // also the dK staging tile
    alignas(128) Element v[cosize_v<SmemLayoutKV>];   // also the dV staging tile
    alignas(128) Element p[cosize_v<SmemLayoutP>];
    alignas(128) Element ds[cosize_v<SmemLayoutP>];
    // Per Q row: LSE (natural log) and delta = rowsum(dO * O) - dlse; 0 for rows outside
    // the group (their Q and dO rows are zero, so P = 1 there contributes nothing).
    float lse[kBlockM];
    float delta[kBlockM];
    uint32_t q_code[kBlockM];  // box coordinate of each Q row
    uint32_t kv_code[kBlockN];
    // Per key (score column): group-local queries [begin, end) per dim that see it
    // (inverse windows; empty for keys outside the group).
    int4 kv_inv_begin[kBlockN];
    int4 kv_inv_end[kBlockN];
    BwdSchedule sched;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
};

// Deterministic dQ (Q-tile-major, recomputes P and dS): like the forward, warps along M.
template <class Element_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_>
struct DqTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole 16-row MMA tiles");

  using TiledMma = TiledMmaFor<Element, kNWarps, 1>;
  using Rows = RowTileSmem<Element, kHeadDim>;
  using SmemLayoutQ = typename Rows::template RowsLayout<kBlockM>;      // Q, dO, dQ staging
  using SmemLayoutKV = typename Rows::template RowsLayout<kBlockN>;
  using SmemLayoutKt = typename Rows::template TransposedTile<kBlockN>;
  using SmemLayoutKtNoSwizzle = typename Rows::template TransposedTileNoSwizzle<kBlockN>;
  using Atoms = CopyAtoms<Element>;

  struct SharedStorage {
    alignas(128) Element q[cosize_v<SmemLayoutQ>];
    alignas(128) Element dout[cosize_v<SmemLayoutQ>];
    alignas(128) Element k[cosize_v<SmemLayoutKV>];
    alignas(128) Element v[cosize_v<SmemLayoutKV>];
    int4 q_win_begin[kBlockM];
    int4 q_win_end[kBlockM];
    float lse[kBlockM];
    float delta[kBlockM];
    uint32_t q_code[kBlockM];
    uint32_t kv_code[kBlockN];
    FwdSchedule sched;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
};

// Largest dynamic shared memory per block on every sm80+ part this family targets
// (sm86/sm89/sm120: 99 KiB; A100 163 KiB, H100/B200 227 KiB): instantiations stay below it.
constexpr int kPortableSmemBytes = 99 * 1024;

}  // namespace jax_gna::sm80
