// The sm80 GNA backward, KV-tile-major (FlashAttention-2 structure): dK and dV of one KV
// tile stay in registers while the CTA walks the queries that see the tile.
//
// One CTA = one (batch, KV head, KV tile) or one (batch, KV head, additional-KV tile, split)
// (tile_scheduler.h). A spatial CTA visits the Q-tile box of its inverse neighborhood
// (kv_tile_q_range per dim) for every query head of its KV head's GQA group: dK/dV sum over
// the group inside the CTA, so no per-head workspace and no reduction pass. An extra CTA
// visits its split of all Q tiles (every query sees the extra tokens) and writes fp32
// partial dK/dV into dextra_accum[.., split, ..]; bwd_aux_kernels.h sums the splits in order.
//
// Per visited Q tile (kBlockM queries of one head):
//   wait Q, dO, LSE, delta; sync | S = Q K^T, dP = dO V^T | mask (boundary pairs only) |
//   P = exp(scale S - LSE), dS = P (dP - delta) -> smem | sync |
//   dV += P^T dO, dK += dS^T Q | sync | issue next Q, dO loads |
//   dQ = dS K -> fp32 atomicAdd into dq_accum (skipped in deterministic mode, where
//   bwd_dq_kernel.h computes dQ Q-tile-major without atomics)
// The next Q tile's loads overlap the dQ GEMM and its atomics.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "epilogue.h"
#include "gather_copy.h"
#include "kernel_traits.h"
#include "mma_utils.h"
#include "tile_mask.h"
#include "tile_scheduler.h"

namespace jax_gna::sm80 {

using namespace cute;

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    bwd_dkdv_kernel(const __grid_constant__ BwdParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kNThreads = Traits::kNThreads;
  using Atoms = typename Traits::Atoms;

  extern __shared__ __align__(128) unsigned char smem_buf[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_buf);
  const int tid = threadIdx.x;
  const FwdParams& f = p.fwd;
  const ProblemShape& shape = f.shape;
  auto b = [] { return int(blockIdx.z); };
  auto hkv = [] { return int(blockIdx.y); };

  if (tid == 0) {
    ss.sched = make_bwd_schedule(int(blockIdx.x), int(blockIdx.y), tile_grid(shape, f.tiles.kv),
                                 q_tile_grid(shape, f.tiles.q), shape, f.tiles, kBlockN,
                                 p.num_extra_splits);
  }
  __syncthreads();
  const BwdSchedule& w = ss.sched;
  for (int r = tid; r < kBlockM; r += kNThreads) ss.q_code[r] = box_code(r, f.tiles.q);
  for (int c = tid; c < kBlockN; c += kNThreads) {
    const uint32_t code = box_code(c, f.tiles.kv);
    ss.kv_code[c] = code;
    if (!w.extra) store_key_inverse_window(c, code, w.kv, shape, ss.kv_inv_begin, ss.kv_inv_end);
  }
  __syncthreads();

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sQt = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQt{});
  Tensor sQtNoSwizzle = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQtNoSwizzle{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutQ{});
  Tensor sdOt = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutQt{});
  Tensor sdOtNoSwizzle =
      make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutQtNoSwizzle{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKV{});
  Tensor sKt = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKt{});
  Tensor sKtNoSwizzle = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKtNoSwizzle{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutKV{});
  Tensor sP = make_tensor(make_smem_ptr(ss.p), typename Traits::SmemLayoutP{});
  Tensor sPt = make_tensor(make_smem_ptr(ss.p), typename Traits::SmemLayoutPt{});
  Tensor sPtNoSwizzle = make_tensor(make_smem_ptr(ss.p), typename Traits::SmemLayoutPtNoSwizzle{});
  Tensor sdS = make_tensor(make_smem_ptr(ss.ds), typename Traits::SmemLayoutP{});
  Tensor sdSt = make_tensor(make_smem_ptr(ss.ds), typename Traits::SmemLayoutPt{});
  Tensor sdStNoSwizzle = make_tensor(make_smem_ptr(ss.ds), typename Traits::SmemLayoutPtNoSwizzle{});

  // K and V of this CTA's tile, once.
  {
    if (!w.extra) {
      const TileRows rows = tile_rows(w.kv, shape);
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sK, static_cast<const Element*>(f.k) + b() * f.k_strides.batch +
                  int64_t(hkv()) * f.k_strides.head,
          [&](int r, int64_t* off) {
            return row_offset(rows, ss.kv_code[r], f.k_strides.spatial, off);
          },
          tid);
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sV, static_cast<const Element*>(f.v) + b() * f.v_strides.batch +
                  int64_t(hkv()) * f.v_strides.head,
          [&](int r, int64_t* off) {
            return row_offset(rows, ss.kv_code[r], f.v_strides.spatial, off);
          },
          tid);
    } else {
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sK, static_cast<const Element*>(f.extra_k) + b() * f.extra_k_strides.batch +
                  int64_t(hkv()) * f.extra_k_strides.head,
          [&](int r, int64_t* off) {
            *off = int64_t(w.extra_begin + r) * f.extra_k_strides.token;
            return r < w.extra_count;
          },
          tid);
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sV, static_cast<const Element*>(f.extra_v) + b() * f.extra_v_strides.batch +
                  int64_t(hkv()) * f.extra_v_strides.head,
          [&](int r, int64_t* off) {
            *off = int64_t(w.extra_begin + r) * f.extra_v_strides.token;
            return r < w.extra_count;
          },
          tid);
    }
  }

  // Q, dO, LSE and delta rows of visit `it`.
  auto load_q_tile = [&](int it) {
    const QTileDesc t = bwd_q_tile(w, it, shape, f.tiles);
    const TileRows rows = tile_rows(t.q, shape);
    gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sQ, static_cast<const Element*>(f.q) + b() * f.q_strides.batch +
                int64_t(t.head) * f.q_strides.head,
        [&](int r, int64_t* off) {
          return row_offset(rows, ss.q_code[r], f.q_strides.spatial, off);
        },
        tid);
    gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sdO, static_cast<const Element*>(p.dout) + b() * p.dout_strides.batch +
                 int64_t(t.head) * p.dout_strides.head,
        [&](int r, int64_t* off) {
          return row_offset(rows, ss.q_code[r], p.dout_strides.spatial, off);
        },
        tid);
    const int64_t stat_base = b() * f.lse_strides.batch + int64_t(t.head) * f.lse_strides.head;
    auto stat_row = [&](int r, int64_t* off) {
      return row_offset(rows, ss.q_code[r], f.lse_strides.spatial, off);
    };
    gather_row_floats_async<kBlockM, kNThreads>(ss.lse, f.lse + stat_base, stat_row, tid);
    gather_row_floats_async<kBlockM, kNThreads>(ss.delta, p.delta + stat_base, stat_row, tid);
  };

  // A split with no Q tiles (more splits than Q tiles) or a key tile no query sees visits
  // nothing: it still writes its (zero) dK/dV.
  if (w.num_iters() > 0) load_q_tile(0);
  cp_async_fence();

  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmadKV mma_dkv;
  typename Traits::TiledMmadQ mma_dq;
  auto thr_sdp = mma_sdp.get_thread_slice(tid);
  auto thr_dkv = mma_dkv.get_thread_slice(tid);
  auto thr_dq = mma_dq.get_thread_slice(tid);
  Tensor tSrQ = thr_sdp.partition_fragment_A(sQ);
  Tensor tSrK = thr_sdp.partition_fragment_B(sK);
  Tensor tdPrdO = thr_sdp.partition_fragment_A(sdO);
  Tensor tdPrV = thr_sdp.partition_fragment_B(sV);
  Tensor tdVrPt = thr_dkv.partition_fragment_A(sPtNoSwizzle);
  Tensor tdVrdOt = thr_dkv.partition_fragment_B(sdOtNoSwizzle);
  Tensor tdKrdSt = thr_dkv.partition_fragment_A(sdStNoSwizzle);
  Tensor tdKrQt = thr_dkv.partition_fragment_B(sQtNoSwizzle);
  Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
  Tensor tdQrKt = thr_dq.partition_fragment_B(sKtNoSwizzle);

  auto copy_sdp_a = make_tiled_copy_A(typename Atoms::LdsmN{}, mma_sdp);
  auto copy_sdp_b = make_tiled_copy_B(typename Atoms::LdsmN{}, mma_sdp);
  auto copy_dkv_a = make_tiled_copy_A(typename Atoms::LdsmT{}, mma_dkv);
  auto copy_dkv_b = make_tiled_copy_B(typename Atoms::LdsmT{}, mma_dkv);
  auto copy_dq_a = make_tiled_copy_A(typename Atoms::LdsmN{}, mma_dq);
  auto copy_dq_b = make_tiled_copy_B(typename Atoms::LdsmT{}, mma_dq);
  auto copy_pds = make_tiled_copy_C(typename Atoms::Store{}, mma_sdp);

  Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  clear(acc_dk);
  clear(acc_dv);
  const float scale_log2 = f.scale * float(M_LOG2E);

  for (int it = 0; it < w.num_iters(); ++it) {
    cp_async_wait<0>();
    __syncthreads();  // Q, dO, stats of `it` (and K, V) landed; dQ of it - 1 done with sdS

    const int ltid = opaque(tid);
    Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    clear(acc_dp);
    {
      auto ta = copy_sdp_a.get_thread_slice(ltid);
      auto tb = copy_sdp_b.get_thread_slice(ltid);
      gemm_ss(mma_sdp, acc_s, tSrQ, tSrK, ta.partition_S(sQ), tb.partition_S(sK), copy_sdp_a,
              copy_sdp_b, ta, tb);
      gemm_ss(mma_sdp, acc_dp, tdPrdO, tdPrV, ta.partition_S(sdO), tb.partition_S(sV),
              copy_sdp_a, copy_sdp_b, ta, tb);
    }

    Tensor s_rc = rowcol_view(acc_s);
    Tensor dp_rc = rowcol_view(acc_dp);
    Tensor c_rc = rowcol_view(mma_sdp.get_thread_slice(ltid).partition_C(
        make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
    if (!w.extra) {
      const QTileDesc t = bwd_q_tile(w, it, shape, f.tiles);
      if (!t.interior) {  // CTA-uniform
        const int q_origin[kMaxRank] = {t.q[0].begin, t.q[1].begin, t.q[2].begin};
        mask_cols_by_inverse_window(s_rc, c_rc, ss.kv_inv_begin, ss.kv_inv_end, ss.q_code,
                                    q_origin);
      }
    } else if (w.extra_count < kBlockN) {
      mask_cols_beyond(s_rc, c_rc, w.extra_count);
    }

    // P = exp(scale * S - LSE); dS = P * (dP - delta), in place.
    CUTE_UNROLL
    for (int r = 0; r < size<0>(s_rc); ++r) {
      const int row = get<0>(c_rc(r, 0));
      const float lse_log2 = ss.lse[row] * float(M_LOG2E);
      const float delta = ss.delta[row];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s_rc); ++c) {
        const float prob = exp2f(s_rc(r, c) * scale_log2 - lse_log2);
        s_rc(r, c) = prob;
        dp_rc(r, c) = prob * (dp_rc(r, c) - delta);
      }
    }
    {
      auto tc = copy_pds.get_thread_slice(ltid);
      Tensor rP = convert_fragment<Element>(acc_s);
      copy(copy_pds, tc.retile_S(rP), tc.partition_D(sP));
      Tensor rdS = convert_fragment<Element>(acc_dp);
      copy(copy_pds, tc.retile_S(rdS), tc.partition_D(sdS));
    }
    __syncthreads();  // P, dS in shared memory

    {
      auto ta = copy_dkv_a.get_thread_slice(opaque(tid));
      auto tb = copy_dkv_b.get_thread_slice(opaque(tid));
      gemm_ss(mma_dkv, acc_dv, tdVrPt, tdVrdOt, ta.partition_S(sPt), tb.partition_S(sdOt),
              copy_dkv_a, copy_dkv_b, ta, tb);
      gemm_ss(mma_dkv, acc_dk, tdKrdSt, tdKrQt, ta.partition_S(sdSt), tb.partition_S(sQt),
              copy_dkv_a, copy_dkv_b, ta, tb);
    }
    __syncthreads();  // every warp is done with sQ, sdO, sP
    if (it + 1 < w.num_iters()) {
      load_q_tile(it + 1);
      cp_async_fence();
    }

    if (!p.deterministic) {
      Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
      clear(acc_dq);
      {
        auto ta = copy_dq_a.get_thread_slice(opaque(tid));
        auto tb = copy_dq_b.get_thread_slice(opaque(tid));
        gemm_ss(mma_dq, acc_dq, tdQrdS, tdQrKt, ta.partition_S(sdS), tb.partition_S(sKt),
                copy_dq_a, copy_dq_b, ta, tb);
      }
      // dq_accum has q's shape and strides. Rows outside the group are never written.
      const QTileDesc t = bwd_q_tile(w, it, shape, f.tiles);
      const TileRows rows = tile_rows(t.q, shape);
      float* dq_base = p.dq_accum + b() * f.q_strides.batch + int64_t(t.head) * f.q_strides.head;
      Tensor dq_rc = rowcol_view(acc_dq);
      Tensor cq_rc = rowcol_view(mma_dq.get_thread_slice(opaque(tid)).partition_C(
          make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
      CUTE_UNROLL
      for (int r = 0; r < size<0>(dq_rc); ++r) {
        const int row = get<0>(cq_rc(r, 0));
        int64_t off = 0;
        if (row_offset(rows, ss.q_code[row], f.q_strides.spatial, &off)) {
          CUTE_UNROLL
          for (int c = 0; c < size<1>(dq_rc); ++c) {
            atomicAdd(dq_base + off + get<1>(cq_rc(r, c)), f.scale * dq_rc(r, c));
          }
        }
      }
    }
  }

  // Epilogue: dK = scale * dS^T Q, dV = P^T dO.
  cp_async_wait<0>();  // nothing may still be landing in sK / sV (e.g. no visits at all)
  CUTE_UNROLL
  for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= f.scale;
  if (!w.extra) {
    __syncthreads();  // every warp is done with sK, sV: they become staging tiles
    const TileRows rows = tile_rows(w.kv, shape);
    store_rows_output<kBlockN, kHeadDim, kNThreads, Element>(
        mma_dkv, acc_dk, sK,
        static_cast<Element*>(p.dk) + b() * p.dk_strides.batch +
            int64_t(hkv()) * p.dk_strides.head,
        [&](int r, int64_t* off) {
          return row_offset(rows, ss.kv_code[r], p.dk_strides.spatial, off);
        },
        tid);
    store_rows_output<kBlockN, kHeadDim, kNThreads, Element>(
        mma_dkv, acc_dv, sV,
        static_cast<Element*>(p.dv) + b() * p.dv_strides.batch +
            int64_t(hkv()) * p.dv_strides.head,
        [&](int r, int64_t* off) {
          return row_offset(rows, ss.kv_code[r], p.dv_strides.spatial, off);
        },
        tid);
  } else {
    // fp32 partials: dextra_accum[which, split, b, e, hkv, :], which 0 = dK, 1 = dV.
    const int64_t per_split = int64_t(shape.batch) * shape.num_extra * shape.heads_kv * kHeadDim;
    const int64_t row0 = ((int64_t(b()) * shape.num_extra + w.extra_begin) * shape.heads_kv +
                          hkv()) * kHeadDim;
    const int64_t row_stride = int64_t(shape.heads_kv) * kHeadDim;
    float* dk_base = p.dextra_accum + int64_t(w.split) * per_split + row0;
    float* dv_base = p.dextra_accum + (int64_t(p.num_extra_splits) + w.split) * per_split + row0;
    Tensor c_rc = rowcol_view(thr_dkv.partition_C(
        make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{})));
    Tensor dk_rc = rowcol_view(acc_dk);
    Tensor dv_rc = rowcol_view(acc_dv);
    CUTE_UNROLL
    for (int r = 0; r < size<0>(dk_rc); ++r) {
      const int row = get<0>(c_rc(r, 0));
      if (row < w.extra_count) {
        CUTE_UNROLL
        for (int c = 0; c < size<1>(dk_rc); ++c) {
          const int64_t off = row * row_stride + get<1>(c_rc(r, c));
          dk_base[off] = dk_rc(r, c);
          dv_base[off] = dv_rc(r, c);
        }
      }
    }
  }
}

}  // namespace jax_gna::sm80
