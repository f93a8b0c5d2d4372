// Host-side launcher of the halo forward. Its instantiation files (one dtype x head dim per
// .cu file, generated from the halo lines of jax_gna/kernel_manifest.py by
// xla_ffi/generate_kernels.py) instantiate launch_fwd and register it as backend "halo".
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "../common/launch_utils.h"
#include "../common/registry.h"
#include "fwd_kernel.h"

namespace jax_gna::halo {

// Test hook: JAX_GNA_HALO_HEADS_PER_CTA=n makes a call whose key list is resident compute
// up to n query heads of a KV head per CTA (the largest divisor of G not above n), whatever
// the grid size, so that small test problems take the shared-halo path too. Read at every
// launch (tests change it between calls).
inline int heads_per_cta_hook() {
  const char* e = std::getenv("JAX_GNA_HALO_HEADS_PER_CTA");
  return e != nullptr ? std::atoi(e) : 0;
}

// Grid (Q tiles x head_groups, heads_kv, batch): CTA x owns Q tile x / head_groups (the sm80
// forward's order: heavy-first along causal dims, neighbouring tiles next to each other) and
// query heads blockIdx.y * G + (x % head_groups) * heads_per_cta + [0, heads_per_cta), so the
// CTAs that read the same halo run together (L2 reuse). The FFI handler has admitted the
// call (plan_call); a refusal here is cudaErrorInvalidValue.
template <class Traits>
cudaError_t launch_fwd(const FwdParams& p, cudaStream_t stream) {
  Plan plan;
  const std::string why = plan_call(p, Traits::kBlockM, Traits::kChunk, Traits::kMaxRing,
                                    heads_per_cta_hook(), &plan);
  if (!why.empty()) return cudaErrorInvalidValue;
  if (plan.num_q_tiles == 0 || p.shape.batch == 0 || p.shape.heads_q == 0) return cudaSuccess;
  auto kernel = &fwd_kernel<Traits>;
  const int smem = Traits::smem_bytes(plan.ring_slots);
  if (cudaError_t err = set_max_dynamic_smem(kernel, smem); err != cudaSuccess) return err;
  KernelArgs args;
  args.p = p;
  args.ring_slots = plan.ring_slots;
  args.heads_per_cta = plan.heads_per_cta;
  args.head_groups = plan.head_groups;
  args.group = plan.group;
  const dim3 grid(unsigned(plan.num_q_tiles * plan.head_groups), unsigned(p.shape.heads_kv),
                  unsigned(p.shape.batch));
  kernel<<<grid, Traits::kNThreads, smem, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace jax_gna::halo
