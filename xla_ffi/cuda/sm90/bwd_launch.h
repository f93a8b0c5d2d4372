// Host launch of the sm90 GNA backward: admission (support.h admit_bwd), tensor maps
// (tensor_maps.h), and the three kernels in stream order:
//   1. bwd_delta_kernel   delta = rowsum(dO * O) - dLSE          (common/bwd_aux_kernels.h)
// With BwdParams::parts (params.h) the FFI handler leaves delta, the additional tokens and,
// with deterministic=True, dQ to an sm80 launch before this one: the kernel then runs
// without dQ (BwdKernelParams::compute_dq) and step 3 is skipped.
//   2. gna_bwd_sm90_kernel dK, dV; dQ parts reduce-added into the fp32 dq_accum, which the
//      FFI handler has zeroed
//   3. bwd_dq_convert_kernel dq_accum -> dq                       (common/bwd_aux_kernels.h)
// Workspace: dq_accum (fp32, q's shape) and delta (fp32, lse's shape), both allocated by the
// caller (jax_gna/_cuda_lowering.py); nothing else.
#pragma once

// cudaTypedefs.h before any CuTe header: CuTe includes it inside a namespace, and its include
// guard would then hide the driver typedefs (PFN_cuTensorMapEncodeTiled_*) from tensor_maps.h.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "../common/bwd_aux_kernels.h"
#include "../common/launch_utils.h"
#include "bwd_kernel.h"
#include "bwd_traits.h"
#include "launch_checks.h"
#include "support.h"
#include "tensor_maps.h"

namespace jax_gna {
namespace sm90 {

template <class Traits>
cudaError_t launch_bwd(const BwdParams& bp, cudaStream_t stream) {
  using Element = typename Traits::Element;
  constexpr int kHeadDim = Traits::kHeadDim;
  std::string& why = last_error_message();
  why.clear();
  const FwdParams& fp = bp.fwd;
  const DType want = std::is_same_v<Element, cutlass::bfloat16_t> ? DType::kBFloat16
                                                                   : DType::kFloat16;
  if (fp.dtype != want) {
    why = "sm90 backward: dtype does not match this instantiation";
    return cudaErrorInvalidValue;
  }
  BwdKernelParams kp{};
  if (!admit_bwd(bp, kHeadDim, Traits::kBlockM, Traits::kBlockN, &kp.desc, &why))
    return cudaErrorInvalidValue;
  const ProblemShape& s = fp.shape;
  if (s.batch == 0) return cudaSuccess;
  const bool compute_dq = !bp.deterministic;  // admit_bwd: deterministic => dQ is sm80's
  if (bp.parts.delta) {
    if (cudaError_t err = launch_bwd_delta<Element, kHeadDim>(bp, stream); err != cudaSuccess)
      return err;
  }

  if (kp.desc.total_work > 0) {
    // dK / dV: each warpgroup stores half the KV tile, split along its slowest dim of
    // extent > 1 (its 64 rows are then one box).
    kp.kv_split_dim = fp.tiles.kv[0] > 1 ? 0 : (fp.tiles.kv[1] > 1 ? 1 : 2);
    kp.kv_split_half = fp.tiles.kv[kp.kv_split_dim] / 2;
    int half[kMaxRank] = {fp.tiles.kv[0], fp.tiles.kv[1], fp.tiles.kv[2]};
    half[kp.kv_split_dim] = kp.kv_split_half;
    if (!encode_token_map(&kp.tma_q, fp, fp.q, fp.q_strides, s.heads_q, fp.tiles.q, &why) ||
        !encode_token_map(&kp.tma_do, fp, bp.dout, bp.dout_strides, s.heads_q, fp.tiles.q,
                          &why) ||
        !encode_token_map(&kp.tma_k, fp, fp.k, fp.k_strides, s.heads_kv, fp.tiles.kv, &why) ||
        !encode_token_map(&kp.tma_v, fp, fp.v, fp.v_strides, s.heads_kv, fp.tiles.kv, &why) ||
        !encode_token_map(&kp.tma_dk, fp, bp.dk, bp.dk_strides, s.heads_kv, half, &why) ||
        !encode_token_map(&kp.tma_dv, fp, bp.dv, bp.dv_strides, s.heads_kv, half, &why) ||
        (compute_dq &&
         !encode_token_map_typed(&kp.tma_dq, fp, bp.dq_accum, fp.q_strides, s.heads_q,
                                 fp.tiles.q, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, &why))) {
      return cudaErrorInvalidValue;
    }
    kp.compute_dq = compute_dq ? 1 : 0;
    kp.scale = fp.scale;
    kp.scale_log2 = static_cast<float>(static_cast<double>(fp.scale) * 1.4426950408889634);
    kp.lse = fp.lse;
    kp.delta = bp.delta;
    const TokenStrides& l = fp.lse_strides;
    const int64_t ls[5] = {l.batch, l.spatial[0], l.spatial[1], l.spatial[2],
                           l.head != 0 ? l.head : 1};
    for (int i = 0; i < 5; ++i) kp.lse_stride[i] = ls[i];

    auto kernel = &gna_bwd_sm90_kernel<Traits>;
    why = register_split_problem<Traits>(kernel, "sm90 backward");
    if (!why.empty()) return cudaErrorInvalidValue;
    cudaError_t err = set_max_dynamic_smem(kernel, Traits::kSmemBytes);
    if (err != cudaSuccess) return err;
    kernel<<<kp.desc.total_work, Traits::kNumThreads, Traits::kSmemBytes, stream>>>(kp);
    if (err = cudaGetLastError(); err != cudaSuccess) return err;
  }

  if (!compute_dq || !bp.parts.dq_final) return cudaSuccess;
  return launch_dq_convert<Element, kHeadDim>(bp, stream);
}

}  // namespace sm90
}  // namespace jax_gna
