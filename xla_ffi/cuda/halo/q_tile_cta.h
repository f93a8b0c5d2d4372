// The Q-tile-major CTA of the halo family, shared by the forward (fwd_kernel.h) and the dQ
// kernel of the backward (bwd_dq_kernel.h): the work item (Q tile, halo) and its per-CTA
// tables, the K / V chunk gathers into the ring, each row's mask interval and the element
// mask of one chunk of the key list (halo_plan.h vocabulary).
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "halo_plan.h"
#include "sm80/gather_copy.h"
#include "sm80/tile_mask.h"

namespace jax_gna::halo {

using namespace cute;

// Per-CTA tables of one Q tile and its halo (shared memory).
struct QTileTables {
  // Per Q row: group-local window [begin, end) per dim (x, y, z; w unused).
  int4 q_win_begin[kBlockM];
  int4 q_win_end[kBlockM];
  // Element offset of Q row r's token from this (batch, head)'s base in three tensors (the
  // forward: Q, O, LSE; the dQ kernel: Q, dO, LSE / delta); -1 for rows past the group's
  // end (never loaded, never stored).
  int64_t row_off[3][kBlockM];
  uint32_t q_code[kBlockM];             // box coordinate of each Q row
  uint32_t halo_code[kMaxHaloTokens];   // box coordinate of each halo token (halo_code)
  DimTile q_tile[kMaxRank];             // the CTA's Q tile
  HaloBox halo;                         // its halo
  int halo_tokens;
};

// cp.async.wait_group with a run-time count (the ring size is a launch parameter).
CUTE_DEVICE void cp_async_wait_n(int n) {
  switch (n) {
    case 0: cute::cp_async_wait<0>(); break;
    case 1: cute::cp_async_wait<1>(); break;
    case 2: cute::cp_async_wait<2>(); break;
    case 3: cute::cp_async_wait<3>(); break;
    case 4: cute::cp_async_wait<4>(); break;
    case 5: cute::cp_async_wait<5>(); break;
    case 6: cute::cp_async_wait<6>(); break;
    default: cute::cp_async_wait<7>(); break;  // n >= 7 (the ring holds at most 8 chunks)
  }
}

// This CTA's items (halo_plan.h cta_items) in a grid of Plan::grid / BwdPlan::dkv_grid:
// unit block blockIdx.y + gridDim.y x blockIdx.z.
CUTE_DEVICE CtaItems this_cta_items(const ProblemShape& s, int units_per_cta, int heads_per_cta,
                                    int head_groups) {
  return cta_items(s, blockIdx.x, int64_t(blockIdx.y) + int64_t(gridDim.y) * blockIdx.z,
                   units_per_cta, heads_per_cta, head_groups);
}

// The chunk stream's cp.async bookkeeping (halo_plan.h ChunkStream), shared by the forward
// and the dQ kernel; `issue(g)` issues the loads of global chunk g (every thread calls it).
// Before step 0: the first ring chunks, one group each.
template <class Issue>
CUTE_DEVICE void stream_prologue(const ChunkStream& cs, Issue&& issue) {
  for (int g = 0; g < cs.ring; ++g) {
    if (g < cs.total()) issue(g);
    sm80::cp_async_fence();
  }
}

// At step g: wait for chunk g (and its item's rows), a barrier (every warp is done with step
// g - 1, whose slot, and a step later item w - 1's buffers, the refill may overwrite), then
// the refill's group.
template <class Issue>
CUTE_DEVICE void stream_step(const ChunkStream& cs, int g, Issue&& issue) {
  cp_async_wait_n(cs.pending(g));
  __syncthreads();
  if (const int r = cs.refill(g); r >= 0) issue(r);
  sm80::cp_async_fence();
}

// The work item of CTA column `tile_index` (blockIdx.x / head_groups): its Q tile (lane d of
// warp 0 decodes dim d), halo and tables; row offsets in tensors of spatial strides
// strides[0..2]. Ends with a barrier: the tables are ready for every thread.
template <int kNThreads>
CUTE_DEVICE void setup_q_tile(QTileTables& t, const FwdParams& p, int tile_index,
                              const int64_t* const (&strides)[3], int tid) {
  const ProblemShape& shape = p.shape;
  if (tid < 32) {
    const int lane = tid;
    const int d = imin(lane, kMaxRank - 1);
    const GroupTiling tiling = query_tiling(shape, d, p.tiles.q[d]);
    int grid_tiles[kMaxRank];
    CUTE_UNROLL
    for (int e = 0; e < kMaxRank; ++e) {
      grid_tiles[e] = __shfl_sync(0xffffffffu, tiling.num_tiles, e);
    }
    int extent = 1;
    if (lane < kMaxRank) {
      const DimTile q = q_tile_dim(tile_index, grid_tiles, tiling, shape, d, p.tiles);
      const Range r = halo_range(q, shape.dims[d]);
      t.q_tile[d] = q;
      t.halo.origin[d] = r.begin;
      t.halo.extent[d] = r.end - r.begin;
      extent = r.end - r.begin;
    }
    int tokens = 1;
    CUTE_UNROLL
    for (int e = 0; e < kMaxRank; ++e) tokens *= __shfl_sync(0xffffffffu, extent, e);
    if (lane == 0) t.halo_tokens = tokens;
  } else {
    for (int r = tid - 32; r < kBlockM; r += kNThreads - 32) {
      t.q_code[r] = sm80::box_code(r, p.tiles.q);
    }
  }
  __syncthreads();
  {
    const int halo_tokens = t.halo_tokens;
    const int extent[kMaxRank] = {t.halo.extent[0], t.halo.extent[1], t.halo.extent[2]};
    for (int j = tid; j < halo_tokens; j += kNThreads) t.halo_code[j] = halo_code(j, extent);
    const sm80::TileRows q_rows = sm80::tile_rows(t.q_tile, shape);
    for (int r = tid; r < kBlockM; r += kNThreads) {
      const uint32_t code = t.q_code[r];
      sm80::store_query_row_window(r, code, t.q_tile, shape, t.q_win_begin, t.q_win_end);
      CUTE_UNROLL
      for (int k = 0; k < 3; ++k) {
        int64_t off = 0;
        const bool exists = sm80::row_offset(q_rows, code, strides[k], &off);
        t.row_off[k][r] = exists ? off : -1;
      }
    }
  }
  __syncthreads();
}

// A row function of sm80::gather_rows_async / store_rows_output over one row-offset table.
CUTE_DEVICE auto table_rows(const int64_t* table) {
  return [table](int r, int64_t* off) {
    *off = table[r];
    return *off >= 0;
  };
}

// Issue the K and V loads of chunk c of the key list (keys c * kChunk ..) into ring slot
// `slot` of k_ring / v_ring: one row per key, zero fill past the key list. Batch b, KV head
// hkv.
template <class Traits>
CUTE_DEVICE void issue_kv_chunk(const QTileTables& t, const FwdParams& p,
                                typename Traits::Element* k_ring,
                                typename Traits::Element* v_ring, int c, int slot,
                                int num_keys, int64_t b, int64_t hkv, int tid) {
  using Element = typename Traits::Element;
  constexpr int kChunk = Traits::kChunk;
  const ProblemShape& shape = p.shape;
  const int halo_tokens = t.halo_tokens;
  const int j0 = c * kChunk;
  auto load = [&](Element* ring, const void* ptr, const TokenStrides& st, const void* eptr,
                  const ExtraStrides& est) {
    const Element* base = static_cast<const Element*>(ptr) + b * st.batch + hkv * st.head +
                          halo_origin_offset(t.q_tile, t.halo, shape, st.spatial);
    const Element* ebase = shape.num_extra > 0 ? static_cast<const Element*>(eptr) +
                                                     b * est.batch + hkv * est.head
                                               : nullptr;
    const int64_t etoken = est.token;
    sm80::gather_row_ptrs_async<kChunk, Traits::kHeadDim, Traits::kNThreads>(
        make_tensor(make_smem_ptr(ring + slot * Traits::kChunkElems),
                    typename Traits::SmemLayoutKV{}),
        [&](int r) -> const Element* {
          const int j = j0 + r;
          if (j < halo_tokens) return base + halo_token_delta(t.halo_code[j], shape, st.spatial);
          if (j < num_keys) return ebase + int64_t(j - halo_tokens) * etoken;
          return nullptr;
        },
        base, tid);
  };
  load(k_ring, p.k, p.k_strides, p.extra_k, p.extra_k_strides);
  load(v_ring, p.v, p.v_strides, p.extra_v, p.extra_v_strides);
}

// Each of this thread's accumulator rows (cS: the identity tensor of a kBlockM x kChunk
// score tile, (row, column) view): its window as a packed interval of halo box coordinates
// (fixed for the CTA: the heads share the Q tile).
template <int kRows, class CS>
CUTE_DEVICE void row_intervals(const QTileTables& t, CS const& cS, BoxInterval (&iv)[kRows]) {
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int row = get<0>(cS(r, 0));
    const int4 b4 = t.q_win_begin[row], e4 = t.q_win_end[row];
    const int b[kMaxRank] = {b4.x, b4.y, b4.z}, e[kMaxRank] = {e4.x, e4.y, e4.z};
    iv[r] = row_interval(b, e, t.halo);
  }
}

// The key-list positions this warp's rows can see among the halo tokens (cS as in
// row_intervals): the union of their row_key_span, warp-uniform (every lane takes part).
template <int kRows, class CS>
CUTE_DEVICE Range warp_key_span(const QTileTables& t, CS const& cS) {
  Range span{t.halo_tokens, 0};
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int row = get<0>(cS(r, 0));
    const int4 b4 = t.q_win_begin[row], e4 = t.q_win_end[row];
    const int b[kMaxRank] = {b4.x, b4.y, b4.z}, e[kMaxRank] = {e4.x, e4.y, e4.z};
    const Range s = row_key_span(b, e, t.halo);
    span.begin = imin(span.begin, s.begin);
    span.end = imax(span.end, s.end);
  }
  CUTE_UNROLL
  for (int m = 16; m >= 1; m /= 2) {
    span.begin = imin(span.begin, __shfl_xor_sync(0xffffffffu, span.begin, m));
    span.end = imax(span.end, __shfl_xor_sync(0xffffffffu, span.end, m));
  }
  return span;
}

// Does chunk c (keys j0 = c * kChunk ..) hold a key that rows of key span `span` see: a halo
// token inside it, or an additional token (every query sees them)?
CUTE_DEVICE bool chunk_seen(Range span, int j0, int chunk, int halo_tokens, int num_keys) {
  return (j0 < span.end && j0 + chunk > span.begin) ||
         (j0 + chunk > halo_tokens && j0 < num_keys);
}

// The element mask of chunk c (keys j0 = c * kChunk ..): -inf where key j of the list is not
// visible to the row (halo_plan.h key_visible). Chunks of halo tokens only (CTA-uniform)
// skip the list-position tests.
template <int kRows, class S, class CS>
CUTE_DEVICE void mask_chunk(S& s_rc, CS const& cS, const QTileTables& t,
                            const BoxInterval (&iv)[kRows], int j0, int chunk, int num_keys) {
  const int halo_tokens = t.halo_tokens;
  if (j0 + chunk <= halo_tokens) {
    CUTE_UNROLL
    for (int ci = 0; ci < size<1>(s_rc); ++ci) {
      const uint32_t code = t.halo_code[j0 + get<1>(cS(0, ci))];
      const uint32_t code_g = code | sm80::kCodeGuard;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        if (!sm80::in_box_interval(code, code_g, iv[r])) s_rc(r, ci) = -INFINITY;
      }
    }
  } else {  // halo tail, additional tokens, padding
    CUTE_UNROLL
    for (int ci = 0; ci < size<1>(s_rc); ++ci) {
      const int j = j0 + get<1>(cS(0, ci));
      const uint32_t code = j < halo_tokens ? t.halo_code[j] : 0u;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        if (!key_visible(iv[r], j, halo_tokens, num_keys, code)) s_rc(r, ci) = -INFINITY;
      }
    }
  }
}

}  // namespace jax_gna::halo
