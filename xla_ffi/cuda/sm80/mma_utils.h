// Register-fragment helpers around CuTe's sm80 MMA: views of accumulator fragments as
// (row, column) matrices, reuse of an fp32 accumulator as the A operand of the next MMA,
// fp32 -> half conversion, and the two GEMM shapes of attention (both operands from shared
// memory; A already in registers), with ldmatrix loads of the next k-slice issued before the
// MMAs of the current one.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

namespace jax_gna::sm80 {

using namespace cute;

// Accumulator layout ((2, 2), MMA_M, MMA_N) of the m16n8 atom -> ((2, MMA_M), (2, MMA_N)):
// mode 0 of the atom's values is (column + 1, row + 8), so rows are (value 1, MMA_M) and
// columns (value 0, MMA_N). Row statistics then loop over mode 1 of the view.
template <class L>
CUTE_HOST_DEVICE constexpr auto rowcol_layout(L const& l) {
  static_assert(decltype(rank(l))::value == 3 && decltype(rank<0>(l))::value == 2,
                "expects an m16n8 accumulator layout ((2,2),M,N)");
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)),
                     make_layout(get<0, 0>(l), get<2>(l)));
}

template <class Engine, class L>
CUTE_HOST_DEVICE constexpr auto rowcol_view(Tensor<Engine, L>& t) {
  return make_tensor(t.data(), rowcol_layout(t.layout()));
}
template <class Engine, class L>
CUTE_HOST_DEVICE constexpr auto rowcol_view(Tensor<Engine, L> const& t) {
  return make_tensor(t.data(), rowcol_layout(t.layout()));
}

// Accumulator ((2, 2), MMA_M, MMA_N) -> A operand ((2, 2, 2), MMA_M, MMA_N / 2) of an
// m16n8k16 MMA: two neighbouring n8 accumulator tiles hold exactly the 16 k-columns of one A
// fragment (values (k + 1, row + 8) of each, the second at k + 8).
template <class L>
CUTE_HOST_DEVICE constexpr auto acc_to_a_layout(L const& l) {
  auto l2 = logical_divide(l, Shape<Underscore, Underscore, _2>{});  // ((2,2),M,(2,N/2))
  return make_layout(make_layout(get<0, 0>(l2), get<0, 1>(l2), get<2, 0>(l2)), get<1>(l2),
                     get<2, 1>(l2));
}

// fp32 fragment -> Element fragment of the same layout, converted in pairs (packed cvt).
template <class To, class Engine, class L>
CUTE_DEVICE auto convert_fragment(Tensor<Engine, L> const& in) {
  static_assert(decltype(size(in))::value % 2 == 0, "pairs");
  Tensor out = make_tensor<To>(in.layout());
  cutlass::NumericArrayConverter<To, float, 2> conv;
  CUTE_UNROLL
  for (int i = 0; i < size(in); i += 2) {
    cutlass::Array<float, 2> a;
    a[0] = in(i);
    a[1] = in(i + 1);
    cutlass::Array<To, 2> r = conv(a);
    out(i) = r[0];
    out(i + 1) = r[1];
  }
  return out;
}

// acc += A . B^T with both operands read from shared memory by ldmatrix. tCrA/tCrB are the
// MMA register fragments, tCsA/tCsB the shared-memory partitions of the copy thread slices.
// kPrefetch: load k-slice k + 1 before the MMAs of slice k (hides ldmatrix latency, costs
// one more slice of registers; off where the accumulators leave no room).
template <bool kPrefetch = true, class TiledMma, class Acc, class RA, class RB, class SA,
          class SB, class CopyA, class CopyB, class ThrCopyA, class ThrCopyB>
CUTE_DEVICE void gemm_ss(TiledMma& mma, Acc& acc, RA& tCrA, RB& tCrB, SA const& tCsA,
                         SB const& tCsB, CopyA const& copy_a, CopyB const& copy_b,
                         ThrCopyA const& thr_copy_a, ThrCopyB const& thr_copy_b) {
  Tensor tCrA_view = thr_copy_a.retile_D(tCrA);
  Tensor tCrB_view = thr_copy_b.retile_D(tCrB);
  if constexpr (kPrefetch) {
    copy(copy_a, tCsA(_, _, _0{}), tCrA_view(_, _, _0{}));
    copy(copy_b, tCsB(_, _, _0{}), tCrB_view(_, _, _0{}));
  }
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tCrA); ++k) {
    if constexpr (kPrefetch) {
      if (k < size<2>(tCrA) - 1) {
        copy(copy_a, tCsA(_, _, k + 1), tCrA_view(_, _, k + 1));
        copy(copy_b, tCsB(_, _, k + 1), tCrB_view(_, _, k + 1));
      }
    } else {
      copy(copy_a, tCsA(_, _, k), tCrA_view(_, _, k));
      copy(copy_b, tCsB(_, _, k), tCrB_view(_, _, k));
    }
    cute::gemm(mma, tCrA(_, _, k), tCrB(_, _, k), acc);
  }
}

// acc += A . B^T with A already in registers (e.g. P after the softmax) and B from shared
// memory.
template <bool kPrefetch = true, class TiledMma, class Acc, class RA, class RB, class SB,
          class CopyB, class ThrCopyB>
CUTE_DEVICE void gemm_rs(TiledMma& mma, Acc& acc, RA const& tCrA, RB& tCrB, SB const& tCsB,
                         CopyB const& copy_b, ThrCopyB const& thr_copy_b) {
  Tensor tCrB_view = thr_copy_b.retile_D(tCrB);
  if constexpr (kPrefetch) copy(copy_b, tCsB(_, _, _0{}), tCrB_view(_, _, _0{}));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tCrA); ++k) {
    if constexpr (kPrefetch) {
      if (k < size<2>(tCrA) - 1) copy(copy_b, tCsB(_, _, k + 1), tCrB_view(_, _, k + 1));
    } else {
      copy(copy_b, tCsB(_, _, k), tCrB_view(_, _, k));
    }
    cute::gemm(mma, tCrA(_, _, k), tCrB(_, _, k), acc);
  }
}

}  // namespace jax_gna::sm80
