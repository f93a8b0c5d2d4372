// Online softmax in fp32 over the (row, column) view of the score accumulator (mma_utils.h).
// Scores stay unscaled; exponentials are exp2(s * scale_log2 - max * scale_log2) with
// scale_log2 = scale * log2(e) pre-multiplied, one FFMA + one MUFU.EX2 per element. The four
// threads of a quad share each row (m16n8 accumulator layout): row max and sum reduce with
// two xor-shuffles. Requires scale > 0 (the handler checks): the running max of unscaled
// scores is then the max of scaled ones.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

namespace jax_gna::sm80 {

using namespace cute;

CUTE_DEVICE float quad_allreduce_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

CUTE_DEVICE float quad_allreduce_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

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
  // rescale the output accumulator o (rows x D) and turn s into unnormalised probabilities.
  template <class S, class O>
  CUTE_DEVICE void update(S& s, O& o, float scale_log2) {
    static_assert(decltype(size<0>(s))::value == kRows, "row count");
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float m = row_max[r];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s); ++c) m = fmaxf(m, s(r, c));
      m = quad_allreduce_max(m);
      // A row with every key masked so far keeps max -inf: use 0 as the offset so that
      // exp2(-inf - 0) = 0 instead of NaN.
      const float m_scaled = m == -INFINITY ? 0.f : m * scale_log2;
      const float corr =
          row_max[r] == -INFINITY ? 0.f : exp2f((row_max[r] - m) * scale_log2);
      row_max[r] = m;
      float sum = 0.f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s); ++c) {
        s(r, c) = exp2f(s(r, c) * scale_log2 - m_scaled);
        sum += s(r, c);
      }
      // Pin the sum here: without it the compiler defers these adds past the P.V MMAs and
      // keeps every fp32 probability live next to its half copy (register spills).
      asm volatile("" : "+f"(sum));
      row_sum[r] = row_sum[r] * corr + sum;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(o); ++c) o(r, c) *= corr;
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
