// Device helpers the online softmax of every CUDA kernel family shares (sm80, sm90): the
// exponential, quad reductions and the lazy-rescale threshold.
//
// Exponentials are base 2 with the scale folded in: exp2(s * scale_log2 - max * scale_log2),
// one FFMA + one MUFU.EX2 per element. ex2.approx.ftz directly: exp2f would add a range test
// and two multiplies per element for denormal results, which round to zero in the bf16/fp16
// P anyway.
//
// Lazy rescaling: the running max a row's exponentials are taken against moves only when a
// tile raises the row max by more than kRescaleLog2 (log2 units), decided per warp by a vote
// so the branch is uniform. In between, probabilities may exceed 1 by at most
// 2^kRescaleLog2 = 256: exact in fp32 sums, in range for bf16/fp16 P, and the final
// normalisation and LSE use the same stale max, so results are unchanged. It saves the
// output-accumulator rescale (one multiply per accumulator element) on almost every tile
// once the first tiles have set the row maxima. Requires scale > 0 (the FFI handlers check):
// the running max of unscaled scores is then the max of the scaled ones.
#pragma once

#include <cuda_runtime.h>

namespace jax_gna::common {

// 2^x with the MUFU directly (flush-to-zero; ex2(-inf) = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Max / sum over the four threads of a quad (the threads that share an MMA accumulator row).
__device__ __forceinline__ float quad_allreduce_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_allreduce_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Rescale threshold of the lazy running max, log2 units (probabilities stay <= 2^8).
constexpr float kRescaleLog2 = 8.f;

// Does moving a row's running max from `old_max` to `new_max` (unscaled scores) call for a
// rescale? -inf - -inf is NaN (compares false): a row that has seen no key yet stays put; the
// first visible key (old -inf) always does.
__device__ __forceinline__ bool max_moved(float old_max, float new_max, float scale_log2) {
  return (new_max - old_max) * scale_log2 > kRescaleLog2;
}

}  // namespace jax_gna::common
