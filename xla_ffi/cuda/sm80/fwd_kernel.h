// The sm80 GNA forward kernel (FlashAttention-2 structure on CuTe: mma.sync m16n8k16,
// cp.async G2S, ldmatrix S2R, swizzled shared memory, online softmax in fp32).
//
// One CTA = one (batch, query head, Q tile). The Q tile (kBlockM tokens, a box of any shape
// given at run time in params.tiles.q, inside one dilation group per dim) is gathered once;
// the CTA then walks the KV-tile box its queries need (tile_scheduler.h), then the
// additional-KV tiles. Per KV tile:
//   wait K, sync | issue V loads | S = Q K^T | mask (boundary tiles only) |
//   wait V, sync | issue next K loads | online softmax | O += P V
// so the V load overlaps Q K^T and the next K load overlaps softmax and P V (single K and V
// buffers; the two barriers separate each buffer's readers from its next writer).
// GQA: query head h reads KV head h / (Hq / Hkv) straight from the [B, *, Hkv, D] tensors.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>
#include <type_traits>

#include "epilogue.h"
#include "gather_copy.h"
#include "kernel_traits.h"
#include "mma_utils.h"
#include "softmax.h"
#include "tile_mask.h"
#include "tile_scheduler.h"

namespace jax_gna::sm80 {

using namespace cute;

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    fwd_kernel(const __grid_constant__ FwdParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kNThreads = Traits::kNThreads;
  using Atoms = typename Traits::Atoms;

  extern __shared__ __align__(128) unsigned char smem_buf[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_buf);
  const int tid = threadIdx.x;
  const ProblemShape& shape = p.shape;
  // Batch and head are re-read from the CTA index where needed (cheap special-register
  // reads) rather than kept in registers across the main loop.
  // Grid (Q tiles x G, Hkv, B) with G = Hq / Hkv query heads per KV head, the group's heads
  // fastest: the CTAs of one Q tile and all heads sharing its K/V run together (L2 reuse).
  auto b = [] { return int(blockIdx.z); };
  auto hkv = [] { return int(blockIdx.y); };
  auto h = [&] {
    const int group = shape.heads_q / shape.heads_kv;
    return int(blockIdx.y) * group + int(blockIdx.x % unsigned(group));
  };

  // Per-CTA tables: the schedule, box coordinates of Q and KV rows, window of each query
  // row. Kept in shared memory and read where needed, so that no schedule state occupies
  // registers across the main loop (the accumulators need nearly all of them).
  if (tid == 0) {
    ss.sched = make_fwd_schedule(blockIdx.x / unsigned(shape.heads_q / shape.heads_kv),
                                 q_tile_grid(shape, p.tiles.q), shape, p.tiles,
                                 kBlockN);
  }
  __syncthreads();
  const FwdSchedule& w = ss.sched;
  for (int r = tid; r < kBlockM; r += kNThreads) {
    const uint32_t code = box_code(r, p.tiles.q);
    ss.q_code[r] = code;
    store_query_row_window(r, code, w.q, shape, ss.q_win_begin, ss.q_win_end);
  }
  for (int r = tid; r < kBlockN; r += kNThreads) ss.kv_code[r] = box_code(r, p.tiles.kv);
  __syncthreads();

  // Base pointers of this (batch, head): recomputed from the kernel parameters at each use.
  auto q_base = [&] {
    return static_cast<const Element*>(p.q) + b() * p.q_strides.batch +
           int64_t(h()) * p.q_strides.head;
  };
  auto kv_base = [&](const void* ptr, const TokenStrides& st) {
    return static_cast<const Element*>(ptr) + b() * st.batch + int64_t(hkv()) * st.head;
  };
  // Only dereferenced for extra tiles (num_extra > 0, so the pointers are real).
  auto extra_base = [&](const void* ptr, const ExtraStrides& st) {
    return static_cast<const Element*>(ptr) + b() * st.batch + int64_t(hkv()) * st.head;
  };

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutVt{});
  Tensor sVtNoSwizzle =
      make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutVtNoSwizzle{});

  // Issue the loads of K (kIsV false) or V of visit-list tile `it`; the choice is static so
  // that no parameter struct is selected at run time.
  auto load_kv = [&](auto&& sX, auto is_v, int it) {
    constexpr bool kIsV = decltype(is_v)::value;
    const KvTileDesc t = fwd_kv_tile(w, it, shape, p.tiles, kBlockN);
    if (!t.extra) {
      const TileRows rows = tile_rows(t.kv, shape);
      const int64_t* strides = kIsV ? p.v_strides.spatial : p.k_strides.spatial;
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sX, kIsV ? kv_base(p.v, p.v_strides) : kv_base(p.k, p.k_strides),
          [&](int r, int64_t* off) { return row_offset(rows, ss.kv_code[r], strides, off); },
          tid);
    } else {
      const int64_t stride = kIsV ? p.extra_v_strides.token : p.extra_k_strides.token;
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sX,
          kIsV ? extra_base(p.extra_v, p.extra_v_strides)
               : extra_base(p.extra_k, p.extra_k_strides),
          [&](int r, int64_t* off) {
            *off = int64_t(t.extra_begin + r) * stride;
            return r < t.extra_count;
          },
          tid);
    }
  };

  // Prologue: Q and the first K tile in one cp.async group.
  {
    const TileRows q_rows = tile_rows(w.q, shape);
    gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sQ, q_base(),
        [&](int r, int64_t* off) {
          return row_offset(q_rows, ss.q_code[r], p.q_strides.spatial, off);
        },
        tid);
  }
  load_kv(sK, std::false_type{}, 0);
  cp_async_fence();

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tSrK = thr_mma.partition_fragment_B(sK);
  Tensor tOrVt = thr_mma.partition_fragment_B(sVtNoSwizzle);

  auto copy_q = make_tiled_copy_A(typename Atoms::LdsmN{}, mma);
  auto copy_k = make_tiled_copy_B(typename Atoms::LdsmN{}, mma);
  auto copy_v = make_tiled_copy_B(typename Atoms::LdsmT{}, mma);

  Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_o);
  Tensor acc_o_rc = rowcol_view(acc_o);
  constexpr int kRows = decltype(size<0>(acc_o_rc))::value;
  OnlineSoftmax<kRows> softmax;
  const float scale_log2 = p.scale * float(M_LOG2E);

  // The trip count is read from shared memory each time (the barriers in the loop force the
  // reload), one register less across the loop.
  for (int it = 0; it < w.num_tiles(); ++it) {
    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    cp_async_wait<0>();
    __syncthreads();  // K(it) landed; every warp is done with V(it - 1)
    load_kv(sV, std::true_type{}, it);
    cp_async_fence();

    // Thread-dependent shared-memory addresses are rebuilt each iteration from an opaque
    // thread index instead of being carried across the loop (registers; see opaque()).
    const int ltid = opaque(tid);
    auto thr_copy_q = copy_q.get_thread_slice(ltid);
    auto thr_copy_k = copy_k.get_thread_slice(ltid);
    gemm_ss<Traits::kPrefetchS>(mma, acc_s, tSrQ, tSrK, thr_copy_q.partition_S(sQ),
                                thr_copy_k.partition_S(sK), copy_q, copy_k, thr_copy_q,
                                thr_copy_k);

    Tensor s_rc = rowcol_view(acc_s);
    {
      Tensor tScS_rc = rowcol_view(mma.get_thread_slice(ltid).partition_C(
          make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
      const KvTileDesc t = fwd_kv_tile(w, it, shape, p.tiles, kBlockN);
      if (!t.interior) {  // CTA-uniform
        if (!t.extra) {
          const int origin[kMaxRank] = {t.kv[0].begin, t.kv[1].begin, t.kv[2].begin};
          mask_rows_by_window(s_rc, tScS_rc, ss.q_win_begin, ss.q_win_end, ss.kv_code,
                              origin);
        } else {
          mask_cols_beyond(s_rc, tScS_rc, t.extra_count);
        }
      }
    }

    cp_async_wait<0>();
    __syncthreads();  // V(it) landed; every warp is done with K(it)
    if (it + 1 < w.num_tiles()) {
      load_kv(sK, std::false_type{}, it + 1);
      cp_async_fence();
    }

    softmax.update(s_rc, acc_o_rc, scale_log2);
    Tensor rP = convert_fragment<Element>(acc_s);
    Tensor tOrP = make_tensor(rP.data(), acc_to_a_layout(rP.layout()));
    auto thr_copy_v = copy_v.get_thread_slice(opaque(tid));
    gemm_rs<Traits::kPrefetchPV>(mma, acc_o, tOrP, tOrVt, thr_copy_v.partition_S(sVt), copy_v,
                                 thr_copy_v);
  }

  float lse[kRows];
  softmax.finalize(acc_o_rc, p.scale, lse);

  Element* out_base = static_cast<Element*>(p.out) + b() * p.out_strides.batch +
                      int64_t(h()) * p.out_strides.head;
  float* lse_base = p.lse + b() * p.lse_strides.batch + int64_t(h()) * p.lse_strides.head;
  const TileRows q_rows = tile_rows(w.q, shape);
  __syncthreads();  // every warp is done reading sQ: it becomes the output staging tile
  store_rows_output<kBlockM, kHeadDim, kNThreads, Element>(
      mma, acc_o, sQ, out_base,
      [&](int r, int64_t* off) {
        return row_offset(q_rows, ss.q_code[r], p.out_strides.spatial, off);
      },
      tid);
  store_row_stat<kBlockM, kHeadDim>(
      thr_mma, lse, lse_base,
      [&](int r, int64_t* off) {
        return row_offset(q_rows, ss.q_code[r], p.lse_strides.spatial, off);
      });
}

}  // namespace jax_gna::sm80
