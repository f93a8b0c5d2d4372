// Mainloop of the sm90 GNA forward kernel: the TMA producer and the two WGMMA consumer
// warpgroups.
//
// Producers (two threads of warpgroup 0, in different warps). The Q producer claims work
// items from the scheduler, decodes each once, publishes it in shared memory and loads its
// Q tile (one TMA box per 64-wide head-dim panel) into the next of kQStages Q buffers as
// soon as the consumers have released that buffer. The K/V producer takes each published
// item and loads its KV tiles in the order the consumers use them: K0, then K(j), V(j-1)
// for j >= 1, then the last V. Each KV tile is one multi-dimensional TMA box straight out of
// [B, S0, S1, S2, H, D] (no permutation pass); extra tokens come from a second pair of
// tensor maps. K and V have their own PipelineTmaAsync so QK^T can start as soon as K lands.
//
// Consumers (warpgroups 1, 2; 64 query rows each of the 128-row Q tile): FA3-style
// schedule. Per KV tile j >= 1, under the warpgroup scheduler barrier, issue S(j) = Q K(j)^T
// (SS GMMA) and O += P(j-1) V(j-1) (RS GMMA, P in registers), hand the tensor cores to the
// other warpgroup, wait for S(j) only, mask (boundary tiles) and run the online softmax
// while PV(j-1) still runs, then wait for PV, rescale O and convert P(j) to 16 bits. The two
// warpgroups alternate through named barriers, so one's softmax overlaps the other's GEMMs.
// With Traits::kFastSoftmax (D = 128) the softmax of tiles j >= 1 skips the tile's row max
// (softmax.h fast_step: exponentials against the running max, accepted while they stay
// <= 2^14); a rejected step recomputes the warp's S rows with mma.sync (recompute.h) and
// takes the full step, so K(j) is released after the softmax. Items overlap too: the turn
// that issues the next item's S0 also issues this item's last PV (S0 first, so S0's
// softmax overlaps the PV as in the loop), and this item's epilogue (O staged in its Q
// buffer and stored by the TMA) follows that softmax.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/copy_sm90_desc.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "epilogue.h"
#include "gmma.h"
#include "kernel_traits.h"
#include "mask.h"
#include "scheduler.h"
#include "recompute.h"
#include "softmax.h"
#include "tile_map.h"

// Consumer cycle trace points: recorded only in the self-test's profiling build.
#ifdef JAX_GNA_SM90_TRACE
#include "test/trace.h"
#else
#define GNA_TRACE_INIT(wg, tid) ((void)0)
#define GNA_TRACE(event, item, j) ((void)0)
#define GNA_TRACE_DONE(wg) ((void)0)
#endif

namespace jax_gna {
namespace sm90 {

// Named barriers (CUTLASS user ids; 8 hardware ids are reserved below them).
// kBarEpilogueWG*: one warpgroup's epilogue (128 threads, its own staging rows).
enum : uint32_t { kBarSchedWG0 = 0, kBarSchedWG1 = 1, kBarEpilogueWG0 = 2, kBarEpilogueWG1 = 3 };

template <class Traits>
struct Mainloop {
  using Element = typename Traits::Element;
  using SharedStorage = typename Traits::SharedStorage;
  using PipelineK = typename Traits::PipelineK;
  using PipelineV = typename Traits::PipelineV;
  using PipeState = typename cutlass::PipelineState<Traits::kStages>;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kPanel = Traits::kPanel;
  static constexpr int kPanels = Traits::kPanels;

  // ---------------------------------------------------------------------------------------
  // Producer
  // ---------------------------------------------------------------------------------------

  // The work item travels with the Q barrier: the producer stores it before its arrive on
  // q_full (release), the consumers load it after their wait (acquire). The CUTLASS barrier
  // asm has no memory clobber, so compiler fences keep the plain accesses on the right side.
  __device__ __forceinline__ static void store_item(SharedStorage& ss, int buf,
                                                    const WorkItem& it) {
    ss.item[buf] = it;
    asm volatile("" ::: "memory");
  }
  __device__ __forceinline__ static WorkItem load_item(SharedStorage& ss, int buf) {
    asm volatile("" ::: "memory");
    return ss.item[buf];
  }

  // One KV tile (tile j of the item) into the next stage of `pipe`.
  template <class Pipeline>
  __device__ static void load_kv_tile(const CUtensorMap* spatial_map, const CUtensorMap* extra_map,
                                      Pipeline& pipe, PipeState& state, Element* smem, int j,
                                      int n_spatial, KVCursor& cur, const QTileDim (&qd)[3],
                                      const WorkCoord& wc, const ProblemDesc& prob) {
    constexpr uint64_t kHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_LAST);
    pipe.producer_acquire(state);  // waits for the stage, then arrive + expect_tx(bytes)
    uint64_t* bar = reinterpret_cast<uint64_t*>(pipe.producer_get_barrier(state));
    Element* dst = smem + state.index() * (kBlockN * kHeadDim);
    const int c0 = wc.hkv * kHeadDim;
    if (j < n_spatial) {
      const int x2 = token_coord(prob.dim[2], qd[2].group, cur.n[2] * prob.dim[2].kv_tile);
      const int x1 = token_coord(prob.dim[1], qd[1].group, cur.n[1] * prob.dim[1].kv_tile);
      const int x0 = token_coord(prob.dim[0], qd[0].group, cur.n[0] * prob.dim[0].kv_tile);
#pragma unroll
      for (int pnl = 0; pnl < kPanels; ++pnl) {
        cute::SM90_TMA_LOAD_5D::copy(spatial_map, bar, kHint, dst + pnl * (kBlockN * kPanel),
                                     c0 + pnl * kPanel, x2, x1, x0, wc.b);
      }
      kv_cursor_next(cur, qd);
    } else {
      const int e0 = (j - n_spatial) * kBlockN;
#pragma unroll
      for (int pnl = 0; pnl < kPanels; ++pnl) {
        cute::SM90_TMA_LOAD_3D::copy(extra_map, bar, kHint, dst + pnl * (kBlockN * kPanel),
                                     c0 + pnl * kPanel, e0, wc.b);
      }
    }
    ++state;
  }

  // The Q producer: one thread of the producer warpgroup. Claims work items from the
  // scheduler, decodes them, and per item: waits until its Q buffer is free, publishes the
  // item (item_full, for the K/V producer; with q_full, for the consumers) and loads the Q
  // tile. With two Q buffers it runs a whole item ahead of the consumers, so the Q tile has
  // an item's time to land (issued by the K/V producer after the item's last V, it arrived
  // too late: Nsight Compute put 7% of the stall samples on the consumers' Q wait, seq32k).
  __device__ static void produce_q(const KernelParams& p, SharedStorage& ss) {
    using Barrier = cutlass::arch::ClusterBarrier;
    using TxBarrier = cutlass::arch::ClusterTransactionBarrier;
    constexpr int kQStages = Traits::kQStages;
    constexpr uint64_t kHintQ = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_FIRST);
    const ProblemDesc& prob = p.prob;
    const SchedulerParams sched{prob.total_work, p.counter};
    const int grid = static_cast<int>(gridDim.x);
    int w = scheduler_first(static_cast<int>(blockIdx.x));
    // Item i + 1 is claimed once the consumers start item i (as a single producer did at the
    // start of item i), so the dynamic scheduler's tail stays one item: with two buffers
    // that is after the wait for the buffer; with one, before it (claiming and decoding then
    // overlap the item's tail instead of delaying the Q load).
    auto claim = [&](uint32_t item) {
      if (item > 0 && w < prob.total_work) w = scheduler_next(sched, w, grid, DeviceFetchAdd{});
    };
    for (uint32_t item = 0;; ++item) {
      const int qbuf = item % kQStages;
      if constexpr (kQStages == 1) claim(item);
      Barrier::wait(&ss.q_empty[qbuf], ((item / kQStages) & 1) ^ 1);
      if constexpr (kQStages != 1) claim(item);
      WorkItem it{};
      it.w = -1;
      if (w < prob.total_work) it = make_work_item(prob, w);
      store_item(ss, qbuf, it);
      Barrier::arrive(&ss.item_full[qbuf]);
      if (it.w < 0) {  // no more work: the end marker, for the consumers too
        Barrier::arrive(&ss.q_full[qbuf]);
        return;
      }
      TxBarrier::arrive_and_expect_tx(&ss.q_full[qbuf], Traits::kQBytes);
      const int x2 = token_coord(prob.dim[2], it.qd[2].group, it.qd[2].q0);
      const int x1 = token_coord(prob.dim[1], it.qd[1].group, it.qd[1].q0);
      const int x0 = token_coord(prob.dim[0], it.qd[0].group, it.qd[0].q0);
#pragma unroll
      for (int pnl = 0; pnl < kPanels; ++pnl) {
        cute::SM90_TMA_LOAD_5D::copy(&p.tma_q, &ss.q_full[qbuf], kHintQ,
                                     ss.q + qbuf * Traits::kQElems + pnl * (kBlockM * kPanel),
                                     it.wc.hq * kHeadDim + pnl * kPanel, x2, x1, x0, it.wc.b);
      }
    }
  }

  // The K/V producer: another thread of the producer warpgroup. Per item (published by the Q
  // producer), the KV tiles in the order the consumers use them: K0, (K j, V j-1) for
  // j >= 1, V last.
  __device__ static void produce_kv(const KernelParams& p, SharedStorage& ss, PipelineK& pipe_k,
                                    PipelineV& pipe_v) {
    using Barrier = cutlass::arch::ClusterBarrier;
    constexpr int kQStages = Traits::kQStages;
    const ProblemDesc& prob = p.prob;
    PipeState st_k = cutlass::make_producer_start_state<PipelineK>();
    PipeState st_v = cutlass::make_producer_start_state<PipelineV>();
    for (uint32_t item = 0;; ++item) {
      const int qbuf = item % kQStages;
      Barrier::wait(&ss.item_full[qbuf], (item / kQStages) & 1);
      const WorkItem it = load_item(ss, qbuf);
      if (it.w < 0) return;
      const WorkCoord& wc = it.wc;
      const QTileDim(&qd)[3] = it.qd;
      const int n_spatial = num_spatial_kv_tiles(qd);
      const int n_total = n_spatial + prob.num_extra_tiles;
      KVCursor cur_k = kv_cursor_begin(qd);
      KVCursor cur_v = cur_k;
      load_kv_tile(&p.tma_k, &p.tma_ek, pipe_k, st_k, ss.k, 0, n_spatial, cur_k, qd, wc, prob);
      for (int j = 1; j < n_total; ++j) {
        load_kv_tile(&p.tma_k, &p.tma_ek, pipe_k, st_k, ss.k, j, n_spatial, cur_k, qd, wc, prob);
        load_kv_tile(&p.tma_v, &p.tma_ev, pipe_v, st_v, ss.v, j - 1, n_spatial, cur_v, qd, wc, prob);
      }
      load_kv_tile(&p.tma_v, &p.tma_ev, pipe_v, st_v, ss.v, n_total - 1, n_spatial, cur_v, qd, wc,
                   prob);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Consumers
  // ---------------------------------------------------------------------------------------

  template <bool kZeroInit, class TiledMma, class TA, class TB, class TC>
  __device__ __forceinline__ static void gemm_issue(TiledMma& mma, TA& a, const TB& b, TC& c) {
    sm90::gemm_issue<kZeroInit>(mma, a, b, c);
  }
  template <class FragS, class FragP>
  __device__ __forceinline__ static void convert_p(const FragS& s, FragP& p) {
    convert_acc_to_a<Element>(s, p);
  }

  // Run by every thread of consumer warpgroup `wg` (0 or 1); tid: thread index in the group.
  __device__ static void consume(const KernelParams& p, SharedStorage& ss, PipelineK& pipe_k,
                                 PipelineV& pipe_v, int wg, int tid) {
    using namespace cute;
    using Barrier = cutlass::arch::ClusterBarrier;
    using NamedBarrier = cutlass::arch::NamedBarrier;
    const ProblemDesc& prob = p.prob;

    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(tid);
    auto thr_pv = mma_pv.get_thread_slice(tid);

    Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutK{});
    Tensor sVt = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutVt{});
    // The warpgroup's 64 rows of Q buffer `buf` as GMMA descriptors (rebuilt per item: a
    // few instructions).
    auto q_frag = [&](int buf) {
      Tensor sQ = make_tensor(make_smem_ptr(ss.q + buf * Traits::kQElems),
                              typename Traits::SmemLayoutQ{});
      Tensor sQw = local_tile(sQ, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, _0{}));
      return thr_qk.make_fragment_A(thr_qk.partition_A(sQw));  // (MMA, 1, D/16)
    };
    Tensor tSrK = thr_qk.make_fragment_B(thr_qk.partition_B(sK));   // (MMA, 1, D/16, PIPE)
    Tensor tOrV = thr_pv.make_fragment_B(thr_pv.partition_B(sVt));  // (MMA, 1, N/16, PIPE)
    Tensor tSrS = partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{});
    Tensor tOrO = partition_fragment_C(mma_pv, Shape<_64, Int<kHeadDim>>{});
    Tensor tOrP = make_tensor<Element>(partition_shape_A(mma_pv, Shape<_64, Int<kBlockN>>{}));

    const int lane = tid % 32;
    const int quad = lane % 4;
    const int row0 = wg * 64 + (tid / 32) * 16 + lane / 4;  // the thread's rows: row0, row0 + 8
    constexpr int kMmaThreads = Traits::kNumMmaThreads;
    constexpr int kQStages = Traits::kQStages;
    int* rows_col = ss.row_windows + wg * 128 + tid;  // this thread's row-window column

    OnlineSoftmax softmax(p.scale_log2);
    PipeState st_k, st_v;  // consumer start state: stage 0, phase 0
    uint32_t item = 0;     // items this CTA has started
    const uint32_t bar_mine = wg == 0 ? kBarSchedWG0 : kBarSchedWG1;
    const uint32_t bar_other = wg == 0 ? kBarSchedWG1 : kBarSchedWG0;
    constexpr uint32_t kSchedThreads = Traits::kNumMmaThreads;
    GNA_TRACE_INIT(wg, tid);  // test/trace.h: a profiling build of the self-test only
    // Warpgroup 0 issues first.
    if (wg == 1) NamedBarrier::arrive(kSchedThreads, kBarSchedWG0);

    constexpr bool kFast = Traits::kFastSoftmax;
    bool fast_ok = false;  // every row of the warp has seen a key: fast_step applies
    const int warp_row0 = wg * 64 + (tid / 32) * 16;
    // Softmax of KV tile j >= 1 of item i (S(j) landed; with kFast, K(j) still held): the
    // fast step, or (rows without a key yet, a rejected fast step, or not kFast) the full
    // one; `mask_tile(j, false)` masks without advancing the KV cursor. Returns whether O
    // must be rescaled.
    auto softmax_tile = [&](auto&& mask_tile, int j, uint32_t i, float(&rescale)[2]) {
      mask_tile(j, false);
      if constexpr (kFast) {
        if (fast_ok) {
          if (softmax.fast_step(tSrS)) return false;
          Tensor sQ = make_tensor(make_smem_ptr(ss.q + (i % kQStages) * Traits::kQElems),
                                  typename Traits::SmemLayoutQ{});
          recompute_s_warp<Element>(sQ, sK(_, _, st_k.index()), warp_row0, lane, tSrS);
          mask_tile(j, false);
        }
        const bool moved = softmax.step(tSrS, rescale);
        fast_ok = softmax.all_seen();
        return moved;
      } else {
        return softmax.step(tSrS, rescale);
      }
    };
    // Waits for item `i`'s Q tile; returns its work index (-1: no more work), warp-uniform.
    auto wait_q = [&](uint32_t i) {
      Barrier::wait(&ss.q_full[i % kQStages], (i / kQStages) & 1);
      return __shfl_sync(0xffffffffu, load_item(ss, i % kQStages).w, 0);
    };
    // Every turn below issues its GEMMs between sync(own barrier) and arrive(other's): the
    // two warpgroups take turns on the tensor cores and each one's softmax and epilogue run
    // during the other's GEMMs.
    auto issue_s = [&](uint32_t i) {
      auto tSrQ = q_frag(i % kQStages);
      gemm_issue<true>(mma_qk, tSrQ, tSrK(_, _, _, st_k.index()), tSrS);
    };

    // The row windows of item i's two rows of this thread, for the element mask; items
    // without boundary tiles never read them (uniform branch; only the flag is loaded).
    auto store_windows = [&](uint32_t i) {
      const WorkItem& wi = ss.item[i % kQStages];
      asm volatile("" ::: "memory");  // after wait_q's barrier wait (load_item's fence)
      if (wi.has_boundary) {
        const WorkItem wq = load_item(ss, i % kQStages);
        store_row_window(rows_col, kMmaThreads, 0, row_window(prob, wq.qd, row0));
        store_row_window(rows_col, kMmaThreads, 1, row_window(prob, wq.qd, row0 + 8));
      }
    };

    // ---- The first item's S0 = Q K0^T (later items get theirs from the boundary turn).
    if (wait_q(item) < 0) {
      GNA_TRACE_DONE(wg);
      return;
    }
    store_windows(item);
    pipe_k.consumer_wait(st_k);
    NamedBarrier::sync(kSchedThreads, bar_mine);
    issue_s(item);
    NamedBarrier::arrive(kSchedThreads, bar_other);

    float rescale[2];
    // Two Q buffers: the previous item's O is staged in its Q buffer, which goes back to the
    // Q producer after tile 1's softmax (the TMA store has read it by then; releasing it
    // right after the epilogue would make thread 0 wait for the store on the critical path).
    bool release_pending = false;
    // One Q buffer (D = 256): the finished item, kept in registers (its shared memory slot
    // is refilled once its last QK^T is done).
    WorkItem done_item;
    // The epilogue of item `i`: O complete in tOrO, `sm` its softmax state.
    auto epilogue = [&](OnlineSoftmax& sm, uint32_t i, const WorkItem& w_reg) {
      const int buf = i % kQStages;
      float inv[2], lse[2];
      sm.finish(p.scale, inv, lse);
      rescale_rows(tOrO, inv);
      const uint32_t bar = wg == 0 ? kBarEpilogueWG0 : kBarEpilogueWG1;
      if constexpr (kQStages == 2) {
        const WorkItem w = load_item(ss, buf);  // its slot is kept until the release
        Element* stage = ss.q + buf * Traits::kQElems + wg * (64 * kPanel);
        store_output_tma<Element, kBlockM>(p, w.wc, w.qd, wg, tid, tOrO, lse, stage, bar);
      } else {
        store_output<Element>(p, w_reg.wc, w_reg.qd, wg, tid, tOrO, lse,
                              ss.o_stage + wg * kStageElems, bar);
      }
    };

    while (true) {
      // Here: item `item`'s Q landed, its row windows are stored, its S0 is issued (with the
      // previous item's last PV after it, except for the CTA's first item).
      const int qbuf = item % kQStages;
      const WorkItem it = load_item(ss, qbuf);  // decoded by the producer
      const QTileDim(&qd)[3] = it.qd;
      const int n_spatial = num_spatial_kv_tiles(qd);
      const int n_total = n_spatial + prob.num_extra_tiles;
      KVCursor cur = kv_cursor_begin(qd);

      // Mask of tile j (uniform branches: interior tiles skip it, and items without a
      // boundary tile skip the per-tile interior test too); advances the cursor, which only
      // items with a boundary tile use, unless `advance` is false (the fast softmax's
      // fallback masks the recomputed S again).
      auto mask_tile = [&](int j, bool advance = true) {
        if (j < n_spatial) {
          if (it.has_boundary) {
            if (!kv_interior(prob, qd, cur)) {
              mask_spatial_tile(tSrS, prob, ss.mask_table, rows_col, kMmaThreads, quad, cur);
            }
            if (advance) kv_cursor_next(cur, qd);
          }
        } else {
          const int e0 = (j - n_spatial) * kBlockN;
          if (e0 + kBlockN > prob.num_extra) mask_extra_tile(tSrS, prob, quad, e0);
        }
      };
      // With one Q buffer it is released at its last QK^T (the next Q loads during the
      // item's tail); with two, after the epilogue, which stages O in it.
      auto q_done_after_s = [&](int j) {
        if constexpr (kQStages == 1) {
          if (j == n_total - 1) Barrier::arrive(&ss.q_empty[0]);
        }
      };

      // ---- KV tile 0 (the full softmax step: its rows have no running max yet).
      auto tile0_softmax = [&] {  // S0 landed
        GNA_TRACE(kTrTile0S, item, 0);
        pipe_k.consumer_release(st_k);
        ++st_k;
        q_done_after_s(0);
        mask_tile(0);
        softmax.step(tSrS, rescale);
        GNA_TRACE(kTrTile0Softmax, item, 0);
        if constexpr (kFast) fast_ok = softmax.all_seen();
      };
      if (item == 0) {
        // The CTA's first item: S0 alone on the tensor cores.
        softmax.reset();
        warpgroup_wait<0>();
        warpgroup_fence_operand(tSrS);
        tile0_softmax();
        convert_p(tSrS, tOrP);
      } else {
        // The boundary turn put this item's S0 and then the previous item's last PV on the
        // tensor cores: S0's softmax overlaps that PV (as in the loop), then the previous
        // item's epilogue. (The other order, PV first and the epilogue before S0's
        // softmax, is 2% slower for D = 128 on seq32k with the fast softmax (H200); with
        // this order D = 64 gains 2% and D = 256 loses under 1% (H100). Self-test A/B,
        // scripts/sm90_ab.sh.)
        OnlineSoftmax prev = softmax;
        softmax.reset();
        warpgroup_wait<1>();  // S0 is done
        warpgroup_fence_operand(tSrS);
        tile0_softmax();
        warpgroup_wait<0>();  // the previous item's last PV is done
        warpgroup_fence_operand(tOrO);
        GNA_TRACE(kTrTile0PV, item, 0);
        pipe_v.consumer_release(st_v);
        ++st_v;
        epilogue(prev, item - 1, done_item);
        GNA_TRACE(kTrEpilogueEnd, item, 0);
        convert_p(tSrS, tOrP);
        if constexpr (kQStages == 2) release_pending = true;
      }
      mma_pv.accumulate_ = cute::GMMA::ScaleOut::Zero;  // the first PV overwrites O
      GNA_TRACE(kTrTile0End, item, 0);

      // ---- KV tiles 1 .. n-1: S(j) and PV(j-1) overlapped with the softmax of S(j).
      for (int j = 1; j < n_total; ++j) {
        GNA_TRACE(kTrLoopTop, item, j);
        pipe_k.consumer_wait(st_k);
        pipe_v.consumer_wait(st_v);
        NamedBarrier::sync(kSchedThreads, bar_mine);
        GNA_TRACE(kTrLoopSync, item, j);
        issue_s(item);
        gemm_issue<false>(mma_pv, tOrP, tOrV(_, _, _, st_v.index()), tOrO);
        NamedBarrier::arrive(kSchedThreads, bar_other);
        warpgroup_wait<1>();  // S(j) is done (GMMA batches complete in order)
        warpgroup_fence_operand(tSrS);
        GNA_TRACE(kTrLoopS, item, j);
        // K(j) (and with one Q buffer, Q after its last tile) goes back after the softmax
        // with kFast (its fallback rereads them), else at once.
        auto release_k = [&] {
          pipe_k.consumer_release(st_k);
          ++st_k;
          q_done_after_s(j);
        };
        if constexpr (!kFast) release_k();
        const bool moved = softmax_tile(mask_tile, j, item, rescale);
        if (j < n_spatial && it.has_boundary) kv_cursor_next(cur, qd);
        if constexpr (kFast) release_k();
        GNA_TRACE(kTrLoopSoftmax, item, j);
        if constexpr (kQStages == 2) {
          if (j == 1 && release_pending) {
            release_staged_output(&ss.q_empty[(item - 1) % kQStages], tid);
            release_pending = false;
          }
        }
        warpgroup_wait<0>();  // PV(j-1) is done: V stage and P registers are free
        warpgroup_fence_operand(tOrO);
        GNA_TRACE(kTrLoopPV, item, j);
        pipe_v.consumer_release(st_v);
        ++st_v;
        if (moved) rescale_rows(tOrO, rescale);  // warp-uniform; rarely after a few tiles
        convert_p(tSrS, tOrP);
        GNA_TRACE(kTrLoopEnd, item, j);
      }
      if constexpr (kQStages == 2) {
        if (release_pending) {  // items of one KV tile
          release_staged_output(&ss.q_empty[(item - 1) % kQStages], tid);
          release_pending = false;
        }
      }

      // ---- Item boundary: S0 of the next item, then this item's last PV, in one turn; the
      // next iteration of this loop finishes both (its tile 0 and this item's epilogue). Two
      // straight paths (no conditional GMMA issue), so that ptxas can follow which
      // accumulators are in flight.
      GNA_TRACE(kTrBoundaryTop, item, n_total);
      pipe_v.consumer_wait(st_v);
      const bool next = wait_q(item + 1) >= 0;
      if (!next) {
        NamedBarrier::sync(kSchedThreads, bar_mine);
        gemm_issue<false>(mma_pv, tOrP, tOrV(_, _, _, st_v.index()), tOrO);
        NamedBarrier::arrive(kSchedThreads, bar_other);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        pipe_v.consumer_release(st_v);
        ++st_v;
        epilogue(softmax, item, it);
        // The Q producer has ended: nothing waits for the buffer, but the TMA must have read
        // it before the CTA exits.
        if constexpr (kQStages == 2) release_staged_output(&ss.q_empty[qbuf], tid);
        GNA_TRACE_DONE(wg);
        break;
      }
      pipe_k.consumer_wait(st_k);
      NamedBarrier::sync(kSchedThreads, bar_mine);
      GNA_TRACE(kTrBoundarySync, item, n_total);
      issue_s(item + 1);
      gemm_issue<false>(mma_pv, tOrP, tOrV(_, _, _, st_v.index()), tOrO);
      NamedBarrier::arrive(kSchedThreads, bar_other);
      if constexpr (kQStages == 1) done_item = it;
      ++item;
      store_windows(item);
    }
  }
};

}  // namespace sm90
}  // namespace jax_gna
