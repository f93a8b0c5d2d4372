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

// Test hooks, read at every launch (tests change them between calls; a launch XLA records
// into a command buffer, as it does in a jitted forward+backward, keeps the value read when
// it was recorded: set them before the first call of a jitted function), so that small test
// problems take the paths of several items per CTA: JAX_GNA_HALO_HEADS_PER_CTA=n makes a call
// whose key list is resident compute up to n query heads of a KV head per CTA (the largest
// divisor of G not above n), whatever the grid size; JAX_GNA_HALO_UNITS_PER_CTA=n makes a
// forward or dQ CTA without shared heads, and a dK/dV CTA, compute up to n (batch, KV head)
// units.
inline int env_int(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr ? std::atoi(e) : 0;
}
inline int heads_per_cta_hook() { return env_int("JAX_GNA_HALO_HEADS_PER_CTA"); }
inline int units_per_cta_hook() { return env_int("JAX_GNA_HALO_UNITS_PER_CTA"); }

// Grid (Q tiles x head_groups, unit blocks split over y and z): CTA x owns Q tile
// x / head_groups (the sm80 forward's order: heavy-first along causal dims, neighbouring
// tiles next to each other), query heads (x % head_groups) * heads_per_cta + [0,
// heads_per_cta) of each KV head of its units, so the CTAs that read the same halo run
// together (L2 reuse). The FFI handler has admitted the call (plan_call); a refusal here is
// cudaErrorInvalidValue.
template <class Traits>
cudaError_t launch_fwd(const FwdParams& p, cudaStream_t stream) {
  Plan plan;
  const std::string why = plan_call(p, Traits::kBlockM, Traits::kChunk, Traits::kMaxRing,
                                    heads_per_cta_hook(), &plan);
  if (!why.empty()) return cudaErrorInvalidValue;
  if (plan.num_q_tiles == 0 || p.shape.batch == 0 || p.shape.heads_q == 0) return cudaSuccess;
  plan_units(p, Traits::kMaxRingMulti, units_per_cta_hook(), &plan);
  auto kernel = &fwd_kernel<Traits>;
  const int q_buffers = plan.heads_per_cta * plan.units_per_cta > 1 ? 2 : 1;
  const int smem = Traits::smem_bytes(plan.ring_slots, q_buffers);
  if (cudaError_t err = set_max_dynamic_smem(kernel, smem); err != cudaSuccess) return err;
  KernelArgs args;
  args.p = p;
  args.ring_slots = plan.ring_slots;
  args.q_buffers = q_buffers;
  args.heads_per_cta = plan.heads_per_cta;
  args.head_groups = plan.head_groups;
  args.group = plan.group;
  args.units_per_cta = plan.units_per_cta;
  int64_t dims[3];
  if (!plan.grid(dims)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(dims[0]), static_cast<unsigned>(dims[1]),
                  static_cast<unsigned>(dims[2]));
  kernel<<<grid, Traits::kNThreads, smem, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace jax_gna::halo
