// Online softmax in fp32 over the (row, column) view of the score accumulator (mma_utils.h).
// Scores stay unscaled; exponentials, quad reductions and the lazy rescale (the running max
// moves only when a tile raises it by more than kRescaleLog2, for the whole warp at once)
// are common/softmax_math.h's. The four threads of a quad share each row (m16n8
// accumulator layout).
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "common/softmax_math.h"

namespace jax_gna::sm80 {

using namespace cute;
using common::fast_exp2;
using common::quad_allreduce_max;
using common::quad_allreduce_sum;

template <int kRows>
struct OnlineSoftmax {
  float row_max[kRows];
  float row_sum[kRows];  // per thread until finalize(): quad-reduced there only

  CUTE_DEVICE OnlineSoftmax() {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
    }
  }

  // Fold one KV tile of scores (s: rows x cols, masked entries -inf) into the running state:
  // rescale the output accumulator o (rows x D) when the max moves (see above) and turn s
  // into unnormalised probabilities.
  template <class S, class O>
  CUTE_DEVICE void update(S& s, O& o, float scale_log2) {
    static_assert(decltype(size<0>(s))::value == kRows, "row count");
    float m_new[kRows];
    bool raise = false;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float m = row_max[r];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s); ++c) m = fmaxf(m, s(r, c));
      m_new[r] = quad_allreduce_max(m);
      raise = raise || common::max_moved(row_max[r], m_new[r], scale_log2);
    }
    if (__any_sync(0xffffffffu, raise)) {  // warp-uniform
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const float corr =
            row_max[r] == -INFINITY ? 0.f : fast_exp2((row_max[r] - m_new[r]) * scale_log2);
        row_max[r] = m_new[r];
        row_sum[r] *= corr;
        CUTE_UNROLL
        for (int c = 0; c < size<1>(o); ++c) o(r, c) *= corr;
      }
    }
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      // A row with every key masked so far keeps max -inf: use 0 as the offset so that
      // exp2(-inf - 0) = 0 instead of NaN.
      const float m_scaled = row_max[r] == -INFINITY ? 0.f : row_max[r] * scale_log2;
      float sum = 0.f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s); ++c) {
        s(r, c) = fast_exp2(s(r, c) * scale_log2 - m_scaled);
        sum += s(r, c);
      }
      // Pin the sum here: without it the compiler defers these adds past the P.V MMAs and
      // keeps every fp32 probability live next to its half copy (register spills).
      asm volatile("" : "+f"(sum));
      row_sum[r] += sum;
    }
  }

  // Normalise o by the row sums and return the natural-log LSE of each row in lse[]
  // (max * scale + ln(sum)); rows that saw no key get lse = -inf and o = 0.
  template <class O>
  CUTE_DEVICE void finalize(O& o, float scale, float (&lse)[kRows]) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const float sum = quad_allreduce_sum(row_sum[r]);
      const bool empty = sum == 0.f || sum != sum;
      const float inv = empty ? 0.f : 1.f / sum;
      lse[r] = empty ? -INFINITY : row_max[r] * scale + logf(sum);
      CUTE_UNROLL
      for (int c = 0; c < size<1>(o); ++c) o(r, c) *= inv;
    }
  }
};

}  // namespace jax_gna::sm80
