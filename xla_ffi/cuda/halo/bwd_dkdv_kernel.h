// dK and dV of the halo backward: KV-box-major, deterministic (no atomics).
//
// One CTA = one KV box of kChunk keys (power-of-two sides, group-local coordinates,
// p.tiles.kv) and a run of (batch, KV head) units over it (halo_plan.h CtaItems, one query
// head group each; the box's tables are built once). Per unit its work is the box's inverse
// halo (halo_plan.h: the box of queries that see any of its keys, per dim the union of the
// keys' inverse windows, within the computed Q tiles), for every query head of the KV
// head's GQA group, as a query list (the inverse halo's tokens row-major) in steps of
// kBlockM queries. dK and dV stay in registers over a unit's steps: the group's sum is formed
// inside the CTA.
//
// The steps of all units form one stream: a step issues the next step's Q, dO, LSE, delta
// gathers (the other of two buffers) and, at a unit's first step, the next unit's K and V
// (the other of two K/V buffers) before its own wait, so they load while it computes:
//   issue | wait for this step's rows; sync | S = Q K^T, dP = dO V^T | element mask |
//   P = exp(scale S - LSE), dS = P (dP - delta) -> smem | sync | dV += P^T dO, dK += dS^T Q |
//   sync | after a unit's last step: dK, dV through its K/V buffer to global; sync
// Mask: query q of the list sees key c of the box iff q's box coordinate lies in c's inverse
// window shifted into the inverse halo (sm80/tile_mask.h mask_cols_by_inverse_window, the
// per-key tables of index_math.h key_inverse_window): exactly "key c is in q's window".
// Padding positions past the list never are (their Q, dO, LSE, delta rows are zero too).
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "halo_plan.h"
#include "kernel_traits.h"
#include "q_tile_cta.h"
#include "sm80/epilogue.h"
#include "sm80/gather_copy.h"
#include "sm80/mma_utils.h"
#include "sm80/tile_mask.h"

namespace jax_gna::halo {

using namespace cute;

// What a launch passes besides BwdParams (halo_plan.h BwdPlan).
struct DkvArgs {
  BwdParams p;
  int units_per_cta;  // (batch, KV head) units per CTA
  int kv_buffers;     // K/V tiles in shared memory: 2 when a CTA computes several units
};

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocks)
    bwd_dkdv_kernel(const __grid_constant__ DkvArgs args) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kNThreads = Traits::kNThreads;
  using Atoms = typename Traits::Atoms;

  const BwdParams& p = args.p;
  const FwdParams& f = p.fwd;
  const ProblemShape& shape = f.shape;
  const int tid = threadIdx.x;
  const CtaItems work = this_cta_items(shape, args.units_per_cta, 1, 1);
  if (work.units == 0) return;  // past the last unit (CTA-uniform, before any barrier)

  extern __shared__ __align__(128) unsigned char smem_buf[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_buf);
  Element* const kv_second = reinterpret_cast<Element*>(smem_buf + Traits::kSmemBytes);
  // K and V of unit u: buffer u % 2 (the second after the storage).
  auto k_at = [&](int u) { return (u & 1) != 0 ? kv_second : ss.k; };
  auto v_at = [&](int u) {
    return (u & 1) != 0 ? kv_second + cosize_v<typename Traits::SmemLayoutKV> : ss.v;
  };

  // ---- The work item: KV box, inverse halo, tables ----------------------------------------
  if (tid == 0) {
    DimTile kv[kMaxRank];
    sm80::decode_tile(int(blockIdx.x), sm80::tile_grid(shape, f.tiles.kv), shape, f.tiles.kv,
                      /*heavy_first=*/false, kv);
    const HaloBox inv = inverse_halo_box(kv, shape, f.tiles.q);
    for (int d = 0; d < kMaxRank; ++d) {
      ss.kv_tile[d] = kv[d];
      ss.inv_tile[d] = {kv[d].group, kv[d].group_len, inv.origin[d],
                        inv.origin[d] + inv.extent[d]};
    }
    ss.inv_tokens = inv.tokens();
  }
  __syncthreads();
  const int inv_tokens = ss.inv_tokens;
  const int q_steps = ceil_div(inv_tokens, kBlockM);
  {
    const int extent[kMaxRank] = {ss.inv_tile[0].end - ss.inv_tile[0].begin,
                                  ss.inv_tile[1].end - ss.inv_tile[1].begin,
                                  ss.inv_tile[2].end - ss.inv_tile[2].begin};
    for (int q = tid; q < q_steps * kBlockM; q += kNThreads) {
      ss.q_code[q] = query_list_code(q, inv_tokens, extent);
    }
    for (int c = tid; c < kBlockN; c += kNThreads) {
      const uint32_t code = sm80::box_code(c, f.tiles.kv);
      ss.kv_code[c] = code;
      sm80::store_key_inverse_window(c, code, ss.kv_tile, shape, ss.kv_inv_begin,
                                     ss.kv_inv_end);
    }
  }
  __syncthreads();

  // The step rows of buffer `bi` (step parity).
  auto sQ_at = [&](int bi) {
    return make_tensor(make_smem_ptr(ss.step[bi].q), typename Traits::SmemLayoutQ{});
  };
  auto sQt_at = [&](int bi) {
    return make_tensor(make_smem_ptr(ss.step[bi].q), typename Traits::SmemLayoutQt{});
  };
  auto sdO_at = [&](int bi) {
    return make_tensor(make_smem_ptr(ss.step[bi].dout), typename Traits::SmemLayoutQ{});
  };
  auto sdOt_at = [&](int bi) {
    return make_tensor(make_smem_ptr(ss.step[bi].dout), typename Traits::SmemLayoutQt{});
  };
  Tensor sQtNoSwizzle =
      make_tensor(make_smem_ptr(ss.step[0].q), typename Traits::SmemLayoutQtNoSwizzle{});
  Tensor sdOtNoSwizzle =
      make_tensor(make_smem_ptr(ss.step[0].dout), typename Traits::SmemLayoutQtNoSwizzle{});
  auto sK_at = [&](int u) {
    return make_tensor(make_smem_ptr(k_at(u)), typename Traits::SmemLayoutKV{});
  };
  auto sV_at = [&](int u) {
    return make_tensor(make_smem_ptr(v_at(u)), typename Traits::SmemLayoutKV{});
  };
  Tensor sP = make_tensor(make_smem_ptr(ss.p), typename Traits::SmemLayoutP{});
  Tensor sPt = make_tensor(make_smem_ptr(ss.p), typename Traits::SmemLayoutPt{});
  Tensor sPtNoSwizzle = make_tensor(make_smem_ptr(ss.p), typename Traits::SmemLayoutPtNoSwizzle{});
  Tensor sdS = make_tensor(make_smem_ptr(ss.ds), typename Traits::SmemLayoutP{});
  Tensor sdSt = make_tensor(make_smem_ptr(ss.ds), typename Traits::SmemLayoutPt{});
  Tensor sdStNoSwizzle = make_tensor(make_smem_ptr(ss.ds), typename Traits::SmemLayoutPtNoSwizzle{});

  // K and V of unit u's box rows (rows past the group's end zero filled).
  const sm80::TileRows kv_rows = sm80::tile_rows(ss.kv_tile, shape);
  auto kv_row = [&](const int64_t* stride) {
    return [&kv_rows, stride, &ss](int r, int64_t* off) {
      return sm80::row_offset(kv_rows, ss.kv_code[r], stride, off);
    };
  };
  auto load_kv = [&](int u) {
    const int64_t b = work.batch(u), hkv = work.kv_head(u);
    sm80::gather_rows_async<kBlockN, kHeadDim, kNThreads>(
        sK_at(u), static_cast<const Element*>(f.k) + b * f.k_strides.batch + hkv * f.k_strides.head,
        kv_row(f.k_strides.spatial), tid);
    sm80::gather_rows_async<kBlockN, kHeadDim, kNThreads>(
        sV_at(u), static_cast<const Element*>(f.v) + b * f.v_strides.batch + hkv * f.v_strides.head,
        kv_row(f.v_strides.spatial), tid);
  };

  // Step s of the stream: unit s / num_iters; its step it = s % num_iters: query head
  // hkv * G + it / q_steps, query-list positions (it % q_steps) * kBlockM ..: the Q, dO, LSE
  // and delta rows, into buffer s % 2.
  const int group = shape.heads_q / shape.heads_kv;
  const int num_iters = q_steps * group;
  const int total = work.units * num_iters;
  auto load_step = [&](int s) {
    typename Traits::StepRows& sr = ss.step[s & 1];
    const int u = s / num_iters, it = s - u * num_iters;
    const int64_t b = work.batch(u), h = work.kv_head(u) * group + it / q_steps;
    const uint32_t* codes = ss.q_code + (it % q_steps) * kBlockM;
    const sm80::TileRows rows = sm80::tile_rows(ss.inv_tile, shape);
    auto q_row = [&](const int64_t* stride) {
      return [&rows, codes, stride](int r, int64_t* off) {
        return sm80::row_offset(rows, codes[r], stride, off);
      };
    };
    sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sQ_at(s & 1),
        static_cast<const Element*>(f.q) + b * f.q_strides.batch + h * f.q_strides.head,
        q_row(f.q_strides.spatial), tid);
    sm80::gather_rows_async<kBlockM, kHeadDim, kNThreads>(
        sdO_at(s & 1),
        static_cast<const Element*>(p.dout) + b * p.dout_strides.batch +
            h * p.dout_strides.head,
        q_row(p.dout_strides.spatial), tid);
    const int64_t stat = b * f.lse_strides.batch + h * f.lse_strides.head;
    sm80::gather_row_floats_async<kBlockM, kNThreads>(sr.lse, f.lse + stat,
                                                      q_row(f.lse_strides.spatial), tid);
    sm80::gather_row_floats_async<kBlockM, kNThreads>(sr.delta, p.delta + stat,
                                                      q_row(f.lse_strides.spatial), tid);
  };
  // cp.async groups: group 0 holds unit 0's K, V and step 0's rows; step s commits group
  // s + 1 (step s + 1's rows, at a unit's first step also the next unit's K and V; maybe
  // empty) before its wait, so at most one group may still be pending when step s's rows
  // and its unit's K, V (group (u - 1) num_iters + 1 <= s) must have landed.
  if (total > 0) {
    load_kv(0);
    load_step(0);
  }
  sm80::cp_async_fence();

  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmadKV mma_dkv;
  auto thr_sdp = mma_sdp.get_thread_slice(tid);
  auto thr_dkv = mma_dkv.get_thread_slice(tid);
  Tensor tSrQ = thr_sdp.partition_fragment_A(sQ_at(0));
  Tensor tSrK = thr_sdp.partition_fragment_B(sK_at(0));
  Tensor tdPrdO = thr_sdp.partition_fragment_A(sdO_at(0));
  Tensor tdPrV = thr_sdp.partition_fragment_B(sV_at(0));
  Tensor tdVrPt = thr_dkv.partition_fragment_A(sPtNoSwizzle);
  Tensor tdVrdOt = thr_dkv.partition_fragment_B(sdOtNoSwizzle);
  Tensor tdKrdSt = thr_dkv.partition_fragment_A(sdStNoSwizzle);
  Tensor tdKrQt = thr_dkv.partition_fragment_B(sQtNoSwizzle);
  auto copy_sdp_a = make_tiled_copy_A(typename Atoms::LdsmN{}, mma_sdp);
  auto copy_sdp_b = make_tiled_copy_B(typename Atoms::LdsmN{}, mma_sdp);
  auto copy_dkv_a = make_tiled_copy_A(typename Atoms::LdsmT{}, mma_dkv);
  auto copy_dkv_b = make_tiled_copy_B(typename Atoms::LdsmT{}, mma_dkv);
  auto copy_pds = make_tiled_copy_C(typename Atoms::Store{}, mma_sdp);

  Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  const float scale_log2 = f.scale * float(M_LOG2E);

  // dK = scale * dS^T Q, dV = P^T dO of unit u: rows of the box that exist, staged in the
  // unit's K / V buffer (its last step is done everywhere); a barrier after, since the
  // buffer takes unit u + 2's K and V at unit u + 1's first step.
  auto store_unit = [&](int u) {
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= f.scale;
    const int64_t b = work.batch(u), hkv = work.kv_head(u);
    Tensor sK = sK_at(u);
    Tensor sV = sV_at(u);
    sm80::store_rows_output<kBlockN, kHeadDim, kNThreads, Element>(
        mma_dkv, acc_dk, sK,
        static_cast<Element*>(p.dk) + b * p.dk_strides.batch + hkv * p.dk_strides.head,
        kv_row(p.dk_strides.spatial), tid);
    sm80::store_rows_output<kBlockN, kHeadDim, kNThreads, Element>(
        mma_dkv, acc_dv, sV,
        static_cast<Element*>(p.dv) + b * p.dv_strides.batch + hkv * p.dv_strides.head,
        kv_row(p.dv_strides.spatial), tid);
    __syncthreads();
  };
  if (total == 0) {  // a box no computed query sees: zero dK / dV, nothing loaded
    for (int u = 0; u < work.units; ++u) {
      clear(acc_dk);
      clear(acc_dv);
      store_unit(u);
    }
    return;
  }

  for (int s = 0; s < total; ++s) {
    const int u = s / num_iters, it = s - u * num_iters;
    // Buffer (s + 1) % 2 was last read by step s - 1, before its closing barrier; K/V buffer
    // (u + 1) % 2 by unit u - 1, before the barrier after its stores.
    if (s + 1 < total) load_step(s + 1);
    if (it == 0 && u + 1 < work.units) load_kv(u + 1);
    sm80::cp_async_fence();
    sm80::cp_async_wait<1>();
    __syncthreads();  // Q, dO, stats of step s (and unit u's K, V) landed
    if (it == 0) {
      clear(acc_dk);
      clear(acc_dv);
    }
    const int bi = s & 1;
    Tensor sK = sK_at(u);
    Tensor sV = sV_at(u);
    const typename Traits::StepRows& sr = ss.step[bi];
    Tensor sQ = sQ_at(bi);
    Tensor sdO = sdO_at(bi);

    const int ltid = sm80::opaque(tid);
    Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    clear(acc_dp);
    {
      auto ta = copy_sdp_a.get_thread_slice(ltid);
      auto tb = copy_sdp_b.get_thread_slice(ltid);
      sm80::gemm_ss(mma_sdp, acc_s, tSrQ, tSrK, ta.partition_S(sQ), tb.partition_S(sK),
                    copy_sdp_a, copy_sdp_b, ta, tb);
      sm80::gemm_ss(mma_sdp, acc_dp, tdPrdO, tdPrV, ta.partition_S(sdO), tb.partition_S(sV),
                    copy_sdp_a, copy_sdp_b, ta, tb);
    }

    Tensor s_rc = sm80::rowcol_view(acc_s);
    Tensor dp_rc = sm80::rowcol_view(acc_dp);
    Tensor c_rc = sm80::rowcol_view(mma_sdp.get_thread_slice(ltid).partition_C(
        make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
    {
      const int q_origin[kMaxRank] = {ss.inv_tile[0].begin, ss.inv_tile[1].begin,
                                      ss.inv_tile[2].begin};
      sm80::mask_cols_by_inverse_window(s_rc, c_rc, ss.kv_inv_begin, ss.kv_inv_end,
                                        ss.q_code + (it % q_steps) * kBlockM, q_origin);
    }
    // P = exp(scale * S - LSE); dS = P * (dP - delta), in place.
    CUTE_UNROLL
    for (int r = 0; r < size<0>(s_rc); ++r) {
      const int row = get<0>(c_rc(r, 0));
      const float lse_log2 = sr.lse[row] * float(M_LOG2E);
      const float delta = sr.delta[row];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s_rc); ++c) {
        const float prob = exp2f(s_rc(r, c) * scale_log2 - lse_log2);
        s_rc(r, c) = prob;
        dp_rc(r, c) = prob * (dp_rc(r, c) - delta);
      }
    }
    {
      auto tc = copy_pds.get_thread_slice(ltid);
      Tensor rP = sm80::convert_fragment<Element>(acc_s);
      copy(copy_pds, tc.retile_S(rP), tc.partition_D(sP));
      Tensor rdS = sm80::convert_fragment<Element>(acc_dp);
      copy(copy_pds, tc.retile_S(rdS), tc.partition_D(sdS));
    }
    __syncthreads();  // P, dS in shared memory

    {
      auto ta = copy_dkv_a.get_thread_slice(sm80::opaque(tid));
      auto tb = copy_dkv_b.get_thread_slice(sm80::opaque(tid));
      sm80::gemm_ss(mma_dkv, acc_dv, tdVrPt, tdVrdOt, ta.partition_S(sPt),
                    tb.partition_S(sdOt_at(bi)), copy_dkv_a, copy_dkv_b, ta, tb);
      sm80::gemm_ss(mma_dkv, acc_dk, tdKrdSt, tdKrQt, ta.partition_S(sdSt),
                    tb.partition_S(sQt_at(bi)), copy_dkv_a, copy_dkv_b, ta, tb);
    }
    __syncthreads();  // every warp is done with sP, sdS and this step's rows (buffer bi)
    if (it == num_iters - 1) store_unit(u);
  }
}

}  // namespace jax_gna::halo
