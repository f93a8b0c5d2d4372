// Compile-time configuration of the sm90 GNA backward kernel: tile sizes, GMMA atoms, shared
// memory layouts and storage, thread roles and register split; and the kernel's parameters.
#pragma once

#include <cuda.h>  // CUtensorMap (type only; no driver symbols are linked)

#include <cstdint>

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_types.h>

#include "bwd_tile_map.h"

namespace jax_gna {
namespace sm90 {

// Element: cutlass::bfloat16_t or cutlass::half_t. kHeadDim: D of Q, K, V, O (equal).
template <class Element_, int kHeadDim_>
struct BwdTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 64;   // queries per Q tile: the N columns of S^T = K Q^T
  static constexpr int kBlockN = 128;  // keys per KV tile: 64 rows per consumer warpgroup
  static constexpr int kStages = 2;    // Q / dO pipeline depth

  static constexpr int kNumMmaWarpGroups = 2;
  static constexpr int kNumMmaThreads = 128 * kNumMmaWarpGroups;
  static constexpr int kNumThreads = 128 + kNumMmaThreads;  // warpgroup 0 is the producer
  // setmaxnreg split, within the CTA's pool of 384 x 168 registers (kernel_traits.h says
  // why it must fit): a consumer holds the dK and dV accumulators (64 x D fp32 each) for the
  // whole work item, plus S^T, dP^T and the dQ accumulator of a visit.
  static constexpr int kProducerRegs = kHeadDim_ >= 128 ? 24 : 40;
  static constexpr int kConsumerRegs = kHeadDim_ >= 128 ? 240 : 232;
  static constexpr int kEntryRegs = (65536 / kNumThreads) / 8 * 8;
  static constexpr int kRegBudgetNeeded = 128 * kProducerRegs + kNumMmaThreads * kConsumerRegs;
  static_assert(kRegBudgetNeeded <= kEntryRegs * kNumThreads,
                "setmaxnreg split exceeds the CTA's register pool: the kernel would hang");

  static constexpr int kPanel = 64;  // 16-bit elements per 128-byte swizzle row
  static constexpr int kPanels = kHeadDim / kPanel;
  static_assert(kHeadDim % kPanel == 0, "head dim must be a multiple of 64");
  static constexpr int kAccumPanel = 32;  // fp32 elements per 128-byte row of the dQ staging
  static constexpr int kMaskWords = 4 * (kBlockM + 5);  // ColumnBox table bound (tile_map.h)

  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr uint32_t kQBytes = kQElems * sizeof(Element);
  static constexpr uint32_t kKBytes = kBlockN * kHeadDim * sizeof(Element);

  // S^T = K Q^T and dP^T = V dO^T per warpgroup: 64 keys x kBlockM queries x D, both operands
  // K-major in shared memory.
  using TiledMmaSdP = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kBlockM>, cute::Int<kHeadDim>>>()));
  // dV += P^T dO and dK += dS^T Q: 64 keys x D x kBlockM queries, A (P^T, dS^T) from
  // registers, B (dO, Q) MN-major from the same shared memory images.
  using TiledMmadKV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockM>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>()));
  // dQ = dS K, split between the warpgroups by head-dim columns at D >= 128: each computes
  // kBlockM queries x D/2 over all 128 keys of the tile (both warpgroups' dS, double-buffered
  // by visit parity), so one CTA adds kBlockM x D fp32 into dq_accum per visit. At D = 64 a
  // D/2 = 32-column B operand is narrower than the 128-byte swizzle atom (64 elements), so
  // each warpgroup computes its own 64 keys' part over all D columns and both parts are
  // added: twice the reduce-add traffic of the split.
  static constexpr bool kDqSplit = kHeadDim >= 128;
  static constexpr int kDqCols = kDqSplit ? kHeadDim / 2 : kHeadDim;
  static constexpr int kdSBuffers = kDqSplit ? 2 : 1;
  // One GEMM step: kBlockM queries x kDqCols x 64 keys (one warpgroup's dS), A (dS) K-major
  // from shared memory, B (K) MN-major.
  using TiledMmadQ = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::Int<kBlockM>, cute::Int<kDqCols>, cute::_64>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>()));

  // TMA box images (rows = tokens in box order, 128-byte swizzled 64-element panels,
  // panel-major), as in the forward (kernel_traits.h); the "t" layouts read the same bytes
  // MN-major.
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_K_SW128_Atom<Element>{},
      cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));
  using SmemLayoutQt = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_MN_SW128_Atom<Element>{},
      cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockM>, cute::Int<kStages>>{},
      cute::Step<cute::_2, cute::_1, cute::_3>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_K_SW128_Atom<Element>{},
      cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  using SmemLayoutKt = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_MN_SW128_Atom<Element>{},
      cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{}, cute::Step<cute::_2, cute::_1>{}));
  // One warpgroup's dS (queries x its 64 keys), K-major: the dQ GEMM's A operand. It is
  // written from the dS^T accumulator through the transposed view (keys x queries).
  using SmemLayoutdS = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_K_SW128_Atom<Element>{}, cute::Shape<cute::Int<kBlockM>, cute::_64>{}));
  using SmemLayoutdSt = decltype(cute::composition(
      SmemLayoutdS{},
      cute::make_layout(cute::Shape<cute::_64, cute::Int<kBlockM>>{}, cute::GenRowMajor{})));
  static constexpr int kdSElems = kBlockM * 64;

  struct SharedStorage {
    alignas(1024) Element q[cute::cosize_v<SmemLayoutQ>];
    alignas(1024) Element dout[cute::cosize_v<SmemLayoutQ>];
    alignas(1024) Element k[cute::cosize_v<SmemLayoutK>];
    alignas(1024) Element v[cute::cosize_v<SmemLayoutK>];
    // dS per (visit parity if kDqSplit, warpgroup).
    alignas(1024) Element ds[kdSBuffers * kNumMmaWarpGroups * kdSElems];
    // Per warpgroup: its dQ part (kBlockM x kDqCols fp32) as the TMA reduce-add reads it:
    // kDqCols / 32 boxes of kBlockM rows x 128 bytes, 16-byte chunks swizzled by row
    // (128-byte mode).
    alignas(1024) float dq_stage[kNumMmaWarpGroups * kBlockM * kDqCols];
    alignas(16) float2 stats[kStages][kBlockM];  // per query: (LSE * log2(e), row sum dO.O)
    alignas(16) uint32_t mask_table[kMaskWords];
    alignas(16) int row_windows[12 * kNumMmaThreads];  // mask.h: the key rows' windows
    alignas(8) uint64_t full[kStages];   // Q, dO (TMA bytes) + stats and visit (32 arrivals)
    alignas(8) uint64_t empty[kStages];  // consumers' release (256 arrivals)
    alignas(8) uint64_t kv_full;         // K and V of the work item (TMA bytes)
    BwdVisit visit[kStages];
  };
  static constexpr int kSmemBytes = sizeof(SharedStorage);
  static_assert(kSmemBytes <= 227 * 1024, "shared memory budget exceeded");
  static_assert(cute::cosize_v<SmemLayoutdS> == kdSElems, "dS buffer size");
};

// Kernel parameters (by value as a __grid_constant__, so the TMA unit reads the tensor maps
// from parameter space).
struct BwdKernelParams {
  CUtensorMap tma_q;   // [Hq*D, S2, S1, S0, B], box [64, q2*d2, q1*d1, q0*d0, 1], traversal d
  CUtensorMap tma_do;  // the same for dO
  CUtensorMap tma_k;   // [Hkv*D, S2, S1, S0, B], box of the KV tile
  CUtensorMap tma_v;
  CUtensorMap tma_dk;  // dK / dV: box of half the KV tile (a warpgroup's 64 rows)
  CUtensorMap tma_dv;
  CUtensorMap tma_dq;  // fp32 dq_accum [Hq*D, S2, S1, S0, B], box [32, Q tile], reduce-add
  BwdDesc desc;
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e)
  const float* lse;
  const float* delta;      // rowsum(dO * O) - dLSE, laid out like lse
  int64_t lse_stride[5];   // batch, s0, s1, s2, head (elements)
  // A warpgroup's 64 rows of dK / dV are half the KV tile's box, halved along its slowest
  // dim of extent > 1; warpgroup wg's half starts wg * kv_split_half tokens along it.
  int kv_split_dim;
  int kv_split_half;
  // 0: dK / dV only (deterministic=True: the sm80 backward's Q-tile-major kernel computes dQ,
  // launched before this one); tma_dq is then not encoded.
  int compute_dq;
};

}  // namespace sm90
}  // namespace jax_gna
