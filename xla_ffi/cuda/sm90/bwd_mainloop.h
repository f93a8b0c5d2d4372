// Mainloop of the sm90 GNA backward kernel: the producer warp and the two WGMMA consumer
// warpgroups.
//
// Producer (warp 0 of warpgroup 0). Lane 0 loads the work item's K and V tiles once (one
// multi-dimensional TMA box per 64-wide head-dim panel, straight out of [B, S0, S1, S2, H,
// D]), then, per visit, the visit's Q and dO tiles into the next of kStages buffers; all 32
// lanes fill the visit's per-query statistics (LSE * log2(e) and delta = rowsum(dO * O) -
// dLSE; rows past a group's end get LSE = +inf, so their probabilities are 0) and arrive.
//
// Consumers (warpgroups 1, 2; each owns 64 of the KV tile's 128 keys). Per visit:
//   S^T = K Q^T, dP^T = V dO^T (SS GEMMs, issued together) | element mask (boundary pairs) |
//   P^T = exp2(S^T scale log2(e) - LSE log2(e)), dS^T = P^T (dP^T - delta) |
//   dS^T -> shared memory (transposed: the dQ GEMM's K-major A operand) |
//   dV += P^T dO, dK += dS^T Q (RS GEMMs, A from registers) | release Q / dO |
//   dQ_part = dS K (SS GEMM; at D >= 128 both warpgroups' dS after a 256-thread barrier,
//   the warpgroup's half of the head-dim columns, bwd_traits.h kDqSplit) |
//   dQ_part * scale -> staging -> TMA reduce-add into the fp32 dq_accum.
// With compute_dq = 0 (deterministic=True: the sm80 Q-tile-major dQ kernel ran before this
// one) a visit ends after the dV / dK GEMMs.
// dK and dV stay in registers for the whole work item; the epilogue stages them in the
// warpgroup's own rows of the K and V buffers and stores them with TMA boxes (rows past a
// group's end are outside the tensor and not written).
#pragma once

#include <cmath>

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/copy_sm90_desc.hpp>
#include <cutlass/arch/barrier.h>

#include "../common/softmax_math.h"
#include "bwd_traits.h"
#include "gmma.h"
#include "mask.h"

namespace jax_gna {
namespace sm90 {

// Named barriers of the backward (CUTLASS user ids): one per consumer warpgroup (128
// threads), the two turn barriers of the warpgroups' alternation on the tensor cores
// (256: the 128 threads whose turn it is sync, the other warpgroup's 128 arrive), and the
// split dQ GEMM's barrier (256: both warpgroups' dS of the visit are in shared memory).
enum : uint32_t {
  kBwdBarWG0 = 0, kBwdBarWG1 = 1, kBwdBarTurnWG0 = 2, kBwdBarTurnWG1 = 3, kBwdBarDs = 4
};

// The CUTLASS mbarrier and named-barrier asm statements carry no memory clobber: a compiler
// fence keeps the plain shared-memory accesses on their side of each synchronisation.
__device__ __forceinline__ void compiler_fence() { asm volatile("" ::: "memory"); }

template <class Traits>
struct BwdMainloop {
  using Element = typename Traits::Element;
  using SharedStorage = typename Traits::SharedStorage;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kStages = Traits::kStages;
  static constexpr int kPanel = Traits::kPanel;
  static constexpr int kPanels = Traits::kPanels;
  static constexpr int kAccumPanel = Traits::kAccumPanel;

  // Tensor coordinates (TMA dims 1..3: S2, S1, S0) of a tile's first token, per dim at
  // group-local origin org[i] (+ `extra` tokens along dim `split`).
  __device__ __forceinline__ static void tile_coords(const BwdDesc& d, const BwdItem& it,
                                                     const int (&org)[3], int split, int extra,
                                                     int (&x)[3]) {
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      x[i] = token_coord(d.prob.dim[i], it.kd[i].group, org[i] + (i == split ? extra : 0));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Producer
  // ---------------------------------------------------------------------------------------
  __device__ static void produce(const BwdKernelParams& p, SharedStorage& ss, const BwdItem& it,
                                 int lane) {
    using Barrier = cutlass::arch::ClusterBarrier;
    using TxBarrier = cutlass::arch::ClusterTransactionBarrier;
    // K / V are read by this CTA alone; Q / dO tiles by every KV tile that they see.
    constexpr uint64_t kHintKV = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_FIRST);
    constexpr uint64_t kHintQ = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_LAST);
    const BwdDesc& d = p.desc;
    if (lane == 0) {
      TxBarrier::arrive_and_expect_tx(&ss.kv_full, 2 * Traits::kKBytes);
      const int org[3] = {it.kd[0].k0, it.kd[1].k0, it.kd[2].k0};
      int x[3];
      tile_coords(d, it, org, 0, 0, x);
#pragma unroll
      for (int pnl = 0; pnl < kPanels; ++pnl) {
        const int c0 = it.hkv * kHeadDim + pnl * kPanel;
        cute::SM90_TMA_LOAD_5D::copy(&p.tma_k, &ss.kv_full, kHintKV,
                                     ss.k + pnl * (kBlockN * kPanel), c0, x[2], x[1], x[0], it.b);
        cute::SM90_TMA_LOAD_5D::copy(&p.tma_v, &ss.kv_full, kHintKV,
                                     ss.v + pnl * (kBlockN * kPanel), c0, x[2], x[1], x[0], it.b);
      }
    }
    const int n = num_visits(d, it);
    VisitCursor cur = visit_begin(it);
    for (int v = 0; v < n; ++v) {
      const int s = v % kStages;
      Barrier::wait(&ss.empty[s], ((v / kStages) & 1) ^ 1);
      compiler_fence();  // the stage's statistics and visit record are free from here
      const BwdVisit vis = make_visit(d, it, cur);
      if (lane == 0) {
        ss.visit[s] = vis;
        // The bytes first, then the copies: the phase cannot complete before both the 32
        // arrivals below and the bytes are in.
        TxBarrier::expect_transaction(&ss.full[s], 2 * Traits::kQBytes);
        int x[3];
        tile_coords(d, it, vis.q0, 0, 0, x);
#pragma unroll
        for (int pnl = 0; pnl < kPanels; ++pnl) {
          const int c0 = vis.hq * kHeadDim + pnl * kPanel;
          const int off = s * Traits::kQElems + pnl * (kBlockM * kPanel);
          cute::SM90_TMA_LOAD_5D::copy(&p.tma_q, &ss.full[s], kHintQ, ss.q + off, c0, x[2], x[1],
                                       x[0], it.b);
          cute::SM90_TMA_LOAD_5D::copy(&p.tma_do, &ss.full[s], kHintQ, ss.dout + off, c0, x[2],
                                       x[1], x[0], it.b);
        }
      }
#pragma unroll
      for (int r = lane; r < kBlockM; r += 32) {
        float2 st = make_float2(INFINITY, 0.f);
        int64_t off;
        if (visit_row_offset(d, it, vis, r, p.lse_stride, &off)) {
          const float lse = p.lse[off];
          // Queries outside a query box carry LSE +inf: probability 0, and their delta (of
          // an output the caller masked) must not reach dS.
          st.x = lse * 1.4426950408889634f;
          st.y = isinf(lse) ? 0.f : p.delta[off];
        }
        ss.stats[s][r] = st;
      }
      compiler_fence();
      Barrier::arrive(&ss.full[s]);  // release: the stats and the visit record
      visit_next(cur, it);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Consumers
  // ---------------------------------------------------------------------------------------

  // Fragment element i of a 64 x N accumulator: column 8 * (i / 4) + 2 * quad + i % 2 (row
  // half (i / 2) % 2).
  __device__ __forceinline__ static int frag_col(int i, int quad) {
    return 8 * (i >> 2) + 2 * quad + (i & 1);
  }

  // Run by every thread of consumer warpgroup `wg` (0 or 1); tid: thread index in the group.
  __device__ static void consume(const BwdKernelParams& p, SharedStorage& ss, const BwdItem& it,
                                 int wg, int tid) {
    using namespace cute;
    using Barrier = cutlass::arch::ClusterBarrier;
    using NamedBarrier = cutlass::arch::NamedBarrier;
    const BwdDesc& d = p.desc;

    typename Traits::TiledMmaSdP mma_sdp;
    typename Traits::TiledMmadKV mma_dkv;
    typename Traits::TiledMmadQ mma_dq;
    auto thr_sdp = mma_sdp.get_thread_slice(tid);
    auto thr_dkv = mma_dkv.get_thread_slice(tid);
    auto thr_dq = mma_dq.get_thread_slice(tid);

    Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutQ{});
    Tensor sQt = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQt{});
    Tensor sdOt = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutQt{});
    Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutK{});
    Tensor sKt = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKt{});
    Tensor sKw = local_tile(sK, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, _0{}));
    Tensor sVw = local_tile(sV, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, _0{}));
    constexpr bool kDqSplit = Traits::kDqSplit;
    constexpr int kDqCols = Traits::kDqCols;
    constexpr int kdSElems = Traits::kdSElems;
    // The dQ GEMM's B operands: K^T's dQ columns (the warpgroup's half at kDqSplit, else all)
    // over keys 0..63 and 64..127 (at !kDqSplit only the warpgroup's own 64 keys are used).
    Tensor sKt0 = local_tile(sKt, Shape<Int<kDqCols>, _64>{}, make_coord(kDqSplit ? wg : 0, 0));
    Tensor sKt1 = local_tile(sKt, Shape<Int<kDqCols>, _64>{}, make_coord(kDqSplit ? wg : 0, 1));

    Tensor tSrK = thr_sdp.make_fragment_A(thr_sdp.partition_A(sKw));      // (MMA, 1, D/16)
    Tensor tSrV = thr_sdp.make_fragment_A(thr_sdp.partition_A(sVw));
    Tensor tSrQ = thr_sdp.make_fragment_B(thr_sdp.partition_B(sQ));       // (MMA, 1, D/16, S)
    Tensor tSrdO = thr_sdp.make_fragment_B(thr_sdp.partition_B(sdO));
    Tensor tdVrdO = thr_dkv.make_fragment_B(thr_dkv.partition_B(sdOt));   // (MMA, 1, M/16, S)
    Tensor tdKrQ = thr_dkv.make_fragment_B(thr_dkv.partition_B(sQt));
    Tensor tdQrK0 = thr_dq.make_fragment_B(thr_dq.partition_B(sKt0));     // (MMA, 1, 4)
    Tensor tdQrK1 = thr_dq.make_fragment_B(thr_dq.partition_B(sKt1));

    Tensor acc_s = partition_fragment_C(mma_sdp, Shape<_64, Int<kBlockM>>{});
    Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<_64, Int<kBlockM>>{});
    Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<_64, Int<kHeadDim>>{});
    Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<_64, Int<kHeadDim>>{});
    Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kDqCols>>{});
    Tensor rP = make_tensor<Element>(partition_shape_A(mma_dkv, Shape<_64, Int<kBlockM>>{}));
    Tensor rdS = make_tensor<Element>(partition_shape_A(mma_dkv, Shape<_64, Int<kBlockM>>{}));
    clear(acc_dk);
    clear(acc_dv);

    const int lane = tid % 32;
    const int quad = lane % 4;
    const int frag_row = (tid / 32) * 16 + lane / 4;  // the thread's rows: +0 and +8
    const uint32_t bar = wg == 0 ? kBwdBarWG0 : kBwdBarWG1;
    constexpr int kMmaThreads = Traits::kNumMmaThreads;
    int* rows_col = ss.row_windows + wg * 128 + tid;  // this thread's row-window column
    // The key rows' inverse windows, once per work item (binary searches; mask.h keeps them
    // in shared memory, off the register budget).
    store_row_window(rows_col, kMmaThreads, 0, key_row_window(d, it, wg * 64 + frag_row));
    store_row_window(rows_col, kMmaThreads, 1, key_row_window(d, it, wg * 64 + frag_row + 8));

    const float scale_log2 = p.scale_log2;
    // Without dQ (deterministic=True: the sm80 dQ kernel computes it) dS stays in registers.
    const bool compute_dq = p.compute_dq != 0;
    const int n = num_visits(d, it);
    float* stage = ss.dq_stage + wg * (kBlockM * kDqCols);
    const int dq_col0 = kDqSplit ? wg * kDqCols : 0;  // the warpgroup's first dQ column
    // Always: the producer loads K and V even for an item without visits, and the epilogue
    // reuses their buffers, so the loads must have landed first.
    Barrier::wait(&ss.kv_full, 0);
    // The warpgroups take turns issuing their S^T / dP^T GEMMs and their dV / dK GEMMs (turn
    // order WG0, WG1, WG0, ...), so one's exponentials, dS and dQ staging run while the
    // other's GEMMs hold the tensor cores. Warpgroup 0 goes first.
    const uint32_t turn_mine = wg == 0 ? kBwdBarTurnWG0 : kBwdBarTurnWG1;
    const uint32_t turn_other = wg == 0 ? kBwdBarTurnWG1 : kBwdBarTurnWG0;
    constexpr uint32_t kTurnThreads = Traits::kNumMmaThreads;
    if (wg == 1) NamedBarrier::arrive(kTurnThreads, kBwdBarTurnWG0);

    for (int v = 0; v < n; ++v) {
      const int s = v % kStages;
      Barrier::wait(&ss.full[s], (v / kStages) & 1);
      compiler_fence();  // the visit record and statistics after the wait (acquire)
      const BwdVisit vis = ss.visit[s];

      NamedBarrier::sync(kTurnThreads, turn_mine);
      gemm_issue<true>(mma_sdp, tSrK, tSrQ(_, _, _, s), acc_s);
      gemm_issue<true>(mma_sdp, tSrV, tSrdO(_, _, _, s), acc_dp);
      NamedBarrier::arrive(kTurnThreads, turn_other);
      warpgroup_wait<1>();  // S^T is done
      warpgroup_fence_operand(acc_s);
      if (!vis.interior) {
        const RowWindow w0 = load_row_window(rows_col, kMmaThreads, 0);
        const RowWindow w1 = load_row_window(rows_col, kMmaThreads, 1);
        apply_row_masks(acc_s, window_word(ss.mask_table, d.q_cols, quad, w0.ws, w0.we, vis.q0),
                        window_word(ss.mask_table, d.q_cols, quad, w1.ws, w1.we, vis.q0));
      }
      const float2* st = ss.stats[s];
      constexpr int kAcc = decltype(size(acc_s))::value;
#pragma unroll
      for (int i = 0; i < kAcc; ++i) {
        acc_s(i) = common::fast_exp2(acc_s(i) * scale_log2 - st[frag_col(i, quad)].x);
      }
      warpgroup_wait<0>();  // dP^T is done
      warpgroup_fence_operand(acc_dp);
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc_dp(i) = acc_s(i) * (acc_dp(i) - st[frag_col(i, quad)].y);
      convert_acc_to_a<Element>(acc_s, rP);
      convert_acc_to_a<Element>(acc_dp, rdS);
      // dS^T into the dQ GEMM's A operand. Its previous readers are done: this warpgroup's
      // dQ GEMM of the last visit (waited below), and at kDqSplit the other warpgroup's of
      // the visit before (this buffer's parity), which it waited for before the barrier
      // that this warpgroup passed last visit.
      Element* ds_visit = ss.ds + (kDqSplit ? (v & 1) * 2 * kdSElems : 0);
      if (compute_dq) {
        // stmatrix .trans: each 8 x 8 block of the dS^T fragment lands as 8 rows of 8
        // consecutive keys (16 bytes) of dS, one instruction per four blocks, instead of one
        // 2-byte store per element.
        Tensor sdSt = make_tensor(make_smem_ptr(ds_visit + wg * kdSElems),
                                  typename Traits::SmemLayoutdSt{});
        auto copy_ds = make_tiled_copy_C(Copy_Atom<SM90_U16x8_STSM_T, Element>{}, mma_sdp);
        auto thr_copy_ds = copy_ds.get_thread_slice(tid);
        // rdS holds the fragment in the accumulator's element order (convert_acc_to_a).
        Tensor rdS_c = make_tensor(rdS.data(), acc_dp.layout());
        copy(copy_ds, thr_copy_ds.retile_S(rdS_c), thr_copy_ds.partition_D(sdSt));
      }
      compiler_fence();
      if (compute_dq) {
        cutlass::arch::fence_view_async_shared();  // generic-proxy writes -> WGMMA reads
        if constexpr (!kDqSplit) NamedBarrier::sync(128, bar);
      }

      NamedBarrier::sync(kTurnThreads, turn_mine);
      gemm_issue<false>(mma_dkv, rP, tdVrdO(_, _, _, s), acc_dv);
      gemm_issue<false>(mma_dkv, rdS, tdKrQ(_, _, _, s), acc_dk);
      NamedBarrier::arrive(kTurnThreads, turn_other);
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_dv);
      warpgroup_fence_operand(acc_dk);
      compiler_fence();  // every read of this stage's statistics is above
      Barrier::arrive(&ss.empty[s]);  // Q and dO of this stage are read
      if (!compute_dq) continue;
      // dQ after dK / dV have retired: P^T and dS^T in registers are dead by then, which
      // keeps dK, dV and dQ within the register budget without serialising the GEMMs.
      {
        Tensor sdS0 = make_tensor(make_smem_ptr(ds_visit + (kDqSplit ? 0 : wg * kdSElems)),
                                  typename Traits::SmemLayoutdS{});
        Tensor tdQrdS0 = thr_dq.make_fragment_A(thr_dq.partition_A(sdS0));
        if constexpr (kDqSplit) {
          NamedBarrier::sync(kMmaThreads, kBwdBarDs);  // both warpgroups' dS are written
          Tensor sdS1 = make_tensor(make_smem_ptr(ds_visit + kdSElems),
                                    typename Traits::SmemLayoutdS{});
          Tensor tdQrdS1 = thr_dq.make_fragment_A(thr_dq.partition_A(sdS1));
          gemm_issue<true>(mma_dq, tdQrdS0, tdQrK0, acc_dq);
          gemm_issue<false>(mma_dq, tdQrdS1, tdQrK1, acc_dq);
        } else if (wg == 0) {
          gemm_issue<true>(mma_dq, tdQrdS0, tdQrK0, acc_dq);
        } else {
          gemm_issue<true>(mma_dq, tdQrdS0, tdQrK1, acc_dq);
        }
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_dq);

      // dQ part of this warpgroup's keys: staged (scaled) and added into dq_accum by TMA.
      if (tid == 0) cute::tma_store_wait<0>();  // the previous add has read the staging
      NamedBarrier::sync(128, bar);
      compiler_fence();
      store_dq_stage(acc_dq, stage, frag_row, quad, p.scale);
      compiler_fence();
      cutlass::arch::fence_view_async_shared();
      NamedBarrier::sync(128, bar);
      if (tid == 0) {
        int x[3];
        tile_coords(d, it, vis.q0, 0, 0, x);
#pragma unroll
        for (int c = 0; c < kDqCols / kAccumPanel; ++c) {
          cute::SM90_TMA_REDUCE_ADD_5D::copy(&p.tma_dq, stage + c * (kBlockM * kAccumPanel),
                                             vis.hq * kHeadDim + dq_col0 + c * kAccumPanel,
                                             x[2], x[1], x[0], it.b);
        }
        cute::tma_store_arrive();
      }
    }

    // ---- Epilogue: dK = scale dS^T Q and dV = P^T dO of the warpgroup's 64 keys, staged in
    // its own rows of the K and V buffers (their last readers are done: this warpgroup's
    // GEMMs, and at kDqSplit the other warpgroup's last dQ GEMM, which read all 128 K rows:
    // the barrier below follows its wait) and stored by TMA boxes of half the KV tile.
    if (kDqSplit && compute_dq) NamedBarrier::sync(kMmaThreads, kBwdBarDs);
#pragma unroll
    for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= p.scale;
    compiler_fence();
    store_kv_stage(acc_dk, ss.k + wg * (64 * kPanel), frag_row, quad);
    store_kv_stage(acc_dv, ss.v + wg * (64 * kPanel), frag_row, quad);
    compiler_fence();
    cutlass::arch::fence_view_async_shared();
    NamedBarrier::sync(128, bar);
    if (tid == 0) {
      const int org[3] = {it.kd[0].k0, it.kd[1].k0, it.kd[2].k0};
      int x[3];
      tile_coords(d, it, org, p.kv_split_dim, wg * p.kv_split_half, x);
#pragma unroll
      for (int pnl = 0; pnl < kPanels; ++pnl) {
        const int off = pnl * (kBlockN * kPanel) + wg * (64 * kPanel);
        const int c0 = it.hkv * kHeadDim + pnl * kPanel;
        cute::SM90_TMA_STORE_5D::copy(&p.tma_dk, ss.k + off, c0, x[2], x[1], x[0], it.b);
        cute::SM90_TMA_STORE_5D::copy(&p.tma_dv, ss.v + off, c0, x[2], x[1], x[0], it.b);
      }
      cute::tma_store_arrive();
      cute::tma_store_wait<0>();  // shared memory must outlive the stores' reads
    }
  }

  // The kBlockM x D fp32 dQ fragment, times `scale`, into the staging image of the TMA
  // reduce-add: box c (32 columns) at c * kBlockM * 32 floats, row r 128 bytes, its 16-byte
  // chunk j at j ^ (r % 8). A warp's float2 writes then fill 16 distinct chunks per
  // instruction (no bank conflict beyond the two wavefronts the 256 bytes need).
  template <class Frag>
  __device__ __forceinline__ static void store_dq_stage(const Frag& acc, float* stage,
                                                        int frag_row, int quad, float scale) {
    constexpr int kSize = decltype(cute::size(acc))::value;
#pragma unroll
    for (int i = 0; i < kSize; i += 2) {
      const int r = frag_row + 8 * ((i >> 1) & 1);
      const int col = frag_col(i, quad);
      const int c = col % kAccumPanel;
      float* dst = stage + (col / kAccumPanel) * (kBlockM * kAccumPanel) + r * kAccumPanel +
                   4 * ((c / 4) ^ (r & 7)) + (c % 4);
      *reinterpret_cast<float2*>(dst) = make_float2(acc(i) * scale, acc(i + 1) * scale);
    }
  }

  // A warpgroup's 64 x D fp32 dK or dV fragment into its 64 rows of a K / V buffer (panel
  // p of them at rows + p * kBlockN * 64 elements): the TMA's 128-byte swizzle, 16-byte
  // chunk j of row r at j ^ (r % 8), two 16-bit values per 4-byte store.
  template <class Frag>
  __device__ __forceinline__ static void store_kv_stage(const Frag& acc, Element* rows,
                                                        int frag_row, int quad) {
    constexpr int kSize = decltype(cute::size(acc))::value;
#pragma unroll
    for (int i = 0; i < kSize; i += 2) {
      const int r = frag_row + 8 * ((i >> 1) & 1);
      const int col = frag_col(i, quad);
      const int c = col % kPanel;
      Element* dst = rows + (col / kPanel) * (kBlockN * kPanel) + r * kPanel +
                     8 * ((c / 8) ^ (r & 7)) + (c % 8);
      *reinterpret_cast<uint32_t*>(dst) = pack2<Element>(acc(i), acc(i + 1));
    }
  }
};

}  // namespace sm90
}  // namespace jax_gna
