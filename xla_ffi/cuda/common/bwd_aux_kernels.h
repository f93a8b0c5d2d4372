// Element-wise passes around the backward kernels (sm80, sm90): delta (before), dq_accum ->
// dq and the sum of the extra-token partials (after). The tensors they touch are contiguous (the FFI
// handler passes row-major XLA buffers): rows of D elements, row r at r * D.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

#include <cstdint>

#include "../common/launch_utils.h"
#include "jax_gna/params.h"

namespace jax_gna {

// delta[r] = sum_d dO[r, d] * O[r, d] - dlse[r] over rows r = (batch, token, query head).
// kHeadDim / 8 consecutive threads share a row (16-byte loads), reduced with xor-shuffles.
template <class Element, int kHeadDim>
__global__ void bwd_delta_kernel(const Element* __restrict__ out,
                                 const Element* __restrict__ dout,
                                 const float* __restrict__ dlse, float* __restrict__ delta,
                                 int64_t rows) {
  constexpr int kLanes = kHeadDim / 8;
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "lanes per row");
  const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = thread / kLanes;
  const int lane = int(thread % kLanes);
  float acc = 0.f;
  if (row < rows) {
    const int64_t off = row * kHeadDim + lane * 8;
    const cute::uint128_t o_raw = *reinterpret_cast<const cute::uint128_t*>(out + off);
    const cute::uint128_t d_raw = *reinterpret_cast<const cute::uint128_t*>(dout + off);
    const Element* o = reinterpret_cast<const Element*>(&o_raw);
    const Element* d = reinterpret_cast<const Element*>(&d_raw);
    CUTE_UNROLL
    for (int i = 0; i < 8; ++i) acc += float(o[i]) * float(d[i]);
  }
  CUTE_UNROLL
  for (int m = kLanes / 2; m >= 1; m /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, m);
  if (row < rows && lane == 0) delta[row] = acc - dlse[row];
}

// dq[i] = Element(dq_accum[i]) (dQ already scaled), 8 elements per thread.
template <class Element>
__global__ void bwd_dq_convert_kernel(const float* __restrict__ dq_accum,
                                      Element* __restrict__ dq, int64_t count8) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count8) return;
  const float4 a = reinterpret_cast<const float4*>(dq_accum)[2 * i];
  const float4 c = reinterpret_cast<const float4*>(dq_accum)[2 * i + 1];
  cutlass::Array<float, 8> in;
  in[0] = a.x; in[1] = a.y; in[2] = a.z; in[3] = a.w;
  in[4] = c.x; in[5] = c.y; in[6] = c.z; in[7] = c.w;
  cutlass::NumericArrayConverter<Element, float, 8> conv;
  *reinterpret_cast<cutlass::Array<Element, 8>*>(dq + 8 * i) = conv(in);
}

// dextra_k[i] = sum over splits s (in order) of accum[0, s, i]; dextra_v from accum[1, s, i].
template <class Element>
__global__ void bwd_extra_reduce_kernel(const float* __restrict__ accum,
                                        Element* __restrict__ dextra_k,
                                        Element* __restrict__ dextra_v, int64_t per_split,
                                        int num_splits) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= per_split) return;
  float k = 0.f, v = 0.f;
  for (int s = 0; s < num_splits; ++s) {
    k += accum[int64_t(s) * per_split + i];
    v += accum[int64_t(num_splits + s) * per_split + i];
  }
  dextra_k[i] = Element(k);
  dextra_v[i] = Element(v);
}

// Host launches of the passes around a backward kernel (sm80 and sm90 share them).
constexpr int kAuxThreads = 256;

inline int64_t bwd_rows(const BwdParams& p) {  // (batch, token, query head) rows
  const ProblemShape& s = p.fwd.shape;
  return int64_t(s.batch) * s.tokens() * s.heads_q;
}

template <class Element, int kHeadDim>
cudaError_t launch_bwd_delta(const BwdParams& p, cudaStream_t stream) {
  const int64_t rows = bwd_rows(p);
  bwd_delta_kernel<Element, kHeadDim>
      <<<ceil_div_u(rows * (kHeadDim / 8), kAuxThreads), kAuxThreads, 0, stream>>>(
          static_cast<const Element*>(p.fwd.out), static_cast<const Element*>(p.dout), p.dlse,
          p.delta, rows);
  return cudaGetLastError();
}

template <class Element, int kHeadDim>
cudaError_t launch_dq_convert(const BwdParams& p, cudaStream_t stream) {
  const int64_t count8 = bwd_rows(p) * kHeadDim / 8;
  bwd_dq_convert_kernel<Element><<<ceil_div_u(count8, kAuxThreads), kAuxThreads, 0, stream>>>(
      p.dq_accum, static_cast<Element*>(p.dq), count8);
  return cudaGetLastError();
}

}  // namespace jax_gna
