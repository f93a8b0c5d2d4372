// Host-run check (no GPU) of the CuTe layouts the sm90 forward kernel relies on
// (tests/test_host_checks_cpp.py builds and runs it where nvcc is found; <gen> is the output
// of `python3 xla_ffi/generate_kernels.py --out <gen>`, for jax_gna/kernel_manifest.h):
//
//   nvcc -x cu -std=c++17 --expt-relaxed-constexpr -I xla_ffi/include -I xla_ffi/cuda/sm90 \
//        -I <gen> -I <cutlass>/include xla_ffi/cuda/sm90/test/layout_check.cc \
//        -o /tmp/sm90_layout_check && /tmp/sm90_layout_check
//
// (.cc so the library's **/*.cu glob does not pick it up.) Checks, for every instantiated
// configuration:
//  - the shared-memory layouts of Q, K (K-major) and V^T (MN-major) place element (token,
//    head-dim column) exactly where a 5-D TMA box with 128-byte swizzle writes it: panel p
//    of 64 columns at p * rows * 128 bytes, token row at 128 bytes per row, 16-byte chunk
//    XOR (row % 8);
//  - the S accumulator fragment's (row, column) per register is the mapping tile_map.h,
//    mask.h and softmax.h assume (row 16 * warp + lane / 4 + 8 * h, fragment column k at
//    8 * (k / 2) + 2 * (lane % 4) + k % 2);
//  - the PV GEMM's register A fragment holds the same (row, column) per index as the S
//    accumulator (so P can be converted element-for-element);
//  - the O accumulator uses the same mapping over head-dim columns (epilogue.h);
//  - the shared storage fits.
#include <cstdio>

#include "jax_gna/kernel_manifest.h"
#include "kernel_traits.h"
#include "tile_map.h"

using namespace cute;
using namespace jax_gna::sm90;

static int g_fail = 0;
#define CHECK(c, ...)                                             \
  do {                                                            \
    if (!(c)) {                                                   \
      if (g_fail < 20) { std::printf("FAIL: " __VA_ARGS__); std::printf("\n"); } \
      ++g_fail;                                                   \
    }                                                             \
  } while (0)

template <class Layout>
static void check_tma_image(const char* name, Layout layout, int rows, int cols, int stages,
                            bool transposed) {
  using T = cutlass::bfloat16_t;
  alignas(1024) static T buf[256 * 256 * 4];
  auto t = make_tensor(make_smem_ptr(buf), layout);
  for (int s = 0; s < stages; ++s)
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const int p = c / 64, cc = c % 64;
        const long expect = long(s) * rows * cols * 2 + long(p) * rows * 128 + r * 128 +
                            (((cc / 8) ^ (r % 8)) * 16) + (cc % 8) * 2;
        T* ptr;
        if constexpr (rank_v<Layout> == 3) {
          ptr = raw_pointer_cast(transposed ? &t(c, r, s) : &t(r, c, s));
        } else {
          ptr = raw_pointer_cast(transposed ? &t(c, r) : &t(r, c));
        }
        const long got = reinterpret_cast<char*>(ptr) - reinterpret_cast<char*>(buf);
        CHECK(got == expect, "%s: (stage %d, row %d, col %d) at byte %ld, TMA writes %ld", name,
              s, r, c, got, expect);
      }
}

template <class Traits>
static void check_config(const char* name) {
  constexpr int D = Traits::kHeadDim, N = Traits::kBlockN, S = Traits::kStages;
  std::printf("%s: D=%d N=%d stages=%d smem=%d bytes\n", name, D, N, S, Traits::kSmemBytes);
  CHECK(Traits::kSmemBytes <= 227 * 1024, "%s: shared storage too large", name);
  check_tma_image("Q", typename Traits::SmemLayoutQ{}, Traits::kBlockM, D, 1, false);
  check_tma_image("K", typename Traits::SmemLayoutK{}, N, D, S, false);
  check_tma_image("Vt", typename Traits::SmemLayoutVt{}, N, D, S, true);

  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPV mma_pv;
  auto tS = partition_fragment_C(mma_qk, Shape<_64, Int<N>>{});
  auto tO = partition_fragment_C(mma_pv, Shape<_64, Int<D>>{});
  CHECK(int(size(tS)) == N / 2, "%s: S fragment size %d", name, int(size(tS)));
  CHECK(int(size(tO)) == D / 2, "%s: O fragment size %d", name, int(size(tO)));
  auto tP = make_tensor<typename Traits::Element>(partition_shape_A(mma_pv, Shape<_64, Int<N>>{}));
  CHECK(size(tP) == size(tS), "%s: P/S fragment sizes", name);
  for (int tid = 0; tid < 128; ++tid) {
    const int warp = tid / 32, lane = tid % 32, quad = lane % 4;
    auto cS = mma_qk.get_thread_slice(tid).partition_C(make_identity_tensor(Shape<_64, Int<N>>{}));
    auto cO = mma_pv.get_thread_slice(tid).partition_C(make_identity_tensor(Shape<_64, Int<D>>{}));
    auto cP = mma_pv.get_thread_slice(tid).partition_A(make_identity_tensor(Shape<_64, Int<N>>{}));
    CHECK(size(cP) == size(tS), "%s: P coordinate count", name);
    for (int i = 0; i < int(size(cS)); ++i) {
      const int h = (i >> 1) & 1, k = 2 * (i >> 2) + (i & 1);
      const int row = 16 * warp + lane / 4 + 8 * h;
      const int col = fragment_column(k, quad);
      CHECK(get<0>(cS(i)) == row && get<1>(cS(i)) == col,
            "%s: S tid %d elem %d at (%d,%d), assumed (%d,%d)", name, tid, i, int(get<0>(cS(i))),
            int(get<1>(cS(i))), row, col);
      CHECK(get<0>(cP(i)) == get<0>(cS(i)) && get<1>(cP(i)) == get<1>(cS(i)),
            "%s: P tid %d elem %d at (%d,%d), S at (%d,%d)", name, tid, i, int(get<0>(cP(i))),
            int(get<1>(cP(i))), int(get<0>(cS(i))), int(get<1>(cS(i))));
    }
    for (int i = 0; i < int(size(cO)); ++i) {
      const int h = (i >> 1) & 1;
      const int row = 16 * warp + lane / 4 + 8 * h;
      const int col = 8 * (i >> 2) + 2 * quad + (i & 1);
      CHECK(get<0>(cO(i)) == row && get<1>(cO(i)) == col, "%s: O tid %d elem %d", name, tid, i);
    }
  }
}

int main() {
  // Every sm90 forward instantiation of the kernel manifest.
#define CHECK_CONFIG(E, D, M, N, STAGES) check_config<FwdTraits<E, D, N, STAGES>>(#E " hdim" #D);
  JAX_GNA_KERNELS_SM90_FWD(CHECK_CONFIG)
  std::printf("sm90 layout check: %d failures\n", g_fail);
  return g_fail == 0 ? 0 : 1;
}
