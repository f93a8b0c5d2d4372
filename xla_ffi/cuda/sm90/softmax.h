// Online softmax of the sm90 GNA forward kernel on GMMA accumulator fragments.
//
// A consumer thread holds two rows (row halves h = 0, 1) of its warpgroup's 64 x N score
// tile: fragment element i belongs to row half (i >> 1) & 1 (SM90 GMMA C layout
// ((2, 2, N/8)) : ((1, 2, 4))), and the four threads of a quad share the rows. Scores arrive
// unscaled; masked scores are -inf; the row maxima stay in score units. Exponentials, quad
// reductions and the lazy rescale (the running max moves only when a tile raises it by more
// than kRescaleLog2, decided per warp) are common/softmax_math.h's. Tiles after a row's
// first visible key take fast_step (no row max; in the sm90 consumers' KV-tile loop it took
// the ~85 instructions per warp and tile of the max and its reductions out of 427, and
// seq32k / FLUX 16x16 / dense 3 / 5 / 10% off the time: self-test A/B, H200).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include <cute/tensor.hpp>

#include "common/softmax_math.h"

namespace jax_gna {
namespace sm90 {

using common::fast_exp2;
using common::quad_allreduce_max;
using common::quad_allreduce_sum;

struct OnlineSoftmax {
  float row_max[2];  // running maxima of the raw scores (-inf: nothing seen yet)
  float row_sum[2];  // this thread's partial sums of exp2(score * scale_log2 - max_scaled)
  float scale_log2;

  __device__ __forceinline__ explicit OnlineSoftmax(float sl2) : scale_log2(sl2) {
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.f;
  }

  __device__ __forceinline__ void reset() {
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.f;
  }

  // Scores -> probabilities in place. Returns whether the running maxima moved (uniform
  // over the warp); then `rescale` holds the factors by which the running output must be
  // rescaled (row_sum is rescaled here, the output by the caller). When they did not move,
  // the output needs nothing and `rescale` is left unset.
  //
  // The row max and row sum are reduced over kChains independent accumulators per row half
  // (element i goes to chain (i & 1) + 2 * ((i >> 2) & 1)), then combined: a single
  // accumulator would make each a serial chain of kSize / 2 dependent instructions per
  // tile, on the critical path of the warpgroup's softmax (Nsight Compute's stall sampling
  // put FMNMX at 8-10% of the kernel's samples with one chain).
  static constexpr int kChains = 4;

  template <class Frag>
  __device__ __forceinline__ bool step(Frag& s, float (&rescale)[2]) {
    constexpr int kSize = decltype(cute::size(s))::value;
    static_assert(kSize % 8 == 0, "fragment: (pair, row half, 8-column block) x N/8");
    float mc[2][kChains];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int c = 0; c < kChains; ++c) mc[h][c] = row_max[h];
    }
#pragma unroll
    for (int i = 0; i < kSize; ++i) {
      float& m = mc[(i >> 1) & 1][(i & 1) + 2 * ((i >> 2) & 1)];
      m = fmaxf(m, s(i));
    }
    float mx[2];
    bool raise = false;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(fmaxf(mc[h][0], mc[h][1]), fmaxf(mc[h][2], mc[h][3]));
      mx[h] = quad_allreduce_max(mx[h]);
      raise = raise || common::max_moved(row_max[h], mx[h], scale_log2);
    }
    const bool moved = __any_sync(0xffffffffu, raise);
    if (moved) {  // warp-uniform
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        // A row with nothing visible so far keeps max -inf: use 0 so exp2 gives 0, not NaN.
        const float ms = mx[h] == -INFINITY ? 0.f : mx[h] * scale_log2;
        rescale[h] = fast_exp2(row_max[h] * scale_log2 - ms);  // old max -inf -> 0
        row_sum[h] *= rescale[h];
        row_max[h] = mx[h];
      }
    }
    float neg_ms[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      neg_ms[h] = row_max[h] == -INFINITY ? 0.f : -row_max[h] * scale_log2;
    }
    exponentiate<true>(s, neg_ms, row_sum);
    return moved;
  }

  // Scores -> exp2(score * scale_log2 + neg_ms[row half]) in place; the thread's sum per row
  // half, over kChains independent accumulators (see step()), added to `sum` (kAdd) or
  // stored in it.
  template <bool kAdd, class Frag>
  __device__ __forceinline__ void exponentiate(Frag& s, const float (&neg_ms)[2],
                                               float (&sum)[2]) const {
    constexpr int kSize = decltype(cute::size(s))::value;
    float sc[2][kChains] = {};
#pragma unroll
    for (int i = 0; i < kSize; ++i) {
      const int h = (i >> 1) & 1;
      const float p = fast_exp2(fmaf(s(i), scale_log2, neg_ms[h]));
      s(i) = p;
      sc[h][(i & 1) + 2 * ((i >> 2) & 1)] += p;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float t = (sc[h][0] + sc[h][1]) + (sc[h][2] + sc[h][3]);
      sum[h] = kAdd ? sum[h] + t : t;
    }
  }

  // Tiles after every row of the warp has seen a key (all_seen): the exponentials against
  // the running max, without the tile's max (its ~74 FMNMX, 4 shuffles and the vote).
  // Accepted when each of the thread's two row sums over the tile stays <= kFastLimit, so
  // every probability is <= 2^14 (in range for fp16 P, exact enough in the fp32 sums): the
  // same result as step() wherever step() would not move the max, and an equally exact one
  // otherwise (the lazy rescale's stale max with a wider bound; the LSE and the final
  // normalisation use the same max). Rejected (false, warp-uniform; row_sum untouched, s
  // overwritten by exponentials): a score more than ~14 log2 units above the running max,
  // or an overflow (inf compares false), in the warp's rows; the caller recomputes S and
  // takes step().
  static constexpr float kFastLimit = 16384.f;

  template <class Frag>
  __device__ __forceinline__ bool fast_step(Frag& s) {
    float neg_ms[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) neg_ms[h] = -row_max[h] * scale_log2;
    float part[2];
    exponentiate<false>(s, neg_ms, part);
    // NaN-safe: inf (a score 128 log2 units up) compares false too.
    const bool ok = part[0] <= kFastLimit && part[1] <= kFastLimit;
    if (!__all_sync(0xffffffffu, ok)) return false;
#pragma unroll
    for (int h = 0; h < 2; ++h) row_sum[h] += part[h];
    return true;
  }

  // Has every row of the warp seen a key (finite running max)? Then fast_step applies.
  __device__ __forceinline__ bool all_seen() const {
    return __all_sync(0xffffffffu, row_max[0] != -INFINITY && row_max[1] != -INFINITY);
  }

  // Ends the row: quad-reduces the sums; returns 1/sum per row half (0 for an empty row)
  // and the natural-log LSE (max * scale + ln(sum); -inf for an empty row).
  // The MUFU reciprocal and log2 (rcp.approx about 1 ulp, lg2.approx about 2^-22): IEEE
  // 1/x and logf are branchy ~40-instruction chains on every item's epilogue path, 12.6% of
  // the consumers' stall samples outside the KV-tile loop (Nsight Compute, seq32k).
  // sum >= 1 here for every visible row (the row max contributes exp2(0) = 1, or more under
  // the lazy max), so there are no denormals.
  __device__ __forceinline__ void finish(float scale, float (&inv)[2], float (&lse)[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float sum = quad_allreduce_sum(row_sum[h]);
      const bool empty = !(sum > 0.f);
      float r, l2;
      asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(sum));
      asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(l2) : "f"(sum));
      inv[h] = empty ? 0.f : r;
      lse[h] = empty ? -INFINITY : fmaf(row_max[h], scale, l2 * 0.69314718055994531f);
    }
  }
};

template <class Frag>
__device__ __forceinline__ void rescale_rows(Frag& o, const float (&f)[2]) {
  constexpr int kSize = decltype(cute::size(o))::value;
#pragma unroll
  for (int i = 0; i < kSize; ++i) o(i) *= f[(i >> 1) & 1];
}

}  // namespace sm90
}  // namespace jax_gna
