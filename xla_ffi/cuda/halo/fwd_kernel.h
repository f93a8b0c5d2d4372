// The halo forward kernel: small-window GNA forward for memory-bound calls (mma.sync m16n8k16,
// cp.async gathers with zero fill, ldmatrix, fp32 online softmax; the sm80 family's building
// blocks).
//
// One CTA = one (batch, Q tile, heads_per_cta query heads of one KV head). The Q tile is a box
// of 64 queries (4 warps x 16 rows); its halo (halo_plan.h: the box of keys its queries see
// together) is gathered into shared memory as the key list (halo tokens row-major, then the
// additional tokens), in chunks of 64 keys, each chunk one step:
//   S = Q K^T (64 x 64) | element mask (each query's window, index_math.h packed test) |
//   online softmax | O += P V
// K and V chunks live in a ring of ring_slots slots (per call, halo_plan.h). All slots are
// issued at the start, one cp.async group per chunk, and a chunk is waited for just before
// its step: when the key list fits the ring (resident: the common case for small windows)
// every key is loaded exactly once and the loads of later chunks overlap the steps of earlier
// ones; a longer key list streams through the ring, chunk c + ring_slots loading into the
// slot chunk c - 1 just freed. Query heads that share a KV head (GQA) share a resident ring:
// the CTA computes them one after the other over the same K and V (heads_per_cta).
//
// Per element, key j of the list is visible to query row r when j is a halo token whose box
// coordinate lies in r's window shifted into the halo (window.h windows, tabulated per CTA)
// or an additional token; padding past the list is never visible. O and the LSE are written
// like the sm80 forward's (rows past a group's end are neither loaded nor stored).
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "halo_plan.h"
#include "kernel_traits.h"
#include "sm80/epilogue.h"
#include "sm80/gather_copy.h"
#include "sm80/mma_utils.h"
#include "sm80/softmax.h"
#include "sm80/tile_mask.h"

namespace jax_gna::halo {

using namespace cute;

// What a launch passes besides FwdParams (halo_plan.h Plan).
struct KernelArgs {
  FwdParams p;
  int ring_slots;     // K and V chunks in shared memory
  int heads_per_cta;  // query heads of one KV head per CTA
  int head_groups;    // CTAs per (Q tile, KV head): G / heads_per_cta
  int group;          // G = heads_q / heads_kv
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

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocks)
    fwd_kernel(const __grid_constant__ KernelArgs args) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kChunk = Traits::kChunk;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kNThreads = Traits::kNThreads;
  constexpr int kChunkElems = Traits::kChunkElems;
  using Atoms = typename Traits::Atoms;

  extern __shared__ __align__(128) unsigned char smem_buf[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_buf);
  Element* const k_ring = reinterpret_cast<Element*>(smem_buf + Traits::kFixedBytes);
  Element* const v_ring = k_ring + args.ring_slots * kChunkElems;
  const FwdParams& p = args.p;
  const ProblemShape& shape = p.shape;
  const int tid = threadIdx.x;

  // ---- The work item: Q tile (lane d of warp 0 decodes dim d), halo, tables -------------
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
      const DimTile q = q_tile_dim(int(blockIdx.x / unsigned(args.head_groups)), grid_tiles,
                                   tiling, shape, d, p.tiles);
      const Range r = halo_range(q, shape.dims[d]);
      ss.q_tile[d] = q;
      ss.halo.origin[d] = r.begin;
      ss.halo.extent[d] = r.end - r.begin;
      extent = r.end - r.begin;
    }
    int tokens = 1;
    CUTE_UNROLL
    for (int e = 0; e < kMaxRank; ++e) tokens *= __shfl_sync(0xffffffffu, extent, e);
    if (lane == 0) ss.halo_tokens = tokens;
  } else {
    for (int r = tid - 32; r < kBlockM; r += kNThreads - 32) {
      ss.q_code[r] = sm80::box_code(r, p.tiles.q);
    }
  }
  __syncthreads();
  const int halo_tokens = ss.halo_tokens;
  const int num_keys = halo_tokens + shape.num_extra;
  const int num_chunks = ceil_div(num_keys, kChunk);
  {
    const int extent[kMaxRank] = {ss.halo.extent[0], ss.halo.extent[1], ss.halo.extent[2]};
    for (int j = tid; j < halo_tokens; j += kNThreads) ss.halo_code[j] = halo_code(j, extent);
    const sm80::TileRows q_rows = sm80::tile_rows(ss.q_tile, shape);
    for (int r = tid; r < kBlockM; r += kNThreads) {
      const uint32_t code = ss.q_code[r];
      sm80::store_query_row_window(r, code, ss.q_tile, shape, ss.q_win_begin, ss.q_win_end);
      int64_t off_q = 0, off_o = 0, off_lse = 0;
      const bool exists = sm80::row_offset(q_rows, code, p.q_strides.spatial, &off_q);
      sm80::row_offset(q_rows, code, p.out_strides.spatial, &off_o);
      sm80::row_offset(q_rows, code, p.lse_strides.spatial, &off_lse);
      ss.q_row_off[r] = exists ? off_q : -1;
      ss.o_row_off[r] = exists ? off_o : -1;
      ss.lse_row_off[r] = exists ? off_lse : -1;
    }
  }
  __syncthreads();

  auto q_row = [](const int64_t* table) {
    return [table](int r, int64_t* off) {
      *off = table[r];
      return *off >= 0;
    };
  };
  // Base pointers of this batch and KV head (the halo's token (0, 0, 0) for K and V; the
  // additional tokens' first), recomputed where used rather than held across the loop.
  auto spatial_base = [&](const void* ptr, const TokenStrides& st) {
    return static_cast<const Element*>(ptr) + int64_t(blockIdx.z) * st.batch +
           int64_t(blockIdx.y) * st.head +
           halo_origin_offset(ss.q_tile, ss.halo, shape, st.spatial);
  };
  auto extra_base = [&](const void* ptr, const ExtraStrides& st) {
    return shape.num_extra > 0 ? static_cast<const Element*>(ptr) +
                                     int64_t(blockIdx.z) * st.batch +
                                     int64_t(blockIdx.y) * st.head
                               : nullptr;
  };
  // Issue the K and V loads of chunk c (keys c * kChunk ..) into ring slot `slot`: one row
  // per key, zero fill past the key list.
  auto issue_chunk = [&](int c, int slot) {
    const int j0 = c * kChunk;
    auto load = [&](Element* ring, const void* ptr, const TokenStrides& st, const void* eptr,
                    const ExtraStrides& est) {
      const Element* base = spatial_base(ptr, st);
      const Element* ebase = extra_base(eptr, est);
      const int64_t etoken = est.token;
      sm80::gather_row_ptrs_async<kChunk, kHeadDim, kNThreads>(
          make_tensor(make_smem_ptr(ring + slot * kChunkElems), typename Traits::SmemLayoutKV{}),
          [&](int r) -> const Element* {
            const int j = j0 + r;
            if (j < halo_tokens) return base + halo_token_delta(ss.halo_code[j], shape, st.spatial);
            if (j < num_keys) return ebase + int64_t(j - halo_tokens) * etoken;
            return nullptr;
          },
          base, tid);
    };
    load(k_ring, p.k, p.k_strides, p.extra_k, p.extra_k_strides);
    load(v_ring, p.v, p.v_strides, p.extra_v, p.extra_v_strides);
  };

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  auto sK_at = [&](int slot) {
    return make_tensor(make_smem_ptr(k_ring + slot * kChunkElems),
                       typename Traits::SmemLayoutKV{});
  };
  auto sVt_at = [&](int slot) {
    return make_tensor(make_smem_ptr(v_ring + slot * kChunkElems),
                       typename Traits::SmemLayoutVt{});
  };
  Tensor sVtNoSwizzle =
      make_tensor(make_smem_ptr(v_ring), typename Traits::SmemLayoutVtNoSwizzle{});
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tSrK = thr_mma.partition_fragment_B(sK_at(0));
  Tensor tOrVt = thr_mma.partition_fragment_B(sVtNoSwizzle);
  auto copy_q = make_tiled_copy_A(typename Atoms::LdsmN{}, mma);
  auto copy_k = make_tiled_copy_B(typename Atoms::LdsmN{}, mma);
  auto copy_v = make_tiled_copy_B(typename Atoms::LdsmT{}, mma);

  Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor acc_o_rc = sm80::rowcol_view(acc_o);
  constexpr int kRows = decltype(size<0>(acc_o_rc))::value;

  // Each of this thread's rows: its window as a packed interval of halo box coordinates
  // (fixed for the CTA: the heads share the Q tile).
  BoxInterval row_iv[kRows];
  {
    Tensor cS = sm80::rowcol_view(
        thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{})));
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const int row = get<0>(cS(r, 0));
      const int4 b4 = ss.q_win_begin[row], e4 = ss.q_win_end[row];
      const int b[kMaxRank] = {b4.x, b4.y, b4.z}, e[kMaxRank] = {e4.x, e4.y, e4.z};
      row_iv[r] = row_interval(b, e, ss.halo);
    }
  }
  const float scale_log2 = p.scale * float(M_LOG2E);
  const int ring = args.ring_slots;
  const int head0 = int(blockIdx.y) * args.group +
                    int(blockIdx.x % unsigned(args.head_groups)) * args.heads_per_cta;

  for (int hi = 0; hi < args.heads_per_cta; ++hi) {
    const int64_t h = head0 + hi;
    // A resident key list stays in the ring from the first head on (no refills happen: a
    // refill targets chunk c - 1 + ring >= num_chunks).
    const bool load_kv = hi == 0 || num_chunks > ring;
    if (hi > 0) __syncthreads();  // every warp is done with sQ (the last head's O staging)
    sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sQ,
        static_cast<const Element*>(p.q) + int64_t(blockIdx.z) * p.q_strides.batch +
            h * p.q_strides.head,
        q_row(ss.q_row_off), tid);
    // cp.async groups: with load_kv, group c holds chunk c (group 0 also Q) for c < ring,
    // and step c commits exactly one more group (the refill of chunk c - 1 + ring, maybe
    // empty), so before step c's wait ring + c groups are committed and waiting until at
    // most ring - 1 are pending completes chunk c. Without load_kv, Q is the only group.
    if (load_kv) {
      for (int c = 0; c < ring; ++c) {
        if (c < num_chunks) issue_chunk(c, c);
        sm80::cp_async_fence();
      }
    } else {
      sm80::cp_async_fence();
    }

    clear(acc_o);
    sm80::OnlineSoftmax<kRows> softmax;
    int slot = 0;  // c % ring
    for (int c = 0; c < num_chunks; ++c) {
      if (load_kv) {
        cp_async_wait_n(ring - 1);
        // Chunk c (and Q) landed for every thread; every warp is done with chunk c - 1, whose
        // slot the refill below overwrites.
        __syncthreads();
        if (c > 0 && c - 1 + ring < num_chunks) {
          issue_chunk(c - 1 + ring, slot == 0 ? ring - 1 : slot - 1);
        }
        sm80::cp_async_fence();
      } else if (c == 0) {
        sm80::cp_async_wait<0>();
        __syncthreads();
      }
      const int ltid = sm80::opaque(tid);
      if (c == 0) {  // Q fragments, once per head: every chunk's S reuses them
        auto thr_copy_q = copy_q.get_thread_slice(ltid);
        copy(copy_q, thr_copy_q.partition_S(sQ), thr_copy_q.retile_D(tSrQ));
      }
      Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kChunk>>{});
      clear(acc_s);
      auto thr_copy_k = copy_k.get_thread_slice(ltid);
      sm80::gemm_rs<true>(mma, acc_s, tSrQ, tSrK, thr_copy_k.partition_S(sK_at(slot)), copy_k,
                          thr_copy_k);

      Tensor s_rc = sm80::rowcol_view(acc_s);
      Tensor cS = sm80::rowcol_view(mma.get_thread_slice(ltid).partition_C(
          make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{})));
      const int j0 = c * kChunk;
      if (j0 + kChunk <= halo_tokens) {  // CTA-uniform: a chunk of halo tokens only
        CUTE_UNROLL
        for (int ci = 0; ci < size<1>(s_rc); ++ci) {
          const uint32_t code = ss.halo_code[j0 + get<1>(cS(0, ci))];
          const uint32_t code_g = code | sm80::kCodeGuard;
          CUTE_UNROLL
          for (int r = 0; r < kRows; ++r) {
            if (!sm80::in_box_interval(code, code_g, row_iv[r])) s_rc(r, ci) = -INFINITY;
          }
        }
      } else {  // halo tail, additional tokens, padding
        CUTE_UNROLL
        for (int ci = 0; ci < size<1>(s_rc); ++ci) {
          const int j = j0 + get<1>(cS(0, ci));
          const uint32_t code = j < halo_tokens ? ss.halo_code[j] : 0u;
          CUTE_UNROLL
          for (int r = 0; r < kRows; ++r) {
            if (!key_visible(row_iv[r], j, halo_tokens, num_keys, code)) s_rc(r, ci) = -INFINITY;
          }
        }
      }

      softmax.update(s_rc, acc_o_rc, scale_log2);
      Tensor rP = sm80::convert_fragment<Element>(acc_s);
      Tensor tOrP = make_tensor(rP.data(), sm80::acc_to_a_layout(rP.layout()));
      auto thr_copy_v = copy_v.get_thread_slice(sm80::opaque(tid));
      sm80::gemm_rs<true>(mma, acc_o, tOrP, tOrVt, thr_copy_v.partition_S(sVt_at(slot)),
                          copy_v, thr_copy_v);
      slot = slot + 1 == ring ? 0 : slot + 1;
    }

    float lse[kRows];
    softmax.finalize(acc_o_rc, p.scale, lse);
    Element* out_base = static_cast<Element*>(p.out) + int64_t(blockIdx.z) * p.out_strides.batch +
                        h * p.out_strides.head;
    float* lse_base = p.lse + int64_t(blockIdx.z) * p.lse_strides.batch + h * p.lse_strides.head;
    __syncthreads();  // every warp is done reading sQ (Q fragments): it stages the output
    sm80::store_rows_output<kBlockM, kHeadDim, kNThreads, Element>(mma, acc_o, sQ, out_base,
                                                                   q_row(ss.o_row_off), tid);
    sm80::store_row_stat<kBlockM, kHeadDim>(thr_mma, lse, lse_base, q_row(ss.lse_row_off));
  }
}

}  // namespace jax_gna::halo
