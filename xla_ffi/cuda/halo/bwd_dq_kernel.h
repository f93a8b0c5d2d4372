// dQ of the halo backward: Q-tile-major like the halo forward, deterministic (no atomics, no
// dq_accum).
//
// One CTA = one Q tile and a run of items over it, the forward's (fwd_kernel.h): query heads
// of one KV head sharing its halo, or (batch, KV head) units; the halo, key list and ring of
// K / V chunks (q_tile_cta.h) and the chunk stream (halo_plan.h ChunkStream). An item's Q,
// dO, LSE and delta rows load with its first chunk into one of two buffers; per chunk of the
// key list:
//   S = Q K^T, dP = dO V^T (Q and dO fragments loaded once per item) | element mask (the
//   forward's) | P = exp2(S scale log2e - LSE log2e), dS = P (dP - delta) in registers |
//   dQ += dS K (K as the B operand through its transposed view, ldmatrix.trans)
// and it writes dQ = scale dQ in q's dtype through its Q buffer. Every dQ element is summed
// by one thread in key-list order: bitwise reproducible.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "halo_plan.h"
#include "kernel_traits.h"
#include "q_tile_cta.h"
#include "sm80/epilogue.h"
#include "sm80/gather_copy.h"
#include "sm80/mma_utils.h"

namespace jax_gna::halo {

using namespace cute;

// What a launch passes besides BwdParams (halo_plan.h Plan of the dQ kernel).
struct DqArgs {
  BwdParams p;
  int ring_slots;     // K and V chunks in shared memory
  int item_buffers;   // item rows in shared memory: 2 when a CTA computes several items
  int heads_per_cta;  // query heads of one KV head per CTA (sharing its K and V)
  int head_groups;    // CTAs per (Q tile, unit): G / heads_per_cta
  int units_per_cta;  // (batch, KV head) units per CTA (1 when heads_per_cta > 1)
};

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocks)
    bwd_dq_kernel(const __grid_constant__ DqArgs args) {
  using Element = typename Traits::Element;
  using ItemRows = typename Traits::ItemRows;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kChunk = Traits::kChunk;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kNThreads = Traits::kNThreads;
  constexpr int kChunkElems = Traits::kChunkElems;
  using Atoms = typename Traits::Atoms;

  const BwdParams& p = args.p;
  const FwdParams& f = p.fwd;
  const ProblemShape& shape = f.shape;
  const int tid = threadIdx.x;
  const CtaItems work =
      this_cta_items(shape, args.units_per_cta, args.heads_per_cta, args.head_groups);
  if (work.units == 0) return;  // past the last unit (CTA-uniform, before any barrier)
  const int items = work.items();

  extern __shared__ __align__(128) unsigned char smem_buf[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_buf);
  ItemRows* const rows_second = reinterpret_cast<ItemRows*>(smem_buf + Traits::kFixedBytes);
  Element* const k_ring = reinterpret_cast<Element*>(
      smem_buf + Traits::kFixedBytes + (args.item_buffers - 1) * Traits::kItemBytes);
  Element* const v_ring = k_ring + args.ring_slots * kChunkElems;
  auto rows_at = [&](int w) -> ItemRows& { return (w & 1) != 0 ? *rows_second : ss.item; };

  QTileTables& t = ss.t;
  {
    const int64_t* const strides[3] = {f.q_strides.spatial, p.dout_strides.spatial,
                                       f.lse_strides.spatial};
    setup_q_tile<kNThreads>(t, f, int(blockIdx.x / unsigned(args.head_groups)), strides, tid);
  }
  const int num_keys = t.halo_tokens + shape.num_extra;
  const ChunkStream cs = make_chunk_stream(ceil_div(num_keys, kChunk), items, args.ring_slots,
                                           args.heads_per_cta > 1);

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  auto sQ_at = [&](int w) {
    return make_tensor(make_smem_ptr(rows_at(w).q), typename Traits::SmemLayoutQ{});
  };
  auto sdO_at = [&](int w) {
    return make_tensor(make_smem_ptr(rows_at(w).dout), typename Traits::SmemLayoutQ{});
  };
  auto sKV_at = [&](Element* ring, int slot) {
    return make_tensor(make_smem_ptr(ring + slot * kChunkElems), typename Traits::SmemLayoutKV{});
  };
  auto sKt_at = [&](int slot) {  // K as the B operand of dS K (the forward's view of V)
    return make_tensor(make_smem_ptr(k_ring + slot * kChunkElems),
                       typename Traits::SmemLayoutVt{});
  };
  Tensor sKtNoSwizzle =
      make_tensor(make_smem_ptr(k_ring), typename Traits::SmemLayoutVtNoSwizzle{});
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ_at(0));
  Tensor tdPrdO = thr_mma.partition_fragment_A(sdO_at(0));
  Tensor tSrK = thr_mma.partition_fragment_B(sKV_at(k_ring, 0));
  Tensor tdPrV = thr_mma.partition_fragment_B(sKV_at(v_ring, 0));
  Tensor tdQrKt = thr_mma.partition_fragment_B(sKtNoSwizzle);
  auto copy_a = make_tiled_copy_A(typename Atoms::LdsmN{}, mma);
  auto copy_b = make_tiled_copy_B(typename Atoms::LdsmN{}, mma);
  auto copy_bt = make_tiled_copy_B(typename Atoms::LdsmT{}, mma);

  Tensor acc_dq = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  constexpr int kRows = decltype(size<0>(sm80::rowcol_view(acc_dq)))::value;
  BoxInterval row_iv[kRows];
  row_intervals(t, sm80::rowcol_view(thr_mma.partition_C(
                       make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{}))),
                row_iv);
  // Chunks outside the warp's key span (fwd_kernel.h) add dS = 0 terms: skipped.
  const Range span = warp_key_span<kRows>(
      t, sm80::rowcol_view(thr_mma.partition_C(
             make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{}))));
  const float scale_log2 = f.scale * float(M_LOG2E);

  // The loads of global chunk g: its item's Q, dO, LSE and delta rows with the item's chunk
  // 0; K and V unless the item reads the first item's.
  auto issue = [&](int g) {
    const int w = g / cs.n, c = g - w * cs.n;
    const int64_t b = work.batch(w);
    if (c == 0) {
      const int64_t h = work.q_head(w);
      ItemRows& r = rows_at(w);
      sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
          sQ_at(w),
          static_cast<const Element*>(f.q) + b * f.q_strides.batch + h * f.q_strides.head,
          table_rows(t.row_off[0]), tid);
      sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
          sdO_at(w),
          static_cast<const Element*>(p.dout) + b * p.dout_strides.batch +
              h * p.dout_strides.head,
          table_rows(t.row_off[1]), tid);
      const int64_t stat = b * f.lse_strides.batch + h * f.lse_strides.head;
      sm80::gather_row_floats_async<kBlockM, kNThreads>(r.lse, f.lse + stat,
                                                        table_rows(t.row_off[2]), tid);
      sm80::gather_row_floats_async<kBlockM, kNThreads>(r.delta, p.delta + stat,
                                                        table_rows(t.row_off[2]), tid);
    }
    if (cs.loads_kv(g)) {
      issue_kv_chunk<Traits>(t, f, k_ring, v_ring, c, cs.slot(g), num_keys, b, work.kv_head(w),
                             tid);
    }
  };

  stream_prologue(cs, issue);
  for (int w = 0; w < items; ++w) {
    clear(acc_dq);
    float lse_log2[kRows], delta[kRows];
    for (int c = 0; c < cs.n; ++c) {
      const int g = w * cs.n + c;
      stream_step(cs, g, issue);  // chunk g (at c = 0 the item's rows) landed everywhere
      const int ltid = sm80::opaque(tid);
      Tensor cS = sm80::rowcol_view(mma.get_thread_slice(ltid).partition_C(
          make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{})));
      if (c == 0) {  // Q, dO fragments and row statistics, once per item
        auto ta = copy_a.get_thread_slice(ltid);
        copy(copy_a, ta.partition_S(sQ_at(w)), ta.retile_D(tSrQ));
        copy(copy_a, ta.partition_S(sdO_at(w)), ta.retile_D(tdPrdO));
        const ItemRows& rw = rows_at(w);
        CUTE_UNROLL
        for (int r = 0; r < kRows; ++r) {
          const int row = get<0>(cS(r, 0));
          lse_log2[r] = rw.lse[row] * float(M_LOG2E);
          delta[r] = rw.delta[row];
        }
      }
      if (!chunk_seen(span, c * kChunk, kChunk, t.halo_tokens, num_keys)) continue;
      const int slot = cs.slot(g);
      Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kChunk>>{});
      Tensor acc_dp = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kChunk>>{});
      clear(acc_s);
      clear(acc_dp);
      {
        auto tb = copy_b.get_thread_slice(ltid);
        sm80::gemm_rs<true>(mma, acc_s, tSrQ, tSrK, tb.partition_S(sKV_at(k_ring, slot)),
                            copy_b, tb);
        sm80::gemm_rs<true>(mma, acc_dp, tdPrdO, tdPrV, tb.partition_S(sKV_at(v_ring, slot)),
                            copy_b, tb);
      }
      Tensor s_rc = sm80::rowcol_view(acc_s);
      Tensor dp_rc = sm80::rowcol_view(acc_dp);
      mask_chunk(s_rc, cS, t, row_iv, c * kChunk, kChunk, num_keys);
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        CUTE_UNROLL
        for (int ci = 0; ci < size<1>(s_rc); ++ci) {
          const float prob = exp2f(s_rc(r, ci) * scale_log2 - lse_log2[r]);
          dp_rc(r, ci) = prob * (dp_rc(r, ci) - delta[r]);
        }
      }
      Tensor rdS = sm80::convert_fragment<Element>(acc_dp);
      Tensor tdQrdS = make_tensor(rdS.data(), sm80::acc_to_a_layout(rdS.layout()));
      auto tbt = copy_bt.get_thread_slice(sm80::opaque(tid));
      sm80::gemm_rs<true>(mma, acc_dq, tdQrdS, tdQrKt, tbt.partition_S(sKt_at(slot)), copy_bt,
                          tbt);
    }

    CUTE_UNROLL
    for (int i = 0; i < size(acc_dq); ++i) acc_dq(i) *= f.scale;
    const sm80::TileRows rows = sm80::tile_rows(t.q_tile, shape);
    // Every warp is done reading the item's Q buffer (its fragments): it stages dQ.
    __syncthreads();
    Tensor sdQ = sQ_at(w);
    sm80::store_rows_output<kBlockM, kHeadDim, kNThreads, Element>(
        mma, acc_dq, sdQ,
        static_cast<Element*>(p.dq) + work.batch(w) * p.dq_strides.batch +
            work.q_head(w) * p.dq_strides.head,
        [&](int r, int64_t* off) {
          return sm80::row_offset(rows, t.q_code[r], p.dq_strides.spatial, off);
        },
        tid);
  }
}

}  // namespace jax_gna::halo
