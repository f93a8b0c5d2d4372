// The sm90 GNA backward kernel: shared memory setup, barriers, role dispatch.
//
// 384 threads, one CTA per work item (batch, KV head, KV tile), one CTA per SM (shared
// memory). Warpgroup 0 gives registers back (setmaxnreg.dec) and its warp 0 is the producer;
// warpgroups 1 and 2 take them (setmaxnreg.inc) and are the consumers, 64 keys each.
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_desc.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "bwd_mainloop.h"
#include "bwd_traits.h"

namespace jax_gna {
namespace sm90 {

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    gna_bwd_sm90_kernel(const __grid_constant__ BwdKernelParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using SharedStorage = typename Traits::SharedStorage;
  using Barrier = cutlass::arch::ClusterBarrier;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  SharedStorage& ss = *reinterpret_cast<SharedStorage*>(smem_raw);

  const int warp = cutlass::canonical_warp_idx_sync();
  const int warp_group = cutlass::canonical_warp_group_idx();
  const int lane = cutlass::canonical_lane_idx();
  // The swizzled layouts assume 1024-byte aligned buffers.
  if ((cute::cast_smem_ptr_to_uint(smem_raw) & 1023u) != 0u) __trap();

  if (warp == 0 && lane == 0) {
    cute::prefetch_tma_descriptor(&p.tma_q);
    cute::prefetch_tma_descriptor(&p.tma_do);
    cute::prefetch_tma_descriptor(&p.tma_k);
    cute::prefetch_tma_descriptor(&p.tma_v);
    cute::prefetch_tma_descriptor(&p.tma_dq);
    for (int i = 0; i < Traits::kStages; ++i) {
      Barrier::init(&ss.full[i], 32);
      Barrier::init(&ss.empty[i], Traits::kNumMmaThreads);
    }
    Barrier::init(&ss.kv_full, 1);
  }
  // Column tables of the Q tile (launch constant; tile_map.h ColumnBox).
  for (int idx = threadIdx.x; idx < p.desc.q_cols.entries; idx += Traits::kNumThreads) {
    ss.mask_table[idx] = column_table_entry(p.desc.q_cols, idx);
  }
  cutlass::arch::fence_barrier_init();
  __syncthreads();

  const BwdItem it = make_bwd_item(p.desc, static_cast<int>(blockIdx.x));
  if (warp_group == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (warp == 0) BwdMainloop<Traits>::produce(p, ss, it, lane);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    BwdMainloop<Traits>::consume(p, ss, it, warp_group - 1, threadIdx.x % 128);
  }
#else
  // Built only for sm_90a (wgmma, setmaxnreg).
  __trap();
#endif
}

}  // namespace sm90
}  // namespace jax_gna
