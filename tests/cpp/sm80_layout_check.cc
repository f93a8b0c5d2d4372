// Host-side check of the CuTe register/shared-memory layout tricks the sm80 kernels rely on
// (xla_ffi/cuda/sm80/mma_utils.h, kernel_traits.h), for every thread of every tiled MMA the
// kernels instantiate, and the halo forward's (xla_ffi/cuda/halo/kernel_traits.h: the same
// building blocks at its 64-query tiles and 64-key chunks). No GPU needed (CuTe layouts are host code). tests/test_host_checks_cpp.py
// builds and runs it where nvcc is found; <gen> is the output of
// `python3 xla_ffi/generate_kernels.py --out <gen>` (jax_gna/kernel_manifest.h):
//
//   nvcc -std=c++17 -O1 --expt-relaxed-constexpr -x cu -I xla_ffi/include -I xla_ffi/cuda \
//       -I <gen> -I $CUTLASS_INCLUDE tests/cpp/sm80_layout_check.cc -o /tmp/sm80_layout && /tmp/sm80_layout
//
// 1. rowcol_view: element (r, c) of the (row, column) view of an accumulator is at a row
//    that depends on r only and a column that depends on c only (softmax row statistics and
//    the masks index rows/columns this way), and every (row, col) of the tile is owned once.
// 2. acc_to_a_layout: reading the accumulator through it gives, at every A-fragment index,
//    the element whose (row, col) the MMA's A partition expects at that index (P and dS are
//    reused from registers as the A operand of the next MMA).
// 3. Transposed shared-memory views address the same element as the original layout.
// 4. Row tiles move by whole 8-row swizzle blocks: layout(r + 8k, c) = layout(r, c) +
//    layout(8k, 0), which gather_rows_async (gather_copy.h) uses to swizzle once per thread.
#include <cstdio>
#include <set>
#include <utility>

#include <cute/tensor.hpp>

#include "halo/kernel_traits.h"
#include "jax_gna/kernel_manifest.h"
#include "sm80/kernel_traits.h"
#include "sm80/mma_utils.h"

using namespace cute;
using namespace jax_gna::sm80;

static int g_failures = 0;
#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      if (++g_failures <= 20) {                                  \
        std::printf("FAIL line %d: %s: ", __LINE__, #cond);      \
        std::printf(__VA_ARGS__);                                \
        std::printf("\n");                                       \
      }                                                          \
    }                                                            \
  } while (0)

template <class TiledMma, int M, int N>
void check_accumulator(const char* what) {
  TiledMma mma;
  std::set<std::pair<int, int>> owned;
  for (int t = 0; t < int(size(mma)); ++t) {
    auto thr = mma.get_thread_slice(t);
    Tensor cC = thr.partition_C(make_identity_tensor(Shape<Int<M>, Int<N>>{}));
    Tensor frag = partition_fragment_C(mma, Shape<Int<M>, Int<N>>{});
    static_assert(decltype(size(cC))::value == decltype(size(frag))::value, "sizes");
    // 1. (row, column) view.
    Tensor rc = make_tensor(cC.data(), rowcol_layout(cC.layout()));
    for (int r = 0; r < int(size<0>(rc)); ++r) {
      for (int c = 0; c < int(size<1>(rc)); ++c) {
        CHECK(get<0>(rc(r, c)) == get<0>(rc(r, 0)), "%s: row of (%d,%d) thread %d", what, r, c, t);
        CHECK(get<1>(rc(r, c)) == get<1>(rc(0, c)), "%s: col of (%d,%d) thread %d", what, r, c, t);
        owned.insert({int(get<0>(rc(r, c))), int(get<1>(rc(r, c)))});
      }
    }
    // 2. accumulator reused as the A operand of an M x N (K = N) MMA.
    Tensor idx = make_tensor<int>(frag.layout());
    for (int i = 0; i < int(size(idx)); ++i) idx(i) = i;
    Tensor as_a = make_tensor(idx.data(), acc_to_a_layout(idx.layout()));
    Tensor cA = thr.partition_A(make_identity_tensor(Shape<Int<M>, Int<N>>{}));
    CHECK(int(size(as_a)) == int(size(cA)), "%s: A size", what);
    for (int i = 0; i < int(size(cA)); ++i) {
      const auto want = cA(i);
      const auto got = cC(as_a(i));
      CHECK(get<0>(want) == get<0>(got) && get<1>(want) == get<1>(got),
            "%s: A index %d thread %d: want (%d,%d) got (%d,%d)", what, i, t, int(get<0>(want)),
            int(get<1>(want)), int(get<0>(got)), int(get<1>(got)));
    }
  }
  CHECK(int(owned.size()) == M * N, "%s: %zu of %d elements owned", what, owned.size(), M * N);
}

// Same check of (1) only, for accumulators that are never reused as A (dK, dV, dQ, O).
template <class TiledMma, int M, int N>
void check_rowcol(const char* what) {
  TiledMma mma;
  std::set<std::pair<int, int>> owned;
  for (int t = 0; t < int(size(mma)); ++t) {
    Tensor cC = mma.get_thread_slice(t).partition_C(make_identity_tensor(Shape<Int<M>, Int<N>>{}));
    Tensor rc = make_tensor(cC.data(), rowcol_layout(cC.layout()));
    for (int r = 0; r < int(size<0>(rc)); ++r)
      for (int c = 0; c < int(size<1>(rc)); ++c) {
        CHECK(get<0>(rc(r, c)) == get<0>(rc(r, 0)) && get<1>(rc(r, c)) == get<1>(rc(0, c)),
              "%s: rowcol thread %d", what, t);
        owned.insert({int(get<0>(rc(r, c))), int(get<1>(rc(r, c)))});
      }
  }
  CHECK(int(owned.size()) == M * N, "%s: %zu of %d elements owned", what, owned.size(), M * N);
}

template <class L, class Lt, int R, int C>
void check_transposed(const char* what) {
  L l;
  Lt lt;
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) CHECK(l(r, c) == lt(c, r), "%s (%d,%d)", what, r, c);
}

template <class L, int R, int C>
void check_row_blocks(const char* what) {
  L l;
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      CHECK(int(l(r, c)) == int(l(r % 8, c)) + int(l(r - r % 8, 0)), "%s (%d,%d)", what, r, c);
}

template <class T>
void check_fwd(const char* what) {
  std::printf("%s: shared memory %d bytes\n", what, T::kSmemBytes);
  check_accumulator<typename T::TiledMma, T::kBlockM, T::kBlockN>(what);
  check_rowcol<typename T::TiledMma, T::kBlockM, T::kHeadDim>(what);
  check_transposed<typename T::SmemLayoutKV, typename T::SmemLayoutVt, T::kBlockN, T::kHeadDim>(what);
  check_row_blocks<typename T::SmemLayoutQ, T::kBlockM, T::kHeadDim>(what);
  check_row_blocks<typename T::SmemLayoutKV, T::kBlockN, T::kHeadDim>(what);
}

template <class T>
void check_bwd(const char* what) {
  std::printf("%s: shared memory %d bytes\n", what, T::kSmemBytes);
  check_rowcol<typename T::TiledMmaSdP, T::kBlockM, T::kBlockN>(what);
  check_rowcol<typename T::TiledMmadKV, T::kBlockN, T::kHeadDim>(what);
  check_rowcol<typename T::TiledMmadQ, T::kBlockM, T::kHeadDim>(what);
  check_transposed<typename T::SmemLayoutQ, typename T::SmemLayoutQt, T::kBlockM, T::kHeadDim>(what);
  check_transposed<typename T::SmemLayoutKV, typename T::SmemLayoutKt, T::kBlockN, T::kHeadDim>(what);
  check_transposed<typename T::SmemLayoutP, typename T::SmemLayoutPt, T::kBlockM, T::kBlockN>(what);
  check_row_blocks<typename T::SmemLayoutQ, T::kBlockM, T::kHeadDim>(what);
  check_row_blocks<typename T::SmemLayoutKV, T::kBlockN, T::kHeadDim>(what);
}

template <class T>
void check_dq(const char* what) {
  std::printf("%s: shared memory %d bytes\n", what, T::kSmemBytes);
  check_accumulator<typename T::TiledMma, T::kBlockM, T::kBlockN>(what);
  check_rowcol<typename T::TiledMma, T::kBlockM, T::kHeadDim>(what);
  check_transposed<typename T::SmemLayoutKV, typename T::SmemLayoutKt, T::kBlockN, T::kHeadDim>(what);
  check_row_blocks<typename T::SmemLayoutQ, T::kBlockM, T::kHeadDim>(what);
  check_row_blocks<typename T::SmemLayoutKV, T::kBlockN, T::kHeadDim>(what);
}

template <class T>
void check_halo_fwd(const char* what) {
  std::printf("%s: shared memory %d bytes + %d per ring slot (a chunk of K and of V); "
              "%d with the full ring of %d\n", what, T::kFixedBytes, 2 * T::kChunkBytes,
              T::smem_bytes(T::kMaxRing), T::kMaxRing);
  check_accumulator<typename T::TiledMma, T::kBlockM, T::kChunk>(what);
  check_rowcol<typename T::TiledMma, T::kBlockM, T::kHeadDim>(what);
  check_transposed<typename T::SmemLayoutKV, typename T::SmemLayoutVt, T::kChunk, T::kHeadDim>(what);
  check_row_blocks<typename T::SmemLayoutQ, T::kBlockM, T::kHeadDim>(what);
  check_row_blocks<typename T::SmemLayoutKV, T::kChunk, T::kHeadDim>(what);
}

int main() {
  // Every sm80 instantiation of the kernel manifest (sm80/fwd_launch.h, bwd_launch.h).
#define CHECK_FWD(E, D, M, N, WARPS, STAGES, PS, PPV) \
  check_fwd<FwdTraits<E, D, M, N, WARPS, STAGES, PS, PPV>>("fwd " #E " d" #D);
#define CHECK_BWD(E, D, M, N, WARPS, SDP, DKV)                   \
  check_bwd<BwdTraits<E, D, M, N, WARPS, SDP, DKV>>("bwd " #E " d" #D); \
  check_dq<DqTraits<E, D, M, N, 4>>("dq " #E " d" #D);
  JAX_GNA_KERNELS_SM80_FWD(CHECK_FWD)
  JAX_GNA_KERNELS_SM80_BWD(CHECK_BWD)
  // Every halo instantiation (generated .cu files: halo::FwdTraits<E, D, ring>).
#define CHECK_HALO(E, D, M, N, RING) \
  check_halo_fwd<jax_gna::halo::FwdTraits<E, D, RING>>("halo fwd " #E " d" #D);
  JAX_GNA_KERNELS_HALO_FWD(CHECK_HALO)
  std::printf("%s: %d failures\n", g_failures ? "FAIL" : "PASS", g_failures);
  return g_failures ? 1 : 0;
}
