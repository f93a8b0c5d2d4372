// One warp's rows of S = Q K^T recomputed with warp-level mma.sync from the GMMA shared
// memory images (the rare slow path of the fast softmax: S was overwritten by rejected
// exponentials). No warpgroup collective, so each warp decides alone.
//
// The m16n8k16 accumulator of n-block nb holds (row g, cols 8 nb + 2 t, + 1) and (row g + 8,
// same cols), g = lane / 4, t = lane % 4: exactly elements 4 nb .. 4 nb + 3 of the warp's
// part of the SM90 GMMA S fragment ((2, 2, N/8) : (1, 2, 4)), so it is written in place.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cutlass/numeric_types.h>

namespace jax_gna {
namespace sm90 {

template <class Element>
struct WarpMmaOp;
template <>
struct WarpMmaOp<cutlass::bfloat16_t> {
  using type = cute::SM80_16x8x16_F32BF16BF16F32_TN;
};
template <>
struct WarpMmaOp<cutlass::half_t> {
  using type = cute::SM80_16x8x16_F32F16F16F32_TN;
};

// sQ: (rows, D) Q image; sK: (N, D) K image of one stage; row_base: the warp's first row.
template <class Element, class TQ, class TK, class FragS>
__device__ __forceinline__ void recompute_s_warp(const TQ& sQ, const TK& sK, int row_base, int lane,
                                              FragS& s) {
  using Op = typename WarpMmaOp<Element>::type;
  constexpr int kSize = decltype(cute::size(s))::value;  // 4 per 8-column block
  constexpr int kNBlocks = kSize / 4;
  constexpr int kD = decltype(cute::size<1>(sQ))::value;
  static_assert(kNBlocks % 2 == 0 && kD % 16 == 0, "S tile shape");
#pragma unroll
  for (int i = 0; i < kSize; ++i) s(i) = 0.f;
  const int mi = lane / 8;  // ldmatrix x4: lanes 8 mi .. 8 mi + 7 address matrix mi
  const int r = lane % 8;
#pragma unroll 1
  for (int kb = 0; kb < kD / 16; ++kb) {
    uint32_t a[4];  // matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15): a0 (0-7, lo), a1 (8-15, lo), ...
    const Element* pa =
        cute::raw_pointer_cast(&sQ(row_base + (mi & 1) * 8 + r, kb * 16 + (mi >> 1) * 8));
    cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(pa), a[0], a[1],
                                  a[2], a[3]);
#pragma unroll
    for (int nb = 0; nb < kNBlocks; nb += 2) {
      uint32_t b[4];  // (n block nb, k lo), (nb, k hi), (nb + 1, k lo), (nb + 1, k hi)
      const Element* pb =
          cute::raw_pointer_cast(&sK((nb + (mi >> 1)) * 8 + r, kb * 16 + (mi & 1) * 8));
      cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(pb), b[0], b[1],
                                    b[2], b[3]);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int e = 4 * (nb + h);
        Op::fma(s(e), s(e + 1), s(e + 2), s(e + 3), a[0], a[1], a[2], a[3], b[2 * h],
                b[2 * h + 1], s(e), s(e + 1), s(e + 2), s(e + 3));
      }
    }
  }
}

}  // namespace sm90
}  // namespace jax_gna
