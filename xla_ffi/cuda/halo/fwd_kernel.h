// The halo forward kernel: small-window GNA forward for memory-bound calls (mma.sync m16n8k16,
// cp.async gathers with zero fill, ldmatrix, fp32 online softmax; the sm80 family's building
// blocks).
//
// One CTA = one Q tile and a run of items over it: query heads of one KV head sharing the
// CTA's halo (heads_per_cta), or consecutive (batch, KV head) units (units_per_cta); the tile's
// tables are built once. The Q tile is a box of 64 queries (4 warps x 16 rows); its halo
// (halo_plan.h: the box of keys its queries see together) is gathered into shared memory as
// the key list (halo tokens row-major, then the additional tokens), in chunks of 64 keys,
// each chunk one step:
//   S = Q K^T (64 x 64) | element mask (each query's window, index_math.h packed test) |
//   online softmax | O += P V
// K and V chunks live in a ring of slots; the chunks of all the CTA's items form one stream
// (halo_plan.h ChunkStream): a chunk is waited for just before its step, while later chunks
// load, and an item's Q tile loads with its first chunk into one of two Q buffers, so the
// next unit's Q tile and first chunk load while this one computes. A resident key list
// (the common case for small windows) is loaded once per unit; query heads sharing a KV head
// (GQA) read the first item's chunks.
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
  int q_buffers;      // Q tiles in shared memory: 2 when a CTA computes several items
  int heads_per_cta;  // query heads of one KV head per CTA (sharing its K and V)
  int head_groups;    // CTAs per (Q tile, unit): G / heads_per_cta
  int group;          // G = heads_q / heads_kv
  int units_per_cta;  // (batch, KV head) units per CTA (1 when heads_per_cta > 1)
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

  const FwdParams& p = args.p;
  const ProblemShape& shape = p.shape;
  const int tid = threadIdx.x;
  const CtaItems work =
      this_cta_items(shape, args.units_per_cta, args.heads_per_cta, args.head_groups);
  if (work.units == 0) return;  // past the last unit (CTA-uniform, before any barrier)
  const int items = work.items();

  extern __shared__ __align__(128) unsigned char smem_buf[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_buf);
  Element* const q_second = reinterpret_cast<Element*>(smem_buf + Traits::kFixedBytes);
  Element* const k_ring = reinterpret_cast<Element*>(
      smem_buf + Traits::kFixedBytes + (args.q_buffers - 1) * Traits::kQBytes);
  Element* const v_ring = k_ring + args.ring_slots * kChunkElems;

  // ---- The Q tile, its halo and tables (q_tile_cta.h), once for every item ---------------
  QTileTables& t = ss.t;
  {
    const int64_t* const strides[3] = {p.q_strides.spatial, p.out_strides.spatial,
                                       p.lse_strides.spatial};
    setup_q_tile<kNThreads>(t, p, int(blockIdx.x / unsigned(args.head_groups)), strides, tid);
  }
  const int num_keys = t.halo_tokens + shape.num_extra;
  const ChunkStream cs = make_chunk_stream(ceil_div(num_keys, kChunk), items, args.ring_slots,
                                           args.heads_per_cta > 1);
  auto sQ_at = [&](int w) {
    return make_tensor(make_smem_ptr((w & 1) != 0 ? q_second : ss.q),
                       typename Traits::SmemLayoutQ{});
  };
  // The loads of global chunk g: its item's Q tile with the item's chunk 0; K and V unless
  // the item reads the first item's.
  auto issue = [&](int g) {
    const int w = g / cs.n, c = g - w * cs.n;
    const int64_t b = work.batch(w);
    if (c == 0) {
      sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
          sQ_at(w),
          static_cast<const Element*>(p.q) + b * p.q_strides.batch +
              work.q_head(w) * p.q_strides.head,
          table_rows(t.row_off[0]), tid);
    }
    if (cs.loads_kv(g)) {
      issue_kv_chunk<Traits>(t, p, k_ring, v_ring, c, cs.slot(g), num_keys, b, work.kv_head(w),
                             tid);
    }
  };

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
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
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ_at(0));
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
  // A warp's 16 rows see a fraction of the halo (for an 8x8 tile and a 7x7 window, 8 of its
  // 14 rows): chunks outside their key span hold only -inf scores for them, and skipping
  // those steps changes no result bit (probabilities 0, running max unchanged).
  const Range span = warp_key_span<kRows>(
      t, sm80::rowcol_view(thr_mma.partition_C(
             make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{}))));
  const float scale_log2 = p.scale * float(M_LOG2E);

  stream_prologue(cs, issue);
  for (int w = 0; w < items; ++w) {
    clear(acc_o);
    sm80::OnlineSoftmax<kRows> softmax;
    for (int c = 0; c < cs.n; ++c) {
      const int g = w * cs.n + c;
      stream_step(cs, g, issue);  // chunk g (at c = 0 the item's Q tile) landed everywhere
      const int ltid = sm80::opaque(tid);
      if (c == 0) {  // Q fragments, once per item: every chunk's S reuses them
        auto thr_copy_q = copy_q.get_thread_slice(ltid);
        copy(copy_q, thr_copy_q.partition_S(sQ_at(w)), thr_copy_q.retile_D(tSrQ));
      }
      if (!chunk_seen(span, c * kChunk, kChunk, t.halo_tokens, num_keys)) continue;
      const int slot = cs.slot(g);
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
    }

    float lse[kRows];
    softmax.finalize(acc_o_rc, p.scale, lse);
    const int64_t b = work.batch(w), h = work.q_head(w);
    Element* out_base =
        static_cast<Element*>(p.out) + b * p.out_strides.batch + h * p.out_strides.head;
    float* lse_base = p.lse + b * p.lse_strides.batch + h * p.lse_strides.head;
    // Every warp is done reading the item's Q buffer (its fragments): it stages the output.
    __syncthreads();
    Tensor sO = sQ_at(w);
    sm80::store_rows_output<kBlockM, kHeadDim, kNThreads, Element>(mma, acc_o, sO, out_base,
                                                                   table_rows(t.row_off[1]), tid);
    sm80::store_row_stat<kBlockM, kHeadDim>(thr_mma, lse, lse_base, table_rows(t.row_off[2]));
  }
}

}  // namespace jax_gna::halo
