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
#include "q_tile_cta.h"
#include "sm80/gather_copy.h"
#include "sm80/mma_utils.h"
#include "sm80/softmax.h"

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

  // ---- The work item: Q tile, halo, tables (q_tile_cta.h) -------------------------------
  QTileTables& t = ss.t;
  {
    const int64_t* const strides[3] = {p.q_strides.spatial, p.out_strides.spatial,
                                       p.lse_strides.spatial};
    setup_q_tile<kNThreads>(t, p, int(blockIdx.x / unsigned(args.head_groups)), strides, tid);
  }
  const int num_keys = t.halo_tokens + shape.num_extra;
  const int num_chunks = ceil_div(num_keys, kChunk);
  auto issue_chunk = [&](int c, int slot) {
    issue_kv_chunk<Traits>(t, p, k_ring, v_ring, c, slot, num_keys, tid);
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

  // Each of this thread's rows: its window as a packed interval of halo box coordinates.
  BoxInterval row_iv[kRows];
  row_intervals(t, sm80::rowcol_view(thr_mma.partition_C(
                       make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{}))),
                row_iv);
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
        table_rows(t.row_off[0]), tid);
    // cp.async groups: with load_kv, group c holds chunk c (group 0 also Q) for c < ring,
    // and step c commits exactly one more group (the refill of chunk c - 1 + ring, maybe
    // empty), so before step c's wait ring + c groups are committed and chunk c is complete
    // once at most stream_pending(c, ring) are pending (halo_plan.h: ring - 1 for the first
    // ring chunks, ring - 2 for refilled ones). Without load_kv, Q is the only group.
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
        cp_async_wait_n(stream_pending(c, ring));
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
      mask_chunk(s_rc, cS, t, row_iv, c * kChunk, kChunk, num_keys);

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
                                                                   table_rows(t.row_off[1]), tid);
    sm80::store_row_stat<kBlockM, kHeadDim>(thr_mma, lse, lse_base, table_rows(t.row_off[2]));
  }
}

}  // namespace jax_gna::halo
