// The sm80 GNA forward kernel (FlashAttention-2 structure on CuTe: mma.sync m16n8k16,
// cp.async G2S, ldmatrix S2R, swizzled shared memory, online softmax in fp32).
//
// One CTA = one (batch, query head, Q tile). The Q tile (kBlockM tokens, a box of any shape
// given at run time in params.tiles.q, inside one dilation group per dim) is gathered once;
// the CTA then walks the KV-tile box its queries need (tile_scheduler.h), then the
// additional-KV tiles. Per KV tile, with K and V double buffered (Traits::kStages == 2):
//   wait for tile it, sync | S = Q K^T | issue K, V loads of tile it + 1 |
//   mask (boundary tiles only) | online softmax | O += P V
// so each load has a whole iteration to land, and one barrier per tile separates the
// readers of a stage from its next writer. With one K and one V buffer (kStages == 1,
// FlashAttention-2's order):
//   wait for K of tile it, sync | issue V of tile it | S = Q K^T | mask |
//   wait for V, sync | issue K of tile it + 1 | online softmax | O += P V
// each load overlaps half an iteration, for half the K/V shared memory: head dim 128 then
// fits 64-token KV tiles (half the per-tile barriers, row reductions and bookkeeping of
// 32-token ones) in 99 KiB, which measured faster than 32-token double-buffered tiles
// (sm80/README.md).
// GQA: query head h reads KV head h / (Hq / Hkv) straight from the [B, *, Hkv, D] tensors.
//
// Bookkeeping stays off the MMA warps' issue slots (the kernel was issue-bound on index
// math: Nsight Compute counted 13 instructions per HMMA): warp 0 walks the visit list with
// a division-free cursor and publishes tiles as FwdKvSteps (row-0 pointers of K and V, which
// rows exist, interior or not) in shared memory, kStepBatch tiles at once (one per lane, so a
// batch costs one tile's latency; publishing one tile per iteration from one thread made
// the other warps wait for warp 0 at every barrier) into a ring of two batches, a batch
// ahead. A row of a spatial tile is then row-0 pointer + a per-row offset fixed for the CTA
// (kv_rel_k / kv_rel_v: dilation and strides only), so loading a row is one add.
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
  // row, KV row offsets. Kept in shared memory and read where needed, so that no schedule
  // state occupies registers across the main loop (the accumulators need nearly all).
  // Warp 0 computes the schedule (make_fwd_schedule's steps, lane d < 3 doing dim d: chains
  // of integer divisions, once serial on thread 0 at the head of every CTA) while warps 1..
  // fill the tables that do not depend on it; the tables that do follow the barrier, one
  // row per thread.
  if (tid < 32) {
    const int lane = tid;
    const int d = imin(lane, kMaxRank - 1);
    const GroupTiling tiling = query_tiling(shape, d, p.tiles.q[d]);
    int grid_tiles[kMaxRank];
    for (int e = 0; e < kMaxRank; ++e) {
      grid_tiles[e] = __shfl_sync(0xffffffffu, tiling.num_tiles, e);
    }
    int t[kMaxRank];
    split_tile_index(int(blockIdx.x / unsigned(shape.heads_q / shape.heads_kv)), grid_tiles,
                     t);
    static_assert(kMaxRank == 3, "t[d] by selects");
    const int t_d = d == 0 ? t[0] : d == 1 ? t[1] : t[2];  // (t[d] would go to the stack)
    int count = 1;  // KV tiles along dim d (each lane reads back its own write)
    if (lane < kMaxRank) {
      fwd_schedule_dim(ss.sched, d, t_d, tiling, shape, p.tiles);
      count = ss.sched.box.count[d];
    }
    int num_spatial = 1;
    for (int e = 0; e < kMaxRank; ++e) num_spatial *= __shfl_sync(0xffffffffu, count, e);
    if (lane == 0) {
      fwd_schedule_totals(ss.sched, num_spatial, shape, kBlockN);
      ss.cursor[0] = FwdTileCursor{};
    }
  }
  static_assert(kNThreads > 32, "warps 1.. fill the schedule-free tables");
  if (tid >= 32) {
    for (int r = tid - 32; r < kBlockM; r += kNThreads - 32) {
      ss.q_code[r] = box_code(r, p.tiles.q);
    }
    for (int r = tid - 32; r < kBlockN; r += kNThreads - 32) {
      const uint32_t code = box_code(r, p.tiles.kv);
      ss.kv_code[r] = code;
      int step[kMaxRank];
      box_steps(shape, step);
      ss.kv_rel_k[r] = row_delta(step, code, p.k_strides.spatial);
      ss.kv_rel_v[r] = row_delta(step, code, p.v_strides.spatial);
    }
  }
  __syncthreads();
  const FwdSchedule& w = ss.sched;
  {
    const TileRows q_rows = tile_rows(w.q, shape);
    for (int r = tid; r < kBlockM; r += kNThreads) {
      const uint32_t code = ss.q_code[r];
      store_query_row_window(r, code, w.q, shape, ss.q_win_begin, ss.q_win_end);
      int64_t off_q = 0, off_o = 0, off_lse = 0;
      const bool exists = row_offset(q_rows, code, p.q_strides.spatial, &off_q);
      row_offset(q_rows, code, p.out_strides.spatial, &off_o);
      row_offset(q_rows, code, p.lse_strides.spatial, &off_lse);
      ss.q_row_off[r] = exists ? off_q : -1;
      ss.o_row_off[r] = exists ? off_o : -1;
      ss.lse_row_off[r] = exists ? off_lse : -1;
    }
  }
  // A Q row's offset from the tables: whether the row exists.
  auto q_row = [](const int64_t* table) {
    return [table](int r, int64_t* off) {
      *off = table[r];
      return *off >= 0;
    };
  };

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

  // The tile at cursor c -> ss.step[c.it % kStepRing] (row-0 pointers, valid rows, mask
  // inputs). Row r of a spatial tile is at row 0 (origin_offset) + kv_rel[r] (row_delta).
  auto publish_tile = [&](const FwdTileCursor& c) {
    const KvTileDesc t = c.tile(w, shape, p.tiles, kBlockN);
    FwdKvStep st;
    st.extra = t.extra;
    st.interior = t.interior;
    if (!t.extra) {
      const TileRows rows = tile_rows(t.kv, shape);
      st.k = kv_base(p.k, p.k_strides) + origin_offset(rows, p.k_strides.spatial);
      st.v = kv_base(p.v, p.v_strides) + origin_offset(rows, p.v_strides.spatial);
      st.valid = rows.valid;
      st.extra_count = 0;
      st.full = true;
      for (int d = 0; d < kMaxRank; ++d) {
        st.origin[d] = t.kv[d].begin;
        st.full = st.full && t.kv[d].end - t.kv[d].begin == p.tiles.kv[d];
      }
    } else {
      st.k = extra_base(p.extra_k, p.extra_k_strides) +
             int64_t(t.extra_begin) * p.extra_k_strides.token;
      st.v = extra_base(p.extra_v, p.extra_v_strides) +
             int64_t(t.extra_begin) * p.extra_v_strides.token;
      st.valid = BoxInterval{0u, 0u};
      for (int d = 0; d < kMaxRank; ++d) st.origin[d] = 0;
      st.extra_count = t.extra_count;
      st.full = false;
    }
    ss.step[c.it % Traits::kStepRing] = st;
  };
  // Warp 0 (all lanes): batch k publishes tiles k kStepBatch .. (k + 1) kStepBatch - 1, lane
  // l < kStepBatch tile cursor.it + l (if it exists), and moves the cursor kStepBatch tiles
  // on. The cursor is double buffered (batch k reads cursor[k % 2], writes the other), so
  // that a batch's read and write are different words and each is a barrier away from the
  // batches around it. (A single cursor, read by every lane and rewritten by lane 7 between
  // two __syncwarp, drew compute-sanitizer racecheck hazards.)
  const int num_tiles = w.num_tiles();  // (warp 0 wrote it before the barrier above)
  auto publish_batch = [&](int batch) {
    const int lane = tid;
    if (lane < Traits::kStepBatch) {
      FwdTileCursor c = ss.cursor[batch & 1];
      for (int i = 0; i < lane; ++i) c.advance(w);
      if (c.it < num_tiles) publish_tile(c);
      if (lane == Traits::kStepBatch - 1) {
        c.advance(w);
        ss.cursor[(batch + 1) & 1] = c;
      }
    }
  };
  if (tid < 32) publish_batch(0);  // tiles 0 .. kStepBatch - 1
  __syncthreads();

  // Stage s of K / V (views rebuilt where used: a runtime stage is one pointer add).
  constexpr int kKVElems = Traits::kKVTileElems;
  auto sK_at = [&](int s) {
    return make_tensor(make_smem_ptr(ss.k + s * kKVElems), typename Traits::SmemLayoutKV{});
  };
  auto sV_at = [&](int s) {
    return make_tensor(make_smem_ptr(ss.v + s * kKVElems), typename Traits::SmemLayoutKV{});
  };
  auto sVt_at = [&](int s) {
    return make_tensor(make_smem_ptr(ss.v + s * kKVElems), typename Traits::SmemLayoutVt{});
  };
  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sK = sK_at(0);
  Tensor sVtNoSwizzle =
      make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutVtNoSwizzle{});

  // Issue the loads of K (kIsV false) or V of the tile `st` describes: one add per row
  // (spatial: row 0 + kv_rel[r]; extra: + r * token stride). Full spatial tiles (every row
  // present: most tiles) skip the per-row test; the others select between spatial and extra
  // rather than branch, so that both kinds share one copy sequence.
  auto load_kv = [&](auto&& sX, auto is_v, const FwdKvStep& st) {
    constexpr bool kIsV = decltype(is_v)::value;
    if (st.full) {  // CTA-uniform: most tiles; no row table but the offsets
      const int64_t* rel = kIsV ? ss.kv_rel_v : ss.kv_rel_k;
      gather_rows_async<kBlockN, kHeadDim, kNThreads>(
          sX, static_cast<const Element*>(kIsV ? st.v : st.k),
          [&](int r, int64_t* off) {
            *off = rel[r];
            return true;
          },
          tid);
      return;
    }
    const bool extra = st.extra;
    const BoxInterval valid = st.valid;
    const int count = st.extra_count;
    const int64_t* rel = kIsV ? ss.kv_rel_v : ss.kv_rel_k;
    const int64_t token_stride = kIsV ? p.extra_v_strides.token : p.extra_k_strides.token;
    gather_rows_async<kBlockN, kHeadDim, kNThreads>(
        sX, static_cast<const Element*>(kIsV ? st.v : st.k),
        [&](int r, int64_t* off) {
          const uint32_t code = ss.kv_code[r];
          *off = extra ? r * token_stride : rel[r];
          return extra ? r < count : in_box_interval(code, code | kCodeGuard, valid);
        },
        tid);
  };

  // Prologue: Q and tile 0's K (and V, double buffered) in one cp.async group.
  gather_rows_async<kBlockM, kHeadDim, kNThreads>(sQ, q_base(), q_row(ss.q_row_off), tid);
  load_kv(sK_at(0), std::false_type{}, ss.step[0]);
  if constexpr (Traits::kStages == 2) load_kv(sV_at(0), std::true_type{}, ss.step[0]);
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

  for (int it = 0; it < num_tiles; ++it) {
    const int stage = Traits::kStages == 2 ? (it & 1) : 0;
    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    cp_async_wait<0>();
    // Tile it landed; every warp is done with tile it - 1, whose stage the next loads
    // overwrite; step(it + 1) is published.
    __syncthreads();
    // Read here, not at the mask: the batch publish below writes the step ring, which the
    // compiler cannot move a later read above, so the read's latency sat right before the
    // branch (Nsight Compute: ~1.4% of stall samples on it).
    const bool interior = ss.step[it % Traits::kStepRing].interior;
    if constexpr (Traits::kStages == 1) {  // V of tile it: every warp is done with tile
                                           // it - 1's V (the sync above)
      load_kv(sV_at(0), std::true_type{}, ss.step[it % Traits::kStepRing]);
      cp_async_fence();
    }
    // Thread-dependent shared-memory addresses are rebuilt each iteration from an opaque
    // thread index instead of being carried across the loop (registers; see opaque()).
    const int ltid = opaque(tid);
    auto thr_copy_q = copy_q.get_thread_slice(ltid);
    auto thr_copy_k = copy_k.get_thread_slice(ltid);
    gemm_ss<Traits::kPrefetchS>(mma, acc_s, tSrQ, tSrK, thr_copy_q.partition_S(sQ),
                                thr_copy_k.partition_S(sK_at(stage)), copy_q, copy_k,
                                thr_copy_q, thr_copy_k);

    // Loads of tile it + 1 after the S MMAs are issued, so that their address work overlaps
    // the MMAs in flight rather than delaying their start.
    if constexpr (Traits::kStages == 2) {
      if (it + 1 < num_tiles) {
        const FwdKvStep& next = ss.step[(it + 1) % Traits::kStepRing];
        load_kv(sK_at(stage ^ 1), std::false_type{}, next);
        load_kv(sV_at(stage ^ 1), std::true_type{}, next);
        cp_async_fence();
      }
    }
    // Tiles it + kStepBatch .. it + 2 kStepBatch - 1 into the ring: their slots held tiles
    // it - kStepBatch .. it - 1, last read (masks, loads) before the barrier above; their
    // first readers (the loads of tile it + kStepBatch) come kStepBatch - 1 barriers later.
    if (tid < 32 && it % Traits::kStepBatch == 0 && it + Traits::kStepBatch < num_tiles) {
      publish_batch(it / Traits::kStepBatch + 1);
    }

    Tensor s_rc = rowcol_view(acc_s);
    const FwdKvStep& cur = ss.step[it % Traits::kStepRing];
    if (!interior) {  // CTA-uniform
      Tensor tScS_rc = rowcol_view(mma.get_thread_slice(ltid).partition_C(
          make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
      if (!cur.extra) {
        mask_rows_by_window(s_rc, tScS_rc, ss.q_win_begin, ss.q_win_end, ss.kv_code,
                            cur.origin);
      } else {
        mask_cols_beyond(s_rc, tScS_rc, cur.extra_count);
      }
    }

    if constexpr (Traits::kStages == 1) {
      cp_async_wait<0>();  // this thread's rows of V of tile it landed;
      __syncthreads();     // every thread's did, and every warp is done reading K of tile it
      if (it + 1 < num_tiles) {
        load_kv(sK_at(0), std::false_type{}, ss.step[(it + 1) % Traits::kStepRing]);
        cp_async_fence();
      }
    }
    softmax.update(s_rc, acc_o_rc, scale_log2);
    Tensor rP = convert_fragment<Element>(acc_s);
    Tensor tOrP = make_tensor(rP.data(), acc_to_a_layout(rP.layout()));
    auto thr_copy_v = copy_v.get_thread_slice(opaque(tid));
    gemm_rs<Traits::kPrefetchPV>(mma, acc_o, tOrP, tOrVt,
                                 thr_copy_v.partition_S(sVt_at(stage)), copy_v, thr_copy_v);
  }

  float lse[kRows];
  softmax.finalize(acc_o_rc, p.scale, lse);

  Element* out_base = static_cast<Element*>(p.out) + b() * p.out_strides.batch +
                      int64_t(h()) * p.out_strides.head;
  float* lse_base = p.lse + b() * p.lse_strides.batch + int64_t(h()) * p.lse_strides.head;
  __syncthreads();  // every warp is done reading sQ: it becomes the output staging tile
  store_rows_output<kBlockM, kHeadDim, kNThreads, Element>(mma, acc_o, sQ, out_base,
                                                           q_row(ss.o_row_off), tid);
  store_row_stat<kBlockM, kHeadDim>(thr_mma, lse, lse_base, q_row(ss.lse_row_off));
}

}  // namespace jax_gna::sm80
