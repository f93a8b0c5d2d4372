// Compile-time configuration of the halo forward: element type, head dim, ring size; the
// tiled MMA, swizzled row layouts and copy atoms are the sm80 family's (sm80/kernel_traits.h).
//
// Shared memory: a fixed part (the Q tile, which is also the output staging tile, and the
// per-CTA tables) followed by the ring: ring_slots chunks of K, then ring_slots chunks of V,
// each chunk kChunk rows of kHeadDim elements in the sm80 swizzled row layout. ring_slots is
// chosen per call (halo_plan.h plan_call: no more chunks than the call's largest key list
// needs), so the dynamic shared memory, and with it the CTAs per SM, follows the halo.
#pragma once

#include <cute/tensor.hpp>

#include "halo_plan.h"
#include "sm80/kernel_traits.h"

namespace jax_gna::halo {

using namespace cute;

template <class Element_, int kHeadDim_, int kMaxRing_>
struct FwdTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = halo::kBlockM;
  static constexpr int kChunk = halo::kChunk;
  static constexpr int kMaxRing = kMaxRing_;
  static constexpr int kNWarps = 4;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kBlockM == 16 * kNWarps, "one 16-row MMA tile per warp");
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 128, "head dims 32, 64, 96, 128");
  static_assert(kMaxRing >= 2 && kMaxRing <= 8, "ring of 2..8 chunks (cp_async_wait_n)");
  // CTAs per SM the register allocation must allow (__launch_bounds__; 65536 registers per
  // SM): head dim 32 four (<= 128 registers a thread), 64 three (<= 168), 128 two (<= 255),
  // each what the kernel needs without spills (ptxas -v, README.md). The shared memory of a
  // small halo would let more CTAs share an SM; registers bound them first only for halos
  // of up to 2 chunks (head dim 64) or 5 (head dim 32).
  static constexpr int kMinBlocks = kHeadDim <= 32 ? 4 : kHeadDim <= 64 ? 3 : 2;

  using TiledMma = sm80::TiledMmaFor<Element, kNWarps, 1>;
  using Rows = sm80::RowTileSmem<Element, kHeadDim>;
  using SmemLayoutQ = typename Rows::template RowsLayout<kBlockM>;
  using SmemLayoutKV = typename Rows::template RowsLayout<kChunk>;
  using SmemLayoutVt = typename Rows::template TransposedTile<kChunk>;
  using SmemLayoutVtNoSwizzle = typename Rows::template TransposedTileNoSwizzle<kChunk>;
  using Atoms = sm80::CopyAtoms<Element>;

  static constexpr int kChunkElems = cosize_v<SmemLayoutKV>;
  static constexpr int kChunkBytes = kChunkElems * int(sizeof(Element));
  static_assert(kChunkBytes % 128 == 0, "ring slots stay 128-byte aligned");

  struct SharedStorage {  // the fixed part
    alignas(128) Element q[cosize_v<SmemLayoutQ>];  // also the output staging tile
    // Per Q row: group-local window [begin, end) per dim (x, y, z; w unused).
    int4 q_win_begin[kBlockM];
    int4 q_win_end[kBlockM];
    // Element offset of Q row r's token from this (batch, head)'s base in Q, O and LSE; -1
    // for rows past the group's end (never loaded, never stored).
    int64_t q_row_off[kBlockM];
    int64_t o_row_off[kBlockM];
    int64_t lse_row_off[kBlockM];
    uint32_t q_code[kBlockM];             // box coordinate of each Q row
    uint32_t halo_code[kMaxHaloTokens];   // box coordinate of each halo token (halo_code)
    DimTile q_tile[kMaxRank];             // the CTA's Q tile
    HaloBox halo;                         // its halo
    int halo_tokens;
  };
  static constexpr int kFixedBytes = int((sizeof(SharedStorage) + 127) / 128 * 128);
  static constexpr int smem_bytes(int ring_slots) {
    return kFixedBytes + 2 * ring_slots * kChunkBytes;
  }
  static_assert(smem_bytes(kMaxRing) <= sm80::kPortableSmemBytes, "fits every sm80+ part");
};

}  // namespace jax_gna::halo
