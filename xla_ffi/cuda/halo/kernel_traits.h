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
#include "q_tile_cta.h"
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
    QTileTables t;  // Q tile, halo, row tables (row offsets: Q, O, LSE)
  };
  static constexpr int kFixedBytes = int((sizeof(SharedStorage) + 127) / 128 * 128);
  static constexpr int kQBytes = int(cosize_v<SmemLayoutQ> * sizeof(Element));
  static_assert(kQBytes % 128 == 0, "the second Q tile keeps the ring 128-byte aligned");
  // The fixed part, q_buffers - 1 more Q tiles (2 buffers when a CTA computes several items:
  // fwd_kernel.h) and the ring.
  static constexpr int smem_bytes(int ring_slots, int q_buffers = 1) {
    return kFixedBytes + (q_buffers - 1) * kQBytes + 2 * ring_slots * kChunkBytes;
  }
  static_assert(smem_bytes(kMaxRing) <= sm80::kPortableSmemBytes, "fits every sm80+ part");
  // The ring that fits beside a second Q tile (halo_plan.h plan_units; 0 when not 2 chunks):
  // head dim 32: 8, 64: 4, 128: 0.
  static constexpr int kMaxRingMulti = [] {
    int r = kMaxRing;
    while (r >= 2 && smem_bytes(r, 2) > sm80::kPortableSmemBytes) --r;
    return r >= 2 ? r : 0;
  }();
};


// ---- Backward ------------------------------------------------------------------------------

// dQ kernel (bwd_dq_kernel.h): the forward's CTA (Q tile, halo, ring of K and V chunks) with
// dO, LSE and delta rows next to Q. 4 warps along queries, one MMA shape for S, dP and dQ.
template <class Element_, int kHeadDim_, int kMaxRing_>
struct DqTraits : FwdTraits<Element_, kHeadDim_, kMaxRing_> {
  using Base = FwdTraits<Element_, kHeadDim_, kMaxRing_>;
  using Element = Element_;
  using typename Base::SmemLayoutQ;
  // S, dP and dQ accumulators (64 + 64 + kHeadDim fp32 per row) and the Q, dO fragments:
  // head dim 32 three CTAs per SM (<= 168 registers), 64 two (<= 255).
  static constexpr int kMinBlocks = kHeadDim_ <= 32 ? 3 : 2;

  // One item's rows (query head of a unit): a CTA of several items holds two (item parity).
  struct ItemRows {
    alignas(128) Element q[cosize_v<SmemLayoutQ>];     // also the dQ staging tile
    alignas(128) Element dout[cosize_v<SmemLayoutQ>];
    float lse[halo::kBlockM];    // per Q row (0 for rows past the group's end)
    float delta[halo::kBlockM];  // rowsum(dO * O) - dlse (bwd_aux_kernels.h)
  };
  static constexpr int kItemBytes = int((sizeof(ItemRows) + 127) / 128 * 128);
  struct SharedStorage {  // the fixed part
    ItemRows item;
    QTileTables t;  // Q tile, halo, row tables (row offsets: Q, dO, LSE / delta)
  };
  static constexpr int kFixedBytes = int((sizeof(SharedStorage) + 127) / 128 * 128);
  // The fixed part, item_buffers - 1 more item rows (bwd_dq_kernel.h) and the ring.
  static constexpr int smem_bytes(int ring_slots, int item_buffers = 1) {
    return kFixedBytes + (item_buffers - 1) * kItemBytes + 2 * ring_slots * Base::kChunkBytes;
  }
  static_assert(smem_bytes(kMaxRing_) <= sm80::kPortableSmemBytes, "fits every sm80+ part");
  // The ring beside a second item's rows (0 when not 2 chunks): head dim 32: 8, 64: 3.
  static constexpr int kMaxRingMulti = [] {
    int r = kMaxRing_;
    while (r >= 2 && smem_bytes(r, 2) > sm80::kPortableSmemBytes) --r;
    return r >= 2 ? r : 0;
  }();
};

// dK/dV kernel (bwd_dkdv_kernel.h): one KV box of kChunk keys, its inverse halo in chunks of
// kBlockM queries. The tiled MMAs and layouts of the sm80 backward at 64 x 64 tiles and 4
// warps (S / dP: 2 x 2 warps; dK, dV: 4 warps along keys).
template <class Element_, int kHeadDim_>
struct DkvTraits {
  using Sm80 = sm80::BwdTraits<Element_, kHeadDim_, halo::kBlockM, halo::kChunk, 4, 2, 4>;
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = halo::kBlockM;  // queries per step
  static constexpr int kBlockN = halo::kChunk;   // keys per CTA (the KV box)
  static constexpr int kNThreads = Sm80::kNThreads;
  // dK, dV (2 x kHeadDim / 4 fp32 a thread) and S, dP (2 x 32): two CTAs per SM.
  static constexpr int kMinBlocks = 2;

  using TiledMmaSdP = typename Sm80::TiledMmaSdP;
  using TiledMmadKV = typename Sm80::TiledMmadKV;
  using SmemLayoutQ = typename Sm80::SmemLayoutQ;
  using SmemLayoutQt = typename Sm80::SmemLayoutQt;
  using SmemLayoutQtNoSwizzle = typename Sm80::SmemLayoutQtNoSwizzle;
  using SmemLayoutKV = typename Sm80::SmemLayoutKV;
  using SmemLayoutP = typename Sm80::SmemLayoutP;
  using SmemLayoutPt = typename Sm80::SmemLayoutPt;
  using SmemLayoutPtNoSwizzle = typename Sm80::SmemLayoutPtNoSwizzle;
  using Atoms = typename Sm80::Atoms;

  // A step's Q, dO, LSE and delta rows: two buffers (step parity), so the next step's
  // gathers land while this one computes.
  struct StepRows {
    alignas(128) Element q[cosize_v<SmemLayoutQ>];
    alignas(128) Element dout[cosize_v<SmemLayoutQ>];
    float lse[kBlockM];    // per query of the step (0 for padding)
    float delta[kBlockM];
  };
  struct SharedStorage {
    StepRows step[2];
    alignas(128) Element k[cosize_v<SmemLayoutKV>];   // also the dK staging tile
    alignas(128) Element v[cosize_v<SmemLayoutKV>];   // also the dV staging tile
    alignas(128) Element p[cosize_v<SmemLayoutP>];
    alignas(128) Element ds[cosize_v<SmemLayoutP>];
    // Box coordinate of each query-list position (halo_plan.h query_list_code), padded to
    // whole steps.
    uint32_t q_code[kMaxHaloTokens + kBlockM];
    uint32_t kv_code[kBlockN];
    // Per key: group-local queries [begin, end) per dim that see it (empty past the group).
    int4 kv_inv_begin[kBlockN];
    int4 kv_inv_end[kBlockN];
    DimTile kv_tile[kMaxRank];   // the KV box
    DimTile inv_tile[kMaxRank];  // its inverse halo (group, group length, [origin, end))
    int inv_tokens;
  };
  static constexpr int kSmemBytes = int((sizeof(SharedStorage) + 127) / 128 * 128);
  static_assert(kSmemBytes <= sm80::kPortableSmemBytes, "fits every sm80+ part");
  // A CTA of several (batch, KV head) units (bwd_dkdv_kernel.h) holds a second K and V tile
  // after the storage: the next unit's load while this one computes.
  static constexpr int kKvBytes = int(cosize_v<SmemLayoutKV> * sizeof(Element));
  static constexpr int smem_bytes(int kv_buffers) {
    return kSmemBytes + (kv_buffers - 1) * 2 * kKvBytes;
  }
  static_assert(smem_bytes(2) <= sm80::kPortableSmemBytes, "fits every sm80+ part");
};

}  // namespace jax_gna::halo
