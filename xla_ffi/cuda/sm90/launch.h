// Host launch of the sm90 GNA forward kernel: admission, tensor maps, launch.
//
// Tensor maps are encoded with cuTensorMapEncodeTiled, reached through
// cudaGetDriverEntryPointByVersion (CUDA runtime >= 12.5), so the library needs no -lcuda.
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
#include "sm90_fwd.h"
#include "support.h"

namespace jax_gna {
namespace sm90 {

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &status) != cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      f = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A 16-bit tensor map with 128-byte swizzle and zero fill out of bounds. strides[i] is the
// byte stride of dim i + 1; dims of extent 1 get a harmless stride (their coordinate is
// always 0) so that broadcast or padding strides never upset the encoder.
inline bool encode_map(CUtensorMap* map, DType dtype, int rank, const void* base,
                       const uint64_t* dims, const int64_t* elem_strides, const uint32_t* box,
                       const uint32_t* traversal, std::string* why) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) {
    *why = "sm90 forward: cuTensorMapEncodeTiled unavailable (driver too old?)";
    return false;
  }
  cuuint64_t gdim[5];
  cuuint64_t gstride[4];
  cuuint32_t bdim[5];
  cuuint32_t estr[5];
  for (int i = 0; i < rank; ++i) {
    gdim[i] = dims[i];
    bdim[i] = box[i];
    estr[i] = traversal[i];
  }
  uint64_t span = dims[0] * 2;  // bytes covered by the dims inside dim i
  for (int i = 1; i < rank; ++i) {
    const uint64_t stride = dims[i] > 1 ? static_cast<uint64_t>(elem_strides[i - 1]) * 2
                                        : ((span + 15) / 16) * 16;
    gstride[i - 1] = stride;
    span = stride * dims[i];
  }
  const CUresult r = encode(
      map, dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                     : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      static_cast<cuuint32_t>(rank), const_cast<void*>(base), gdim, gstride, bdim, estr,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    *why = fmt("sm90 forward: cuTensorMapEncodeTiled failed (CUresult %d) for a rank-%d map, "
               "dims [%llu %llu %llu %llu %llu], box [%u %u %u %u %u]",
               static_cast<int>(r), rank, (unsigned long long)dims[0],
               (unsigned long long)(rank > 1 ? dims[1] : 0), (unsigned long long)(rank > 2 ? dims[2] : 0),
               (unsigned long long)(rank > 3 ? dims[3] : 0), (unsigned long long)(rank > 4 ? dims[4] : 0),
               box[0], rank > 1 ? box[1] : 0, rank > 2 ? box[2] : 0, rank > 3 ? box[3] : 0,
               rank > 4 ? box[4] : 0);
    return false;
  }
  return true;
}

// [B, S0, S1, S2, H, D] as the 5-D TMA tensor [H*D, S2, S1, S0, B] with box
// [64, t2*d2, t1*d1, t0*d0, 1] and traversal strides [1, d2, d1, d0, 1]: one box is one
// 64-wide head-dim panel of a whole multi-dimensional tile of one dilation group.
inline bool encode_token_map(CUtensorMap* map, const FwdParams& fp, const void* base,
                             const TokenStrides& st, int heads, const int (&tile)[kMaxRank],
                             std::string* why) {
  const ProblemShape& s = fp.shape;
  const uint64_t dims[5] = {static_cast<uint64_t>(heads) * s.head_dim,
                            static_cast<uint64_t>(s.dims[2].length),
                            static_cast<uint64_t>(s.dims[1].length),
                            static_cast<uint64_t>(s.dims[0].length),
                            static_cast<uint64_t>(s.batch)};
  const int64_t strides[4] = {st.spatial[2], st.spatial[1], st.spatial[0], st.batch};
  const uint32_t box[5] = {64u, static_cast<uint32_t>(tile[2] * s.dims[2].dilation),
                           static_cast<uint32_t>(tile[1] * s.dims[1].dilation),
                           static_cast<uint32_t>(tile[0] * s.dims[0].dilation), 1u};
  const uint32_t trav[5] = {1u, static_cast<uint32_t>(s.dims[2].dilation),
                            static_cast<uint32_t>(s.dims[1].dilation),
                            static_cast<uint32_t>(s.dims[0].dilation), 1u};
  return encode_map(map, fp.dtype, 5, base, dims, strides, box, trav, why);
}

// [B, E, Hkv, D] as the 3-D TMA tensor [Hkv*D, E, B] with box [64, kBlockN, 1].
inline bool encode_extra_map(CUtensorMap* map, const FwdParams& fp, const void* base,
                             const ExtraStrides& st, int block_n, std::string* why) {
  const ProblemShape& s = fp.shape;
  const uint64_t dims[3] = {static_cast<uint64_t>(s.heads_kv) * s.head_dim,
                            static_cast<uint64_t>(s.num_extra), static_cast<uint64_t>(s.batch)};
  const int64_t strides[2] = {st.token, st.batch};
  const uint32_t box[3] = {64u, static_cast<uint32_t>(block_n), 1u};
  const uint32_t trav[3] = {1u, 1u, 1u};
  return encode_map(map, fp.dtype, 3, base, dims, strides, box, trav, why);
}

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
  // The consumers' setmaxnreg.inc can only take registers the producer's setmaxnreg.dec gave
  // back to the CTA pool; if ptxas assigned fewer registers at entry than the split assumes,
  // the kernel would spin forever in USETMAXREG.TRY_ALLOC. Refuse instead (checked once).
  static const int entry_regs = [kernel] {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, kernel) == cudaSuccess ? attr.numRegs : -1;
  }();
  if (entry_regs < 0 ||
      static_cast<int64_t>(entry_regs) * Traits::kNumThreads < Traits::kRegBudgetNeeded) {
    why = fmt("sm90 forward: kernel has %d registers per thread at entry; the setmaxnreg split "
              "%d/%d needs %d per thread (it would hang)", entry_regs, Traits::kProducerRegs,
              Traits::kConsumerRegs,
              (Traits::kRegBudgetNeeded + Traits::kNumThreads - 1) / Traits::kNumThreads);
    return cudaErrorInvalidValue;
  }
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
