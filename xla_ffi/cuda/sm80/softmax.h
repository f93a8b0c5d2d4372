// Online softmax in fp32 over the (row, column) view of the score accumulator (mma_utils.h).
// Scores stay unscaled; exponentials are exp2(s * scale_log2 - max * scale_log2) with
// scale_log2 = scale * log2(e) pre-multiplied, one FFMA + one MUFU.EX2 per element
// (ex2.approx.ftz: exp2f would add a range test and two multiplies per element for
// denormal results, which round to zero in the bf16/fp16 P anyway). The four threads of a
// quad share each row (m16n8 accumulator layout): row max and sum reduce with two
// xor-shuffles. Requires scale > 0 (the handler checks): the running max of unscaled scores
// is then the max of scaled ones.
//
// Lazy rescaling: the running max a row's exponentials are taken against moves only when a
// tile raises the row max by more than kRescaleLog2 (in log2 units), and then for the whole
// warp at once (a warp vote, so the branch is uniform). In between, probabilities may exceed
// 1 by at most 2^kRescaleLog2 = 256: exact in fp32 sums, within range of bf16/fp16 P, and
// the final normalisation and LSE use the same stale max, so results are unchanged. It
// saves the O-accumulator rescale (one multiply per accumulator element) on almost every
// tile once the first few tiles have set the row maxima.
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

// 2^x with the MUFU directly (flush-to-zero; ex2(-inf) = 0).
CUTE_DEVICE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Rescale threshold of the lazy running max, log2 units (probabilities stay <= 2^8).
constexpr float kRescaleLog2 = 8.f;

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
      // -inf - -inf is NaN (compares false): a row that has seen no key yet stays put.
      raise = raise || (m_new[r] - row_max[r]) * scale_log2 > kRescaleLog2;
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
