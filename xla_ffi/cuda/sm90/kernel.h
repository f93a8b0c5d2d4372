// The sm90 GNA forward kernel: shared memory setup, barriers, role dispatch.
//
// 384 threads, one CTA per SM, persistent. Warpgroup 0 gives registers back
// (setmaxnreg.dec 40) and two of its threads (in different warps) are the TMA producers, one
// for Q tiles and work items, one for K/V tiles; warpgroups 1 and 2 take registers
// (setmaxnreg.inc 232) and are the consumers.
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_desc.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "kernel_traits.h"
#include "mainloop.h"
#include "tile_map.h"

namespace jax_gna {
namespace sm90 {

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    gna_fwd_sm90_kernel(const __grid_constant__ KernelParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using SharedStorage = typename Traits::SharedStorage;
  using PipelineK = typename Traits::PipelineK;
  using PipelineV = typename Traits::PipelineV;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  SharedStorage& ss = *reinterpret_cast<SharedStorage*>(smem_raw);

  const int warp = cutlass::canonical_warp_idx_sync();
  const int warp_group = cutlass::canonical_warp_group_idx();
  const int lane = cutlass::canonical_lane_idx();

  // The swizzled layouts assume 1024-byte aligned buffers (the swizzle is a function of the
  // shared memory address).
  if ((cute::cast_smem_ptr_to_uint(smem_raw) & 1023u) != 0u) __trap();

  if (warp == 0 && lane == 0) {
    cute::prefetch_tma_descriptor(&p.tma_q);
    cute::prefetch_tma_descriptor(&p.tma_k);
    cute::prefetch_tma_descriptor(&p.tma_v);
    if (Traits::kQStages == 2) cute::prefetch_tma_descriptor(&p.tma_o);
    if (p.prob.num_extra > 0) {
      cute::prefetch_tma_descriptor(&p.tma_ek);
      cute::prefetch_tma_descriptor(&p.tma_ev);
    }
    for (int i = 0; i < Traits::kQStages; ++i) {
      cutlass::arch::ClusterBarrier::init(&ss.q_full[i], 1);
      cutlass::arch::ClusterBarrier::init(&ss.q_empty[i], Traits::kNumMmaThreads);
      cutlass::arch::ClusterBarrier::init(&ss.item_full[i], 1);
    }
  }
  // Mask table (launch constant; tile_map.h).
  for (int idx = threadIdx.x; idx < p.prob.tab_entries; idx += Traits::kNumThreads) {
    ss.mask_table[idx] = mask_table_entry(p.prob, idx);
  }

  using Role = typename PipelineK::ThreadCategory;
  typename PipelineK::Params pk_params;
  pk_params.transaction_bytes = Traits::kKBytes;
  pk_params.role = warp_group == 0 ? Role::Producer : Role::Consumer;
  pk_params.is_leader = threadIdx.x == 0;
  pk_params.num_consumers = Traits::kNumMmaThreads;
  PipelineK pipe_k(ss.pipe_k, pk_params, cute::Shape<cute::_1, cute::_1, cute::_1>{});

  typename PipelineV::Params pv_params = pk_params;
  pv_params.transaction_bytes = Traits::kVBytes;
  PipelineV pipe_v(ss.pipe_v, pv_params, cute::Shape<cute::_1, cute::_1, cute::_1>{});

  cutlass::arch::fence_barrier_init();
  __syncthreads();

  if (warp_group == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (threadIdx.x == 0) Mainloop<Traits>::produce_kv(p, ss, pipe_k, pipe_v);
    if (threadIdx.x == 32) Mainloop<Traits>::produce_q(p, ss);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    Mainloop<Traits>::consume(p, ss, pipe_k, pipe_v, warp_group - 1, threadIdx.x % 128);
  }
#else
  // Built only for sm_90a (wgmma, setmaxnreg).
  __trap();
#endif
}

}  // namespace sm90
}  // namespace jax_gna
