// Warpgroup GEMM helpers shared by the sm90 kernels (forward and backward): issuing one
// WGMMA batch over a whole K extent, and the accumulator -> 16-bit A-operand conversion that
// feeds a probability (or gradient) tile straight back into the next GEMM from registers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

namespace jax_gna {
namespace sm90 {

// Two floats -> one 32-bit word of two 16-bit values (first in the low half).
template <class Element>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<Element, cutlass::bfloat16_t>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    static_assert(std::is_same_v<Element, cutlass::half_t>, "bf16 or fp16 only");
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// Issue (not wait for) one warpgroup GEMM over the whole K extent; kZeroInit overwrites C.
template <bool kZeroInit, class TiledMma, class TA, class TB, class TC>
__device__ __forceinline__ void gemm_issue(TiledMma& mma, TA& a, const TB& b, TC& c) {
  constexpr bool kIsRS =
      !cute::is_base_of<cute::GMMA::DescriptorIterator, typename TiledMma::FrgTypeA>::value;
  if constexpr (kIsRS) cute::warpgroup_fence_operand(a);
  cute::warpgroup_fence_operand(c);
  cute::warpgroup_arrive();
  if constexpr (kZeroInit) mma.accumulate_ = cute::GMMA::ScaleOut::Zero;
#pragma unroll
  for (int kb = 0; kb < cute::size<2>(a); ++kb) {
    cute::gemm(mma, a(cute::_, cute::_, kb), b(cute::_, cute::_, kb), c);
    mma.accumulate_ = cute::GMMA::ScaleOut::One;
  }
  cute::warpgroup_commit_batch();
  cute::warpgroup_fence_operand(c);
  if constexpr (kIsRS) cute::warpgroup_fence_operand(a);
}

// An fp32 accumulator fragment (64 x N) -> the 16-bit A operand of a GEMM whose K extent is
// those N columns. Accumulator element i and A element i are the same (row, column): both
// fragments enumerate (pair, row half, 8-column block) with strides (1, 2, 4).
template <class Element, class FragC, class FragA>
__device__ __forceinline__ void convert_acc_to_a(const FragC& c, FragA& a) {
  constexpr int kSize = decltype(cute::size(c))::value;
  static_assert(kSize == decltype(cute::size(a))::value, "A/C fragment mismatch");
  uint32_t* out = reinterpret_cast<uint32_t*>(a.data());
#pragma unroll
  for (int i = 0; i < kSize; i += 2) out[i / 2] = pack2<Element>(c(i), c(i + 1));
}

}  // namespace sm90
}  // namespace jax_gna
