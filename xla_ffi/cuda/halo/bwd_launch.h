// Host-side launcher of the halo backward. Its instantiation files (one dtype x head dim per
// .cu file, generated from the halo bwd lines of jax_gna/kernel_manifest.py by
// xla_ffi/generate_kernels.py) instantiate launch_bwd and register it as backend "halo".
//
// Sequence on the stream (no atomics anywhere: deterministic by construction; dq_accum is
// not used, the lowering passes it empty):
//   1. bwd_delta_kernel  delta = rowsum(dO * O) - dlse (common/bwd_aux_kernels.h)
//   2. bwd_dkdv_kernel   dK, dV per KV box over its inverse halo (bwd_dkdv_kernel.h)
//   3. bwd_dq_kernel     dQ per Q tile over its halo (bwd_dq_kernel.h)
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "../common/bwd_aux_kernels.h"
#include "../common/launch_utils.h"
#include "../common/registry.h"
#include "bwd_dkdv_kernel.h"
#include "bwd_dq_kernel.h"
#include "fwd_launch.h"  // heads_per_cta_hook, units_per_cta_hook

namespace jax_gna::halo {

// The FFI handler has admitted the call (plan_bwd_call); a refusal here is
// cudaErrorInvalidValue.
template <class DqT, class DkvT>
cudaError_t launch_bwd(const BwdParams& p, cudaStream_t stream) {
  static_assert(DqT::kHeadDim == DkvT::kHeadDim, "one head dim");
  using Element = typename DqT::Element;
  const ProblemShape& s = p.fwd.shape;
  BwdPlan plan;
  const std::string why = plan_bwd_call(p, DqT::kBlockM, DqT::kChunk, DqT::kMaxRing,
                                        heads_per_cta_hook(), &plan);
  if (!why.empty()) return cudaErrorInvalidValue;
  if (s.batch == 0 || s.heads_q == 0) return cudaSuccess;
  if (cudaError_t err = launch_bwd_delta<Element, DqT::kHeadDim>(p, stream); err != cudaSuccess)
    return err;

  if (plan.num_kv_tiles > 0) {  // every KV box, also those no computed query sees (zeros)
    plan_dkv_units(p, units_per_cta_hook(), &plan);
    auto kernel = &bwd_dkdv_kernel<DkvT>;
    DkvArgs args;
    args.p = p;
    args.units_per_cta = plan.dkv_units_per_cta;
    args.kv_buffers = plan.dkv_units_per_cta > 1 ? 2 : 1;
    const int smem = DkvT::smem_bytes(args.kv_buffers);
    if (cudaError_t err = set_max_dynamic_smem(kernel, smem); err != cudaSuccess) return err;
    int64_t dims[3];
    if (!plan.dkv_grid(dims)) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(dims[0]), static_cast<unsigned>(dims[1]),
                    static_cast<unsigned>(dims[2]));
    kernel<<<grid, DkvT::kNThreads, smem, stream>>>(args);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }

  if (plan.dq.num_q_tiles > 0) {
    plan_units(p.fwd, DqT::kMaxRingMulti, units_per_cta_hook(), &plan.dq);
    auto kernel = &bwd_dq_kernel<DqT>;
    const int item_buffers = plan.dq.heads_per_cta * plan.dq.units_per_cta > 1 ? 2 : 1;
    const int smem = DqT::smem_bytes(plan.dq.ring_slots, item_buffers);
    if (cudaError_t err = set_max_dynamic_smem(kernel, smem); err != cudaSuccess) return err;
    DqArgs args;
    args.p = p;
    args.ring_slots = plan.dq.ring_slots;
    args.item_buffers = item_buffers;
    args.heads_per_cta = plan.dq.heads_per_cta;
    args.head_groups = plan.dq.head_groups;
    args.units_per_cta = plan.dq.units_per_cta;
    int64_t dims[3];
    if (!plan.dq.grid(dims)) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(dims[0]), static_cast<unsigned>(dims[1]),
                  static_cast<unsigned>(dims[2]));
    kernel<<<grid, DqT::kNThreads, smem, stream>>>(args);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace jax_gna::halo
