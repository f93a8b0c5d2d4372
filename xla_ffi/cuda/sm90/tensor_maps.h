// Host encoding of the TMA tensor maps of the sm90 kernels (forward and backward).
//
// Tensor maps are encoded with cuTensorMapEncodeTiled, reached through
// cudaGetDriverEntryPointByVersion (CUDA runtime >= 12.5), so the library needs no -lcuda.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "jax_gna/params.h"
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

// A tensor map with 128-byte swizzle and zero fill out of bounds, of `elem_bytes`-byte
// elements. strides[i] is the element stride of dim i + 1; dims of extent 1 get a harmless
// stride (their coordinate is always 0) so that broadcast or padding strides never upset
// the encoder.
inline bool encode_map_typed(CUtensorMap* map, CUtensorMapDataType type, int elem_bytes, int rank,
                             const void* base, const uint64_t* dims, const int64_t* elem_strides,
                             const uint32_t* box, const uint32_t* traversal, std::string* why) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) {
    *why = "sm90: cuTensorMapEncodeTiled unavailable (driver too old?)";
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
  uint64_t span = dims[0] * elem_bytes;  // bytes covered by the dims inside dim i
  for (int i = 1; i < rank; ++i) {
    const uint64_t stride = dims[i] > 1 ? static_cast<uint64_t>(elem_strides[i - 1]) * elem_bytes
                                        : ((span + 15) / 16) * 16;
    gstride[i - 1] = stride;
    span = stride * dims[i];
  }
  const CUresult r = encode(
      map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(base), gdim, gstride, bdim,
      estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    *why = fmt("sm90: cuTensorMapEncodeTiled failed (CUresult %d) for a rank-%d map, "
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

// The same for the kernels' 16-bit tensors.
inline bool encode_map(CUtensorMap* map, DType dtype, int rank, const void* base,
                       const uint64_t* dims, const int64_t* elem_strides, const uint32_t* box,
                       const uint32_t* traversal, std::string* why) {
  return encode_map_typed(map,
                          dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                    : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                          2, rank, base, dims, elem_strides, box, traversal, why);
}

// [B, S0, S1, S2, H, D] as the 5-D TMA tensor [H*D, S2, S1, S0, B] with box
// [panel, t2*d2, t1*d1, t0*d0, 1] and traversal strides [1, d2, d1, d0, 1]: one box is one
// 128-byte head-dim panel (64 16-bit or 32 fp32 elements) of a whole multi-dimensional tile
// of one dilation group.
inline bool encode_token_map_typed(CUtensorMap* map, const FwdParams& fp, const void* base,
                                   const TokenStrides& st, int heads,
                                   const int (&tile)[kMaxRank], CUtensorMapDataType type,
                                   int elem_bytes, std::string* why) {
  const ProblemShape& s = fp.shape;
  const uint64_t dims[5] = {static_cast<uint64_t>(heads) * s.head_dim,
                            static_cast<uint64_t>(s.dims[2].length),
                            static_cast<uint64_t>(s.dims[1].length),
                            static_cast<uint64_t>(s.dims[0].length),
                            static_cast<uint64_t>(s.batch)};
  const int64_t strides[4] = {st.spatial[2], st.spatial[1], st.spatial[0], st.batch};
  const uint32_t box[5] = {static_cast<uint32_t>(128 / elem_bytes),
                           static_cast<uint32_t>(tile[2] * s.dims[2].dilation),
                           static_cast<uint32_t>(tile[1] * s.dims[1].dilation),
                           static_cast<uint32_t>(tile[0] * s.dims[0].dilation), 1u};
  const uint32_t trav[5] = {1u, static_cast<uint32_t>(s.dims[2].dilation),
                            static_cast<uint32_t>(s.dims[1].dilation),
                            static_cast<uint32_t>(s.dims[0].dilation), 1u};
  return encode_map_typed(map, type, elem_bytes, 5, base, dims, strides, box, trav, why);
}

// The kernels' 16-bit tensors (q, k, v, out, dO, dK, dV): 64-element panels.
inline bool encode_token_map(CUtensorMap* map, const FwdParams& fp, const void* base,
                             const TokenStrides& st, int heads, const int (&tile)[kMaxRank],
                             std::string* why) {
  return encode_token_map_typed(map, fp, base, st, heads, tile,
                                fp.dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                             : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                                2, why);
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

}  // namespace sm90
}  // namespace jax_gna
