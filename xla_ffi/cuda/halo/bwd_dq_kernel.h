// dQ of the halo backward: Q-tile-major like the halo forward, deterministic (no atomics, no
// dq_accum).
//
// One CTA = one (batch, Q tile, heads_per_cta query heads of one KV head): the forward's work
// item, halo, key list and ring of K / V chunks (q_tile_cta.h). Per head it gathers the Q,
// dO, LSE and delta rows of the tile, then per chunk of the key list:
//   S = Q K^T, dP = dO V^T (Q and dO fragments loaded once per head) | element mask (the
//   forward's) | P = exp2(S scale log2e - LSE log2e), dS = P (dP - delta) in registers |
//   dQ += dS K (K as the B operand through its transposed view, ldmatrix.trans)
// and writes dQ = scale dQ in q's dtype through the Q tile's shared memory. Every dQ element
// is summed by one thread in key-list order: bitwise reproducible.
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
  int heads_per_cta;  // query heads of one KV head per CTA
  int head_groups;    // CTAs per (Q tile, KV head): G / heads_per_cta
  int group;          // G = heads_q / heads_kv
};

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocks)
    bwd_dq_kernel(const __grid_constant__ DqArgs args) {
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
  const BwdParams& p = args.p;
  const FwdParams& f = p.fwd;
  const ProblemShape& shape = f.shape;
  const int tid = threadIdx.x;

  QTileTables& t = ss.t;
  {
    const int64_t* const strides[3] = {f.q_strides.spatial, p.dout_strides.spatial,
                                       f.lse_strides.spatial};
    setup_q_tile<kNThreads>(t, f, int(blockIdx.x / unsigned(args.head_groups)), strides, tid);
  }
  const int num_keys = t.halo_tokens + shape.num_extra;
  const int num_chunks = ceil_div(num_keys, kChunk);

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutQ{});
  auto sKV_at = [&](Element* ring, int slot) {
    return make_tensor(make_smem_ptr(ring + slot * kChunkElems), typename Traits::SmemLayoutKV{});
  };
  auto sKt_at = [&](int slot) {  // K as the B operand of dS K (the forward's view of V)
    return make_tensor(make_smem_ptr(k_ring + slot * kChunkElems),
                       typename Traits::SmemLayoutVt{});
  };
  Tensor sKtNoSwizzle =
      make_tensor(make_smem_ptr(k_ring), typename Traits::SmemLayoutVtNoSwizzle{});
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tdPrdO = thr_mma.partition_fragment_A(sdO);
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
  const int ring = args.ring_slots;
  const int head0 = int(blockIdx.y) * args.group +
                    int(blockIdx.x % unsigned(args.head_groups)) * args.heads_per_cta;

  for (int hi = 0; hi < args.heads_per_cta; ++hi) {
    const int64_t h = head0 + hi;
    const bool load_kv = hi == 0 || num_chunks > ring;  // as in the forward
    if (hi > 0) __syncthreads();  // every warp is done with sQ (the last head's dQ staging)
    sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sQ,
        static_cast<const Element*>(f.q) + int64_t(blockIdx.z) * f.q_strides.batch +
            h * f.q_strides.head,
        table_rows(t.row_off[0]), tid);
    sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sdO,
        static_cast<const Element*>(p.dout) + int64_t(blockIdx.z) * p.dout_strides.batch +
            h * p.dout_strides.head,
        table_rows(t.row_off[1]), tid);
    {
      const int64_t stat = int64_t(blockIdx.z) * f.lse_strides.batch + h * f.lse_strides.head;
      sm80::gather_row_floats_async<kBlockM, kNThreads>(ss.lse, f.lse + stat,
                                                        table_rows(t.row_off[2]), tid);
      sm80::gather_row_floats_async<kBlockM, kNThreads>(ss.delta, p.delta + stat,
                                                        table_rows(t.row_off[2]), tid);
    }
    // cp.async groups as in the forward (fwd_kernel.h): group 0 also holds Q, dO and the
    // row statistics.
    if (load_kv) {
      for (int c = 0; c < ring; ++c) {
        if (c < num_chunks) {
          issue_kv_chunk<Traits>(t, f, k_ring, v_ring, c, c, num_keys, blockIdx.z, blockIdx.y,
                                 tid);
        }
        sm80::cp_async_fence();
      }
    } else {
      sm80::cp_async_fence();
    }

    clear(acc_dq);
    float lse_log2[kRows], delta[kRows];
    int slot = 0;  // c % ring
    for (int c = 0; c < num_chunks; ++c) {
      if (load_kv) {
        cp_async_wait_n(stream_pending(c, ring));
        __syncthreads();  // chunk c landed; every warp is done with chunk c - 1
        if (c > 0 && c - 1 + ring < num_chunks) {
          issue_kv_chunk<Traits>(t, f, k_ring, v_ring, c - 1 + ring,
                                 slot == 0 ? ring - 1 : slot - 1, num_keys, blockIdx.z,
                                 blockIdx.y, tid);
        }
        sm80::cp_async_fence();
      } else if (c == 0) {
        sm80::cp_async_wait<0>();
        __syncthreads();
      }
      const int ltid = sm80::opaque(tid);
      Tensor cS = sm80::rowcol_view(mma.get_thread_slice(ltid).partition_C(
          make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{})));
      if (c == 0) {  // Q, dO fragments and row statistics, once per head
        auto ta = copy_a.get_thread_slice(ltid);
        copy(copy_a, ta.partition_S(sQ), ta.retile_D(tSrQ));
        copy(copy_a, ta.partition_S(sdO), ta.retile_D(tdPrdO));
        CUTE_UNROLL
        for (int r = 0; r < kRows; ++r) {
          const int row = get<0>(cS(r, 0));
          lse_log2[r] = ss.lse[row] * float(M_LOG2E);
          delta[r] = ss.delta[row];
        }
      }
      if (!chunk_seen(span, c * kChunk, kChunk, t.halo_tokens, num_keys)) {
        slot = slot + 1 == ring ? 0 : slot + 1;
        continue;
      }
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
      slot = slot + 1 == ring ? 0 : slot + 1;
    }

    CUTE_UNROLL
    for (int i = 0; i < size(acc_dq); ++i) acc_dq(i) *= f.scale;
    const sm80::TileRows rows = sm80::tile_rows(t.q_tile, shape);
    __syncthreads();  // every warp is done reading sQ (Q fragments): it stages dQ
    sm80::store_rows_output<kBlockM, kHeadDim, kNThreads, Element>(
        mma, acc_dq, sQ,
        static_cast<Element*>(p.dq) + int64_t(blockIdx.z) * p.dq_strides.batch +
            h * p.dq_strides.head,
        [&](int r, int64_t* off) {
          return sm80::row_offset(rows, t.q_code[r], p.dq_strides.spatial, off);
        },
        tid);
  }
}

}  // namespace jax_gna::halo
