// Compile-time configuration of the sm90 GNA forward kernel: tile sizes, GMMA atoms, shared
// memory layouts and storage, thread roles and register split; and the kernel's parameters.
#pragma once

#include <cuda.h>  // CUtensorMap (type only; no driver symbols are linked)

#include <cstdint>
#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "tile_map.h"

namespace jax_gna {
namespace sm90 {

// Epilogue staging buffer of head dim 256 (epilogue.h `store_output`), per consumer
// warpgroup: 64 rows x one 64-column panel of O (8 KB), 128-byte rows with their 16-byte
// chunks XOR-swizzled by row % 8. (Head dims 64/128 stage O in the item's Q buffer.)
constexpr int kStageElems = 64 * 64;

// Element: cutlass::bfloat16_t or cutlass::half_t. kHeadDim: D of Q, K, V and O (equal).
// kBlockN: tokens per KV tile. kStages: K and V pipeline depth (each).
template <class Element_, int kHeadDim_, int kBlockN_, int kStages_>
struct FwdTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;   // tokens per Q tile: two consumer warpgroups x 64 rows
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;

  static constexpr int kNumMmaWarpGroups = 2;
  static constexpr int kNumMmaThreads = 128 * kNumMmaWarpGroups;
  static constexpr int kNumThreads = 128 + kNumMmaThreads;  // warpgroup 0 is the producer
  // setmaxnreg split. setmaxnreg.inc only draws from the CTA's own register pool, which holds
  // nothing but what setmaxnreg.dec released: the split must satisfy
  //   128 * kProducerRegs + 256 * kConsumerRegs <= 384 * (registers at entry)
  // or the consumers' USETMAXREG.TRY_ALLOC retries forever (the kernel hangs). The CTA
  // enters with 168 registers per thread (launch bounds 384 x 1: 65536 / 384 rounded down to
  // a multiple of 8), so 384 * 168 = 64512 is the budget:
  //   head dim 64/128: 128 * 40 + 256 * 232 = 64512;
  //   head dim 256 (64 x 256 fp32 O accumulator per warpgroup: 128 registers):
  //                    128 * 24 + 256 * 240 = 64512 (FA3's split).
  // (32 / 240 = 65536 hung every head-dim-256 launch.) launch.h re-checks the budget against
  // the register count ptxas actually assigned, before every first launch.
  static constexpr int kProducerRegs = kHeadDim_ >= 256 ? 24 : 40;
  static constexpr int kConsumerRegs = kHeadDim_ >= 256 ? 240 : 232;
  static constexpr int kEntryRegs = (65536 / (128 + 128 * kNumMmaWarpGroups)) / 8 * 8;
  static constexpr int kRegBudgetNeeded = 128 * kProducerRegs + kNumMmaThreads * kConsumerRegs;
  static_assert(kRegBudgetNeeded <= kEntryRegs * (128 + kNumMmaThreads),
                "setmaxnreg split exceeds the CTA's register pool: the kernel would hang");
  static_assert(kProducerRegs % 8 == 0 && kConsumerRegs % 8 == 0 && kProducerRegs >= 24 &&
                    kConsumerRegs <= 256 && kProducerRegs <= kEntryRegs &&
                    kConsumerRegs >= kEntryRegs,
                "setmaxnreg counts: multiples of 8 in [24, 256], dec below / inc above entry");

  // One TMA box row is one 128-byte swizzle panel: 64 elements of the head dim.
  static constexpr int kPanel = 64;
  static constexpr int kPanels = kHeadDim / kPanel;
  static_assert(kHeadDim % kPanel == 0, "head dim must be a multiple of 64");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 128, "KV tile: multiple of 16, at most 128");
  // mask_table_size bound: sum of (kv_i + 1) over dims is at most N + 5 for power-of-two
  // extents with product N.
  static constexpr int kMaskWords = 4 * (kBlockN + 5);

  // Q buffers. Two where shared memory allows (head dim <= 128): the next item's Q tile then
  // loads during the whole current item instead of its tail (with one buffer the consumers
  // waited for it at item starts), and the current item's buffer doubles as the epilogue's
  // O staging for the TMA store (each warpgroup its own 64 rows of every panel, in the same
  // swizzled image), so the consumers release it once the store has read it. Head dim 256
  // (64 KB per Q tile) keeps one, released at the item's last QK^T, and a separate staging
  // buffer.
  static constexpr int kQStages = kHeadDim_ <= 128 ? 2 : 1;
  // The max-free softmax step for KV tiles after the first (softmax.h fast_step, with the
  // mma.sync fallback of recompute.h). Measured per head dim (self-test, 20 launches x 2
  // rounds, scripts/sm90_ab.sh, H100): D = 128 3-10% faster on every suite row; D = 64
  // 8.9% and D = 256 4.4% slower (D = 64's short GEMMs leave both warpgroups' exponentials
  // on the MUFU at once; D = 256 spills more in its loop), so they keep the full step.
  static constexpr bool kFastSoftmax = kHeadDim_ == 128;
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr uint32_t kQBytes = kQElems * sizeof(Element);
  static constexpr uint32_t kKBytes = kBlockN * kHeadDim * sizeof(Element);
  static constexpr uint32_t kVBytes = kBlockN * kHeadDim * sizeof(Element);

  // S = Q K^T per warpgroup: 64 x kBlockN x kHeadDim, both operands from shared memory.
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>>()));
  // O += P V per warpgroup: 64 x kHeadDim x kBlockN, P from registers, V MN-major in smem.
  using TiledMmaPV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>()));

  // Shared memory images of the TMA boxes: rows = tokens (box order), 128-byte swizzled
  // panels of 64 head-dim elements, panel-major (the layout tile_to_shape makes of the K-major
  // SW128 atom; test/layout_check.cu verifies it against the TMA image).
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_K_SW128_Atom<Element>{},
      cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_K_SW128_Atom<Element>{},
      cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));
  // V as the PV GEMM's B operand (N = head dim, K = tokens), MN-major: the same bytes as a
  // K-major (tokens x head dim) image.
  using SmemLayoutVt = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_MN_SW128_Atom<Element>{},
      cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>, cute::Int<kStages>>{},
      cute::Step<cute::_2, cute::_1, cute::_3>{}));

  using PipelineK = cutlass::PipelineTmaAsync<kStages>;
  using PipelineV = cutlass::PipelineTmaAsync<kStages>;

  struct SharedStorage {
    alignas(1024) Element q[kQStages * cute::cosize_v<SmemLayoutQ>];
    alignas(1024) Element k[cute::cosize_v<SmemLayoutK>];
    alignas(1024) Element v[cute::cosize_v<SmemLayoutVt>];
    alignas(16) uint32_t mask_table[kMaskWords];
    alignas(16) int row_windows[12 * kNumMmaThreads];  // mask.h: consumers' row windows
    // epilogue.h staging when it cannot live in the Q buffer (one element otherwise)
    alignas(128) Element o_stage[kQStages == 1 ? kNumMmaWarpGroups * kStageElems : 1];
    typename PipelineK::SharedStorage pipe_k;
    typename PipelineV::SharedStorage pipe_v;
    alignas(8) uint64_t q_full[kQStages];   // TMA transaction barrier of a Q tile (+ item)
    alignas(8) uint64_t q_empty[kQStages];  // consumers' release of a Q buffer (256 arrivals)
    alignas(8) uint64_t item_full[kQStages];  // Q producer -> K/V producer: item published
    WorkItem item[kQStages];                // the work item of each Q buffer
  };
  static_assert(cute::cosize_v<SmemLayoutQ> == kQElems, "Q buffer size");
  static_assert(kQStages == 1 || 64 * kNumMmaWarpGroups == kBlockM,
                "O staging: each warpgroup's 64 rows of O are its own rows of the Q buffer");
  static constexpr int kSmemBytes = sizeof(SharedStorage);
  static_assert(kSmemBytes <= 227 * 1024, "shared memory budget exceeded");
};

// Kernel parameters (passed by value as a __grid_constant__, so the TMA unit can read the
// tensor maps from parameter space).
struct KernelParams {
  CUtensorMap tma_q;   // [H*D, S2, S1, S0, B], box [64, q2*d2, q1*d1, q0*d0, 1], traversal d
  CUtensorMap tma_k;   // [Hkv*D, S2, S1, S0, B], box [64, kv2*d2, kv1*d1, kv0*d0, 1]
  CUtensorMap tma_v;
  CUtensorMap tma_ek;  // [Hkv*D, E, B], box [64, kBlockN, 1] (additional keys)
  CUtensorMap tma_ev;
  CUtensorMap tma_o;   // [H*D, S2, S1, S0, B] of the output, box: half the Q tile's (below)
  ProblemDesc prob;
  float scale;         // softmax scale
  float scale_log2;    // scale * log2(e)
  void* out;
  float* lse;          // may be null
  int64_t out_stride[5];  // batch, s0, s1, s2, head (elements)
  int64_t lse_stride[5];  // batch, s0, s1, s2, head
  int* counter;        // dynamic scheduler counter (zeroed at launch) or null
  // A warpgroup's 64 rows are half the Q tile's box: halved along its slowest dim of extent
  // > 1 (rows are row-major, dim 2 fastest); warpgroup wg's half starts wg * o_split_half
  // tokens along dim o_split_dim (epilogue.h).
  int o_split_dim;
  int o_split_half;
};

}  // namespace sm90
}  // namespace jax_gna
