// Host launch of the sm90 GNA forward kernel: admission, tensor maps (tensor_maps.h), launch.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "jax_gna/params.h"
#include "kernel.h"
#include "kernel_traits.h"
#include "launch_checks.h"
#include "sm90_fwd.h"
#include "support.h"
#include "tensor_maps.h"

namespace jax_gna {
namespace sm90 {

template <class Traits>
cudaError_t launch_fwd(const FwdParams& fp, cudaStream_t stream) {
  std::string& why = last_error_message();
  why.clear();
  const DType want = std::is_same_v<typename Traits::Element, cutlass::bfloat16_t>
                         ? DType::kBFloat16
                         : DType::kFloat16;
  if (fp.dtype != want) {
    why = "sm90 forward: dtype does not match this instantiation";
    return cudaErrorInvalidValue;
  }
  KernelParams kp{};
  if (!admit_fwd(fp, Traits::kHeadDim, Traits::kBlockM, Traits::kBlockN, &kp.prob, &why)) {
    return cudaErrorInvalidValue;
  }
  if (kp.prob.total_work == 0) return cudaSuccess;  // empty batch

  const ProblemShape& s = fp.shape;
  if (!encode_token_map(&kp.tma_q, fp, fp.q, fp.q_strides, s.heads_q, fp.tiles.q, &why) ||
      !encode_token_map(&kp.tma_k, fp, fp.k, fp.k_strides, s.heads_kv, fp.tiles.kv, &why) ||
      !encode_token_map(&kp.tma_v, fp, fp.v, fp.v_strides, s.heads_kv, fp.tiles.kv, &why)) {
    return cudaErrorInvalidValue;
  }
  // The output's TMA map (the epilogue's path for two Q buffers): each warpgroup stores half
  // the Q tile, split along the tile's slowest dim of extent > 1.
  kp.o_split_dim = fp.tiles.q[0] > 1 ? 0 : (fp.tiles.q[1] > 1 ? 1 : 2);
  kp.o_split_half = fp.tiles.q[kp.o_split_dim] / 2;
  if constexpr (Traits::kQStages == 2) {
    int half[kMaxRank] = {fp.tiles.q[0], fp.tiles.q[1], fp.tiles.q[2]};
    half[kp.o_split_dim] = kp.o_split_half;
    if (!encode_token_map(&kp.tma_o, fp, fp.out, fp.out_strides, s.heads_q, half, &why)) {
      return cudaErrorInvalidValue;
    }
  }
  if (s.num_extra > 0) {
    if (!encode_extra_map(&kp.tma_ek, fp, fp.extra_k, fp.extra_k_strides, Traits::kBlockN, &why) ||
        !encode_extra_map(&kp.tma_ev, fp, fp.extra_v, fp.extra_v_strides, Traits::kBlockN, &why)) {
      return cudaErrorInvalidValue;
    }
  }
  kp.scale = fp.scale;
  kp.scale_log2 = static_cast<float>(static_cast<double>(fp.scale) * 1.4426950408889634);
  kp.out = fp.out;
  kp.lse = fp.lse;
  const TokenStrides& o = fp.out_strides;
  const TokenStrides& l = fp.lse_strides;
  const int64_t os[5] = {o.batch, o.spatial[0], o.spatial[1], o.spatial[2], o.head};
  // LSE is [B, *spatial, Hq] with head stride 1 (params.h); a handler that leaves the head
  // stride at 0 still gets distinct heads.
  const int64_t ls[5] = {l.batch, l.spatial[0], l.spatial[1], l.spatial[2],
                         l.head != 0 ? l.head : 1};
  for (int i = 0; i < 5; ++i) {
    kp.out_stride[i] = os[i];
    kp.lse_stride[i] = ls[i];
  }
  kp.counter = (fp.workspace != nullptr && fp.workspace_bytes >= 4 &&
                (reinterpret_cast<uintptr_t>(fp.workspace) & 3u) == 0)
                   ? static_cast<int*>(fp.workspace)
                   : nullptr;

  int num_sms = fp.num_sms;
  if (num_sms <= 0) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess) return e;
  }
  // The persistent grid: one CTA per SM (fp.num_sms; a caller may pass fewer), at most one
  // per work item.
  const int grid = num_sms < kp.prob.total_work ? num_sms : kp.prob.total_work;

  auto kernel = &gna_fwd_sm90_kernel<Traits>;
  why = register_split_problem<Traits>(kernel, "sm90 forward");
  if (!why.empty()) return cudaErrorInvalidValue;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Traits::kSmemBytes);
  if (err != cudaSuccess) return err;
  if (kp.counter != nullptr) {
    err = cudaMemsetAsync(kp.counter, 0, sizeof(int), stream);
    if (err != cudaSuccess) return err;
  }
  kernel<<<grid, Traits::kNumThreads, Traits::kSmemBytes, stream>>>(kp);
  return cudaGetLastError();
}

}  // namespace sm90
}  // namespace jax_gna
