// Deterministic dQ of the sm80 backward: Q-tile-major, no atomics.
//
// One CTA = one (batch, query head, Q tile), walking the same visit list as the forward
// (the KV-tile box of its queries, then the additional-KV tiles; tile_scheduler.h). Per KV
// tile it recomputes S = Q K^T and dP = dO V^T, forms P = exp(scale S - LSE) and
// dS = P (dP - delta) in registers, and accumulates dQ += dS K; dQ is written once at the
// end. Every dQ element is produced by one thread in a fixed order, so results are bitwise
// reproducible (the KV-tile-major kernel then skips its dQ atomics). Costs two extra GEMMs
// per tile pair (S and dP are computed in both kernels).
//
// Pipeline per KV tile (single K and V buffers):
//   wait K, V; sync | S, dP | sync, issue next V | mask, P, dS, dQ += dS K | sync, issue next K
#pragma once

#include <cute/tensor.hpp>

#include <cmath>
#include <type_traits>

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
    bwd_dq_kernel(const __grid_constant__ BwdParams p) {
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
  // Grid (Q tiles x G, Hkv, B) with G = Hq / Hkv query heads per KV head, the group's heads
  // fastest: the CTAs of one Q tile and all heads sharing its K/V run together (L2 reuse).
  auto b = [] { return int(blockIdx.z); };
  auto hkv = [] { return int(blockIdx.y); };
  auto h = [&] {
    const int group = shape.heads_q / shape.heads_kv;
    return int(blockIdx.y) * group + int(blockIdx.x % unsigned(group));
  };

  if (tid == 0) {
    ss.sched = make_fwd_schedule(int(blockIdx.x / unsigned(shape.heads_q / shape.heads_kv)),
                                 q_tile_grid(shape, f.tiles.q), shape, f.tiles,
                                 kBlockN);
  }
  __syncthreads();
  const FwdSchedule& w = ss.sched;
  for (int r = tid; r < kBlockM; r += kNThreads) {
    const uint32_t code = box_code(r, f.tiles.q);
    ss.q_code[r] = code;
    store_query_row_window(r, code, w.q, shape, ss.q_win_begin, ss.q_win_end);
  }
  for (int r = tid; r < kBlockN; r += kNThreads) ss.kv_code[r] = box_code(r, f.tiles.kv);
  __syncthreads();

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKV{});
  Tensor sKt = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKt{});
  Tensor sKtNoSwizzle = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKtNoSwizzle{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutKV{});

  // Loads of K (kIsV false) or V of visit-list tile `it`; the choice is static so that no
  // parameter struct is selected at run time (that would copy it to local memory).
  auto load_kv = [&](auto&& sX, auto is_v, int it) {
    constexpr bool kIsV = decltype(is_v)::value;
    const KvTileDesc t = fwd_kv_tile(w, it, shape, f.tiles, kBlockN);
    if (!t.extra) {
      const TileRows rows = tile_rows(t.kv, shape);
      const TokenStrides& st = kIsV ? f.v_strides : f.k_strides;
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sX,
          static_cast<const Element*>(kIsV ? f.v : f.k) + b() * st.batch +
              int64_t(hkv()) * st.head,
          [&](int r, int64_t* off) {
            return row_offset(rows, ss.kv_code[r], st.spatial, off);
          },
          tid);
    } else {
      const ExtraStrides& st = kIsV ? f.extra_v_strides : f.extra_k_strides;
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sX,
          static_cast<const Element*>(kIsV ? f.extra_v : f.extra_k) + b() * st.batch +
              int64_t(hkv()) * st.head,
          [&](int r, int64_t* off) {
            *off = int64_t(t.extra_begin + r) * st.token;
            return r < t.extra_count;
          },
          tid);
    }
  };

  // Prologue: Q, dO, LSE, delta of the Q tile and the first K, V tile in one group.
  {
    const TileRows rows = tile_rows(w.q, shape);
    gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sQ, static_cast<const Element*>(f.q) + b() * f.q_strides.batch +
                int64_t(h()) * f.q_strides.head,
        [&](int r, int64_t* off) {
          return row_offset(rows, ss.q_code[r], f.q_strides.spatial, off);
        },
        tid);
    gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sdO, static_cast<const Element*>(p.dout) + b() * p.dout_strides.batch +
                 int64_t(h()) * p.dout_strides.head,
        [&](int r, int64_t* off) {
          return row_offset(rows, ss.q_code[r], p.dout_strides.spatial, off);
        },
        tid);
    const int64_t stat_base = b() * f.lse_strides.batch + int64_t(h()) * f.lse_strides.head;
    auto stat_row = [&](int r, int64_t* off) {
      return row_offset(rows, ss.q_code[r], f.lse_strides.spatial, off);
    };
    gather_row_floats_async<kBlockM, kNThreads>(ss.lse, f.lse + stat_base, stat_row, tid);
    gather_row_floats_async<kBlockM, kNThreads>(ss.delta, p.delta + stat_base, stat_row, tid);
  }
  load_kv(sK, std::false_type{}, 0);
  load_kv(sV, std::true_type{}, 0);
  cp_async_fence();

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tSrK = thr_mma.partition_fragment_B(sK);
  Tensor tdPrdO = thr_mma.partition_fragment_A(sdO);
  Tensor tdPrV = thr_mma.partition_fragment_B(sV);
  Tensor tdQrKt = thr_mma.partition_fragment_B(sKtNoSwizzle);
  auto copy_a = make_tiled_copy_A(typename Atoms::LdsmN{}, mma);
  auto copy_b = make_tiled_copy_B(typename Atoms::LdsmN{}, mma);
  auto copy_bt = make_tiled_copy_B(typename Atoms::LdsmT{}, mma);

  Tensor acc_dq = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_dq);
  const float scale_log2 = f.scale * float(M_LOG2E);

  for (int it = 0; it < w.num_tiles(); ++it) {
    cp_async_wait<0>();
    __syncthreads();  // K(it), V(it) landed

    const int ltid = opaque(tid);
    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor acc_dp = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    clear(acc_dp);
    {
      auto ta = copy_a.get_thread_slice(ltid);
      auto tb = copy_b.get_thread_slice(ltid);
      gemm_ss(mma, acc_s, tSrQ, tSrK, ta.partition_S(sQ), tb.partition_S(sK), copy_a, copy_b,
              ta, tb);
      gemm_ss(mma, acc_dp, tdPrdO, tdPrV, ta.partition_S(sdO), tb.partition_S(sV), copy_a,
              copy_b, ta, tb);
    }
    __syncthreads();  // every warp is done with V(it)
    if (it + 1 < w.num_tiles()) {
      load_kv(sV, std::true_type{}, it + 1);
      cp_async_fence();
    }

    Tensor s_rc = rowcol_view(acc_s);
    Tensor dp_rc = rowcol_view(acc_dp);
    Tensor c_rc = rowcol_view(mma.get_thread_slice(ltid).partition_C(
        make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
    {
      const KvTileDesc t = fwd_kv_tile(w, it, shape, f.tiles, kBlockN);
      if (!t.interior) {  // CTA-uniform
        if (!t.extra) {
          const int origin[kMaxRank] = {t.kv[0].begin, t.kv[1].begin, t.kv[2].begin};
          mask_rows_by_window(s_rc, c_rc, ss.q_win_begin, ss.q_win_end, ss.kv_code, origin);
        } else {
          mask_cols_beyond(s_rc, c_rc, t.extra_count);
        }
      }
    }
    CUTE_UNROLL
    for (int r = 0; r < size<0>(s_rc); ++r) {
      const int row = get<0>(c_rc(r, 0));
      const float lse_log2 = ss.lse[row] * float(M_LOG2E);
      const float delta = ss.delta[row];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s_rc); ++c) {
        const float prob = exp2f(s_rc(r, c) * scale_log2 - lse_log2);
        dp_rc(r, c) = prob * (dp_rc(r, c) - delta);
      }
    }
    {
      Tensor rdS = convert_fragment<Element>(acc_dp);
      Tensor tdQrdS = make_tensor(rdS.data(), acc_to_a_layout(rdS.layout()));
      auto tb = copy_bt.get_thread_slice(opaque(tid));
      gemm_rs(mma, acc_dq, tdQrdS, tdQrKt, tb.partition_S(sKt), copy_bt, tb);
    }
    __syncthreads();  // every warp is done with K(it)
    if (it + 1 < w.num_tiles()) {
      load_kv(sK, std::false_type{}, it + 1);
      cp_async_fence();
    }
  }

  CUTE_UNROLL
  for (int i = 0; i < size(acc_dq); ++i) acc_dq(i) *= f.scale;
  const TileRows rows = tile_rows(w.q, shape);
  // sQ is free: the loop ended with a barrier after the last reads of sQ.
  store_rows_output<kBlockM, kHeadDim, kNThreads, Element>(
      mma, acc_dq, sQ,
      static_cast<Element*>(p.dq) + b() * p.dq_strides.batch + int64_t(h()) * p.dq_strides.head,
      [&](int r, int64_t* off) {
        return row_offset(rows, ss.q_code[r], p.dq_strides.spatial, off);
      },
      tid);
}

}  // namespace jax_gna::sm80
